//! `agent-memory`: the agent's resident memory holding N SVIDs, against
//! the same agent process holding none, measured first in the same run.
//!
//! Server and agent are the real `hallmark` binary run as child processes,
//! so the agent's memory is its own. Entries use distinct `unix:uid`
//! selectors; the last one is this process's uid, so this process can see
//! when the agent serves it. The agent mints every due entry in one batch
//! per update, so the last entry being served means all were minted; as
//! root, `hallmark svid fetch` run as the uids of other entries checks it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_client::AdminClient;
use hallmark_proto::workload::X509svidRequest;
use serde::Serialize;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::cluster::{
    admin_client, create_entry, generate_token, workload_client, workload_request, TRUST_DOMAIN,
};
use crate::procfs::Memory;
use crate::report::{num, Table};

/// How often memory is sampled while waiting for it to settle.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Memory counts as settled when it moved less than this share...
const SETTLED_SHARE: f64 = 0.01;
/// ...or less than this many KiB, over the settle window.
const SETTLED_KIB: u64 = 256;
/// Give up waiting for memory to settle after this long and report the
/// last reading, marked as unsettled.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How long the children may take to start, sync and mint.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The first `unix:uid` of the entries: far from real users.
const FIRST_FAKE_UID: u32 = 200_000;

#[derive(Args, Debug, Clone)]
pub struct AgentMemoryArgs {
    /// Entries (so SVIDs) the agent holds in the loaded measurement.
    #[arg(long, default_value_t = 1_000)]
    pub svids: usize,
    /// The hallmark binary [default: `hallmark` next to this executable].
    #[arg(long)]
    pub hallmark: Option<PathBuf>,
    /// Memory is read once it stayed within 1% (or 256 KiB) for this many seconds.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct Reading {
    pub memory: Memory,
    /// False when memory was still moving at the settle limit.
    pub settled: bool,
}

#[derive(Debug, Serialize)]
pub struct AgentMemoryReport {
    pub svids: usize,
    /// The agent holding no SVID: the baseline.
    pub baseline: Reading,
    /// After the entries were created one by one while the agent ran.
    pub loaded: Reading,
    /// A new agent process on the same state, holding the same SVIDs
    /// obtained in its first sync.
    pub restarted: Reading,
    pub rss_delta_kib: i64,
    pub rss_anon_delta_kib: i64,
    pub rss_anon_bytes_per_svid: f64,
    /// The same for the restarted agent: state without the history of
    /// N incremental updates.
    pub restarted_rss_anon_bytes_per_svid: f64,
    /// The server, for scale, after the entries were created.
    pub server: Memory,
    pub create_entries_ms: f64,
    /// From the last entry created until this process was served its SVID.
    pub last_create_to_served_ms: f64,
    /// Uids other than this process's whose SVIDs were fetched with
    /// `hallmark svid fetch` (only possible as root).
    pub probed_uids: Vec<u32>,
}

