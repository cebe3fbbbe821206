//! The long-running roles: `server run` ([`server`]), `agent run`
//! ([`agent`]) and `up` ([`up`]: both in one process, for a laptop), with
//! what they share: the common flags, the inventory options, and how they
//! stop.

pub mod agent;
pub mod console;
pub mod server;
pub mod up;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;

use crate::config;

/// How long shutdown may take before the process exits anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Flags every long-running role takes.
#[derive(Args, Debug)]
pub struct RoleArgs {
    /// TOML config file ([server] or [agent] section); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Trust domain [default: hallmark.local].
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// State directory [default: $HALLMARK_HOME/server or $HALLMARK_HOME/agent].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Serve /healthz, /readyz and /metrics over HTTP on this address.
    #[arg(long)]
    pub health_listen: Option<String>,
}

/// Container runtime and workload inventory options (agent and `up`).
#[derive(Args, Debug, Default)]
pub struct InventoryArgs {
    /// Name of the cluster or site this node belongs to; qualifies every
    /// inventory record and is attested as `hallmark:context:<name>` [default: default].
    #[arg(long)]
    pub context: Option<String>,
    /// Container runtime: auto (CRI, then Docker), docker, cri or none [default: auto].
    #[arg(long)]
    pub runtime: Option<String>,
    /// Docker Engine socket [default: $DOCKER_HOST, /var/run/docker.sock].
    #[arg(long)]
    pub docker_socket: Option<PathBuf>,
    /// CRI runtime socket [default: from crictl's config, else the usual containerd/CRI-O paths].
    #[arg(long)]
    pub cri_socket: Option<PathBuf>,
    /// crictl config file consulted for the CRI socket [default: /etc/crictl.yaml].
    #[arg(long)]
    pub crictl_config: Option<PathBuf>,
    /// Full inventory resync period, behind the runtime's events [default: 30s].
    #[arg(long)]
    pub resync_interval: Option<String>,
    /// Where the latest inventory snapshot is written [default: <data-dir>/inventory.json].
    #[arg(long)]
    pub inventory_spool: Option<PathBuf>,
}

/// eBPF flow capture options (agent and `up`).
#[derive(Args, Debug, Default)]
pub struct CaptureArgs {
    /// eBPF flow capture: auto (capture where the kernel allows, else say
    /// why and serve identities without it), on (refuse to start without
    /// it) or off [default: auto].
    #[arg(long)]
    pub flows: Option<String>,
    /// How often open connections are reported with their counters so
    /// far, so long-lived ones are visible before they close [default: 30s].
    #[arg(long)]
    pub flow_report_interval: Option<String>,
    /// A UDP conversation silent this long is closed and reported [default: 30s].
    #[arg(long)]
    pub udp_idle: Option<String>,
    /// Capture only sockets in this cgroup2 subtree (repeat for several),
    /// for an agent that speaks for part of a machine [default: /, every socket].
    #[arg(long)]
    pub flow_cgroup: Vec<String>,
}

/// Policy enforcement flags (the agent's, and `hallmark up`'s).
#[derive(Args, Debug, Default)]
pub struct EnforceArgs {
    /// Identity policy enforcement in the kernel: on (deny what the policy
    /// denies), watch (let everything through, report what it would deny)
    /// or off. Where the kernel does not allow it, enforcement is
    /// unavailable and `agent status` says why [default: on].
    #[arg(long)]
    pub enforcement: Option<String>,
    /// What happens to enforcement when the agent exits: keep (programs
    /// and maps stay pinned under /sys/fs/bpf/hallmark/<node>, so the
    /// policy stays enforced and the next agent takes over with no gap) or
    /// detach (everything is removed; nothing is enforced until an agent
    /// runs again) [default: keep].
    #[arg(long)]
    pub on_agent_exit: Option<String>,
}

