//! `capture`: what eBPF flow capture costs the node, each figure beside the
//! same work without capture in the same run.
//!
//! - Connection rate: loopback connect/accept/close by client threads, with
//!   no programs attached vs with capture attached and the agent's
//!   user-space side running as the agent runs it (see [`drain`]); rounds
//!   interleaved off, on, off, on, …
//! - Bulk throughput: one loopback stream of 64 KiB writes, off vs on.
//! - Agent CPU: the drain thread's CPU time per record in the on rounds of
//!   the connection loop, as a share of one core at 10,000 flows/s.
//! - Memory at 100,000 open connections: 50,000 loopback pairs (held by
//!   child processes), a snapshot of them converted to flows as the interim report does; the growth of
//!   this process's resident set, and the kernel maps' memory.
//! - Close → listed by `ListFlows` (what `hallmark flows list` asks), with
//!   a server and an agent with capture on in this process.
//!
//! It needs root (BPF), and detaches everything it attached before it
//! returns.

#[path = "capture_drain.rs"]
mod drain;
#[path = "capture_loops.rs"]
pub(crate) mod loops;
#[cfg(test)]
#[path = "capture_tests.rs"]
mod tests;
#[path = "capture_visible.rs"]
mod visible;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hallmark_agent::capture::cgroups::CgroupResolver;
use hallmark_agent::capture::convert::{self, Clock};
use hallmark_bpf::{Capture, CaptureOptions};
use serde::Serialize;

use crate::procfs::Memory;
use crate::report::{num, verdict, Table};
use crate::stats::{median, ratio};
use drain::{Drain, DrainStats, NoContainers, Wake};

/// The target for connection rate and throughput: this share of the
/// baseline.
pub const TARGET_SHARE: f64 = 0.95;
/// The target for close → listed, p99.
pub const TARGET_VISIBLE_P99_MS: f64 = 2000.0;
/// The flow rate the agent's CPU is stated at.
const FLOWS_PER_SEC: f64 = 10_000.0;
/// The alternative drain cadence measured beside the agent's.
const BATCH_EVERY: Duration = Duration::from_millis(50);
/// Listeners the connection loop spreads its connections over.
const LISTENERS: usize = 4;

#[derive(Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Rounds of each kind (off and on, interleaved), at least 3.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds per connection-rate and per throughput round.
    #[arg(long, default_value_t = 3.0)]
    pub round_secs: f64,
    /// Client threads of the connection loop.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Loopback connection pairs held open for the memory figure (two
    /// tracked sockets each).
    #[arg(long, default_value_t = 50_000)]
    pub open_pairs: usize,
    /// Connections timed from close to `ListFlows`.
    #[arg(long, default_value_t = 200)]
    pub connections: usize,
    /// Pause between the starts of those connections, in milliseconds.
    #[arg(long, default_value_t = 25)]
    pub pace_ms: u64,
    /// Shorter: 1 s rounds, 10,000 open pairs, 50 timed connections (and
    /// the rounds asked for, 5 by default).
    #[arg(long)]
    pub quick: bool,
}

impl CaptureArgs {
    /// The arguments with `--quick` applied, checked.
    fn effective(&self) -> Result<CaptureArgs> {
        let mut a = self.clone();
        if a.quick {
            a.round_secs = a.round_secs.min(1.0);
            a.open_pairs = a.open_pairs.min(10_000);
            a.connections = a.connections.min(50);
        }
        crate::stats::check_rounds(a.rounds, a.round_secs)?;
        if a.clients == 0 || a.connections == 0 {
            bail!("--clients and --connections must be at least 1");
        }
        Ok(a)
    }
}

/// Per-round figures of one comparison, off (baseline) vs on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rounds {
    pub off: Vec<f64>,
    pub on: Vec<f64>,
    pub off_median: Option<f64>,
    pub on_median: Option<f64>,
    /// on median / off median.
    pub ratio: Option<f64>,
}

impl Rounds {
    pub fn new(off: Vec<f64>, on: Vec<f64>) -> Self {
        let (off_median, on_median) = (median(&off), median(&on));
        Rounds {
            ratio: off_median.zip(on_median).and_then(|(a, b)| ratio(b, a)),
            off,
            on,
            off_median,
            on_median,
        }
    }

