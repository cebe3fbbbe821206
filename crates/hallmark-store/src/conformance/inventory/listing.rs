//! Listing what agents reported: filters, retention, counts, prefixes.

use super::*;

pub(super) async fn listing_filters(store: &dyn Store, run: &Run) {
    let (ctx_f, ctx_g) = (run.context("filter-f"), run.context("filter-g"));
    let (n1, n2) = (run.agent("inv-f1"), run.agent("inv-f2"));

    let mut web = docker(
        &run.container("f1"),
        "web",
        "shop/web:1.2",
        WorkloadState::Running,
    );
    web.labels.insert("app".into(), "web".into());
    web.labels.insert("tier".into(), "front".into());
    web.image_id = format!("sha256:{}", "e".repeat(64));
    let mut db = docker(
        &run.container("f2"),
        "db",
        "postgres:16",
        WorkloadState::Stopped,
    );
    db.labels.insert("app".into(), "db".into());
    db.finished_at_ms = T - 1_000;
    let mut app = cri(
        &run.container("f3"),
        "app",
        "payments",
        WorkloadState::Running,
    );
    if let Some(pod) = app.pod.as_mut() {
        pod.labels.insert("team".into(), "money".into());
        pod.labels.insert("app".into(), "pay".into());
    }
    let side = cri(
        &run.container("f4"),
        "side",
        "kube-system",
        WorkloadState::Paused,
    );
    let web2 = docker(
        &run.container("f5"),
        "web2",
        "shop/web:1.3",
        WorkloadState::Running,
    );

    let mut r = report(&ctx_f, &n1);
    r.snapshot = Some(page(1, 0, true, vec![web.clone(), db.clone()]));
    apply(store, "filters n1", r, T).await;
    let mut r = report(&ctx_f, &n2);
    r.snapshot = Some(page(1, 0, true, vec![app.clone(), side.clone()]));
    apply(store, "filters n2", r, T).await;
    let mut r = report(&ctx_g, &n1);
    r.snapshot = Some(page(1, 0, true, vec![web2.clone()]));
    apply(store, "filters g", r, T).await;

    let (iweb, idb, iapp, iside, iweb2) = (
        web.container_id.as_str(),
        db.container_id.as_str(),
        app.container_id.as_str(),
        side.container_id.as_str(),
        web2.container_id.as_str(),
    );
    let image = |s: &str| Some(ImageMatch::parse(s).unwrap_or_else(|e| panic!("{e}")));
    let labels = |ls: &[&str]| {
        ls.iter()
            .map(|l| LabelMatch::parse(l).unwrap_or_else(|e| panic!("{e}")))
            .collect::<Vec<_>>()
    };
    let f = WorkloadFilter::default;
    let cases: Vec<(&str, WorkloadFilter, Vec<&str>)> = vec![
        (
            "context f",
            WorkloadFilter {
                context_name: Some(ctx_f.clone()),
                ..f()
            },
            vec![iweb, idb, iapp, iside],
        ),
        (
            "agent n1",
            WorkloadFilter {
                agent_id: Some(n1.clone()),
                ..f()
            },
            vec![iweb, idb, iweb2],
        ),
        (
            "agent n1 in context g",
            WorkloadFilter {
                context_name: Some(ctx_g.clone()),
                agent_id: Some(n1.clone()),
                ..f()
            },
            vec![iweb2],
        ),
        (
            "namespace payments",
            WorkloadFilter {
                namespace: Some("payments".into()),
                ..f()
            },
            vec![iapp],
        ),
        (
            "image without tag",
            WorkloadFilter {
                image: image("shop/web"),
                ..f()
            },
            vec![iweb, iweb2],
        ),
        (
            "image with tag",
            WorkloadFilter {
                image: image("shop/web:1.3"),
                ..f()
            },
            vec![iweb2],
        ),
        (
            "image id",
            WorkloadFilter {
                image: image(&web.image_id),
                ..f()
            },
            vec![iweb],
        ),
        (
            "Docker Hub short name",
            WorkloadFilter {
                image: image("busybox"),
                ..f()
            },
            vec![iapp, iside],
        ),
        (
            "container label",
            WorkloadFilter {
                labels: labels(&["app=web"]),
                ..f()
            },
            vec![iweb],
        ),
        (
            "pod label",
            WorkloadFilter {
                labels: labels(&["team=money"]),
                ..f()
            },
            vec![iapp],
        ),
        (
            "label presence, container or pod",
            WorkloadFilter {
                labels: labels(&["app"]),
                ..f()
            },
            vec![iweb, idb, iapp],
        ),
        (
            "every label must match",
            WorkloadFilter {
                labels: labels(&["app", "tier=front"]),
                ..f()
            },
            vec![iweb],
        ),
        (
            "state current",
            WorkloadFilter {
                state: Some(StateFilter::Current),
                context_name: Some(ctx_f.clone()),
                ..f()
            },
            vec![iweb, iapp, iside],
        ),
        (
            "state stopped",
            WorkloadFilter {
                state: Some(StateFilter::Is(WorkloadState::Stopped)),
                ..f()
            },
            vec![idb],
        ),
        (
            "state paused",
            WorkloadFilter {
                state: Some(StateFilter::Is(WorkloadState::Paused)),
                ..f()
            },
            vec![iside],
        ),
        (
            "everything at once",
            WorkloadFilter {
                context_name: Some(ctx_f.clone()),
                agent_id: Some(n2.clone()),
                namespace: Some("payments".into()),
                image: image("busybox:1"),
                labels: labels(&["team", "app=pay"]),
                state: Some(StateFilter::Is(WorkloadState::Running)),
            },
            vec![iapp],
        ),
        (
            "nothing",
            WorkloadFilter {
                context_name: Some(ctx_g.clone()),
                namespace: Some("payments".into()),
                ..f()
            },
            vec![],
        ),
    ];
    let ours = [ctx_f.as_str(), ctx_g.as_str()];
    for (name, filter, want) in cases {
        let got = ok(name, store.list_workloads(&filter, T, HOUR).await);
        for s in &got {
            assert!(
                filter.matches(s),
                "conformance: list_workloads filtered by {name} returned a workload the filter refuses: {s:?}"
            );
        }
        let mut got: Vec<&StoredWorkload> = got
            .iter()
            .filter(|s| ours.contains(&s.context_name.as_str()))
            .collect();
        got.sort_by(|a, b| a.workload.container_id.cmp(&b.workload.container_id));
        let got: Vec<&str> = got
            .iter()
            .map(|s| s.workload.container_id.as_str())
            .collect();
        assert_eq!(got, want, "conformance: list_workloads filtered by {name}");
    }

    // Bytewise (context, agent, container) order over everything listed.
    let all = ok(
        "list all",
        store
            .list_workloads(&WorkloadFilter::default(), T, HOUR)
            .await,
    );
    for pair in all.windows(2) {
        let key = |s: &StoredWorkload| {
            (
                s.context_name.clone(),
                s.agent_id.to_string(),
                s.workload.container_id.clone(),
            )
        };
        assert!(
            key(&pair[0]) < key(&pair[1]),
            "conformance: list_workloads not ordered by (context, agent, container): {:?} before {:?}",
            key(&pair[0]),
            key(&pair[1])
        );
    }
}

