//! `hallmark agent run`: the agent's configuration from flags over the
//! config file, and the process around it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;
use hallmark_agent::flows::FlowConfig;
use hallmark_agent::{AgentConfig, ServerTrustSource};

use super::{
    agent_status_json, capture_config, enforce_config, inventory_config, pick, shutdown_signal,
    CaptureArgs, EnforceArgs, InventoryArgs, RoleArgs, DRAIN_DEADLINE,
};
use crate::config::{self, DEFAULT_LISTEN, DEFAULT_TRUST_DOMAIN};
use crate::health;

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    pub common: RoleArgs,
    /// Server node API address HOST:PORT; repeat it (or separate with
    /// commas) to fail over between servers, tried in order [default:
    /// 127.0.0.1:8081].
    #[arg(long = "server", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Workload API socket [default: <data-dir>/workload.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Single-use join token (only needed until the agent holds an SVID).
    #[arg(long, env = "HALLMARK_JOIN_TOKEN")]
    pub join_token: Option<String>,
    /// SHA-256 of the server's root CA, from `hallmark token generate`.
    #[arg(long, conflicts_with = "trust_bundle")]
    pub ca_fingerprint: Option<String>,
    /// PEM file with the server's root CA(s).
    #[arg(long)]
    pub trust_bundle: Option<PathBuf>,
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// How often the agent re-asserts the IPs its running workloads and
    /// the node hold, as evidence for flow attribution [default: 10s].
    #[arg(long)]
    pub ownership_heartbeat: Option<String>,
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub enforce: EnforceArgs,
}

pub fn agent_config(a: AgentArgs) -> Result<AgentConfig> {
    let file = config::load_file(a.common.config.as_deref())?.agent;
    let inventory = inventory_config(a.inventory, &file)?;
    let flows = flow_config(a.ownership_heartbeat, file.ownership_heartbeat.clone())?;
    let capture = capture_config(a.capture, &file)?;
    let enforcement = enforce_config(a.enforce, &file)?;
    let td = pick(a.common.trust_domain, file.trust_domain)
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.into());
    let data_dir = pick(a.common.data_dir, file.data_dir)
        .unwrap_or_else(|| config::default_home().join("agent"));
    let servers = if a.servers.is_empty() {
        file.servers.unwrap_or_else(|| vec![DEFAULT_LISTEN.into()])
    } else {
        a.servers
    };
    let servers = servers
        .iter()
        .map(|s| config::server_addr("server", s))
        .collect::<Result<Vec<_>>>()?;
    let trust = match (
        pick(a.ca_fingerprint, file.ca_fingerprint),
        pick(a.trust_bundle, file.trust_bundle),
    ) {
        (Some(fp), None) => {
            ServerTrustSource::Fingerprint(config::fingerprint("ca_fingerprint", &fp)?)
        }
        (None, Some(path)) => ServerTrustSource::BundleFile(path),
        (None, None) => ServerTrustSource::None,
        (Some(_), Some(_)) => {
            return Err(anyhow!(
                "give either ca_fingerprint or trust_bundle, not both"
            ))
        }
    };
    Ok(AgentConfig {
        trust_domain: config::trust_domain("trust_domain", &td)?,
        socket_path: pick(a.socket, file.socket).unwrap_or_else(|| data_dir.join("workload.sock")),
        data_dir,
        servers,
        join_token: pick(a.join_token, file.join_token),
        trust,
        inventory,
        flows,
        capture,
        enforcement,
    })
}

/// Flow reporting options from the flag over the config file.
fn flow_config(flag: Option<String>, file: Option<String>) -> Result<FlowConfig> {
    let defaults = FlowConfig::default();
    let ownership_heartbeat = match pick(flag, file) {
        Some(v) => {
            let d = config::duration("ownership_heartbeat", &v)?;
            if d < Duration::from_secs(1) {
                return Err(anyhow!("ownership_heartbeat `{v}`: must be at least 1s"));
            }
            d
        }
        None => defaults.ownership_heartbeat,
    };
    Ok(FlowConfig {
        ownership_heartbeat,
        ..defaults
    })
}

fn agent_probe(a: hallmark_agent::AgentStatus) -> health::Probe {
    let m = a.clone();
    let st = a.clone();
    health::Probe::new(
        move || {
            let r = a.ready();
            Box::pin(async move { r })
        },
        move || {
            let text = m.metrics();
            Box::pin(async move { text })
        },
    )
    .with_status(move || agent_status_json(&st))
}

pub async fn run_agent(a: AgentArgs) -> Result<()> {
    let health = a.common.health_listen.clone();
    let cfg = agent_config(a)?;
    let handle = hallmark_agent::start(cfg).await?;
    if let Some(addr) = health {
        health::serve(
            config::socket_addr("health_listen", &addr)?,
            agent_probe(handle.status()),
        )
        .await?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = tokio::time::timeout(DRAIN_DEADLINE, handle.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_heartbeat_from_flag_over_file_with_a_default() {
        let got = |flag: Option<&str>, file: Option<&str>| {
            flow_config(flag.map(str::to_owned), file.map(str::to_owned))
                .map(|c| c.ownership_heartbeat)
                .map_err(|e| e.to_string())
        };
        assert_eq!(got(None, None), Ok(Duration::from_secs(10)));
        assert_eq!(got(None, Some("30s")), Ok(Duration::from_secs(30)));
        assert_eq!(got(Some("5s"), Some("30s")), Ok(Duration::from_secs(5)));
        for bad in ["soon", "500ms", "0s"] {
            let e = got(Some(bad), None).unwrap_err();
            assert!(
                e.contains("ownership_heartbeat") && e.contains(bad),
                "{bad}: {e}"
            );
        }
    }
}