pub async fn run(args: &AgentMemoryArgs) -> Result<AgentMemoryReport> {
    if args.svids == 0 {
        bail!("--svids must be at least 1");
    }
    let bin = match &args.hallmark {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("hallmark"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p hallmark` or pass --hallmark",
            bin.display()
        );
    }
    let settle = Duration::from_secs(args.settle_secs);
    let dir = tempfile::Builder::new()
        .prefix("hallmark-bench-mem-")
        .tempdir()
        .context("creating the state directory")?;
    // Other uids must reach the Workload API socket for the probes.
    let sock_dir = dir.path().join("sock");
    std::fs::create_dir(&sock_dir).context("creating the socket directory")?;
    for d in [dir.path(), sock_dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("opening {} to other users", d.display()))?;
    }
    let admin_socket = dir.path().join("server").join("admin.sock");
    let workload_socket = sock_dir.join("workload.sock");

    let mut server = Process::spawn(
        &bin,
        "server",
        dir.path(),
        &[
            "server",
            "run",
            "--trust-domain",
            TRUST_DOMAIN,
            "--data-dir",
            &path_arg(&dir.path().join("server"))?,
            "--listen",
            "127.0.0.1:0",
            "--admin-socket",
            &path_arg(&admin_socket)?,
        ],
        &[],
    )?;
    let mut admin = wait_for_admin(&mut server, &admin_socket).await?;
    let listen = std::fs::read_to_string(dir.path().join("server").join("listen.addr"))
        .context("reading the server's listen address")?;
    let token = generate_token(&mut admin, "bench-mem").await?;

    let agent_cmd = AgentCommand {
        bin: &bin,
        dir: dir.path(),
        server: listen.trim(),
        socket: &workload_socket,
        ca_fingerprint: &token.ca_fingerprint,
    };
    let mut agent = agent_cmd.spawn("agent", Some(&token.token))?;
    wait_for_sync(&mut agent, &workload_socket).await?;
    let agent_pid = agent.pid()?;
    eprintln!("  agent synced with no entries; waiting for its memory to settle");
    let baseline = settled_memory(agent_pid, settle).await?;

    let own_uid = nix::unistd::getuid().as_raw();
    let mut uids: Vec<u32> = (FIRST_FAKE_UID..)
        .filter(|u| *u != own_uid)
        .take(args.svids - 1)
        .collect();
    uids.push(own_uid);
    let t = Instant::now();
    let mut last_id = String::new();
    for (i, uid) in uids.iter().enumerate() {
        last_id = format!("spiffe://{TRUST_DOMAIN}/bench/memory/{i}");
        create_entry(
            &mut admin,
            &token.agent_spiffe_id,
            &last_id,
            &[format!("unix:uid:{uid}")],
        )
        .await?;
    }
    let created = t.elapsed();
    eprintln!(
        "  {} entries created in {} ms; waiting until the agent serves them",
        uids.len(),
        num(created.as_secs_f64() * 1e3)
    );
    let served = wait_until_served(&mut agent, &workload_socket, &last_id).await?;
    let probed_uids = probe_other_uids(&bin, &workload_socket, &uids, own_uid).await?;
    let loaded = settled_memory(agent_pid, settle).await?;
    let server_memory = Memory::of_pid(server.pid()?)?;

    // The same state reached in one sync: a restarted agent keeps only its
    // own SVID and mints every workload SVID again in one batch.
    agent.stop().await;
    let mut agent = agent_cmd.spawn("agent-restarted", None)?;
    wait_until_served(&mut agent, &workload_socket, &last_id).await?;
    let restarted = settled_memory(agent.pid()?, settle).await?;

    agent.stop().await;
    server.stop().await;

    let kib = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let anon_delta = kib(loaded.memory.rss_anon_kib) - kib(baseline.memory.rss_anon_kib);
    Ok(AgentMemoryReport {
        svids: args.svids,
        rss_delta_kib: kib(loaded.memory.vm_rss_kib) - kib(baseline.memory.vm_rss_kib),
        rss_anon_delta_kib: anon_delta,
        rss_anon_bytes_per_svid: anon_delta as f64 * 1024.0 / args.svids as f64,
        restarted_rss_anon_bytes_per_svid: (kib(restarted.memory.rss_anon_kib)
            - kib(baseline.memory.rss_anon_kib)) as f64
            * 1024.0
            / args.svids as f64,
        baseline,
        loaded,
        restarted,
        server: server_memory,
        create_entries_ms: created.as_secs_f64() * 1e3,
        last_create_to_served_ms: served.as_secs_f64() * 1e3,
        probed_uids,
    })
}

fn path_arg(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))
}

/// A child `hallmark` process whose output goes to `<dir>/<name>.log`.
/// Killed if dropped without [`Process::stop`] (an error path).
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(
        bin: &Path,
        name: &'static str,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("sharing the log file")?;
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env("HALLMARK_HOME", dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{} {}`", bin.display(), args.join(" ")))?;
        Ok(Process { name, child, log })
    }

    fn pid(&self) -> Result<u32> {
        self.child
            .id()
            .ok_or_else(|| anyhow!("the {} process has exited", self.name))
    }

    /// Fails, with the end of its log, if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("checking a child process")? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the {} process exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// How to start the agent child; started twice (fresh, then restarted).
struct AgentCommand<'a> {
    bin: &'a Path,
    dir: &'a Path,
    server: &'a str,
    socket: &'a Path,
    ca_fingerprint: &'a str,
}

impl AgentCommand<'_> {
    fn spawn(&self, name: &'static str, join_token: Option<&str>) -> Result<Process> {
        let data_dir = path_arg(&self.dir.join("agent"))?;
        let socket = path_arg(self.socket)?;
        let env: Vec<(&str, &str)> = join_token
            .map(|t| ("HALLMARK_JOIN_TOKEN", t))
            .into_iter()
            .collect();
        Process::spawn(
            self.bin,
            name,
            self.dir,
            &[
                "agent",
                "run",
                "--trust-domain",
                TRUST_DOMAIN,
                "--data-dir",
                &data_dir,
                "--server",
                self.server,
                "--socket",
                &socket,
                "--ca-fingerprint",
                self.ca_fingerprint,
            ],
            &env,
        )
    }
}

