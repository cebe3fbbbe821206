//! `attribution`: the flow attribution engine, in memory.
//!
//! - Throughput: the engine over flows whose evidence is complete (every
//!   end decided at once, the steady state), by reference
//!   (`Attributor::attribute`) and by value (`Attributor::submit`), beside a
//!   plain `HashMap<IpAddr, Owner>` lookup of both ends of the same flows:
//!   the cheapest possible "who has this IP" answer, and the wrong one when
//!   IPs are reused. Rates are per core: flows over the thread's on-CPU
//!   time, best of several alternating rounds, so other processes on a
//!   shared machine do not count against either side.
//! - Correctness: the ground-truth simulation (IPs reused 1-5 s after their
//!   owner stopped, delayed and reordered flows, lost heartbeats, skewed
//!   clocks), graded for Hallmark and for two baselines on the same input.
//! - Memory: resident memory of an index holding a million ranges.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Result;
use clap::Args;
use hallmark_flows::sim::{self, Grades, SimConfig};
use hallmark_flows::{
    Attributor, AttributorConfig, Evidence, EvidenceKind, Flow, Initiator, Networks, Owner,
    OwnershipIndex, OwnershipKey, Protocol, Reporter,
};
use serde::Serialize;

use crate::procfs::Memory;
use crate::report::{num, verdict, Table};
use crate::stats::Clock;

#[derive(Args, Debug)]
pub struct AttributionArgs {
    /// Flows through the engine in the throughput run.
    #[arg(long, default_value_t = 2_000_000)]
    pub flows: usize,
    /// Distinct IPs in the throughput run (each reused by several owners).
    #[arg(long, default_value_t = 10_000)]
    pub ips: u32,
    /// Flows in the ground-truth simulation (both ends reporting some of
    /// them adds about a third).
    #[arg(long, default_value_t = 1_000_000)]
    pub sim_flows: usize,
    /// Ranges in the memory run.
    #[arg(long, default_value_t = 1_000_000)]
    pub ranges: usize,
    /// Alternating rounds of each throughput loop; the best counts.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

#[derive(Debug, Serialize)]
pub struct AttributionReport {
    pub flows: usize,
    pub rounds: usize,
    /// How the rates' seconds were measured: `thread-cpu` or `wall`.
    pub clock: &'static str,
    /// `Attributor::attribute`, by reference.
    pub engine_flows_per_sec: f64,
    /// `Attributor::submit`, by value.
    pub engine_submit_flows_per_sec: f64,
    pub hashmap_flows_per_sec: f64,
    pub engine_share_of_hashmap: f64,
    pub engine_submit_share_of_hashmap: f64,
    pub sim_flows: u64,
    pub hallmark: GradeRow,
    pub current_owner: GradeRow,
    pub assignment_holdback: GradeRow,
    pub unattributed_no_owner: u64,
    pub unattributed_ambiguous: u64,
    pub unattributed_late: u64,
    pub ranges: usize,
    pub index_rss_anon_kib: u64,
    pub bytes_per_range: f64,
}

#[derive(Debug, Serialize)]
pub struct GradeRow {
    pub ends: u64,
    pub wrong: u64,
    pub wrong_pct: f64,
    pub unattributed_pct: f64,
}

impl From<Grades> for GradeRow {
    fn from(g: Grades) -> Self {
        GradeRow {
            ends: g.ends,
            wrong: g.wrong,
            wrong_pct: 100.0 * g.wrong_share(),
            unattributed_pct: 100.0 * g.unattributed_share(),
        }
    }
}

const T0: i64 = 1_750_000_000_000;
/// Each IP's tenures in the throughput run: 10 minutes, then 3 s free.
const TENURE_MS: i64 = 600_000;
const GAP_MS: i64 = 3_000;
const TENURES: i64 = 6;

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
}

fn owner(i: u32, tenure: i64) -> Owner {
    Owner::Workload {
        context: "bench".into(),
        node: format!("node-{}", i % 50),
        container_id: format!("{i:032x}{tenure:032x}"),
    }
}

