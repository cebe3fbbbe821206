#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;
use crate::attribution::UnattributedReason;
use crate::endpoint::WorkloadEndpoint;
use crate::flow::{Initiator, LocalSide, Side};
use crate::owner::Owner;

const T: i64 = 1_700_000_000_000;

fn agent_flow(node: &str, start_ms: i64, bytes: u64) -> Flow {
    Flow {
        start_ms,
        end_ms: start_ms + 1_000,
        protocol: Protocol::Tcp,
        src: "10.0.0.1:40000".parse().unwrap(),
        dst: "10.0.0.2:443".parse().unwrap(),
        initiator: Initiator::Source,
        bytes_sent: bytes,
        packets_sent: 10,
        bytes_received: bytes / 2,
        packets_received: 5,
        outcome: Some(TcpOutcome::Established),
        retransmits: 1,
        rtt_us: None,
        reporter: Reporter::Agent(node.into()),
        local: Some(LocalSide {
            side: Side::Source,
            owner: Owner::Node {
                context: "c".into(),
                node: node.into(),
            },
            by_port: false,
            unit: String::new(),
        }),
        enforced: None,
    }
}

fn workload(name: &str) -> Endpoint {
    Endpoint::Workload(WorkloadEndpoint {
        context: "c".into(),
        node: "n".into(),
        container_id: name.into(),
        spiffe_ids: vec![format!("spiffe://td/{name}")],
        ..WorkloadEndpoint::default()
    })
}

fn unattributed() -> Endpoint {
    Endpoint::Unattributed {
        reason: UnattributedReason::NoOwner,
    }
}

#[test]
fn only_agent_tcp_and_udp_within_the_window_are_one_connection() {
    let a = agent_flow("n1", T, 100);
    let b = agent_flow("n2", T + 3, 100);
    assert!(a.same_connection(&b, 750));
    assert!(b.same_connection(&a, 750), "symmetric");
    assert!(!a.same_connection(&agent_flow("n2", T + 751, 1), 750));
    assert!(a.same_connection(&agent_flow("n2", T - 750, 1), 750));
    assert!(
        a.same_connection(&agent_flow("n2", T, 1), 0),
        "same start, window 0"
    );
    assert!(!a.same_connection(&b, -10), "a negative window is 0");
    let mut other_port = b.clone();
    other_port.dst.set_port(444);
    assert!(!a.same_connection(&other_port, 750));
    let mut reversed = b.clone();
    std::mem::swap(&mut reversed.src, &mut reversed.dst);
    assert!(
        !a.same_connection(&reversed, 750),
        "orientation is part of the key"
    );
    let mut udp = b.clone();
    udp.protocol = Protocol::Udp;
    udp.outcome = None;
    assert!(!a.same_connection(&udp, 750));
    let mut udp_a = a.clone();
    udp_a.protocol = Protocol::Udp;
    udp_a.outcome = None;
    assert!(udp_a.same_connection(&udp, 750));
    let mut file = b.clone();
    file.reporter = Reporter::File("x".into());
    assert!(!file.is_mergeable());
    assert!(!a.same_connection(&file, 750));
    let mut icmp = a.clone();
    icmp.protocol = Protocol::Icmp;
    assert!(!icmp.is_mergeable());
}

