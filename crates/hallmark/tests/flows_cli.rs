//! `hallmark flows` without a server: flags, filters, times and formats are
//! checked before any connection, and refusals name the input and the rule;
//! when the server is away, `ingest` says so instead of reading the file.

mod common;

use std::fs;

use common::*;

/// Runs `hallmark flows ARGS` against an admin socket nobody listens on.
fn flows(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    let socket = dir.path().join("admin.sock");
    let socket = socket.to_str().expect("temp path is UTF-8");
    let mut all = vec!["flows"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--admin-socket", socket]);
    run(&mut hallmark_cmd(&all), CLI_TIMEOUT)
}

#[test]
fn bad_filters_flags_and_formats_are_refused_naming_the_rule() {
    let dir = short_tempdir();
    // Each refusal happens before connecting: none mentions the socket.
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["list", "--from", "payments"],
            &[
                "--from",
                "endpoint filter `payments`",
                "use a SPIFFE ID or prefix",
            ],
        ),
        (
            &["list", "--to", "label:app"],
            &["--to", "label: needs KEY=VALUE"],
        ),
        (
            &["list", "--from", "spiffe://td/a*/b"],
            &["last path segment"],
        ),
        (
            &["list", "--status", "good"],
            &["--status", "`good` is not attributed"],
        ),
        (
            &["list", "--verdict", "blocked"],
            &[
                "--verdict",
                "verdict `blocked` is not one of allowed, denied (or deny)",
            ],
        ),
        (
            &["list", "--protocol", "tcpx"],
            &["--protocol", "protocol `tcpx`"],
        ),
        (
            &["list", "--limit", "0"],
            &["--limit", "must be at least 1"],
        ),
        (
            &["list", "--since", "yesterday"],
            &["--since: `yesterday` is not a time"],
        ),
        (
            &["list", "--until", "1765000000000"],
            &["--until", "milliseconds given"],
        ),
        (
            &["list", "--since", "1h", "--until", "2h"],
            &["is not after --since"],
        ),
        (&["graph", "--format", "xml"], &["--format", "xml"]),
        (
            &["graph", "--by", "pod"],
            &["--by", "`pod` is not spiffe-id"],
        ),
        (
            &["graph", "--json", "--format", "dot"],
            &["--json and --format dot disagree"],
        ),
        (
            &["whois", "10.0.4"],
            &["`10.0.4` is not an IPv4 or IPv6 address"],
        ),
        (
            &["whois", "10.0.4.15", "--at", "noon"],
            &["--at: `noon` is not a time"],
        ),
        (&["ingest", "x.log"], &["--format"]),
        (
            &["ingest", "--format", "netflow", "x.log"],
            &["netflow", "aws-vpc, jsonl"],
        ),
    ];
    for (args, needles) in cases {
        let out = flows(&dir, args).fails().stderr_has(needles);
        assert!(
            !out.stderr.contains("is the server running"),
            "checked after connecting:\n{out}"
        );
    }
}

#[test]
fn ingest_without_a_server_says_so() {
    let dir = short_tempdir();
    let file = dir.path().join("vpc.log");
    fs::write(
        &file,
        "2 123456789010 eni-1 10.0.1.5 10.0.2.7 49761 443 6 20 4249 1700000000 1700000060 ACCEPT OK\n\
         2 123456789010 eni-1 10.0.1.5\n\
         not a flow line at all\n",
    )
    .expect("write flow log");
    let path = file.to_str().expect("temp path is UTF-8");
    flows(&dir, &["ingest", "--format", "aws-vpc", path])
        .fails()
        .stderr_has(&["admin.sock", "is the server running?"]);

    let missing = dir.path().join("missing.log");
    flows(
        &dir,
        &[
            "ingest",
            "--format",
            "jsonl",
            missing.to_str().expect("UTF-8"),
        ],
    )
    .fails()
    .stderr_has(&["opening", "missing.log", "No such file"]);

    let gz = dir.path().join("vpc.log.gz");
    fs::write(&gz, [0x1f, 0x8b, 8, 0]).expect("write gz");
    flows(
        &dir,
        &["ingest", "--format", "aws-vpc", gz.to_str().expect("UTF-8")],
    )
    .fails()
    .stderr_has(&["gzip-compressed", "zcat"]);
}

#[test]
fn queries_without_a_server_say_so() {
    let dir = short_tempdir();
    for args in [
        &["list"][..],
        &["list", "--follow"],
        &["graph", "--format", "dot"],
        &["whois", "10.0.4.15"],
        &["stats", "--json"],
    ] {
        flows(&dir, args)
            .fails()
            .stderr_has(&["admin.sock", "is the server running?"]);
    }
}

#[test]
fn help_documents_the_exit_status() {
    let out = run(
        &mut hallmark_cmd(&["flows", "ingest", "--help"]),
        CLI_TIMEOUT,
    )
    .ok();
    for needle in [
        "Exit status: 0 when the whole input was read",
        "NODATA",
        "pkt-srcaddr",
    ] {
        assert!(out.stdout.contains(needle), "want {needle:?}:\n{out}");
    }
}

#[test]
fn ingest_from_stdin_connects_before_waiting_for_input() {
    let dir = short_tempdir();
    let socket = dir.path().join("admin.sock");
    // stdin stays open and empty: a live pipe with nothing to say yet.
    let mut cmd = hallmark_cmd(&[
        "flows",
        "ingest",
        "--format",
        "jsonl",
        "-",
        "--admin-socket",
    ]);
    cmd.arg(&socket).stdin(std::process::Stdio::piped());
    let out = run(&mut cmd, CLI_TIMEOUT);
    out.fails().stderr_has(&["is the server running?"]);
}

#[test]
fn bad_server_flow_settings_stop_the_server_naming_the_key() {
    let dir = short_tempdir();
    let data = dir.path().join("server");
    let data = data.to_str().expect("temp path is UTF-8");
    for (flags, needles) in [
        (
            &["--clock-skew", "2m"][..],
            &["clock_skew `2m`", "between 0s and 1m"][..],
        ),
        (&["--network", "corp"], &["--network", "NAME=CIDR"]),
        (
            &["--network", "corp=10.8.0.1/16"],
            &["did you mean 10.8.0.0/16"],
        ),
        (
            &["--ownership-heartbeat", "50ms"],
            &["ownership_heartbeat `50ms`", "between 100ms and 1h"],
        ),
        (&["--attribution-holdback", "2h"], &["attribution_holdback"]),
        (&["--flow-retention", "10s"], &["flow_retention `10s`"]),
        (&["--graph-retention", "soon"], &["graph_retention `soon`"]),
        (
            &["--flow-collector-listen", "nope"],
            &["flow_collector_listen `nope`"],
        ),
        // Lifetimes stay whole seconds.
        (
            &["--agent-svid-ttl", "1500ms"],
            &["agent_svid_ttl", "whole seconds"],
        ),
    ] {
        let mut args = vec![
            "server",
            "run",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(flags);
        run(&mut hallmark_cmd(&args), CLI_TIMEOUT)
            .fails()
            .stderr_has(needles);
    }
}
