//! `enforce`: what identity policy enforcement in the kernel costs, beside
//! the same work with no enforcement programs attached, in one run.
//!
//! - Connections: the process moves into a cgroup2 child of its own and
//!   connects over loopback to its own listeners, in alternating rounds:
//!   baseline (no enforcement programs attached anywhere), then enforced
//!   (an [`Enforcer`] loaded as the agent loads it, attached to the cgroup2
//!   root, mode on, with the image of [`image`]: 1,000 rules, 10,000 peer
//!   IPs, the process's cgroup one of the local workloads and 127.0.0.1 a
//!   peer the policy allows on the listeners' ports). Loading and
//!   installing happen before an enforced round's clock starts; the
//!   enforcer is dropped (its programs detached) after it. The enforced
//!   rounds must decide every connect (egress and the listener's ingress)
//!   and deny none, or the benchmark fails.
//! - Install: a new policy revision compiled for a node (local workloads
//!   and 10,000 peers) and installed into the kernel maps, alternating
//!   two policies so each install changes the content; the compile and the
//!   install timed apart and together.
//!
//! It needs root (BPF), and leaves no cgroup or program behind.

#[path = "enforce_bench_image.rs"]
pub(crate) mod image;
#[path = "enforce_bench_loops.rs"]
mod loops;
#[cfg(test)]
#[path = "enforce_bench_tests.rs"]
mod tests;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hallmark_bpf::{Decisions, EnforceOptions, Enforcer, Mode, PolicyImage};
use hallmark_policy::Policy;
use serde::Serialize;

use crate::capture::{KernelRound, Rounds};
use crate::policy_bench::world::World;
use crate::report::{num, verdict, Table};
use crate::stats::{Samples, Summary};
use image::{ImageSize, NodeInputs, Role};
use loops::{acceptors_on, BenchCgroup};

/// The targets: the enforced connection rate as a share of the
/// baseline, and the p99 `connect()` latency added.
pub const TARGET_SHARE: f64 = 0.90;
pub const TARGET_ADDED_P99_US: f64 = 5.0;
/// Listeners the connect loop spreads its connections over.
const LISTENERS: usize = 4;

#[derive(Args, Debug, Clone)]
pub struct EnforceArgs {
    /// Rounds of each kind (baseline and enforced, interleaved), at least 3.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Seconds per round.
    #[arg(long, default_value_t = 3.0)]
    pub round_secs: f64,
    /// Client threads of the connect loop.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Workloads of the generated world.
    #[arg(long, default_value_t = 10_000)]
    pub workloads: usize,
    /// Groups in the policy.
    #[arg(long, default_value_t = 200)]
    pub groups: usize,
    /// Rules in the policy.
    #[arg(long, default_value_t = 1_000)]
    pub rules: usize,
    /// Peer IPs in the image (127.0.0.1 and other workloads' addresses).
    #[arg(long, default_value_t = 10_000)]
    pub peers: usize,
    /// Local workloads of the connect rounds' node: the benchmark's cgroup
    /// and made-up others.
    #[arg(long, default_value_t = 1)]
    pub locals: usize,
    /// Local workloads of the install measurement (made-up cgroup ids).
    #[arg(long, default_value_t = 1)]
    pub install_locals: usize,
    /// Policy revisions installed, alternating two policies.
    #[arg(long, default_value_t = 20)]
    pub revisions: usize,
    /// Seed of the generated world (the second policy uses seed + 1).
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
    /// Shorter: 1 s rounds, 3 rounds, 6 revisions.
    #[arg(long)]
    pub quick: bool,
}

impl EnforceArgs {
    /// The arguments with `--quick` applied, checked.
    pub fn effective(&self) -> Result<EnforceArgs> {
        let mut a = self.clone();
        if a.quick {
            a.round_secs = a.round_secs.min(1.0);
            a.rounds = a.rounds.min(3);
            a.revisions = a.revisions.min(6);
        }
        crate::stats::check_rounds(a.rounds, a.round_secs)?;
        if a.clients == 0 || a.locals == 0 || a.peers == 0 || a.install_locals == 0 {
            bail!("--clients, --locals, --install-locals and --peers must be at least 1");
        }
        if a.workloads < 2 || a.groups == 0 || a.rules == 0 {
            bail!("--workloads must be at least 2, --groups and --rules at least 1");
        }
        if a.revisions < 2 {
            bail!("--revisions {}: must be at least 2", a.revisions);
        }
        Ok(a)
    }
}

