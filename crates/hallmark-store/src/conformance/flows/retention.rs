//! Pruning by each retention: flows, graph buckets and evidence go by their
//! own bounds, and what remains reads back whole.

use super::*;

pub(super) async fn pruning(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 10 * HOUR;
    let ip: IpAddr = "10.9.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
    // `old` is the only flow of its container; its service's graph key is
    // shared with `new`, which stays.
    let svc = |c: &str| {
        let mut e = workload(run, "pr", "svc", "shop", &["svc"]);
        if let Endpoint::Workload(w) = &mut e {
            w.container_id = run.container(c);
        }
        e
    };
    let db = workload(run, "pr", "db", "data", &["db"]);
    let old = vec![stored(
        tcp("10.9.0.1:4000", "10.9.0.2:5432", t),
        svc("p1"),
        db.clone(),
    )];
    let new = vec![stored(
        tcp("10.9.0.1:4001", "10.9.0.2:5432", t + 2 * HOUR),
        svc("p2"),
        db.clone(),
    )];
    let ev = |at_ms: i64| Evidence {
        key: OwnershipKey::ip(ip),
        owner: run.owner(&format!("pr{at_ms}")),
        at_ms,
        kind: EvidenceKind::Heartbeat,
    };
    let mut w = batch(run, t, old.clone());
    w.evidence = vec![ev(t)];
    let old = with_ids(&old, &write(store, "prune old", &w).await);
    let mut w = batch(run, t + 2 * HOUR, new.clone());
    w.evidence = vec![ev(t + 2 * HOUR)];
    let new = with_ids(&new, &write(store, "prune new", &w).await);
    let all: Vec<StoredFlow> = old.iter().chain(&new).cloned().collect();
    let (lo, hi) = (t - HOUR, t + 3 * HOUR);

    // Flows and evidence of the first hour go; the graph keeps them.
    let pruned = ok(
        "prune flows",
        store.prune_flows(t + HOUR, t - HOUR, t + HOUR).await,
    );
    assert!(
        pruned.flows >= 1 && pruned.evidence >= 1 && pruned.dictionary_rows >= 2,
        "conformance: prune counts what it deleted: {pruned:?}"
    );
    assert_eq!(
        window(store, "after flow prune", lo, hi).await,
        new,
        "conformance: flows older than the flow retention are pruned, newer ones read back whole"
    );
    assert_eq!(
        ok("graph after flow prune", store.graph(lo, Some(hi)).await),
        summed(&buckets_of(&all)),
        "conformance: the graph outlives the flows"
    );
    assert_eq!(
        ok(
            "graph_from_flows after prune",
            store.graph_from_flows(lo, Some(hi)).await
        ),
        summed(&buckets_of(&new)),
    );
    assert_eq!(
        ok(
            "evidence after prune",
            store.evidence_for(ip, lo, hi, 10).await
        ),
        vec![ev(t + 2 * HOUR)],
        "conformance: evidence older than its retention is pruned"
    );

    // Then the graph's first hour.
    let pruned = ok(
        "prune graph",
        store.prune_flows(t + HOUR, t + HOUR, t + HOUR).await,
    );
    assert!(pruned.graph_rows >= 1, "{pruned:?}");
    assert_eq!(
        ok("graph after graph prune", store.graph(lo, Some(hi)).await),
        summed(&buckets_of(&new)),
        "conformance: graph buckets older than the graph retention are pruned"
    );

    // Everything; then the same endpoints and owners are written anew.
    ok("prune all", store.prune_flows(hi, hi, hi).await);
    assert_eq!(window(store, "after prune all", lo, hi).await, vec![]);
    assert_eq!(
        ok("graph after all", store.graph(lo, Some(hi)).await),
        vec![]
    );
    let again = vec![stored(
        tcp("10.9.0.1:4002", "10.9.0.2:5432", hi),
        svc("p1"),
        db,
    )];
    let mut w = batch(run, hi, again.clone());
    w.evidence = vec![ev(hi)];
    let again = with_ids(&again, &write(store, "after prune all", &w).await);
    assert_eq!(
        window(store, "rewritten", hi, hi + HOUR).await,
        again,
        "conformance: endpoints pruned from the dictionary are stored anew"
    );
    assert_eq!(
        ok("rewritten graph", store.graph(hi, Some(hi + HOUR)).await),
        summed(&buckets_of(&again))
    );
    assert_eq!(
        ok(
            "rewritten evidence",
            store.evidence_for(ip, hi, hi + HOUR, 10).await
        ),
        vec![ev(hi)]
    );
}
