//! The flow store part of the conformance suite.
//!
//! Each run writes its flows inside a time window of its own (28 hours
//! from an hour picked by the run's tag among 800 000; each check has its
//! own hours of it), so listings and graphs over a check's hours see
//! exactly its flows, and its servers and owners carry the tag. Pruning
//! touches the whole store, so the checks that prune run last, each
//! checking only this run's rows.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hallmark_flows::{
    buckets_of, Endpoint, Evidence, EvidenceKind, Flow, FlowQuery, FlowStatus, GraphBucket,
    Initiator, LocalSide, Owner, OwnershipKey, Protocol, Reporter, Side, StoredFlow, TcpOutcome,
    UnattributedReason, WorkloadEndpoint,
};

use super::{ok, Run};
use crate::flows::{FlowWrite, FlowWritten};
use crate::prelude::*;

mod listing;
mod merging;
mod retention;
mod rollup;
mod verdicts;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

pub(super) async fn run_all(store: &dyn Store, run: &Run) {
    round_trip(store, run).await;
    listing::list_filters(store, run).await;
    listing::many_endpoints(store, run).await;
    listing::graph_sums(store, run).await;
    pending(store, run).await;
    atomic_writes(store, run).await;
    evidence(store, run).await;
    merging::merging(store, run).await;
    verdicts::verdicts(store, run).await;
    retention::pruning(store, run).await;
    rollup::hours(store, run).await;
}

impl Run {
    /// The start of this run's flow window: an hour between 2001 and 2092.
    fn flow_base(&self) -> i64 {
        let digits: String = self.tag.chars().filter(char::is_ascii_hexdigit).collect();
        let n = u64::from_str_radix(&digits[..12.min(digits.len())], 16).unwrap_or(0);
        let hours = i64::try_from(n % 800_000).unwrap_or(0);
        // 2001-01-01T00:00:00Z.
        978_307_200_000 + hours * HOUR
    }

    /// A server name unique to this run.
    fn server(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }

    fn owner(&self, container: &str) -> Owner {
        Owner::Workload {
            context: self.context("flows"),
            node: "n1".into(),
            container_id: self.container(container),
        }
    }
}

/// A TCP flow of `src` to `dst` (`ip:port`) starting at `start_ms`.
fn tcp(src: &str, dst: &str, start_ms: i64) -> Flow {
    let addr = |s: &str| match s.parse() {
        Ok(a) => a,
        Err(e) => panic!("conformance: test address `{s}`: {e}"),
    };
    Flow {
        start_ms,
        end_ms: start_ms + 1_500,
        protocol: Protocol::Tcp,
        src: addr(src),
        dst: addr(dst),
        initiator: Initiator::Source,
        bytes_sent: 1_200,
        packets_sent: 4,
        bytes_received: 800,
        packets_received: 3,
        outcome: Some(TcpOutcome::Established),
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::File("conformance.log".into()),
        local: None,
        enforced: None,
    }
}

/// A workload endpoint of this run; `spiffe` names paths under the run's
/// trust domain.
fn workload(run: &Run, ctx: &str, name: &str, ns: &str, spiffe: &[&str]) -> Endpoint {
    Endpoint::Workload(WorkloadEndpoint {
        context: run.context(ctx),
        node: format!("node-{name}"),
        container_id: run.container(name),
        name: name.into(),
        image: format!("docker.io/shop/{name}:1.0"),
        namespace: ns.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        spiffe_ids: spiffe.iter().map(|p| run.id(p).to_string()).collect(),
        ..WorkloadEndpoint::default()
    })
}

fn stored(flow: Flow, src: Endpoint, dst: Endpoint) -> StoredFlow {
    let at = flow.end_ms + 5_000;
    StoredFlow::new(flow, src, dst, at)
}

fn batch(run: &Run, now_ms: i64, flows: Vec<StoredFlow>) -> FlowWrite {
    FlowWrite {
        server_id: run.server("writer"),
        now_ms,
        flows,
        ..FlowWrite::default()
    }
}

async fn write(store: &dyn Store, what: &str, w: &FlowWrite) -> FlowWritten {
    ok(what, store.write_flows(w).await)
}

