//! Tests of report validation, workload queries and the pruner.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hallmark_core::{Confidence, RuntimeSource, SpiffeId, Workload, WorkloadState};
use hallmark_proto::hallmark as pb;
use hallmark_store::{
    InventoryReport, SqliteStore, StateFilter, Store, StoredWorkload, WorkloadEvent,
    WorkloadEventKind, WorkloadFilter,
};
use tokio::sync::watch;

use crate::metrics::ServerMetrics;

use super::*;

fn agent() -> SpiffeId {
    SpiffeId::new("spiffe://example.org/hallmark/agent/n1").unwrap()
}

fn record(id: &str) -> pb::WorkloadRecord {
    let mut w = Workload::partial(id, RuntimeSource::Docker, "");
    w.confidence = Confidence::Full;
    w.state = WorkloadState::Running;
    pb::WorkloadRecord::from(&w)
}

fn good_report() -> pb::InventoryReport {
    pb::InventoryReport {
        context_name: "prod-eu.1_a".into(),
        snapshot_id: 9,
        page: 0,
        last_page: true,
        workloads: vec![record("c1"), record("c2")],
        events: vec![pb::WorkloadEvent {
            kind: "stopped".into(),
            at_ms: 5,
            record: Some(record("c3")),
        }],
        runtime: Some(pb::RuntimeStatus {
            runtime: "docker".into(),
            endpoint: "/var/run/docker.sock".into(),
            version: "20.10".into(),
            degraded: false,
            reason: String::new(),
        }),
        dropped_events: 2,
    }
}

#[test]
fn a_good_report_converts_whole() {
    let r = parse_report(&agent(), good_report()).unwrap();
    assert_eq!(r.context_name, "prod-eu.1_a");
    let snap = r.snapshot.unwrap();
    assert_eq!((snap.snapshot_id, snap.page, snap.last_page), (9, 0, true));
    assert_eq!(snap.workloads.len(), 2);
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kind, WorkloadEventKind::Stopped);
    assert_eq!(r.events[0].workload.container_id, "c3");
    assert_eq!(r.runtime.unwrap().endpoint, "/var/run/docker.sock");
    assert_eq!(r.dropped_events, 2);

    let events_only = pb::InventoryReport {
        snapshot_id: 0,
        workloads: vec![],
        runtime: None,
        ..good_report()
    };
    let r = parse_report(&agent(), events_only).unwrap();
    assert!(r.snapshot.is_none() && r.runtime.is_none());
}

#[test]
fn bad_reports_name_the_field_and_rule() {
    type Mutate = Box<dyn Fn(&mut pb::InventoryReport)>;
    let cases: Vec<(Mutate, &str, &[&str])> = vec![
        (
            Box::new(|r| r.context_name.clear()),
            "context_name",
            &["context_name ``", "1 to 63 characters"],
        ),
        (
            Box::new(|r| r.context_name = "a".repeat(64)),
            "context_name",
            &["1 to 63 characters of [A-Za-z0-9._-]"],
        ),
        (
            Box::new(|r| r.context_name = "prod/eu".into()),
            "context_name",
            &["context_name `prod/eu`"],
        ),
        (
            Box::new(|r| r.context_name = "x".repeat(5000) + "/"),
            "context_name",
            &["xxxx...`"],
        ),
        (
            Box::new(|r| r.workloads = vec![record("c"); 1001]),
            "too_many_workloads",
            &["1001 workloads", "limit is 1000"],
        ),
        (
            Box::new(|r| {
                r.events = vec![
                    pb::WorkloadEvent {
                        kind: "started".into(),
                        at_ms: 1,
                        record: Some(record("c")),
                    };
                    1001
                ]
            }),
            "too_many_events",
            &["1001 events", "limit is 1000"],
        ),
        (
            Box::new(|r| r.snapshot_id = 0),
            "workloads_without_snapshot",
            &["snapshot_id is 0"],
        ),
        (
            Box::new(|r| r.workloads[1].state = "exploded".into()),
            "bad_workload",
            &["workloads[1]", "`c2`", "field `state`"],
        ),
        (
            Box::new(|r| r.workloads[0].container_id = "a/b".into()),
            "bad_workload",
            &["workloads[0]", "field `container_id`"],
        ),
        (
            Box::new(|r| r.events[0].kind = "paused".into()),
            "bad_event",
            &["events[0]: kind `paused`", "started, updated, stopped"],
        ),
        (
            Box::new(|r| r.events[0].at_ms = 0),
            "bad_event",
            &["events[0]: at_ms 0", "positive"],
        ),
        (
            Box::new(|r| r.events[0].record = None),
            "bad_event",
            &["events[0]: record is missing"],
        ),
        (
            Box::new(|r| {
                if let Some(rec) = r.events[0].record.as_mut() {
                    rec.source = "lxc".into();
                }
            }),
            "bad_event",
            &["events[0]", "`c3`", "field `source`"],
        ),
        (
            Box::new(|r| {
                if let Some(rt) = r.runtime.as_mut() {
                    rt.runtime = "podman".into();
                }
            }),
            "bad_runtime",
            &["runtime.runtime `podman`"],
        ),
        (
            Box::new(|r| {
                if let Some(rt) = r.runtime.as_mut() {
                    rt.reason = "r".repeat(2000);
                }
            }),
            "bad_runtime",
            &["runtime.reason is 2000 bytes", "limit is 1024"],
        ),
    ];
    for (mutate, reason, needles) in cases {
        let mut r = good_report();
        mutate(&mut r);
        let e = parse_report(&agent(), r).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.reason(), reason, "{msg}");
        for n in needles {
            assert!(msg.contains(n), "want `{n}` in: {msg}");
        }
        assert!(msg.len() < 300, "message too long: {msg}");
    }
}

