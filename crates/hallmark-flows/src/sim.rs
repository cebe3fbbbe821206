//! A ground-truth simulation of IP churn, for proving the attribution rules
//! (`tests/simulation.rs`) and measuring them (`hallmark-bench attribution`).
//!
//! Nodes run workloads whose IPs are handed to a new workload 1-5 s after
//! the previous owner stopped; agents send start/stop events and heartbeats
//! (some lost) stamped by skewed node clocks; flows between workloads,
//! nodes and host-network ports are reported by agents (both ends, tagged)
//! or by an exporter (untagged), delayed and reordered by up to two
//! minutes. Because the simulation knows who really held every address at
//! every instant, each answer is graded: right, unattributed, or wrong.
//!
//! Two baselines run on the same input: the current owner when the flow
//! arrives (what inventory lookups do), and the latest assignment event at
//! or before the flow's time after a 15-minute hold-back.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::attribution::{Attributor, AttributorConfig, EndAttribution, UnattributedReason};
use crate::flow::{Flow, Initiator, LocalSide, Protocol, Reporter, Side, TcpOutcome};
use crate::network::Networks;
use crate::owner::Owner;
use crate::ownership::{Evidence, EvidenceKind, OwnershipKey};

/// The shape of a simulated fleet.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: u32,
    /// Workload IPs per node (each churns through many workloads).
    pub ips_per_node: u32,
    /// Host-network workloads per node, each serving one port on the node IP.
    pub host_ports_per_node: u16,
    pub duration_ms: i64,
    pub flows: usize,
    pub heartbeat_ms: i64,
    /// Share of heartbeats lost on the way.
    pub heartbeat_loss: f64,
    /// Two nodes' clocks differ by at most this much (each node is off
    /// from true time by up to half of it, either way).
    pub max_clock_skew_ms: i64,
    /// Flows arrive up to this long after they end.
    pub max_flow_delay_ms: i64,
    /// A workload holds its IP for this long, at least and at most.
    pub tenure_ms: (i64, i64),
    /// The next workload gets the IP this long after the previous stopped.
    pub handoff_gap_ms: (i64, i64),
    /// Share of flows whose destination nobody holds (refused connects).
    pub unowned_share: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 7,
            nodes: 20,
            ips_per_node: 40,
            host_ports_per_node: 2,
            duration_ms: 2 * 3600 * 1000,
            flows: 1_000_000,
            heartbeat_ms: 10_000,
            heartbeat_loss: 0.01,
            max_clock_skew_ms: 500,
            max_flow_delay_ms: 120_000,
            tenure_ms: (60_000, 20 * 60_000),
            handoff_gap_ms: (1_000, 5_000),
            unowned_share: 0.01,
        }
    }
}

/// Grades of one method's answers over every flow end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grades {
    pub ends: u64,
    pub right: u64,
    /// Attributed to an owner that did not hold the address then.
    pub wrong: u64,
    pub unattributed: u64,
}

impl Grades {
    pub fn wrong_share(&self) -> f64 {
        ratio(self.wrong, self.ends)
    }

    pub fn unattributed_share(&self) -> f64 {
        ratio(self.unattributed, self.ends)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub flows: u64,
    pub evidence: u64,
    pub hallmark: Grades,
    pub no_owner: u64,
    pub ambiguous: u64,
    pub late: u64,
    pub current_owner: Grades,
    pub assignment_holdback: Grades,
    /// The first few wrong answers of Hallmark's engine, for diagnosis.
    pub wrong_examples: Vec<String>,
}

/// splitmix64: deterministic and good enough to shuffle a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo).max(0) as u64 + 1;
        lo + (self.next() % span) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// One tenure: `owner` held `key` over `[from, to]` (true time).
#[derive(Debug, Clone)]
struct Tenure {
    from: i64,
    to: i64,
    owner: Owner,
    node: u32,
}

/// Every address's tenures, in time order.
struct World {
    by_key: HashMap<OwnershipKey, Vec<Tenure>>,
    keys: Vec<OwnershipKey>,
    skew: Vec<i64>,
}

impl World {
    fn owner_at(&self, key: &OwnershipKey, t: i64) -> Option<&Tenure> {
        let list = self.by_key.get(key)?;
        let i = list.partition_point(|x| x.from <= t);
        list[..i].last().filter(|x| t <= x.to)
    }
}

const T0: i64 = 1_750_000_000_000;
const CONTEXT: &str = "sim";

fn node_name(n: u32) -> String {
    format!("node-{n}")
}

fn node_ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 255, (n >> 8) as u8, n as u8))
}

