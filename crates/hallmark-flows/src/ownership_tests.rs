#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;

const HB: i64 = 10_000;
const SKEW: i64 = 500;
const T0: i64 = 1_700_000_000_000;

fn owner(c: &str) -> Owner {
    Owner::Workload {
        context: "lab".into(),
        node: "n1".into(),
        container_id: c.repeat(64),
    }
}

fn node() -> Owner {
    Owner::Node {
        context: "lab".into(),
        node: "n1".into(),
    }
}

const IP: &str = "10.0.0.5";

fn ev(o: &Owner, at: i64, kind: EvidenceKind) -> Evidence {
    Evidence {
        key: OwnershipKey::ip(IP.parse().unwrap()),
        owner: o.clone(),
        at_ms: T0 + at,
        kind,
    }
}

use EvidenceKind::*;

fn index(evidence: &[Evidence]) -> OwnershipIndex {
    let mut idx = OwnershipIndex::new(HB, SKEW);
    for e in evidence {
        idx.record(e);
    }
    idx
}

/// `Some(owner letter)`, or the lookup's kind.
fn answer(idx: &OwnershipIndex, at: i64) -> String {
    match idx.lookup(IP.parse().unwrap(), Some(443), T0 + at) {
        Lookup::Owned(p) => match idx.owners().get(p.owner).unwrap() {
            Owner::Workload { container_id, .. } => container_id[..1].to_string(),
            Owner::Node { .. } => "node".into(),
        },
        Lookup::Ambiguous(..) => "ambiguous".into(),
        Lookup::NoOwner => "no-owner".into(),
        Lookup::Pending => "pending".into(),
        Lookup::Unknown => "unknown".into(),
    }
}

#[test]
fn a_handoff_attributes_each_side_and_nothing_between() {
    let (a, c) = (owner("a"), owner("c"));
    // A holds the IP from 0 to 30 s; C from 33 s (IP handed over 3 s later).
    let idx = index(&[
        ev(&a, 0, Started),
        ev(&a, 10_000, Heartbeat),
        ev(&a, 20_000, Heartbeat),
        ev(&a, 30_000, Stopped),
        ev(&c, 33_000, Started),
        ev(&c, 43_000, Heartbeat),
        ev(&c, 53_000, Heartbeat),
        ev(&c, 63_000, Heartbeat),
        ev(&c, 73_000, Heartbeat),
    ]);
    for (at, want) in [
        (0, "ambiguous"), // within the skew of A's start
        (499, "ambiguous"),
        (500, "a"),
        (5_000, "a"),
        (29_500, "a"),
        (29_600, "ambiguous"), // within the skew of A's stop
        (30_000, "ambiguous"),
        (30_400, "ambiguous"), // within the skew of A's stop
        (31_000, "no-owner"),  // between tenures: evidence continues past it
        (32_600, "ambiguous"), // within the skew of C's start
        (33_000, "ambiguous"),
        (33_500, "c"),
        (50_000, "c"),
        (73_000, "c"),
        (73_300, "pending"), // C's range is open: its next heartbeat may hold it
        (74_000, "pending"),
        (-5_000, "no-owner"), // long before A: later evidence proves nobody
    ] {
        assert_eq!(answer(&idx, at), want, "at +{at} ms");
    }
    assert_eq!(idx.range_count(), 2);
}

#[test]
fn overlapping_claims_are_ambiguous_never_a_guess() {
    let (a, b) = (owner("a"), owner("b"));
    let idx = index(&[
        ev(&a, 0, Heartbeat),
        ev(&a, 10_000, Heartbeat),
        ev(&a, 20_000, Heartbeat),
        ev(&b, 15_000, Heartbeat),
        ev(&b, 25_000, Heartbeat),
    ]);
    assert_eq!(answer(&idx, 5_000), "a");
    assert_eq!(answer(&idx, 17_000), "ambiguous");
    // Only B is proven here: the conflict is where both claim.
    assert_eq!(answer(&idx, 22_000), "b");
    assert_eq!(answer(&idx, 24_000), "b");
}