/// Start, 10 s heartbeats and stop for every tenure of every IP.
fn evidence(ips: u32) -> impl Iterator<Item = Evidence> {
    (0..ips).flat_map(|i| {
        (0..TENURES).flat_map(move |n| {
            let from = n * (TENURE_MS + GAP_MS);
            let to = from + TENURE_MS;
            let o = owner(i, n);
            (from..=to).step_by(10_000).map(move |t| Evidence {
                key: OwnershipKey::ip(ip(i)),
                owner: o.clone(),
                at_ms: T0 + t,
                kind: if t == from {
                    EvidenceKind::Started
                } else if t == to {
                    EvidenceKind::Stopped
                } else {
                    EvidenceKind::Heartbeat
                },
            })
        })
    })
}

/// splitmix64, for flows that do not depend on the day.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn flows(n: usize, ips: u32) -> Vec<Flow> {
    (0..n as u64)
        .map(|k| {
            let r = mix(k);
            let tenure = (r % TENURES as u64) as i64;
            // Well inside the tenure: every end is decided at once.
            let at = tenure * (TENURE_MS + GAP_MS) + 1_000 + (r >> 8) as i64 % (TENURE_MS - 2_000);
            Flow {
                start_ms: T0 + at,
                end_ms: T0 + at + 20,
                protocol: Protocol::Tcp,
                src: SocketAddr::new(ip((r >> 20) as u32 % ips), 40_000),
                dst: SocketAddr::new(ip((r >> 40) as u32 % ips), 443),
                initiator: Initiator::Source,
                bytes_sent: 1,
                packets_sent: 1,
                bytes_received: 1,
                packets_received: 1,
                outcome: None,
                retransmits: 0,
                rtt_us: None,
                reporter: Reporter::File("bench".into()),
                local: None,
                enforced: None,
            }
        })
        .collect()
}

pub fn run(args: &AttributionArgs) -> Result<AttributionReport> {
    // Memory first, while the heap holds nothing freed that the index
    // could reuse unseen.
    // A million single-owner ranges, four per IP.
    let before = Memory::of_pid(std::process::id())?.rss_anon_kib;
    let mut index = OwnershipIndex::new(10_000, 500);
    let per_ip = 4usize;
    for r in 0..args.ranges {
        let i = (r / per_ip) as u32;
        let n = (r % per_ip) as i64;
        for t in [0, 10_000] {
            index.record(&Evidence {
                key: OwnershipKey::ip(ip(i)),
                owner: owner(i, n),
                at_ms: T0 + n * 100_000 + t,
                kind: EvidenceKind::Heartbeat,
            });
        }
    }
    let after = Memory::of_pid(std::process::id())?.rss_anon_kib;
    anyhow::ensure!(
        index.range_count() == args.ranges,
        "memory run built {} ranges",
        index.range_count()
    );
    let index_kib = after.saturating_sub(before);
    black_box(&index);

    drop(index);

    // Throughput: the engine, with its index built, over flows it decides
    // at once.
    let mut engine = Attributor::new(AttributorConfig::default(), Networks::new());
    for ev in evidence(args.ips) {
        engine.record(&ev);
    }
    let input = flows(args.flows, args.ips);
    // The plain lookup: today's owner of every IP (its last tenure).
    let current: HashMap<IpAddr, Owner> = (0..args.ips)
        .map(|i| (ip(i), owner(i, TENURES - 1)))
        .collect();
    let clock = Clock::detect();
    let (mut by_ref, mut by_value, mut plain) = (0f64, 0f64, 0f64);
    for _ in 0..args.rounds.max(1) {
        let started = clock.now();
        let mut attributed = 0usize;
        for f in &input {
            if let Some(ends) = engine.attribute(f, T0) {
                attributed += usize::from(ends.0.owner().is_some());
                attributed += usize::from(ends.1.owner().is_some());
                black_box(&ends);
            }
        }
        by_ref = by_ref.max(args.flows as f64 / clock.since(started));
        anyhow::ensure!(
            attributed == 2 * args.flows && engine.held() == 0,
            "throughput run: {attributed} of {} ends attributed at once, {} held",
            2 * args.flows,
            engine.held()
        );

        let owned = input.clone();
        let started = clock.now();
        let mut attributed = 0usize;
        for f in owned {
            if let Some(done) = engine.submit(f, T0) {
                attributed += usize::from(done.src.owner().is_some());
                attributed += usize::from(done.dst.owner().is_some());
                black_box(&done);
            }
        }
        by_value = by_value.max(args.flows as f64 / clock.since(started));
        anyhow::ensure!(
            attributed == 2 * args.flows && engine.held() == 0,
            "throughput run (submit): {attributed} of {} ends attributed at once",
            2 * args.flows
        );

        let started = clock.now();
        let mut found = 0usize;
        for f in &input {
            let a = current.get(&f.src.ip());
            let b = current.get(&f.dst.ip());
            found += usize::from(a.is_some()) + usize::from(b.is_some());
            black_box((a, b));
        }
        plain = plain.max(args.flows as f64 / clock.since(started));
        anyhow::ensure!(found == 2 * args.flows, "baseline found {found} ends");
    }

    // Ground truth.
    let sim = sim::run(&SimConfig {
        flows: args.sim_flows,
        ..SimConfig::default()
    });

    Ok(AttributionReport {
        flows: args.flows,
        rounds: args.rounds.max(1),
        clock: clock.name(),
        engine_flows_per_sec: by_ref,
        engine_submit_flows_per_sec: by_value,
        hashmap_flows_per_sec: plain,
        engine_share_of_hashmap: by_ref / plain,
        engine_submit_share_of_hashmap: by_value / plain,
        sim_flows: sim.flows,
        hallmark: sim.hallmark.into(),
        current_owner: sim.current_owner.into(),
        assignment_holdback: sim.assignment_holdback.into(),
        unattributed_no_owner: sim.no_owner,
        unattributed_ambiguous: sim.ambiguous,
        unattributed_late: sim.late,
        ranges: args.ranges,
        index_rss_anon_kib: index_kib,
        bytes_per_range: index_kib as f64 * 1024.0 / args.ranges as f64,
    })
}

