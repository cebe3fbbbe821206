//! Applying reports: state changes, snapshot completion, events, atomicity,
//! agent status and pruning.

use super::*;

pub(super) async fn round_trip_and_state_changes(store: &dyn Store, run: &Run) {
    let ctx = run.context("rt");
    let agent = run.agent("inv-rt");
    let (id1, id2, id3) = (
        run.container("01"),
        run.container("02"),
        run.container("03"),
    );

    let mut web = docker(&id1, "web", "shop/web:1.2", WorkloadState::Running);
    web.labels.insert("app".into(), "web".into());
    web.compose = Some(Compose {
        project: "shop".into(),
        service: "web".into(),
        oneoff: false,
    });
    web.pid = Some(4242);
    web.ips = vec!["172.17.0.2".into()];
    web.started_at_ms = T - 60_000;
    let mut pay = cri(&id2, "pay", "payments", WorkloadState::Running);
    if let Some(pod) = pay.pod.as_mut() {
        pod.labels.insert("team".into(), "money".into());
        pod.annotations.insert("note".into(), "a=b".into());
        pod.ips = vec!["10.0.0.7".into()];
    }
    let mut done = docker(&id3, "job", "shop/job:1", WorkloadState::Stopped);
    done.finished_at_ms = T - 5_000;
    done.exit_code = Some(3);

    let runtime = RuntimeStatus {
        runtime: "docker".into(),
        endpoint: "/var/run/docker.sock".into(),
        version: "Docker Engine 20.10".into(),
        degraded: true,
        reason: "inspect of 1 container failed".into(),
    };
    let mut r = report(&ctx, &agent);
    r.snapshot = Some(page(
        7,
        0,
        true,
        vec![web.clone(), pay.clone(), done.clone()],
    ));
    r.runtime = Some(runtime.clone());
    r.dropped_events = 3;
    let applied = apply(store, "first snapshot", r, T).await;
    assert_eq!(
        applied,
        InventoryApplied {
            upserted: 3,
            events: 0,
            snapshot: SnapshotOutcome::Completed { marked_stopped: 0 },
        },
        "conformance: apply_inventory result of a one-page snapshot"
    );

    let listed = in_context(store, "list after first snapshot", &ctx, T).await;
    assert_eq!(
        ids(&listed),
        vec![id1.as_str(), id2.as_str(), id3.as_str()],
        "conformance: list_workloads order"
    );
    assert_eq!(
        listed[0],
        StoredWorkload {
            context_name: ctx.clone(),
            agent_id: agent.clone(),
            workload: web.clone(),
            first_seen_ms: T,
            last_seen_ms: T,
            stopped_at_ms: None,
        },
        "conformance: a snapshot record must round-trip whole"
    );
    assert_eq!(
        listed[1].workload, pay,
        "conformance: a CRI record must round-trip whole"
    );
    assert_eq!(
        (listed[2].stopped_at_ms, listed[2].workload.state),
        (Some(T - 5_000), WorkloadState::Stopped),
        "conformance: a stopped record stops at its finish time"
    );

    let inv = ok("agent_inventory", store.agent_inventory(&agent).await);
    let want = AgentInventory {
        agent_id: agent.clone(),
        context_name: ctx.clone(),
        runtime: runtime.clone(),
        dropped_events: 3,
        reported_at_ms: T,
    };
    assert_eq!(
        inv.as_ref(),
        Some(&want),
        "conformance: agent inventory round trip"
    );
    let all = ok(
        "list_agent_inventories",
        store.list_agent_inventories().await,
    );
    assert!(
        all.contains(&want),
        "conformance: list_agent_inventories must include the agent"
    );
    for pair in all.windows(2) {
        assert!(
            pair[0].agent_id.as_str() < pair[1].agent_id.as_str(),
            "conformance: list_agent_inventories not ordered by agent ID"
        );
    }

    // An update event replaces the record; the runtime status stays when a
    // report carries none.
    let mut web2 = web.clone();
    web2.labels.insert("version".into(), "2".into());
    let mut r = report(&ctx, &agent);
    r.events = vec![event(WorkloadEventKind::Updated, T + 900, &web2)];
    r.dropped_events = 5;
    let applied = apply(store, "update event", r, T + 1_000).await;
    assert_eq!(
        (applied.upserted, applied.events, applied.snapshot),
        (1, 1, SnapshotOutcome::None),
        "conformance: apply_inventory result of one event"
    );
    let got = one(store, "after update", &ctx, &id1, T + 1_000).await;
    assert_eq!(
        (got.workload, got.first_seen_ms, got.last_seen_ms),
        (web2.clone(), T, T + 1_000),
        "conformance: an update keeps first_seen and moves last_seen"
    );
    let inv = ok("agent_inventory", store.agent_inventory(&agent).await);
    assert_eq!(
        inv,
        Some(AgentInventory {
            dropped_events: 5,
            reported_at_ms: T + 1_000,
            ..want.clone()
        }),
        "conformance: a report without runtime status keeps the stored one"
    );

    // A stopped event stops at exactly its time, with the final record.
    let mut web_stopped = web2.clone();
    web_stopped.state = WorkloadState::Stopped;
    web_stopped.exit_code = Some(0);
    web_stopped.finished_at_ms = T + 1_900;
    let mut r = report(&ctx, &agent);
    r.events = vec![event(WorkloadEventKind::Stopped, T + 2_000, &web_stopped)];
    apply(store, "stopped event", r, T + 2_100).await;
    let got = one(store, "after stop", &ctx, &id1, T + 2_100).await;
    assert_eq!(
        (got.stopped_at_ms, got.workload),
        (Some(T + 2_000), web_stopped.clone()),
        "conformance: a stopped event sets stopped_at = at_ms and stores the record"
    );

    // A later snapshot listing it running again makes it current; the
    // unlisted pay workload is stopped at the snapshot's time.
    let mut r = report(&ctx, &agent);
    r.snapshot = Some(page(8, 0, true, vec![web2.clone()]));
    let applied = apply(store, "second snapshot", r, T + 3_000).await;
    assert_eq!(
        applied.snapshot,
        SnapshotOutcome::Completed { marked_stopped: 1 },
        "conformance: completing a snapshot stops the unlisted current workload (not the one stopped already)"
    );
    let got = one(store, "restarted", &ctx, &id1, T + 3_000).await;
    assert_eq!(
        (got.stopped_at_ms, got.workload.state),
        (None, WorkloadState::Running),
        "conformance: a running record clears the stopped state"
    );
    let got = one(store, "unlisted", &ctx, &id2, T + 3_000).await;
    assert_eq!(
        (got.stopped_at_ms, got.workload.state),
        (Some(T + 3_000), WorkloadState::Stopped),
        "conformance: an unlisted workload is stopped when the snapshot completes"
    );
    assert_eq!(
        got.workload.pod, pay.pod,
        "conformance: stopping by snapshot keeps the last record"
    );

    // Stopped records in a snapshot keep the earlier stop time.
    let mut pay_stopped = pay.clone();
    pay_stopped.state = WorkloadState::Stopped;
    let mut r = report(&ctx, &agent);
    r.snapshot = Some(page(9, 0, true, vec![web2.clone(), pay_stopped, done]));
    apply(store, "third snapshot", r, T + 4_000).await;
    let got = one(store, "still stopped", &ctx, &id2, T + 4_000).await;
    assert_eq!(
        got.stopped_at_ms,
        Some(T + 3_000),
        "conformance: a stopped record must not move an earlier stop time"
    );
    let got = one(store, "job", &ctx, &id3, T + 4_000).await;
    assert_eq!(
        (got.stopped_at_ms, got.last_seen_ms),
        (Some(T - 5_000), T + 4_000),
        "conformance: a listed stopped workload keeps its stop time and is seen"
    );

    // But a stopped event is the agent's word on when: it overrides.
    let mut r = report(&ctx, &agent);
    r.events = vec![event(WorkloadEventKind::Stopped, T + 3_500, &pay)];
    apply(store, "late stopped event", r, T + 4_500).await;
    let got = one(store, "stop time from event", &ctx, &id2, T + 4_500).await;
    assert_eq!(
        (got.stopped_at_ms, got.workload.state),
        (Some(T + 3_500), WorkloadState::Stopped),
        "conformance: a stopped event sets the stop time even on a stopped workload"
    );

    // An event whose record says stopped stops too, at its finish time.
    let mut odd = web2.clone();
    odd.state = WorkloadState::Stopped;
    odd.finished_at_ms = T + 4_800;
    let mut r = report(&ctx, &agent);
    r.events = vec![event(WorkloadEventKind::Updated, T + 5_000, &odd)];
    apply(store, "updated to stopped", r, T + 5_000).await;
    let got = one(store, "updated to stopped", &ctx, &id1, T + 5_000).await;
    assert_eq!(
        got.stopped_at_ms,
        Some(T + 4_800),
        "conformance: an updated event with a stopped record stops the workload"
    );
}

