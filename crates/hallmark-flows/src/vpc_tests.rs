#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;
use crate::flow::Side;

fn flow(format: &VpcFormat, line: &str) -> Flow {
    match format.parse(line, "f.log").unwrap() {
        VpcRecord::Flow(f) => *f,
        other => panic!("{line}: {other:?}"),
    }
}

#[test]
fn default_format_records() {
    let v2 = VpcFormat::default();
    let f = flow(
        &v2,
        "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
    );
    assert_eq!(f.src, "172.31.16.139:20641".parse().unwrap());
    assert_eq!(
        f.addr(Side::Destination),
        "172.31.16.21:22".parse().unwrap()
    );
    assert_eq!(f.protocol, Protocol::Tcp);
    assert_eq!((f.packets_sent, f.bytes_sent), (20, 4249));
    assert_eq!(
        (f.start_ms, f.end_ms),
        (1_418_530_010_000, 1_418_530_070_000)
    );
    assert_eq!(f.reporter, Reporter::File("f.log".into()));
    assert_eq!(f.initiator, Initiator::Unknown);

    // ICMP has no ports.
    let icmp = flow(
        &v2,
        "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 4 336 1432917027 1432917142 ACCEPT OK",
    );
    assert_eq!(icmp.protocol, Protocol::Icmp);

    // IPv6 is a flow like any other.
    let v6 = flow(
        &v2,
        "2 123456789010 eni-1 2001:db8::1 2001:db8::2 40000 443 6 3 180 1418530010 1418530070 REJECT OK",
    );
    assert!(v6.src.is_ipv6());

    for (line, want) in [
        (
            "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
            VpcRecord::NoData,
        ),
        (
            "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA",
            VpcRecord::SkipData,
        ),
    ] {
        assert_eq!(v2.parse(line, "f").unwrap(), want);
    }
}

#[test]
fn custom_format_with_packet_addresses_and_tcp_flags() {
    let header = "version vpc-id subnet-id instance-id interface-id account-id type srcaddr dstaddr srcport dstport pkt-srcaddr pkt-dstaddr protocol bytes packets start end action tcp-flags log-status";
    assert!(VpcFormat::is_header(header));
    assert!(!VpcFormat::is_header("2 123 eni-1 - -"));
    let custom = VpcFormat::from_header(header).unwrap();
    // Behind a NAT gateway: the packet addresses are the workloads'.
    let f = flow(
        &custom,
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.1.5 10.0.0.220 39812 80 10.0.1.5 203.0.113.5 6 3477 9 1566848875 1566848933 ACCEPT 2 OK",
    );
    assert_eq!(f.dst, "203.0.113.5:80".parse().unwrap());
    assert_eq!(
        f.initiator,
        Initiator::Source,
        "SYN alone: the source connected"
    );
    let f = flow(
        &custom,
        "3 vpc-1 subnet-1 - eni-1 123 IPv4 10.0.0.62 52.213.180.42 5001 43416 - - 6 568 8 1566848875 1566848933 ACCEPT 18 OK",
    );
    assert_eq!(
        f.src,
        "10.0.0.62:5001".parse().unwrap(),
        "`-` packet addresses fall back"
    );
    assert_eq!(
        f.initiator,
        Initiator::Destination,
        "SYN-ACK: the source accepted"
    );

    let console = VpcFormat::from_header("${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end}").unwrap();
    flow(
        &console,
        "10.0.0.1 10.0.0.2 1000 2000 17 1 60 1700000000 1700000001",
    );
}

#[test]
fn each_rule_is_named() {
    assert_eq!(
        VpcFormat::from_header("version srcaddr dstadr").unwrap_err(),
        VpcError::UnknownField("dstadr".into())
    );
    assert_eq!(
        VpcFormat::from_header("srcaddr srcaddr").unwrap_err(),
        VpcError::DuplicateField("srcaddr".into())
    );
    assert_eq!(
        VpcFormat::from_header("version srcaddr dstaddr").unwrap_err(),
        VpcError::MissingField("srcport")
    );
    let v2 = VpcFormat::default();
    let ok = "2 1 eni-1 10.0.0.1 10.0.0.2 40000 443 6 3 180 1700000000 1700000060 ACCEPT OK";
    let cases: &[(&str, &str)] = &[
        (
            "2 1 eni-1 10.0.0.1 10.0.0.2 40000 443 6 3 180 1700000000",
            "record has 11 fields, the format has 14",
        ),
        (
            "2 1 eni-1 10.0.0.999 10.0.0.2 40000 443 6 3 180 1700000000 1700000060 ACCEPT OK",
            "field `srcaddr`: `10.0.0.999` is not an IPv4 or IPv6 address",
        ),
        (
            "2 1 eni-1 10.0.0.1 10.0.0.2 40000 99999 6 3 180 1700000000 1700000060 ACCEPT OK",
            "field `dstport`",
        ),
        (
            "2 1 eni-1 10.0.0.1 10.0.0.2 0 443 6 3 180 1700000000 1700000060 ACCEPT OK",
            "source port is 0",
        ),
        (
            "2 1 eni-1 10.0.0.1 10.0.0.2 40000 443 6 3 180 1700000060 1700000000 ACCEPT OK",
            "time going backwards",
        ),
        (
            "2 1 eni-1 10.0.0.1 10.0.0.2 40000 443 6 3 180 99999999999999 99999999999999 ACCEPT OK",
            "outside 2000-01-01",
        ),
        (
            "2 1 eni-1 10.0.0.1 10.0.0.2 40000 443 6 3 180 -5 1700000060 ACCEPT OK",
            "start time -5000 ms is outside",
        ),
        (
            "2 1 eni-1 10.0.0.1 2001:db8::2 40000 443 6 3 180 1700000000 1700000060 ACCEPT OK",
            "not of the same IP version",
        ),
        (
            "2 1 eni-1 - 10.0.0.2 40000 443 6 3 180 1700000000 1700000060 ACCEPT OK",
            "field `srcaddr` is `-`",
        ),
        (
            "2 1 eni-1 10.0.0.1 10.0.0.2 40000 443 6 3 180 1700000000 1700000060 ACCEPT MAYBE",
            "log-status",
        ),
    ];
    assert!(v2.parse(ok, "f").is_ok());
    for (line, want) in cases {
        let err = v2.parse(line, "f").unwrap_err().to_string();
        assert!(err.contains(want), "{line}\n  gave: {err}\n  want: {want}");
    }
}
