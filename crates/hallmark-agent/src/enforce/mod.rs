//! Identity policy enforcement in this node's kernel: the programs and
//! tables of [`hallmark_bpf::Enforcer`], kept equal to the policy in force
//! ([`crate::policy`]) over the workloads running here.
//!
//! - `--enforcement off|watch|on` (default `on`): `watch` lets every
//!   connection through and reports the ones the policy would deny; `on`
//!   blocks them (a denied `connect()` fails with EPERM). Where the kernel
//!   does not allow it (no BTF, no BPF permission, no cgroup2), enforcement
//!   is `unavailable`: the agent goes on serving identities and says why in
//!   `/status`, `hallmark agent status` and
//!   `hallmark_agent_enforcement_mode{mode="unavailable"}`, as capture does
//!   with `--flows auto`.
//! - `--on-agent-exit keep|detach` (default `keep`): with `keep` the maps
//!   and links are pinned under `/sys/fs/bpf/hallmark/<node>`, so the
//!   policy stays enforced while the agent is down (an upgrade, a crash)
//!   and the next agent takes the pinned programs over with no gap and no
//!   second set; `detach` removes everything when the agent exits (nothing
//!   is enforced while no agent runs).
//! - The fleet switch (`hallmark policy enforcement off`, sent by the
//!   server) sets the kernel mode to off within a second.
//!
//! The work runs on one thread of its own: every change of
//! the policy, the identity groups, the peer addresses or the inventory
//! rebuilds the [`inputs`], compiles them ([`image`]) and installs the
//! image atomically. An image that cannot be compiled or that the kernel
//! refuses leaves the previous one in force (never "no policy"): the error
//! is logged, counted and shown in the status. Only running local
//! workloads with a SPIFFE ID are enforced (by their cgroup); the agent's
//! own sockets never are. DNS to the resolvers of `/etc/resolv.conf` is
//! exempt unless a rule names port 53. Each deny (and would-deny) event
//! from the kernel becomes a flow for the server.

pub mod coalesce;
pub mod image;
pub mod inputs;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::flows::FlowSink;
use crate::inventory::Inventory;
use crate::metrics::{AgentMetrics, ModeLabels};
use crate::policy::AgentPolicy;
use crate::state::Snapshot;

/// Where pinned enforcement lives: `<root>/<node>`.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/hallmark";
/// The status file `hallmark agent status` reads, in the data directory.
pub const STATUS_FILE: &str = "enforcement.json";

/// `--enforcement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementMode {
    /// No enforcement; programs pinned by an earlier agent are removed.
    Off,
    /// Everything passes; what the policy would deny is reported.
    Watch,
    /// Denies block.
    #[default]
    On,
}

impl EnforcementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementMode::Off => "off",
            EnforcementMode::Watch => "watch",
            EnforcementMode::On => "on",
        }
    }

    /// The kernel mode this asks for.
    pub fn kernel(self) -> hallmark_bpf::Mode {
        match self {
            EnforcementMode::Off => hallmark_bpf::Mode::Off,
            EnforcementMode::Watch => hallmark_bpf::Mode::Watch,
            EnforcementMode::On => hallmark_bpf::Mode::On,
        }
    }
}

impl FromStr for EnforcementMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(EnforcementMode::Off),
            "watch" => Ok(EnforcementMode::Watch),
            "on" => Ok(EnforcementMode::On),
            other => Err(format!("enforcement `{other}`: must be off, watch or on")),
        }
    }
}

/// `--on-agent-exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAgentExit {
    /// Pin maps and links: enforcement survives the agent and the next
    /// agent takes it over.
    #[default]
    Keep,
    /// Remove the programs and maps when the agent exits.
    Detach,
}

impl OnAgentExit {
    pub fn as_str(self) -> &'static str {
        match self {
            OnAgentExit::Keep => "keep",
            OnAgentExit::Detach => "detach",
        }
    }
}

impl FromStr for OnAgentExit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(OnAgentExit::Keep),
            "detach" => Ok(OnAgentExit::Detach),
            other => Err(format!("on_agent_exit `{other}`: must be keep or detach")),
        }
    }
}

/// Enforcement options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforceConfig {
    pub mode: EnforcementMode,
    pub on_exit: OnAgentExit,
    /// Pins go to `<pin_root>/<node>` (on bpffs).
    pub pin_root: PathBuf,
    /// The cgroup2 directory the programs attach to; `None`: the whole
    /// hierarchy.
    pub cgroup: Option<PathBuf>,
    /// resolv.conf whose nameservers are exempt for DNS.
    pub resolv_conf: PathBuf,
}