pub(super) async fn snapshot_completion(store: &dyn Store, run: &Run) {
    let ctx = run.context("snap");
    let other_ctx = run.context("snap-other");
    let agent = run.agent("inv-snap");
    let neighbour = run.agent("inv-snap-neighbour");
    let w = |suffix: &str| {
        docker(
            &run.container(suffix),
            suffix,
            "busybox:1",
            WorkloadState::Running,
        )
    };
    let (a, b, c, d, e) = (w("sa"), w("sb"), w("sc"), w("sd"), w("se"));
    let id = |w: &Workload| w.container_id.clone();

    // Neighbours: the same agent in another context, another agent in this
    // context. No snapshot of (agent, ctx) may touch them.
    let mut r = report(&other_ctx, &agent);
    r.snapshot = Some(page(1, 0, true, vec![a.clone()]));
    apply(store, "other context", r, T).await;
    let mut r = report(&ctx, &neighbour);
    r.snapshot = Some(page(1, 0, true, vec![a.clone()]));
    apply(store, "other agent", r, T).await;

    let snap = |id: u64, n: u32, last: bool, ws: &[&Workload]| {
        let mut r = report(&ctx, &agent);
        r.snapshot = Some(page(id, n, last, ws.iter().map(|w| (*w).clone()).collect()));
        r
    };
    let started = |w: &Workload, at: i64| {
        let mut r = report(&ctx, &agent);
        r.events = vec![event(WorkloadEventKind::Started, at, w)];
        r
    };

    apply(store, "snapshot 10", snap(10, 0, true, &[&a, &b, &c]), T).await;
    apply(store, "event D", started(&d, T + 100), T + 100).await;
    let applied = apply(
        store,
        "snapshot 11 page 0",
        snap(11, 0, false, &[&a]),
        T + 200,
    )
    .await;
    assert_eq!(
        applied.snapshot,
        SnapshotOutcome::Page,
        "conformance: a page that is not the last"
    );
    // E starts while the snapshot is being sent: the agent listed its
    // containers before E existed.
    apply(store, "event E", started(&e, T + 250), T + 250).await;
    let applied = apply(
        store,
        "snapshot 11 page 1",
        snap(11, 1, true, &[&b]),
        T + 300,
    )
    .await;
    assert_eq!(
        applied.snapshot,
        SnapshotOutcome::Completed { marked_stopped: 2 },
        "conformance: completing snapshot 11 stops C (listed before) and D (seen before it began)"
    );
    assert_eq!(
        states(store, "after snapshot 11", &ctx, &agent, T + 300).await,
        vec![
            (id(&a), false),
            (id(&b), false),
            (id(&c), true),
            (id(&d), true),
            (id(&e), false),
        ],
        "conformance: stopped set after snapshot 11 (E, seen after it began, stays)"
    );
    let neighbours = in_context(store, "other agent", &ctx, T + 300)
        .await
        .into_iter()
        .filter(|s| s.agent_id == neighbour)
        .collect::<Vec<_>>();
    assert_eq!(
        neighbours
            .iter()
            .map(|s| s.stopped_at_ms)
            .collect::<Vec<_>>(),
        vec![None],
        "conformance: another agent's workloads are not its snapshot's business"
    );
    assert_eq!(
        states(store, "other context", &other_ctx, &agent, T + 300).await,
        vec![(id(&a), false)],
        "conformance: the agent's workloads in another context are not either"
    );

    // A missing page: nothing is stopped.
    apply(
        store,
        "snapshot 12 page 0",
        snap(12, 0, false, &[&a]),
        T + 400,
    )
    .await;
    let applied = apply(store, "snapshot 12 page 2", snap(12, 2, true, &[]), T + 500).await;
    assert_eq!(
        applied.snapshot,
        SnapshotOutcome::Incomplete { missing_pages: 1 },
        "conformance: a last page after a gap"
    );
    // A page of another snapshot abandons the one in progress, so the
    // abandoned snapshot's late last page cannot complete it.
    apply(
        store,
        "snapshot 13 page 0",
        snap(13, 0, false, &[&a, &b]),
        T + 600,
    )
    .await;
    apply(
        store,
        "snapshot 14 page 0",
        snap(14, 0, false, &[&a]),
        T + 700,
    )
    .await;
    let applied = apply(
        store,
        "snapshot 13 page 1",
        snap(13, 1, true, &[&e]),
        T + 800,
    )
    .await;
    assert_eq!(
        applied.snapshot,
        SnapshotOutcome::Incomplete { missing_pages: 1 },
        "conformance: the last page of an abandoned snapshot"
    );
    assert_eq!(
        states(store, "after incomplete snapshots", &ctx, &agent, T + 800).await,
        vec![
            (id(&a), false),
            (id(&b), false),
            (id(&c), true),
            (id(&d), true),
            (id(&e), false),
        ],
        "conformance: incomplete snapshots stop nothing"
    );

    // A page sent twice (a retry) counts once and completes normally.
    apply(
        store,
        "snapshot 15 page 0",
        snap(15, 0, false, &[&a, &b]),
        T + 900,
    )
    .await;
    apply(
        store,
        "snapshot 15 page 0 again",
        snap(15, 0, false, &[&a, &b]),
        T + 950,
    )
    .await;
    let applied = apply(
        store,
        "snapshot 15 page 1",
        snap(15, 1, true, &[&e]),
        T + 1_000,
    )
    .await;
    assert_eq!(
        applied.snapshot,
        SnapshotOutcome::Completed { marked_stopped: 0 },
        "conformance: a retried page"
    );

    // A stopped record in a snapshot counts as stopped; a restarted one as
    // current.
    let mut b_stopped = b.clone();
    b_stopped.state = WorkloadState::Stopped;
    apply(
        store,
        "snapshot 16",
        snap(16, 0, true, &[&a, &b_stopped, &c, &e]),
        T + 1_100,
    )
    .await;
    assert_eq!(
        states(store, "after snapshot 16", &ctx, &agent, T + 1_100).await,
        vec![
            (id(&a), false),
            (id(&b), true),
            (id(&c), false),
            (id(&d), true),
            (id(&e), false),
        ],
        "conformance: snapshot 16 (B listed stopped, C listed running)"
    );

    // An empty snapshot says nothing runs here any more.
    let applied = apply(store, "empty snapshot", snap(17, 0, true, &[]), T + 1_200).await;
    assert_eq!(
        applied.snapshot,
        SnapshotOutcome::Completed { marked_stopped: 3 },
        "conformance: an empty snapshot stops every current workload"
    );
    assert!(
        states(store, "after empty snapshot", &ctx, &agent, T + 1_200)
            .await
            .iter()
            .all(|(_, stopped)| *stopped),
        "conformance: nothing current after an empty snapshot"
    );
}

