#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;

#[test]
fn ip_columns_round_trip_and_cidrs_are_ranges() {
    for text in ["10.0.4.15", "0.0.0.0", "255.255.255.255", "fd00::1", "::"] {
        let ip: IpAddr = text.parse().unwrap();
        assert_eq!(parse_ip_column(&ip_column(ip)), Some(ip), "{text}");
    }
    assert_eq!(parse_ip_column(&[4, 1, 2, 3]), None);
    assert_eq!(parse_ip_column(&[5, 1, 2, 3, 4]), None);
    let (lo, hi) = cidr_range(&"10.0.0.0/16".parse().unwrap());
    assert_eq!(lo, ip_column("10.0.0.0".parse().unwrap()));
    assert_eq!(hi, ip_column("10.0.255.255".parse().unwrap()));
    let inside = ip_column("10.0.4.15".parse().unwrap());
    let outside = ip_column("10.1.0.0".parse().unwrap());
    // Stored bytes compare as the database compares them.
    assert!(lo <= inside && inside <= hi);
    assert!(outside > hi);
    let v6 = ip_column("a00::1".parse().unwrap());
    assert!(v6 > hi, "families never interleave");
    let (lo, hi) = cidr_range(&"0.0.0.0/0".parse().unwrap());
    assert_eq!(hi, ip_column("255.255.255.255".parse().unwrap()));
    assert_eq!(lo, ip_column("0.0.0.0".parse().unwrap()));
    let (lo, hi) = cidr_range(&"fd00::/8".parse().unwrap());
    assert_eq!(lo, ip_column("fd00::".parse().unwrap()));
    assert_eq!(
        hi,
        ip_column("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap())
    );
}

#[test]
fn enumerations_round_trip() {
    for i in [
        Initiator::Source,
        Initiator::Destination,
        Initiator::Unknown,
    ] {
        assert_eq!(parse_initiator(initiator_column(i)), Some(i));
    }
    for o in [
        TcpOutcome::Established,
        TcpOutcome::Refused,
        TcpOutcome::Reset,
        TcpOutcome::TimedOut,
    ] {
        assert_eq!(parse_outcome(outcome_column(o)), Some(o));
        // The stored name is the serde name.
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            format!("\"{}\"", outcome_column(o))
        );
    }
    for k in [
        EvidenceKind::Started,
        EvidenceKind::Heartbeat,
        EvidenceKind::Stopped,
        EvidenceKind::LocalFlow,
    ] {
        assert_eq!(EvidenceKind::parse(k.as_str()), Some(k));
    }
    for r in [
        Reporter::Agent("n1".into()),
        Reporter::Exporter("[fd00::1]:2055".parse().unwrap()),
        Reporter::File("logs/a:b.log".into()),
        Reporter::File(String::new()),
    ] {
        assert_eq!(parse_reporter(&reporter_column(&r)), Some(r));
    }
    assert_eq!(parse_reporter("bogus"), None);
    assert_eq!(parse_reporter("exporter:nope"), None);
}

#[test]
fn minutes_round_both_ways() {
    assert_eq!(minute_of(120_001), 120_000);
    assert_eq!(minute_of(-1), -60_000);
    assert_eq!(minute_ceil(120_000), 120_000);
    assert_eq!(minute_ceil(120_001), 180_000);
    assert_eq!(
        minute_ceil(i64::MAX),
        minute_of(i64::MAX).saturating_add(60_000)
    );
}
