//! The graph over windows of every shape against hour boundaries (partial
//! hours at both ends, whole hours, less than an hour), after merges that
//! empty buckets and after pruning inside an hour: a back end summing by
//! the hour must answer what the minutes sum to.

use super::*;

/// The windows checked, as offsets from the first hour: (since, until).
const WINDOWS: &[(i64, Option<i64>)] = &[
    // Partial hours at both ends, two whole hours between.
    (17 * MINUTE + 5_000, Some(3 * HOUR + 41 * MINUTE + 30_000)),
    // Partial hours at both ends, one whole hour between.
    (59 * MINUTE, Some(2 * HOUR + MINUTE)),
    // Exactly whole hours.
    (0, Some(HOUR)),
    (HOUR, Some(3 * HOUR)),
    (0, Some(4 * HOUR)),
    // Whole hours and a partial one after them.
    (HOUR, Some(2 * HOUR + 30 * MINUTE)),
    // A partial hour and whole ones after it.
    (40 * MINUTE, Some(3 * HOUR)),
    // Less than an hour: inside one, and across a boundary.
    (HOUR + 5 * MINUTE, Some(HOUR + 50 * MINUTE)),
    (HOUR + 40 * MINUTE + 1, Some(2 * HOUR + 20 * MINUTE - 1)),
    (2 * HOUR - MINUTE, Some(2 * HOUR + MINUTE)),
    // Empty.
    (2 * HOUR, Some(2 * HOUR)),
];

pub(super) async fn hours(store: &dyn Store, run: &Run) {
    // Past the hours of the other checks: they prune the whole store up to
    // theirs, and a prune inside an hour is checked here.
    let t = run.flow_base() + 24 * HOUR;
    let api = |c: &str| {
        let mut e = workload(run, "ru", "api", "shop", &["api"]);
        if let Endpoint::Workload(w) = &mut e {
            w.container_id = run.container(c);
        }
        e
    };
    let db = workload(run, "ru", "db", "data", &["db"]);
    let cache = workload(run, "ru2", "cache", "", &[]);
    let corp = Endpoint::External {
        network: "corp".into(),
    };
    let srcs = [api("r1"), api("r2"), cache.clone(), corp];
    let dsts = [db, cache];
    let mut batches: Vec<Vec<StoredFlow>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for i in 0..200i64 {
        let n = usize::try_from(i).unwrap_or(0);
        // From 10 minutes into the first hour to 34 minutes into the fourth.
        let start = t + 10 * MINUTE + i * 61_237 + (i % 5) * 17;
        let mut f = tcp("10.24.0.1:40000", "10.24.0.2:5432", start);
        f.end_ms = start + (i % 6) * 45_000;
        f.bytes_sent = 10 * u64::try_from(i).unwrap_or(0);
        f.dst.set_port([5432, 6379, 443][n % 3]);
        f.outcome = match n % 5 {
            0 => Some(TcpOutcome::Refused),
            1 => Some(TcpOutcome::Reset),
            2 => None,
            _ => Some(TcpOutcome::Established),
        };
        if n % 7 == 3 {
            f.protocol = Protocol::Udp;
            f.outcome = None;
        }
        let mut f = stored(f, srcs[n % 4].clone(), dsts[n % 2].clone());
        f.verdict = hallmark_flows::verdict::OUTCOMES.get(n % 6).copied();
        // Each hour's rows are added to by every batch.
        batches[n % 3].push(f);
    }
    for (i, b) in batches.iter().enumerate() {
        write(
            store,
            &format!("rollup batch {i}"),
            &batch(run, t + 4 * HOUR, b.clone()),
        )
        .await;
    }

    // One connection reported by both ends: the first report at the start
    // of the third hour, the second 2 ms earlier, so the merged flow moves
    // to another key, minute and hour. Its first key keeps another flow in
    // the third hour, whose first time is later.
    let (a, b) = ("10.24.1.1:41000", "10.24.1.2:8443");
    let client = workload(run, "ru", "client", "shop", &["client"]);
    let server = workload(run, "ru", "server", "shop", &["server"]);
    let no_owner = Endpoint::Unattributed {
        reason: UnattributedReason::NoOwner,
    };
    let reported = |start: i64, node: &str, side: Side, owner: &str| {
        let mut f = tcp(a, b, start);
        f.reporter = Reporter::Agent(node.into());
        f.local = Some(LocalSide {
            side,
            owner: run.owner(owner),
            by_port: false,
            unit: String::new(),
        });
        f
    };
    let first = stored(
        reported(t + 2 * HOUR, "n1", Side::Source, "client"),
        client.clone(),
        no_owner.clone(),
    );
    let sibling = stored(
        tcp(
            "10.24.1.1:41001",
            "10.24.1.2:8443",
            t + 2 * HOUR + 10 * MINUTE,
        ),
        client,
        no_owner.clone(),
    );
    write(
        store,
        "rollup first report",
        &batch(run, t + 4 * HOUR, vec![first, sibling]),
    )
    .await;
    let second = stored(
        reported(t + 2 * HOUR - 2, "n2", Side::Destination, "server"),
        no_owner,
        server,
    );
    let w = write(
        store,
        "rollup second report",
        &batch(run, t + 4 * HOUR, vec![second]),
    )
    .await;
    assert_eq!(w.merged, 1, "conformance: rollup: the reports merge");

    let all = window(store, "rollup flows", t, t + 5 * HOUR).await;
    assert_eq!(all.len(), 202, "conformance: rollup: flows stored");
    let in_minutes = |flows: &[StoredFlow], lo: i64, hi: i64| -> Vec<StoredFlow> {
        flows
            .iter()
            .filter(|f| {
                let m = f.flow.start_ms.div_euclid(MINUTE) * MINUTE;
                m >= lo && m < hi
            })
            .cloned()
            .collect()
    };
    let minutes_of = |since: i64, until: Option<i64>| {
        let lo = (t + since).div_euclid(MINUTE) * MINUTE;
        let hi = until.map_or(i64::MAX, |u| {
            let u = t + u;
            u.div_euclid(MINUTE) * MINUTE + if u % MINUTE == 0 { 0 } else { MINUTE }
        });
        (lo, hi)
    };
    for &(since, until) in WINDOWS {
        let (lo, hi) = minutes_of(since, until);
        let (since, until) = (t + since, until.map(|u| t + u));
        let got = ok("rollup graph", store.graph(since, until).await);
        assert_eq!(
            got,
            ok(
                "rollup graph_from_flows",
                store.graph_from_flows(since, until).await
            ),
            "conformance: graph({since}, {until:?}) must equal the aggregate over the flows"
        );
        assert_eq!(
            got,
            summed(&buckets_of(&in_minutes(&all, lo, hi))),
            "conformance: graph({since}, {until:?}) must sum buckets_of over minutes"
        );
    }

    // The graph pruned inside the first hour, 30.5 minutes in: the
    // minutes before it go, the flows stay.
    let bound = t + 30 * MINUTE + 30_000;
    ok("rollup prune", store.prune_flows(t, bound, t).await);
    let kept = in_minutes(&all, bound, i64::MAX);
    assert!(kept.len() < all.len() && in_minutes(&kept, t, t + HOUR).len() > 5);
    for &(since, until) in WINDOWS {
        let (lo, hi) = minutes_of(since, until);
        let (since, until) = (t + since, until.map(|u| t + u));
        assert_eq!(
            ok("rollup graph after prune", store.graph(since, until).await),
            summed(&buckets_of(&in_minutes(&kept, lo, hi))),
            "conformance: graph({since}, {until:?}) after pruning the graph at {bound}"
        );
    }
}
