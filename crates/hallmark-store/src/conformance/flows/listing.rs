//! Listing flows against `FlowQuery::matches`, and the identity graph
//! against `buckets_of` and the aggregate over flows.

use hallmark_flows::{edges_of, EndpointFilter, FlowStatus, GraphBy};

use super::*;

fn filter(text: &str) -> EndpointFilter {
    match text.parse() {
        Ok(f) => f,
        Err(e) => panic!("conformance: test filter `{text}`: {e}"),
    }
}

/// What `list_flows(q)` must answer over `all`: the matches, in the
/// promised order, cut at the limit.
fn expected(all: &[StoredFlow], q: &FlowQuery) -> Vec<StoredFlow> {
    let mut want: Vec<StoredFlow> = all.iter().filter(|f| q.matches(f)).cloned().collect();
    if q.after_id.is_some() {
        want.sort_by_key(|f| f.id);
    } else {
        want.sort_by_key(|f| std::cmp::Reverse((f.flow.start_ms, f.id)));
    }
    if q.limit > 0 {
        want.truncate(q.limit);
    }
    want
}

pub(super) async fn list_filters(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 5 * HOUR;
    let pay = workload(run, "lf", "pay", "payments", &["ns/payments/sa/ledger"]);
    let web = workload(run, "lf", "web", "shop", &["ns/shop/sa/web"]);
    let job = workload(run, "lf2", "job", "payments", &[]);
    let node = Endpoint::Node {
        context: run.context("lf"),
        node: "n1".into(),
        spiffe_id: run.agent("n1").to_string(),
        unit: String::new(),
    };
    let corp = Endpoint::External {
        network: "corp".into(),
    };
    let none = Endpoint::Unattributed {
        reason: UnattributedReason::NoOwner,
    };
    let ends = [pay, web, job, node, corp, none];
    let ips = [
        "10.5.0.1",
        "10.5.0.2",
        "10.5.0.20",
        "10.6.0.1",
        "[fd00::5:1]",
        "[fd00::6:1]",
    ];
    let ports = [80, 443, 5432];
    let mut flows = Vec::new();
    for i in 0..30usize {
        let (s, d) = (i % 6, (i * 5 + 1) % 6);
        // Keep each flow within one IP family.
        let (src_ip, dst_ip) = if i % 4 == 3 {
            (ips[4], ips[5])
        } else {
            (ips[i % 4], ips[(i + 1) % 4])
        };
        let src = format!("{src_ip}:{}", 30_000 + i);
        let dst = format!("{dst_ip}:{}", ports[i % 3]);
        // Flows 10 and 11 start together: the id breaks the tie.
        let start = t + 7_000 * i64::try_from(if i == 11 { 10 } else { i }).unwrap_or(0);
        let mut f = tcp(&src, &dst, start);
        if i % 5 == 2 {
            f.protocol = Protocol::Udp;
            f.outcome = None;
        }
        flows.push(stored(f, ends[s].clone(), ends[d].clone()));
    }
    let first = write(
        store,
        "list write 1",
        &batch(run, t + HOUR, flows[..17].to_vec()),
    )
    .await;
    let second = write(
        store,
        "list write 2",
        &batch(run, t + HOUR, flows[17..].to_vec()),
    )
    .await;
    let mut all = with_ids(&flows[..17], &first);
    all.extend(with_ids(&flows[17..], &second));
    assert!(
        first.flow_ids.last() < second.flow_ids.first(),
        "conformance: a later batch gets larger ids"
    );

    let base = FlowQuery {
        since_ms: t,
        until_ms: Some(t + HOUR),
        ..FlowQuery::default()
    };
    let payments_prefix = format!("{}/*", run.id("ns/payments"));
    let ledger = run.id("ns/payments/sa/ledger").to_string();
    let q = |f: &dyn Fn(&mut FlowQuery)| {
        let mut q = base.clone();
        f(&mut q);
        q
    };
    let queries: Vec<FlowQuery> = vec![
        base.clone(),
        q(&|q| q.from = vec![filter(&payments_prefix)]),
        q(&|q| q.to = vec![filter(&ledger)]),
        q(&|q| q.from = vec![filter("ns:payments")]),
        q(&|q| q.to = vec![filter("label:app=web")]),
        q(&|q| q.from = vec![filter("image:shop/pay")]),
        q(&|q| q.to = vec![filter(&format!("context:{}", run.context("lf2")))]),
        q(&|q| q.from = vec![filter("node:n1")]),
        q(&|q| q.to = vec![filter("node:node-web")]),
        q(&|q| q.from = vec![filter("10.5.0.0/28")]),
        q(&|q| q.to = vec![filter("ip:10.5.0.2")]),
        q(&|q| q.from = vec![filter("fd00::5:0/112")]),
        q(&|q| q.to = vec![filter("0.0.0.0/0")]),
        q(&|q| q.port = Some(443)),
        q(&|q| q.protocol = Some(Protocol::Udp)),
        q(&|q| q.status = Some(FlowStatus::Attributed)),
        q(&|q| q.status = Some(FlowStatus::Unattributed)),
        q(&|q| q.status = Some(FlowStatus::External)),
        q(&|q| {
            q.since_ms = t + 30_000;
            q.until_ms = Some(t + 90_000);
        }),
        q(&|q| q.until_ms = Some(t + 70_000)),
        q(&|q| q.limit = 4),
        q(&|q| {
            q.after_id = Some(all[5].id);
            q.limit = 3;
        }),
        q(&|q| q.after_id = Some(all[20].id)),
        q(&|q| {
            q.from = vec![filter("ns:payments"), filter("label:app=pay")];
            q.to = vec![filter("10.5.0.0/16")];
            q.port = Some(80);
        }),
        q(&|q| {
            q.from = vec![filter("context:nowhere")];
            q.limit = 2;
        }),
        q(&|q| {
            q.to = vec![filter("ns:shop")];
            q.limit = 2;
        }),
    ];
    for query in queries {
        let want = expected(&all, &query);
        let got = ok("list_flows", store.list_flows(&query).await);
        assert_eq!(
            got, want,
            "conformance: list_flows must answer exactly FlowQuery::matches, in order, for {query:?}"
        );
    }
    // Beyond one page of candidates: every flow, newest first, also when
    // the endpoint filters leave few.
    let many: Vec<StoredFlow> = (0..1_100i64)
        .map(|i| {
            let f = tcp("10.5.1.1:40000", "10.5.1.2:80", t + 2 * HOUR + i);
            let (s, d) = if i % 500 == 7 {
                (ends[0].clone(), ends[1].clone())
            } else {
                (ends[1].clone(), ends[0].clone())
            };
            stored(f, s, d)
        })
        .collect();
    let written = write(store, "list many", &batch(run, t + 3 * HOUR, many.clone())).await;
    let many = with_ids(&many, &written);
    for query in [
        FlowQuery {
            since_ms: t + 2 * HOUR,
            until_ms: Some(t + 3 * HOUR),
            ..FlowQuery::default()
        },
        FlowQuery {
            since_ms: t + 2 * HOUR,
            until_ms: Some(t + 3 * HOUR),
            from: vec![filter("ns:payments")],
            ..FlowQuery::default()
        },
        FlowQuery {
            since_ms: t + 2 * HOUR,
            until_ms: Some(t + 3 * HOUR),
            after_id: Some(many[50].id),
            limit: 1_020,
            ..FlowQuery::default()
        },
    ] {
        let want = expected(&many, &query);
        let got = ok("list_flows paging", store.list_flows(&query).await);
        assert_eq!(
            got.len(),
            want.len(),
            "conformance: list_flows over many candidates for {query:?}"
        );
        assert!(
            got == want,
            "conformance: list_flows paging order for {query:?}"
        );
    }
}