    /// `min–max` of the rounds, for a table cell.
    fn spread(v: &[f64]) -> String {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if v.is_empty() {
            "-".into()
        } else {
            format!("{}–{}", num(min), num(max))
        }
    }
}

/// Agent CPU for the records of the connection loop's on rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cpu {
    pub records: u64,
    pub cpu_seconds: f64,
    pub us_per_record: Option<f64>,
    /// Share of one core the drain thread would use at 10,000 records/s.
    pub percent_core_at_10k: Option<f64>,
}

impl Cpu {
    pub fn of(records: u64, cpu_seconds: f64) -> Self {
        let per = (records > 0).then(|| cpu_seconds / records as f64);
        Cpu {
            records,
            cpu_seconds,
            us_per_record: per.map(|s| s * 1e6),
            percent_core_at_10k: per.map(|s| s * 10_000.0 * 100.0),
        }
    }
}

/// A kernel map and the memory the kernel accounts to it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MapMemory {
    pub map_type: u32,
    pub max_entries: u64,
    pub memlock_bytes: u64,
}

/// Memory with many open connections.
#[derive(Debug, Clone, Serialize)]
pub struct OpenMemory {
    pub pairs_asked: usize,
    pub pairs_open: usize,
    pub short_because: Option<String>,
    /// Open connections the snapshot returned (two sockets per pair, and
    /// whatever else is open on the host).
    pub snapshot_open: usize,
    pub snapshot_listening: usize,
    pub snapshot_ms: f64,
    pub convert_ms: f64,
    /// Counting the tracked-connection map's entries, as the agent's
    /// once-a-second housekeeping does.
    pub map_usage_ms: f64,
    pub conn_map_entries: usize,
    pub rss_before_open_kib: u64,
    pub rss_before_snapshot_kib: u64,
    pub rss_after_convert_kib: u64,
    /// Peak during the snapshot and conversion (the peak was reset just
    /// before).
    pub hwm_during_kib: u64,
    pub peak_hwm_reset: bool,
    /// In-memory size of one converted flow and one snapshot record
    /// (without the strings a flow's local end holds).
    pub flow_bytes: usize,
    pub event_bytes: usize,
    pub maps: Vec<MapMemory>,
    pub kernel_maps_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct CaptureReport {
    pub tcp_attach: String,
    pub rounds: usize,
    pub round_secs: f64,
    pub clients: usize,
    pub connection_rate: Rounds,
    pub connections_failed: u64,
    /// Connections completed in the on rounds.
    pub connections_on: u64,
    pub drain: DrainStats,
    /// The same rounds with the ring buffer drained every `batch_every_ms`
    /// instead of on every wakeup (the same off rounds as the baseline).
    pub connection_rate_batched: Rounds,
    pub drain_batched: DrainStats,
    pub batch_every_ms: f64,
    pub cpu_batched: Cpu,
    /// The drain thread at about 10,000 records/s (5,000 connections/s).
    pub cpu_paced: Cpu,
    pub paced_records_per_sec: f64,
    pub cpu_paced_batched: Cpu,
    pub paced_batched_records_per_sec: f64,
    pub bulk_mb_per_sec: Rounds,
    /// The programs' time in the kernel in one extra on round of each kind.
    pub kernel_connection: Option<KernelRound>,
    pub kernel_bulk: Option<KernelRound>,
    pub cpu: Cpu,
    pub memory: OpenMemory,
    pub visibility: visible::Visibility,
    pub target_share: f64,
    pub target_visible_p99_ms: f64,
}

fn load() -> Result<Capture> {
    // As the agent loads it: TCP and UDP, production sizes.
    Capture::load(&CaptureOptions::default()).context("loading the capture programs")
}

fn cgroup_root() -> Result<PathBuf> {
    hallmark_bpf::cgroup2_mount().context("no cgroup2 hierarchy is mounted")
}

pub async fn run(args: &CaptureArgs) -> Result<CaptureReport> {
    let a = args.effective()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("capture loads eBPF programs: run hallmark-bench capture as root");
    }
    hallmark_bpf::probe().context("this kernel or process cannot run the capture programs")?;
    let root = cgroup_root()?;
    let tcp_attach = load()?.tcp_attach().as_str().to_string();
    let round = Duration::from_secs_f64(a.round_secs);

    // The steps up to the server's start block this thread, which is fine:
    // nothing else runs on the runtime until then.
    // First, while the heap is fresh: memory freed by the later steps
    // would hide the growth.
    eprintln!("capture: {} open connection pairs", a.open_pairs);
    let memory = open_memory(a.open_pairs, &root)?;