pub(super) async fn retention_hides_stopped_workloads(store: &dyn Store, run: &Run) {
    let ctx = run.context("retention");
    let agent = run.agent("inv-ret");
    let live = docker(&run.container("r1"), "live", "x:1", WorkloadState::Running);
    let gone = docker(&run.container("r2"), "gone", "x:1", WorkloadState::Running);
    let mut r = report(&ctx, &agent);
    r.events = vec![
        event(WorkloadEventKind::Started, T, &live),
        event(WorkloadEventKind::Stopped, T, &gone),
    ];
    apply(store, "retention setup", r, T).await;

    let ctx_ref = ctx.as_str();
    let visible = |now: i64| async move {
        in_context(store, "retention listing", ctx_ref, now)
            .await
            .into_iter()
            .map(|s| s.workload.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        visible(T + HOUR_MS).await,
        vec!["live", "gone"],
        "conformance: a workload stopped exactly one retention ago is still listed"
    );
    assert_eq!(
        visible(T + HOUR_MS + 1).await,
        vec!["live"],
        "conformance: a workload stopped longer than the retention ago is hidden"
    );
    assert_eq!(
        visible(T + 1_000 * HOUR_MS).await,
        vec!["live"],
        "conformance: current workloads are never hidden"
    );
    let found = ok(
        "prefix after retention",
        store
            .find_workloads_by_prefix(&gone.container_id, T + HOUR_MS + 1, HOUR)
            .await,
    );
    assert!(
        found.is_empty(),
        "conformance: find_workloads_by_prefix must hide what the listing hides: {found:?}"
    );
    let long = ok(
        "longer retention",
        store
            .list_workloads(
                &WorkloadFilter {
                    context_name: Some(ctx.clone()),
                    ..WorkloadFilter::default()
                },
                T + HOUR_MS + 1,
                2 * HOUR,
            )
            .await,
    );
    assert_eq!(
        long.len(),
        2,
        "conformance: the retention is the caller's: a longer one shows more"
    );
}

pub(super) async fn counting(store: &dyn Store, run: &Run) {
    let ctx = run.context("count");
    let agent = run.agent("inv-count");
    let now = T + 10 * HOUR_MS;
    let before = ok("count before", store.count_workloads(now, HOUR).await);
    let later = now + 2 * HOUR_MS;
    let before_later = ok(
        "count later before",
        store.count_workloads(later, HOUR).await,
    );

    let mut r = report(&ctx, &agent);
    r.events = vec![
        event(
            WorkloadEventKind::Started,
            now,
            &docker(&run.container("c1"), "a", "x", WorkloadState::Running),
        ),
        event(
            WorkloadEventKind::Started,
            now,
            &docker(&run.container("c2"), "b", "x", WorkloadState::Paused),
        ),
        event(
            WorkloadEventKind::Stopped,
            now,
            &docker(&run.container("c3"), "c", "x", WorkloadState::Stopped),
        ),
    ];
    apply(store, "count setup", r, now).await;

    let after = ok("count after", store.count_workloads(now, HOUR).await);
    assert_eq!(
        (after.current, after.stopped),
        (before.current + 2, before.stopped + 1),
        "conformance: count_workloads after two current and one stopped"
    );
    let after_later = ok(
        "count later after",
        store.count_workloads(later, HOUR).await,
    );
    assert_eq!(
        (after_later.current, after_later.stopped),
        (before_later.current + 2, before_later.stopped),
        "conformance: count_workloads must not count what retention hides"
    );
}

pub(super) async fn prefix_lookup(store: &dyn Store, run: &Run) {
    let (ctx, ctx2) = (run.context("prefix-a"), run.context("prefix-b"));
    let agent = run.agent("inv-prefix");
    let w = |suffix: &str| {
        docker(
            &run.container(suffix),
            suffix,
            "x:1",
            WorkloadState::Running,
        )
    };
    let (p1, p2, q, underscore, plain) = (w("aaaa1"), w("aaaa2"), w("bbbb"), w("_x"), w("ax"));
    let mut r = report(&ctx, &agent);
    r.snapshot = Some(page(
        1,
        0,
        true,
        vec![
            p1.clone(),
            p2.clone(),
            q.clone(),
            underscore.clone(),
            plain.clone(),
        ],
    ));
    apply(store, "prefix setup", r, T).await;
    // The same container reported in a second context.
    let mut r = report(&ctx2, &agent);
    r.events = vec![event(WorkloadEventKind::Started, T, &q)];
    apply(store, "prefix second context", r, T + 5).await;

    let find = |prefix: String| async move {
        ok(
            "find_workloads_by_prefix",
            store.find_workloads_by_prefix(&prefix, T + 5, HOUR).await,
        )
        .into_iter()
        .map(|s| (s.workload.container_id, s.context_name))
        .collect::<Vec<_>>()
    };
    let cases: Vec<(String, Vec<(String, String)>)> = vec![
        (
            run.container("aaaa"),
            vec![
                (p1.container_id.clone(), ctx.clone()),
                (p2.container_id.clone(), ctx.clone()),
            ],
        ),
        (
            p1.container_id.clone(),
            vec![(p1.container_id.clone(), ctx.clone())],
        ),
        (
            run.container("bbbb"),
            vec![
                (q.container_id.clone(), ctx.clone()),
                (q.container_id.clone(), ctx2.clone()),
            ],
        ),
        // `_` is an ordinary character here, not a wildcard.
        (
            run.container("_"),
            vec![(underscore.container_id.clone(), ctx.clone())],
        ),
        (run.container("cccc"), vec![]),
        (format!("{}z", p1.container_id), vec![]),
    ];
    for (prefix, want) in cases {
        assert_eq!(
            find(prefix.clone()).await,
            want,
            "conformance: find_workloads_by_prefix({prefix})"
        );
    }
}