/// Every flow starting in `since..until`, newest first.
async fn window(store: &dyn Store, what: &str, since_ms: i64, until_ms: i64) -> Vec<StoredFlow> {
    let q = FlowQuery {
        since_ms,
        until_ms: Some(until_ms),
        ..FlowQuery::default()
    };
    ok(what, store.list_flows(&q).await)
}

/// `flows` with their ids set from a write's result.
fn with_ids(flows: &[StoredFlow], written: &FlowWritten) -> Vec<StoredFlow> {
    assert_eq!(
        flows.len(),
        written.flow_ids.len(),
        "conformance: write_flows must return one id per flow"
    );
    flows
        .iter()
        .zip(&written.flow_ids)
        .map(|(f, id)| StoredFlow {
            id: *id,
            ..f.clone()
        })
        .collect()
}

/// Buckets summed over their minutes per (src, dst, port, protocol), as
/// `FlowStore::graph` answers, in its order.
fn summed(buckets: &[GraphBucket]) -> Vec<GraphBucket> {
    let mut map: BTreeMap<(String, String, u16, u8), GraphBucket> = BTreeMap::new();
    for b in buckets {
        let key = (
            serde_json::to_string(&b.src).unwrap_or_default(),
            serde_json::to_string(&b.dst).unwrap_or_default(),
            b.dst_port,
            b.protocol.number(),
        );
        match map.get_mut(&key) {
            None => {
                map.insert(key, b.clone());
            }
            Some(s) => {
                s.minute_ms = s.minute_ms.min(b.minute_ms);
                s.flows += b.flows;
                s.bytes += b.bytes;
                s.first_ms = s.first_ms.min(b.first_ms);
                s.last_ms = s.last_ms.max(b.last_ms);
                s.refused += b.refused;
                s.reset += b.reset;
                s.verdicts.add(&b.verdicts);
            }
        }
    }
    map.into_values().collect()
}

