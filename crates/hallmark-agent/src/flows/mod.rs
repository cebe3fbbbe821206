//! What the agent tells the server for flow attribution: the flows seen on
//! this node, and ownership heartbeats.
//!
//! - [`FlowSink`]: where capture hands its flows. It never blocks: a flow
//!   it cannot take is dropped and counted.
//! - the reporter (`report`): batches flows into `Node.ReportFlows` calls.
//!   A batch stays in a bounded spool until the server acknowledges it, and
//!   is resent in order, with backoff, while the server is away. What does
//!   not fit in the spool is dropped, counted, and told to the server in
//!   `dropped_flows`.
//! - the heartbeat (`heartbeat`): every `ownership_heartbeat`, the
//!   addresses the node's running workloads and the node itself hold, sent
//!   with `Node.Heartbeat`. Heartbeats are evidence of "who held this IP
//!   at that time", so one that cannot be sent is skipped, never queued.

mod heartbeat;
mod report;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hallmark_flows::Flow;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_client::NodeClient;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::inventory::Inventory;
use crate::metrics::AgentMetrics;

pub use heartbeat::{heartbeat_addresses, node_addresses, port_claim_addresses, usable_node_ip};
pub use report::Spool;

/// Flow reporting and ownership heartbeats.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// How often the agent re-asserts the addresses its workloads and the
    /// node hold (`--ownership-heartbeat`).
    pub ownership_heartbeat: Duration,
    /// Flows per `ReportFlows` batch, at most.
    pub batch_max: usize,
    /// A batch that is not full is sent after this long.
    pub batch_interval: Duration,
    /// Flows kept (in batches) while the server has not acknowledged them;
    /// beyond this, new flows are dropped and counted.
    pub spool_capacity: usize,
    /// Flows [`FlowSink::try_send`] buffers for the reporter; beyond this,
    /// capture's flows are dropped and counted.
    pub sink_capacity: usize,
}

/// The default `--ownership-heartbeat`.
pub const DEFAULT_OWNERSHIP_HEARTBEAT: Duration = Duration::from_secs(10);

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            ownership_heartbeat: DEFAULT_OWNERSHIP_HEARTBEAT,
            batch_max: 1000,
            batch_interval: Duration::from_secs(1),
            spool_capacity: 100_000,
            sink_capacity: 10_000,
        }
    }
}

impl FlowConfig {
    /// Checks the values, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.ownership_heartbeat < Duration::from_millis(100) {
            return Err(format!(
                "ownership_heartbeat {:?}: must be at least 100ms",
                self.ownership_heartbeat
            ));
        }
        if self.batch_max == 0 || self.spool_capacity == 0 || self.sink_capacity == 0 {
            return Err("flow batch size, spool capacity and sink capacity must be above 0".into());
        }
        if self.batch_interval.is_zero() {
            return Err("flow batch interval must be above 0".into());
        }
        Ok(())
    }
}

/// Drop reasons, as the `reason` label of `hallmark_agent_flows_dropped_total`.
pub mod reason {
    /// The spool of unacknowledged batches was full.
    pub const SPOOL_FULL: &str = "spool-full";
    /// The sink's buffer was full (the reporter fell behind capture).
    pub const SINK_FULL: &str = "sink-full";
    /// The flow broke a rule of [`hallmark_flows::Flow::validate`].
    pub const INVALID: &str = "invalid";
    /// The agent was shutting down.
    pub const SHUTDOWN: &str = "shutdown";
}

/// State shared by the sink, the reporter, the heartbeat and the status.
pub(crate) struct Shared {
    metrics: Arc<AgentMetrics>,
    context_name: String,
    /// Flows dropped since start, for any reason.
    dropped: AtomicU64,
    spool: Mutex<SpoolDepth>,
    heartbeat: Mutex<HeartbeatInfo>,
    /// Ports host-network workloads listen on, from capture.
    port_claims: Mutex<Vec<PortClaim>>,
}

/// A host-network workload's listening port: it owns that port of the
/// node's address (all of them for a wildcard bind).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortClaim {
    /// The bound address; unspecified for a wildcard bind.
    pub ip: IpAddr,
    pub port: u16,
    pub container_id: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct SpoolDepth {
    batches: usize,
    flows: usize,
}

#[derive(Debug, Clone, Default)]
struct HeartbeatInfo {
    last_ok_ms: i64,
    last_addresses: usize,
    /// Why the last heartbeat failed; empty when it was delivered.
    last_error: String,
}

impl Shared {
    fn new(metrics: Arc<AgentMetrics>, context_name: String) -> Self {
        Shared {
            metrics,
            context_name,
            dropped: AtomicU64::new(0),
            spool: Mutex::new(SpoolDepth::default()),
            heartbeat: Mutex::new(HeartbeatInfo::default()),
            port_claims: Mutex::new(Vec::new()),
        }
    }

