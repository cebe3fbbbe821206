#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

//! The peer map's "who holds it now" rules on a real ownership index, and
//! the peer map and the enforcement switch reaching an agent's Sync stream
//! over mTLS on a real server (SQLite), with the inventory reported
//! through the node API as an agent reports it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hallmark_core::{Confidence, RuntimeSource, Workload, WorkloadState};
use hallmark_flows::{Evidence, EvidenceKind, Owner, OwnershipIndex, OwnershipKey};
use hallmark_proto::hallmark as pb;
use tonic::{Code, Streaming};

use super::held_now;
use crate::policy::versions::tests::{metric, next, Harness};

// ---------------------------------------------------------------- held_now

const IP: &str = "10.0.0.5";

fn workload(c: char) -> Owner {
    Owner::Workload {
        context: "prod".into(),
        node: "n1".into(),
        container_id: c.to_string().repeat(64),
    }
}

/// An index with a one-second heartbeat (so `max_gap` 2 s) and 500 ms of
/// clock skew, holding `evidence` for [`IP`].
fn index(evidence: &[(char, i64, EvidenceKind)]) -> OwnershipIndex {
    let mut index = OwnershipIndex::new(1_000, 500);
    for &(c, at_ms, kind) in evidence {
        index.record(&Evidence {
            key: OwnershipKey::ip(IP.parse().unwrap()),
            owner: workload(c),
            at_ms,
            kind,
        });
    }
    index
}

/// Who holds [`IP`] at `now`, by container letter, and when that may
/// change next.
fn holder(index: &OwnershipIndex, now: i64) -> (Option<char>, Option<i64>) {
    let ranges = index.ranges(OwnershipKey::ip(IP.parse().unwrap()));
    let answer = held_now(&ranges, now, index.max_gap_ms(), index.skew_ms());
    let owner = answer.owner.map(|o| match index.owners().get(o).unwrap() {
        Owner::Workload { container_id, .. } => container_id.chars().next().unwrap(),
        Owner::Node { .. } => 'N',
    });
    (owner, answer.next_change_ms)
}

use EvidenceKind::{Heartbeat, Started, Stopped};

#[test]
fn an_open_range_holds_until_a_heartbeat_is_overdue() {
    let i = index(&[
        ('b', 0, Started),
        ('b', 1_000, Heartbeat),
        ('b', 2_000, Heartbeat),
    ]);
    assert_eq!(holder(&i, 100), (Some('b'), Some(4_001)));
    assert_eq!(
        holder(&i, 2_500).0,
        Some('b'),
        "the next heartbeat may be on its way"
    );
    assert_eq!(holder(&i, 4_000).0, Some('b'));
    assert_eq!(
        holder(&i, 4_001),
        (None, None),
        "two heartbeats missed: nobody's"
    );
}

#[test]
fn a_stopped_owner_holds_nothing_and_blocks_others_within_the_skew() {
    let i = index(&[
        ('b', 0, Started),
        ('b', 1_000, Heartbeat),
        ('b', 3_000, Stopped),
    ]);
    assert_eq!(holder(&i, 2_000).0, Some('b'));
    assert_eq!(holder(&i, 3_200), (None, Some(3_501)), "just stopped");
    assert_eq!(holder(&i, 3_600), (None, None));
}

#[test]
fn ip_reuse_is_absent_while_ambiguous_then_the_new_owner_never_the_old() {
    let i = index(&[
        ('b', 0, Started),
        ('b', 1_000, Heartbeat),
        ('b', 3_000, Stopped),
        ('d', 3_100, Started),
    ]);
    assert_eq!(holder(&i, 2_000).0, Some('b'), "before the change");
    assert_eq!(holder(&i, 2_900).0, None, "b's stop is within the skew");
    for now in [3_000, 3_050, 3_100, 3_300, 3_500] {
        assert_eq!(holder(&i, now).0, None, "ambiguous at {now}");
    }
    assert_eq!(
        holder(&i, 3_300).1,
        Some(3_501),
        "look again when b's stop leaves the skew"
    );
    for now in [3_501, 4_000, 5_100] {
        assert_eq!(holder(&i, now).0, Some('d'), "at {now}");
    }
}

#[test]
fn a_new_owner_without_the_old_ones_stop_waits_for_the_old_range_to_go_stale() {
    // b's stop event was lost: its open range may still be b's until two
    // heartbeats are missed.
    let i = index(&[
        ('b', 0, Started),
        ('b', 1_000, Heartbeat),
        ('d', 1_500, Started),
    ]);
    assert_eq!(holder(&i, 1_600), (None, Some(3_001)));
    assert_eq!(holder(&i, 3_001).0, Some('d'));
}