async fn round_trip(store: &dyn Store, run: &Run) {
    let t = run.flow_base();
    let web = workload(run, "rt", "web", "shop", &["ns/shop/sa/web", "web-alt"]);
    let mut full = WorkloadEndpoint {
        context: run.context("rt"),
        node: "n2".into(),
        container_id: run.container("db"),
        name: "db-0".into(),
        image: "postgres:16@sha256:abc".into(),
        namespace: "data".into(),
        pod: "db-0".into(),
        compose_project: "shop".into(),
        compose_service: "db".into(),
        labels: BTreeMap::new(),
        spiffe_ids: vec![run.id("ns/data/sa/db").to_string()],
        selectors: vec!["docker:label:app:db".into(), "unix:uid:999".into()],
    };
    full.labels.insert("app".into(), "db".into());
    full.labels
        .insert("tier".into(), "back \"quoted\" ✓".into());
    let db = Endpoint::Workload(full);
    let node = Endpoint::Node {
        context: run.context("rt"),
        node: "n1".into(),
        spiffe_id: run.agent("n1").to_string(),
        unit: String::new(),
    };
    let bare_node = Endpoint::Node {
        context: run.context("rt"),
        node: "n3".into(),
        spiffe_id: String::new(),
        unit: String::new(),
    };
    let corp = Endpoint::External {
        network: "corp".into(),
    };
    let late = Endpoint::Unattributed {
        reason: UnattributedReason::Late,
    };
    let ambiguous = Endpoint::Unattributed {
        reason: UnattributedReason::Ambiguous,
    };
    let no_owner = Endpoint::Unattributed {
        reason: UnattributedReason::NoOwner,
    };

    let mut flows = Vec::new();
    let f = tcp("10.1.0.2:40000", "10.1.0.3:5432", t + 1_000);
    flows.push(stored(f, web.clone(), db.clone()));
    let mut f = tcp("[fd00::2]:40001", "[fd00::3]:443", t + 2_000);
    f.initiator = Initiator::Destination;
    f.outcome = Some(TcpOutcome::Refused);
    f.reporter = Reporter::Agent("n1".into());
    f.local = Some(LocalSide {
        side: Side::Source,
        owner: run.owner("web"),
        by_port: true,
        unit: String::new(),
    });
    flows.push(stored(f, node.clone(), corp.clone()));
    let mut f = tcp("10.1.0.4:53000", "10.8.0.1:53", t + 3_000);
    f.protocol = Protocol::Udp;
    f.outcome = None;
    f.initiator = Initiator::Unknown;
    f.reporter = Reporter::Exporter("192.0.2.1:2055".parse().unwrap_or_else(|e| panic!("{e}")));
    f.bytes_sent = u64::try_from(i64::MAX / 4).unwrap_or(0);
    flows.push(stored(f, bare_node.clone(), late.clone()));
    let mut f = tcp("10.1.0.5:1", "10.1.0.6:2", t + 4_000);
    f.protocol = Protocol::Icmp;
    f.outcome = None;
    f.src = "10.1.0.5:0".parse().unwrap_or_else(|e| panic!("{e}"));
    f.dst = "10.1.0.6:0".parse().unwrap_or_else(|e| panic!("{e}"));
    f.end_ms = f.start_ms;
    f.bytes_received = 0;
    f.packets_received = 0;
    f.reporter = Reporter::File(String::new());
    flows.push(stored(f, ambiguous.clone(), no_owner.clone()));
    let mut f = tcp("10.1.0.7:40000", "10.1.0.3:5432", t + 5_000);
    f.protocol = Protocol::Other(132);
    f.outcome = None;
    f.local = Some(LocalSide {
        side: Side::Destination,
        owner: Owner::Node {
            context: run.context("rt"),
            node: "n1".into(),
        },
        by_port: false,
        unit: String::new(),
    });
    flows.push(stored(f, corp.clone(), db.clone()));
    let mut f = tcp("10.1.0.8:40000", "10.1.0.3:5432", t + 5_000);
    f.outcome = Some(TcpOutcome::TimedOut);
    flows.push(stored(f, web.clone(), db.clone()));
    let mut f = tcp("10.1.0.8:40001", "10.1.0.3:5432", t + 5_000);
    f.outcome = Some(TcpOutcome::Reset);
    flows.push(stored(f, web, db));

    let written = write(
        store,
        "round trip write",
        &batch(run, t + HOUR, flows.clone()),
    )
    .await;
    let ids = &written.flow_ids;
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "conformance: flow ids must increase in input order: {ids:?}"
    );
    assert!(written.pending_ids.is_empty() && written.evidence_ids.is_empty());
    let mut want = with_ids(&flows, &written);
    want.sort_by_key(|f| std::cmp::Reverse((f.flow.start_ms, f.id)));
    let got = window(store, "round trip list", t, t + HOUR).await;
    assert_eq!(
        got, want,
        "conformance: every field of a stored flow must read back, newest first"
    );
}

