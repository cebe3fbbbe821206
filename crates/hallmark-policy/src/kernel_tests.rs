#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use super::*;
use crate::document::Cidr;
use crate::parse;

/// A seeded generator (an LCG): the same seed, the same case.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    pub(crate) fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const APPS: [&str; 4] = ["web", "db", "api", "batch"];

/// Nested, overlapping, both families, a host, a /0 each, and an
/// IPv4-mapped prefix (which holds no address).
const CIDRS: [&str; 16] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "10.1.2.4/31",
    "192.168.0.0/16",
    "0.0.0.0/0",
    "fd00::/8",
    "fd00:1::/32",
    "::/0",
    "::ffff:10.0.0.0/104",
    "10.128.0.0/9",
    "10.1.2.0/25",
    "fd00::/16",
    "::fffe:0:0/95",
    "::fffe:0:0/96",
];

/// Addresses in and around the prefixes above, IPv4-mapped ones included.
pub(crate) const ADDRS: [&str; 21] = [
    "10.1.2.3",
    "10.1.2.4",
    "10.1.2.5",
    "10.1.3.1",
    "10.9.9.9",
    "10.200.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "8.8.8.8",
    "fd00::1",
    "fd00:1::5",
    "2001:db8::1",
    "::ffff:10.1.2.3",
    "::ffff:1.2.3.4",
    "::ffff:10.0.0.9",
    "fe80::1",
    "10.1.2.1",
    "10.1.2.200",
    "10.0.0.1",
    "fd00::9",
    "::fffe:1:2",
];

const PORTS: [u16; 10] = [1, 2, 22, 80, 443, 1000, 5432, 8000, 65534, 65535];

/// A random document and endpoints to decide for.
pub(crate) struct Case {
    pub(crate) yaml: String,
    pub(crate) policy: Policy,
    /// Workloads (some with an address) and addresses alone.
    pub(crate) endpoints: Vec<Attributes>,
}

pub(crate) fn workload(app: &str, addr: Option<&str>) -> Attributes {
    Attributes {
        selectors: vec![format!("docker:label:app:{app}")],
        namespace: "shop".into(),
        labels: [("app".to_string(), app.to_string())].into(),
        addr: addr.map(|a| a.parse().unwrap()),
        ..Attributes::default()
    }
}

fn any_app(rng: &mut Rng) -> &'static str {
    APPS[rng.below(APPS.len() as u64) as usize]
}

fn ports(rng: &mut Rng) -> String {
    let range = |rng: &mut Rng| {
        let lo = *rng.pick(&PORTS);
        let hi = lo.saturating_add(*rng.pick(&[0u16, 0, 1, 10, 1000, 65535]));
        if hi == lo {
            format!("'{lo}'")
        } else {
            format!("'{lo}-{hi}'")
        }
    };
    match rng.below(3) {
        0 => String::new(),
        1 => format!(", ports: [{}]", range(rng)),
        _ => format!(", ports: [{}, {}]", range(rng), range(rng)),
    }
}