/// The workload the benchmark plays.
#[derive(Debug, Serialize)]
pub struct RoleReport {
    pub workload: String,
    pub spiffe_id: String,
    /// Listener ports and the rule allowing each.
    pub ports: Vec<(u16, String)>,
}

/// Decisions the programs counted in the enforced rounds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct DecisionCount {
    pub allowed: u64,
    pub denied: u64,
    pub would_deny: u64,
}

/// The connection rounds.
#[derive(Debug, Serialize)]
pub struct ConnectReport {
    pub rounds: usize,
    pub round_secs: f64,
    pub clients: usize,
    pub image: ImageSize,
    /// Connections per second per round: `off` = no programs, `on` = enforced.
    pub rate: Rounds,
    /// Connections per CPU-second of this process (every thread, user and
    /// system) per round: the cost per connection, which other work on a
    /// shared machine moves far less than the wall-clock rate.
    pub cpu_rate: Rounds,
    /// `connect()` alone, client side, all rounds of a kind together.
    pub latency_off: Option<Summary>,
    pub latency_on: Option<Summary>,
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
    pub completed_off: u64,
    pub completed_on: u64,
    pub failed_off: u64,
    pub failed_on: u64,
    /// Connects of the enforced rounds that failed with EPERM (none may).
    pub denied_connects: u64,
    pub decisions: DecisionCount,
    pub decisions_per_connect: Option<f64>,
    /// Loading and attaching the programs, and installing the image, before
    /// each enforced round (not timed in it); medians.
    pub load_ms: f64,
    pub install_ms: f64,
    /// One more enforced round with the kernel's run-time statistics on.
    pub kernel: Option<KernelRound>,
}

/// p50/p99/max in milliseconds of one step over the revisions.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Millis {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Millis {
    pub fn of(s: &Samples) -> Option<Millis> {
        s.summary().map(|s| Millis {
            p50_ms: s.p50_us / 1e3,
            p99_ms: s.p99_us / 1e3,
            max_ms: s.max_us / 1e3,
        })
    }
}

/// One map's use after the last install.
#[derive(Debug, Clone, Serialize)]
pub struct MapUse {
    pub map: &'static str,
    pub used: usize,
    pub capacity: usize,
}

/// New policy revisions into the kernel maps.
#[derive(Debug, Serialize)]
pub struct InstallReport {
    pub revisions: usize,
    pub images: [ImageSize; 2],
    /// Every local's and peer's groups (`groups_of`, `peer_set`).
    pub membership: Option<Millis>,
    pub compile_kernel: Option<Millis>,
    /// The agent's conversion to `hallmark_bpf` records.
    pub convert: Option<Millis>,
    /// `Enforcer::install`: write the inactive generation, flip, clear.
    pub install: Option<Millis>,
    /// Membership + compile + convert + install.
    pub total: Option<Millis>,
    pub map_usage: Vec<MapUse>,
}

#[derive(Debug, Serialize)]
pub struct EnforceReport {
    pub workloads: usize,
    pub groups: usize,
    pub rules: usize,
    pub peers: usize,
    pub locals: usize,
    pub install_locals: usize,
    pub role: RoleReport,
    pub connect: ConnectReport,
    pub install: InstallReport,
    pub target_share: f64,
    pub target_added_p99_us: f64,
    pub rate_target_met: bool,
    pub latency_target_met: bool,
}

