//! The process's own cgroup for the `enforce` benchmark, and the timed
//! loopback connect loop.

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use crate::capture::loops::Acceptors;
use crate::stats::Samples;

/// A fresh cgroup2 child this process moves into, so that its sockets are
/// one local workload the enforcement programs decide for. Dropping it
/// moves the process back where it was and removes the directory.
pub struct BenchCgroup {
    pub dir: PathBuf,
    /// The cgroup id BPF sees: the directory's inode.
    pub id: u64,
    /// Where the process was, absolute.
    original: PathBuf,
    inside: bool,
}

impl BenchCgroup {
    /// Creates `<root>/hm-bench-enforce-<pid>` (root: the cgroup2 mount).
    pub fn create(root: &Path) -> Result<BenchCgroup> {
        let text =
            std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let Some(rel) = own_cgroup2(&text) else {
            bail!("/proc/self/cgroup has no cgroup2 line (`0::/path`): this process is not in a cgroup2 hierarchy");
        };
        let original = root.join(rel.trim_start_matches('/'));
        let dir = root.join(format!("hm-bench-enforce-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .with_context(|| format!("creating the benchmark's cgroup {}", dir.display()))?;
        let id = match std::fs::metadata(&dir) {
            Ok(m) => m.ino(),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e).with_context(|| format!("reading {}", dir.display()));
            }
        };
        Ok(BenchCgroup {
            dir,
            id,
            original,
            inside: false,
        })
    }

    /// Moves the whole process (every thread) into the cgroup. Sockets
    /// created from now on belong to it.
    pub fn enter(&mut self) -> Result<()> {
        move_to(&self.dir)?;
        self.inside = true;
        Ok(())
    }

    /// Moves the process back to its original cgroup.
    pub fn leave(&mut self) -> Result<()> {
        if self.inside {
            move_to(&self.original)?;
            self.inside = false;
        }
        Ok(())
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.leave() {
            eprintln!("enforce: moving back to the original cgroup: {e:#}");
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!(
                "enforce: removing {}: {e} (remove it with rmdir once it is empty)",
                self.dir.display()
            );
        }
    }
}

fn move_to(dir: &Path) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .with_context(|| format!("moving this process into {}", procs.display()))
}

/// The cgroup2 path of `/proc/self/cgroup` text: the `0::/path` line.
pub fn own_cgroup2(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .filter(|p| p.starts_with('/'))
}

/// Listeners on 127.0.0.1 for up to `want` of `ports` (the first that are
/// free), accepting and closing until dropped; fails when none is free.
pub fn acceptors_on(ports: &[u16], want: usize) -> Result<Acceptors> {
    let mut listeners = Vec::new();
    let mut busy = Vec::new();
    for &port in ports {
        if listeners.len() >= want {
            break;
        }
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(l) => listeners.push(l),
            Err(e) => busy.push(format!("{port}: {e}")),
        }
    }
    if listeners.is_empty() {
        bail!(
            "none of the ports the policy allows could be bound on 127.0.0.1 ({}): free one of them or pick another --seed",
            busy.join("; ")
        );
    }
    Acceptors::serve(listeners)
}

/// One round of the connect loop.
#[derive(Debug, Default)]
pub struct Round {
    pub completed: u64,
    /// Connects refused with EPERM: a deny by the enforcement programs.
    pub denied: u64,
    /// Any other failure.
    pub failed: u64,
    pub elapsed: Duration,
    /// CPU time of this whole process (user and system, every thread)
    /// during the round: what the connections cost, whatever else the
    /// machine runs.
    pub cpu: Duration,
    /// The `connect()` call alone, client side, of each completed connection.
    pub connect: Samples,
}

/// `clients` threads connect to the listeners in turn for `duration`; each
/// connection is complete when the client has read the server's close.
/// Only the `connect()` call is timed.
pub fn connect_round(addrs: &[SocketAddr], clients: usize, duration: Duration) -> Round {
    let cpu_start = process_cpu();
    let start = Instant::now();
    let deadline = start + duration;
    let per_thread: Vec<Round> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let mut r = Round {
                        connect: Samples::with_capacity(64 * 1024),
                        ..Round::default()
                    };
                    let mut byte = [0u8; 1];
                    let mut i = c;
                    while Instant::now() < deadline {
                        let addr = addrs[i % addrs.len()];
                        i += 1;
                        let t = Instant::now();
                        let conn = TcpStream::connect(addr);
                        let took = t.elapsed();
                        match conn {
                            Ok(mut stream) => match stream.read(&mut byte) {
                                Ok(0) => {
                                    r.completed += 1;
                                    r.connect.push(took);
                                }
                                // A reset is still a closed connection.
                                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                                    r.completed += 1;
                                    r.connect.push(took);
                                }
                                Ok(_) | Err(_) => r.failed += 1,
                            },
                            Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => r.denied += 1,
                            Err(_) => r.failed += 1,
                        }
                    }
                    r
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut total = Round {
        elapsed: start.elapsed(),
        cpu: process_cpu().saturating_sub(cpu_start),
        ..Round::default()
    };
    for r in per_thread {
        total.completed += r.completed;
        total.denied += r.denied;
        total.failed += r.failed;
        total.connect.extend(r.connect);
    }
    total
}

/// User and system CPU time of this process so far (zero if unreadable).
fn process_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::new(
                u64::try_from(t.tv_sec()).unwrap_or(0),
                u32::try_from(t.tv_usec()).unwrap_or(0) * 1_000,
            )
        };
        tv(u.user_time()) + tv(u.system_time())
    })
}