/// More matching endpoints than a listing narrows by in SQL: the filters
/// are then applied to every candidate, with the same answer.
pub(super) async fn many_endpoints(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 20 * HOUR;
    let flows: Vec<StoredFlow> = (0..1_200i64)
        .map(|i| {
            let ns = if i % 2 == 0 { "bulk" } else { "other" };
            let src = workload(run, "me", &format!("w{i}"), ns, &[]);
            let f = tcp("10.8.0.1:40000", "10.8.0.2:80", t + i * 10);
            stored(f, src.clone(), src)
        })
        .collect();
    let written = write(
        store,
        "many endpoints",
        &batch(run, t + HOUR, flows.clone()),
    )
    .await;
    let all = with_ids(&flows, &written);
    for query in [
        FlowQuery {
            since_ms: t,
            until_ms: Some(t + HOUR),
            from: vec![filter("ns:bulk")],
            limit: 700,
            ..FlowQuery::default()
        },
        FlowQuery {
            since_ms: t,
            until_ms: Some(t + HOUR),
            to: vec![filter("ns:other"), filter("label:app=w7")],
            ..FlowQuery::default()
        },
    ] {
        let want = expected(&all, &query);
        let got = ok("list many endpoints", store.list_flows(&query).await);
        assert_eq!(got.len(), want.len(), "conformance: {query:?}");
        assert!(
            got == want,
            "conformance: list_flows over many endpoints for {query:?}"
        );
    }
}