pub fn print(r: &AttributionReport) {
    let mut t = Table::new(&[
        "engine throughput (1 core)",
        "flows/s",
        "vs HashMap",
        "target",
    ]);
    t.row(vec![
        "HashMap<IpAddr, Owner> lookup, both ends".into(),
        num(r.hashmap_flows_per_sec),
        "1.00x".into(),
        String::new(),
    ]);
    t.row(vec![
        "Attributor::attribute (by reference)".into(),
        num(r.engine_flows_per_sec),
        format!("{:.2}x", r.engine_share_of_hashmap),
        verdict(r.engine_flows_per_sec >= 5e6 && r.engine_share_of_hashmap >= 0.30),
    ]);
    t.row(vec![
        "Attributor::submit (by value)".into(),
        num(r.engine_submit_flows_per_sec),
        format!("{:.2}x", r.engine_submit_share_of_hashmap),
        String::new(),
    ]);
    print!("{}", t.render());
    println!(
        "{} flows, best of {} rounds, seconds by {} time",
        r.flows, r.rounds, r.clock
    );
    println!();
    let mut t = Table::new(&[
        "ground truth",
        "flow ends",
        "wrong",
        "wrong %",
        "unattributed %",
    ]);
    for (name, g) in [
        ("hallmark (ranges, hold-back)", &r.hallmark),
        ("current owner at arrival", &r.current_owner),
        (
            "assignment events, 15 min hold-back",
            &r.assignment_holdback,
        ),
    ] {
        t.row(vec![
            name.into(),
            g.ends.to_string(),
            g.wrong.to_string(),
            format!("{:.3}", g.wrong_pct),
            format!("{:.3}", g.unattributed_pct),
        ]);
    }
    print!("{}", t.render());
    println!(
        "simulated flows: {} (unattributed: {} no-owner, {} ambiguous, {} late)",
        r.sim_flows, r.unattributed_no_owner, r.unattributed_ambiguous, r.unattributed_late
    );
    println!(
        "ownership index: {} ranges in {} KiB RssAnon = {:.0} bytes per range",
        r.ranges, r.index_rss_anon_kib, r.bytes_per_range
    );
}
