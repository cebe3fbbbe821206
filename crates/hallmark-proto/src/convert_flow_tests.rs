#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;

const T: i64 = 1_700_000_000_000;

fn agent_owner(cid: &str) -> Option<Owner> {
    Some(if cid.is_empty() {
        Owner::Node {
            context: "prod".into(),
            node: "n1".into(),
        }
    } else {
        Owner::Workload {
            context: "prod".into(),
            node: "n1".into(),
            container_id: cid.into(),
        }
    })
}

fn sample() -> Flow {
    Flow {
        start_ms: T,
        end_ms: T + 250,
        protocol: Protocol::Tcp,
        src: "10.0.0.1:40000".parse().unwrap(),
        dst: "10.0.0.2:443".parse().unwrap(),
        initiator: Initiator::Source,
        bytes_sent: 1200,
        packets_sent: 4,
        bytes_received: 5000,
        packets_received: 5,
        outcome: Some(TcpOutcome::Refused),
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::Agent("n1".into()),
        local: Some(LocalSide {
            side: Side::Destination,
            owner: Owner::Workload {
                context: "prod".into(),
                node: "n1".into(),
                container_id: "c".repeat(64),
            },
            by_port: true,
            unit: String::new(),
        }),
        enforced: None,
    }
}

#[test]
fn round_trip() {
    let reporter = Reporter::Agent("n1".into());
    let mut f = sample();
    let back = flow_from_pb(&pb::FlowRecord::from(&f), reporter.clone(), agent_owner);
    assert_eq!(back, Ok(f.clone()));

    // What a socket adds: retransmits, RTT, and a host process's unit.
    let mut captured = f.clone();
    captured.retransmits = 7;
    captured.rtt_us = Some(1_250);
    captured.local = Some(LocalSide {
        side: Side::Source,
        owner: Owner::Node {
            context: "prod".into(),
            node: "n1".into(),
        },
        by_port: true,
        unit: "ssh.service".into(),
    });
    let wire = pb::FlowRecord::from(&captured);
    assert_eq!(
        (wire.retransmits, wire.rtt_us, wire.local_unit.as_str()),
        (7, 1_250, "ssh.service")
    );
    assert_eq!(
        flow_from_pb(&wire, reporter.clone(), agent_owner),
        Ok(captured)
    );
    // RTT 0 on the wire is unknown.
    assert_eq!(pb::FlowRecord::from(&f).rtt_us, 0);

    // The node itself on the local side, IPv6, no outcome, portless.
    f.local = Some(LocalSide {
        side: Side::Source,
        owner: Owner::Node {
            context: "prod".into(),
            node: "n1".into(),
        },
        by_port: false,
        unit: String::new(),
    });
    f.src = "[fd00::1]:0".parse().unwrap();
    f.dst = "[fd00::2]:0".parse().unwrap();
    f.protocol = Protocol::Icmpv6;
    f.outcome = None;
    f.initiator = Initiator::Unknown;
    let wire = pb::FlowRecord::from(&f);
    assert_eq!(wire.local_container_id, "");
    assert_eq!(wire.protocol, 58);
    let back = flow_from_pb(&wire, reporter, agent_owner);
    assert_eq!(back, Ok(f.clone()));

    // A flow log's flow: no local side, reported by the file.
    f.local = None;
    f.reporter = Reporter::File("vpc.log".into());
    let wire = pb::FlowRecord::from(&f);
    assert_eq!(wire.local_side, "");
    let back = flow_from_pb(&wire, f.reporter.clone(), |_| None);
    assert_eq!(back, Ok(f));
}