/// The enforcement configuration from flags over the config file.
pub fn enforce_config(
    a: EnforceArgs,
    file: &config::AgentFile,
) -> Result<hallmark_agent::enforce::EnforceConfig> {
    use hallmark_agent::enforce::EnforceConfig;
    let defaults = EnforceConfig::default();
    let mode = match pick(a.enforcement, file.enforcement.clone()) {
        Some(v) => v.parse().map_err(|e: String| anyhow!(e))?,
        None => defaults.mode,
    };
    let on_exit = match pick(a.on_agent_exit, file.on_agent_exit.clone()) {
        Some(v) => v.parse().map_err(|e: String| anyhow!(e))?,
        None => defaults.on_exit,
    };
    Ok(EnforceConfig {
        mode,
        on_exit,
        ..defaults
    })
}

/// The capture configuration from flags over the config file.
pub fn capture_config(
    a: CaptureArgs,
    file: &config::AgentFile,
) -> Result<hallmark_agent::capture::CaptureConfig> {
    use hallmark_agent::capture::CaptureConfig;
    let defaults = CaptureConfig::default();
    let mode = match pick(a.flows, file.flows.clone()) {
        Some(v) => v.parse().map_err(|e: String| anyhow!(e))?,
        None => defaults.mode,
    };
    let at_least_1s = |key: &str, v: Option<String>, default: Duration| -> Result<Duration> {
        let Some(v) = v else {
            return Ok(default);
        };
        let d = config::duration(key, &v)?;
        if d < Duration::from_secs(1) {
            return Err(anyhow!("{key} `{v}`: must be at least 1s"));
        }
        Ok(d)
    };
    Ok(CaptureConfig {
        mode,
        report_interval: at_least_1s(
            "flow_report_interval",
            pick(a.flow_report_interval, file.flow_report_interval.clone()),
            defaults.report_interval,
        )?,
        udp_idle: at_least_1s(
            "udp_idle",
            pick(a.udp_idle, file.udp_idle.clone()),
            defaults.udp_idle,
        )?,
        cgroups: if !a.flow_cgroup.is_empty() {
            a.flow_cgroup
        } else {
            file.flow_cgroup.clone().unwrap_or(defaults.cgroups)
        },
    })
}

/// The inventory configuration from flags over the config file.
pub fn inventory_config(
    a: InventoryArgs,
    file: &config::AgentFile,
) -> Result<hallmark_agent::inventory::InventoryConfig> {
    use hallmark_agent::inventory::{InventoryConfig, DEFAULT_CONTEXT};
    use hallmark_runtime::discovery::DiscoveryConfig;
    let defaults = InventoryConfig::default();
    let context = pick(a.context, file.context.clone()).unwrap_or_else(|| DEFAULT_CONTEXT.into());
    let runtime = pick(a.runtime, file.runtime.clone()).unwrap_or_else(|| "auto".into());
    let resync_interval = match pick(a.resync_interval, file.resync_interval.clone()) {
        Some(v) => {
            let d = config::duration("resync_interval", &v)?;
            if d < Duration::from_secs(1) {
                return Err(anyhow!("resync_interval `{v}`: must be at least 1s"));
            }
            d
        }
        None => defaults.resync_interval,
    };
    Ok(InventoryConfig {
        context_name: config::context_name("context", &context)?,
        discovery: DiscoveryConfig {
            choice: config::runtime_choice("runtime", &runtime)?,
            docker_socket: pick(a.docker_socket, file.docker_socket.clone()),
            cri_socket: pick(a.cri_socket, file.cri_socket.clone()),
            crictl_config: pick(a.crictl_config, file.crictl_config.clone()),
        },
        resync_interval,
        spool_path: pick(a.inventory_spool, file.inventory_spool.clone()),
        ..defaults
    })
}

fn pick<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The agent's `/status` document (`agent run` and `up`).
fn agent_status_json(a: &hallmark_agent::AgentStatus) -> serde_json::Value {
    serde_json::json!({
        "ready": a.ready(),
        "agent_id": a.agent_id(),
        "inventory": a.inventory(),
        "flows": a.flows(),
        "capture": a.capture(),
        "policy": a.policy(),
        "enforcement": a.enforcement(),
    })
}