#[test]
fn evidence_from_beyond_the_skew_is_not_yet_an_owner() {
    let i = index(&[('d', 10_000, Started)]);
    assert_eq!(holder(&i, 5_000), (None, Some(9_500)));
    assert_eq!(
        holder(&i, 9_600).0,
        Some('d'),
        "within the skew of its start"
    );
}

// ------------------------------------------------ on a real Sync stream

/// `{agent}`: the agent's SPIFFE ID (its node is in `hosts`).
const POLICY: &str = "\
groups:
  web:
    - labels: {app: web}
  db:
    - labels: {app: db}
  hosts:
    - spiffe_id: {agent}
rules:
  - name: web-to-db
    from: [web]
    to: [db]
    protocol: tcp
    ports: [\"5432\"]
    action: allow
default: deny
";

fn now_ms() -> i64 {
    hallmark_core::time::unix_millis(std::time::SystemTime::now())
}

fn event(kind: &str, c: char, app: &str, ip: &str, at_ms: i64) -> pb::WorkloadEvent {
    let mut w = Workload::partial(&c.to_string().repeat(64), RuntimeSource::Docker, "");
    w.confidence = Confidence::Full;
    w.name = app.into();
    w.image = "busybox:1".into();
    w.state = if kind == "stopped" {
        WorkloadState::Stopped
    } else {
        WorkloadState::Running
    };
    w.ips = vec![ip.into()];
    w.labels = [("app".to_string(), app.to_string())].into();
    w.selectors = vec![format!("docker:label:app:{app}")];
    pb::WorkloadEvent {
        kind: kind.into(),
        at_ms,
        record: Some(pb::WorkloadRecord::from(&w)),
    }
}

fn report(events: Vec<pb::WorkloadEvent>) -> pb::InventoryReport {
    pb::InventoryReport {
        context_name: "prod".into(),
        events,
        ..Default::default()
    }
}

/// The peer map an update carries, if it carries one.
fn peers_of(u: &pb::SyncUpdate) -> Option<Vec<(IpAddr, Vec<String>)>> {
    u.peer_addresses_sent.then(|| {
        u.peer_addresses
            .iter()
            .map(|p| (p.ip.parse().unwrap(), p.groups.clone()))
            .collect()
    })
}

/// Reads updates until `done` says the peer map it carries is the one
/// awaited, checking `each` on every peer map on the way. Fails after
/// `within`.
async fn peers_until(
    stream: &mut Streaming<pb::SyncUpdate>,
    within: Duration,
    mut each: impl FnMut(&[(IpAddr, Vec<String>)]),
    done: impl Fn(&[(IpAddr, Vec<String>)]) -> bool,
) -> Vec<(IpAddr, Vec<String>)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let u = next(stream, left).await;
        if let Some(map) = peers_of(&u) {
            each(&map);
            if done(&map) {
                return map;
            }
        }
    }
}

