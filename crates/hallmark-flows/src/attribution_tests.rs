#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;
use crate::flow::{Initiator, LocalSide, Protocol, Reporter, TcpOutcome};
use crate::owner::Owner;

const T0: i64 = 1_700_000_000_000;

fn workload(c: &str) -> Owner {
    Owner::Workload {
        context: "lab".into(),
        node: "n1".into(),
        container_id: c.repeat(64),
    }
}

fn flow(src: &str, dst: &str, at: i64) -> Flow {
    Flow {
        start_ms: T0 + at,
        end_ms: T0 + at + 5,
        protocol: Protocol::Tcp,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        initiator: Initiator::Source,
        bytes_sent: 1,
        packets_sent: 1,
        bytes_received: 1,
        packets_received: 1,
        outcome: Some(TcpOutcome::Established),
        reporter: Reporter::File("t".into()),
        local: None,
    }
}

fn beat(engine: &mut Attributor, ip: &str, o: &Owner, at: i64, kind: EvidenceKind) {
    engine.record(&Evidence {
        key: OwnershipKey::ip(ip.parse().unwrap()),
        owner: o.clone(),
        at_ms: T0 + at,
        kind,
    });
}

fn owner_of(engine: &Attributor, end: &EndAttribution) -> Option<Owner> {
    end.owner()
        .map(|id| engine.index().owners().get(id).unwrap().clone())
}

#[test]
fn a_flow_waits_for_evidence_then_is_attributed() {
    let (a, b) = (workload("a"), workload("b"));
    let mut e = Attributor::new(AttributorConfig::default(), Networks::new());
    for at in [0, 10_000] {
        beat(&mut e, "10.0.0.1", &a, at, EvidenceKind::Heartbeat);
        beat(&mut e, "10.0.0.2", &b, at, EvidenceKind::Heartbeat);
    }
    // At 12 s neither range reaches yet: held.
    assert!(e
        .submit(flow("10.0.0.1:40000", "10.0.0.2:443", 12_000), T0 + 12_100)
        .is_none());
    assert_eq!(e.held(), 1);
    assert!(e.poll(T0 + 15_000).is_empty());
    beat(&mut e, "10.0.0.1", &a, 20_000, EvidenceKind::Heartbeat);
    beat(&mut e, "10.0.0.2", &b, 20_000, EvidenceKind::Heartbeat);
    let out = e.poll(T0 + 20_100);
    assert_eq!(out.len(), 1);
    assert_eq!(owner_of(&e, &out[0].src), Some(a));
    assert_eq!(owner_of(&e, &out[0].dst), Some(b));
    assert_eq!(e.held(), 0);
    assert_eq!(e.stats().ends_attributed, 2);
    assert_eq!(e.stats().flows_held, 1);
}

#[test]
fn evidence_that_never_comes_makes_the_flow_late() {
    let a = workload("a");
    let config = AttributorConfig {
        holdback_ms: 60_000,
        ..AttributorConfig::default()
    };
    let mut e = Attributor::new(config, Networks::new());
    beat(&mut e, "10.0.0.1", &a, 0, EvidenceKind::Heartbeat);
    assert!(e
        .submit(flow("10.0.0.1:1000", "10.0.0.1:2000", 5_000), T0 + 5_000)
        .is_none());
    assert!(e.poll(T0 + 64_999).is_empty(), "still inside the hold-back");
    let out = e.poll(T0 + 65_000);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].src,
        EndAttribution::Unattributed(UnattributedReason::Late)
    );
    assert_eq!(e.stats().ends_late, 2);
}

#[test]
fn named_networks_answer_for_addresses_nobody_holds() {
    let a = workload("a");
    let mut networks = Networks::new();
    networks.add_spec("corp=10.8.0.0/16").unwrap();
    let mut e = Attributor::new(AttributorConfig::default(), networks);
    for at in [0, 10_000, 20_000] {
        beat(&mut e, "10.0.0.1", &a, at, EvidenceKind::Heartbeat);
    }
    let out = e
        .submit(flow("10.0.0.1:40000", "10.8.3.3:443", 5_000), T0 + 6_000)
        .unwrap();
    assert_eq!(owner_of(&e, &out.src), Some(a));
    assert_eq!(out.dst, EndAttribution::External("corp".into()));
    // Never seen, not named: held, then no-owner at the hold-back.
    assert!(e
        .submit(flow("10.0.0.1:40000", "192.0.2.7:443", 5_000), T0 + 6_000)
        .is_none());
    let out = e.poll(T0 + 66_000);
    assert_eq!(
        out[0].dst,
        EndAttribution::Unattributed(UnattributedReason::NoOwner)
    );
}

#[test]
fn the_local_side_is_tagged_and_becomes_evidence() {
    let (a, b) = (workload("a"), workload("b"));
    let mut e = Attributor::new(AttributorConfig::default(), Networks::new());
    for at in [0, 10_000, 20_000] {
        beat(&mut e, "10.0.0.2", &b, at, EvidenceKind::Heartbeat);
    }
    let mut f = flow("10.0.0.1:40000", "10.0.0.2:443", 5_000);
    f.local = Some(LocalSide {
        side: Side::Source,
        owner: a.clone(),
        by_port: false,
    });
    let out = e.submit(f, T0 + 6_000).unwrap();
    assert!(matches!(out.src, EndAttribution::Local(_)));
    assert_eq!(owner_of(&e, &out.src), Some(a.clone()));
    assert_eq!(owner_of(&e, &out.dst), Some(b));
    // The tag is evidence that A held 10.0.0.1 at 5 s.
    let ranges = e
        .index()
        .ranges(OwnershipKey::ip("10.0.0.1".parse().unwrap()));
    assert_eq!(ranges.len(), 1);
    assert_eq!(ranges[0].first_ms, T0 + 5_000);
}

#[test]
fn a_full_hold_back_queue_emits_its_oldest() {
    let config = AttributorConfig {
        max_held: 2,
        ..AttributorConfig::default()
    };
    let mut e = Attributor::new(config, Networks::new());
    assert!(e.submit(flow("10.0.0.1:1", "10.0.0.2:2", 0), T0).is_none());
    assert!(e.submit(flow("10.0.0.1:1", "10.0.0.2:2", 1), T0).is_none());
    let out = e.submit(flow("10.0.0.1:1", "10.0.0.2:2", 2), T0).unwrap();
    assert_eq!(out.flow.start_ms, T0, "the oldest goes first");
    assert_eq!(e.held(), 2);
    assert_eq!(e.stats().held_overflow, 1);
    assert_eq!(e.drain().len(), 2);
    assert_eq!(e.held(), 0);
}