pub(super) async fn event_history(store: &dyn Store, run: &Run) {
    let (ctx, agent, other) = (
        run.context("events"),
        run.agent("inv-ev"),
        run.agent("inv-ev-2"),
    );
    let mut w = docker(&run.container("e1"), "w", "x:1", WorkloadState::Running);
    w.ips = vec!["10.1.0.5".into()];
    let bystander = docker(&run.container("e2"), "b", "x:1", WorkloadState::Running);

    let mut r = report(&ctx, &agent);
    r.events = vec![
        event(WorkloadEventKind::Started, T + 300, &w),
        event(WorkloadEventKind::Started, T + 300, &bystander),
    ];
    apply(store, "events 1", r, T + 1_000).await;
    let mut w2 = w.clone();
    w2.ips = vec!["10.1.0.6".into()];
    let mut r = report(&ctx, &agent);
    r.events = vec![
        // Reported late, happened first.
        event(WorkloadEventKind::Updated, T + 100, &w2),
        event(WorkloadEventKind::Updated, T + 400, &w2),
    ];
    apply(store, "events 2", r, T + 2_000).await;
    let mut r = report(&ctx, &other);
    r.events = vec![event(WorkloadEventKind::Stopped, T + 500, &w)];
    apply(store, "events 3", r, T + 3_000).await;

    let got = ok(
        "workload_events",
        store.workload_events(&w.container_id).await,
    );
    let summary: Vec<(WorkloadEventKind, i64, i64, String, Vec<String>)> = got
        .iter()
        .map(|e| {
            (
                e.kind,
                e.at_ms,
                e.received_ms,
                e.agent_id.to_string(),
                e.workload.ips.clone(),
            )
        })
        .collect();
    let ip = |s: &str| vec![s.to_string()];
    assert_eq!(
        summary,
        vec![
            (
                WorkloadEventKind::Updated,
                T + 100,
                T + 2_000,
                agent.to_string(),
                ip("10.1.0.6")
            ),
            (
                WorkloadEventKind::Started,
                T + 300,
                T + 1_000,
                agent.to_string(),
                ip("10.1.0.5")
            ),
            (
                WorkloadEventKind::Updated,
                T + 400,
                T + 2_000,
                agent.to_string(),
                ip("10.1.0.6")
            ),
            (
                WorkloadEventKind::Stopped,
                T + 500,
                T + 3_000,
                other.to_string(),
                ip("10.1.0.5")
            ),
        ],
        "conformance: workload_events ordered by at_ms, from every agent, with full records"
    );
    assert!(
        got.iter().all(|e| e.context_name == ctx),
        "conformance: events keep their context"
    );
    assert_eq!(
        ok(
            "events of prefix",
            store.workload_events(&run.container("e")).await
        ),
        vec![],
        "conformance: workload_events takes an exact container ID"
    );
}