#[test]
fn filters_parse_or_name_the_field() {
    let node = |n: &str| {
        if n.contains('/') {
            Err("must not contain `/`".to_string())
        } else {
            Ok(SpiffeId::new(&format!("spiffe://example.org/hallmark/agent/{n}")).unwrap())
        }
    };
    let f = parse_filter(
        &pb::ListWorkloadsRequest {
            context_name: "prod".into(),
            node: "n1".into(),
            namespace: "payments".into(),
            image: "busybox:1".into(),
            labels: vec!["app=web".into(), "tier".into()],
            state: "current".into(),
        },
        node,
    )
    .unwrap();
    assert_eq!(f.agent_id, Some(agent()));
    assert_eq!(f.labels.len(), 2);
    assert_eq!(f.state, Some(StateFilter::Current));
    let f = parse_filter(
        &pb::ListWorkloadsRequest {
            node: agent().to_string(),
            ..Default::default()
        },
        node,
    )
    .unwrap();
    assert_eq!(f.agent_id, Some(agent()));
    assert_eq!(
        parse_filter(&pb::ListWorkloadsRequest::default(), node).unwrap(),
        WorkloadFilter::default()
    );

    let cases: Vec<(pb::ListWorkloadsRequest, &[&str])> = vec![
        (
            pb::ListWorkloadsRequest {
                state: "gone".into(),
                ..Default::default()
            },
            &["state: state `gone` is not one of current"],
        ),
        (
            pb::ListWorkloadsRequest {
                labels: vec!["a=b".into(), "=x".into()],
                ..Default::default()
            },
            &["labels[1]: label `=x` has an empty key"],
        ),
        (
            pb::ListWorkloadsRequest {
                image: "a b".into(),
                ..Default::default()
            },
            &["image: image `a b`"],
        ),
        (
            pb::ListWorkloadsRequest {
                context_name: "a b".into(),
                ..Default::default()
            },
            &["context_name filter: context_name `a b`"],
        ),
        (
            pb::ListWorkloadsRequest {
                node: "spiffe://Bad/x".into(),
                ..Default::default()
            },
            &["node `spiffe://Bad/x`"],
        ),
        (
            pb::ListWorkloadsRequest {
                node: "a/b".into(),
                ..Default::default()
            },
            &["node `a/b`", "must not contain `/`"],
        ),
    ];
    for (req, needles) in cases {
        let msg = parse_filter(&req, node).unwrap_err().to_string();
        for n in needles {
            assert!(msg.contains(n), "want `{n}` in: {msg}");
        }
    }
}

fn stored(id: &str, ctx: &str, last_seen_ms: i64, stopped: bool) -> StoredWorkload {
    let mut w = Workload::partial(id, RuntimeSource::Docker, "");
    w.state = WorkloadState::Running;
    StoredWorkload {
        context_name: ctx.into(),
        agent_id: agent(),
        workload: w,
        first_seen_ms: 0,
        last_seen_ms,
        stopped_at_ms: stopped.then_some(last_seen_ms),
    }
}