pub fn run(args: &EnforceArgs) -> Result<EnforceReport> {
    let a = args.effective()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("enforce loads eBPF programs: run hallmark-bench enforce as root");
    }
    hallmark_bpf::probe().context("this kernel or process cannot run eBPF programs")?;
    let root = hallmark_bpf::cgroup2_mount().context("no cgroup2 hierarchy is mounted")?;

    eprintln!(
        "enforce: generating {} workloads, {} groups, {} rules",
        a.workloads, a.groups, a.rules
    );
    let world = World::generate(a.workloads, a.groups, a.rules, a.seed);
    let policy = image::policy_of(&world)?;
    let Some(role) = image::pick_role(&policy, &world, 4 * LISTENERS) else {
        bail!(
            "no workload of the generated world (seed {}) may connect to itself over TCP by a rule: try another --seed",
            a.seed
        );
    };
    let w = &world.workloads[role.workload];
    let role_report = RoleReport {
        workload: w.uid.clone(),
        spiffe_id: w.attrs.spiffe_ids.first().cloned().unwrap_or_default(),
        ports: role.ports.clone(),
    };

    let mut cgroup = BenchCgroup::create(&root)?;
    let connect = connect_rounds(&a, &policy, &world, &role, &mut cgroup);
    cgroup.leave()?;
    let connect = connect?;

    eprintln!(
        "enforce: {} policy revisions installed, {} locals, {} peers",
        a.revisions, a.install_locals, a.peers
    );
    let install = install_revisions(&a, &world, &policy, &cgroup)?;
    drop(cgroup);

    let rate_target_met = connect.rate.ratio.is_some_and(|r| r >= TARGET_SHARE);
    let latency_target_met = connect
        .added_p99_us
        .is_some_and(|d| d < TARGET_ADDED_P99_US);
    Ok(EnforceReport {
        workloads: a.workloads,
        groups: a.groups,
        rules: a.rules,
        peers: a.peers,
        locals: a.locals,
        install_locals: a.install_locals,
        role: role_report,
        connect,
        install,
        target_share: TARGET_SHARE,
        target_added_p99_us: TARGET_ADDED_P99_US,
        rate_target_met,
        latency_target_met,
    })
}

/// An enforcer as the agent loads it (the cgroup2 root, no pins), with
/// `image` installed; (enforcer, load time, install time).
fn enforce(image: &PolicyImage) -> Result<(Enforcer, Duration, Duration)> {
    let t = Instant::now();
    let mut enf = Enforcer::load(&EnforceOptions {
        cgroup: None,
        pin_dir: None,
    })
    .context("loading the enforcement programs")?;
    let load = t.elapsed();
    let t = Instant::now();
    enf.install(image)
        .context("installing the benchmark's policy image")?;
    Ok((enf, load, t.elapsed()))
}

fn delta(before: Decisions, after: Decisions) -> DecisionCount {
    DecisionCount {
        allowed: after.allowed.saturating_sub(before.allowed),
        denied: after.denied.saturating_sub(before.denied),
        would_deny: after.would_deny.saturating_sub(before.would_deny),
    }
}

fn connect_rounds(
    a: &EnforceArgs,
    policy: &Policy,
    world: &World,
    role: &Role,
    cgroup: &mut BenchCgroup,
) -> Result<ConnectReport> {
    let inputs = image::rate_inputs(policy, world, role, cgroup.id, a.locals, a.peers);
    let built = image::build(policy, &inputs, Mode::On, Some(image::LOOPBACK))?;
    let size = ImageSize::of(&built);
    eprintln!(
        "enforce: connect image: {} locals, {} peer entries, {} pairs, {} identities",
        size.locals, size.peers, size.pairs, size.identities
    );
    cgroup.enter()?;
    // Created inside the cgroup: the listeners are the workload's too.
    let ports: Vec<u16> = role.ports.iter().map(|(p, _)| *p).collect();
    let acceptors = acceptors_on(&ports, LISTENERS)?;
    let round = Duration::from_secs_f64(a.round_secs);
    eprintln!(
        "enforce: connect rounds, {} of {:.1} s each baseline/enforced, {} clients, ports {:?}",
        a.rounds,
        a.round_secs,
        a.clients,
        acceptors.addrs.iter().map(|s| s.port()).collect::<Vec<_>>()
    );
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut cpu_off, mut cpu_on) = (Vec::new(), Vec::new());
    let (mut lat_off, mut lat_on) = (Samples::default(), Samples::default());
    let mut report = ConnectReport {
        rounds: a.rounds,
        round_secs: a.round_secs,
        clients: a.clients,
        image: size,
        rate: Rounds::new(Vec::new(), Vec::new()),
        cpu_rate: Rounds::new(Vec::new(), Vec::new()),
        latency_off: None,
        latency_on: None,
        added_p50_us: None,
        added_p99_us: None,
        completed_off: 0,
        completed_on: 0,
        failed_off: 0,
        failed_on: 0,
        denied_connects: 0,
        decisions: DecisionCount::default(),
        decisions_per_connect: None,
        load_ms: 0.0,
        install_ms: 0.0,
        kernel: None,
    };
    let (mut loads, mut installs) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        let r = loops::connect_round(&acceptors.addrs, a.clients, round);
        report.completed_off += r.completed;
        report.failed_off += r.failed + r.denied;
        off.push(crate::stats::rate(r.completed as usize, r.elapsed));
        cpu_off.push(crate::stats::rate(r.completed as usize, r.cpu));
        lat_off.extend(r.connect);

        let (enf, load, install) = enforce(&built.image)?;
        loads.push(load.as_secs_f64() * 1e3);
        installs.push(install.as_secs_f64() * 1e3);
        let before = enf.decisions();
        let r = loops::connect_round(&acceptors.addrs, a.clients, round);
        let d = delta(before, enf.decisions());
        drop(enf);
        report.completed_on += r.completed;
        report.failed_on += r.failed;
        report.denied_connects += r.denied;
        report.decisions.allowed += d.allowed;
        report.decisions.denied += d.denied;
        report.decisions.would_deny += d.would_deny;
        on.push(crate::stats::rate(r.completed as usize, r.elapsed));
        cpu_on.push(crate::stats::rate(r.completed as usize, r.cpu));
        lat_on.extend(r.connect);
    }
    report.kernel = kernel_round(&built.image, || {
        let r = loops::connect_round(&acceptors.addrs, a.clients, round);
        (r.completed, r.elapsed)
    })?;
    drop(acceptors);
    check_decided(&report)?;
    report.rate = Rounds::new(off, on);
    report.cpu_rate = Rounds::new(cpu_off, cpu_on);
    report.latency_off = lat_off.summary();
    report.latency_on = lat_on.summary();
    if let (Some(x), Some(y)) = (report.latency_off, report.latency_on) {
        report.added_p50_us = Some(y.p50_us - x.p50_us);
        report.added_p99_us = Some(y.p99_us - x.p99_us);
    }
    let connects = report.completed_on + report.failed_on + report.denied_connects;
    report.decisions_per_connect = (connects > 0).then(|| {
        (report.decisions.allowed + report.decisions.denied + report.decisions.would_deny) as f64
            / connects as f64
    });
    report.load_ms = crate::stats::median(&loads).unwrap_or(0.0);
    report.install_ms = crate::stats::median(&installs).unwrap_or(0.0);
    Ok(report)
}

