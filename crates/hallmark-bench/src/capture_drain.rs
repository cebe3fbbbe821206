//! The agent's user-space side of capture, run on a thread of its own as
//! the agent runs it: wait for the ring buffer to be readable, drain it,
//! resolve each socket's cgroup to the local end, convert the record to a
//! flow, validate it and offer it to a bounded channel whose consumer
//! discards it (where the agent's reporter would batch it to the server).
//! Once a second it reads the drop counters and the map usage, as the
//! agent's housekeeping does. [`Wake::Every`] drains on a fixed period
//! instead, to measure that alternative beside the agent's way.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hallmark_agent::capture::cgroups::{CgroupResolver, ContainerLookup, Resolved};
use hallmark_agent::capture::convert::{self, Clock};
use hallmark_bpf::{Capture, Drops, TcpEvent};
use hallmark_core::Workload;
use hallmark_flows::Flow;
use serde::Serialize;

/// The agent's default sink capacity (`FlowConfig::sink_capacity`).
pub const SINK_CAPACITY: usize = 10_000;
/// The agent's poll timeout on the ring buffer, in milliseconds.
const POLL_TIMEOUT_MS: u16 = 200;
/// The agent's housekeeping period (drop counters, map usage).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// A host with no containers: every socket is a host process's, which is
/// what the resolver makes of every cgroup here, as it would with the
/// agent's (empty) inventory.
pub struct NoContainers;

impl ContainerLookup for NoContainers {
    fn workload(&self, _container_id: &str) -> Option<Workload> {
        None
    }

    fn pod_workloads(&self, _pod_uid: &str) -> Vec<Workload> {
        Vec::new()
    }
}

/// What the drain thread did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainStats {
    /// Records taken from the ring buffer.
    pub records: u64,
    /// Flows the channel took.
    pub flows: u64,
    /// Flows refused by the full channel (the agent's `sink-full`).
    pub sink_full: u64,
    /// Flows that failed validation (the agent's `invalid`).
    pub invalid: u64,
    /// Records of sockets whose cgroup could not be found.
    pub unknown_cgroup: u64,
    /// CPU time of the drain thread (user + system), and its parts.
    pub cpu_seconds: f64,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    /// Events the kernel side lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Connections not tracked because the connection map was full.
    pub conn_map_full: u64,
    /// Runs of the capture's programs in the kernel, and their time, while
    /// the kernel's run-time statistics are on (zero when they are not).
    pub kernel_runs: u64,
    pub kernel_seconds: f64,
    /// The same per program: (name, runs, seconds).
    pub kernel_programs: Vec<(String, u64, f64)>,
}

/// A running drain thread; [`Drain::stop`] joins it and drops the
/// capture, detaching the programs.
pub struct Drain {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<DrainStats>>,
    consumer: JoinHandle<()>,
}

impl Drain {
    /// Starts draining `capture`, resolving cgroups under `cgroup_root`,
    /// woken by the ring buffer as the agent is.
    pub fn start(capture: Capture, cgroup_root: PathBuf) -> Result<Drain> {
        Drain::start_with(capture, cgroup_root, Wake::Ready)
    }

    /// As [`Drain::start`], woken as `wake` says.
    pub fn start_with(capture: Capture, cgroup_root: PathBuf, wake: Wake) -> Result<Drain> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<Flow>(SINK_CAPACITY);
        let consumer = std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || discard(rx))
            .context("starting the sink consumer thread")?;
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-capture".into())
            .spawn(move || run(capture, cgroup_root, tx, &flag, wake))
            .context("starting the drain thread")?;
        Ok(Drain {
            stop,
            thread,
            consumer,
        })
    }

    /// Stops the thread (within one poll timeout) and returns its figures.
    pub fn stop(self) -> Result<DrainStats> {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self
            .thread
            .join()
            .map_err(|_| anyhow!("the drain thread panicked"))??;
        self.consumer
            .join()
            .map_err(|_| anyhow!("the sink consumer thread panicked"))?;
        Ok(stats)
    }
}

fn discard(rx: Receiver<Flow>) {
    while let Ok(flow) = rx.recv() {
        drop(flow);
    }
}

