//! eBPF flow capture: every TCP connection and UDP conversation on the
//! node, tagged with the local workload at capture time, handed to the
//! flow reporter ([`crate::flows::FlowSink`]).
//!
//! The programs and their maps are `hallmark_bpf`'s; this module decides
//! what their records mean here:
//! - the socket's cgroup → the local end ([`cgroups`]): a container of the
//!   inventory, or the node and the host process's systemd unit;
//! - records → flows ([`convert`]), oriented initiator first;
//! - open connections are reported every `--flow-report-interval` (their
//!   counters so far), UDP conversations when idle for `--udp-idle`;
//! - listening sockets of host-network workloads become `(IP, port)`
//!   ownership claims in the heartbeat.
//!
//! Capture never stands in the way of identity: with `--flows auto` a
//! kernel without BTF or a process without BPF permission leaves the agent
//! serving SVIDs, and the reason is in `/status`, `hallmark agent status`
//! and `hallmark_agent_flow_capture_unavailable{reason}`.
//!
//! The kernel side runs on one thread of its own: it waits on the ring
//! buffer, so records reach the reporter within milliseconds, and a flood
//! of connections costs that thread, not the Workload API's runtime.

pub mod cgroups;
pub mod convert;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hallmark_bpf::{Capture, CaptureOptions, Drops};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::flows::{FlowSink, PortClaim};
use crate::inventory::Inventory;
use crate::metrics::{AgentMetrics, KindLabels, MapLabels, ReasonLabels};
use cgroups::CgroupResolver;
use convert::Clock;

/// The default `--flow-report-interval`.
pub const DEFAULT_FLOW_REPORT_INTERVAL: Duration = Duration::from_secs(30);
/// The default `--udp-idle`.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(30);
/// The status file `hallmark agent status` reads, in the data directory.
pub const STATUS_FILE: &str = "capture.json";

/// `--flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// Capture where the kernel allows; otherwise say why and go on.
    #[default]
    Auto,
    /// Capture, or refuse to start.
    On,
    /// No capture.
    Off,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Auto => "auto",
            CaptureMode::On => "on",
            CaptureMode::Off => "off",
        }
    }
}

impl FromStr for CaptureMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CaptureMode::Auto),
            "on" => Ok(CaptureMode::On),
            "off" => Ok(CaptureMode::Off),
            other => Err(format!("flows `{other}`: must be auto, on or off")),
        }
    }
}

/// Capture options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    pub mode: CaptureMode,
    /// Open connections (and active UDP conversations) are reported this
    /// often, so a connection open for days is visible before it closes.
    pub report_interval: Duration,
    /// A UDP conversation silent this long is closed and reported.
    pub udp_idle: Duration,
    /// Only sockets in these cgroup2 subtrees are the node's (`/` for
    /// all): for an agent that speaks for part of a machine (nested nodes,
    /// or several simulated nodes on one kernel).
    pub cgroups: Vec<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: CaptureMode::Auto,
            report_interval: DEFAULT_FLOW_REPORT_INTERVAL,
            udp_idle: DEFAULT_UDP_IDLE,
            cgroups: vec!["/".into()],
        }
    }
}

impl CaptureConfig {
    /// Checks the values, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.report_interval < Duration::from_secs(1) {
            return Err(format!(
                "flow_report_interval {:?}: must be at least 1s",
                self.report_interval
            ));
        }
        if self.udp_idle < Duration::from_secs(1) {
            return Err(format!("udp_idle {:?}: must be at least 1s", self.udp_idle));
        }
        for c in &self.cgroups {
            if !c.starts_with('/') || c.split('/').any(|part| part == "..") {
                return Err(format!(
                    "flow_cgroup `{c}`: must be an absolute path in the cgroup2 hierarchy (`/` for all)"
                ));
            }
        }
        Ok(())
    }
}

/// Whether capture runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureState {
    /// The programs are attached.
    Running,
    /// `--flows off`.
    #[default]
    Off,
    /// `--flows auto` on a kernel or with permissions that do not allow it.
    Unavailable,
}

/// Capture as `/status` and `hallmark agent status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CaptureStatus {
    pub mode: CaptureMode,
    pub state: CaptureState,
    /// Why capture is not running, in operator words; empty while it runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A short stable name for `reason` (`no-permission`, `no-btf`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason_code: String,
    /// How the TCP program is attached (`tp_btf`, `raw_tp`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcp_attach: String,
    pub udp: bool,
    /// Records turned into flows since start (including any the reporter
    /// then had no room for: those are also in `dropped` as `sink-full`).
    pub records: u64,
    /// Events lost since start, by reason: in the kernel (`ringbuf-full`,
    /// `conn-map-full`, `udp-map-full`) or on the way to the reporter.
    pub dropped: BTreeMap<String, u64>,
    /// Tracked TCP connections and UDP conversations in the kernel maps.
    pub tcp_entries: usize,
    pub udp_entries: usize,
    /// Unix milliseconds this status was written.
    pub at_ms: i64,
}