pub(crate) fn random_case(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let mut yaml = String::from("groups:\n");
    let mut groups = vec!["any".to_string()];
    for app in APPS {
        let mut blocks = vec![format!("{{selector: \"docker:label:app:{app}\"}}")];
        match rng.below(4) {
            0 => blocks.push(format!("{{cidr: \"{}\"}}", rng.pick(&CIDRS))),
            1 => blocks.push(format!(
                "{{cidr: \"{}\", namespace: shop}}",
                rng.pick(&CIDRS)
            )),
            _ => {}
        }
        yaml.push_str(&format!("  g-{app}: [{}]\n", blocks.join(", ")));
        groups.push(format!("g-{app}"));
    }
    for c in 0..1 + rng.below(4) {
        let blocks: Vec<String> = (0..1 + rng.below(2))
            .map(|_| format!("{{cidr: \"{}\"}}", rng.pick(&CIDRS)))
            .collect();
        yaml.push_str(&format!("  c{c}: [{}]\n", blocks.join(", ")));
        groups.push(format!("c{c}"));
    }
    let rules: Vec<String> = (0..rng.below(14))
        .map(|r| {
            let from = rng.pick(&groups).clone();
            let to = rng.pick(&groups).clone();
            let extra = match rng.below(3) {
                0 => format!(", {}", rng.pick(&groups)),
                _ => String::new(),
            };
            format!(
                "  - {{name: r{r}, from: [{from}{extra}], to: [{to}], protocol: {}{}, action: {}, mode: {}, priority: {}}}\n",
                rng.pick(&["tcp", "udp", "any"]),
                ports(&mut rng),
                rng.pick(&["allow", "deny"]),
                rng.pick(&["enforce", "enforce", "watch"]),
                rng.pick(&[10, 100, 1000]),
            )
        })
        .collect();
    if rules.is_empty() {
        yaml.push_str("rules: []\n");
    } else {
        yaml.push_str("rules:\n");
        yaml.push_str(&rules.concat());
    }
    yaml.push_str(&format!("default: {}\n", rng.pick(&["allow", "deny"])));
    let policy = Policy::compile(
        &parse("random.yaml", &yaml)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
            .document,
    );
    let mut endpoints = Vec::new();
    for _ in 0..6 {
        let addr = match rng.below(3) {
            0 => None,
            _ => Some(*rng.pick(&ADDRS)),
        };
        endpoints.push(workload(any_app(&mut rng), addr));
    }
    for a in ADDRS {
        endpoints.push(Attributes::address(a.parse().unwrap()));
    }
    Case {
        yaml,
        policy,
        endpoints,
    }
}

const ROOMY: KernelLimits = KernelLimits {
    max_segs: 64,
    max_locals: 4096,
    max_peers: 65_536,
    max_pairs: 8192,
};

/// The kernel's lookup, written from the programs' description and
/// nothing of the compiler: longest-prefix match of the peer address,
/// the pair, the last segment starting at or below the port, else the
/// default with rule 0.
fn kernel_decide<K>(
    img: &KernelImage<K>,
    local: u32,
    remote: IpAddr,
    protocol: Protocol,
    direction: Direction,
    port: u16,
) -> (KernelVerdict, u32) {
    let remote = img
        .peers
        .iter()
        .filter(|(net, len, _)| {
            // The programs' loader stores an IPv4-mapped prefix as IPv4.
            let (net, len) = match net.to_canonical() {
                IpAddr::V4(v4) if net.is_ipv6() && *len >= 96 => (IpAddr::V4(v4), len - 96),
                _ => (*net, *len),
            };
            Cidr::parse(&format!("{net}/{len}"))
                .unwrap()
                .contains(remote)
        })
        .max_by_key(|(_, len, _)| *len)
        .map_or(0, |(_, _, id)| *id);
    let default = (KernelVerdict::of_action(img.default), 0);
    let key = PairKey {
        local,
        remote,
        protocol,
        direction,
    };
    let Some((_, segs)) = img.pairs.iter().find(|(k, _)| *k == key) else {
        return default;
    };
    match segs.partition_point(|s| s.start <= port) {
        0 => default,
        i => (segs[i - 1].verdict, segs[i - 1].rule),
    }
}

/// The engine's verdict in the kernel's terms.
fn engine_decide<K>(
    img: &KernelImage<K>,
    p: &Policy,
    from: &GroupSet,
    to: &GroupSet,
    protocol: Protocol,
    port: u16,
) -> (KernelVerdict, u32) {
    let v = p.decide(from, to, protocol, port);
    let rule = v.rule().map_or(0, |name| {
        img.rules.iter().position(|r| r == name).unwrap() as u32 + 1
    });
    (KernelVerdict::of_outcome(v.outcome), rule)
}

/// What the agent hands the compiler, and what the engine decides with:
/// locals by index, peers by address (distinct addresses).
struct Node {
    locals: Vec<(usize, GroupSet)>,
    peers: Vec<(IpAddr, GroupSet)>,
}

fn node(case: &Case, rng: &mut Rng) -> Node {
    let p = &case.policy;
    let locals = (0..1 + rng.below(5))
        .map(|i| (i as usize, p.groups_of(rng.pick(&case.endpoints))))
        .collect();
    let mut seen = HashSet::new();
    let mut peers = Vec::new();
    for _ in 0..rng.below(8) {
        let addr: IpAddr = rng.pick(&ADDRS).parse().unwrap();
        if !seen.insert(addr.to_canonical()) {
            continue;
        }
        let owner = workload(any_app(rng), Some(&addr.to_string()));
        peers.push((addr, p.groups_of(&owner)));
    }
    Node { locals, peers }
}