/// User and system CPU time this thread has used.
fn thread_rusage() -> Result<(Duration, Duration)> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_THREAD).context("getrusage(RUSAGE_THREAD)")?;
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Ok((d(u.user_time()), d(u.system_time())))
}

/// CPU time this thread has used.
pub fn thread_cpu() -> Result<Duration> {
    use nix::time::{clock_gettime, ClockId};
    let ts = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .context("clock_gettime(CLOCK_THREAD_CPUTIME_ID)")?;
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec()).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// Waits until the ring buffer has records or the poll times out, as the
/// agent's capture thread does.
fn wait_for_events(capture: &Capture) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(capture.ring(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(POLL_TIMEOUT_MS));
}

/// When the drain thread looks at the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The agent's way: when it is readable, then again after
    /// `BATCH_WAIT` to take what gathered meanwhile.
    Ready,
    /// Every this long, whatever it holds: records wait up to that long,
    /// and each wakeup takes many of them.
    Every(Duration),
}

fn run(
    mut capture: Capture,
    cgroup_root: PathBuf,
    tx: SyncSender<Flow>,
    stop: &AtomicBool,
    wake: Wake,
) -> Result<DrainStats> {
    let cpu_start = thread_cpu()?;
    let (user_start, system_start) = thread_rusage()?;
    let mut stats = DrainStats::default();
    let mut resolver = CgroupResolver::new(cgroup_root, &["/".to_string()]);
    // As the agent's status: a mutex-guarded record count.
    let status = Mutex::new(0u64);
    let clock = Clock::now();
    let mut events: Vec<TcpEvent> = Vec::new();
    let mut last_housekeeping = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        events.clear();
        match wake {
            Wake::Ready => {
                wait_for_events(&capture);
                if capture.drain_tcp(&mut events) > 0 {
                    std::thread::sleep(hallmark_agent::capture::BATCH_WAIT);
                    capture.drain_tcp(&mut events);
                }
            }
            Wake::Every(d) => {
                std::thread::sleep(d);
                capture.drain_tcp(&mut events);
            }
        }
        for ev in &events {
            stats.records += 1;
            let tag = match resolver.resolve(ev.cgroup_id, &NoContainers) {
                Resolved::Tag(t) => Some(t),
                Resolved::Unknown => {
                    stats.unknown_cgroup += 1;
                    None
                }
                Resolved::Outside => continue,
            };
            let flow = convert::tcp_flow(ev, tag.as_ref(), "bench", &clock);
            *status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
            if flow.validate().is_err() {
                stats.invalid += 1;
                continue;
            }
            match tx.try_send(flow) {
                Ok(()) => stats.flows += 1,
                Err(TrySendError::Full(_)) => stats.sink_full += 1,
                Err(TrySendError::Disconnected(_)) => {
                    return Err(anyhow!("the sink consumer stopped"))
                }
            }
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
            last_housekeeping = Instant::now();
            let _ = capture.drops();
            let _ = capture.map_usage();
        }
    }
    let Drops {
        ringbuf_full,
        conn_map_full,
        ..
    } = capture.drops();
    stats.ringbuf_full = ringbuf_full;
    stats.conn_map_full = conn_map_full;
    let ids = capture.program_ids();
    for p in aya::programs::loaded_programs().filter_map(Result::ok) {
        if ids.contains(&p.id()) {
            stats.kernel_runs += p.run_count();
            stats.kernel_seconds += p.run_time().as_secs_f64();
            if p.run_count() > 0 {
                stats.kernel_programs.push((
                    p.name_as_str().unwrap_or("?").to_string(),
                    p.run_count(),
                    p.run_time().as_secs_f64(),
                ));
            }
        }
    }
    stats.cpu_seconds = thread_cpu()?.saturating_sub(cpu_start).as_secs_f64();
    let (user, system) = thread_rusage()?;
    stats.cpu_user_seconds = user.saturating_sub(user_start).as_secs_f64();
    stats.cpu_system_seconds = system.saturating_sub(system_start).as_secs_f64();
    // Detaches the programs before the thread reports back.
    drop(capture);
    Ok(stats)
}
