use super::*;

/// Writes a `struct flow_event` the way the C side lays it out.
#[allow(clippy::too_many_arguments)]
fn event(
    kind: u8,
    outcome: u8,
    family: u8,
    laddr: &[u8],
    lport: u16,
    raddr: &[u8],
    rport: u16,
) -> Vec<u8> {
    let mut b = vec![0u8; EVENT_SIZE];
    b[0..8].copy_from_slice(&0xffff_8880_1234_5678u64.to_ne_bytes());
    b[8..16].copy_from_slice(&4242u64.to_ne_bytes());
    b[16..24].copy_from_slice(&100u64.to_ne_bytes());
    b[24..32].copy_from_slice(&900u64.to_ne_bytes());
    b[32..40].copy_from_slice(&100_000u64.to_ne_bytes());
    b[40..48].copy_from_slice(&5_000u64.to_ne_bytes());
    b[48..56].copy_from_slice(&30u64.to_ne_bytes());
    b[56..64].copy_from_slice(&20u64.to_ne_bytes());
    b[64..68].copy_from_slice(&3u32.to_ne_bytes());
    b[68..72].copy_from_slice(&57u32.to_ne_bytes());
    b[72] = kind;
    b[73] = outcome;
    b[74] = 1;
    b[75] = family;
    b[76..78].copy_from_slice(&lport.to_ne_bytes());
    b[78..80].copy_from_slice(&rport.to_ne_bytes());
    b[80..80 + laddr.len()].copy_from_slice(laddr);
    b[96..96 + raddr.len()].copy_from_slice(raddr);
    b
}

#[test]
fn closed_ipv4_event_reads_every_field() {
    let b = event(
        KIND_CLOSED,
        2,
        4,
        &[127, 0, 0, 1],
        40000,
        &[10, 1, 2, 3],
        443,
    );
    let Record::Ended(e) = parse_event(&b).unwrap() else {
        panic!("not an ended record");
    };
    assert_eq!(e.sock, 0xffff_8880_1234_5678);
    assert_eq!(e.cgroup_id, 4242);
    assert_eq!(e.local, "127.0.0.1:40000".parse().unwrap());
    assert_eq!(e.remote, "10.1.2.3:443".parse().unwrap());
    assert!(e.initiated);
    assert_eq!((e.start_ns, e.end_ns), (100, 900));
    assert_eq!((e.bytes_sent, e.bytes_received), (100_000, 5_000));
    assert_eq!((e.packets_sent, e.packets_received), (30, 20));
    assert_eq!((e.retransmits, e.srtt_us), (3, 57));
    assert_eq!(e.outcome, Outcome::Reset);
}

#[test]
fn ipv6_open_and_listen_records() {
    let l6: [u8; 16] = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
    let r6: [u8; 16] = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
    let b = event(KIND_OPEN, 0, 6, &l6, 8080, &r6, 5555);
    let Record::Open(e) = parse_event(&b).unwrap() else {
        panic!("not an open record");
    };
    assert_eq!(e.local, "[fd00::1]:8080".parse().unwrap());
    assert_eq!(e.remote, "[fd00::2]:5555".parse().unwrap());
    assert_eq!(e.outcome, Outcome::Established);

    let b = event(KIND_LISTEN, 0, 4, &[0, 0, 0, 0], 8443, &[], 0);
    assert_eq!(
        parse_event(&b).unwrap(),
        Record::Listen(Listener {
            cgroup_id: 4242,
            local: "0.0.0.0:8443".parse().unwrap()
        })
    );
}

#[test]
fn failed_outcomes_map_from_their_codes() {
    for (code, want) in [
        (0, Outcome::Established),
        (1, Outcome::Refused),
        (2, Outcome::Reset),
        (3, Outcome::TimedOut),
    ] {
        let b = event(KIND_FAILED, code, 4, &[127, 0, 0, 1], 1, &[127, 0, 0, 1], 2);
        let Record::Ended(e) = parse_event(&b).unwrap() else {
            panic!("not an ended record");
        };
        assert_eq!(e.outcome, want);
    }
}

#[test]
fn malformed_records_are_rejected_with_the_rule() {
    let good = event(KIND_CLOSED, 0, 4, &[127, 0, 0, 1], 1, &[127, 0, 0, 1], 2);
    assert_eq!(
        parse_event(&good[..111]),
        Err(RecordError::Size {
            got: 111,
            want: EVENT_SIZE
        })
    );
    let b = event(9, 0, 4, &[127, 0, 0, 1], 1, &[127, 0, 0, 1], 2);
    assert_eq!(parse_event(&b), Err(RecordError::Kind(9)));
    let b = event(KIND_CLOSED, 0, 2, &[127, 0, 0, 1], 1, &[127, 0, 0, 1], 2);
    assert_eq!(parse_event(&b), Err(RecordError::Family(2)));
    let b = event(KIND_CLOSED, 7, 4, &[127, 0, 0, 1], 1, &[127, 0, 0, 1], 2);
    assert_eq!(parse_event(&b), Err(RecordError::Outcome(7)));
    assert!(RecordError::Family(2)
        .to_string()
        .contains("expected 4 or 6"));
}

#[test]
fn iterator_stream_is_split_into_records() {
    let mut s = event(KIND_LISTEN, 0, 4, &[0, 0, 0, 0], 80, &[], 0);
    s.extend(event(
        KIND_OPEN,
        0,
        4,
        &[127, 0, 0, 1],
        80,
        &[127, 0, 0, 1],
        5000,
    ));
    let recs = parse_events(&s).unwrap();
    assert_eq!(recs.len(), 2);
    assert!(matches!(recs[0], Record::Listen(_)));
    assert!(matches!(recs[1], Record::Open(_)));
    assert!(parse_events(&[]).unwrap().is_empty());
    assert!(matches!(
        parse_events(&s[..150]),
        Err(RecordError::Size { got: 38, .. })
    ));
}

#[test]
fn udp_entry_reads_key_and_value() {
    let mut key = [0u8; UDP_KEY_SIZE];
    key[0..8].copy_from_slice(&77u64.to_ne_bytes());
    key[8..12].copy_from_slice(&[127, 0, 0, 1]);
    key[24..28].copy_from_slice(&[127, 0, 0, 2]);
    key[40..42].copy_from_slice(&5353u16.to_ne_bytes());
    key[42..44].copy_from_slice(&53u16.to_ne_bytes());
    key[44] = 4;
    let mut val = [0u8; UDP_VAL_SIZE];
    for (i, v) in [10u64, 20, 300, 3, 400, 4].into_iter().enumerate() {
        val[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
    }
    val[48] = 1;
    let f = parse_udp(&key, &val, true).unwrap();
    assert_eq!(
        f,
        UdpFlow {
            cgroup_id: 77,
            local: "127.0.0.1:5353".parse().unwrap(),
            remote: "127.0.0.2:53".parse().unwrap(),
            initiated: true,
            first_ns: 10,
            last_ns: 20,
            bytes_sent: 300,
            packets_sent: 3,
            bytes_received: 400,
            packets_received: 4,
            closed: true,
        }
    );
    assert_eq!(udp_last_ns(&val), 20);
    key[44] = 0;
    assert_eq!(parse_udp(&key, &val, false), Err(RecordError::Family(0)));
}

#[test]
fn outcome_labels_are_stable() {
    let labels: Vec<_> = [
        Outcome::Established,
        Outcome::Refused,
        Outcome::Reset,
        Outcome::TimedOut,
    ]
    .into_iter()
    .map(Outcome::as_str)
    .collect();
    assert_eq!(labels, ["established", "refused", "reset", "timed-out"]);
}