fn workload_ip(n: u32, k: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, (n % 250) as u8, (k >> 8) as u8, k as u8))
}

fn build_world(cfg: &SimConfig, rng: &mut Rng) -> World {
    let mut by_key = HashMap::new();
    let mut serial = 0u64;
    let mut next_workload = |rng: &mut Rng, n: u32| {
        serial += 1;
        Owner::Workload {
            context: CONTEXT.into(),
            node: node_name(n),
            container_id: format!("{:016x}{:048x}", serial, rng.next()),
        }
    };
    let mut skew = Vec::new();
    for n in 0..cfg.nodes {
        let half = cfg.max_clock_skew_ms / 2;
        skew.push(rng.range(-half, half));
        let mut churn = |key: OwnershipKey, rng: &mut Rng| {
            let mut list = Vec::new();
            let mut t = -rng.range(0, cfg.tenure_ms.1);
            while t < cfg.duration_ms {
                let to = t + rng.range(cfg.tenure_ms.0, cfg.tenure_ms.1);
                list.push(Tenure {
                    from: t,
                    to,
                    owner: next_workload(rng, n),
                    node: n,
                });
                t = to + rng.range(cfg.handoff_gap_ms.0, cfg.handoff_gap_ms.1);
            }
            by_key.insert(key, list);
        };
        for k in 1..=cfg.ips_per_node {
            churn(OwnershipKey::ip(workload_ip(n, k)), rng);
        }
        for p in 0..cfg.host_ports_per_node {
            churn(OwnershipKey::port(node_ip(n), 8000 + p), rng);
        }
        by_key.insert(
            OwnershipKey::ip(node_ip(n)),
            vec![Tenure {
                from: -cfg.duration_ms,
                to: 2 * cfg.duration_ms,
                owner: Owner::Node {
                    context: CONTEXT.into(),
                    node: node_name(n),
                },
                node: n,
            }],
        );
    }
    let mut keys: Vec<OwnershipKey> = by_key.keys().copied().collect();
    keys.sort();
    World { by_key, keys, skew }
}

/// Something arriving at the server at `at` (true time).
enum Arrival {
    Evidence(Evidence),
    Flow(Box<(Flow, [Option<Owner>; 2])>),
}

fn evidence_arrivals(cfg: &SimConfig, world: &World, rng: &mut Rng) -> Vec<(i64, Arrival)> {
    let mut out = Vec::new();
    let mut push = |rng: &mut Rng, true_at: i64, key, owner: &Owner, node: u32, kind| {
        let stamped = true_at + world.skew[node as usize];
        let delay = rng.range(0, 1_000);
        out.push((
            true_at + delay,
            Arrival::Evidence(Evidence {
                key,
                owner: owner.clone(),
                at_ms: T0 + stamped,
                kind,
            }),
        ));
    };
    for key in &world.keys {
        for tenure in &world.by_key[key] {
            let in_run = |t: i64| (0..=cfg.duration_ms).contains(&t);
            if in_run(tenure.from) {
                push(
                    rng,
                    tenure.from,
                    *key,
                    &tenure.owner,
                    tenure.node,
                    EvidenceKind::Started,
                );
            }
            if in_run(tenure.to) {
                push(
                    rng,
                    tenure.to,
                    *key,
                    &tenure.owner,
                    tenure.node,
                    EvidenceKind::Stopped,
                );
            }
            // Each node beats on its own phase.
            let phase = i64::from(tenure.node) * 379 % cfg.heartbeat_ms;
            let mut beat = phase
                + (tenure.from.max(0) - phase).div_euclid(cfg.heartbeat_ms) * cfg.heartbeat_ms;
            while beat <= tenure.to.min(cfg.duration_ms) {
                if beat >= tenure.from && beat >= 0 && !rng.chance(cfg.heartbeat_loss) {
                    push(
                        rng,
                        beat,
                        *key,
                        &tenure.owner,
                        tenure.node,
                        EvidenceKind::Heartbeat,
                    );
                }
                beat += cfg.heartbeat_ms;
            }
        }
    }
    out
}