    fn drop_flows(&self, reason: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.metrics.flows_dropped(reason, n);
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn set_spool_depth(&self, batches: usize, flows: usize) {
        *lock(&self.spool) = SpoolDepth { batches, flows };
        self.metrics
            .flow_spool_batches
            .set(i64::try_from(batches).unwrap_or(i64::MAX));
        self.metrics
            .flow_spool_flows
            .set(i64::try_from(flows).unwrap_or(i64::MAX));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where capture hands flows to the reporter. Cheap to clone.
#[derive(Clone)]
pub struct FlowSink {
    tx: mpsc::Sender<Flow>,
    shared: Arc<Shared>,
}

impl FlowSink {
    /// Hands one flow to the reporter without waiting. Returns false, and
    /// counts the flow as dropped, when it is invalid, when the reporter's
    /// buffer is full, or when the agent is shutting down.
    pub fn try_send(&self, flow: Flow) -> bool {
        self.offer(flow).is_ok()
    }

    /// [`FlowSink::try_send`], saying why a flow was dropped (one of
    /// [`reason`]).
    pub fn offer(&self, flow: Flow) -> Result<(), &'static str> {
        if let Err(e) = flow.validate() {
            tracing::debug!(error = %e, "flow dropped: invalid");
            self.shared.drop_flows(reason::INVALID, 1);
            return Err(reason::INVALID);
        }
        match self.tx.try_send(flow) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.drop_flows(reason::SINK_FULL, 1);
                Err(reason::SINK_FULL)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.drop_flows(reason::SHUTDOWN, 1);
                Err(reason::SHUTDOWN)
            }
        }
    }

    /// Flows the reporter's buffer can take right now.
    pub fn room(&self) -> usize {
        self.tx.capacity()
    }

    /// The host-network listening ports the heartbeat claims from now on.
    pub fn set_port_claims(&self, mut claims: Vec<PortClaim>) {
        claims.sort();
        claims.dedup();
        *lock(&self.shared.port_claims) = claims;
    }
}

/// Flow reporting and heartbeats as `/status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowStatus {
    /// Batches waiting for the server's acknowledgement.
    pub spool_batches: usize,
    /// Flows in those batches.
    pub spool_flows: usize,
    /// Flows dropped since start (any reason).
    pub dropped_flows: u64,
    /// Unix milliseconds of the last heartbeat the server acknowledged; 0
    /// before the first.
    pub last_heartbeat_ms: i64,
    /// Addresses that heartbeat asserted.
    pub last_heartbeat_addresses: usize,
    /// Why the latest heartbeat failed; empty when it was delivered.
    pub heartbeat_error: String,
}

/// A cheap handle on flow reporting: the sink and the status.
#[derive(Clone)]
pub struct Flows {
    sink: FlowSink,
}

impl Flows {
    /// Starts the reporter and the heartbeat. Both follow the node client
    /// (`node_client`) and end when `shutdown` turns true.
    pub fn start(
        config: FlowConfig,
        inventory: Inventory,
        node_client: watch::Receiver<Option<NodeClient<Channel>>>,
        metrics: Arc<AgentMetrics>,
        shutdown: watch::Receiver<bool>,
    ) -> (Flows, Vec<JoinHandle<()>>) {
        Self::start_with(
            config,
            inventory,
            node_client,
            metrics,
            shutdown,
            node_addresses,
        )
    }

    /// [`Flows::start`] with the node's interface addresses read by
    /// `interfaces` (tests give fixed ones).
    pub fn start_with(
        config: FlowConfig,
        inventory: Inventory,
        node_client: watch::Receiver<Option<NodeClient<Channel>>>,
        metrics: Arc<AgentMetrics>,
        shutdown: watch::Receiver<bool>,
        interfaces: fn() -> std::io::Result<Vec<IpAddr>>,
    ) -> (Flows, Vec<JoinHandle<()>>) {
        let shared = Arc::new(Shared::new(metrics, inventory.context_name().to_string()));
        let (tx, rx) = mpsc::channel(config.sink_capacity.max(1));
        let tasks = vec![
            tokio::spawn(report::run(
                shared.clone(),
                config.clone(),
                rx,
                node_client.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(heartbeat::run(
                shared.clone(),
                config.ownership_heartbeat,
                inventory,
                interfaces,
                node_client,
                shutdown,
            )),
        ];
        (
            Flows {
                sink: FlowSink { tx, shared },
            },
            tasks,
        )
    }

    /// Where capture sends flows.
    pub fn sink(&self) -> FlowSink {
        self.sink.clone()
    }

    /// Spool depth, drops and the last heartbeat.
    pub fn status(&self) -> FlowStatus {
        let shared = &self.sink.shared;
        let spool = *lock(&shared.spool);
        let hb = lock(&shared.heartbeat).clone();
        FlowStatus {
            spool_batches: spool.batches,
            spool_flows: spool.flows,
            dropped_flows: shared.dropped(),
            last_heartbeat_ms: hb.last_ok_ms,
            last_heartbeat_addresses: hb.last_addresses,
            heartbeat_error: hb.last_error,
        }
    }
}

/// The wire form of a captured flow (the one conversion in
/// `hallmark_proto::convert`): the local side by container ID only, empty
/// for the node; the server knows which node reports.
pub fn to_record(f: &Flow) -> pb::FlowRecord {
    pb::FlowRecord::from(f)
}