fn check_shape<K>(img: &KernelImage<K>) {
    let keys: BTreeSet<(IpAddr, u8)> = img.peers.iter().map(|(a, l, _)| (*a, *l)).collect();
    assert_eq!(keys.len(), img.peers.len(), "one entry per prefix");
    let pairs: BTreeSet<PairKey> = img.pairs.iter().map(|(k, _)| *k).collect();
    assert_eq!(pairs.len(), img.pairs.len(), "one entry per pair");
    for (k, segs) in &img.pairs {
        assert!(!segs.is_empty(), "{k:?}");
        assert!(segs.windows(2).all(|w| w[0].start < w[1].start), "{k:?}");
        assert!(segs
            .windows(2)
            .all(|w| (w[0].verdict, w[0].rule) != (w[1].verdict, w[1].rule)));
        assert!(segs.iter().all(|s| s.rule as usize <= img.rules.len()));
    }
    let sets: HashSet<&GroupSet> = img.identities.iter().collect();
    assert_eq!(sets.len(), img.identities.len(), "identities are distinct");
}

/// The proof that the kernel decides as the engine does: random
/// documents, random nodes, random flows both ways.
#[test]
fn the_kernel_lookup_decides_as_the_engine() {
    let mut seen = [0usize; 3];
    for seed in 0..150 {
        let case = random_case(seed);
        let p = &case.policy;
        let mut rng = Rng::new(seed + 1_000_000);
        let n = node(&case, &mut rng);
        let img = compile_kernel(p, &n.locals, &n.peers, &ROOMY)
            .unwrap_or_else(|e| panic!("{e}\n{}", case.yaml));
        check_shape(&img);
        assert_eq!(img.locals.len(), n.locals.len());
        for _ in 0..200 {
            let (li, local) = rng.pick(&n.locals);
            let ident = img.locals[*li].1;
            assert_eq!(img.locals[*li].0, *li);
            let addr: IpAddr = rng.pick(&ADDRS).parse().unwrap();
            let remote = n
                .peers
                .iter()
                .find(|(a, _)| a.to_canonical() == addr.to_canonical())
                .map_or_else(
                    || p.groups_of(&Attributes::address(addr)),
                    |(_, g)| g.clone(),
                );
            let protocol = *rng.pick(&[Protocol::Tcp, Protocol::Udp]);
            let port = match rng.below(3) {
                0 => *rng.pick(&PORTS),
                1 => rng.pick(&PORTS).wrapping_add(1),
                _ => rng.below(65536) as u16,
            };
            for direction in [Direction::Egress, Direction::Ingress] {
                let (from, to) = match direction {
                    Direction::Egress => (local, &remote),
                    Direction::Ingress => (&remote, local),
                };
                let want = engine_decide(&img, p, from, to, protocol, port);
                let got = kernel_decide(&img, ident, addr, protocol, direction, port);
                assert_eq!(
                    got, want,
                    "seed {seed}: local {li} {addr} {protocol:?}/{port} {direction:?}\n{}\n{img:#?}",
                    case.yaml
                );
                seen[got.0 as usize] += 1;
            }
        }
    }
    // Every verdict was exercised.
    assert!(seen.iter().all(|n| *n > 100), "{seen:?}");
}

fn compile(yaml: &str) -> Policy {
    Policy::compile(&parse("test.yaml", yaml).unwrap().document)
}

