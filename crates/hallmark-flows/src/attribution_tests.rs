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
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::File("t".into()),
        local: None,
        enforced: None,
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
        unit: String::new(),
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

/// A mix of flows: decided at once, tagged on either side, held and
/// decided later, held past the hold-back, to a named network.
fn mixed_flows(a: &Owner) -> Vec<Flow> {
    let mut tagged_src = flow("10.0.0.1:40000", "10.0.0.2:443", 5_000);
    tagged_src.local = Some(LocalSide {
        side: Side::Source,
        owner: a.clone(),
        by_port: false,
        unit: String::new(),
    });
    let mut tagged_dst = flow("10.0.0.9:40000", "10.0.0.1:443", 6_000);
    tagged_dst.local = Some(LocalSide {
        side: Side::Destination,
        owner: a.clone(),
        by_port: false,
        unit: String::new(),
    });
    vec![
        flow("10.0.0.1:40000", "10.0.0.2:443", 4_000),
        tagged_src,
        tagged_dst,
        flow("10.0.0.1:40000", "10.0.0.2:443", 29_000),
        flow("10.0.0.1:40000", "10.8.1.1:443", 4_000),
        flow("10.0.0.1:40000", "10.0.0.3:443", 4_000),
    ]
}

fn mixed_engine(a: &Owner, b: &Owner) -> Attributor {
    let mut networks = Networks::new();
    networks.add_spec("corp=10.8.0.0/16").unwrap();
    let mut e = Attributor::new(AttributorConfig::default(), networks);
    for at in [0, 10_000, 20_000] {
        beat(&mut e, "10.0.0.1", a, at, EvidenceKind::Heartbeat);
        beat(&mut e, "10.0.0.2", b, at, EvidenceKind::Heartbeat);
    }
    e
}

#[test]
fn attributing_by_reference_answers_as_submit() {
    let (a, b) = (workload("a"), workload("b"));
    let mut by_value = mixed_engine(&a, &b);
    let mut by_ref = mixed_engine(&a, &b);
    let (mut emitted_value, mut emitted_ref) = (Vec::new(), Vec::new());
    for f in mixed_flows(&a) {
        let now = f.start_ms + 100;
        let got = by_ref.attribute(&f, now);
        let want = by_value.submit(f.clone(), now);
        assert_eq!(got, want.clone().map(|w| (w.src, w.dst)), "{f:?}");
        emitted_value.extend(want);
        emitted_ref.extend(got.map(|(src, dst)| AttributedFlow { flow: f, src, dst }));
    }
    // Three flows wait: for evidence past 29 s, for 10.0.0.3, for 10.0.0.9.
    assert_eq!((by_ref.held(), by_value.held()), (3, 3));
    assert_eq!(by_ref.stats(), by_value.stats());
    for (at, hb) in [(30_000, true), (100_000, false)] {
        if hb {
            for e in [&mut by_ref, &mut by_value] {
                beat(e, "10.0.0.1", &a, at, EvidenceKind::Heartbeat);
                beat(e, "10.0.0.2", &b, at, EvidenceKind::Heartbeat);
            }
        }
        emitted_ref.extend(by_ref.poll(T0 + at));
        emitted_value.extend(by_value.poll(T0 + at));
    }
    assert_eq!(emitted_ref, emitted_value);
    assert_eq!(by_ref.stats(), by_value.stats());
    let s = by_ref.stats();
    assert_eq!(
        (s.flows, s.flows_held, s.ends_external, s.ends_no_owner),
        (6, 3, 1, 2),
        "{s:?}"
    );
    // Every end: 10.0.0.9 and 10.0.0.3 nobody's, the network, the rest owned.
    assert_eq!(s.ends_attributed, 9, "{s:?}");
    assert_eq!(s.ends_late, 0, "{s:?}");
    assert_eq!(by_ref.held(), 0);
}

#[test]
fn a_flow_displaced_by_reference_is_emitted_by_the_next_poll() {
    let config = AttributorConfig {
        max_held: 2,
        ..AttributorConfig::default()
    };
    let mut e = Attributor::new(config, Networks::new());
    for at in 0..3 {
        assert!(e
            .attribute(&flow("10.0.0.1:1", "10.0.0.2:2", at), T0)
            .is_none());
    }
    // The oldest was decided (late) to make room; it waits to be emitted.
    assert_eq!(e.held(), 3);
    assert_eq!(e.stats().held_overflow, 1);
    assert_eq!(e.stats().ends_late, 0);
    assert_eq!(e.stats().ends_no_owner, 2);
    let out = e.poll(T0 + 1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flow.start_ms, T0, "the oldest goes first");
    assert_eq!(e.held(), 2);
    let rest = e.drain();
    assert_eq!(
        rest.iter()
            .map(|f| f.flow.start_ms - T0)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(e.held(), 0);
}