impl Default for EnforceConfig {
    fn default() -> Self {
        EnforceConfig {
            mode: EnforcementMode::On,
            on_exit: OnAgentExit::Keep,
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
            cgroup: None,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

impl EnforceConfig {
    /// No enforcement (embedded agents in tests and benchmarks).
    pub fn off() -> Self {
        EnforceConfig {
            mode: EnforcementMode::Off,
            ..EnforceConfig::default()
        }
    }
}

/// Whether enforcement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforceState {
    /// The programs are attached (in whatever kernel mode).
    Running,
    /// Waiting for the first sync (the node name names the pin directory).
    #[default]
    Starting,
    /// `--enforcement off`.
    Off,
    /// The kernel or the agent's permissions do not allow it.
    Unavailable,
}

/// Use of one enforcement map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MapUse {
    pub used: usize,
    pub capacity: usize,
}

/// Enforcement as `/status` (`enforcement`) and `hallmark agent status`
/// show it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EnforceStatus {
    /// `--enforcement`.
    pub configured: EnforcementMode,
    pub on_agent_exit: OnAgentExit,
    pub state: EnforceState,
    /// The kernel's mode now (`off`, `watch`, `on`); empty when not running.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// The server's fleet switch is off.
    pub fleet_off: bool,
    /// Why enforcement is not running, in operator words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A short stable name for `reason` (`no-permission`, `no-btf`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason_code: String,
    /// Where maps and links are pinned; empty with `--on-agent-exit detach`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pin_dir: String,
    /// This agent took over programs pinned by an earlier one.
    pub taken_over: bool,
    /// The policy revision of the image in the kernel (0: none yet).
    pub revision: i64,
    /// Enforced local workloads, peer prefixes and pairs of that image.
    pub workloads: usize,
    pub peers: usize,
    pub pairs: usize,
    pub maps: BTreeMap<String, MapUse>,
    /// Images not installed since start (the previous one stayed).
    pub install_errors: u64,
    /// The last of those errors; `null` once an install succeeds.
    pub last_error: Option<String>,
    /// Kernel decisions by verdict since the programs were loaded.
    pub decisions: BTreeMap<String, u64>,
    /// Kernel decisions since start by deciding rule (`default`: none
    /// matched), then verdict.
    #[serde(default)]
    pub rule_decisions: BTreeMap<String, BTreeMap<String, u64>>,
    /// Repeats of a reported event (a retransmitted SYN, a retried
    /// connect) within a minute, left out of the flows since start.
    #[serde(default)]
    pub events_coalesced: u64,
    /// Events lost since start.
    pub events_dropped: u64,
    /// Unix milliseconds this status was written.
    pub at_ms: i64,
}

impl EnforceStatus {
    /// One line for `hallmark agent status`.
    pub fn summary(&self) -> String {
        match self.state {
            EnforceState::Running => {
                let mut s = format!(
                    "{} (configured {}{}), revision {} in the kernel, {} workloads, {} peers, {} pairs",
                    self.mode,
                    self.configured.as_str(),
                    if self.fleet_off {
                        "; fleet switch off"
                    } else {
                        ""
                    },
                    self.revision,
                    self.workloads,
                    self.peers,
                    self.pairs,
                );
                if self.pin_dir.is_empty() {
                    s.push_str(", detached on exit");
                } else {
                    s.push_str(&format!(
                        ", pinned at {}{}",
                        self.pin_dir,
                        if self.taken_over { " (taken over)" } else { "" }
                    ));
                }
                s
            }
            EnforceState::Starting => "starting (waiting for the first sync)".to_string(),
            EnforceState::Off => "off (--enforcement off)".to_string(),
            EnforceState::Unavailable => format!("unavailable: {}", self.reason),
        }
    }
}

/// A handle on enforcement's status.
#[derive(Clone, Default)]
pub struct EnforceHandle {
    status: Arc<Mutex<EnforceStatus>>,
}

impl EnforceHandle {
    pub fn status(&self) -> EnforceStatus {
        lock(&self.status).clone()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn now_ms() -> i64 {
    hallmark_core::time::unix_millis(std::time::SystemTime::now())
}

/// Sets `hallmark_agent_enforcement_mode` to 1 for `mode` only.
pub(crate) fn set_mode_metric(metrics: &AgentMetrics, mode: &str) {
    for m in ["off", "watch", "on", "unavailable"] {
        metrics
            .enforcement_mode
            .get_or_create(&ModeLabels { mode: m.into() })
            .set(i64::from(m == mode));
    }
}

/// Writes the status file atomically (0644: it holds no secret).
pub(crate) fn write_status(path: &Path, status: &EnforceStatus) {
    let Ok(text) = serde_json::to_vec_pretty(status) else {
        return;
    };
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Reads the status file an agent wrote.
pub fn read_status(data_dir: &Path) -> std::io::Result<EnforceStatus> {
    let path = data_dir.join(STATUS_FILE);
    let text = std::fs::read_to_string(&path)?;
    serde_json::from_str(&text).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// What the enforcement thread works with.
pub struct EnforceDeps {
    pub policy: watch::Receiver<Arc<AgentPolicy>>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub inventory: Inventory,
    pub sink: FlowSink,
    pub metrics: Arc<AgentMetrics>,
}

/// Starts enforcement as `config.mode` says: once the agent has synced
/// (the node's name names the pin directory), loads or takes over the
/// programs on a thread of its own. Never fails the agent: where the
/// kernel does not allow enforcement, the status says why.
pub fn start(
    config: EnforceConfig,
    deps: EnforceDeps,
    data_dir: &Path,
    mut shutdown: watch::Receiver<bool>,
) -> (EnforceHandle, JoinHandle<()>) {
    let handle = EnforceHandle::default();
    {
        let mut s = lock(&handle.status);
        s.configured = config.mode;
        s.on_agent_exit = config.on_exit;
    }
    let status = handle.status.clone();
    let status_path = data_dir.join(STATUS_FILE);
    let task = tokio::spawn(async move {
        let mut snapshots = deps.snapshots.clone();
        let node = tokio::select! {
            r = snapshots.wait_for(|s| s.ready) => match r {
                Ok(s) => s.agent_id.agent_node().unwrap_or("node").to_string(),
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hallmark-enforce".into())
            .spawn(move || worker::run(config, deps, node, status, status_path, thread_stop));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "starting the enforcement thread failed");
                return;
            }
        };
        let _ = shutdown.wait_for(|s| *s).await;
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    });
    (handle, task)
}
