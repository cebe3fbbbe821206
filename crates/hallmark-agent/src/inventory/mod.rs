//! The node's workload inventory: every container the runtime knows on
//! this node, kept current from the runtime's events, reported to the
//! server, written to a spool file, and asked by attestation.
//!
//! One [`Inventory`] per agent; its tasks:
//! - the follower (`follow`): finds the runtime, subscribes to its
//!   events, lists everything, inspects what changed, resyncs periodically,
//!   and retries with backoff while the runtime is missing or failing;
//! - the reporter (`report`): sends queued lifecycle events to the
//!   server as soon as there are any, and full snapshots after each
//!   (re)connect and resync;
//! - the spooler (`spool`): writes the current snapshot to disk after
//!   changes.
//!
//! Beside them: `state` keeps the records and decides the events, `resolve`
//! answers attestation's question about one container, and `status` tracks
//! the runtime's health for reports and the `/status` endpoint.
//!
//! Invariants:
//! - a record is only ever the runtime's word about *that* container ID;
//!   [`Inventory::resolve`] never answers with another container's record;
//! - events of one container are applied in the order the runtime sent
//!   them; a listing never overwrites something an event said later;
//! - a container that ran is told as `started` and then `stopped`, even if
//!   it lived between two looks at it, as long as the runtime still knew it
//!   when asked.

mod follow;
mod report;
mod resolve;
#[cfg(test)]
pub(crate) mod scripted;
mod spool;
mod state;
mod status;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures::future::{BoxFuture, Shared};
use hallmark_core::time::unix_millis;
use hallmark_core::{Confidence, RuntimeSource, Workload};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_client::NodeClient;
use hallmark_runtime::discovery::DiscoveryConfig;
use hallmark_runtime::{Runtime, RuntimeEvent};
use tokio::sync::{broadcast, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::metrics::AgentMetrics;
use report::EventQueue;
use state::{ResyncInfo, State};

/// The runtime as reported to the server and written to the spool file.
pub use hallmark_core::RuntimeStatus;

pub use report::{BATCH as REPORT_BATCH, QUEUE_CAPACITY};
pub use spool::{SpoolDocument, SpoolError, DEBOUNCE as SPOOL_DEBOUNCE};
pub use state::{EventKind, InventoryEvent};
use status::RuntimeInfo;
pub use status::{DiscoveryAttempt, InventoryStatus};

/// The spool file's name under the agent's data directory.
pub const SPOOL_FILE: &str = "inventory.json";
/// How long [`Inventory::start`] waits for the first listing before it
/// returns and lets the rest happen in the background.
const START_WAIT: Duration = Duration::from_secs(2);
/// Inspects in flight at once, across all containers.
const INSPECT_CONCURRENCY: usize = 16;
/// Lifecycle events buffered for each [`Inventory::subscribe`] receiver.
const BROADCAST_CAPACITY: usize = 4096;
/// Identity changes of one derivation round told as `updated` events; a
/// round with more goes to the server as a snapshot instead.
pub const IDENTITY_EVENTS_MAX: usize = 64;

/// The identity derived for one container from one of its records.
#[derive(Debug, Clone)]
pub(crate) struct IdentityUpdate {
    /// The record the identity was derived from.
    pub basis: Workload,
    pub selectors: Vec<String>,
    pub spiffe_ids: Vec<String>,
}

/// The context name used when the operator sets none.
pub const DEFAULT_CONTEXT: &str = "default";

/// How the agent finds and follows its container runtime.
#[derive(Debug, Clone)]
pub struct InventoryConfig {
    /// Operator-set name of the cluster or site this node belongs to; it
    /// qualifies every record (namespace and pod names are only unique
    /// within one cluster) and is attested as `hallmark:context:<name>`.
    pub context_name: String,
    pub discovery: DiscoveryConfig,
    /// Full resync period, a safety net behind the runtime's events.
    pub resync_interval: Duration,
    /// Where the latest snapshot is written; `None`: `<data_dir>/inventory.json`.
    pub spool_path: Option<PathBuf>,
    /// How long attestation waits for the runtime to describe a container
    /// it has not seen yet, before answering with unix selectors only.
    pub unknown_container_wait: Duration,
    /// Lifecycle events kept for the server while it cannot take them;
    /// beyond this the oldest are dropped (and counted).
    pub report_queue_capacity: usize,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            context_name: DEFAULT_CONTEXT.to_string(),
            discovery: DiscoveryConfig::default(),
            resync_interval: Duration::from_secs(30),
            spool_path: None,
            unknown_container_wait: Duration::from_secs(1),
            report_queue_capacity: QUEUE_CAPACITY,
        }
    }
}