const WEB_DB: &str = "groups:
  web: [{selector: \"docker:label:app:web\"}]
  payments-db: [{selector: \"docker:label:app:db\"}]
rules:
  - {name: web-to-db, from: [web], to: [payments-db], protocol: tcp, ports: ['5432'], action: allow}
  - {name: watch-db, from: [any], to: [payments-db], protocol: tcp, ports: ['5432'], action: deny, mode: watch, priority: 2000}
default: allow
";

fn addr(a: &str) -> IpAddr {
    a.parse().unwrap()
}

#[test]
fn a_small_policy_is_a_small_image() {
    let p = compile(WEB_DB);
    let (web, db) = (
        p.groups_of(&workload("web", Some("10.0.0.1"))),
        p.groups_of(&workload("db", Some("10.0.0.2"))),
    );
    let img = compile_kernel(
        &p,
        &[("cg-web", web.clone()), ("cg-db", db.clone())],
        &[
            (addr("10.0.0.1"), web.clone()),
            (addr("::ffff:10.0.0.2"), db.clone()),
        ],
        &ROOMY,
    )
    .unwrap();
    assert_eq!(img.default, Action::Allow);
    assert_eq!(img.rules, ["web-to-db", "watch-db"]);
    // 0: an address alone; then web and db in the order first seen.
    assert_eq!(
        img.identities,
        [p.set_of([]), web, db].map(|s| s.normalized())
    );
    assert_eq!(img.locals, [("cg-web", 1), ("cg-db", 2)]);
    // The IPv4-mapped peer address is its IPv4 address.
    assert_eq!(
        img.peers,
        [(addr("10.0.0.1"), 32, 1), (addr("10.0.0.2"), 32, 2)]
    );
    let seg = |start, verdict, rule| Segment {
        start,
        verdict,
        rule,
    };
    let key = |local, remote, direction| PairKey {
        local,
        remote,
        protocol: Protocol::Tcp,
        direction,
    };
    use Direction::{Egress, Ingress};
    use KernelVerdict::{Allow, WouldDeny};
    // The leading run (the default) is left to the kernel's default; UDP
    // and every pair no rule touches take the default and are left out.
    let allow = vec![seg(5432, Allow, 1), seg(5433, Allow, 0)];
    let watch = vec![seg(5432, WouldDeny, 2), seg(5433, Allow, 0)];
    assert_eq!(
        img.pairs,
        [
            (key(1, 2, Egress), allow.clone()),
            (key(2, 0, Ingress), watch.clone()),
            (key(2, 1, Ingress), allow),
            (key(2, 2, Egress), watch.clone()),
            (key(2, 2, Ingress), watch),
        ]
    );
}

#[test]
fn no_rules_no_pairs() {
    for default in ["allow", "deny"] {
        let p = compile(&format!("groups: {{}}\nrules: []\ndefault: {default}\n"));
        let any = p.set_of([]);
        let img = compile_kernel(
            &p,
            &[(7u64, any.clone())],
            &[(addr("10.0.0.1"), any.clone())],
            &ROOMY,
        )
        .unwrap();
        assert!(img.pairs.is_empty());
        assert_eq!(img.identities.len(), 1);
        assert_eq!(img.locals, [(7, 0)]);
    }
}

#[test]
fn nested_prefixes_each_have_their_identity() {
    let p = compile(
        "groups:
  corp: [{cidr: 10.0.0.0/8}]
  lab: [{cidr: 10.1.0.0/16}]
  bench: [{cidr: 10.1.0.0/24}, {cidr: 10.1.0.7}]
  halves: [{cidr: 10.0.0.0/9}, {cidr: 10.128.0.0/9}]
  v6: [{cidr: 'fd00::/8'}]
  mapped: [{cidr: '::ffff:10.0.0.0/104'}]
rules:
  - {name: r, from: [any], to: [corp, lab, bench, v6], action: deny}
default: allow
",
    );
    // Identities hold the groups that can change a decision here: the
    // rule's acceptors (`halves` and `mapped` are named by no rule).
    let img = compile_kernel::<u8>(&p, &[(0, p.set_of(["any"]))], &[], &ROOMY).unwrap();
    let groups: Vec<(String, Vec<&str>)> = img
        .peers
        .iter()
        .map(|(a, l, id)| {
            let set = &img.identities[*id as usize];
            (format!("{a}/{l}"), p.names_in(set).collect())
        })
        .collect();
    let g = |net: &str, names: &[&'static str]| (net.to_string(), names.to_vec());
    assert_eq!(
        groups,
        [
            // Covered whole by the two halves: never the longest match,
            // still listed (its groups are those of its network address).
            g("10.0.0.0/8", &["corp"]),
            g("10.0.0.0/9", &["corp"]),
            g("10.1.0.0/16", &["corp", "lab"]),
            // Shares its network address with the /24 and the /32 host
            // inside it, yet is an address in neither.
            g("10.1.0.0/24", &["corp", "lab", "bench"]),
            g("10.1.0.7/32", &["corp", "lab", "bench"]),
            g("10.128.0.0/9", &["corp"]),
            // The IPv4-mapped prefix holds no address: no entry.
            g("fd00::/8", &["v6"]),
        ]
    );
    assert!(img.identities[0].is_empty(), "outside every prefix");
}

#[test]
fn a_peer_address_overrides_its_host_prefix() {
    let p = compile(
        "groups:
  web: [{selector: \"docker:label:app:web\"}]
  db: [{selector: \"docker:label:app:db\"}]
  host: [{cidr: 10.1.2.3/32}]
rules:
  - {name: r, from: [web], to: [db, host], ports: [\"5432\"], action: allow}
default: deny
",
    );
    let web = p.groups_of(&workload("web", None));
    let db = p.groups_of(&workload("db", Some("10.1.2.3")));
    let img =
        compile_kernel::<u8>(&p, &[(1, web)], &[(addr("10.1.2.3"), db.clone())], &ROOMY).unwrap();
    assert_eq!(img.peers.len(), 1, "{:?}", img.peers);
    let (a, len, id) = img.peers[0];
    assert_eq!((a, len), (addr("10.1.2.3"), 32));
    assert_eq!(
        p.names_in(&img.identities[id as usize]).collect::<Vec<_>>(),
        ["db", "host"],
        "the workload's groups, not the prefix's alone"
    );
}

#[test]
fn a_peer_given_twice_must_agree() {
    let p = compile(WEB_DB);
    let (web, db) = (
        p.groups_of(&workload("web", None)),
        p.groups_of(&workload("db", None)),
    );
    let same = [
        (addr("10.0.0.1"), web.clone()),
        (addr("::ffff:10.0.0.1"), web.clone()),
    ];
    let img = compile_kernel::<u8>(&p, &[], &same, &ROOMY).unwrap();
    assert_eq!(img.peers.len(), 1);
    let both = [(addr("10.0.0.1"), web), (addr("::ffff:10.0.0.1"), db)];
    let err = compile_kernel::<u8>(&p, &[], &both, &ROOMY).unwrap_err();
    assert_eq!(
        err,
        KernelError::AmbiguousPeer {
            addr: addr("10.0.0.1")
        }
    );
    assert_eq!(
        err.to_string(),
        "peer address 10.0.0.1 is given twice with different groups: leave out an address \
         whose owner is ambiguous (it is then decided as an address alone)"
    );
}

#[test]
fn over_a_limit_is_an_error_naming_it_and_the_count() {
    let p = compile(WEB_DB);
    let (web, db) = (
        p.groups_of(&workload("web", None)),
        p.groups_of(&workload("db", None)),
    );
    let locals = [(1u64, web.clone()), (2, db.clone())];
    let peers = [(addr("10.0.0.1"), web), (addr("10.0.0.2"), db)];
    let with = |f: fn(&mut KernelLimits)| {
        let mut limits = ROOMY;
        f(&mut limits);
        compile_kernel(&p, &locals, &peers, &limits)
    };
    // Exactly at each limit fits: 2 locals, 2 peers, 5 pairs, 2 segments.
    let exact = KernelLimits {
        max_segs: 2,
        max_locals: 2,
        max_peers: 2,
        max_pairs: 5,
    };
    assert_eq!(
        compile_kernel(&p, &locals, &peers, &exact)
            .unwrap()
            .pairs
            .len(),
        5
    );

    let err = with(|l| l.max_locals = 1).unwrap_err();
    assert_eq!(err, KernelError::TooManyLocals { count: 2, limit: 1 });
    assert!(err.to_string().starts_with(
        "the policy image needs 2 local workload entries, more than the limit of 1: "
    ));
    let err = with(|l| l.max_peers = 1).unwrap_err();
    assert_eq!(err, KernelError::TooManyPeers { count: 2, limit: 1 });
    let err = with(|l| l.max_pairs = 4).unwrap_err();
    assert_eq!(err, KernelError::TooManyPairs { count: 5, limit: 4 });
    assert!(err
        .to_string()
        .contains("5 identity pairs, more than the limit of 4"));
    let err = with(|l| l.max_segs = 1).unwrap_err();
    assert!(
        matches!(&err, KernelError::TooManySegments { count: 2, limit: 1, pair, .. }
            if pair.local == 1 && pair.remote == 2 && pair.direction == Direction::Egress),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "egress tcp flows between local identity 1 (groups any, web) and remote identity 2 \
         (groups any, payments-db) need 2 port segments, more than the limit of 1: merge or \
         drop port ranges of the rules between these groups"
    );
}

#[test]
fn the_representative_of_a_prefix_is_never_ipv4_mapped() {
    let net = |a: &str, len| Net::new(addr(a), len);
    // The only part of ::fffe:0:0/95 outside ::fffe:0:0/96 is
    // ::ffff:0:0/96, whose addresses are IPv4: nothing to represent.
    let outer = net("::fffe:0:0", 95);
    assert_eq!(outer.representative(&[outer, net("::fffe:0:0", 96)]), None);
    assert_eq!(
        outer.representative(&[outer]).map(|b| outer.to_addr(b)),
        Some(addr("::fffe:0:0"))
    );
    // Left halves covered: the first uncovered address.
    let v4 = net("10.0.0.0", 8);
    let inside = [v4, net("10.0.0.0", 9), net("10.128.0.0", 10)];
    assert_eq!(
        v4.representative(&inside).map(|b| v4.to_addr(b)),
        Some(addr("10.192.0.0"))
    );
}

#[test]
fn workloads_differing_only_in_groups_no_rule_here_names_share_an_identity() {
    let p = compile(
        "groups:
  web: [{selector: \"docker:label:app:web\"}]
  db: [{selector: \"docker:label:app:db\"}]
  cache: [{selector: \"docker:label:app:cache\"}]
  v1: [{labels: {version: \"1\"}}]
  canary: [{labels: {track: canary}}]
rules:
  - {name: web-db, from: [web], to: [db], ports: [\"5432\"], action: allow}
  - {name: cache-canary, from: [cache], to: [canary], action: deny}
default: deny
",
    );
    let with = |app: &str, ip: &str, version: &str, track: &str| {
        let mut a = workload(app, Some(ip));
        a.labels.insert("version".into(), version.into());
        a.labels.insert("track".into(), track.into());
        p.groups_of(&a)
    };
    let local = with("web", "10.0.0.1", "1", "stable");
    let mut peers = Vec::new();
    for i in 0..200u32 {
        let ip = format!("10.0.{}.{}", 1 + i / 200, 2 + i % 200);
        let app = ["db", "cache", "other", "web"][(i % 4) as usize];
        let version = ["1", "2"][(i / 4 % 2) as usize];
        let track = ["stable", "canary"][(i / 8 % 2) as usize];
        peers.push((addr(&ip), with(app, &ip, version, track)));
    }
    let img = compile_kernel(&p, &[(1u8, local.clone())], &peers, &ROOMY).unwrap();
    // For a web workload only `db` (its rule's acceptor) tells peers
    // apart: the 200 peers are two identities, one of them "unknown".
    let used: BTreeSet<u32> = img.peers.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(used.len(), 2, "{:?}", img.identities);
    assert_eq!(img.pairs.len(), 2, "web → db, TCP and UDP: {:?}", img.pairs);
    // And every decision is the engine's.
    for (ip, set) in &peers {
        let id = img.peers.iter().find(|(a, _, _)| a == ip).unwrap().2;
        for port in [22, 5432] {
            let want = p.decide(&local, set, Protocol::Tcp, port).outcome;
            let got = img
                .pairs
                .iter()
                .find(|(k, _)| {
                    k.remote == id
                        && k.direction == Direction::Egress
                        && k.protocol == Protocol::Tcp
                })
                .and_then(|(_, segs)| segs.iter().rev().find(|s| s.start <= port))
                .map_or(KernelVerdict::of_action(img.default), |s| s.verdict);
            assert_eq!(got, KernelVerdict::of_outcome(want), "{ip} port {port}");
        }
    }
}