/// Fails unless the enforced rounds went through real allowed decisions:
/// at least one per connect, none denied.
pub fn check_decided(r: &ConnectReport) -> Result<()> {
    let attempted = r.completed_on + r.failed_on + r.denied_connects;
    if r.denied_connects > 0 || r.decisions.denied > 0 || r.decisions.would_deny > 0 {
        bail!(
            "benchmark failure: the enforced rounds denied {} connects ({} deny and {} would-deny decisions) that the policy allows: the image or the programs decide wrongly",
            r.denied_connects,
            r.decisions.denied,
            r.decisions.would_deny
        );
    }
    if r.decisions.allowed < attempted {
        bail!(
            "benchmark failure: {} allowed decisions for {attempted} connects in the enforced rounds: the connects were not decided (is the process's cgroup in the image?)",
            r.decisions.allowed
        );
    }
    Ok(())
}

/// One more enforced round with the kernel's run-time statistics on: the
/// enforcement programs' runs and time. `None` when the kernel refuses.
fn kernel_round(
    image: &PolicyImage,
    work: impl FnOnce() -> (u64, Duration),
) -> Result<Option<KernelRound>> {
    // Counted while this fd is open; costs two clock reads per run, so the
    // timed rounds run without it.
    let stats = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("enforce: kernel run-time statistics unavailable: {e}");
            return Ok(None);
        }
    };
    let (enf, _, _) = enforce(image)?;
    let (units, elapsed) = work();
    let ids = enf.program_ids();
    let mut k = KernelRound {
        runs: 0,
        seconds: 0.0,
        units,
        elapsed_seconds: elapsed.as_secs_f64(),
        programs: Vec::new(),
    };
    for p in aya::programs::loaded_programs().filter_map(Result::ok) {
        if ids.contains(&p.id()) {
            k.runs += p.run_count();
            k.seconds += p.run_time().as_secs_f64();
            if p.run_count() > 0 {
                k.programs.push((
                    p.name_as_str().unwrap_or("?").to_string(),
                    p.run_count(),
                    p.run_time().as_secs_f64(),
                ));
            }
        }
    }
    drop(enf);
    drop(stats);
    Ok(Some(k))
}