#[test]
fn one_lost_heartbeat_keeps_the_range_two_break_it() {
    let a = owner("a");
    // 10 s heartbeats; the one at 20 s is lost: a 20 s gap still joins.
    let one_lost = index(&[
        ev(&a, 0, Heartbeat),
        ev(&a, 10_000, Heartbeat),
        ev(&a, 30_000, Heartbeat),
        ev(&a, 40_000, Heartbeat),
    ]);
    assert_eq!(answer(&one_lost, 20_000), "a");
    assert_eq!(one_lost.range_count(), 1);
    // 20 s and 30 s lost: 30 s without evidence is not proof of anything.
    let two_lost = index(&[
        ev(&a, 0, Heartbeat),
        ev(&a, 10_000, Heartbeat),
        ev(&a, 40_000, Heartbeat),
        ev(&a, 50_000, Heartbeat),
    ]);
    assert_eq!(two_lost.range_count(), 2);
    // The lost heartbeats may still arrive: wait, never guess.
    assert_eq!(answer(&two_lost, 25_000), "pending");
    assert_eq!(answer(&two_lost, 45_000), "a");
}

#[test]
fn evidence_in_any_order_builds_the_same_ranges() {
    let a = owner("a");
    let mut evidence = vec![
        ev(&a, 0, Started),
        ev(&a, 10_000, Heartbeat),
        ev(&a, 20_000, Heartbeat),
        ev(&a, 25_000, LocalFlow),
        ev(&a, 30_000, Heartbeat),
        ev(&a, 35_000, Stopped),
    ];
    let want = index(&evidence).ranges(OwnershipKey::ip(IP.parse().unwrap()));
    assert_eq!(want.len(), 1);
    assert!(want[0].started && want[0].stopped);
    // Every rotation and the reverse order.
    for shift in 0..evidence.len() {
        evidence.rotate_left(1);
        let got = index(&evidence).ranges(OwnershipKey::ip(IP.parse().unwrap()));
        assert_eq!(got, want, "rotation {shift}");
    }
    evidence.reverse();
    let got = index(&evidence).ranges(OwnershipKey::ip(IP.parse().unwrap()));
    assert_eq!(got, want, "reversed");
}

#[test]
fn start_and_stop_bound_a_range() {
    let a = owner("a");
    // A stale heartbeat stamped after the stop does not extend A.
    let idx = index(&[
        ev(&a, 0, Started),
        ev(&a, 10_000, Heartbeat),
        ev(&a, 12_000, Stopped),
        ev(&a, 15_000, Heartbeat),
        ev(&c_owner(), 40_000, Heartbeat),
    ]);
    assert_eq!(answer(&idx, 11_000), "a");
    let ranges = idx.ranges(OwnershipKey::ip(IP.parse().unwrap()));
    assert_eq!((ranges[0].last_ms - T0, ranges[0].stopped), (12_000, true));
    // The late heartbeat stands alone: a tenure whose start may still be
    // on its way, so the instant between waits rather than goes to A.
    assert_eq!(answer(&idx, 13_500), "pending");
    // A restarted later on the same IP: a new tenure, the gap unproven.
    let idx = index(&[
        ev(&a, 0, Started),
        ev(&a, 5_000, Stopped),
        ev(&a, 9_000, Started),
        ev(&a, 19_000, Heartbeat),
        ev(&a, 29_000, Heartbeat),
    ]);
    assert_eq!(idx.range_count(), 2);
    assert_eq!(answer(&idx, 7_000), "no-owner");
    assert_eq!(answer(&idx, 10_000), "a");
}

fn c_owner() -> Owner {
    owner("c")
}