    eprintln!(
        "capture: connection rate, {} rounds of {:.1} s each off/on, {} clients",
        a.rounds, a.round_secs, a.clients
    );
    let acceptors = loops::Acceptors::start(LISTENERS)?;
    let (mut off, mut on, mut batched, mut failed) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut drained = DrainStats::default();
    let mut connections_on = 0u64;
    let mut drained_batched = DrainStats::default();
    for _ in 0..a.rounds {
        let c = loops::connection_round(&acceptors.addrs, a.clients, round);
        failed += c.failed;
        off.push(crate::stats::rate(c.completed as usize, c.elapsed));
        let d = Drain::start(load()?, root.clone())?;
        let c = loops::connection_round(&acceptors.addrs, a.clients, round);
        let s = d.stop()?;
        failed += c.failed;
        connections_on += c.completed;
        on.push(crate::stats::rate(c.completed as usize, c.elapsed));
        add(&mut drained, &s);
        let d = Drain::start_with(load()?, root.clone(), Wake::Every(BATCH_EVERY))?;
        let c = loops::connection_round(&acceptors.addrs, a.clients, round);
        add(&mut drained_batched, &d.stop()?);
        failed += c.failed;
        batched.push(crate::stats::rate(c.completed as usize, c.elapsed));
    }
    // The agent's CPU at the stated flow rate, measured there: each
    // connection is two records (both sockets are this host's).
    let paced = |wake| -> Result<(Cpu, f64)> {
        let d = Drain::start_with(load()?, root.clone(), wake)?;
        let c = loops::paced_round(&acceptors.addrs, FLOWS_PER_SEC / 2.0, round);
        let s = d.stop()?;
        let rate = crate::stats::rate(s.records as usize, c.elapsed);
        Ok((Cpu::of(s.records, s.cpu_seconds), rate))
    };
    let (cpu_paced, paced_rate) = paced(Wake::Ready)?;
    let (cpu_paced_batched, paced_batched_rate) = paced(Wake::Every(BATCH_EVERY))?;
    let kernel_connection = kernel_round(&root, || {
        let c = loops::connection_round(&acceptors.addrs, a.clients, round);
        Ok((c.completed, c.elapsed))
    })?;
    drop(acceptors);
    let connection_rate_batched = Rounds::new(off.clone(), batched);
    let connection_rate = Rounds::new(off, on);
    let cpu = Cpu::of(drained.records, drained.cpu_seconds);
    let cpu_batched = Cpu::of(drained_batched.records, drained_batched.cpu_seconds);

    eprintln!("capture: bulk throughput, {} rounds each off/on", a.rounds);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        let (bytes, t) = loops::bulk_round(round)?;
        off.push(bytes as f64 / 1e6 / t.as_secs_f64());
        let d = Drain::start(load()?, root.clone())?;
        let r = loops::bulk_round(round);
        d.stop()?;
        let (bytes, t) = r?;
        on.push(bytes as f64 / 1e6 / t.as_secs_f64());
    }
    let kernel_bulk = kernel_round(&root, || {
        let (bytes, t) = loops::bulk_round(round)?;
        Ok((bytes, t))
    })?;
    let bulk_mb_per_sec = Rounds::new(off, on);

    eprintln!(
        "capture: close -> ListFlows, {} connections, one every {} ms",
        a.connections, a.pace_ms
    );
    let visibility = visible::run(a.connections, Duration::from_millis(a.pace_ms)).await?;

    Ok(CaptureReport {
        tcp_attach,
        rounds: a.rounds,
        round_secs: a.round_secs,
        clients: a.clients,
        connection_rate,
        connections_failed: failed,
        connections_on,
        drain: drained,
        connection_rate_batched,
        drain_batched: drained_batched,
        batch_every_ms: BATCH_EVERY.as_secs_f64() * 1000.0,
        cpu_batched,
        cpu_paced,
        paced_records_per_sec: paced_rate,
        cpu_paced_batched,
        paced_batched_records_per_sec: paced_batched_rate,
        kernel_connection,
        kernel_bulk,
        bulk_mb_per_sec,
        cpu,
        memory,
        visibility,
        target_share: TARGET_SHARE,
        target_visible_p99_ms: TARGET_VISIBLE_P99_MS,
    })
}

