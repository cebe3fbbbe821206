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
#[cfg(test)]
mod scripted;
mod spool;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use hallmark_core::{Confidence, RuntimeSource, Workload};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_client::NodeClient;
use hallmark_runtime::discovery::DiscoveryConfig;
use hallmark_runtime::{now_ms, Runtime, RuntimeEvent};
use serde::Serialize;
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

/// The spool file's name under the agent's data directory.
pub const SPOOL_FILE: &str = "inventory.json";
/// How long [`Inventory::start`] waits for the first listing before it
/// returns and lets the rest happen in the background.
const START_WAIT: Duration = Duration::from_secs(2);
/// Inspects in flight at once, across all containers.
const INSPECT_CONCURRENCY: usize = 16;
/// Lifecycle events buffered for each [`Inventory::subscribe`] receiver.
const BROADCAST_CAPACITY: usize = 4096;
/// First pause between [`Inventory::resolve`] retries; doubles up to
/// [`RESOLVE_MAX_PAUSE`].
const RESOLVE_FIRST_PAUSE: Duration = Duration::from_millis(20);
const RESOLVE_MAX_PAUSE: Duration = Duration::from_millis(200);

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

/// One socket discovery tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryAttempt {
    pub runtime: String,
    pub endpoint: String,
    pub ok: bool,
    /// The runtime's version, or why it could not be used.
    pub outcome: String,
}

/// The inventory's state for the agent's `/status` endpoint and
/// `hallmark up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryStatus {
    pub context_name: String,
    #[serde(flatten)]
    pub runtime: RuntimeStatus,
    /// What discovery tried, last time it ran.
    pub attempts: Vec<DiscoveryAttempt>,
    /// Containers known (running and stopped).
    pub workloads: usize,
    pub running: usize,
    pub stopped: usize,
    /// Records without runtime metadata (the inspect failed).
    pub partial: usize,
    /// Unix milliseconds of the last completed full listing; 0 before one.
    pub last_resync_ms: i64,
    pub last_resync_duration_ms: u64,
    pub resyncs: u64,
    /// Events queued for the server.
    pub queued_events: usize,
    /// Events dropped because the queue was full, since start.
    pub dropped_events: u64,
}

impl InventoryStatus {
    /// One line for people: which runtime and what runs, or why not.
    pub fn summary(&self) -> String {
        let r = &self.runtime;
        if r.degraded {
            return format!("degraded: {}", r.reason);
        }
        if r.runtime == "none" {
            return if r.reason.is_empty() {
                "no container runtime".to_string()
            } else {
                r.reason.clone()
            };
        }
        let what = if r.version.is_empty() {
            r.runtime.clone()
        } else {
            r.version.clone()
        };
        format!(
            "{what} at {}: {} running, {} stopped",
            r.endpoint, self.running, self.stopped
        )
    }
}

/// The node's workload inventory. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    inner: Arc<Inner>,
}

/// What the runtime side looks like now.
struct RuntimeInfo {
    status: RuntimeStatus,
    attempts: Vec<DiscoveryAttempt>,
    runtime: Option<Arc<dyn Runtime>>,
    /// How discovery chose the runtime, when worth saying (a fallback);
    /// shown as the reason while the runtime is healthy.
    note: String,
    resync: ResyncInfo,
    listed_once: bool,
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

