#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use hallmark_bpf::{Direction, Mode, PolicyImage, Protocol, Verdict};

use super::image::*;
use super::loops::own_cgroup2;
use super::*;

fn small_world(seed: u64) -> (World, Policy) {
    let world = World::generate(600, 40, 150, seed);
    let policy = policy_of(&world).unwrap();
    (world, policy)
}

/// The verdict the kernel's lookup gives an egress or ingress TCP flow of
/// the local `cgroup` with `peer` on `port`, read from the image the way
/// `enforce.bpf.c` reads its maps (longest-prefix peer, the pair, the last
/// segment starting at or below the port, else the default).
fn kernel_verdict(
    image: &PolicyImage,
    cgroup: u64,
    peer: std::net::IpAddr,
    port: u16,
    direction: Direction,
) -> Option<Verdict> {
    let local = image.locals.iter().find(|(c, _)| *c == cgroup)?.1;
    let remote = image
        .peers
        .iter()
        .filter(|p| {
            let (std::net::IpAddr::V4(net), std::net::IpAddr::V4(a)) = (p.addr, peer) else {
                return false;
            };
            let mask = u32::MAX
                .checked_shl(32 - u32::from(p.prefix_len))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(net) & mask
        })
        .max_by_key(|p| p.prefix_len)
        .map_or(0, |p| p.ident);
    let segs = image.pairs.iter().find(|(k, _)| {
        k.local == local
            && k.remote == remote
            && k.protocol == Protocol::Tcp
            && k.direction == direction
    });
    let seg = segs.and_then(|(_, s)| s.iter().rev().find(|s| s.start <= port));
    Some(seg.map_or(image.default_verdict, |s| s.verdict))
}

#[test]
fn the_role_is_allowed_by_a_rule_and_the_kernel_image_allows_it_both_ways() {
    for seed in [13, 14, 15] {
        let (world, policy) = small_world(seed);
        let role = pick_role(&policy, &world, 4).expect("a workload allowed to reach itself");
        assert!(!role.ports.is_empty());
        assert_eq!(role.attrs.addr, Some(LOOPBACK));
        let bench_cgroup = 4242;
        let inputs = rate_inputs(&policy, &world, &role, bench_cgroup, 5, 300);
        assert_eq!(inputs.locals.len(), 5);
        assert_eq!(inputs.locals[0].0, bench_cgroup);
        assert!(inputs.locals[1..]
            .iter()
            .all(|(c, _)| *c >= FAKE_CGROUP_BASE));
        assert_eq!(inputs.peers.len(), 300);
        assert_eq!(inputs.peers[0].0, LOOPBACK);
        // The role's own world address is not a peer: it lives at 127.0.0.1.
        let own = world.workloads[role.workload].attrs.addr.unwrap();
        assert!(inputs.peers.iter().all(|(ip, _)| *ip != own));

        let built = build(&policy, &inputs, Mode::On, Some(LOOPBACK)).unwrap();
        assert_eq!(built.image.mode, Mode::On);
        let size = ImageSize::of(&built);
        assert_eq!(size.locals, 5);
        // Host entries for every peer, plus the policy's cidr prefixes.
        assert!(size.peers >= 300, "{size:?}");
        assert!(size.pairs > 0 && size.segments >= size.pairs, "{size:?}");
        for (port, _) in &role.ports {
            for dir in [Direction::Egress, Direction::Ingress] {
                assert_eq!(
                    kernel_verdict(&built.image, bench_cgroup, LOOPBACK, *port, dir),
                    Some(Verdict::Allow),
                    "seed {seed} port {port} {dir:?}"
                );
            }
        }
    }
}

#[test]
fn install_inputs_take_the_first_workloads_and_both_policies_fit() {
    let (world, policy) = small_world(13);
    let other = policy_of(&World::generate(600, 40, 150, 14)).unwrap();
    for p in [&policy, &other] {
        let inputs = install_inputs(p, &world, 3, 500);
        assert_eq!(inputs.locals.len(), 3);
        assert_eq!(inputs.peers.len(), 500);
        assert_eq!(inputs.peers[0].0, world.workloads[0].attrs.addr.unwrap());
        let built = build(p, &inputs, Mode::On, None).unwrap();
        assert_eq!(ImageSize::of(&built).locals, 3);
    }
    // Two policies over the same workloads: the images differ.
    let a = build(
        &policy,
        &install_inputs(&policy, &world, 3, 500),
        Mode::On,
        None,
    )
    .unwrap();
    let b = build(
        &other,
        &install_inputs(&other, &world, 3, 500),
        Mode::On,
        None,
    )
    .unwrap();
    assert_ne!(a.image, b.image);
}

#[test]
fn more_locals_than_the_kernel_holds_are_refused_by_name() {
    let (world, policy) = small_world(13);
    let mut inputs = install_inputs(&policy, &world, 1, 10);
    inputs.locals = (0..=hallmark_bpf::LOCAL_CAPACITY as u64)
        .map(|c| (FAKE_CGROUP_BASE + c, world.workloads[0].attrs.clone()))
        .collect();
    let err = build(&policy, &inputs, Mode::On, Some(LOOPBACK))
        .unwrap_err()
        .to_string();
    assert!(err.contains("local workload entries"), "{err}");
    assert!(
        err.contains(&hallmark_bpf::LOCAL_CAPACITY.to_string()),
        "{err}"
    );
}