/// One on round with the kernel's run-time statistics on: the capture
/// programs' runs and their time in the kernel.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KernelRound {
    pub runs: u64,
    pub seconds: f64,
    /// Connections completed, or bytes moved.
    pub units: u64,
    pub elapsed_seconds: f64,
    /// (program, runs, seconds) of each program that ran.
    pub programs: Vec<(String, u64, f64)>,
}

impl KernelRound {
    /// In-kernel microseconds per unit.
    pub fn us_per_unit(&self) -> Option<f64> {
        (self.units > 0).then(|| self.seconds * 1e6 / self.units as f64)
    }

    /// In-kernel time as a share of the round.
    pub fn share_of_time(&self) -> Option<f64> {
        ratio(self.seconds, self.elapsed_seconds)
    }
}

/// Runs `work` with capture on and the kernel's run-time statistics
/// enabled. They cost two clock reads per program run, so the timed
/// rounds run without them. `None` when the kernel refuses them.
fn kernel_round(
    root: &std::path::Path,
    work: impl FnOnce() -> Result<(u64, Duration)>,
) -> Result<Option<KernelRound>> {
    // Counted while this fd is open.
    let stats = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("capture: kernel run-time statistics unavailable: {e}");
            return Ok(None);
        }
    };
    let d = Drain::start(load()?, root.to_path_buf())?;
    let r = work();
    let s = d.stop()?;
    drop(stats);
    let (units, elapsed) = r?;
    Ok(Some(KernelRound {
        runs: s.kernel_runs,
        seconds: s.kernel_seconds,
        units,
        elapsed_seconds: elapsed.as_secs_f64(),
        programs: s.kernel_programs,
    }))
}

fn add(total: &mut DrainStats, s: &DrainStats) {
    total.records += s.records;
    total.flows += s.flows;
    total.sink_full += s.sink_full;
    total.invalid += s.invalid;
    total.unknown_cgroup += s.unknown_cgroup;
    total.cpu_seconds += s.cpu_seconds;
    total.cpu_user_seconds += s.cpu_user_seconds;
    total.cpu_system_seconds += s.cpu_system_seconds;
    total.ringbuf_full += s.ringbuf_full;
    total.conn_map_full += s.conn_map_full;
    total.kernel_runs += s.kernel_runs;
    total.kernel_seconds += s.kernel_seconds;
}

/// The hidden `capture-hold` command: holds loopback connection pairs for
/// the memory figure, in a process of its own.
#[derive(Args, Debug, Clone)]
pub struct HoldArgs {
    #[arg(long)]
    pub pairs: usize,
}

pub fn hold(args: &HoldArgs) -> Result<()> {
    loops::hold(args.pairs)
}

/// Pairs one holder process opens: two fds each, under its open-file
/// limit (which `main` lifts to the hard limit) with room to spare.
fn pairs_per_holder() -> Result<usize> {
    use nix::sys::resource::{getrlimit, Resource};
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    let per = usize::try_from(soft.saturating_sub(256) / 2).unwrap_or(0);
    if per == 0 {
        bail!("RLIMIT_NOFILE {soft}: too low to hold connections open");
    }
    Ok(per)
}