fn flow_arrivals(cfg: &SimConfig, world: &World, rng: &mut Rng) -> Vec<(i64, Arrival)> {
    let workload_keys: Vec<OwnershipKey> = world
        .keys
        .iter()
        .copied()
        .filter(|k| k.port.is_none() && !is_node_ip(world, k))
        .collect();
    let port_keys: Vec<OwnershipKey> = world
        .keys
        .iter()
        .copied()
        .filter(|k| k.port.is_some())
        .collect();
    let node_keys: Vec<OwnershipKey> = world
        .keys
        .iter()
        .copied()
        .filter(|k| is_node_ip(world, k))
        .collect();
    let mut out = Vec::with_capacity(cfg.flows * 2);
    let mut made = 0;
    while made < cfg.flows {
        let f = rng.range(0, cfg.duration_ms - 1);
        // Source: a workload or a host process on a node IP.
        let (src_key, src_port) = if rng.chance(0.9) {
            (
                workload_keys[rng.range(0, workload_keys.len() as i64 - 1) as usize],
                rng.range(32768, 60999) as u16,
            )
        } else {
            (
                node_keys[rng.range(0, node_keys.len() as i64 - 1) as usize],
                rng.range(32768, 60999) as u16,
            )
        };
        let Some(src) = world.owner_at(&src_key, f) else {
            continue;
        };
        // Destination: a workload, a host-network port, or a node's sshd.
        let roll = rng.range(0, 99);
        let (dst_key, dst_port) = if roll < 80 {
            (
                workload_keys[rng.range(0, workload_keys.len() as i64 - 1) as usize],
                [443u16, 5432, 8080, 53][rng.range(0, 3) as usize],
            )
        } else if roll < 92 {
            let k = port_keys[rng.range(0, port_keys.len() as i64 - 1) as usize];
            (k, k.port.unwrap_or(8000))
        } else {
            (
                node_keys[rng.range(0, node_keys.len() as i64 - 1) as usize],
                22,
            )
        };
        // A host-network port nobody serves is the node's: its kernel answers.
        let dst = world.owner_at(&dst_key, f).or_else(|| {
            dst_key
                .port
                .and_then(|_| world.owner_at(&OwnershipKey::ip(dst_key.ip), f))
        });
        if dst.is_none() && !rng.chance(cfg.unowned_share) {
            continue;
        }
        made += 1;
        let duration = rng.range(1, 5_000);
        let base = Flow {
            start_ms: 0,
            end_ms: 0,
            protocol: Protocol::Tcp,
            src: SocketAddr::new(src_key.ip, src_port),
            dst: SocketAddr::new(dst_key.ip, dst_port),
            initiator: Initiator::Source,
            bytes_sent: 100,
            packets_sent: 2,
            bytes_received: 200,
            packets_received: 2,
            outcome: Some(if dst.is_some() {
                TcpOutcome::Established
            } else {
                TcpOutcome::Refused
            }),
            retransmits: 0,
            rtt_us: None,
            reporter: Reporter::File("sim".into()),
            local: None,
            enforced: None,
        };
        let truth = [Some(src.owner.clone()), dst.map(|d| d.owner.clone())];
        let mut report =
            |rng: &mut Rng, skew: i64, reporter: Reporter, local: Option<LocalSide>| {
                let mut flow = base.clone();
                flow.start_ms = T0 + f + skew;
                flow.end_ms = flow.start_ms + duration;
                flow.reporter = reporter;
                flow.local = local;
                let at = f + duration + rng.range(0, cfg.max_flow_delay_ms);
                out.push((at, Arrival::Flow(Box::new((flow, truth.clone())))));
            };
        let by_agent = rng.chance(0.6);
        if by_agent {
            report(
                rng,
                world.skew[src.node as usize],
                Reporter::Agent(node_name(src.node)),
                Some(LocalSide {
                    side: Side::Source,
                    owner: src.owner.clone(),
                    by_port: false,
                    unit: String::new(),
                }),
            );
            // Both ends report the same flow.
            if let Some(d) = dst.filter(|_| rng.chance(0.5)) {
                report(
                    rng,
                    world.skew[d.node as usize],
                    Reporter::Agent(node_name(d.node)),
                    Some(LocalSide {
                        side: Side::Destination,
                        owner: d.owner.clone(),
                        by_port: dst_key.port.is_some()
                            && matches!(d.owner, Owner::Workload { .. }),
                        unit: String::new(),
                    }),
                );
            }
        } else {
            // An exporter on some node's clock, knowing neither end.
            let n = rng.range(0, i64::from(cfg.nodes) - 1) as usize;
            report(rng, world.skew[n], Reporter::File("vpc".into()), None);
        }
    }
    out
}