#[test]
fn the_cgroup2_line_is_found() {
    let hybrid = "12:cpuset:/\n11:memory:/user.slice\n0::/user.slice/session-1.scope\n";
    assert_eq!(own_cgroup2(hybrid), Some("/user.slice/session-1.scope"));
    assert_eq!(own_cgroup2("0::/\n"), Some("/"));
    assert_eq!(own_cgroup2("3:cpu:/\n"), None);
    assert_eq!(own_cgroup2("0::\n"), None);
}

fn args() -> EnforceArgs {
    EnforceArgs {
        rounds: 6,
        round_secs: 3.0,
        clients: 1,
        workloads: 10_000,
        groups: 200,
        rules: 1_000,
        peers: 10_000,
        locals: 1,
        install_locals: 1,
        revisions: 20,
        seed: 13,
        quick: false,
    }
}

#[test]
fn quick_shortens_and_bad_values_are_named() {
    let q = EnforceArgs {
        quick: true,
        ..args()
    }
    .effective()
    .unwrap();
    assert_eq!((q.rounds, q.round_secs, q.revisions), (3, 1.0, 6));
    let cases: [(EnforceArgs, &str); 4] = [
        (
            EnforceArgs {
                rounds: 2,
                ..args()
            },
            "--rounds 2",
        ),
        (
            EnforceArgs {
                round_secs: 0.0,
                ..args()
            },
            "--round-secs 0",
        ),
        (EnforceArgs { peers: 0, ..args() }, "--peers"),
        (
            EnforceArgs {
                revisions: 1,
                ..args()
            },
            "--revisions 1",
        ),
    ];
    for (a, want) in cases {
        let err = a.effective().unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

fn report(allowed: u64, denied: u64, denied_connects: u64) -> ConnectReport {
    ConnectReport {
        rounds: 3,
        round_secs: 1.0,
        clients: 1,
        image: ImageSize {
            locals: 1,
            peers: 1,
            pairs: 1,
            segments: 1,
            identities: 1,
            pairs_needed: 1,
        },
        rate: Rounds::new(vec![], vec![]),
        cpu_rate: Rounds::new(vec![], vec![]),
        latency_off: None,
        latency_on: None,
        added_p50_us: None,
        added_p99_us: None,
        completed_off: 100,
        completed_on: 100,
        failed_off: 0,
        failed_on: 0,
        denied_connects,
        decisions: DecisionCount {
            allowed,
            denied,
            would_deny: 0,
        },
        decisions_per_connect: None,
        load_ms: 0.0,
        install_ms: 0.0,
        kernel: None,
    }
}

#[test]
fn enforced_rounds_must_decide_every_connect_and_deny_none() {
    // Egress and the listener's ingress: two per connect.
    assert!(check_decided(&report(200, 0, 0)).is_ok());
    let err = check_decided(&report(50, 0, 0)).unwrap_err().to_string();
    assert!(
        err.contains("50 allowed decisions for 100 connects"),
        "{err}"
    );
    let err = check_decided(&report(200, 3, 3)).unwrap_err().to_string();
    assert!(err.contains("denied 3 connects"), "{err}");
}

#[test]
fn millis_are_microsecond_summaries_scaled() {
    let mut s = Samples::default();
    assert_eq!(Millis::of(&s), None);
    for ms in [2, 4, 6] {
        s.push(Duration::from_millis(ms));
    }
    let m = Millis::of(&s).unwrap();
    assert_eq!((m.p50_ms, m.p99_ms, m.max_ms), (4.0, 6.0, 6.0));
}

#[test]
fn pairs_over_capacity_keep_the_benchmark_peers_first() {
    let (world, policy) = small_world(13);
    let role = pick_role(&policy, &world, 4).unwrap();
    let inputs = rate_inputs(&policy, &world, &role, 4242, 1, 300);
    let built = build(&policy, &inputs, Mode::On, Some(LOOPBACK)).unwrap();
    assert_eq!(built.pairs_needed, built.image.pairs.len());
    let mut cut = built.image.clone();
    fit_pairs(&mut cut, Some(LOOPBACK), 4);
    assert_eq!(cut.pairs.len(), 4);
    // Still allowed both ways: the benchmark's pairs were kept.
    for (port, _) in &role.ports {
        for dir in [Direction::Egress, Direction::Ingress] {
            assert_eq!(
                kernel_verdict(&cut, 4242, LOOPBACK, *port, dir),
                Some(Verdict::Allow)
            );
        }
    }
    // Nothing to cut: unchanged.
    let mut same = built.image.clone();
    fit_pairs(&mut same, None, usize::MAX);
    assert_eq!(same, built.image);
}

#[test]
fn the_command_line_defaults_to_the_issue_and_can_be_set() {
    use clap::Parser;
    let parse = |args: &[&str]| match crate::Cli::parse_from(args).bench {
        crate::Bench::Enforce(a) => a,
        other => panic!("parsed as {other:?}"),
    };
    let a = parse(&["hallmark-bench", "enforce"]);
    assert_eq!(
        (a.rules, a.groups, a.workloads, a.peers),
        (1_000, 200, 10_000, 10_000)
    );
    assert_eq!(
        (a.rounds, a.round_secs, a.clients, a.revisions),
        (6, 3.0, 1, 20)
    );
    assert!(!a.quick);
    let a = parse(&[
        "hallmark-bench",
        "enforce",
        "--rounds",
        "4",
        "--round-secs",
        "0.5",
        "--peers",
        "300",
        "--locals",
        "3",
        "--install-locals",
        "7",
        "--revisions",
        "4",
        "--quick",
    ]);
    assert_eq!((a.rounds, a.round_secs, a.peers), (4, 0.5, 300));
    assert_eq!((a.locals, a.install_locals, a.revisions), (3, 7, 4));
    assert!(a.quick);
}