async fn pending(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 2 * HOUR;
    let (a, b, c) = (run.server("a"), run.server("b"), run.server("c"));
    let f1 = tcp("10.2.0.1:40000", "10.2.0.2:80", t);
    let mut f2 = tcp("10.2.0.1:40001", "10.2.0.2:80", t + 1);
    f2.local = Some(LocalSide {
        side: Side::Source,
        owner: run.owner("p"),
        by_port: false,
        unit: String::new(),
    });
    let w = FlowWrite {
        server_id: a.clone(),
        now_ms: t,
        pending_add: vec![f1.clone(), f2.clone()],
        ..FlowWrite::default()
    };
    let written = write(store, "pending add", &w).await;
    let ids = written.pending_ids.clone();
    assert!(
        ids.len() == 2 && ids[0] < ids[1],
        "conformance: pending ids in input order: {ids:?}"
    );
    let mine = |list: Vec<crate::PendingFlow>| -> Vec<(i64, Flow, i64)> {
        list.into_iter()
            .filter(|p| ids.contains(&p.id))
            .map(|p| (p.id, p.flow, p.received_ms))
            .collect()
    };
    let want = vec![(ids[0], f1.clone(), t), (ids[1], f2.clone(), t)];
    let got = ok(
        "pending of a",
        store.pending_flows(&a, t + 1_000, t - HOUR).await,
    );
    assert_eq!(
        mine(got),
        want,
        "conformance: a server reads back its held-back flows"
    );
    // `a` was seen at t + 1s: a bound before that adopts nothing.
    let got = ok(
        "c too early",
        store.pending_flows(&c, t + 2_000, t + 500).await,
    );
    assert_eq!(
        mine(got),
        vec![],
        "conformance: rows of a live server are not adopted"
    );
    // `a` silent since t + 1s: `b` adopts its rows received before the bound.
    let got = ok(
        "b adopts",
        store.pending_flows(&b, t + 600_000, t + 300_000).await,
    );
    assert_eq!(
        mine(got),
        want,
        "conformance: rows of a silent server are adopted"
    );
    let got = ok(
        "a again",
        store.pending_flows(&a, t + 600_001, t - HOUR).await,
    );
    assert_eq!(
        mine(got),
        vec![],
        "conformance: adopted rows belong to the adopter only"
    );
    // `c` is alive (seen at t + 2s < bound), `b` just took them: nobody
    // adopts from `b`, whose last sign of life is after the bound.
    let got = ok(
        "c again",
        store.pending_flows(&c, t + 600_002, t + 300_000).await,
    );
    assert_eq!(
        mine(got),
        vec![],
        "conformance: a row is adopted once, not by every later server"
    );
    let done = FlowWrite {
        server_id: b.clone(),
        now_ms: t + 601_000,
        pending_done: vec![ids[0], ids[0], -5],
        ..FlowWrite::default()
    };
    let written = write(store, "pending done", &done).await;
    assert_eq!(
        written.pending_done, 1,
        "conformance: pending_done counts deleted rows"
    );
    let got = ok(
        "b after done",
        store.pending_flows(&b, t + 602_000, t - HOUR).await,
    );
    assert_eq!(mine(got), vec![(ids[1], f2, t)]);
    let done = FlowWrite {
        server_id: b.clone(),
        now_ms: t + 603_000,
        pending_done: vec![ids[1]],
        ..FlowWrite::default()
    };
    write(store, "pending done 2", &done).await;
    let got = ok(
        "b at the end",
        store.pending_flows(&b, t + 604_000, t - HOUR).await,
    );
    assert_eq!(mine(got), vec![]);
}

async fn atomic_writes(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 3 * HOUR;
    let ip: IpAddr = "10.3.0.9".parse().unwrap_or_else(|e| panic!("{e}"));
    let before = ok("counts before", store.flow_counts().await);
    let web = workload(run, "atomic", "web", "shop", &["web"]);
    let good = stored(
        tcp("10.3.0.9:4000", "10.3.0.2:80", t),
        web.clone(),
        web.clone(),
    );
    let mut bad = good.clone();
    // Broken past validation: the database refuses a flow ending before
    // it starts, after the batch's other rows were written.
    bad.flow.end_ms = bad.flow.start_ms - 1;
    let w = FlowWrite {
        server_id: run.server("atomic"),
        now_ms: t,
        evidence: vec![Evidence {
            key: OwnershipKey::ip(ip),
            owner: run.owner("atomic"),
            at_ms: t,
            kind: EvidenceKind::Started,
        }],
        pending_add: vec![good.flow.clone()],
        pending_done: Vec::new(),
        flows: vec![good.clone(), good.clone(), bad],
        ..FlowWrite::default()
    };
    if let Ok(w) = store.write_flows(&w).await {
        panic!("conformance: a flow ending before it starts must fail the write: {w:?}");
    }
    assert_eq!(
        ok("counts after", store.flow_counts().await),
        before,
        "conformance: a failed write leaves nothing behind"
    );
    assert_eq!(
        window(store, "atomic list", t - HOUR, t + HOUR).await,
        vec![]
    );
    assert_eq!(
        ok("atomic graph", store.graph(t - HOUR, Some(t + HOUR)).await),
        vec![]
    );
    assert_eq!(
        ok(
            "atomic evidence",
            store.evidence_for(ip, t - HOUR, t + HOUR, 10).await
        ),
        vec![]
    );
    // The same batch without the broken flow goes through whole.
    let w = FlowWrite {
        flows: vec![good.clone(), good],
        ..w
    };
    let written = write(store, "atomic retry", &w).await;
    assert_eq!(
        (
            written.flow_ids.len(),
            written.evidence_ids.len(),
            written.pending_ids.len()
        ),
        (2, 1, 1)
    );
    let after = ok("counts after retry", store.flow_counts().await);
    assert_eq!(after.attributed, before.attributed + 2);
    assert_eq!(after.evidence, before.evidence + 1);
    assert_eq!(after.pending, before.pending + 1);
    assert_eq!(after.graph_rows, before.graph_rows + 1);
    let done = FlowWrite {
        server_id: run.server("atomic"),
        now_ms: t + 1,
        pending_done: written.pending_ids,
        ..FlowWrite::default()
    };
    write(store, "atomic cleanup", &done).await;
}

