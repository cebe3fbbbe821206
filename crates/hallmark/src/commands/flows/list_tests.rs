#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use clap::Parser as _;
use hallmark_flows::{Flow, Initiator, Reporter, TcpOutcome, UnattributedReason, WorkloadEndpoint};

use super::*;
use crate::cli::{Cli, Command};

fn list_args(args: &[&str]) -> Result<ListArgs, clap::Error> {
    let all = ["hallmark", "flows", "list"].iter().chain(args);
    Cli::try_parse_from(all).map(|c| match c.command {
        Command::Flows {
            command: super::super::FlowsCommand::List(a),
        } => a,
        other => panic!("parsed as {other:?}"),
    })
}

const NOW: i64 = 1_765_000_000_000;

#[test]
fn defaults_and_every_filter() {
    let q = list_query(&list_args(&[]).unwrap(), NOW).unwrap();
    assert_eq!(q.since_ms, NOW - 3_600_000);
    assert_eq!(q.limit, 100);
    assert_eq!(
        (q.until_ms, q.port, q.protocol, q.status),
        (None, None, None, None)
    );

    let a = list_args(&[
        "--since",
        "2026-12-06T03:00:00Z",
        "--until",
        "1796526720",
        "--from",
        "spiffe://td/ns/payments/*",
        "--from",
        "label:app=ledger",
        "--to",
        "10.0.0.0/16",
        "--port",
        "5432",
        "--protocol",
        "tcp",
        "--status",
        "unattributed",
        "--verdict",
        "deny",
        "--limit",
        "5",
    ])
    .unwrap();
    let q = list_query(&a, NOW).unwrap();
    assert_eq!(q.since_ms, 1_796_526_000_000);
    assert_eq!(q.until_ms, Some(1_796_526_720_000));
    assert_eq!(
        q.from,
        [
            EndpointFilter::SpiffePrefix("spiffe://td/ns/payments/".into()),
            EndpointFilter::Label("app".into(), "ledger".into()),
        ]
    );
    assert_eq!(q.to[0].to_string(), "ip:10.0.0.0/16");
    assert_eq!(q.port, Some(5432));
    assert_eq!(q.protocol, Some(Protocol::Tcp));
    assert_eq!(q.status, Some(FlowStatus::Unattributed));
    assert_eq!(q.verdict, Some(Outcome::Denied));
    assert_eq!(q.limit, 5);
    // The document the server reads.
    let json = serde_json::to_value(&q).unwrap();
    assert_eq!(json["from"][0]["kind"], "spiffe-prefix");
    assert_eq!(json["verdict"], "denied");
    for (word, want) in [
        ("allowed", Outcome::Allowed),
        ("would-deny", Outcome::WouldDeny),
        ("no-decision", Outcome::NoDecision),
    ] {
        let q = list_query(&list_args(&["--verdict", word]).unwrap(), NOW).unwrap();
        assert_eq!(q.verdict, Some(want));
    }
}

#[test]
fn bad_flags_name_the_rule() {
    for (args, needle) in [
        (
            vec!["--from", "payments"],
            "endpoint filter `payments`: use a SPIFFE ID",
        ),
        (vec!["--to", "label:app"], "label: needs KEY=VALUE"),
        (vec!["--to", "10.0.0.1/16"], "did you mean 10.0.0.0/16"),
        (
            vec!["--protocol", "sctpx"],
            "protocol `sctpx` is not tcp, udp",
        ),
        (
            vec!["--status", "ok"],
            "`ok` is not attributed, unattributed or external",
        ),
        (vec!["--limit", "0"], "must be at least 1"),
        (
            vec!["--verdict", "blocked"],
            "verdict `blocked` is not one of allowed, denied (or deny), would-deny, no-decision",
        ),
        (vec!["--port", "70000"], "70000"),
        (vec!["--follow", "--until", "1h"], "cannot be used with"),
    ] {
        let e = list_args(&args).unwrap_err().to_string();
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    for (args, needle) in [
        (
            vec!["--since", "yesterday"],
            "--since: `yesterday` is not a time",
        ),
        (
            vec!["--until", "5x"],
            "--until: `5x`: the duration has an unknown unit",
        ),
        (
            vec!["--since", "1h", "--until", "2h"],
            "is not after --since",
        ),
    ] {
        let e = list_query(&list_args(&args).unwrap(), NOW)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

fn stored(src: Endpoint, dst: Endpoint) -> StoredFlow {
    let flow = Flow {
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_000_100,
        protocol: Protocol::Tcp,
        src: "10.0.0.1:40000".parse().unwrap(),
        dst: "10.0.0.2:5432".parse().unwrap(),
        initiator: Initiator::Source,
        bytes_sent: 100,
        packets_sent: 2,
        bytes_received: 50,
        packets_received: 1,
        outcome: Some(TcpOutcome::Refused),
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::File("x".into()),
        local: None,
        enforced: None,
    };
    StoredFlow::new(flow, src, dst, 1_700_000_001_000)
}

#[test]
fn rows_show_identities_addresses_and_outcome() {
    let web = Endpoint::Workload(WorkloadEndpoint {
        context: "prod".into(),
        node: "n1".into(),
        container_id: "c".repeat(64),
        name: "web".into(),
        ..WorkloadEndpoint::default()
    });
    let f = stored(
        web,
        Endpoint::Unattributed {
            reason: UnattributedReason::Ambiguous,
        },
    );
    assert_eq!(
        row(&f, false),
        [
            "2023-11-14T22:13:20.000Z",
            "tcp",
            "workload prod/web 10.0.0.1:40000",
            "→",
            "unattributed (ambiguous) 10.0.0.2:5432",
            "5432",
            "150",
            "3",
            "unattributed (refused)",
            "-"
        ]
    );
    let mut f = stored(
        Endpoint::Node {
            context: "prod".into(),
            node: "n1".into(),
            spiffe_id: "spiffe://td/hallmark/agent/n1".into(),
            unit: String::new(),
        },
        Endpoint::External {
            network: "corp".into(),
        },
    );
    f.flow.protocol = Protocol::Icmp;
    f.flow.outcome = None;
    f.verdict = Some(Outcome::WouldDeny);
    f.verdict_rule = Some("corp-watch".into());
    let r = row(&f, true);
    assert_eq!(r[9..], ["would-deny", "corp-watch"]);
    assert_eq!(headers(true)[9..], ["VERDICT", "RULE"]);
    assert_eq!(headers(false).len(), 10);
    assert_eq!(r[2], "spiffe://td/hallmark/agent/n1 10.0.0.1");
    assert_eq!(r[4], "external:corp 10.0.0.2");
    assert_eq!(r[5], "-");
    assert_eq!(r[8], "external");
}