async fn wait_for_admin(server: &mut Process, socket: &Path) -> Result<AdminClient<Channel>> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        server.check_alive()?;
        if let Ok(mut admin) = admin_client(socket).await {
            if admin.status(pb::StatusRequest {}).await.is_ok() {
                return Ok(admin);
            }
        }
        if Instant::now() > deadline {
            bail!("the server's admin API did not answer within {STARTUP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The agent has synced once when FetchX509SVID answers PermissionDenied
/// (no identity for this caller yet) instead of Unavailable.
async fn wait_for_sync(agent: &mut Process, socket: &Path) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        agent.check_alive()?;
        if let Ok(mut client) = workload_client(socket).await {
            match client
                .fetch_x509svid(workload_request(X509svidRequest {}))
                .await
            {
                Err(s) if s.code() == tonic::Code::PermissionDenied => return Ok(()),
                Err(s) if s.code() == tonic::Code::Unavailable => {}
                Err(s) => bail!("FetchX509SVID while waiting for the agent: {s}"),
                Ok(_) => bail!("the agent already serves this process: its state is not fresh"),
            }
        }
        if Instant::now() > deadline {
            bail!("the agent did not sync with the server within {STARTUP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until this process is served `spiffe_id`; returns how long that
/// took. Connects afresh each time: a just-started agent may not listen yet.
async fn wait_until_served(
    agent: &mut Process,
    socket: &Path,
    spiffe_id: &str,
) -> Result<Duration> {
    let start = Instant::now();
    let deadline = start + STARTUP_TIMEOUT;
    let mut client = None;
    loop {
        agent.check_alive()?;
        if client.is_none() {
            client = workload_client(socket).await.ok();
        }
        if let Some(c) = client.as_mut() {
            match c.fetch_x509svid(workload_request(X509svidRequest {})).await {
                Ok(resp) => {
                    let mut stream = resp.into_inner();
                    if let Ok(Some(msg)) = stream.message().await {
                        if msg.svids.iter().any(|s| s.spiffe_id == spiffe_id) {
                            return Ok(start.elapsed());
                        }
                    }
                }
                // Not synced yet, or no identity yet: ask again.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::PermissionDenied
                    ) => {}
                Err(s) => bail!("FetchX509SVID while waiting for {spiffe_id}: {s}"),
            }
        }
        if Instant::now() > deadline {
            bail!("the agent did not serve {spiffe_id} within {STARTUP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As root, fetches the SVIDs of the first and the middle entry as their
/// uids with `hallmark svid fetch`, proving entries other than the last
/// one were minted. Without root nothing can act as another uid.
async fn probe_other_uids(bin: &Path, socket: &Path, uids: &[u32], own: u32) -> Result<Vec<u32>> {
    if own != 0 {
        return Ok(Vec::new());
    }
    let mut probed = Vec::new();
    for uid in [uids.first(), uids.get(uids.len() / 2)]
        .into_iter()
        .flatten()
        .copied()
        .filter(|u| *u != own)
    {
        if probed.contains(&uid) {
            continue;
        }
        let socket_uri = format!("unix://{}", path_arg(socket)?);
        let out = Command::new(bin)
            .args(["svid", "fetch", "--socket", socket_uri.as_str()])
            .env("HALLMARK_HOME", "/nonexistent")
            .uid(uid)
            .gid(uid)
            .output()
            .await
            .with_context(|| format!("running `hallmark svid fetch` as uid {uid}"))?;
        if !out.status.success() {
            bail!(
                "`hallmark svid fetch` as uid {uid} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        probed.push(uid);
    }
    Ok(probed)
}

/// Samples memory until it stays within [`SETTLED_SHARE`] / [`SETTLED_KIB`]
/// for `window`, or [`SETTLE_LIMIT`] passes.
async fn settled_memory(pid: u32, window: Duration) -> Result<Reading> {
    let start = Instant::now();
    let mut history: Vec<(Instant, Memory)> = Vec::new();
    loop {
        let now = Instant::now();
        let m = Memory::of_pid(pid)?;
        history.push((now, m));
        history.retain(|(t, _)| now.duration_since(*t) <= window);
        let covers_window = start.elapsed() >= window;
        if covers_window && is_settled(history.iter().map(|(_, m)| m.vm_rss_kib)) {
            return Ok(Reading {
                memory: m,
                settled: true,
            });
        }
        if start.elapsed() > SETTLE_LIMIT {
            return Ok(Reading {
                memory: m,
                settled: false,
            });
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

fn is_settled(samples: impl Iterator<Item = u64>) -> bool {
    let (mut lo, mut hi) = (u64::MAX, 0);
    for s in samples {
        lo = lo.min(s);
        hi = hi.max(s);
    }
    if lo > hi {
        return false;
    }
    let spread = hi - lo;
    spread <= SETTLED_KIB || (spread as f64) <= hi as f64 * SETTLED_SHARE
}

pub fn print(r: &AgentMemoryReport) {
    println!(
        "Agent memory (child process), {} SVIDs vs none (KiB)",
        r.svids
    );
    let mut t = Table::new(&["agent", "VmRSS", "VmHWM", "RssAnon", "settled"]);
    for (name, reading) in [
        ("0 SVIDs (baseline)", &r.baseline),
        ("N SVIDs, entries added live", &r.loaded),
        ("N SVIDs, after a restart", &r.restarted),
    ] {
        t.row(vec![
            name.into(),
            reading.memory.vm_rss_kib.to_string(),
            reading.memory.vm_hwm_kib.to_string(),
            reading.memory.rss_anon_kib.to_string(),
            if reading.settled { "yes" } else { "NO" }.into(),
        ]);
    }
    t.row(vec![
        "live - baseline".into(),
        r.rss_delta_kib.to_string(),
        String::new(),
        r.rss_anon_delta_kib.to_string(),
        String::new(),
    ]);
    print!("{}", t.render());
    println!(
        "anonymous memory per SVID: {} bytes (entries added live), {} bytes (after a restart); server VmRSS {} KiB",
        num(r.rss_anon_bytes_per_svid),
        num(r.restarted_rss_anon_bytes_per_svid),
        r.server.vm_rss_kib
    );
    println!(
        "entries created in {} ms; last entry served {} ms after its creation; other uids probed: {:?}",
        num(r.create_entries_ms),
        num(r.last_create_to_served_ms),
        r.probed_uids
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_means_a_small_spread() {
        let cases: &[(&[u64], bool)] = &[
            (&[], false),
            (&[10_000], true),
            (&[10_000, 10_200], true),
            (&[100_000, 100_900], true),
            (&[100_000, 102_000], false),
            (&[1_000, 2_000], false),
        ];
        for (samples, want) in cases {
            assert_eq!(is_settled(samples.iter().copied()), *want, "{samples:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_binary_is_named() {
        let err = run(&AgentMemoryArgs {
            svids: 1,
            hallmark: Some("/nonexistent/hallmark".into()),
            settle_secs: 1,
        })
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/hallmark not found"),
            "{err}"
        );
    }
}
