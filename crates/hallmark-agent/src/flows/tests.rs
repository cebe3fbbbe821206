//! Flow reporting and heartbeats against a fake node API server.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Instant, SystemTime};

use hallmark_core::time::unix_millis;

use hallmark_core::{Workload, WorkloadState};
use hallmark_flows::{Initiator, LocalSide, Owner, Protocol, Reporter, Side, TcpOutcome};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::*;
use crate::inventory::scripted::{running, Scripted};
use crate::inventory::{InventoryConfig, RuntimeSetup};

const WAIT: Duration = Duration::from_secs(10);

/// A valid TCP flow whose source port tells it apart (`n` must fit u16).
fn flow(n: u32) -> Flow {
    let port = u16::try_from(n % 60_000 + 1).unwrap();
    Flow {
        start_ms: 1_700_000_000_000 + i64::from(n),
        end_ms: 1_700_000_000_500 + i64::from(n),
        protocol: Protocol::Tcp,
        src: SocketAddr::new("10.0.0.1".parse().unwrap(), port),
        dst: SocketAddr::new("10.0.0.2".parse().unwrap(), 443),
        initiator: Initiator::Source,
        bytes_sent: 100,
        packets_sent: 2,
        bytes_received: 300,
        packets_received: 3,
        outcome: Some(TcpOutcome::Established),
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::Agent("n1".into()),
        local: None,
        enforced: None,
    }
}