#[test]
fn each_malformed_field_is_refused_by_name() {
    let good = pb::FlowRecord::from(&sample());
    type Mutate = Box<dyn Fn(&mut pb::FlowRecord)>;
    let cases: Vec<(&str, &str, Mutate)> = vec![
        ("protocol", "0-255", Box::new(|r| r.protocol = 256)),
        (
            "src_ip",
            "not an IP",
            Box::new(|r| r.src_ip = "10.0.0".into()),
        ),
        ("dst_ip", "not an IP", Box::new(|r| r.dst_ip.clear())),
        ("src_port", "0-65535", Box::new(|r| r.src_port = 65_536)),
        ("dst_port", "0-65535", Box::new(|r| r.dst_port = 70_000)),
        (
            "initiator",
            "`client`",
            Box::new(|r| r.initiator = "client".into()),
        ),
        ("outcome", "`rst`", Box::new(|r| r.outcome = "rst".into())),
        (
            "verdict",
            "`blocked`",
            Box::new(|r| r.verdict = "blocked".into()),
        ),
        (
            "verdict",
            "mode `audit`",
            Box::new(|r| {
                r.verdict = "denied".into();
                r.verdict_mode = "audit".into();
            }),
        ),
        (
            "local_side",
            "`both`",
            Box::new(|r| r.local_side = "both".into()),
        ),
        (
            "local_container_id",
            "local_side is empty",
            Box::new(|r| r.local_side.clear()),
        ),
        (
            "local_by_port",
            "local_side is empty",
            Box::new(|r| {
                r.local_side.clear();
                r.local_container_id.clear();
            }),
        ),
        (
            "local_container_id",
            "[A-Za-z0-9._-]",
            Box::new(|r| r.local_container_id = "a/b".into()),
        ),
        (
            "local_container_id",
            "[A-Za-z0-9._-]",
            Box::new(|r| r.local_container_id = "a".repeat(129)),
        ),
        (
            "start_ms",
            "outside 2000-01-01",
            Box::new(|r| r.start_ms = 1_700_000_000),
        ),
        (
            "end_ms",
            "outside 2000-01-01",
            Box::new(|r| r.end_ms = i64::MAX),
        ),
        (
            "end_ms",
            "time going backwards",
            Box::new(|r| r.end_ms = r.start_ms - 1),
        ),
        ("src_port", "source port is 0", Box::new(|r| r.src_port = 0)),
        (
            "dst_port",
            "destination port is 0",
            Box::new(|r| r.dst_port = 0),
        ),
        (
            "dst_ip",
            "same IP version",
            Box::new(|r| r.dst_ip = "fd00::2".into()),
        ),
        (
            "outcome",
            "only meaningful for TCP",
            Box::new(|r| r.protocol = 17),
        ),
        (
            "local_unit",
            "local_side is empty",
            Box::new(|r| {
                r.local_side.clear();
                r.local_container_id.clear();
                r.local_by_port = false;
                r.local_unit = "ssh.service".into();
            }),
        ),
        (
            "local_unit",
            "not a path",
            Box::new(|r| {
                r.local_container_id.clear();
                r.local_unit = "system.slice/ssh.service".into();
            }),
        ),
        (
            "local_unit",
            "longer than 256 bytes",
            Box::new(|r| {
                r.local_container_id.clear();
                r.local_unit = "a".repeat(257);
            }),
        ),
        (
            "local_unit",
            "printable ASCII",
            Box::new(|r| {
                r.local_container_id.clear();
                r.local_unit = "ssh\u{7}.service".into();
            }),
        ),
        (
            "local_unit",
            "workload's side",
            Box::new(|r| r.local_unit = "ssh.service".into()),
        ),
    ];
    for (field, needle, mutate) in cases {
        let mut r = good.clone();
        mutate(&mut r);
        let e = flow_from_pb(&r, Reporter::Agent("n1".into()), agent_owner).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        let text = e.to_string();
        assert!(text.contains(needle), "want `{needle}` in: {text}");
        assert!(text.contains(&format!("field `{field}`")), "{text}");
    }
}

#[test]
fn a_local_side_from_a_source_that_cannot_know_it_is_refused() {
    let wire = pb::FlowRecord::from(&sample());
    let e = flow_from_pb(&wire, Reporter::File("x.log".into()), |_| None).unwrap_err();
    assert_eq!(e.field, "local_side");
    assert!(e.to_string().contains("file:x.log cannot know"), "{e}");
}