async fn evidence(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 4 * HOUR;
    let ip4: IpAddr = "10.4.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
    let ip6: IpAddr = "fd00::4:1".parse().unwrap_or_else(|e| panic!("{e}"));
    let node = Owner::Node {
        context: run.context("flows"),
        node: "n1".into(),
    };
    let ev = |key: OwnershipKey, owner: &Owner, at_ms: i64, kind: EvidenceKind| Evidence {
        key,
        owner: owner.clone(),
        at_ms,
        kind,
    };
    let list = vec![
        ev(
            OwnershipKey::ip(ip4),
            &run.owner("e1"),
            t + 30,
            EvidenceKind::Started,
        ),
        ev(
            OwnershipKey::ip(ip4),
            &node,
            t + 10,
            EvidenceKind::Heartbeat,
        ),
        ev(
            OwnershipKey::port(ip4, 8080),
            &run.owner("e2"),
            t + 20,
            EvidenceKind::LocalFlow,
        ),
        ev(
            OwnershipKey::ip(ip6),
            &run.owner("e1"),
            t + 5,
            EvidenceKind::Stopped,
        ),
        ev(
            OwnershipKey::port(ip4, 0),
            &node,
            t + 40,
            EvidenceKind::Heartbeat,
        ),
    ];
    let w = FlowWrite {
        server_id: run.server("ev"),
        now_ms: t,
        evidence: list.clone(),
        ..FlowWrite::default()
    };
    let ids = write(store, "evidence write", &w).await.evidence_ids;
    assert!(
        ids.len() == list.len() && ids.windows(2).all(|w| w[0] < w[1]),
        "conformance: evidence ids increase in input order: {ids:?}"
    );
    let want: Vec<(i64, Evidence)> = ids.iter().copied().zip(list.clone()).collect();
    let got = ok("tail", store.evidence_after(ids[0] - 1, t, 100).await);
    assert_eq!(got, want, "conformance: the evidence tail, in id order");
    let got = ok("tail limited", store.evidence_after(ids[0] - 1, t, 2).await);
    assert_eq!(got, want[..2].to_vec(), "conformance: tail limit");
    let got = ok("tail after", store.evidence_after(ids[1], t, 100).await);
    assert_eq!(got, want[2..].to_vec(), "conformance: tail after an id");
    let got = ok(
        "tail recent",
        store.evidence_after(ids[0] - 1, t + 20, 100).await,
    );
    let recent: Vec<_> = want
        .iter()
        .filter(|(_, e)| e.at_ms >= t + 20)
        .cloned()
        .collect();
    assert_eq!(
        got, recent,
        "conformance: the tail skips evidence older than min_at_ms"
    );

    let got = ok("whois", store.evidence_for(ip4, t, t + HOUR, 100).await);
    assert_eq!(
        got,
        vec![
            list[1].clone(),
            list[2].clone(),
            list[0].clone(),
            list[4].clone()
        ],
        "conformance: evidence_for gives every key of the IP, by time"
    );
    let got = ok(
        "whois window",
        store.evidence_for(ip4, t + 20, t + 40, 100).await,
    );
    assert_eq!(
        got,
        vec![list[2].clone(), list[0].clone()],
        "from inclusive, to exclusive"
    );
    let got = ok("whois limit", store.evidence_for(ip4, t, t + HOUR, 1).await);
    assert_eq!(got, vec![list[1].clone()]);
    let got = ok("whois v6", store.evidence_for(ip6, t, t + HOUR, 100).await);
    assert_eq!(got, vec![list[3].clone()]);
}
