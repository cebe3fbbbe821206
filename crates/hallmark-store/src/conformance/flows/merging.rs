//! Reports of one connection become one stored flow: both ends' agents,
//! and an agent's interim and final records; other flows stay as written.

use super::*;

/// A TCP flow of `src` to `dst` reported by the agent of `node` with its
/// local side on `side`, owned by `owner`.
fn reported(src: &str, dst: &str, start_ms: i64, node: &str, side: Side, owner: Owner) -> Flow {
    let mut f = tcp(src, dst, start_ms);
    f.reporter = Reporter::Agent(node.into());
    f.local = Some(LocalSide {
        side,
        owner,
        by_port: false,
        unit: String::new(),
    });
    f
}

fn no_owner() -> Endpoint {
    Endpoint::Unattributed {
        reason: UnattributedReason::NoOwner,
    }
}

/// The graph over `since..until` must be the one of `flows` and agree with
/// the aggregate over the stored flows.
async fn graph_is(store: &dyn Store, what: &str, since: i64, until: i64, flows: &[StoredFlow]) {
    let want = summed(&buckets_of(flows));
    assert_eq!(
        ok(what, store.graph(since, Some(until)).await),
        want,
        "conformance: {what}: the graph counts each connection once"
    );
    assert_eq!(
        ok(what, store.graph_from_flows(since, Some(until)).await),
        want,
        "conformance: {what}: graph_from_flows"
    );
}

pub(super) async fn merging(store: &dyn Store, run: &Run) {
    both_ends(store, run, run.flow_base() + 15 * HOUR, false).await;
    both_ends(store, run, run.flow_base() + 16 * HOUR, true).await;
    interim_and_final(store, run).await;
    others_stay_apart(store, run).await;
}

/// Both ends' agents report one connection, 3 ms apart, each knowing its
/// own end: in two batches (`one_batch` false) or one.
async fn both_ends(store: &dyn Store, run: &Run, t: i64, one_batch: bool) {
    let what = if one_batch {
        "one batch"
    } else {
        "two batches"
    };
    let (a, b) = ("10.15.0.1:41000", "10.15.0.2:8443");
    let client = workload(run, "mg", "client", "shop", &["client"]);
    let server = workload(run, "mg", "server", "shop", &["server"]);
    let mut first = reported(a, b, t, "n1", Side::Source, run.owner("client"));
    first.bytes_sent = 10_000;
    first.bytes_received = 300;
    first.rtt_us = Some(180);
    let mut second = reported(a, b, t + 3, "n2", Side::Destination, run.owner("server"));
    second.bytes_sent = 10_050;
    second.bytes_received = 290;
    second.end_ms = first.end_ms + 2;
    second.retransmits = 2;
    let first = stored(first, client.clone(), no_owner());
    let second = stored(second, no_owner(), server.clone());

    let (ids, merged) = if one_batch {
        let w = write(
            store,
            what,
            &batch(run, t, vec![first.clone(), second.clone()]),
        )
        .await;
        (w.flow_ids, w.merged)
    } else {
        let w1 = write(store, what, &batch(run, t, vec![first.clone()])).await;
        assert_eq!(w1.merged, 0);
        let w2 = write(store, what, &batch(run, t + 10, vec![second.clone()])).await;
        (vec![w1.flow_ids[0], w2.flow_ids[0]], w2.merged)
    };
    assert_eq!(merged, 1, "conformance: {what}: one report merged");
    assert_eq!(
        ids[0], ids[1],
        "conformance: {what}: the merged report's id is its row's"
    );
    let listed = window(store, what, t, t + HOUR / 2).await;
    assert_eq!(
        listed.len(),
        1,
        "conformance: {what}: one flow per connection: {listed:#?}"
    );
    let f = &listed[0];
    assert_eq!(f.id, ids[0]);
    assert_eq!(
        (&f.src, &f.dst),
        (&client, &server),
        "both ends' identities"
    );
    assert_eq!(f.status, FlowStatus::Attributed);
    assert_eq!(f.flow.start_ms, t);
    assert_eq!(f.flow.end_ms, t + 1_502);
    assert_eq!(
        (f.flow.bytes_sent, f.flow.bytes_received),
        (10_050, 300),
        "each counter is the larger report's"
    );
    assert_eq!((f.flow.retransmits, f.flow.rtt_us), (2, Some(180)));
    assert_eq!(f.flow.reporter, Reporter::Agent("n1".into()));
    assert_eq!(f.flow.local, first.flow.local);
    assert_eq!(f, &first.merge(&second).with_id(ids[0]));
    graph_is(store, what, t, t + HOUR / 2, &listed).await;
}