/// Concurrent readers see every report whole or not at all.
pub(super) async fn readers_see_whole_reports(store: &dyn Store, run: &Run) {
    const CONTAINERS: usize = 40;
    const REPORTS: usize = 12;
    let ctx = run.context("atomic");
    let agent = run.agent("inv-atomic");
    let generation = |k: usize| -> Vec<Workload> {
        (0..CONTAINERS)
            .map(|i| {
                let mut w = docker(
                    &run.container(&format!("t{i:03}")),
                    "t",
                    "x:1",
                    WorkloadState::Running,
                );
                w.labels.insert("gen".into(), k.to_string());
                w
            })
            .collect()
    };
    let writer = async {
        for k in 0..REPORTS {
            let ws = generation(k);
            let mut r = report(&ctx, &agent);
            r.snapshot = Some(page(k as u64 + 1, 0, true, ws.clone()));
            r.events = ws
                .iter()
                .map(|w| event(WorkloadEventKind::Updated, T + k as i64, w))
                .collect();
            r.dropped_events = k as u64;
            apply(store, "atomic writer", r, T + k as i64).await;
            tokio::task::yield_now().await;
        }
    };
    let reader = async {
        let mut seen = 0;
        for _ in 0..REPORTS * 3 {
            let listed = in_context(store, "atomic reader", &ctx, T).await;
            let gens: std::collections::BTreeSet<&str> = listed
                .iter()
                .filter_map(|s| s.workload.labels.get("gen").map(String::as_str))
                .collect();
            assert!(
                listed.is_empty() || (listed.len() == CONTAINERS && gens.len() == 1),
                "conformance: a reader saw part of a report: {} workloads of generations {gens:?}",
                listed.len()
            );
            seen += usize::from(!listed.is_empty());
            tokio::task::yield_now().await;
        }
        seen
    };
    let ((), _) = tokio::join!(writer, reader);
    let listed = in_context(store, "atomic final", &ctx, T).await;
    assert_eq!(listed.len(), CONTAINERS, "conformance: atomic final count");
    let last_gen = (REPORTS - 1).to_string();
    assert!(
        listed
            .iter()
            .all(|s| s.workload.labels.get("gen") == Some(&last_gen)),
        "conformance: the last report wins"
    );
    let events = ok(
        "atomic events",
        store.workload_events(&run.container("t000")).await,
    );
    assert_eq!(
        events.len(),
        REPORTS,
        "conformance: one event per report for t000"
    );
    let inv = ok("atomic inventory", store.agent_inventory(&agent).await);
    assert_eq!(
        inv.map(|i| i.dropped_events),
        Some(REPORTS as u64 - 1),
        "conformance: the agent status of the last report"
    );
}