/// Which runtime the inventory follows.
#[derive(Clone)]
pub enum RuntimeSetup {
    /// Find it with [`hallmark_runtime::discovery::discover`] from the
    /// configuration, and keep looking (with backoff) until one answers.
    Discover,
    /// Use this one (tests, or a caller that already connected).
    Given(Arc<dyn Runtime>),
    /// No runtime: the inventory stays empty and reports itself degraded
    /// with this reason.
    None { reason: String },
}

impl std::fmt::Debug for RuntimeSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeSetup::Discover => f.write_str("Discover"),
            RuntimeSetup::Given(rt) => write!(f, "Given({} at {})", rt.source(), rt.endpoint()),
            RuntimeSetup::None { reason } => write!(f, "None({reason})"),
        }
    }
}

/// The node's workload inventory. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    inner: Arc<Inner>,
}

/// Shared by the inventory's handle and tasks.
pub(crate) struct Inner {
    config: InventoryConfig,
    spool_path: PathBuf,
    state: Mutex<State>,
    info: Mutex<RuntimeInfo>,
    queue: Mutex<EventQueue>,
    /// Wakes the reporter: events queued or a snapshot due.
    report_work: Notify,
    snapshot_due: AtomicBool,
    /// Wakes the spooler.
    spool_work: Notify,
    spool_dirty: AtomicBool,
    events: broadcast::Sender<InventoryEvent>,
    metrics: Arc<AgentMetrics>,
    /// Inspects started by [`Inventory::resolve`], shared by every caller
    /// asking about the same container at the same time.
    inflight: Mutex<HashMap<String, Shared<BoxFuture<'static, Option<Workload>>>>>,
    inspect_limit: Semaphore,
    /// Set once the first discovery and listing round is over, whatever
    /// its outcome.
    started: watch::Sender<bool>,
}

