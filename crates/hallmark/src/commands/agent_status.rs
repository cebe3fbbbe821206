//! `hallmark agent status`: what a node agent found on its node, read from
//! the inventory spool file it keeps up to date (so it works while the agent
//! runs, and tells the last known state after it stopped).

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Args;
use hallmark_agent::inventory::{SpoolDocument, SPOOL_FILE};
use hallmark_core::time::unix_millis;
use hallmark_core::WorkloadState;

use crate::config;
use crate::output::{outln, print_json};

#[derive(Args, Debug)]
pub struct AgentStatusArgs {
    /// The agent's data directory [default: $HALLMARK_HOME/agent].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The spool file, when the agent was given `--inventory-spool`.
    #[arg(long)]
    pub inventory_spool: Option<PathBuf>,
    /// Print the spool document as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: AgentStatusArgs) -> Result<()> {
    let path = a.inventory_spool.unwrap_or_else(|| {
        a.data_dir
            .unwrap_or_else(|| config::default_home().join("agent"))
            .join(SPOOL_FILE)
    });
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the agent's inventory spool {} (is an agent running with this --data-dir?)",
            path.display()
        )
    })?;
    let doc: SpoolDocument = serde_json::from_str(&text)
        .with_context(|| format!("parsing the inventory spool {}", path.display()))?;
    if a.json {
        return print_json(&doc);
    }
    let r = &doc.runtime;
    let count = |s: WorkloadState| doc.workloads.iter().filter(|w| w.state == s).count();
    outln!("context        {}", doc.context_name)?;
    outln!(
        "runtime        {}{}",
        r.runtime,
        if r.version.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.version)
        }
    )?;
    if !r.endpoint.is_empty() {
        outln!("endpoint       {}", r.endpoint)?;
    }
    outln!(
        "state          {}",
        if r.degraded { "DEGRADED" } else { "ok" }
    )?;
    if !r.reason.is_empty() {
        outln!("reason         {}", r.reason)?;
    }
    outln!(
        "workloads      {} ({} running, {} stopped, {} without runtime metadata)",
        doc.workloads.len(),
        count(WorkloadState::Running),
        count(WorkloadState::Stopped),
        doc.workloads
            .iter()
            .filter(|w| w.confidence != hallmark_core::Confidence::Full)
            .count()
    )?;
    let age_ms = unix_millis(SystemTime::now()) - doc.written_at_ms;
    outln!(
        "as of          {} s ago ({})",
        age_ms / 1000,
        path.display()
    )?;
    Ok(())
}