pub(super) async fn agent_inventory_goes_with_the_agent(store: &dyn Store, run: &Run) {
    let agent = run.agent("inv-gone");
    ok(
        "upsert agent",
        store
            .upsert_agent(&AgentRecord {
                spiffe_id: agent.clone(),
                serial: "01".into(),
                expires_at: 10,
                attested_at: 1,
                last_seen: 1,
                banned: false,
            })
            .await,
    );
    let r = report(&run.context("gone"), &agent);
    apply(store, "status only", r, T).await;
    let inv = ok("agent_inventory", store.agent_inventory(&agent).await);
    assert_eq!(
        inv.map(|i| (i.context_name, i.runtime)),
        Some((run.context("gone"), RuntimeStatus::default())),
        "conformance: an agent that never sent a runtime status has an empty one"
    );
    assert!(ok("delete agent", store.delete_agent(&agent).await));
    assert_eq!(
        ok("agent_inventory", store.agent_inventory(&agent).await),
        None,
        "conformance: delete_agent must remove the agent's inventory status"
    );
    assert_eq!(
        ok(
            "unknown agent",
            store.agent_inventory(&run.agent("nobody")).await
        ),
        None
    );
}

pub(super) async fn pruning(store: &dyn Store, run: &Run) {
    let ctx = run.context("prune");
    let agent = run.agent("inv-prune");
    let t = T + 100 * HOUR_MS;
    let keep = docker(&run.container("p1"), "keep", "x:1", WorkloadState::Running);
    let old = docker(&run.container("p2"), "old", "x:1", WorkloadState::Running);
    let late = docker(&run.container("p3"), "late", "x:1", WorkloadState::Running);
    let mut r = report(&ctx, &agent);
    r.events = vec![
        event(WorkloadEventKind::Started, t, &keep),
        event(WorkloadEventKind::Stopped, t, &old),
    ];
    apply(store, "prune setup", r, t).await;
    let mut r = report(&ctx, &agent);
    r.events = vec![event(WorkloadEventKind::Started, t + 10_000, &late)];
    apply(store, "prune setup 2", r, t + 10_000).await;

    let pruned = ok("prune", store.prune_workloads(t + 5_000).await);
    assert!(
        pruned.workloads >= 1 && pruned.events >= 2,
        "conformance: prune_workloads({}) removed {pruned:?}, expected at least this check's stopped workload and two events",
        t + 5_000
    );
    let everything = ok(
        "list after prune",
        store
            .list_workloads(
                &WorkloadFilter {
                    context_name: Some(ctx.clone()),
                    ..WorkloadFilter::default()
                },
                t,
                Duration::MAX,
            )
            .await,
    );
    assert_eq!(
        ids(&everything),
        vec![keep.container_id.as_str(), late.container_id.as_str()],
        "conformance: pruning deletes stopped workloads only"
    );
    assert_eq!(
        ok(
            "events kept",
            store.workload_events(&keep.container_id).await
        ),
        vec![],
        "conformance: pruning deletes events received before the cut"
    );
    assert_eq!(
        ok(
            "events late",
            store.workload_events(&late.container_id).await
        )
        .len(),
        1,
        "conformance: pruning keeps events received after the cut"
    );
    let again = ok("prune again", store.prune_workloads(t + 5_000).await);
    assert_eq!(
        again,
        crate::PrunedWorkloads::default(),
        "conformance: pruning twice with the same cut deletes nothing more"
    );
}