/// Locks `m`; a panic elsewhere while holding it leaves data that is still
/// consistent (every update is a single insert/remove), so poisoning is
/// ignored rather than spread.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inventory {
    /// Starts the inventory's tasks: the runtime follower (per `runtime`),
    /// the reporter (over `node_client`, whenever it holds a client) and
    /// the spool writer. Waits up to a couple of seconds for the first
    /// listing so that the inventory is populated when the agent starts
    /// serving; a slow or missing runtime is then followed in the
    /// background. Every task ends when `shutdown` turns true.
    pub async fn start(
        config: InventoryConfig,
        data_dir: &Path,
        runtime: RuntimeSetup,
        node_client: watch::Receiver<Option<NodeClient<Channel>>>,
        metrics: Arc<AgentMetrics>,
        shutdown: watch::Receiver<bool>,
    ) -> (Inventory, Vec<JoinHandle<()>>) {
        let spool_path = config
            .spool_path
            .clone()
            .unwrap_or_else(|| data_dir.join(SPOOL_FILE));
        let queue = EventQueue::new(config.report_queue_capacity);
        let inner = Arc::new(Inner {
            config,
            spool_path,
            state: Mutex::new(State::default()),
            info: Mutex::new(RuntimeInfo {
                status: RuntimeStatus {
                    runtime: "none".into(),
                    reason: "looking for a container runtime".into(),
                    ..RuntimeStatus::default()
                },
                attempts: Vec::new(),
                runtime: None,
                note: String::new(),
                resync: ResyncInfo::default(),
                listed_once: false,
            }),
            queue: Mutex::new(queue),
            report_work: Notify::new(),
            snapshot_due: AtomicBool::new(false),
            spool_work: Notify::new(),
            spool_dirty: AtomicBool::new(true),
            events: broadcast::channel(BROADCAST_CAPACITY).0,
            metrics,
            inflight: Mutex::new(HashMap::new()),
            inspect_limit: Semaphore::new(INSPECT_CONCURRENCY),
            started: watch::channel(false).0,
        });
        let mut started = inner.started.subscribe();
        inner.spool_work.notify_one();
        let tasks = vec![
            tokio::spawn(follow::run(inner.clone(), runtime, shutdown.clone())),
            tokio::spawn(report::run(inner.clone(), node_client, shutdown.clone())),
            tokio::spawn(spool::run(inner.clone(), shutdown)),
        ];
        let _ = tokio::time::timeout(START_WAIT, started.wait_for(|s| *s)).await;
        (Inventory { inner }, tasks)
    }

    /// The current record of `container_id`, if the inventory has one.
    pub fn get(&self, container_id: &str) -> Option<Workload> {
        lock(&self.inner.state).get(container_id).cloned()
    }

    /// Every record, ordered by container ID.
    pub fn workloads(&self) -> Vec<Workload> {
        let mut v: Vec<Workload> = lock(&self.inner.state).iter().cloned().collect();
        v.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        v
    }

    /// The operator-set context (cluster/site) name.
    pub fn context_name(&self) -> &str {
        &self.inner.config.context_name
    }

    /// Inserts records as if a listing had returned them, without events
    /// (benchmarks measure the memory of a populated inventory with it).
    pub fn insert_synthetic(&self, workloads: Vec<Workload>) {
        let mut state = lock(&self.inner.state);
        state.insert_quiet(workloads);
        self.inner.gauges(&state);
        drop(state);
        self.inner.spool_changed();
    }

    /// Running containers with a process ID: those an identity can be
    /// derived for.
    pub(crate) fn live_with_pid(&self) -> Vec<Workload> {
        lock(&self.inner.state).live_with_pid()
    }

    /// Containers that carry a derived identity now.
    pub(crate) fn identity_count(&self) -> usize {
        lock(&self.inner.state).with_identity()
    }

    /// Sets the selectors and SPIFFE IDs derived for each container of a
    /// `basis` record from that record; one whose inventory record has
    /// moved on since is left alone. The changes reach the server as
    /// `updated` events, or, when one round changes more than
    /// [`IDENTITY_EVENTS_MAX`] records (the first round on a busy node,
    /// new entries matching many workloads), in a snapshot sent at once:
    /// so many events would push lifecycle events out of the report queue.
    /// Either way every later snapshot carries them.
    pub(crate) fn set_identities(&self, updates: Vec<IdentityUpdate>) {
        let at_ms = unix_millis(SystemTime::now());
        let mut state = lock(&self.inner.state);
        let mut events = Vec::new();
        for u in updates {
            events.extend(state.set_identity(&u.basis, u.selectors, u.spiffe_ids, at_ms));
        }
        if events.len() <= IDENTITY_EVENTS_MAX {
            self.inner.publish(&state, events);
            return;
        }
        drop(state);
        self.inner.snapshot_due.store(true, Ordering::SeqCst);
        self.inner.report_work.notify_one();
        self.inner.spool_changed();
    }

    /// Lifecycle events from now on. A receiver that falls more than a few
    /// thousand events behind loses the oldest (see `broadcast`).
    pub fn subscribe(&self) -> broadcast::Receiver<InventoryEvent> {
        self.inner.events.subscribe()
    }
}

impl Inner {
    fn epoch(&self) -> u64 {
        lock(&self.state).epoch()
    }

    fn mark_started(&self) {
        self.started.send_replace(true);
    }

    /// Queues a runtime event on its container's lane, starting a task for
    /// the lane if none works it.
    fn on_event(self: &Arc<Self>, rt: &Arc<dyn Runtime>, ev: RuntimeEvent) {
        self.metrics
            .runtime_events
            .get_or_create(&crate::metrics::ActionLabels {
                action: follow::action_name(ev.action).to_string(),
            })
            .inc();
        let id = ev.container_id.clone();
        if id.is_empty() {
            return;
        }
        if lock(&self.state).enqueue(ev) {
            tokio::spawn(follow::lane(self.clone(), rt.clone(), id));
        }
    }

    fn next_batch(&self, id: &str) -> Option<Vec<RuntimeEvent>> {
        lock(&self.state).next_batch(id)
    }

    /// Takes the runtime's word on one container.
    fn upsert(&self, w: Workload) {
        let mut state = lock(&self.state);
        let events = state.upsert(w, unix_millis(SystemTime::now()));
        self.publish(&state, events);
    }

