#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use crate::kernel::tests::{random_case, workload, Rng};
use crate::{parse, Attributes, GroupSet, Policy, Protocol, Verdict};

fn compile(yaml: &str) -> Policy {
    Policy::compile(&parse("test.yaml", yaml).unwrap().document)
}

/// The verdict of the run holding `port`.
fn at(segs: &[(u16, Verdict)], port: u16) -> &Verdict {
    let i = segs.partition_point(|(s, _)| *s <= port);
    &segs[i - 1].1
}

/// Runs start at 0, strictly increase, and neighbours differ.
fn check_runs(segs: &[(u16, Verdict)]) {
    assert_eq!(segs.first().map(|s| s.0), Some(0));
    assert!(segs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1));
}

/// Every port, both protocols, every pair of `endpoints`.
fn exhaustive(p: &Policy, endpoints: &[Attributes]) -> usize {
    let sets: Vec<GroupSet> = endpoints.iter().map(|e| p.groups_of(e)).collect();
    let mut runs = 0;
    for from in &sets {
        for to in &sets {
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                let segs = p.port_segments(from, to, protocol);
                check_runs(&segs);
                runs += segs.len();
                let mut i = 0;
                for port in 0..=u16::MAX {
                    if segs.get(i + 1).is_some_and(|s| s.0 == port) {
                        i += 1;
                    }
                    assert_eq!(p.decide(from, to, protocol, port), segs[i].1, "port {port}");
                }
            }
        }
    }
    runs
}

#[test]
fn segments_match_decide_on_random_documents_and_ports() {
    let mut multi = 0;
    for seed in 0..500 {
        let case = random_case(seed);
        let p = &case.policy;
        let mut rng = Rng::new(seed ^ 0xabcd);
        for _ in 0..20 {
            let from = p.groups_of(rng.pick(&case.endpoints));
            let to = p.groups_of(rng.pick(&case.endpoints));
            let protocol = *rng.pick(&[Protocol::Tcp, Protocol::Udp]);
            let segs = p.port_segments(&from, &to, protocol);
            check_runs(&segs);
            multi += usize::from(segs.len() > 2);
            // Every boundary, the port before each, and random ports.
            let ports = segs
                .iter()
                .flat_map(|(s, _)| [*s, s.wrapping_sub(1)])
                .chain((0..30).map(|_| rng.below(65536) as u16))
                .chain([0, 1, 65535]);
            for port in ports {
                assert_eq!(
                    p.decide(&from, &to, protocol, port),
                    *at(&segs, port),
                    "seed {seed} {protocol:?}/{port}\n{}",
                    case.yaml
                );
            }
        }
    }
    assert!(multi > 500, "the documents split ports: {multi}");
}

#[test]
fn segments_match_decide_on_every_port() {
    let p = compile(
        "groups:
  web: [{selector: \"docker:label:app:web\"}]
  db: [{selector: \"docker:label:app:db\"}]
  corp: [{cidr: 10.0.0.0/8}]
rules:
  - {name: web-db, from: [web], to: [db], protocol: tcp, ports: ['5432', '8000-8100'], action: allow}
  - {name: no-ssh, from: [any], to: [any], ports: ['22'], action: deny, priority: 10}
  - {name: watch-high, from: [any], to: [db], ports: ['1024-65535'], action: deny, mode: watch, priority: 500}
  - {name: corp-in, from: [corp], to: [web], protocol: udp, ports: ['1-65535'], action: allow}
  - {name: top, from: [web], to: [any], ports: ['65535'], action: allow, priority: 1}
default: deny
",
    );
    let endpoints = [
        workload("web", Some("10.1.2.3")),
        workload("db", None),
        Attributes::address("10.9.9.9".parse().unwrap()),
        Attributes::address("8.8.8.8".parse().unwrap()),
    ];
    assert!(exhaustive(&p, &endpoints) > 40);
    for seed in [3, 17] {
        let case = random_case(seed);
        exhaustive(&case.policy, &case.endpoints[..4]);
    }
}

#[test]
fn segments_are_the_runs_a_reader_expects() {
    let p = compile(
        "groups:
  web: [{selector: \"docker:label:app:web\"}]
  db: [{selector: \"docker:label:app:db\"}]
rules:
  - {name: web-db, from: [web], to: [db], protocol: tcp, ports: ['5432'], action: allow}
  - {name: db-wide, from: [web], to: [db], protocol: tcp, ports: ['5000-6000'], action: allow, priority: 2000}
default: deny
",
    );
    let (web, db) = (
        p.groups_of(&workload("web", None)),
        p.groups_of(&workload("db", None)),
    );
    let runs: Vec<(u16, Option<String>)> = p
        .port_segments(&web, &db, Protocol::Tcp)
        .into_iter()
        .map(|(s, v)| (s, v.rule().map(str::to_string)))
        .collect();
    let r = |s: &str| Some(s.to_string());
    assert_eq!(
        runs,
        [
            (0, None),
            (5000, r("db-wide")),
            (5432, r("web-db")),
            (5433, r("db-wide")),
            (6001, None),
        ]
    );
    // No cell: one run, the default.
    assert_eq!(p.port_segments(&db, &web, Protocol::Tcp).len(), 1);
    assert_eq!(p.port_segments(&web, &db, Protocol::Udp).len(), 1);
}

#[test]
fn rule_names_by_rank() {
    let p = compile(
        "groups: {}
rules:
  - {name: a, from: [any], to: [any], action: allow}
  - {name: b, from: [any], to: [any], action: deny}
  - {name: c, from: [any], to: [any], action: allow, priority: 5}
  - {name: d, from: [any], to: [any], action: deny, mode: watch}
default: allow
",
    );
    assert_eq!(p.rule_names().collect::<Vec<_>>(), ["c", "b", "d", "a"]);
    assert_eq!(p.default_action(), crate::Action::Allow);
}
