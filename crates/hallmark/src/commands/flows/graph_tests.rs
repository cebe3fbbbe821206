#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use clap::Parser as _;
use hallmark_flows::Protocol;

use super::*;
use crate::cli::{Cli, Command};

fn edge(src: &str, dst: &str, port: u16, flows: u64) -> GraphEdge {
    GraphEdge {
        src: src.into(),
        dst: dst.into(),
        dst_port: port,
        protocol: Protocol::Tcp,
        flows,
        bytes: 3 * 1024 * 1024 / 2,
        first_ms: 1_700_000_000_000,
        last_ms: 1_700_000_060_000,
        refused: 2,
        reset: 0,
        verdicts: hallmark_flows::VerdictCounts::default(),
        verdict: None,
    }
}

fn answer(edges: Vec<GraphEdge>) -> GraphAnswer {
    GraphAnswer {
        since_ms: 0,
        until_ms: None,
        by: GraphBy::SpiffeId,
        edges,
    }
}

#[test]
fn dot_is_well_formed_whatever_the_names() {
    let tricky = "spiffe://td/a\"b\\c";
    let a = answer(vec![
        edge("spiffe://td/web", tricky, 443, 12),
        edge(tricky, "external:corp", 5432, 1),
    ]);
    let text = dot(&a);
    assert!(text.starts_with("digraph flows {\n"), "{text}");
    assert!(text.ends_with("}\n"), "{text}");
    assert!(
        text.contains("  n0 [label=\"spiffe://td/web\"];\n"),
        "{text}"
    );
    assert!(
        text.contains("  n1 [label=\"spiffe://td/a\\\"b\\\\c\"];\n"),
        "{text}"
    );
    assert!(text.contains("  n2 [label=\"external:corp\"];\n"), "{text}");
    assert!(
        text.contains("  n0 -> n1 [label=\"443/tcp\\n12 flows, 1.5 MiB\\n2 refused\"];\n"),
        "{text}"
    );
    assert!(text.contains("  n1 -> n2 ["), "{text}");
    let mut denied = edge("spiffe://td/web", "external:corp", 22, 3);
    denied.verdicts.allowed = 2;
    denied.verdicts.denied = 1;
    denied.verdict = Some(Outcome::Denied);
    let text = dot(&answer(vec![denied]));
    assert!(
        text.contains("\\n2 allowed, 1 denied\", color=red, fontcolor=red];\n"),
        "{text}"
    );
    // Every quote in the output is either a delimiter or escaped: an
    // even number of unescaped quotes per line.
    for line in text.lines() {
        let unescaped = line
            .replace("\\\\", "")
            .replace("\\\"", "")
            .matches('"')
            .count();
        assert_eq!(unescaped % 2, 0, "{line}");
    }
    assert_eq!(dot_escape("a\nb\r"), "a\\nb");
}

#[test]
fn table_rows_and_units() {
    let r = row(&edge("a", "b", 443, 3));
    assert_eq!(
        r,
        [
            "a",
            "b",
            "443/tcp",
            "3",
            "1572864",
            "2023-11-14T22:13:20.000Z",
            "2023-11-14T22:14:20.000Z",
            "-",
            "-"
        ]
    );
    let mut watched = edge("a", "b", 443, 3);
    watched.verdicts.would_deny = 1;
    watched.verdicts.allowed = 2;
    watched.verdict = Some(Outcome::WouldDeny);
    assert_eq!(
        row(&watched)[7..],
        ["would-deny", "2 allowed, 1 would-deny"]
    );
    let mut icmp = edge("a", "b", 0, 1);
    icmp.protocol = Protocol::Icmp;
    assert_eq!(port(&icmp), "icmp");
    assert_eq!(bytes(0), "0 B");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(1024), "1.0 KiB");
    assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
}

fn graph_args(args: &[&str]) -> Result<GraphArgs, clap::Error> {
    let all = ["hallmark", "flows", "graph"].iter().chain(args);
    Cli::try_parse_from(all).map(|c| match c.command {
        Command::Flows {
            command: super::super::FlowsCommand::Graph(a),
        } => a,
        other => panic!("parsed as {other:?}"),
    })
}

#[test]
fn flags_and_defaults() {
    let a = graph_args(&[]).unwrap();
    assert_eq!(a.by, GraphBy::SpiffeId);
    assert_eq!(a.format, GraphFormat::Table);
    let now = 1_765_000_000_000;
    let req = graph_request(&a, now).unwrap();
    assert_eq!(req.since_ms, now - 86_400_000);
    assert_eq!(req.until_ms, None);

    let a = graph_args(&["--by", "context"]).unwrap();
    assert_eq!(a.by, GraphBy::Context);
    let a = graph_args(&["--by", "namespace", "--json"]).unwrap();
    assert_eq!(a.by, GraphBy::Namespace);
    assert_eq!(format_of(&a).unwrap(), GraphFormat::Json);
    let a = graph_args(&["--format", "dot", "--json"]).unwrap();
    assert!(format_of(&a).unwrap_err().to_string().contains("disagree"));

    let e = graph_args(&["--by", "pod"]).unwrap_err().to_string();
    assert!(
        e.contains("`pod` is not spiffe-id, workload, namespace, service or context"),
        "{e}"
    );
    let e = graph_args(&["--format", "xml"]).unwrap_err().to_string();
    assert!(e.contains("xml") && e.contains("table, json, dot"), "{e}");
    let a = graph_args(&["--since", "2h", "--until", "3h"]).unwrap();
    let e = graph_request(&a, now).unwrap_err().to_string();
    assert!(e.contains("is not after --since"), "{e}");
}