#[test]
fn spool_is_bounded_in_flows_and_acks_only_its_oldest_batch() {
    let rec = |p: u32| pb::FlowRecord {
        src_port: p,
        ..Default::default()
    };
    let mut s = Spool::new(5, 0);
    assert_eq!(s.push(vec![rec(1), rec(2)]), 0);
    assert_eq!(s.push(vec![rec(3), rec(4), rec(5), rec(6)]), 1, "one over");
    assert_eq!((s.batches(), s.flows()), (2, 5));
    assert_eq!(s.push(vec![rec(7)]), 1, "full: the newest is dropped");
    assert_eq!(s.batches(), 2, "an empty batch is not spooled");
    let first = s.front().unwrap().clone();
    assert_ne!(first.id, 0, "batch IDs are never 0");
    assert_eq!(
        first.flows.iter().map(|f| f.src_port).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(!s.ack(first.id + 1), "only the batch sent is acknowledged");
    assert_eq!(s.flows(), 5);
    assert!(s.ack(first.id));
    let second = s.front().unwrap().clone();
    assert_eq!(second.id, first.id + 1);
    assert_eq!(
        second.flows.iter().map(|f| f.src_port).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(!s.ack(first.id), "a repeated ack removes nothing");
    assert!(s.ack(second.id));
    assert_eq!((s.batches(), s.flows()), (0, 0));
    // IDs wrap past u64::MAX without ever being 0.
    let mut s = Spool::new(10, u64::MAX);
    s.push(vec![rec(1)]);
    s.push(vec![rec(2)]);
    assert_eq!(s.front().unwrap().id, u64::MAX);
    s.ack(u64::MAX);
    assert_eq!(s.front().unwrap().id, 1);
}

#[test]
fn a_flow_maps_to_its_wire_record() {
    let mut f = flow(7);
    f.local = Some(LocalSide {
        side: Side::Destination,
        owner: Owner::Workload {
            context: "lab".into(),
            node: "n1".into(),
            container_id: "c1".into(),
        },
        by_port: true,
        unit: String::new(),
    });
    let r = to_record(&f);
    assert_eq!(
        r,
        pb::FlowRecord {
            start_ms: 1_700_000_000_007,
            end_ms: 1_700_000_000_507,
            protocol: 6,
            src_ip: "10.0.0.1".into(),
            src_port: 8,
            dst_ip: "10.0.0.2".into(),
            dst_port: 443,
            initiator: "source".into(),
            bytes_sent: 100,
            packets_sent: 2,
            bytes_received: 300,
            packets_received: 3,
            outcome: "established".into(),
            local_side: "destination".into(),
            local_container_id: "c1".into(),
            local_by_port: true,
            ..pb::FlowRecord::default()
        }
    );
    f.local = Some(LocalSide {
        side: Side::Source,
        owner: Owner::Node {
            context: "lab".into(),
            node: "n1".into(),
        },
        by_port: false,
        unit: String::new(),
    });
    f.initiator = Initiator::Unknown;
    f.outcome = Some(TcpOutcome::TimedOut);
    let r = to_record(&f);
    assert_eq!(
        (
            r.local_side.as_str(),
            r.local_container_id.as_str(),
            r.initiator.as_str(),
            r.outcome.as_str()
        ),
        ("source", "", "unknown", "timed-out")
    );
    f.local = None;
    f.outcome = None;
    let r = to_record(&f);
    assert_eq!((r.local_side.as_str(), r.outcome.as_str()), ("", ""));
}

#[test]
fn the_sink_never_waits_and_counts_what_it_cannot_take() {
    let metrics = Arc::new(AgentMetrics::default());
    let shared = Arc::new(Shared::new(metrics.clone(), "lab".into()));
    let (tx, mut rx) = mpsc::channel(2);
    let sink = FlowSink { tx, shared };
    assert!(sink.try_send(flow(1)));
    assert!(sink.try_send(flow(2)));
    let began = Instant::now();
    assert!(!sink.try_send(flow(3)), "full");
    assert!(began.elapsed() < Duration::from_millis(50));
    let mut bad = flow(4);
    bad.end_ms = bad.start_ms - 1;
    assert!(!sink.clone().try_send(bad));
    rx.close();
    while rx.try_recv().is_ok() {}
    assert!(!sink.try_send(flow(5)), "closed");
    let text = metrics.render();
    for line in [
        "hallmark_agent_flows_dropped_total{reason=\"sink-full\"} 1",
        "hallmark_agent_flows_dropped_total{reason=\"invalid\"} 1",
        "hallmark_agent_flows_dropped_total{reason=\"shutdown\"} 1",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert_eq!(sink.shared.dropped(), 3);
}

fn workload(id: &str, mode: &str, ips: &[&str], state: WorkloadState) -> Workload {
    let mut w = running(id);
    w.network_mode = mode.into();
    w.ips = ips.iter().map(|s| s.to_string()).collect();
    w.state = state;
    w
}

fn in_pod(mut w: Workload, uid: &str) -> Workload {
    w.pod = Some(hallmark_core::PodInfo {
        uid: uid.into(),
        name: format!("pod-{uid}"),
        namespace: "default".into(),
        ..Default::default()
    });
    w
}

#[test]
fn heartbeats_assert_workload_ips_and_the_nodes_own() {
    use WorkloadState::{Paused, Running, Stopped};
    let workloads = vec![
        workload("b", "bridge", &["172.18.0.3"], Running),
        workload("a", "bridge", &["172.18.0.2", "fd00::2"], Paused),
        workload("host", "host", &["192.168.1.10"], Running),
        workload("k8s-host", "node", &["192.168.1.10"], Running),
        workload("side", "container:a", &["172.18.0.2"], Running),
        workload("gone", "bridge", &["172.18.0.9"], Stopped),
        workload("junk", "bridge", &["not-an-ip"], Running),
        // A node interface address a workload holds is the workload's.
        workload("macvlan", "macvlan", &["192.168.1.77"], Running),
        // Two containers of one pod claim the pod IP: the lower ID speaks
        // for the pod.
        in_pod(
            workload("pod-sidecar", "pod", &["10.244.0.7"], Running),
            "u1",
        ),
        in_pod(workload("pod-app", "pod", &["10.244.0.7"], Running), "u1"),
        // Another pod claiming the same IP is a real conflict: asserted too.
        in_pod(workload("other-pod", "pod", &["10.244.0.7"], Running), "u2"),
    ];
    let node: Vec<IpAddr> = [
        "127.0.0.1",
        "::1",
        "169.254.3.4",
        "fe80::1",
        "0.0.0.0",
        "192.168.1.10",
        "192.168.1.77",
        "172.18.0.1",
        "2001:db8::5",
        "192.168.1.10",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let got: Vec<(String, u32, String)> = heartbeat_addresses(&workloads, &node)
        .into_iter()
        .map(|a| (a.ip, a.port, a.container_id))
        .collect();
    let want: Vec<(String, u32, String)> = [
        ("10.244.0.7", "other-pod"),
        ("10.244.0.7", "pod-app"),
        ("172.18.0.2", "a"),
        ("172.18.0.3", "b"),
        ("192.168.1.77", "macvlan"),
        ("fd00::2", "a"),
        ("172.18.0.1", ""),
        ("192.168.1.10", ""),
        ("2001:db8::5", ""),
    ]
    .iter()
    .map(|(ip, id)| (ip.to_string(), 0, id.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn node_ip_filter() {
    for (ip, usable) in [
        ("10.1.2.3", true),
        ("2001:db8::1", true),
        ("fd12::1", true),
        ("127.0.0.1", false),
        ("127.1.2.3", false),
        ("::1", false),
        ("169.254.169.254", false),
        ("fe80::abcd", false),
        ("febf::1", false),
        ("fec0::1", true),
        ("0.0.0.0", false),
        ("::", false),
        ("224.0.0.1", false),
        ("ff02::1", false),
    ] {
        assert_eq!(usable_node_ip(ip.parse().unwrap()), usable, "{ip}");
    }
}

#[test]
fn node_addresses_come_from_the_kernel() {
    let ips = node_addresses().unwrap();
    // Every Linux network namespace has a loopback interface; it is
    // listed, and the heartbeat leaves it out.
    assert!(ips.iter().any(|ip| ip.is_loopback()), "{ips:?}");
    let hb = heartbeat_addresses(&[], &ips);
    assert!(hb.iter().all(|a| {
        let ip: IpAddr = a.ip.parse().unwrap();
        usable_node_ip(ip) && a.container_id.is_empty()
    }));
}

/// What the fake server saw.
#[derive(Debug)]
enum Seen {
    Batch(pb::FlowBatch),
    Heartbeat(pb::OwnershipHeartbeat, Instant),
}

/// A node API server that takes flow batches and heartbeats. While
/// `down`, both fail with Unavailable; `lose_acks` makes the next calls
/// store the batch but fail the answer (the agent must resend it, with
/// the same ID).
#[derive(Clone)]
struct FakeNode {
    seen: UnboundedSender<Seen>,
    down: Arc<AtomicBool>,
    lose_acks: Arc<AtomicUsize>,
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
        _: tonic::Request<pb::InventoryReport>,
    ) -> Result<tonic::Response<pb::InventoryAck>, tonic::Status> {
        Ok(tonic::Response::new(pb::InventoryAck {}))
    }

    async fn report_flows(
        &self,
        req: tonic::Request<pb::FlowBatch>,
    ) -> Result<tonic::Response<pb::FlowAck>, tonic::Status> {
        if self.down.load(SeqCst) {
            return Err(tonic::Status::unavailable("scripted outage"));
        }
        let batch = req.into_inner();
        let id = batch.batch_id;
        let rejected = batch.flows.iter().filter(|f| f.src_port == 0).count();
        let _ = self.seen.send(Seen::Batch(batch));
        if self
            .lose_acks
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(tonic::Status::unavailable("scripted lost answer"));
        }
        Ok(tonic::Response::new(pb::FlowAck {
            batch_id: id,
            rejected: u32::try_from(rejected).unwrap(),
        }))
    }

    async fn heartbeat(
        &self,
        req: tonic::Request<pb::OwnershipHeartbeat>,
    ) -> Result<tonic::Response<pb::HeartbeatAck>, tonic::Status> {
        if self.down.load(SeqCst) {
            return Err(tonic::Status::unavailable("scripted outage"));
        }
        let _ = self
            .seen
            .send(Seen::Heartbeat(req.into_inner(), Instant::now()));
        Ok(tonic::Response::new(pb::HeartbeatAck {}))
    }
}

struct Harness {
    flows: Flows,
    metrics: Arc<AgentMetrics>,
    seen: UnboundedReceiver<Seen>,
    down: Arc<AtomicBool>,
    lose_acks: Arc<AtomicUsize>,
    rt: Arc<Scripted>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _client: watch::Sender<Option<NodeClient<Channel>>>,
    _dir: tempfile::TempDir,
}

fn fixed_interfaces() -> std::io::Result<Vec<IpAddr>> {
    Ok(vec![
        "127.0.0.1".parse().unwrap(),
        "10.9.0.5".parse().unwrap(),
        "fe80::9".parse().unwrap(),
    ])
}

impl Harness {
    async fn start(workloads: Vec<Workload>, tweak: impl FnOnce(&mut FlowConfig)) -> Self {
        let (tx, seen) = unbounded_channel();
        let down = Arc::new(AtomicBool::new(false));
        let lose_acks = Arc::new(AtomicUsize::new(0));
        let svc = FakeNode {
            seen: tx,
            down: down.clone(),
            lose_acks: lose_acks.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::node_server::NodeServer::new(svc))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (client, client_rx) = watch::channel(Some(NodeClient::new(ch)));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let metrics = Arc::new(AgentMetrics::default());
        let dir = tempfile::tempdir().unwrap();
        let rt = Scripted::new(workloads);
        let (inv, mut tasks) = Inventory::start(
            InventoryConfig {
                context_name: "lab".into(),
                resync_interval: Duration::from_secs(3600),
                ..InventoryConfig::default()
            },
            dir.path(),
            RuntimeSetup::Given(rt.clone()),
            // The inventory's own reports are not what is tested here.
            watch::channel(None).1,
            metrics.clone(),
            shutdown_rx.clone(),
        )
        .await;
        let mut config = FlowConfig {
            // Long unless a test wants heartbeats.
            ownership_heartbeat: Duration::from_secs(3600),
            batch_max: 10,
            batch_interval: Duration::from_millis(100),
            ..FlowConfig::default()
        };
        tweak(&mut config);
        config.validate().unwrap();
        let (flows, more) = Flows::start_with(
            config,
            inv,
            client_rx,
            metrics.clone(),
            shutdown_rx,
            fixed_interfaces,
        );
        tasks.extend(more);
        Harness {
            flows,
            metrics,
            seen,
            down,
            lose_acks,
            rt,
            shutdown,
            tasks,
            _client: client,
            _dir: dir,
        }
    }

    async fn next_batch(&mut self) -> pb::FlowBatch {
        loop {
            match tokio::time::timeout(WAIT, self.seen.recv()).await {
                Ok(Some(Seen::Batch(b))) => return b,
                Ok(Some(Seen::Heartbeat(..))) => continue,
                _ => panic!("no flow batch within {WAIT:?}"),
            }
        }
    }

    async fn next_heartbeat(&mut self) -> (pb::OwnershipHeartbeat, Instant) {
        loop {
            match tokio::time::timeout(WAIT, self.seen.recv()).await {
                Ok(Some(Seen::Heartbeat(h, at))) => return (h, at),
                Ok(Some(Seen::Batch(_))) => continue,
                _ => panic!("no heartbeat within {WAIT:?}"),
            }
        }
    }

    fn send(&self, range: std::ops::Range<u32>) {
        let sink = self.flows.sink();
        for n in range {
            assert!(sink.try_send(flow(n)), "flow {n} refused");
        }
    }

    async fn wait_spool_empty(&self) {
        let deadline = Instant::now() + WAIT;
        while self.flows.status().spool_flows > 0 {
            assert!(Instant::now() < deadline, "{:?}", self.flows.status());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        for t in self.tasks {
            tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
        }
    }
}

fn ports(b: &pb::FlowBatch) -> Vec<u32> {
    b.flows.iter().map(|f| f.src_port).collect()
}

#[tokio::test]
async fn flows_go_in_batches_of_at_most_n_or_after_the_interval() {
    let mut h = Harness::start(vec![], |_| {}).await;
    h.send(0..25);
    let mut got = Vec::new();
    let mut ids = Vec::new();
    while got.len() < 25 {
        let b = h.next_batch().await;
        assert!(b.flows.len() <= 10, "{} flows in one batch", b.flows.len());
        assert_eq!(b.context_name, "lab");
        assert_eq!(b.dropped_flows, 0);
        ids.push(b.batch_id);
        got.extend(ports(&b));
    }
    assert_eq!(got, (1..=25).collect::<Vec<u32>>(), "in order, once each");
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "one new ID per batch: {ids:?}"
    );
    // A lone flow does not wait for the batch to fill.
    let sent = Instant::now();
    h.send(100..101);
    let b = h.next_batch().await;
    assert_eq!(ports(&b), vec![101]);
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    h.wait_spool_empty().await;
    let text = h.metrics.render();
    assert!(
        text.contains("hallmark_agent_flows_reported_total 26"),
        "{text}"
    );
    assert!(text.contains("hallmark_agent_flow_spool_flows 0"), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn an_outage_spools_and_resends_in_order_without_loss_or_duplicates() {
    let mut h = Harness::start(vec![], |_| {}).await;
    h.down.store(true, SeqCst);
    h.send(0..35);
    // All of it waits in the spool, in batches.
    let deadline = Instant::now() + WAIT;
    while h.flows.status().spool_flows < 35 {
        assert!(Instant::now() < deadline, "{:?}", h.flows.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = h.flows.status();
    assert_eq!(st.spool_batches, 4, "{st:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h
        .metrics
        .render()
        .lines()
        .any(|l| l.starts_with("hallmark_agent_flow_batches_failed_total ") && !l.ends_with(" 0")));
    // The next answer after recovery is lost: that batch comes again,
    // with the same ID, and the server can tell it is a resend.
    h.lose_acks.store(1, SeqCst);
    h.down.store(false, SeqCst);
    let mut batches = Vec::new();
    let mut flows = 0;
    while flows < 35 {
        let b = h.next_batch().await;
        if batches
            .last()
            .is_some_and(|l: &pb::FlowBatch| l.batch_id == b.batch_id)
        {
            assert_eq!(
                batches.last().unwrap().flows,
                b.flows,
                "a resend is the same batch"
            );
            continue;
        }
        flows += b.flows.len();
        batches.push(b);
    }
    let got: Vec<u32> = batches.iter().flat_map(ports).collect();
    assert_eq!(got, (1..=35).collect::<Vec<u32>>());
    let ids: HashSet<u64> = batches.iter().map(|b| b.batch_id).collect();
    assert_eq!(ids.len(), batches.len());
    h.wait_spool_empty().await;
    assert_eq!(h.flows.status().dropped_flows, 0);
    assert!(h
        .metrics
        .render()
        .contains("hallmark_agent_flows_reported_total 35"));
    h.stop().await;
}

#[tokio::test]
async fn a_full_spool_drops_counts_and_tells_the_server() {
    let mut h = Harness::start(vec![], |c| c.spool_capacity = 15).await;
    h.down.store(true, SeqCst);
    h.send(0..30);
    let deadline = Instant::now() + WAIT;
    while h.flows.status().dropped_flows < 15 {
        assert!(Instant::now() < deadline, "{:?}", h.flows.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = h.flows.status();
    assert_eq!((st.spool_flows, st.dropped_flows), (15, 15), "{st:?}");
    let text = h.metrics.render();
    assert!(
        text.contains("hallmark_agent_flows_dropped_total{reason=\"spool-full\"} 15"),
        "{text}"
    );
    assert!(
        text.contains("hallmark_agent_flow_spool_flows 15"),
        "{text}"
    );
    h.down.store(false, SeqCst);
    let mut got = Vec::new();
    while got.len() < 15 {
        let b = h.next_batch().await;
        assert_eq!(b.dropped_flows, 15, "every batch tells the drops so far");
        got.extend(ports(&b));
    }
    assert_eq!(got, (1..=15).collect::<Vec<u32>>(), "the oldest are kept");
    h.wait_spool_empty().await;
    h.stop().await;
}

#[tokio::test]
async fn rejected_flows_are_acknowledged_and_counted() {
    let mut h = Harness::start(vec![], |_| {}).await;
    // The fake rejects source port 0, which the sink would refuse as
    // invalid: send the record shape directly through a batch instead.
    let sink = h.flows.sink();
    let mut f = flow(0);
    f.protocol = Protocol::Icmp;
    f.src = SocketAddr::new(f.src.ip(), 0);
    f.dst = SocketAddr::new(f.dst.ip(), 0);
    f.outcome = None;
    assert!(sink.try_send(f));
    assert!(sink.try_send(flow(1)));
    let b = h.next_batch().await;
    assert_eq!(b.flows.len(), 2);
    h.wait_spool_empty().await;
    let text = h.metrics.render();
    assert!(
        text.contains("hallmark_agent_flows_rejected_total 1"),
        "{text}"
    );
    assert!(
        text.contains("hallmark_agent_flows_reported_total 1"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn heartbeats_carry_workload_and_node_ips_at_the_interval() {
    let mut web = running("web");
    web.network_mode = "bridge".into();
    web.ips = vec!["172.18.0.2".into()];
    let mut host = running("hostnet");
    host.network_mode = "host".into();
    host.ips = vec!["10.9.0.5".into()];
    let every = Duration::from_millis(200);
    let mut h = Harness::start(vec![web, host], |c| c.ownership_heartbeat = every).await;
    let mut times = Vec::new();
    for _ in 0..4 {
        let (hb, at) = h.next_heartbeat().await;
        assert_eq!(hb.context_name, "lab");
        let addrs: Vec<(&str, &str)> = hb
            .addresses
            .iter()
            .map(|a| (a.ip.as_str(), a.container_id.as_str()))
            .collect();
        assert_eq!(addrs, vec![("172.18.0.2", "web"), ("10.9.0.5", "")]);
        assert!(hb.addresses.iter().all(|a| a.port == 0));
        times.push((hb.at_ms, at));
    }
    for w in times.windows(2) {
        let agent_gap = w[1].0 - w[0].0;
        assert!(
            (150..=400).contains(&agent_gap),
            "heartbeats {agent_gap} ms apart, want about 200"
        );
    }
    // A workload that stops is no longer asserted.
    let mut gone = running("web");
    gone.state = WorkloadState::Stopped;
    gone.pid = None;
    h.rt.set(gone);
    h.rt.emit("web", hallmark_runtime::EventAction::Died);
    let deadline = Instant::now() + WAIT;
    loop {
        let (hb, _) = h.next_heartbeat().await;
        if hb.addresses.iter().all(|a| a.container_id != "web") {
            break;
        }
        assert!(Instant::now() < deadline, "web still asserted");
    }
    // The status follows once the agent has the server's answer.
    let deadline = Instant::now() + WAIT;
    while h.flows.status().last_heartbeat_addresses != 1 {
        assert!(Instant::now() < deadline, "{:?}", h.flows.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = h.flows.status();
    assert!(st.last_heartbeat_ms > 0, "{st:?}");
    assert!(st.heartbeat_error.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn heartbeats_missed_in_an_outage_are_skipped_not_queued() {
    let every = Duration::from_millis(150);
    let mut h = Harness::start(vec![], |c| c.ownership_heartbeat = every).await;
    h.next_heartbeat().await;
    h.down.store(true, SeqCst);
    tokio::time::sleep(every * 5).await;
    let st = h.flows.status();
    assert!(st.heartbeat_error.contains("scripted outage"), "{st:?}");
    let failed = h
        .metrics
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix("hallmark_agent_heartbeats_failed_total ")
                .map(str::to_owned)
        })
        .unwrap();
    assert!(failed.parse::<u64>().unwrap() >= 3, "{failed}");
    // Drain what arrived before the outage began.
    while h.seen.try_recv().is_ok() {}
    let back = unix_millis(SystemTime::now());
    h.down.store(false, SeqCst);
    let (first, _) = h.next_heartbeat().await;
    assert!(
        first.at_ms >= back - 50,
        "a heartbeat from the outage ({} ms before recovery) was sent late",
        back - first.at_ms
    );
    let (second, _) = h.next_heartbeat().await;
    assert!(
        second.at_ms - first.at_ms >= 100,
        "no burst of queued heartbeats"
    );
    assert!(h.flows.status().heartbeat_error.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn while_the_runtime_is_not_followed_only_node_ips_are_asserted() {
    let mut web = running("web");
    web.network_mode = "bridge".into();
    web.ips = vec!["172.18.0.2".into()];
    let every = Duration::from_millis(150);
    let mut h = Harness::start(vec![web], |c| c.ownership_heartbeat = every).await;
    let (hb, _) = h.next_heartbeat().await;
    assert_eq!(hb.addresses.len(), 2, "{hb:?}");
    h.rt.set_down(true);
    h.rt.break_stream();
    let deadline = Instant::now() + WAIT;
    loop {
        let (hb, _) = h.next_heartbeat().await;
        let addrs: Vec<(&str, &str)> = hb
            .addresses
            .iter()
            .map(|a| (a.ip.as_str(), a.container_id.as_str()))
            .collect();
        if addrs == vec![("10.9.0.5", "")] {
            break;
        }
        assert!(Instant::now() < deadline, "still asserting {addrs:?}");
    }
    // Followed again: the workload's address comes back.
    h.rt.set_down(false);
    loop {
        let (hb, _) = h.next_heartbeat().await;
        if hb.addresses.iter().any(|a| a.container_id == "web") {
            break;
        }
        assert!(Instant::now() < deadline + WAIT, "web never asserted again");
    }
    h.stop().await;
}
