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
    /// Print the spool document as JSON, with the capture and policy status.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: AgentStatusArgs) -> Result<()> {
    let data_dir = a
        .data_dir
        .unwrap_or_else(|| config::default_home().join("agent"));
    let path = a
        .inventory_spool
        .unwrap_or_else(|| data_dir.join(SPOOL_FILE));
    // Written by the agent when capture starts (or cannot), then every few
    // seconds; missing for an agent that predates capture.
    let capture = hallmark_agent::capture::read_status(&data_dir).ok();
    // Written by the agent when a sync update changes its policy state;
    // missing until its first sync (or for an agent that predates policy).
    let policy = hallmark_agent::policy::read_status(&data_dir).ok();
    // Written by the agent's enforcement thread every second while it
    // runs; missing until the first sync.
    let enforcement = hallmark_agent::enforce::read_status(&data_dir).ok();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the agent's inventory spool {} (is an agent running with this --data-dir?)",
            path.display()
        )
    })?;
    let doc: SpoolDocument = serde_json::from_str(&text)
        .with_context(|| format!("parsing the inventory spool {}", path.display()))?;
    if a.json {
        let mut value = serde_json::to_value(&doc)?;
        if let Some(obj) = value.as_object_mut() {
            if let Some(c) = &capture {
                obj.insert("capture".into(), serde_json::to_value(c)?);
            }
            obj.insert("policy".into(), serde_json::to_value(&policy)?);
            obj.insert("enforcement".into(), serde_json::to_value(&enforcement)?);
        }
        return print_json(&value);
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
    match &capture {
        Some(c) => print_capture(c)?,
        None => outln!(
            "flow capture   unknown (no {} in the data directory)",
            hallmark_agent::capture::STATUS_FILE
        )?,
    }
    match &policy {
        Some(p) => {
            outln!("policy         {}", p.summary())?;
            if let Some(e) = &p.error {
                outln!("policy error   {e}")?;
            }
        }
        None => outln!(
            "policy         unknown (no {} in the data directory)",
            hallmark_agent::policy::STATUS_FILE
        )?,
    }
    match &enforcement {
        Some(e) => print_enforcement(e)?,
        None => outln!(
            "enforcement    unknown (no {} in the data directory)",
            hallmark_agent::enforce::STATUS_FILE
        )?,
    }
    let age_ms = unix_millis(SystemTime::now()) - doc.written_at_ms;
    outln!(
        "as of          {} s ago ({})",
        age_ms / 1000,
        path.display()
    )?;
    Ok(())
}

fn print_capture(c: &hallmark_agent::capture::CaptureStatus) -> Result<()> {
    use hallmark_agent::capture::CaptureState;
    match c.state {
        CaptureState::Running => {
            outln!(
                "flow capture   running (--flows {}; TCP by {}, UDP {})",
                c.mode.as_str(),
                c.tcp_attach,
                if c.udp { "on" } else { "off" }
            )?;
            outln!(
                "               {} records, {} TCP connections and {} UDP conversations tracked",
                c.records,
                c.tcp_entries,
                c.udp_entries
            )?;
            let dropped: u64 = c.dropped.values().sum();
            if dropped > 0 {
                let reasons: Vec<String> =
                    c.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
                outln!(
                    "               {dropped} events lost ({})",
                    reasons.join(", ")
                )?;
            }
        }
        CaptureState::Off => outln!("flow capture   off (--flows off)")?,
        CaptureState::Unavailable => {
            outln!("flow capture   UNAVAILABLE (--flows {})", c.mode.as_str())?;
            outln!("reason         {}", c.reason)?;
        }
    }
    Ok(())
}

fn print_enforcement(e: &hallmark_agent::enforce::EnforceStatus) -> Result<()> {
    outln!("enforcement    {}", e.summary())?;
    if !e.maps.is_empty() {
        let maps: Vec<String> = e
            .maps
            .iter()
            .map(|(m, u)| format!("{m} {}/{}", u.used, u.capacity))
            .collect();
        outln!("               maps: {}", maps.join(", "))?;
    }
    if !e.decisions.is_empty() {
        let d: Vec<String> = e
            .decisions
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        outln!(
            "               decisions: {}; {} events lost, {} repeats coalesced",
            d.join(", "),
            e.events_dropped,
            e.events_coalesced
        )?;
    }
    if let Some(line) = rule_line(&e.rule_decisions) {
        outln!("               by rule: {line}")?;
    }
    if e.install_errors > 0 {
        outln!(
            "               {} images not installed since start",
            e.install_errors
        )?;
    }
    if let Some(err) = &e.last_error {
        outln!("enforce error  {err}")?;
    }
    Ok(())
}

/// The rules that denied (or would have) most since the agent started,
/// busiest first: `default denied 5, db-admin would-deny 3 (2 more)`.
fn rule_line(
    by_rule: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
) -> Option<String> {
    const SHOWN: usize = 5;
    let mut hits: Vec<(u64, &str, &str)> = by_rule
        .iter()
        .flat_map(|(rule, verdicts)| {
            verdicts
                .iter()
                .filter(|(v, n)| v.as_str() != "allowed" && **n > 0)
                .map(move |(v, n)| (*n, rule.as_str(), v.as_str()))
        })
        .collect();
    if hits.is_empty() {
        return None;
    }
    hits.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut line: Vec<String> = hits
        .iter()
        .take(SHOWN)
        .map(|(n, rule, verdict)| format!("{rule} {verdict} {n}"))
        .collect();
    if hits.len() > SHOWN {
        line.push(format!("({} more)", hits.len() - SHOWN));
    }
    Some(line.join(", "))
}

#[cfg(test)]
mod tests {
    use super::rule_line;
    use std::collections::BTreeMap;

    #[test]
    fn the_busiest_denying_rules_come_first_and_allows_are_left_out() {
        let mut m: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        m.entry("default".into())
            .or_default()
            .insert("denied".into(), 5);
        m.entry("web-to-db".into())
            .or_default()
            .insert("allowed".into(), 900);
        m.entry("db-admin".into())
            .or_default()
            .insert("would-deny".into(), 7);
        assert_eq!(
            rule_line(&m).as_deref(),
            Some("db-admin would-deny 7, default denied 5")
        );
        m.remove("default");
        m.remove("db-admin");
        assert_eq!(rule_line(&m), None);
    }
}