/// A handle on capture: its status, and how to stop it.
#[derive(Clone)]
pub struct CaptureHandle {
    status: Arc<Mutex<CaptureStatus>>,
}

impl CaptureHandle {
    pub fn status(&self) -> CaptureStatus {
        lock(&self.status).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts capture as `config.mode` says. `Err` only for `--flows on` when
/// capture cannot run (the agent should not start then); in `auto` the
/// reason is in the status.
pub fn start(
    config: CaptureConfig,
    sink: FlowSink,
    inventory: Inventory,
    metrics: Arc<AgentMetrics>,
    data_dir: &Path,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(CaptureHandle, Option<JoinHandle<()>>), String> {
    let status = Arc::new(Mutex::new(CaptureStatus {
        mode: config.mode,
        ..CaptureStatus::default()
    }));
    let handle = CaptureHandle {
        status: status.clone(),
    };
    let status_path = data_dir.join(STATUS_FILE);
    let unavailable = |code: &str, reason: String| {
        metrics
            .flow_capture_unavailable
            .get_or_create(&ReasonLabels {
                reason: code.to_string(),
            })
            .set(1);
        metrics.flow_capture_up.set(0);
        let mut s = lock(&status);
        s.state = if config.mode == CaptureMode::Off {
            CaptureState::Off
        } else {
            CaptureState::Unavailable
        };
        s.reason_code = code.to_string();
        s.reason = reason;
        s.at_ms = now_ms();
        write_status(&status_path, &s);
    };
    if config.mode == CaptureMode::Off {
        unavailable("off", "flow capture is off (--flows off)".into());
        return Ok((handle, None));
    }
    let capture = hallmark_bpf::probe().and_then(|()| Capture::load(&CaptureOptions::default()));
    let capture = match capture {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("{e}");
            if config.mode == CaptureMode::On {
                unavailable(e.reason(), reason.clone());
                return Err(format!(
                    "flow capture (--flows on): {reason}; run with --flows auto to serve identities without it"
                ));
            }
            tracing::warn!(reason = %reason, "flow capture unavailable; identities are served without it");
            unavailable(e.reason(), reason);
            return Ok((handle, None));
        }
    };
    let Some(root) = hallmark_bpf::cgroup2_mount() else {
        unavailable("no-cgroup2", "no cgroup2 hierarchy is mounted".into());
        return Ok((handle, None));
    };
    {
        let mut s = lock(&status);
        s.state = CaptureState::Running;
        s.tcp_attach = capture.tcp_attach().as_str().to_string();
        s.udp = capture.udp_enabled();
        s.at_ms = now_ms();
        write_status(&status_path, &s);
    }
    metrics.flow_capture_up.set(1);
    tracing::info!(
        tcp = capture.tcp_attach().as_str(),
        udp = capture.udp_enabled(),
        "flow capture attached"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let resolver = CgroupResolver::new(root, &config.cgroups);
    let worker = Worker {
        config,
        capture,
        resolver,
        sink,
        inventory,
        metrics,
        status,
        status_path,
        stop: stop.clone(),
        last_drops: Drops::default(),
        last_malformed: 0,
        interim_cursor: 0,
        record_counters: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("hallmark-capture".into())
        .spawn(move || worker.run())
        .map_err(|e| format!("starting the capture thread: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        stop.store(true, Ordering::Relaxed);
        // Joining detaches the programs (the thread drops the capture).
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    });
    Ok((handle, Some(task)))
}

fn now_ms() -> i64 {
    hallmark_core::time::unix_millis(std::time::SystemTime::now())
}

/// Writes the status file atomically (0644: it holds no secret).
fn write_status(path: &Path, status: &CaptureStatus) {
    let Ok(text) = serde_json::to_vec_pretty(status) else {
        return;
    };
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Reads a status file an agent wrote.
pub fn read_status(data_dir: &Path) -> std::io::Result<CaptureStatus> {
    let path: PathBuf = data_dir.join(STATUS_FILE);
    let text = std::fs::read_to_string(&path)?;
    serde_json::from_str(&text).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// How long the capture thread waits on the ring buffer before it looks
/// at the clock (UDP sweeps, interim reports, stop).
const POLL_TIMEOUT_MS: u16 = 200;
/// After a drain that found records, the thread lets more gather this
/// long before it waits on the ring buffer again: one wakeup then takes
/// many records, where waking for each costs more CPU than the record
/// (a connection storm would otherwise pay a wakeup per connection). The
/// 4 MiB ring holds tens of thousands of records, far more than arrive
/// in this time.
pub const BATCH_WAIT: Duration = Duration::from_millis(20);
/// Kernel map sizes are counted this often (counting walks every key).
const MAP_COUNT_EVERY: Duration = Duration::from_secs(15);
/// UDP sweeps and drop counts, this often.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);
/// The status file is rewritten this often.
const STATUS_EVERY: Duration = Duration::from_secs(5);

struct Worker {
    config: CaptureConfig,
    capture: Capture,
    resolver: CgroupResolver,
    sink: FlowSink,
    inventory: Inventory,
    metrics: Arc<AgentMetrics>,
    status: Arc<Mutex<CaptureStatus>>,
    status_path: PathBuf,
    stop: Arc<AtomicBool>,
    last_drops: Drops,
    last_malformed: u64,
    /// Where the next interim pass starts among the open connections.
    interim_cursor: usize,
    /// `hallmark_agent_flow_capture_records_total` by kind, as looked up.
    record_counters: Vec<(&'static str, prometheus_client::metrics::counter::Counter)>,
}

impl Worker {
    fn run(mut self) {
        let mut clock = Clock::now();
        let mut events = Vec::new();
        let mut last_housekeeping = Instant::now();
        let mut last_report = Instant::now();
        let mut last_status = Instant::now();
        let mut last_map_count: Option<Instant> = None;
        let context = self.inventory.context_name().to_string();
        while !self.stop.load(Ordering::Relaxed) {
            self.wait_for_events();
            events.clear();
            if self.capture.drain_tcp(&mut events) > 0 {
                std::thread::sleep(BATCH_WAIT);
                self.capture.drain_tcp(&mut events);
            }
            for ev in &events {
                let Some(tag) = self.local(ev.cgroup_id) else {
                    continue;
                };
                let flow = convert::tcp_flow(ev, tag.as_ref(), &context, &clock);
                let failed = matches!(
                    ev.outcome,
                    hallmark_bpf::Outcome::Refused | hallmark_bpf::Outcome::TimedOut
                );
                let kind = if failed { "tcp-failed" } else { "tcp" };
                self.send(flow, kind);
            }
            let now = Instant::now();
            if now.duration_since(last_housekeeping) >= HOUSEKEEPING_EVERY {
                last_housekeeping = now;
                // A stepped wall clock moves flow times; small drift is
                // left alone so a connection's reports keep one start.
                let fresh = Clock::now();
                if fresh.drift_ms(&clock).abs() > 100 {
                    clock = fresh;
                }
                let interim = now.duration_since(last_report) >= self.config.report_interval;
                self.sweep_udp(&context, &clock, interim);
                if interim {
                    last_report = now;
                    self.report_open(&context, &clock);
                }
                self.count_drops();
                if last_map_count.is_none_or(|at| now.duration_since(at) >= MAP_COUNT_EVERY) {
                    last_map_count = Some(now);
                    self.count_map_usage();
                }
            }
            if now.duration_since(last_status) >= STATUS_EVERY {
                last_status = now;
                let mut s = lock(&self.status);
                s.at_ms = now_ms();
                write_status(&self.status_path, &s);
            }
        }
        tracing::info!("flow capture detached");
        self.metrics.flow_capture_up.set(0);
    }

    /// Waits until the ring buffer has records or the poll times out.
    fn wait_for_events(&self) {
        let mut fds = [nix::poll::PollFd::new(
            self.capture.ring(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(POLL_TIMEOUT_MS));
    }

    /// The local end of a record from cgroup `id`: `None` when the socket
    /// is outside this agent's subtree (not this node's: skipped, and
    /// counted as `outside`), `Some(None)` when the cgroup is unknown (gone
    /// before it could be read: the flow is reported untagged).
    fn local(&mut self, id: u64) -> Option<Option<cgroups::LocalTag>> {
        match self.resolver.resolve(id, &self.inventory) {
            cgroups::Resolved::Tag(tag) => Some(Some(tag)),
            cgroups::Resolved::Unknown => Some(None),
            cgroups::Resolved::Outside => {
                self.count_records("outside", 1);
                None
            }
        }
    }

    /// Counts records of `kind`. Once per record: the counter of each kind
    /// is looked up once and kept, not found by its labels every time.
    fn count_records(&mut self, kind: &'static str, n: u64) {
        let counter = match self.record_counters.iter().find(|(k, _)| *k == kind) {
            Some((_, c)) => c,
            None => {
                let c = self
                    .metrics
                    .flow_capture_records
                    .get_or_create(&KindLabels { kind: kind.into() })
                    .clone();
                self.record_counters.push((kind, c));
                &self.record_counters[self.record_counters.len() - 1].1
            }
        };
        counter.inc_by(n);
    }

    fn send(&mut self, flow: hallmark_flows::Flow, kind: &'static str) {
        self.count_records(kind, 1);
        lock(&self.status).records += 1;
        if let Err(reason) = self.sink.offer(flow) {
            self.drop_events(reason, 1);
        }
    }

    fn drop_events(&self, reason: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.metrics
            .flow_events_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc_by(n);
        *lock(&self.status)
            .dropped
            .entry(reason.to_string())
            .or_default() += n;
    }

    fn sweep_udp(&mut self, context: &str, clock: &Clock, interim: bool) {
        if !self.capture.udp_enabled() {
            return;
        }
        let now = hallmark_bpf::monotonic_now_ns();
        let every = if interim {
            Duration::ZERO
        } else {
            Duration::MAX
        };
        for u in self.capture.sweep_udp(now, self.config.udp_idle, every) {
            let Some(tag) = self.local(u.cgroup_id) else {
                continue;
            };
            let flow = convert::udp_flow(&u, tag.as_ref(), context, clock);
            self.send(flow, if u.closed { "udp" } else { "udp-interim" });
        }
    }

    /// Interim reports of open connections, and the host-network
    /// workloads' listening ports.
    fn report_open(&mut self, context: &str, clock: &Clock) {
        let snapshot = match self.capture.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "capture snapshot failed");
                return;
            }
        };
        // Interim reports never crowd out closed connections: they take at
        // most half of the reporter's free room, and the connections left
        // over are reported first next time (their counters are cumulative,
        // so nothing is lost by waiting).
        let open = snapshot.open.len();
        let budget = (self.sink.room() / 2).min(open);
        let start = if open == 0 {
            0
        } else {
            self.interim_cursor % open
        };
        for ev in snapshot.open.iter().cycle().skip(start).take(budget) {
            let Some(tag) = self.local(ev.cgroup_id) else {
                continue;
            };
            let flow = convert::tcp_flow(ev, tag.as_ref(), context, clock);
            self.send(flow, "tcp-interim");
        }
        self.interim_cursor = start + budget;
        if budget < open {
            self.count_records("tcp-interim-deferred", (open - budget) as u64);
        }
        let mut claims = Vec::new();
        for l in &snapshot.listening {
            if let Some(Some(tag)) = self.local(l.cgroup_id) {
                if let (true, Some(id)) = (tag.by_port, tag.container_id) {
                    claims.push(PortClaim {
                        ip: l.local.ip(),
                        port: l.local.port(),
                        container_id: id,
                    });
                }
            }
        }
        self.sink.set_port_claims(claims);
    }

    fn count_drops(&mut self) {
        let d = self.capture.drops();
        let last = std::mem::replace(&mut self.last_drops, d);
        self.drop_events(
            "ringbuf-full",
            d.ringbuf_full.saturating_sub(last.ringbuf_full),
        );
        self.drop_events(
            "conn-map-full",
            d.conn_map_full.saturating_sub(last.conn_map_full),
        );
        self.drop_events(
            "udp-map-full",
            d.udp_map_full.saturating_sub(last.udp_map_full),
        );
        // Records the loader could not read: none while the object and the
        // crate agree, but a record lost is counted, whatever the cause.
        let malformed = self.capture.malformed_records();
        let before = std::mem::replace(&mut self.last_malformed, malformed);
        self.drop_events("malformed", malformed.saturating_sub(before));
    }

    fn count_map_usage(&mut self) {
        let usage = self.capture.map_usage();
        for (map, n, max) in [
            ("tcp", usage.conn, usage.conn_max),
            ("udp", usage.udp, usage.udp_max),
        ] {
            let labels = MapLabels { map: map.into() };
            self.metrics
                .flow_capture_map_entries
                .get_or_create(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            self.metrics
                .flow_capture_map_capacity
                .get_or_create(&labels)
                .set(i64::try_from(max).unwrap_or(i64::MAX));
        }
        let mut s = lock(&self.status);
        s.tcp_entries = usage.conn;
        s.udp_entries = usage.udp;
    }
}