/// Interim records every 30 s with cumulative counters, then the final one,
/// all with the connection's start.
async fn interim_and_final(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 17 * HOUR;
    let web = workload(run, "mg", "web", "shop", &["web"]);
    let db = workload(run, "mg", "db", "data", &["db"]);
    let report = |n: i64| {
        let mut f = reported(
            "10.17.0.1:42000",
            "10.17.0.2:5432",
            t,
            "n1",
            Side::Source,
            run.owner("web"),
        );
        f.end_ms = t + n * 30_000;
        f.bytes_sent = 1_000 * n as u64;
        f.bytes_received = 4_000 * n as u64;
        f.packets_sent = 10 * n as u64;
        stored(f, web.clone(), db.clone())
    };
    let mut ids = Vec::new();
    for n in 1..=3 {
        let w = write(
            store,
            "interim",
            &batch(run, t + n * 30_000, vec![report(n)]),
        )
        .await;
        assert_eq!(w.merged, u64::from(n > 1));
        ids.extend(w.flow_ids);
    }
    // A resent final record changes nothing.
    let w = write(store, "resent", &batch(run, t + 100_000, vec![report(3)])).await;
    assert_eq!(w.merged, 1);
    ids.extend(w.flow_ids);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let listed = window(store, "interim", t, t + HOUR / 2).await;
    assert_eq!(
        listed,
        vec![report(3).with_id(ids[0])],
        "the final counters"
    );
    let graph = ok("interim graph", store.graph(t, Some(t + HOUR / 2)).await);
    assert_eq!(graph.len(), 1);
    assert_eq!(
        (graph[0].flows, graph[0].bytes),
        (1, 15_000),
        "conformance: the graph holds the final bytes, not the sum of the reports"
    );
    graph_is(store, "interim", t, t + HOUR / 2, &listed).await;
}

/// Two connections on one 4-tuple 2 s apart, and flows of flow logs and
/// exporters, are never merged.
async fn others_stay_apart(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 18 * HOUR;
    let web = workload(run, "mg", "web", "shop", &["web"]);
    let db = workload(run, "mg", "db", "data", &["db"]);
    let conn = |start: i64| {
        stored(
            reported(
                "10.18.0.1:43000",
                "10.18.0.2:5432",
                start,
                "n1",
                Side::Source,
                run.owner("web"),
            ),
            web.clone(),
            db.clone(),
        )
    };
    let w = write(store, "reuse", &batch(run, t, vec![conn(t)])).await;
    let w2 = write(
        store,
        "reuse",
        &batch(run, t + 2_000, vec![conn(t + 2_000)]),
    )
    .await;
    assert_eq!(w2.merged, 0);
    assert_ne!(w.flow_ids, w2.flow_ids);

    let file = stored(
        tcp("10.18.0.3:44000", "10.18.0.4:80", t),
        web.clone(),
        db.clone(),
    );
    let mut exported = file.clone();
    exported.flow.reporter =
        Reporter::Exporter("192.0.2.1:2055".parse().unwrap_or_else(|e| panic!("{e}")));
    let others = vec![file.clone(), file.clone(), exported.clone(), exported];
    let w3 = write(store, "others", &batch(run, t, others.clone())).await;
    assert_eq!(w3.merged, 0, "conformance: only agents' reports are merged");
    let listed = window(store, "reuse", t, t + HOUR / 2).await;
    assert_eq!(listed.len(), 6, "{listed:#?}");
    graph_is(store, "reuse", t, t + HOUR / 2, &listed).await;
}

trait WithId {
    fn with_id(self, id: i64) -> Self;
}

impl WithId for StoredFlow {
    fn with_id(mut self, id: i64) -> Self {
        self.id = id;
        self
    }
}