/// Revisions alternating two policies (seed and seed + 1: the same
/// workloads, other groups and rules), each compiled and installed into an
/// enforcer attached to the benchmark's cgroup, empty by now.
fn install_revisions(
    a: &EnforceArgs,
    world: &World,
    policy: &Policy,
    cgroup: &BenchCgroup,
) -> Result<InstallReport> {
    let other_world = World::generate(a.workloads, a.groups, a.rules, a.seed.wrapping_add(1));
    let other = image::policy_of(&other_world)?;
    let policies = [policy, &other];
    // The peers' group names come with the revision from the server.
    let inputs: Vec<NodeInputs> = policies
        .iter()
        .map(|p| image::install_inputs(p, world, a.install_locals, a.peers))
        .collect();
    let mut enf = Enforcer::load(&EnforceOptions {
        cgroup: Some(cgroup.dir.clone()),
        pin_dir: None,
    })
    .context("loading the enforcement programs on the benchmark's cgroup")?;
    let (mut membership, mut compile, mut convert) =
        (Samples::default(), Samples::default(), Samples::default());
    let (mut install, mut total) = (Samples::default(), Samples::default());
    let mut sizes = [None, None];
    for rev in 0..a.revisions {
        let k = rev % 2;
        let built = image::build(policies[k], &inputs[k], Mode::On, None)?;
        let t = Instant::now();
        enf.install(&built.image)
            .with_context(|| format!("installing revision {}", rev + 1))?;
        let took = t.elapsed();
        membership.push(built.membership);
        compile.push(built.compile);
        convert.push(built.convert);
        install.push(took);
        total.push(built.total() + took);
        sizes[k] = Some(ImageSize::of(&built));
    }
    let usage = enf
        .map_usage()
        .context("reading the enforcement maps' use")?;
    drop(enf);
    let [Some(s0), Some(s1)] = sizes else {
        bail!("fewer than two revisions were installed");
    };
    let map_usage = [
        ("hm_enf_local", usage.locals),
        ("hm_enf_peer4", usage.peers4),
        ("hm_enf_peer6", usage.peers6),
        ("hm_enf_pairs", usage.pairs),
        ("hm_enf_tables", usage.tables),
        ("hm_enf_exempt", usage.exempt),
        ("hm_enf_udp_ok", usage.udp_ok),
    ]
    .into_iter()
    .map(|(map, u)| MapUse {
        map,
        used: u.used,
        capacity: u.capacity,
    })
    .collect();
    Ok(InstallReport {
        revisions: a.revisions,
        images: [s0, s1],
        membership: Millis::of(&membership),
        compile_kernel: Millis::of(&compile),
        convert: Millis::of(&convert),
        install: Millis::of(&install),
        total: Millis::of(&total),
        map_usage,
    })
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "-".into()
    } else {
        format!("{}–{}", num(min), num(max))
    }
}