fn open_memory(pairs: usize, root: &std::path::Path) -> Result<OpenMemory> {
    let mut capture = load()?;
    // Only this capture's maps are open now: the map fds of this process.
    let maps = bpf_maps()?;
    let kernel_maps_bytes = maps.iter().map(|m| m.memlock_bytes).sum();
    let me = std::process::id();
    let rss_before_open = Memory::of_pid(me)?;
    // Held by child processes: one process may not hold 100,000 fds here.
    let holders = loops::spawn_holders(pairs, pairs_per_holder()?)?;
    let rss_before_snapshot = Memory::of_pid(me)?;
    // Resets VmHWM to the current RSS, so the peak below is this step's.
    let peak_hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();

    let mut resolver = CgroupResolver::new(root.to_path_buf(), &["/".to_string()]);
    let clock = Clock::now();
    let t = Instant::now();
    let snap = capture
        .snapshot()
        .context("taking a snapshot of open connections")?;
    let snapshot_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let mut flows = Vec::with_capacity(snap.open.len());
    for ev in &snap.open {
        let tag = resolver.tag(ev.cgroup_id, &NoContainers);
        flows.push(convert::tcp_flow(ev, tag.as_ref(), "bench", &clock));
    }
    let convert_ms = t.elapsed().as_secs_f64() * 1000.0;
    let after = Memory::of_pid(me)?;
    let t = Instant::now();
    let usage = capture.map_usage();
    let map_usage_ms = t.elapsed().as_secs_f64() * 1000.0;
    let result = OpenMemory {
        pairs_asked: pairs,
        pairs_open: holders.open,
        short_because: holders.short_because.clone(),
        snapshot_open: snap.open.len(),
        snapshot_listening: snap.listening.len(),
        snapshot_ms,
        convert_ms,
        map_usage_ms,
        conn_map_entries: usage.conn,
        rss_before_open_kib: rss_before_open.vm_rss_kib,
        rss_before_snapshot_kib: rss_before_snapshot.vm_rss_kib,
        rss_after_convert_kib: after.vm_rss_kib,
        hwm_during_kib: after.vm_hwm_kib,
        peak_hwm_reset,
        flow_bytes: std::mem::size_of::<hallmark_flows::Flow>(),
        event_bytes: std::mem::size_of::<hallmark_bpf::TcpEvent>(),
        maps,
        kernel_maps_bytes,
    };
    drop(flows);
    drop(snap);
    // Detached before the connections close: their close events are not
    // what is measured here.
    drop(capture);
    drop(holders);
    Ok(result)
}

/// The BPF maps this process holds, from `/proc/self/fdinfo`.
fn bpf_maps() -> Result<Vec<MapMemory>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").context("reading /proc/self/fdinfo")? {
        let Ok(entry) = entry else { continue };
        // An fd closed meanwhile (the read_dir's own) is skipped.
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(m) = parse_map_fdinfo(&text) {
            out.push(m);
        }
    }
    Ok(out)
}

/// A BPF map's fdinfo: `map_type`, `max_entries`, `memlock` lines; `None`
/// for any other kind of fd.
pub fn parse_map_fdinfo(text: &str) -> Option<MapMemory> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    Some(MapMemory {
        map_type: u32::try_from(field("map_type")?).ok()?,
        max_entries: field("max_entries")?,
        memlock_bytes: field("memlock")?,
    })
}