fn groups_at(map: &[(IpAddr, Vec<String>)], ip: &str) -> Option<Vec<String>> {
    let ip: IpAddr = ip.parse().unwrap();
    map.iter().find(|(a, _)| *a == ip).map(|(_, g)| g.clone())
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_map_follows_an_ip_from_one_workload_to_the_next() {
    let h = Harness::start().await;
    let (agent, mut client) = h.agent_client("n1").await;
    h.apply(
        "policy.yaml",
        &POLICY.replace("{agent}", &agent.to_string()),
    )
    .await;
    let mut sync = client
        .sync(pb::SyncRequest::default())
        .await
        .unwrap()
        .into_inner();

    let first = next(&mut sync, Duration::from_secs(5)).await;
    assert!(
        first.peer_addresses_sent,
        "the first update carries the peer map, even empty"
    );
    assert!(first.peer_addresses.is_empty(), "{first:?}");
    assert_eq!(first.enforcement, "on");

    // b (app=web) starts on 10.0.0.5, c (app=db) on 10.0.0.6.
    let t0 = now_ms();
    client
        .report_inventory(report(vec![
            event("started", 'b', "web", IP, t0),
            event("started", 'c', "db", "10.0.0.6", t0),
        ]))
        .await
        .unwrap();
    let started = Instant::now();
    let map = peers_until(
        &mut sync,
        Duration::from_secs(3),
        |_| {},
        |m| groups_at(m, IP).is_some() && groups_at(m, "10.0.0.6").is_some(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the peer map follows an inventory report at once, took {:?}",
        started.elapsed()
    );
    assert_eq!(groups_at(&map, IP), Some(names(&["any", "web"])));
    assert_eq!(groups_at(&map, "10.0.0.6"), Some(names(&["any", "db"])));
    assert_eq!(map.len(), 2, "{map:?}");
    assert_eq!(
        metric(&h.metrics(), "hallmark_server_policy_peer_addresses"),
        Some(2.0)
    );

    // b stops and d (app=db) starts on b's address: the map never gives
    // the address b's groups again; it has no entry while the change is
    // within the clock skew, then d's groups.
    let t1 = now_ms();
    client
        .report_inventory(report(vec![
            event("stopped", 'b', "web", IP, t1),
            event("started", 'd', "db", IP, t1 + 1),
        ]))
        .await
        .unwrap();
    let changed = Instant::now();
    let mut saw_absent = false;
    let map = peers_until(
        &mut sync,
        Duration::from_secs(3),
        |m| {
            let g = groups_at(m, IP);
            assert_ne!(
                g,
                Some(names(&["any", "web"])),
                "b's groups after b stopped: {m:?}"
            );
            saw_absent |= g.is_none();
            assert_eq!(groups_at(m, "10.0.0.6"), Some(names(&["any", "db"])));
        },
        |m| groups_at(m, IP).is_some(),
    )
    .await;
    assert!(saw_absent, "no entry while b's stop is within the skew");
    assert_eq!(
        groups_at(&map, IP),
        Some(names(&["any", "db"])),
        "d's groups"
    );
    let took = changed.elapsed();
    assert!(
        took < Duration::from_millis(1_500),
        "d's groups come once b's stop is past the 500 ms skew, took {took:?}"
    );

    // d stops too: the address leaves the map.
    client
        .report_inventory(report(vec![event("stopped", 'd', "db", IP, now_ms())]))
        .await
        .unwrap();
    let map = peers_until(
        &mut sync,
        Duration::from_secs(3),
        |m| assert_ne!(groups_at(m, IP), Some(names(&["any", "web"]))),
        |m| groups_at(m, IP).is_none(),
    )
    .await;
    assert_eq!(map.len(), 1, "{map:?}");

    // The node's own address, from its ownership heartbeat: the node's
    // groups (the next pass of the membership task, within its period).
    client
        .heartbeat(pb::OwnershipHeartbeat {
            context_name: "prod".into(),
            at_ms: now_ms(),
            addresses: vec![pb::OwnedAddress {
                ip: "192.168.1.10".into(),
                port: 0,
                container_id: String::new(),
            }],
        })
        .await
        .unwrap();
    let map = peers_until(
        &mut sync,
        Duration::from_secs(4),
        |_| {},
        |m| groups_at(m, "192.168.1.10").is_some(),
    )
    .await;
    assert_eq!(
        groups_at(&map, "192.168.1.10"),
        Some(names(&["any", "hosts"]))
    );
    assert_eq!(map.len(), 2, "{map:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enforcement_switch_reaches_agents_within_a_second_and_survives_a_restart() {
    let h = Harness::start().await;
    let (_, mut sync) = h.agent("n1").await;
    let first = next(&mut sync, Duration::from_secs(5)).await;
    assert_eq!(first.enforcement, "on");
    let read = h.call("enforcement", serde_json::json!({})).await.unwrap();
    assert_eq!(
        read,
        serde_json::json!({"enforcement": "on", "changed": false})
    );
    assert_eq!(
        metric(&h.metrics(), "hallmark_server_policy_enforcement"),
        Some(1.0)
    );

    let started = Instant::now();
    let off = h
        .call("enforcement", serde_json::json!({"enforcement": "off"}))
        .await
        .unwrap();
    assert_eq!(
        off,
        serde_json::json!({"enforcement": "off", "changed": true})
    );
    let update = next(&mut sync, Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(update.enforcement, "off");
    assert!(
        !update.peer_addresses_sent && !update.identity_groups_sent,
        "only the switch changed: {update:?}"
    );
    assert_eq!(
        metric(&h.metrics(), "hallmark_server_policy_enforcement"),
        Some(0.0)
    );
    let shown = h.call("get", serde_json::json!({})).await.unwrap();
    assert_eq!(shown["enforcement"], "off", "{shown}");

    let again = h
        .call("enforcement", serde_json::json!({"enforcement": "off"}))
        .await
        .unwrap();
    assert_eq!(again["changed"], false);

    let e = h
        .call("enforcement", serde_json::json!({"enforcement": "maybe"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("enforcement `maybe`: must be on or off"),
        "{}",
        e.message()
    );

    // Kept in the datastore: a restarted server's agents start off.
    drop(sync);
    let h = h.restart().await;
    let (_, mut sync) = h.agent("n2").await;
    let first = next(&mut sync, Duration::from_secs(5)).await;
    assert_eq!(first.enforcement, "off");
    assert_eq!(
        metric(&h.metrics(), "hallmark_server_policy_enforcement"),
        Some(0.0)
    );

    let started = Instant::now();
    h.call("enforcement", serde_json::json!({"enforcement": "on"}))
        .await
        .unwrap();
    let update = next(&mut sync, Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(update.enforcement, "on");
    let shown = h.call("get", serde_json::json!({})).await.unwrap();
    assert_eq!(shown["enforcement"], "on");
}
