//! The inventory against a scripted runtime: events, listings, resolve,
//! the spool file and reports to a test server.

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

    async fn report_flows(
        &self,
        _: tonic::Request<pb::FlowBatch>,
    ) -> Result<tonic::Response<pb::FlowAck>, tonic::Status> {
        Err(tonic::Status::unimplemented("flows"))
    }

    async fn heartbeat(
        &self,
        _: tonic::Request<pb::OwnershipHeartbeat>,
    ) -> Result<tonic::Response<pb::HeartbeatAck>, tonic::Status> {
        Err(tonic::Status::unimplemented("heartbeat"))
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

#[tokio::test]
async fn a_derived_identity_reaches_the_server_as_an_update_and_in_snapshots() {
    let mut server = FakeServer::start().await;
    let rt = Scripted::new(vec![running("id1")]);
    let h = Harness::start(rt, |_| {}).await;
    h.client.send_replace(Some(server.client().await));
    let (_, ids) = server.snapshot().await;
    assert_eq!(ids, vec!["id1"]);

    let basis = h.inv.get("id1").unwrap();
    let selectors = vec![
        "docker:label:app:id1".to_string(),
        "hallmark:context:lab".to_string(),
    ];
    let spiffe_ids = vec!["spiffe://td/id1".to_string()];
    h.inv.set_identities(vec![IdentityUpdate {
        basis,
        selectors: selectors.clone(),
        spiffe_ids: spiffe_ids.clone(),
    }]);
    let r = server.next().await;
    assert_eq!(r.events.len(), 1, "{r:?}");
    assert_eq!(r.events[0].kind, "updated");
    let rec = r.events[0].record.as_ref().unwrap();
    assert_eq!((&rec.selectors, &rec.spiffe_ids), (&selectors, &spiffe_ids));
    // A resync that finds the runtime's word unchanged keeps it.
    h.rt.emit("id1", EventAction::Updated);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.inv.get("id1").unwrap().spiffe_ids, spiffe_ids);
    // And every later snapshot carries it.
    h.client.send_replace(Some(server.client().await));
    let first = server.next().await;
    assert_ne!(first.snapshot_id, 0, "{first:?}");
    let w = Workload::try_from(&first.workloads[0]).unwrap();
    assert_eq!((w.selectors, w.spiffe_ids), (selectors, spiffe_ids));
    h.stop().await;
}

#[tokio::test]
async fn many_identity_changes_at_once_go_as_a_snapshot_not_as_events() {
    let mut server = FakeServer::start().await;
    let n = IDENTITY_EVENTS_MAX + 1;
    let records: Vec<Workload> = (0..n).map(|i| running(&format!("m{i:03}"))).collect();
    let rt = Scripted::new(records.clone());
    let mut h = Harness::start(rt, |_| {}).await;
    h.client.send_replace(Some(server.client().await));
    let (first, ids) = server.snapshot().await;
    assert_eq!(ids.len(), n);
    let updates = records
        .into_iter()
        .map(|basis| IdentityUpdate {
            selectors: vec![format!("docker:label:app:{}", basis.container_id)],
            spiffe_ids: vec!["spiffe://td/m".to_string()],
            basis,
        })
        .collect();
    h.inv.set_identities(updates);
    let mut page = server.next().await;
    assert_ne!(page.snapshot_id, 0, "a snapshot, not events: {page:?}");
    assert_ne!(page.snapshot_id, first);
    let mut with_ids = 0;
    loop {
        assert!(page.events.is_empty());
        with_ids += page
            .workloads
            .iter()
            .filter(|w| w.spiffe_ids == vec!["spiffe://td/m".to_string()])
            .count();
        if page.last_page {
            break;
        }
        page = server.next().await;
    }
    assert_eq!(with_ids, n);
    h.quiet_for(Duration::from_millis(100)).await;
    assert_eq!(h.inv.status().queued_events, 0);
    h.stop().await;
}
