#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use hallmark_flows::{
    Endpoint, Flow, Initiator, Protocol, Reporter, TcpOutcome, UnattributedReason,
};

use super::*;

const T: i64 = 1_700_000_000_000;

fn flow(reporter: Reporter, start_ms: i64, bytes: u64) -> StoredFlow {
    let f = Flow {
        start_ms,
        end_ms: start_ms + 100,
        protocol: Protocol::Tcp,
        src: "10.0.0.1:40000".parse().unwrap(),
        dst: "10.0.0.2:80".parse().unwrap(),
        initiator: Initiator::Source,
        bytes_sent: bytes,
        packets_sent: 1,
        bytes_received: 0,
        packets_received: 0,
        outcome: Some(TcpOutcome::Established),
        retransmits: 0,
        rtt_us: None,
        reporter,
        local: None,
        enforced: None,
    };
    let end = Endpoint::Unattributed {
        reason: UnattributedReason::NoOwner,
    };
    StoredFlow::new(f, end.clone(), end, start_ms)
}

fn agent(node: &str) -> Reporter {
    Reporter::Agent(node.into())
}

#[test]
fn a_batch_folds_into_stored_rows_and_into_itself() {
    let mut stored = flow(agent("n1"), T, 10);
    stored.id = 41;
    let batch = vec![
        flow(agent("n2"), T + 3, 30),            // the stored connection
        flow(agent("n1"), T + 2_000, 5),         // a new connection, same tuple
        flow(agent("n1"), T + 2_000, 50),        // its final record
        flow(Reporter::File("f".into()), T, 99), // never merged
        flow(Reporter::File("f".into()), T, 99),
    ];
    let plan = MergePlan::new(&batch, vec![stored.clone()], 750);
    assert_eq!(plan.merged, 2);
    let inserts = plan.inserts();
    assert_eq!(inserts.len(), 3);
    assert_eq!(inserts[0].flow.bytes_sent, 50, "the new connection, merged");
    assert_eq!(inserts[0].flow.start_ms, T + 2_000);
    assert_eq!(inserts[1].flow.reporter, Reporter::File("f".into()));
    let updates = plan.updates();
    assert_eq!(updates.len(), 1);
    let (id, old, now) = updates[0];
    assert_eq!((id, old), (41, &stored));
    assert_eq!(now.flow.bytes_sent, 30);
    assert_eq!(now.flow.start_ms, T);
    assert_eq!(
        plan.flow_ids(&[100, 101, 102]),
        vec![41, 100, 100, 101, 102]
    );
}

#[test]
fn the_nearest_start_wins_and_unchanged_rows_are_not_rewritten() {
    let mut a = flow(agent("n1"), T, 10);
    a.id = 1;
    let mut b = flow(agent("n1"), T + 1_000, 10);
    b.id = 2;
    // 600 ms from a, 400 from b: b's connection.
    let batch = vec![flow(agent("n2"), T + 600, 10)];
    let plan = MergePlan::new(&batch, vec![a.clone(), b.clone()], 750);
    assert_eq!(plan.flow_ids(&[]), vec![2]);
    assert!(plan.inserts().is_empty());
    let updates = plan.updates();
    assert_eq!(updates.len(), 1, "b's start moves to T+600");
    assert_eq!(updates[0].2.flow.start_ms, T + 600);
    // A report that changes nothing (a resent interim record) is merged
    // without a write.
    let again = vec![flow(agent("n1"), T, 10)];
    let plan = MergePlan::new(&again, vec![a], 750);
    assert_eq!(plan.merged, 1);
    assert!(plan.updates().is_empty() && plan.inserts().is_empty());
    assert_eq!(plan.flow_ids(&[]), vec![1]);
}