pub fn print(r: &CaptureReport) {
    println!(
        "eBPF flow capture (TCP via {}, UDP cgroup_skb attached): {} rounds each off/on, interleaved, {:.1} s per round",
        r.tcp_attach, r.rounds, r.round_secs
    );
    let mut t = Table::new(&[
        "measure",
        "off (median)",
        "off rounds",
        "on (median)",
        "on rounds",
        "on/off",
        "target",
        "verdict",
    ]);
    for (name, x) in [
        (
            format!("connections/s, {} clients", r.clients),
            &r.connection_rate,
        ),
        (
            format!(
                "  same, drained every {:.0} ms (not the agent's way)",
                r.batch_every_ms
            ),
            &r.connection_rate_batched,
        ),
        ("bulk MB/s, 1 stream".to_string(), &r.bulk_mb_per_sec),
    ] {
        t.row(vec![
            name,
            x.off_median.map_or("-".into(), num),
            Rounds::spread(&x.off),
            x.on_median.map_or("-".into(), num),
            Rounds::spread(&x.on),
            x.ratio.map_or("-".into(), |v| format!("{:.1}%", v * 100.0)),
            format!(">= {:.0}%", r.target_share * 100.0),
            x.ratio.map_or("-".into(), |v| verdict(v >= r.target_share)),
        ]);
    }
    print!("{}", t.render());
    let d = &r.drain;
    println!(
        "connection loop: {} failed connects; drain thread: {} records, {} flows, sink full {}, invalid {}, unknown cgroup {}; kernel drops: ring buffer full {}, connection map full {}",
        r.connections_failed, d.records, d.flows, d.sink_full, d.invalid, d.unknown_cgroup, d.ringbuf_full, d.conn_map_full
    );
    match (&r.kernel_connection, &r.kernel_bulk) {
        (Some(c), Some(b)) => {
            println!(
                "in-kernel (one more on round each, statistics on): connection loop {} runs for {} connections = {:.1} runs, {:.2} µs per connection ({:.1}% of one core); bulk {} runs, {:.2}% of one core",
                c.runs,
                c.units,
                c.runs as f64 / c.units.max(1) as f64,
                c.us_per_unit().unwrap_or(0.0),
                c.share_of_time().unwrap_or(0.0) * 100.0,
                b.runs,
                b.share_of_time().unwrap_or(0.0) * 100.0
            );
            for (name, runs, secs) in &c.programs {
                println!(
                    "  {name}: {runs} runs, {:.0} ns per run, {:.2} µs per connection",
                    secs * 1e9 / (*runs).max(1) as f64,
                    secs * 1e6 / c.units.max(1) as f64
                );
            }
        }
        _ => println!("in-kernel: no run-time statistics"),
    }
    let cpu_line = |what: &str, c: &Cpu, rate: Option<f64>| {
        match (
        c.us_per_record,
        c.percent_core_at_10k,
    ) {
        (Some(us), Some(pct)) => println!(
            "agent CPU, {what}: {:.3} s for {} records{} = {us:.2} µs per record = {pct:.1}% of one core at 10,000 flows/s",
            c.cpu_seconds,
            c.records,
            rate.map(|r| format!(" ({} records/s)", num(r)))
                .unwrap_or_default()
        ),
        _ => println!("agent CPU, {what}: no records were drained"),
    }
    };
    cpu_line("connection loop, on wakeup (the agent)", &r.cpu, None);
    println!(
        "  user {:.3} s, system {:.3} s",
        d.cpu_user_seconds, d.cpu_system_seconds
    );
    cpu_line(
        &format!("connection loop, every {:.0} ms", r.batch_every_ms),
        &r.cpu_batched,
        None,
    );
    cpu_line(
        "paced, on wakeup (the agent)",
        &r.cpu_paced,
        Some(r.paced_records_per_sec),
    );
    cpu_line(
        &format!("paced, every {:.0} ms", r.batch_every_ms),
        &r.cpu_paced_batched,
        Some(r.paced_batched_records_per_sec),
    );
    let m = &r.memory;
    let kib = |v: u64| format!("{:.1} MB", v as f64 / 1024.0);
    let growth = m
        .rss_after_convert_kib
        .saturating_sub(m.rss_before_snapshot_kib);
    println!(
        "open connections: {} pairs of {} asked{}; snapshot {} open, {} listening in {:.0} ms, converted in {:.0} ms; map usage count {} entries in {:.0} ms",
        m.pairs_open,
        m.pairs_asked,
        m.short_because
            .as_deref()
            .map(|w| format!(" (short: {w})"))
            .unwrap_or_default(),
        m.snapshot_open,
        m.snapshot_listening,
        m.snapshot_ms,
        m.convert_ms,
        m.conn_map_entries,
        m.map_usage_ms
    );
    let per = (m.snapshot_open > 0).then(|| growth as f64 * 1024.0 / m.snapshot_open as f64);
    println!(
        "  VmRSS before opening {}, before the snapshot {}, after converting {} (+{}, {} bytes per open connection; a flow is {} bytes, a snapshot record {}, before strings); VmHWM during {}{}",
        kib(m.rss_before_open_kib),
        kib(m.rss_before_snapshot_kib),
        kib(m.rss_after_convert_kib),
        kib(growth),
        per.map_or("-".into(), |b| format!("{b:.0}")),
        m.flow_bytes,
        m.event_bytes,
        kib(m.hwm_during_kib),
        if m.peak_hwm_reset { "" } else { " (peak not reset: process peak)" }
    );
    println!(
        "  kernel maps: {} (memlock of {} maps: {})",
        kib(m.kernel_maps_bytes / 1024),
        m.maps.len(),
        m.maps
            .iter()
            .map(|x| format!(
                "type {} x{} {}",
                x.map_type,
                x.max_entries,
                kib(x.memlock_bytes / 1024)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let v = &r.visibility;
    let ms = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0} ms"));
    println!(
        "close -> listed by ListFlows ({} connections, {} listed, {} missing; polled every {:.0} ms; agent batches every {:.0} ms): p50 {}, p99 {}, max {} (target p99 < {:.0} ms: {})",
        v.connections,
        v.listed,
        v.missing,
        v.poll_ms,
        v.agent_batch_ms,
        ms(v.p50_ms),
        ms(v.p99_ms),
        ms(v.max_ms),
        r.target_visible_p99_ms,
        verdict(v.missing == 0 && v.p99_ms.is_some_and(|p| p < r.target_visible_p99_ms))
    );
}