fn is_node_ip(world: &World, k: &OwnershipKey) -> bool {
    k.port.is_none()
        && world.by_key[k]
            .first()
            .is_some_and(|t| matches!(t.owner, Owner::Node { .. }))
}

fn grade(g: &mut Grades, truth: &Option<Owner>, answer: Option<&Owner>) {
    g.ends += 1;
    match (truth, answer) {
        (_, None) => g.unattributed += 1,
        (Some(t), Some(a)) if t == a => g.right += 1,
        _ => g.wrong += 1,
    }
}

/// Runs the simulation: Hallmark's engine and both baselines on one input.
pub fn run(cfg: &SimConfig) -> SimReport {
    let mut rng = Rng(cfg.seed);
    let world = build_world(cfg, &mut rng);
    let mut arrivals = evidence_arrivals(cfg, &world, &mut rng);
    arrivals.extend(flow_arrivals(cfg, &world, &mut rng));
    // Stable: evidence sent before a flow at the same instant stays first.
    arrivals.sort_by_key(|(at, _)| *at);

    let config = AttributorConfig {
        heartbeat_ms: cfg.heartbeat_ms,
        skew_ms: cfg.max_clock_skew_ms,
        ..AttributorConfig::default()
    };
    let mut engine = Attributor::new(config, Networks::new());
    let mut report = SimReport::default();
    let mut truths: HashMap<u64, [Option<Owner>; 2]> = HashMap::new();
    let mut serial = 0u64;
    // Baseline 1: the current owner, as start/stop events say.
    let mut current: HashMap<OwnershipKey, Owner> = HashMap::new();
    // Baseline 2: assignment (start) events per address, graded after a
    // 15-minute hold-back: the latest start at or before the flow's time.
    let mut assignments: HashMap<OwnershipKey, Vec<(i64, Owner)>> = HashMap::new();
    let mut assign_queue: Vec<(Flow, [Option<Owner>; 2])> = Vec::new();

    let mut next_poll = 0;
    let mut emitted = Vec::new();
    let grade_engine = |engine: &Attributor,
                        out: Vec<crate::AttributedFlow>,
                        report: &mut SimReport,
                        truths: &mut HashMap<u64, [Option<Owner>; 2]>| {
        for a in out {
            let id = a.flow.bytes_sent;
            let Some(truth) = truths.remove(&id) else {
                continue;
            };
            for (end, truth) in [(&a.src, &truth[0]), (&a.dst, &truth[1])] {
                let owner = end.owner().and_then(|o| engine.index().owners().get(o));
                if owner.is_some() && owner != truth.as_ref() && report.wrong_examples.len() < 5 {
                    let ip = if std::ptr::eq(end, &a.src) {
                        a.flow.src.ip()
                    } else {
                        a.flow.dst.ip()
                    };
                    report.wrong_examples.push(format!(
                            "{:?}: truth {truth:?}, answered {owner:?} by {end:?}; ranges of {ip}: {:?}",
                            a.flow,
                            engine.index().ranges(OwnershipKey::ip(ip))
                        ));
                }
                grade(&mut report.hallmark, truth, owner);
                match end {
                    EndAttribution::Unattributed(UnattributedReason::NoOwner) => {
                        report.no_owner += 1
                    }
                    EndAttribution::Unattributed(UnattributedReason::Ambiguous) => {
                        report.ambiguous += 1
                    }
                    EndAttribution::Unattributed(UnattributedReason::Late) => report.late += 1,
                    _ => {}
                }
            }
        }
    };
    for (at, arrival) in arrivals {
        while next_poll <= at {
            let out = engine.poll(T0 + next_poll);
            grade_engine(&engine, out, &mut report, &mut truths);
            next_poll += 1_000;
        }
        match arrival {
            Arrival::Evidence(ev) => {
                report.evidence += 1;
                match ev.kind {
                    EvidenceKind::Started => {
                        current.insert(ev.key, ev.owner.clone());
                        assignments
                            .entry(ev.key)
                            .or_default()
                            .push((ev.at_ms, ev.owner.clone()));
                    }
                    EvidenceKind::Stopped if current.get(&ev.key) == Some(&ev.owner) => {
                        current.remove(&ev.key);
                    }
                    _ => {}
                }
                engine.record(&ev);
            }
            Arrival::Flow(boxed) => {
                let (mut flow, truth) = *boxed;
                report.flows += 1;
                serial += 1;
                // The byte counter carries the flow's serial through the engine.
                flow.bytes_sent = serial;
                for (side, t) in [(Side::Source, &truth[0]), (Side::Destination, &truth[1])] {
                    let addr = flow.addr(side);
                    let local = flow
                        .local
                        .as_ref()
                        .filter(|l| l.side == side)
                        .map(|l| &l.owner);
                    let key_port = OwnershipKey::port(addr.ip(), addr.port());
                    let answer = local
                        .or_else(|| current.get(&key_port))
                        .or_else(|| current.get(&OwnershipKey::ip(addr.ip())))
                        .or_else(|| {
                            (!current.contains_key(&key_port))
                                .then(|| node_owner(&world, addr.ip()))
                                .flatten()
                        });
                    grade(&mut report.current_owner, t, answer);
                }
                assign_queue.push((flow.clone(), truth.clone()));
                truths.insert(serial, truth);
                if let Some(done) = engine.submit(flow, T0 + at) {
                    emitted.push(done);
                    let out = std::mem::take(&mut emitted);
                    grade_engine(&engine, out, &mut report, &mut truths);
                }
            }
        }
    }
    let out = engine.poll(T0 + next_poll + config.holdback_ms);
    grade_engine(&engine, out, &mut report, &mut truths);
    let out = engine.drain();
    grade_engine(&engine, out, &mut report, &mut truths);

    for list in assignments.values_mut() {
        list.sort_by_key(|(t, _)| *t);
    }
    for (flow, truth) in assign_queue {
        for (side, t) in [(Side::Source, &truth[0]), (Side::Destination, &truth[1])] {
            let addr = flow.addr(side);
            let local = flow
                .local
                .as_ref()
                .filter(|l| l.side == side)
                .map(|l| &l.owner);
            let latest = |key: OwnershipKey| {
                assignments.get(&key).and_then(|l| {
                    let i = l.partition_point(|(at, _)| *at <= flow.start_ms);
                    l[..i].last().map(|(_, o)| o)
                })
            };
            let answer = local
                .or_else(|| latest(OwnershipKey::port(addr.ip(), addr.port())))
                .or_else(|| latest(OwnershipKey::ip(addr.ip())))
                .or_else(|| node_owner(&world, addr.ip()));
            grade(&mut report.assignment_holdback, t, answer);
        }
    }
    report
}

/// The node owning a node IP (its tenure spans the whole run).
fn node_owner(world: &World, ip: IpAddr) -> Option<&Owner> {
    world
        .by_key
        .get(&OwnershipKey::ip(ip))
        .and_then(|l| l.first())
        .map(|t| &t.owner)
        .filter(|o| matches!(o, Owner::Node { .. }))
}