    /// After a failed inspect: a partial record, unless something better
    /// is already known.
    fn upsert_partial(&self, id: &str, source: RuntimeSource, reason: &str) {
        let mut state = lock(&self.state);
        if state.get(id).is_some() {
            return;
        }
        let events = state.upsert(
            Workload::partial(id, source, reason),
            unix_millis(SystemTime::now()),
        );
        self.publish(&state, events);
    }

    /// The runtime no longer has `id`.
    fn forget(&self, id: &str) {
        let mut state = lock(&self.state);
        let events = state.remove(id, unix_millis(SystemTime::now()));
        self.publish(&state, events);
    }

    /// A record learnt outside events and listings (by `resolve`). Taken
    /// only when nothing better is known and no event is being worked on
    /// for that container: the lane's own inspect is at least as new.
    fn offer(&self, w: Workload) {
        let mut state = lock(&self.state);
        let id = w.container_id.clone();
        let better_known = state
            .get(&id)
            .is_some_and(|k| k.confidence == Confidence::Full);
        if better_known || state.has_lane(&id) {
            return;
        }
        state.touch(&id);
        let events = state.upsert(w, unix_millis(SystemTime::now()));
        self.publish(&state, events);
    }

    fn apply_listing(&self, listed: Vec<Workload>, since: u64, took: Duration) {
        let quiet = {
            let mut info = lock(&self.info);
            let first = !info.listed_once;
            info.listed_once = true;
            info.resync = ResyncInfo {
                at_ms: unix_millis(SystemTime::now()),
                took,
                count: info.resync.count + 1,
            };
            first
        };
        {
            let mut state = lock(&self.state);
            let events = state.apply_listing(listed, since, unix_millis(SystemTime::now()), quiet);
            self.publish(&state, events);
        }
        self.metrics.inventory_resyncs.inc();
        self.snapshot_due.store(true, Ordering::SeqCst);
        self.report_work.notify_one();
        self.spool_changed();
        self.mark_started();
    }

    /// Sends `events` to the report queue and to subscribers. Called with
    /// the state lock held, so that events leave in the order they were
    /// decided.
    fn publish(&self, state: &State, events: Vec<InventoryEvent>) {
        self.gauges(state);
        if events.is_empty() {
            return;
        }
        {
            let mut q = lock(&self.queue);
            for e in &events {
                let dropped = q.push(e.clone());
                if dropped > 0 {
                    self.metrics.inventory_dropped_events.inc_by(dropped);
                }
            }
        }
        for e in events {
            // No subscriber is not an error.
            let _ = self.events.send(e);
        }
        self.report_work.notify_one();
        self.spool_changed();
    }

    fn gauges(&self, state: &State) {
        self.metrics.inventory_workloads.set(state.len() as i64);
        self.metrics
            .inventory_partial_workloads
            .set(state.partial() as i64);
    }

    fn spool_changed(&self) {
        self.spool_dirty.store(true, Ordering::SeqCst);
        self.spool_work.notify_one();
    }

    fn take_spool_dirty(&self) -> bool {
        self.spool_dirty.swap(false, Ordering::SeqCst)
    }

    fn take_snapshot_due(&self) -> bool {
        self.snapshot_due.swap(false, Ordering::SeqCst)
    }

    fn queue(&self) -> MutexGuard<'_, EventQueue> {
        lock(&self.queue)
    }

    /// What every report carries besides its payload.
    fn report_header(&self) -> pb::InventoryReport {
        let runtime = pb::RuntimeStatus::from(&lock(&self.info).status);
        pb::InventoryReport {
            context_name: self.config.context_name.clone(),
            runtime: Some(runtime),
            dropped_events: lock(&self.queue).dropped(),
            ..Default::default()
        }
    }

    fn snapshot_records(&self) -> Vec<pb::WorkloadRecord> {
        lock(&self.state)
            .iter()
            .map(pb::WorkloadRecord::from)
            .collect()
    }

    fn spool_document(&self) -> SpoolDocument {
        let mut workloads: Vec<Workload> = lock(&self.state).iter().cloned().collect();
        workloads.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        SpoolDocument {
            context_name: self.config.context_name.clone(),
            written_at_ms: unix_millis(SystemTime::now()),
            runtime: lock(&self.info).status.clone(),
            workloads,
        }
    }
}