pub(super) async fn graph_sums(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 8 * HOUR;
    let api = |c: &str| {
        // Two containers of one service share a graph key.
        let mut e = workload(run, "g", "api", "shop", &["api"]);
        if let Endpoint::Workload(w) = &mut e {
            w.container_id = run.container(c);
            w.node = format!("node-{c}");
        }
        e
    };
    let db = workload(run, "g", "db", "data", &["db"]);
    let cache = workload(run, "g2", "cache", "", &[]);
    let corp = Endpoint::External {
        network: "corp".into(),
    };
    let late = Endpoint::Unattributed {
        reason: UnattributedReason::Late,
    };
    let srcs = [api("a1"), api("a2"), cache.clone(), corp, late];
    let dsts = [db.clone(), cache, db];
    let mut batches: Vec<Vec<StoredFlow>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for i in 0..60i64 {
        let n = usize::try_from(i).unwrap_or(0);
        let mut f = tcp(
            "10.7.0.1:40000",
            "10.7.0.2:5432",
            t + i * 9_000 + (i % 7) * 13,
        );
        f.end_ms = f.start_ms + (i % 4) * 20_000;
        f.bytes_sent = 100 * u64::try_from(i).unwrap_or(0);
        if n % 3 == 1 {
            f.dst.set_port(6379);
        }
        f.outcome = match n % 5 {
            0 => Some(TcpOutcome::Refused),
            1 => Some(TcpOutcome::Reset),
            2 => None,
            _ => Some(TcpOutcome::Established),
        };
        if n % 11 == 4 {
            f.protocol = Protocol::Udp;
            f.outcome = None;
        }
        let mut f = stored(f, srcs[n % 5].clone(), dsts[n % 3].clone());
        // Every verdict, and flows stored before verdicts (none).
        f.verdict = hallmark_flows::verdict::OUTCOMES.get(n % 6).copied();
        batches[n % 3].push(f);
    }
    for (i, b) in batches.iter().enumerate() {
        write(
            store,
            &format!("graph batch {i}"),
            &batch(run, t + HOUR, b.clone()),
        )
        .await;
    }
    let all: Vec<StoredFlow> = batches.concat();
    let in_minutes = |lo: i64, hi: i64| -> Vec<StoredFlow> {
        all.iter()
            .filter(|f| {
                let m = f.flow.start_ms.div_euclid(MINUTE) * MINUTE;
                m >= lo && m < hi
            })
            .cloned()
            .collect()
    };
    for (since, until, lo, hi) in [
        (t, Some(t + HOUR), t, t + HOUR),
        (t - 1, Some(t + 2 * HOUR), t - MINUTE, t + 2 * HOUR),
        (t + 61_000, Some(t + 119_000), t + MINUTE, t + 2 * MINUTE),
        (
            t + 2 * MINUTE,
            Some(t + 5 * MINUTE),
            t + 2 * MINUTE,
            t + 5 * MINUTE,
        ),
    ] {
        let flows = in_minutes(lo, hi);
        let want = summed(&buckets_of(&flows));
        let got = ok("graph", store.graph(since, until).await);
        // Only this run's flows lie in its window.
        assert_eq!(
            got, want,
            "conformance: graph({since}, {until:?}) must sum buckets_of over minutes"
        );
        let from_flows = ok(
            "graph_from_flows",
            store.graph_from_flows(since, until).await,
        );
        assert_eq!(
            from_flows, want,
            "conformance: graph_from_flows({since}, {until:?}) must equal the graph"
        );
        for by in [
            GraphBy::SpiffeId,
            GraphBy::Workload,
            GraphBy::Namespace,
            GraphBy::Service,
        ] {
            assert_eq!(
                edges_of(&got, by),
                edges_of(&buckets_of(&flows), by),
                "conformance: graph edges by {by:?}"
            );
        }
    }
    assert!(
        ok("graph", store.graph(t, Some(t + HOUR)).await).len() < all.len(),
        "conformance: two containers of a service share graph rows"
    );
}