#[test]
fn ports_of_a_shared_ip_answer_before_the_ip() {
    let ip: IpAddr = IP.parse().unwrap();
    let web = owner("w");
    let mut idx = OwnershipIndex::new(HB, SKEW);
    for at in [0, 10_000, 20_000, 30_000] {
        idx.record(&Evidence {
            key: OwnershipKey::ip(ip),
            owner: node(),
            at_ms: T0 + at,
            kind: Heartbeat,
        });
        idx.record(&Evidence {
            key: OwnershipKey::port(ip, 8080),
            owner: web.clone(),
            at_ms: T0 + at,
            kind: Heartbeat,
        });
    }
    let who = |port| match idx.lookup(ip, Some(port), T0 + 15_000) {
        Lookup::Owned(p) => idx.owners().get(p.owner).cloned(),
        other => panic!("port {port}: {other:?}"),
    };
    assert_eq!(who(8080), Some(web));
    assert_eq!(who(22), Some(node()));
    assert_eq!(
        idx.lookup(ip, None, T0 + 15_000),
        idx.lookup(ip, Some(22), T0 + 15_000)
    );
}

#[test]
fn unknown_addresses_and_pruning() {
    let a = owner("a");
    let mut idx = index(&[ev(&a, 0, Heartbeat), ev(&a, 10_000, Heartbeat)]);
    assert_eq!(
        idx.lookup("10.9.9.9".parse().unwrap(), None, T0),
        Lookup::Unknown
    );
    assert_eq!(idx.ip_count(), 1);
    assert_eq!(idx.prune(T0 + 5_000), 0, "range ends after the cut");
    assert_eq!(idx.prune(T0 + 10_001), 1);
    assert_eq!(idx.range_count(), 0);
    assert_eq!(idx.ip_count(), 0);
    assert_eq!(answer(&idx, 5_000), "unknown");
}

/// The lookup rules stated plainly: every range of the address is
/// considered, none skipped. The index's lookup skips ranges it can prove
/// say nothing about the instant; it must answer exactly as this does.
fn lookup_by_full_scan(tl: &Timeline, t: i64, max_gap: i64, skew: i64) -> Lookup {
    if tl.ranges.is_empty() {
        return Lookup::Unknown;
    }
    let mut holder: Option<RangeProof> = None;
    let mut near: Option<RangeProof> = None;
    let mut near_other: Option<RangeProof> = None;
    let mut may_grow = false;
    for r in &tl.ranges {
        if r.holds(t) {
            match holder {
                Some(h) if h.owner != r.owner => return Lookup::Ambiguous(h, *r),
                _ => holder = Some(*r),
            }
            continue;
        }
        if r.near(t, skew) {
            match near {
                None => near = Some(*r),
                Some(n) if n.owner != r.owner => near_other = Some(*r),
                Some(_) => {}
            }
        }
        may_grow |= could_grow_to(r, t, max_gap);
    }
    if let (Some(h), Some(n)) = (holder, near_other) {
        let other = if n.owner != h.owner {
            n
        } else {
            near.unwrap_or(n)
        };
        return Lookup::Ambiguous(h, other);
    }
    match (holder, near) {
        (Some(h), Some(n)) if n.owner != h.owner => Lookup::Ambiguous(h, n),
        (Some(h), _)
            if (h.started && t < h.first_ms.saturating_add(skew))
                || (h.stopped && t > h.last_ms.saturating_sub(skew)) =>
        {
            Lookup::Ambiguous(h, h)
        }
        (Some(h), _) => Lookup::Owned(h),
        (None, _) if may_grow => Lookup::Pending,
        (None, Some(n)) => Lookup::Ambiguous(n, n),
        (None, None) if tl.newest_ms >= t.saturating_add(max_gap) => Lookup::NoOwner,
        (None, None) => Lookup::Pending,
    }
}