    /// The record of `container_id` for attestation. When the inventory has
    /// no full record of it yet (its start event may still be on the way),
    /// asks the runtime directly, again and again until
    /// `unknown_container_wait` has passed. `None` when it is still unknown
    /// or there is no runtime. Concurrent callers about one container share
    /// one inspect. Never returns a record of another container.
    pub async fn resolve(&self, container_id: &str) -> Option<Workload> {
        let known = self.get(container_id);
        if let Some(w) = &known {
            if w.confidence == Confidence::Full {
                return known;
            }
        }
        if container_id.is_empty() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + self.inner.config.unknown_container_wait;
        let mut pause = RESOLVE_FIRST_PAUSE;
        loop {
            let rt = lock(&self.inner.info).runtime.clone()?;
            if let Some(w) = self.shared_inspect(rt, container_id).await {
                if w.container_id == container_id {
                    self.inner.offer(w.clone());
                    return Some(w);
                }
            }
            if let Some(w) = self.get(container_id) {
                if w.confidence == Confidence::Full || known.is_some() {
                    return Some(w);
                }
            }
            // A record the inventory holds only in part: the runtime was
            // asked once more and still could not say; no use waiting.
            if known.is_some() {
                return known;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(RESOLVE_MAX_PAUSE);
        }
    }

    async fn shared_inspect(&self, rt: Arc<dyn Runtime>, id: &str) -> Option<Workload> {
        let fut = {
            let mut inflight = lock(&self.inner.inflight);
            match inflight.get(id) {
                Some(f) => f.clone(),
                None => {
                    let inner = self.inner.clone();
                    let key = id.to_string();
                    let f = async move {
                        let r = follow::inspect(&inner, rt.as_ref(), &key).await;
                        lock(&inner.inflight).remove(&key);
                        match r {
                            Ok(w) => w,
                            Err(e) => {
                                tracing::debug!(container = %key, error = %e, "inspect for attestation failed");
                                None
                            }
                        }
                    }
                    .boxed()
                    .shared();
                    inflight.insert(id.to_string(), f.clone());
                    f
                }
            }
        };
        fut.await
    }

    /// Every record, ordered by container ID.
    pub fn workloads(&self) -> Vec<Workload> {
        let mut v: Vec<Workload> = lock(&self.inner.state).iter().cloned().collect();
        v.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        v
    }

    pub fn status(&self) -> InventoryStatus {
        let counts = lock(&self.inner.state).counts();
        let (queued_events, dropped_events) = {
            let q = lock(&self.inner.queue);
            (q.len(), q.dropped())
        };
        let info = lock(&self.inner.info);
        InventoryStatus {
            context_name: self.inner.config.context_name.clone(),
            runtime: info.status.clone(),
            attempts: info.attempts.clone(),
            workloads: counts.total,
            running: counts.running,
            stopped: counts.stopped,
            partial: counts.partial,
            last_resync_ms: info.resync.at_ms,
            last_resync_duration_ms: u64::try_from(info.resync.took.as_millis())
                .unwrap_or(u64::MAX),
            resyncs: info.resync.count,
            queued_events,
            dropped_events,
        }
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
        let events = state.upsert(w, now_ms());
        self.publish(&state, events);
    }

    /// After a failed inspect: a partial record, unless something better
    /// is already known.
    fn upsert_partial(&self, id: &str, source: RuntimeSource, reason: &str) {
        let mut state = lock(&self.state);
        if state.get(id).is_some() {
            return;
        }
        let events = state.upsert(Workload::partial(id, source, reason), now_ms());
        self.publish(&state, events);
    }

    /// The runtime no longer has `id`.
    fn forget(&self, id: &str) {
        let mut state = lock(&self.state);
        let events = state.remove(id, now_ms());
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
        let events = state.upsert(w, now_ms());
        self.publish(&state, events);
    }

    fn apply_listing(&self, listed: Vec<Workload>, since: u64, took: Duration) {
        let quiet = {
            let mut info = lock(&self.info);
            let first = !info.listed_once;
            info.listed_once = true;
            info.resync = ResyncInfo {
                at_ms: now_ms(),
                took,
                count: info.resync.count + 1,
            };
            first
        };
        {
            let mut state = lock(&self.state);
            let events = state.apply_listing(listed, since, now_ms(), quiet);
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

    fn set_runtime(&self, rt: Option<Arc<dyn Runtime>>) {
        let mut info = lock(&self.info);
        if let Some(r) = &rt {
            info.status.runtime = r.source().as_str().to_string();
            info.status.endpoint = r.endpoint().to_string();
        }
        info.runtime = rt;
    }

    /// Replaces the whole runtime status (after a discovery round).
    fn set_status(
        &self,
        runtime: &str,
        endpoint: &str,
        version: &str,
        degraded: bool,
        reason: &str,
        attempts: Vec<DiscoveryAttempt>,
    ) {
        let next = RuntimeStatus {
            runtime: runtime.to_string(),
            endpoint: endpoint.to_string(),
            version: version.to_string(),
            degraded,
            reason: reason.to_string(),
        };
        let mut info = lock(&self.info);
        info.attempts = attempts;
        if !degraded {
            info.note = reason.to_string();
        }
        self.replace_status(&mut info, next);
        drop(info);
        if degraded || runtime == "none" {
            self.mark_started();
        }
    }

    fn set_degraded(&self, degraded: bool, reason: &str) {
        let mut info = lock(&self.info);
        let mut next = info.status.clone();
        next.degraded = degraded;
        next.reason = reason.to_string();
        self.replace_status(&mut info, next);
        drop(info);
        if degraded {
            self.mark_started();
        }
    }

    /// The runtime answers again (or for the first time).
    fn set_healthy(&self) {
        let mut info = lock(&self.info);
        let mut next = info.status.clone();
        next.degraded = false;
        next.reason = info.note.clone();
        self.replace_status(&mut info, next);
    }

    fn set_version(&self, version: &str) {
        let mut info = lock(&self.info);
        let mut next = info.status.clone();
        next.version = version.to_string();
        self.replace_status(&mut info, next);
    }

    /// Installs a new status; logs, and tells the server and the spool,
    /// only when it differs from the current one, so that a runtime that
    /// stays away is reported once, not at every retry.
    fn replace_status(&self, info: &mut RuntimeInfo, next: RuntimeStatus) {
        if info.status == next {
            return;
        }
        let was = std::mem::replace(&mut info.status, next);
        let now = &info.status;
        self.metrics.runtime_degraded.set(i64::from(now.degraded));
        if now.degraded && (!was.degraded || was.reason != now.reason) {
            tracing::warn!(reason = %now.reason, "container runtime unavailable: containers get unix selectors only");
        } else if !now.degraded && was.degraded {
            tracing::info!(runtime = %now.runtime, endpoint = %now.endpoint, version = %now.version, "container runtime available again");
        } else if !now.degraded && was.runtime != now.runtime {
            tracing::info!(runtime = %now.runtime, endpoint = %now.endpoint, version = %now.version, note = %now.reason, "following the container runtime");
        }
        self.snapshot_due.store(true, Ordering::SeqCst);
        self.report_work.notify_one();
        self.spool_changed();
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
            written_at_ms: now_ms(),
            runtime: lock(&self.info).status.clone(),
            workloads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scripted::{exited, running, Scripted, ENDPOINT};
    use super::*;
    use hallmark_core::WorkloadState;
    use hallmark_runtime::EventAction;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(5);

    struct Harness {
        inv: Inventory,
        rt: Arc<Scripted>,
        events: broadcast::Receiver<InventoryEvent>,
        held: Vec<InventoryEvent>,
        metrics: Arc<AgentMetrics>,
        dir: tempfile::TempDir,
        shutdown: watch::Sender<bool>,
        tasks: Vec<JoinHandle<()>>,
        client: watch::Sender<Option<NodeClient<Channel>>>,
    }

    impl Harness {
        async fn start(rt: Arc<Scripted>, tweak: impl FnOnce(&mut InventoryConfig)) -> Self {
            let mut config = InventoryConfig {
                context_name: "lab".into(),
                // Long, so that only events (or a test's explicit resync)
                // explain what the inventory sees.
                resync_interval: Duration::from_secs(3600),
                ..InventoryConfig::default()
            };
            tweak(&mut config);
            let dir = tempfile::tempdir().unwrap();
            let (client, client_rx) = watch::channel(None);
            let (shutdown, shutdown_rx) = watch::channel(false);
            let metrics = Arc::new(AgentMetrics::default());
            let (inv, tasks) = Inventory::start(
                config,
                dir.path(),
                RuntimeSetup::Given(rt.clone()),
                client_rx,
                metrics.clone(),
                shutdown_rx,
            )
            .await;
            let events = inv.subscribe();
            Harness {
                inv,
                rt,
                events,
                held: Vec::new(),
                metrics,
                dir,
                shutdown,
                tasks,
                client,
            }
        }

        /// The next event about `id`; events about other containers are
        /// kept, in order, for later calls.
        async fn next(&mut self, id: &str) -> InventoryEvent {
            if let Some(i) = self.held.iter().position(|e| e.workload.container_id == id) {
                return self.held.remove(i);
            }
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let ev = tokio::time::timeout_at(deadline, self.events.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no event about {id} within {WAIT:?}"))
                    .unwrap();
                if ev.workload.container_id == id {
                    return ev;
                }
                self.held.push(ev);
            }
        }

        /// Asserts no event arrives within `d` (nor is held).
        async fn quiet_for(&mut self, d: Duration) {
            assert!(self.held.is_empty(), "unexpected events: {:?}", self.held);
            if let Ok(ev) = tokio::time::timeout(d, self.events.recv()).await {
                panic!("unexpected event: {ev:?}");
            }
        }

        async fn stop(self) {
            self.shutdown.send_replace(true);
            for t in self.tasks {
                tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
            }
        }
    }

    async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn first_listing_populates_quietly() {
        let rt = Scripted::new(vec![running("a"), exited("b", 3)]);
        let mut h = Harness::start(rt, |_| {}).await;
        // start() waited for the first listing.
        let ids: Vec<String> = h
            .inv
            .workloads()
            .into_iter()
            .map(|w| w.container_id)
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(h.inv.get("b").and_then(|w| w.exit_code), Some(3));
        // The starting state is not a change: it goes as a snapshot.
        h.quiet_for(Duration::from_millis(100)).await;
        let st = h.inv.status();
        assert_eq!((st.workloads, st.running, st.stopped), (2, 1, 1));
        assert_eq!(st.runtime.runtime, "docker");
        assert_eq!(st.runtime.endpoint, ENDPOINT);
        assert_eq!(st.runtime.version, "scripted 1.0");
        assert!(!st.runtime.degraded);
        assert_eq!(st.resyncs, 1);
        assert!(st.last_resync_ms > 0);
        assert_eq!(h.inv.context_name(), "lab");
        assert!(
            h.inv.status().summary().contains("1 running"),
            "{}",
            st.summary()
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn event_is_inspected_and_upserted() {
        let rt = Scripted::new(vec![]);
        let mut h = Harness::start(rt, |_| {}).await;
        h.rt.set(running("c1"));
        h.rt.emit("c1", EventAction::Created);
        h.rt.emit("c1", EventAction::Started);
        let ev = h.next("c1").await;
        assert_eq!(ev.kind, EventKind::Started);
        assert_eq!(ev.workload, running("c1"));
        assert!(ev.at_ms > 0);
        assert_eq!(h.inv.get("c1"), Some(running("c1")));

        // A rename changes the record: `updated`.
        let mut renamed = running("c1");
        renamed.name = "new-name".into();
        h.rt.set(renamed.clone());
        h.rt.emit("c1", EventAction::Renamed);
        let ev = h.next("c1").await;
        assert_eq!(ev.kind, EventKind::Updated);
        assert_eq!(ev.workload.name, "new-name");

        let text = h.metrics.render();
        assert!(
            text.contains("hallmark_agent_runtime_events_total{action=\"started\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hallmark_agent_inventory_workloads 1"),
            "{text}"
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn a_slow_start_inspect_never_overwrites_the_later_die() {
        let rt = Scripted::new(vec![]);
        let mut h = Harness::start(rt, |_| {}).await;
        h.rt.set(running("c2"));
        // The inspect for `start` reads "running" and answers late…
        h.rt.delay_next_inspect("c2", Duration::from_millis(300));
        h.rt.emit("c2", EventAction::Started);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // …while the container dies, and the die's inspect would be fast.
        h.rt.set(exited("c2", 137));
        h.rt.emit("c2", EventAction::Died);
        let first = h.next("c2").await;
        let second = h.next("c2").await;
        assert_eq!(first.kind, EventKind::Started);
        assert_eq!(first.workload.state, WorkloadState::Running);
        assert_eq!(second.kind, EventKind::Stopped);
        assert_eq!(second.workload.exit_code, Some(137));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = h.inv.get("c2").unwrap();
        assert_eq!(now.state, WorkloadState::Stopped, "the stale answer won");
        h.stop().await;
    }

    #[tokio::test]
    async fn a_container_that_exited_before_its_inspect_is_started_then_stopped() {
        let rt = Scripted::new(vec![]);
        let mut h = Harness::start(rt, |_| {}).await;
        h.rt.set(exited("c3", 0));
        h.rt.emit("c3", EventAction::Started);
        h.rt.emit("c3", EventAction::Died);
        assert_eq!(h.next("c3").await.kind, EventKind::Started);
        assert_eq!(h.next("c3").await.kind, EventKind::Stopped);
        // `die` seen after the record already said stopped: nothing more.
        h.quiet_for(Duration::from_millis(150)).await;
        h.stop().await;
    }

    #[tokio::test]
    async fn destroy_of_unknown_is_ignored_and_of_known_tells_stopped() {
        let rt = Scripted::new(vec![running("known")]);
        let mut h = Harness::start(rt, |_| {}).await;
        h.rt.emit("ghost", EventAction::Destroyed);
        h.rt.remove("known");
        h.rt.emit("known", EventAction::Destroyed);
        let ev = h.events.recv().await.unwrap();
        assert_eq!(ev.workload.container_id, "known", "{ev:?}");
        assert_eq!(ev.kind, EventKind::Stopped);
        assert_eq!(ev.workload.state, WorkloadState::Stopped);
        assert_eq!(ev.workload.pid, None);
        assert!(h.inv.workloads().is_empty());
        assert_eq!(h.rt.inspect_calls("ghost"), 0);
        h.stop().await;
    }

    #[tokio::test]
    async fn resync_diff_synthesizes_events() {
        let mut a2 = running("a");
        a2.labels.insert("tier".into(), "web".into());
        let rt = Scripted::new(vec![running("a"), running("b"), exited("old", 1)]);
        let mut h = Harness::start(rt, |c| c.resync_interval = Duration::from_millis(300)).await;
        // Changes the runtime makes without a word on the event stream.
        h.rt.set(a2.clone());
        h.rt.remove("b");
        h.rt.set(running("c"));
        h.rt.set(exited("blink", 0));
        h.rt.remove("old");
        assert_eq!(h.next("a").await.kind, EventKind::Updated);
        let b = h.next("b").await;
        assert_eq!(
            (b.kind, b.workload.state),
            (EventKind::Stopped, WorkloadState::Stopped)
        );
        assert_eq!(h.next("c").await.kind, EventKind::Started);
        assert_eq!(h.next("blink").await.kind, EventKind::Started);
        assert_eq!(h.next("blink").await.kind, EventKind::Stopped);
        let ids: Vec<String> = h
            .inv
            .workloads()
            .into_iter()
            .map(|w| w.container_id)
            .collect();
        assert_eq!(ids, vec!["a", "blink", "c"], "gone containers are removed");
        assert_eq!(h.inv.get("a"), Some(a2));
        // Nothing changed since: the next resync is silent.
        h.quiet_for(Duration::from_millis(700)).await;
        assert!(h.inv.status().resyncs >= 3);
        h.stop().await;
    }

    #[tokio::test]
    async fn a_broken_stream_resubscribes_then_resyncs() {
        let rt = Scripted::new(vec![]);
        let mut h = Harness::start(rt, |_| {}).await;
        assert_eq!(h.rt.calls(), vec!["version", "events", "list"]);
        // Started while the stream was broken: only the resync can tell.
        h.rt.set(running("missed"));
        h.rt.break_stream();
        let ev = h.next("missed").await;
        assert_eq!(ev.kind, EventKind::Started);
        let calls = h.rt.calls();
        assert_eq!(
            calls,
            vec!["version", "events", "list", "version", "events", "list"],
            "subscribe before listing, every time"
        );
        // And the new stream works.
        h.rt.set(running("after"));
        h.rt.emit("after", EventAction::Started);
        assert_eq!(h.next("after").await.kind, EventKind::Started);
        assert!(h
            .metrics
            .render()
            .contains("hallmark_agent_runtime_call_failures_total{call=\"events\"} 1"));
        h.stop().await;
    }

    #[tokio::test]
    async fn a_runtime_that_comes_back_is_picked_up() {
        let rt = Scripted::new(vec![running("x")]);
        rt.set_down(true);
        let h = Harness::start(rt, |_| {}).await;
        let st = h.inv.status();
        assert!(st.runtime.degraded, "{st:?}");
        assert!(
            st.runtime.reason.contains(ENDPOINT),
            "{}",
            st.runtime.reason
        );
        assert!(h
            .metrics
            .render()
            .contains("hallmark_agent_runtime_degraded 1"));
        h.rt.set_down(false);
        wait_until("the runtime to be followed again", || {
            (!h.inv.status().runtime.degraded && h.inv.get("x").is_some()).then_some(())
        })
        .await;
        assert!(h
            .metrics
            .render()
            .contains("hallmark_agent_runtime_degraded 0"));
        h.stop().await;
    }

    #[tokio::test]
    async fn queue_overflow_drops_the_oldest_and_counts() {
        let rt = Scripted::new(vec![]);
        let mut h = Harness::start(rt, |c| c.report_queue_capacity = 3).await;
        // No server: everything stays queued.
        for i in 0..5 {
            let id = format!("q{i}");
            h.rt.set(running(&id));
            h.rt.emit(&id, EventAction::Started);
            h.next(&id).await;
        }
        let st = h.inv.status();
        assert_eq!((st.queued_events, st.dropped_events), (3, 2));
        assert!(h
            .metrics
            .render()
            .contains("hallmark_agent_inventory_dropped_events_total 2"));
        let header = h.inv.inner.report_header();
        assert_eq!(header.dropped_events, 2);
        assert_eq!(header.context_name, "lab");
        h.stop().await;
    }

    #[tokio::test]
    async fn inspect_failure_keeps_a_partial_record_only_when_nothing_better() {
        let rt = Scripted::new(vec![running("good")]);
        let mut h = Harness::start(rt, |_| {}).await;
        h.rt.fail_inspect("good", true);
        h.rt.fail_inspect("bad", true);
        h.rt.emit("good", EventAction::Updated);
        h.rt.set(running("bad"));
        h.rt.emit("bad", EventAction::Started);
        let ev = h.next("bad").await;
        assert_eq!(ev.workload.confidence, Confidence::Partial);
        assert!(ev.workload.degraded_reason.contains("scripted failure"));
        assert_eq!(h.inv.get("good"), Some(running("good")), "full record kept");
        assert_eq!(h.inv.status().partial, 1);
        // Once the runtime answers, the full record replaces the partial one.
        h.rt.fail_inspect("bad", false);
        h.rt.emit("bad", EventAction::Updated);
        let ev = h.next("bad").await;
        assert_eq!(ev.kind, EventKind::Started);
        assert_eq!(ev.workload.confidence, Confidence::Full);
        assert_eq!(h.inv.status().partial, 0);
        let text = h.metrics.render();
        assert!(
            text.contains("hallmark_agent_runtime_call_failures_total{call=\"inspect\"} 2"),
            "{text}"
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn resolve_waits_for_a_late_container() {
        let rt = Scripted::new(vec![]);
        let h = Harness::start(rt, |c| c.unknown_container_wait = Duration::from_secs(2)).await;
        let rt = h.rt.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rt.set(running("late"));
        });
        let began = Instant::now();
        let w = h.inv.resolve("late").await;
        assert_eq!(w, Some(running("late")));
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "{:?}",
            began.elapsed()
        );
        // What resolve learnt is now in the inventory.
        assert_eq!(h.inv.get("late"), Some(running("late")));
        h.stop().await;
    }

    #[tokio::test]
    async fn resolve_gives_up_after_the_wait() {
        let rt = Scripted::new(vec![]);
        let wait = Duration::from_millis(300);
        let h = Harness::start(rt, |c| c.unknown_container_wait = wait).await;
        let began = Instant::now();
        assert_eq!(h.inv.resolve("never").await, None);
        let took = began.elapsed();
        assert!(took >= wait && took < wait * 3, "{took:?}");
        assert!(h.rt.inspect_calls("never") >= 2, "it retried");
        assert!(h.inv.get("never").is_none());
        h.stop().await;
    }

    #[tokio::test]
    async fn concurrent_resolves_share_one_inspect() {
        let h = Harness::start(Scripted::new(vec![]), |_| {}).await;
        // Created after the listing, with no event yet: only an inspect
        // can tell.
        h.rt.set(running("shared"));
        h.rt.delay_next_inspect("shared", Duration::from_millis(200));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let inv = h.inv.clone();
                tokio::spawn(async move { inv.resolve("shared").await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), Some(running("shared")));
        }
        assert_eq!(h.rt.inspect_calls("shared"), 1);
        h.stop().await;
    }

    #[tokio::test]
    async fn resolve_never_answers_for_another_container() {
        let rt = Scripted::new(vec![running("victim")]);
        rt.impostor("asked", "victim");
        let h = Harness::start(rt, |c| {
            c.unknown_container_wait = Duration::from_millis(200)
        })
        .await;
        assert_eq!(h.inv.resolve("asked").await, None);
        assert!(h.inv.get("asked").is_none());
        // A known container resolves at once, without asking the runtime.
        let before = h.rt.inspect_calls("victim");
        assert_eq!(h.inv.resolve("victim").await, Some(running("victim")));
        assert_eq!(h.rt.inspect_calls("victim"), before);
        assert_eq!(h.inv.resolve("").await, None);
        h.stop().await;
    }

    #[tokio::test]
    async fn resolve_without_a_runtime_answers_none_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_c, client_rx) = watch::channel(None);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (inv, tasks) = Inventory::start(
            InventoryConfig::default(),
            dir.path(),
            RuntimeSetup::None {
                reason: "no runtime in this test".into(),
            },
            client_rx,
            Arc::default(),
            shutdown_rx,
        )
        .await;
        let began = Instant::now();
        assert_eq!(inv.resolve("abc").await, None);
        assert!(began.elapsed() < Duration::from_millis(100));
        let st = inv.status();
        assert_eq!(st.runtime.runtime, "none");
        assert!(st.runtime.degraded);
        assert_eq!(st.runtime.reason, "no runtime in this test");
        assert!(st.summary().contains("no runtime in this test"));
        shutdown.send_replace(true);
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn spool_file_is_private_atomic_and_current() {
        let rt = Scripted::new(vec![running("s1")]);
        let h = Harness::start(rt, |_| {}).await;
        let path = h.dir.path().join(SPOOL_FILE);
        let read = || -> Option<SpoolDocument> {
            serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()
        };
        let doc = wait_until("the spool file", || {
            read().filter(|d| d.workloads.len() == 1)
        })
        .await;
        assert_eq!(doc.context_name, "lab");
        assert_eq!(doc.workloads, vec![running("s1")]);
        assert_eq!(doc.runtime.runtime, "docker");
        assert_eq!(doc.runtime.version, "scripted 1.0");
        assert!(!doc.runtime.degraded);
        assert!(doc.written_at_ms > 0);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // A change is written within the debounce period (plus slack).
        h.rt.set(running("s2"));
        h.rt.emit("s2", EventAction::Started);
        wait_until("the spool to list s2", || {
            read().filter(|d| d.workloads.len() == 2).map(|_| ())
        })
        .await;
        let names: Vec<_> = std::fs::read_dir(h.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![SPOOL_FILE.to_string()],
            "no temp file left behind"
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn synthetic_records_count_without_events() {
        let rt = Scripted::new(vec![]);
        let mut h = Harness::start(rt, |_| {}).await;
        h.inv
            .insert_synthetic((0..100).map(|i| running(&format!("syn{i}"))).collect());
        assert_eq!(h.inv.workloads().len(), 100);
        assert!(h
            .metrics
            .render()
            .contains("hallmark_agent_inventory_workloads 100"));
        h.quiet_for(Duration::from_millis(50)).await;
        h.stop().await;
    }

    /// A node API server that only takes inventory reports, failing the
    /// next `fail` calls with Unavailable.
    #[derive(Clone)]
    struct FakeNode {
        reports: tokio::sync::mpsc::UnboundedSender<pb::InventoryReport>,
        fail: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[tonic::async_trait]
    impl pb::node_server::Node for FakeNode {
        type SyncStream = futures::stream::Empty<Result<pb::SyncUpdate, tonic::Status>>;

        async fn attest(
            &self,
            _: tonic::Request<pb::AttestRequest>,
        ) -> Result<tonic::Response<pb::AttestResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("attest"))
        }

        async fn renew_agent(
            &self,
            _: tonic::Request<pb::RenewAgentRequest>,
        ) -> Result<tonic::Response<pb::RenewAgentResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("renew"))
        }

        async fn sync(
            &self,
            _: tonic::Request<pb::SyncRequest>,
        ) -> Result<tonic::Response<Self::SyncStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("sync"))
        }

        async fn batch_new_x509_svid(
            &self,
            _: tonic::Request<pb::BatchNewX509SvidRequest>,
        ) -> Result<tonic::Response<pb::BatchNewX509SvidResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("batch"))
        }

        async fn new_jwt_svid(
            &self,
            _: tonic::Request<pb::NewJwtSvidRequest>,
        ) -> Result<tonic::Response<pb::NewJwtSvidResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("jwt"))
        }

        async fn new_oidc_token(
            &self,
            _: tonic::Request<pb::NewOidcTokenRequest>,
        ) -> Result<tonic::Response<pb::NewJwtSvidResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("oidc"))
        }

        async fn report_inventory(
            &self,
            req: tonic::Request<pb::InventoryReport>,
        ) -> Result<tonic::Response<pb::InventoryAck>, tonic::Status> {
            use std::sync::atomic::Ordering::SeqCst;
            if self
                .fail
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(tonic::Status::unavailable("scripted outage"));
            }
            let _ = self.reports.send(req.into_inner());
            Ok(tonic::Response::new(pb::InventoryAck {}))
        }
    }

    struct FakeServer {
        reports: tokio::sync::mpsc::UnboundedReceiver<pb::InventoryReport>,
        fail: Arc<std::sync::atomic::AtomicUsize>,
        addr: std::net::SocketAddr,
    }

    impl FakeServer {
        async fn start() -> Self {
            let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
            let fail = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let svc = FakeNode {
                reports: tx,
                fail: fail.clone(),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(pb::node_server::NodeServer::new(svc))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            FakeServer {
                reports,
                fail,
                addr,
            }
        }

        async fn client(&self) -> NodeClient<Channel> {
            let ch = Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
            NodeClient::new(ch)
        }

        async fn next(&mut self) -> pb::InventoryReport {
            tokio::time::timeout(WAIT, self.reports.recv())
                .await
                .expect("no report within the wait")
                .unwrap()
        }

        /// Reads one whole snapshot (all its pages); returns its id and
        /// the container IDs it lists, sorted.
        async fn snapshot(&mut self) -> (u64, Vec<String>) {
            let mut ids = Vec::new();
            let first = self.next().await;
            assert_ne!(first.snapshot_id, 0, "expected a snapshot, got {first:?}");
            let id = first.snapshot_id;
            let mut page = first;
            loop {
                assert_eq!(page.snapshot_id, id);
                assert!(page.events.is_empty());
                ids.extend(page.workloads.iter().map(|w| w.container_id.clone()));
                if page.last_page {
                    break;
                }
                page = self.next().await;
            }
            ids.sort();
            (id, ids)
        }
    }

    #[tokio::test]
    async fn reports_snapshot_then_events_and_retry_after_failures() {
        let mut server = FakeServer::start().await;
        let rt = Scripted::new(vec![running("r1")]);
        let h = Harness::start(rt, |_| {}).await;
        h.client.send_replace(Some(server.client().await));

        // Connected: a snapshot first, carrying context and runtime.
        let first = server.next().await;
        assert_ne!(first.snapshot_id, 0);
        assert!(first.last_page);
        assert_eq!(first.page, 0);
        assert_eq!(first.context_name, "lab");
        let status = first.runtime.clone().unwrap();
        assert_eq!(
            (status.runtime.as_str(), status.degraded),
            ("docker", false)
        );
        assert_eq!(first.workloads.len(), 1);
        assert_eq!(
            Workload::try_from(&first.workloads[0]).unwrap(),
            running("r1")
        );

        // An event goes out promptly, on its own.
        h.rt.set(running("r2"));
        let sent = Instant::now();
        h.rt.emit("r2", EventAction::Started);
        let r = server.next().await;
        let latency = sent.elapsed();
        assert_eq!(r.snapshot_id, 0);
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].kind, "started");
        assert_eq!(
            r.events[0].record.as_ref().map(|w| w.container_id.as_str()),
            Some("r2")
        );
        assert!(
            latency < Duration::from_millis(250),
            "event took {latency:?}"
        );

        // The server fails twice: the event stays queued and is retried.
        server.fail.store(2, std::sync::atomic::Ordering::SeqCst);
        h.rt.set(exited("r2", 1));
        h.rt.emit("r2", EventAction::Died);
        let r = server.next().await;
        assert_eq!(r.events.len(), 1, "{r:?}");
        assert_eq!(r.events[0].kind, "stopped");
        assert_eq!(
            r.events[0].record.as_ref().and_then(|w| w.exit_code),
            Some(1)
        );
        assert!(h
            .metrics
            .render()
            .contains("hallmark_agent_inventory_reports_failed_total 2"));
        wait_until("the queue to be acknowledged", || {
            (h.inv.status().queued_events == 0).then_some(())
        })
        .await;

        // A reconnect brings a fresh snapshot with a new id.
        h.client.send_replace(Some(server.client().await));
        let (id, ids) = server.snapshot().await;
        assert_ne!(id, first.snapshot_id);
        assert_eq!(ids, vec!["r1", "r2"]);
        // Counted once the server's answer is in.
        wait_until("the snapshot size gauge", || {
            h.metrics
                .render()
                .contains("hallmark_agent_inventory_snapshot_records 2")
                .then_some(())
        })
        .await;
        h.stop().await;
    }

    #[tokio::test]
    async fn events_queued_while_disconnected_go_after_reconnect_and_resyncs_send_snapshots() {
        let mut server = FakeServer::start().await;
        let rt = Scripted::new(vec![]);
        let mut h = Harness::start(rt, |c| c.resync_interval = Duration::from_millis(400)).await;
        // No client yet: events wait in the queue.
        for id in ["d1", "d2"] {
            h.rt.set(running(id));
            h.rt.emit(id, EventAction::Started);
            h.next(id).await;
        }
        assert_eq!(h.inv.status().queued_events, 2);
        h.client.send_replace(Some(server.client().await));
        let r = server.next().await;
        let kinds: Vec<(&str, &str)> = r
            .events
            .iter()
            .map(|e| {
                (
                    e.kind.as_str(),
                    e.record.as_ref().map_or("", |w| w.container_id.as_str()),
                )
            })
            .collect();
        assert_eq!(kinds, vec![("started", "d1"), ("started", "d2")]);
        let (first, ids) = server.snapshot().await;
        assert_eq!(ids, vec!["d1", "d2"]);
        // The periodic resync sends a new snapshot.
        let (second, _) = server.snapshot().await;
        assert_ne!(first, second);
        h.stop().await;
    }
}