#[test]
fn merge_takes_the_widest_span_the_largest_counters_and_both_identities() {
    let mut first = StoredFlow::new(
        agent_flow("n1", T + 3, 500),
        workload("a"),
        unattributed(),
        T + 10,
    );
    first.id = 7;
    let mut second_flow = agent_flow("n2", T, 400);
    second_flow.end_ms = T + 5_000;
    second_flow.bytes_received = 900;
    second_flow.retransmits = 4;
    second_flow.rtt_us = Some(250);
    second_flow.outcome = Some(TcpOutcome::Reset);
    let second = StoredFlow::new(second_flow, unattributed(), workload("b"), T + 20);
    let m = first.merge(&second);
    assert_eq!(m.id, 7, "the stored row's id");
    assert_eq!(m.flow.start_ms, T);
    assert_eq!(m.flow.end_ms, T + 5_000);
    assert_eq!(m.flow.bytes_sent, 500);
    assert_eq!(m.flow.bytes_received, 900);
    assert_eq!(m.flow.retransmits, 4);
    assert_eq!(m.flow.rtt_us, Some(250));
    assert_eq!(m.flow.outcome, Some(TcpOutcome::Reset));
    assert_eq!(
        m.flow.reporter,
        Reporter::Agent("n1".into()),
        "first reporter kept"
    );
    assert_eq!(m.flow.local, first.flow.local, "first local side kept");
    assert_eq!(m.src, workload("a"));
    assert_eq!(
        m.dst,
        workload("b"),
        "an unattributed end takes the new answer"
    );
    assert_eq!(m.status, FlowStatus::Attributed);
    assert_eq!(m.attributed_ms, T + 20);

    // An attributed end is never replaced, and an established report does
    // not undo a failure.
    let mut third = second.clone();
    third.src = workload("z");
    third.flow.outcome = Some(TcpOutcome::Established);
    third.flow.rtt_us = Some(999);
    let m2 = m.merge(&third);
    assert_eq!(m2.src, workload("a"));
    assert_eq!(m2.flow.outcome, Some(TcpOutcome::Reset));
    assert_eq!(m2.flow.rtt_us, Some(250), "the stored RTT stays");
    let mut refused = third.clone();
    refused.flow.outcome = Some(TcpOutcome::Refused);
    assert_eq!(
        m2.merge(&refused).flow.outcome,
        Some(TcpOutcome::Reset),
        "of two failures the first stays"
    );
    let mut est = first.clone();
    est.flow.outcome = None;
    assert_eq!(est.merge(&refused).flow.outcome, Some(TcpOutcome::Refused));
}

#[test]
fn a_node_end_learns_its_unit_from_its_own_agent() {
    let node = |unit: &str| Endpoint::Node {
        context: "c".into(),
        node: "n2".into(),
        spiffe_id: "spiffe://td/agent/n2".into(),
        unit: unit.into(),
    };
    let first = StoredFlow::new(agent_flow("n1", T, 1), workload("a"), node(""), T);
    let second = StoredFlow::new(
        agent_flow("n2", T, 1),
        unattributed(),
        node("ssh.service"),
        T,
    );
    let m = first.merge(&second);
    assert_eq!(m.dst, node("ssh.service"));
    assert_eq!(m.src, workload("a"));
    // A unit already known stays.
    let third = StoredFlow::new(
        agent_flow("n2", T, 1),
        unattributed(),
        node("other.service"),
        T,
    );
    assert_eq!(m.merge(&third).dst, node("ssh.service"));
    assert_eq!(
        node("ssh.service").graph_key(),
        node("").graph_key(),
        "graph keys do not split by unit"
    );
    assert_eq!(
        node("ssh.service").to_string(),
        "spiffe://td/agent/n2 (ssh.service)"
    );
}

#[test]
fn an_end_seen_from_inside_beats_the_ownership_index() {
    // The client's report found the node behind the server's address (the
    // index); the server's own socket was a host-network container's.
    let node = Endpoint::Node {
        context: "c".into(),
        node: "n1".into(),
        spiffe_id: "spiffe://td/agent/n1".into(),
        unit: String::new(),
    };
    let first = StoredFlow::new(agent_flow("n1", T, 1), workload("a"), node.clone(), T);
    let mut server_side = agent_flow("n1", T + 1, 1);
    server_side.local.as_mut().unwrap().side = Side::Destination;
    let second = StoredFlow::new(server_side.clone(), workload("a"), workload("h"), T);
    let m = first.merge(&second);
    assert_eq!(m.dst, workload("h"));
    assert_eq!(m.src, workload("a"));
    // The other way round: the inside view, stored first, stays.
    let first = StoredFlow::new(server_side, unattributed(), workload("h"), T);
    let second = StoredFlow::new(agent_flow("n1", T, 1), workload("a"), node, T);
    let m = first.merge(&second);
    assert_eq!(m.dst, workload("h"));
    assert_eq!(m.src, workload("a"));
}