/// splitmix64, so the random timelines are the same on every run.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn the_windowed_lookup_answers_as_a_full_scan() {
    // Random evidence from a few owners, with gaps, starts, stops, late
    // points and overlaps, so timelines come both sorted by end and not.
    let owners: Vec<Owner> = ["a", "b", "c"].iter().map(|c| owner(c)).collect();
    let (mut sorted, mut unsorted, mut checked) = (0, 0, 0);
    let (mut short, mut long) = (0, 0);
    for seed in 0..300u64 {
        let mut idx = OwnershipIndex::new(HB, SKEW);
        let mut r = mix(seed);
        let points = 5 + r % 150;
        for _ in 0..points {
            r = mix(r);
            let kind = match r % 10 {
                0 => Started,
                1 => Stopped,
                2 => LocalFlow,
                _ => Heartbeat,
            };
            let o = &owners[(r >> 8) as usize % owners.len()];
            let at = (r >> 16) as i64 % 600_000;
            idx.record(&ev(o, at, kind));
        }
        let tl = &idx.ips.get(IP.parse().unwrap()).unwrap().whole;
        if tl.ranges.len() <= SHORT_TIMELINE {
            short += 1;
        } else {
            long += 1;
        }
        if tl.ends_sorted {
            sorted += 1;
        } else {
            unsorted += 1;
        }
        for t in (-30_000..630_000).step_by(97) {
            let want = lookup_by_full_scan(tl, T0 + t, idx.max_gap_ms, idx.skew_ms);
            assert_eq!(
                tl.lookup(T0 + t, idx.max_gap_ms, idx.skew_ms),
                want,
                "seed {seed}, t {t}, ranges {:?}",
                tl.ranges
            );
            checked += 1;
        }
    }
    // Both search paths were exercised.
    assert!(
        sorted > 10 && unsorted > 10,
        "{sorted} sorted, {unsorted} not"
    );
    assert!(short > 10 && long > 10, "{short} short, {long} long");
    assert!(checked > 1_000_000);
}

#[test]
fn ipv4_and_ipv6_addresses_are_kept_apart() {
    let mut idx = OwnershipIndex::new(HB, SKEW);
    let v4: IpAddr = "10.0.0.5".parse().unwrap();
    let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
    let v6: IpAddr = "fd00::5".parse().unwrap();
    for (ip, o) in [(mapped, owner("a")), (v6, owner("b"))] {
        for at in [0, HB, 2 * HB] {
            idx.record(&Evidence {
                key: OwnershipKey::ip(ip),
                owner: o.clone(),
                at_ms: T0 + at,
                kind: Heartbeat,
            });
        }
    }
    assert_eq!(idx.lookup(v4, None, T0 + HB), Lookup::Unknown);
    let owned = |ip| match idx.lookup(ip, None, T0 + HB) {
        Lookup::Owned(p) => idx.owners().get(p.owner).cloned(),
        _ => None,
    };
    assert_eq!(owned(mapped), Some(owner("a")));
    assert_eq!(owned(v6), Some(owner("b")));
    assert_eq!(idx.ip_count(), 2);
    assert_eq!(idx.ranges(OwnershipKey::ip(v6)).len(), 1);
    assert_eq!(idx.prune(T0 + 3 * HB), 2);
    assert_eq!(idx.ip_count(), 0);
}

#[test]
fn ips_lists_every_address_with_evidence_once() {
    let mut idx = index(&[ev(&owner("a"), 0, EvidenceKind::Heartbeat)]);
    for (ip, port) in [
        ("10.0.0.6", None),
        ("fd00::1", None),
        ("10.0.0.5", Some(80)),
    ] {
        let key = match port {
            None => OwnershipKey::ip(ip.parse().unwrap()),
            Some(p) => OwnershipKey::port(ip.parse().unwrap(), p),
        };
        idx.record(&Evidence {
            key,
            owner: node(),
            at_ms: T0,
            kind: EvidenceKind::Heartbeat,
        });
    }
    let mut ips: Vec<IpAddr> = idx.ips().collect();
    ips.sort();
    let want: Vec<IpAddr> = ["10.0.0.5", "10.0.0.6", "fd00::1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(ips, want);
    assert_eq!(ips.len(), idx.ip_count());
}
