use super::*;

#[test]
fn rounds_compare_medians() {
    let r = Rounds::new(vec![100.0, 90.0, 110.0], vec![95.0, 80.0, 99.0]);
    assert_eq!(r.off_median, Some(100.0));
    assert_eq!(r.on_median, Some(95.0));
    assert_eq!(r.ratio, Some(0.95));
    assert_eq!(Rounds::spread(&r.off), "90.0–110");
    // No baseline: no ratio, rather than a division by zero.
    let r = Rounds::new(vec![0.0, 0.0, 0.0], vec![1.0, 1.0, 1.0]);
    assert_eq!(r.ratio, None);
    assert_eq!(Rounds::spread(&[]), "-");
}

#[test]
fn cpu_per_ten_thousand_flows() {
    // 0.5 s for 100,000 records: 5 µs each, 5% of a core at 10,000/s.
    let c = Cpu::of(100_000, 0.5);
    assert!((c.us_per_record.unwrap() - 5.0).abs() < 1e-9);
    assert!((c.percent_core_at_10k.unwrap() - 5.0).abs() < 1e-9);
    let none = Cpu::of(0, 0.2);
    assert_eq!(none.us_per_record, None);
    assert_eq!(none.percent_core_at_10k, None);
}

#[test]
fn map_fdinfo_is_read_and_other_fds_are_not() {
    let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t1\nkey_size:\t8\nvalue_size:\t96\nmax_entries:\t262144\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t29384704\nmap_id:\t42\nfrozen:\t0\n";
    assert_eq!(
        parse_map_fdinfo(map),
        Some(MapMemory {
            map_type: 1,
            max_entries: 262_144,
            memlock_bytes: 29_384_704,
        })
    );
    let file = "pos:\t0\nflags:\t0100002\nmnt_id:\t27\nino:\t3\n";
    assert_eq!(parse_map_fdinfo(file), None);
    let prog =
        "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\nmemlock:\t4096\nprog_id:\t9\n";
    assert_eq!(parse_map_fdinfo(prog), None);
    let garbled = "map_type:\tx\nmax_entries:\t1\nmemlock:\t1\n";
    assert_eq!(parse_map_fdinfo(garbled), None);
}

#[test]
fn quick_shortens_and_bad_values_are_named() {
    let base = CaptureArgs {
        rounds: 3,
        round_secs: 3.0,
        clients: 2,
        open_pairs: 50_000,
        connections: 200,
        pace_ms: 25,
        quick: true,
    };
    let q = base.effective().unwrap();
    assert_eq!(
        (q.round_secs, q.open_pairs, q.connections),
        (1.0, 10_000, 50)
    );
    let few = CaptureArgs {
        rounds: 2,
        ..base.clone()
    };
    assert!(few
        .effective()
        .unwrap_err()
        .to_string()
        .contains("--rounds 2"));
    let short = CaptureArgs {
        round_secs: 0.0,
        quick: false,
        ..base
    };
    assert!(short
        .effective()
        .unwrap_err()
        .to_string()
        .contains("--round-secs"));
}

#[test]
fn the_connection_loop_counts_closed_connections() {
    let acceptors = loops::Acceptors::start(2).unwrap();
    let c = loops::connection_round(&acceptors.addrs, 1, Duration::from_millis(200));
    assert!(c.completed > 10, "{c:?}");
    assert_eq!(c.failed, 0, "{c:?}");
}

#[test]
fn the_bulk_stream_moves_whole_buffers() {
    let (bytes, elapsed) = loops::bulk_round(Duration::from_millis(100)).unwrap();
    assert!(bytes >= loops::BULK_BUFFER as u64, "{bytes}");
    assert_eq!(bytes % loops::BULK_BUFFER as u64, 0);
    assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
}

#[test]
fn open_pairs_hold_both_ends() {
    let open = loops::open_pairs(50, 3).unwrap();
    assert_eq!(open.pairs.len(), 50);
    assert!(open.short_because.is_none());
    for (c, s) in &open.pairs {
        assert_eq!(c.local_addr().unwrap(), s.peer_addr().unwrap());
    }
}

#[test]
fn holder_lines() {
    assert_eq!(loops::parse_hold_line("open 9000"), Some((9000, None)));
    assert_eq!(
        loops::parse_hold_line("open 12 short: connection 13 of 9000: connect: refused"),
        Some((12, Some("connection 13 of 9000: connect: refused".into())))
    );
    assert_eq!(loops::parse_hold_line("machine: 2 CPUs"), None);
    assert_eq!(loops::parse_hold_line("open many"), None);
}

#[test]
fn kernel_round_figures() {
    let k = KernelRound {
        runs: 2_200,
        seconds: 0.0003,
        units: 100,
        elapsed_seconds: 0.03,
        programs: Vec::new(),
    };
    assert!((k.us_per_unit().unwrap() - 3.0).abs() < 1e-9);
    assert!((k.share_of_time().unwrap() - 0.01).abs() < 1e-12);
    let empty = KernelRound {
        units: 0,
        elapsed_seconds: 0.0,
        ..k.clone()
    };
    assert_eq!(empty.us_per_unit(), None);
    assert_eq!(empty.share_of_time(), None);
}

#[test]
fn the_paced_loop_keeps_its_rate() {
    let acceptors = loops::Acceptors::start(1).unwrap();
    let c = loops::paced_round(&acceptors.addrs, 200.0, Duration::from_millis(500));
    // 100 connections at 200/s over 0.5 s, give or take the last one.
    assert!((95..=101).contains(&c.completed), "{c:?}");
    assert_eq!(c.failed, 0);
}
