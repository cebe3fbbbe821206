#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;
use crate::attribution::UnattributedReason;
use crate::endpoint::WorkloadEndpoint;
use crate::flow::{Flow, Reporter};
use hallmark_policy::parse;

const POLICY: &str = r#"
groups:
  web: [{selector: "docker:label:app:web"}]
  db: [{labels: {tier: db}}]
  nodes: [{node: n1}]
  corp: [{cidr: 10.8.0.0/16}]
rules:
  - {name: web-to-db, from: [web], to: [db], protocol: tcp, ports: ["5432"], action: allow}
  - {name: corp-to-db, from: [corp], to: [db], action: deny}
  - {name: nodes-watch, from: [nodes], to: [db], action: deny, mode: watch}
default: deny
"#;

fn policy() -> Policy {
    Policy::compile(&parse("p.yaml", POLICY).unwrap().document)
}

fn web() -> Endpoint {
    Endpoint::Workload(WorkloadEndpoint {
        context: "lab".into(),
        node: "n2".into(),
        container_id: "a".repeat(64),
        selectors: vec!["docker:label:app:web".into()],
        ..WorkloadEndpoint::default()
    })
}

fn db() -> Endpoint {
    Endpoint::Workload(WorkloadEndpoint {
        context: "lab".into(),
        node: "n2".into(),
        container_id: "b".repeat(64),
        labels: [("tier".to_string(), "db".to_string())].into(),
        ..WorkloadEndpoint::default()
    })
}

fn stored(src: Endpoint, dst: Endpoint, initiator: Initiator, proto: Protocol) -> StoredFlow {
    let flow = Flow {
        start_ms: 1,
        end_ms: 2,
        protocol: proto,
        src: "10.0.0.9:40000".parse().unwrap(),
        dst: "10.0.0.2:5432".parse().unwrap(),
        initiator,
        bytes_sent: 0,
        packets_sent: 0,
        bytes_received: 0,
        packets_received: 0,
        outcome: None,
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::File("t".into()),
        local: None,
        enforced: None,
    };
    StoredFlow::new(flow, src, dst, 3)
}

fn said(f: &StoredFlow) -> (Outcome, Option<String>) {
    let v = decide(&policy(), f);
    (v.outcome, v.rule().map(str::to_string))
}

#[test]
fn flows_are_decided_from_initiator_to_acceptor_port() {
    use Outcome::*;
    let rule = |n: &str| Some(n.to_string());
    let tcp = Protocol::Tcp;
    assert_eq!(
        said(&stored(web(), db(), Initiator::Source, tcp)),
        (Allowed, rule("web-to-db"))
    );
    // The same conversation recorded from the other end: the acceptor's
    // port is the source's.
    let mut back = stored(db(), web(), Initiator::Destination, tcp);
    back.flow.src = "10.0.0.2:5432".parse().unwrap();
    back.flow.dst = "10.0.0.9:40000".parse().unwrap();
    assert_eq!(said(&back), (Allowed, rule("web-to-db")));
    // UDP is not in web-to-db: the default decides.
    assert_eq!(
        said(&stored(web(), db(), Initiator::Source, Protocol::Udp)),
        (Denied, None)
    );
    // An external end is decided by its address (10.8.0.9 is corp).
    let ext = Endpoint::External {
        network: "corp".into(),
    };
    let mut from_corp = stored(ext, db(), Initiator::Source, tcp);
    from_corp.flow.src = "10.8.0.9:40000".parse().unwrap();
    assert_eq!(said(&from_corp), (Denied, rule("corp-to-db")));
    // A workload in corp's range is in corp too, and deny wins the tie.
    let mut web_in_corp = stored(web(), db(), Initiator::Source, tcp);
    web_in_corp.flow.src = "10.8.0.10:40000".parse().unwrap();
    assert_eq!(said(&web_in_corp), (Denied, rule("corp-to-db")));
    // A host process on n1: the watch rule.
    let node = Endpoint::Node {
        context: "lab".into(),
        node: "n1".into(),
        spiffe_id: "spiffe://example.org/hallmark/agent/n1".into(),
        unit: String::new(),
    };
    let mut from_node = stored(node, db(), Initiator::Source, tcp);
    from_node.flow.src = "10.0.0.1:40000".parse().unwrap();
    from_node.flow.dst = "10.0.0.2:22".parse().unwrap();
    // Enforced rules alone leave it to `default: deny`, which is enforced:
    // the watch rule cannot make it milder.
    assert_eq!(said(&from_node), (Denied, None));
}

#[test]
fn no_decision_when_the_question_is_unknown() {
    let un = Endpoint::Unattributed {
        reason: UnattributedReason::NoOwner,
    };
    for f in [
        stored(un.clone(), db(), Initiator::Source, Protocol::Tcp),
        stored(web(), un, Initiator::Source, Protocol::Tcp),
        stored(web(), db(), Initiator::Unknown, Protocol::Tcp),
        stored(web(), db(), Initiator::Source, Protocol::Icmp),
    ] {
        let v = decide(&policy(), &f);
        assert_eq!(v, Verdict::no_decision(), "{f:?}");
        assert!(!is_decided(&v));
        assert!(question(&f).is_none());
    }
}