#[test]
fn picking_a_workload_by_prefix() {
    let err = pick_workload("abcd", vec![]).unwrap_err();
    assert!(matches!(err, QueryError::NotFound(_)), "{err}");

    let (one, others) = pick_workload("abcd", vec![stored("abcd1", "p", 1, false)]).unwrap();
    assert_eq!(one.workload.container_id, "abcd1");
    assert!(others.is_empty());

    let err = pick_workload(
        "abcd",
        vec![
            stored("abcd1", "p", 1, false),
            stored("abcd2", "p", 1, false),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`abcd` is ambiguous: it matches abcd1, abcd2; give more characters"),
        "{err}"
    );

    // An exact ID wins over longer IDs it is a prefix of.
    let (one, _) = pick_workload(
        "abcd1",
        vec![
            stored("abcd1", "p", 1, false),
            stored("abcd12", "p", 1, false),
        ],
    )
    .unwrap();
    assert_eq!(one.workload.container_id, "abcd1");

    // One container under two contexts: the current, most recent copy.
    let (one, others) = pick_workload(
        "abcd",
        vec![
            stored("abcd1", "a", 50, true),
            stored("abcd1", "b", 10, false),
            stored("abcd1", "c", 20, false),
        ],
    )
    .unwrap();
    assert_eq!(one.context_name, "c");
    assert_eq!(others.len(), 2);
    let header = also_reported_by(&others);
    assert!(
        header.contains("b spiffe://example.org/hallmark/agent/n1")
            && header.contains("a spiffe://"),
        "{header}"
    );

    let many: Vec<StoredWorkload> = (0..15)
        .map(|i| stored(&format!("abcd{i:02}"), "p", 1, false))
        .collect();
    let err = pick_workload("abcd", many).unwrap_err().to_string();
    assert!(err.contains("and 5 more"), "{err}");
}

#[test]
fn container_prefixes() {
    for good in ["abcd", "0123456789ab", "a.b_c-d"] {
        validate_container_prefix(good).unwrap();
    }
    for bad in ["abc", "", "ab/cd", "abcd%", &"a".repeat(129)] {
        let msg = validate_container_prefix(bad).unwrap_err().to_string();
        assert!(msg.contains("at least 4 characters"), "{msg}");
    }
}

#[test]
fn prune_period_is_a_bounded_quarter() {
    let ms = Duration::from_millis;
    assert_eq!(prune_period(ms(100)), ms(250));
    assert_eq!(prune_period(ms(4_000)), ms(1_000));
    assert_eq!(
        prune_period(Duration::from_secs(3600)),
        Duration::from_secs(60)
    );
}

/// Real time (sqlx's pool timeouts do not survive paused time), but
/// the pruner's notion of now comes from the injected clock.
#[tokio::test]
async fn the_pruner_deletes_what_ages_out() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let mut stopped = Workload::partial("gone1", RuntimeSource::Docker, "");
    stopped.state = WorkloadState::Stopped;
    let report = InventoryReport {
        agent_id: agent(),
        context_name: "p".into(),
        snapshot: None,
        events: vec![WorkloadEvent {
            kind: WorkloadEventKind::Stopped,
            at_ms: 10_000,
            workload: stopped,
        }],
        runtime: None,
        dropped_events: 0,
    };
    store.apply_inventory(&report, 10_000).await.unwrap();

    // A 1 s retention: the pruner runs every 250 ms.
    let retention = Duration::from_secs(1);
    let now = Arc::new(AtomicI64::new(10_000));
    let clock = {
        let now = now.clone();
        move || now.load(Ordering::SeqCst)
    };
    let metrics = Arc::new(ServerMetrics::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(prune_loop(
        store.clone(),
        retention,
        clock,
        metrics.clone(),
        stop_rx,
    ));
    let stored = || async {
        store
            .list_workloads(&WorkloadFilter::default(), 0, Duration::MAX)
            .await
            .unwrap()
            .len()
    };
    // At the window's edge, several passes delete nothing.
    now.store(11_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(stored().await, 1);
    assert_eq!(metrics.workloads_pruned.get(), 0);
    // Past it, the next pass deletes the workload and its event.
    now.store(11_001, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stored().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pruner did not delete the expired workload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.workload_events("gone1").await.unwrap().is_empty());
    assert_eq!(metrics.workloads_pruned.get(), 1);

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}
