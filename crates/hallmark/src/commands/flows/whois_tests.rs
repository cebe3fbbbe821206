#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use hallmark_flows::api::{WhoisEvidence, WhoisRange};
use hallmark_flows::{Endpoint, EvidenceKind, WorkloadEndpoint};

use super::*;

fn ledger() -> Endpoint {
    Endpoint::Workload(WorkloadEndpoint {
        context: "prod".into(),
        node: "n1".into(),
        container_id: "ab".repeat(32),
        name: "ledger".into(),
        spiffe_ids: vec!["spiffe://td/ledger".into()],
        ..WorkloadEndpoint::default()
    })
}

#[test]
fn whois_shows_verdict_owner_ranges_and_evidence() {
    let ip: IpAddr = "10.0.4.15".parse().unwrap();
    let t = 1_700_000_000_000;
    let a = WhoisAnswer {
        ip,
        at_ms: t,
        verdict: WhoisVerdict::Owned,
        owners: vec![ledger()],
        network: None,
        explanation: "held by one owner, proven 8s before and 2s after".into(),
        ranges: vec![WhoisRange {
            key: OwnershipKey::ip(ip),
            owner: ledger(),
            first_ms: t - 8_000,
            last_ms: t + 2_000,
            started: true,
            stopped: false,
            points: 3,
        }],
        evidence: vec![WhoisEvidence {
            key: OwnershipKey::port(ip, 8080),
            owner: ledger(),
            at_ms: t - 8_000,
            kind: EvidenceKind::Started,
        }],
    };
    let text = render_whois(&a);
    for needle in [
        "10.0.4.15 at 2023-11-14T22:13:20.000Z: owned\n",
        "  owner: spiffe://td/ledger [context prod, node n1, container abababababab, name ledger]\n",
        "held by one owner, proven 8s before and 2s after\n",
        "Ranges (1):\n  ADDRESS    OWNER",
        "10.0.4.15  spiffe://td/ledger  2023-11-14T22:13:12.000Z (start)  2023-11-14T22:13:22.000Z  3",
        "Evidence (1):\n",
        "2023-11-14T22:13:12.000Z  started  10.0.4.15:8080  spiffe://td/ledger",
    ] {
        assert!(text.contains(needle), "want `{needle}` in:\n{text}");
    }
    let unknown = WhoisAnswer {
        verdict: WhoisVerdict::Unknown,
        owners: vec![],
        ranges: vec![],
        evidence: vec![],
        explanation: "no evidence was ever recorded for 10.0.4.15".into(),
        ..a
    };
    let text = render_whois(&unknown);
    assert!(text.contains(": unknown\n"), "{text}");
    assert!(
        text.contains("No evidence recorded near the instant."),
        "{text}"
    );
    assert!(!text.contains("Ranges"), "{text}");
    assert_eq!(
        key(&OwnershipKey::port("fd00::1".parse().unwrap(), 80)),
        "[fd00::1]:80"
    );
}

#[test]
fn whois_arguments() {
    assert_eq!(
        parse_ip("[fd00::1]").unwrap(),
        "fd00::1".parse::<IpAddr>().unwrap()
    );
    let e = parse_ip("10.0.4").unwrap_err();
    assert_eq!(e, "`10.0.4` is not an IPv4 or IPv6 address");
    let args = |at: Option<&str>| WhoisArgs {
        ip: "10.0.4.15".parse().unwrap(),
        at: at.map(str::to_string),
        conn: AdminArgs {
            admin_socket: None,
            admin_addr: None,
            admin_credentials: None,
            json: false,
        },
    };
    let now = 1_765_000_000_000;
    assert_eq!(whois_request(&args(None), now).unwrap().at_ms, now);
    assert_eq!(
        whois_request(&args(Some("10m")), now).unwrap().at_ms,
        now - 600_000
    );
    let e = whois_request(&args(Some("03:12")), now)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--at: `03:12` is not a time"), "{e}");
}

#[test]
fn stats_lists_every_counter() {
    let s = FlowStatsAnswer {
        ingested: [("agent".into(), 10), ("file".into(), 5)].into(),
        rejected: [("port-zero".into(), 1)].into(),
        attributed: 11,
        external: 1,
        unattributed: 2,
        unattributed_ends: [("late".into(), 1), ("no-owner".into(), 2)].into(),
        held: 4,
        held_total: 9,
        evidence: [("heartbeat".into(), 100)].into(),
        ownership_ranges: 7,
        ownership_addresses: 5,
        stored_flows: 14,
        stored_graph_rows: 3,
        stored_evidence: 100,
        stored_pending: 4,
    };
    let text = render_stats(&s);
    for needle in [
        "Ingested          : 15\n",
        "  from agent      : 10\n",
        "  from file       : 5\n",
        "Rejected          : 1\n",
        "  port-zero       : 1\n",
        "Attributed        : 11\n",
        "External          : 1\n",
        "Unattributed      : 2\n",
        "Unattributed ends : 3\n",
        "  no-owner        : 2\n",
        "Held back now     : 4\n",
        "Held back (total) : 9\n",
        "Evidence          : 100\n",
        "Ownership index   : 7 ranges over 5 addresses\n",
        "Stored            : 14 flows, 3 graph rows, 100 evidence, 4 pending\n",
    ] {
        assert!(text.contains(needle), "want `{needle}` in:\n{text}");
    }
}