pub fn print(r: &EnforceReport) {
    let c = &r.connect;
    println!(
        "identity policy enforcement: {} rules, {} groups, {} workloads; connect image {} locals, {} peer entries, {} pairs, {} identities",
        r.rules, r.groups, r.workloads, c.image.locals, c.image.peers, c.image.pairs, c.image.identities
    );
    if c.image.pairs_needed > c.image.pairs {
        println!(
            "NOTE: compile_kernel needs {} pairs for this image, more than the pair map's {}: the agent would refuse it. Measured with {} pairs kept (the benchmark's own peer identity first; other peers whose pairs were cut would take the default).",
            c.image.pairs_needed, hallmark_bpf::PAIR_CAPACITY, c.image.pairs
        );
    }
    println!(
        "the benchmark is workload {} ({}) at 127.0.0.1, listening on ports allowed by {}",
        r.role.workload,
        r.role.spiffe_id,
        r.role
            .ports
            .iter()
            .take(LISTENERS)
            .map(|(p, rule)| format!("{p} ({rule})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{} rounds each, interleaved, {:.1} s per round, {} client(s); baseline = no enforcement programs attached",
        c.rounds, c.round_secs, c.clients
    );
    let mut t = Table::new(&[
        "measure",
        "baseline",
        "baseline rounds",
        "enforced",
        "enforced rounds",
        "enforced vs baseline",
        "target",
        "verdict",
    ]);
    let rounds_row = |label: &str, rounds: &Rounds, target: String, verdict: String| {
        vec![
            label.to_string(),
            rounds.off_median.map_or("-".into(), num),
            spread(&rounds.off),
            rounds.on_median.map_or("-".into(), num),
            spread(&rounds.on),
            rounds
                .ratio
                .map_or("-".into(), |v| format!("{:.1}%", v * 100.0)),
            target,
            verdict,
        ]
    };
    t.row(rounds_row(
        "connections/s (median of rounds)",
        &c.rate,
        format!(">= {:.0}%", r.target_share * 100.0),
        c.rate
            .ratio
            .map_or("-".into(), |_| verdict(r.rate_target_met)),
    ));
    t.row(rounds_row(
        "connections per CPU-second of this process",
        &c.cpu_rate,
        String::new(),
        String::new(),
    ));
    let us =
        |s: &Option<Summary>, f: fn(&Summary) -> f64| s.as_ref().map_or("-".into(), |s| num(f(s)));
    let added = |d: Option<f64>| d.map_or("-".into(), |d| format!("{d:+.2} µs"));
    t.row(vec![
        "connect() p50, µs".into(),
        us(&c.latency_off, |s| s.p50_us),
        String::new(),
        us(&c.latency_on, |s| s.p50_us),
        String::new(),
        added(c.added_p50_us),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "connect() p99, µs".into(),
        us(&c.latency_off, |s| s.p99_us),
        String::new(),
        us(&c.latency_on, |s| s.p99_us),
        String::new(),
        added(c.added_p99_us),
        format!("< +{:.0} µs", r.target_added_p99_us),
        c.added_p99_us
            .map_or("-".into(), |_| verdict(r.latency_target_met)),
    ]);
    print!("{}", t.render());
    println!(
        "connects: baseline {} ({} failed), enforced {} ({} failed, {} denied); decisions in the enforced rounds: {} allowed, {} denied, {} would-deny = {} per connect",
        c.completed_off,
        c.failed_off,
        c.completed_on,
        c.failed_on,
        c.denied_connects,
        c.decisions.allowed,
        c.decisions.denied,
        c.decisions.would_deny,
        c.decisions_per_connect.map_or("-".into(), |d| format!("{d:.2}"))
    );
    println!(
        "before each enforced round (untimed): load + attach {:.0} ms, install {:.0} ms (medians)",
        c.load_ms, c.install_ms
    );
    match &c.kernel {
        Some(k) => {
            println!(
                "in-kernel (one more enforced round, statistics on): {} runs for {} connections = {:.1} runs, {:.2} µs per connection ({:.1}% of one core)",
                k.runs,
                k.units,
                k.runs as f64 / k.units.max(1) as f64,
                k.us_per_unit().unwrap_or(0.0),
                k.share_of_time().unwrap_or(0.0) * 100.0
            );
            for (name, runs, secs) in &k.programs {
                println!(
                    "  {name}: {runs} runs, {:.0} ns per run, {:.2} µs per connection",
                    secs * 1e9 / (*runs).max(1) as f64,
                    secs * 1e6 / k.units.max(1) as f64
                );
            }
        }
        None => println!("in-kernel: no run-time statistics"),
    }
    println!();

    let i = &r.install;
    println!(
        "policy revision -> kernel maps: {} revisions alternating two policies; images {} / {} locals, {} / {} peer entries, {} / {} pairs ({} / {} segments), {} / {} identities",
        i.revisions,
        i.images[0].locals,
        i.images[1].locals,
        i.images[0].peers,
        i.images[1].peers,
        i.images[0].pairs,
        i.images[1].pairs,
        i.images[0].segments,
        i.images[1].segments,
        i.images[0].identities,
        i.images[1].identities
    );
    for (k, size) in i.images.iter().enumerate() {
        if size.pairs_needed > size.pairs {
            println!(
                "NOTE: policy {}: compile_kernel needs {} pairs, more than the pair map's {}: the agent would refuse it; installed with the first {}",
                k + 1,
                size.pairs_needed,
                hallmark_bpf::PAIR_CAPACITY,
                size.pairs
            );
        }
    }
    let mut t = Table::new(&["step", "p50 ms", "p99 ms", "max ms"]);
    for (name, m) in [
        ("groups of locals and peers", &i.membership),
        ("compile_kernel", &i.compile_kernel),
        ("convert to records", &i.convert),
        ("Enforcer::install", &i.install),
        ("total", &i.total),
    ] {
        t.row(vec![
            name.into(),
            m.map_or("-".into(), |m| num(m.p50_ms)),
            m.map_or("-".into(), |m| num(m.p99_ms)),
            m.map_or("-".into(), |m| num(m.max_ms)),
        ]);
    }
    print!("{}", t.render());
    println!(
        "map use after the last install: {}",
        i.map_usage
            .iter()
            .map(|m| format!("{} {}/{}", m.map, m.used, m.capacity))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
