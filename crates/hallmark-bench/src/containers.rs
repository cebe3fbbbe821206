//! Container benchmarks with a real Docker Engine (and containerd CRI where
//! it answers):
//!
//! - `container-start`: from the moment the runtime started a container's
//!   process (Docker's `State.StartedAt`) until (a) the server lists the
//!   container as running, and (b) a process inside the container holds its
//!   X509-SVID. The probe inside is this binary (`probe-svid`), bind-mounted
//!   with the host's libraries into a FROM-scratch image; it calls
//!   FetchX509SVID in a loop from its first instruction on and prints the
//!   wall clock of its first success. Docker and the bench share the host
//!   clock, so the two times compare directly.
//! - `resync`: a full listing (the inventory's resync) with N containers
//!   running: wall time and runtime API calls, Docker and CRI.
//! - `inventory-memory`: resident memory of an inventory holding N
//!   synthetic workload records.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hallmark_agent::inventory::{Inventory, InventoryConfig, RuntimeSetup};
use hallmark_core::{Compose, Confidence, PodInfo, RuntimeSource, Workload, WorkloadState};
use hallmark_proto::hallmark as pb;
use hallmark_proto::workload::X509svidRequest;
use hallmark_runtime::discovery::{DiscoveryConfig, RuntimeChoice};
use hallmark_runtime::Runtime;
use serde::Serialize;

use crate::cluster::{workload_client, workload_request, Cluster, SETUP_TIMEOUT};
use crate::procfs::Memory;
use crate::report::{num, verdict, Table};
use crate::stats::{Samples, Summary};

/// The target: p99 of both latencies under this.
pub const TARGET_P99: Duration = Duration::from_millis(250);
/// The image the setup script builds (FROM scratch + busybox-static).
const IMAGE: &str = "hallmark-test/busybox:1";
/// Where the probe finds the agent's socket inside the container.
const SOCKET_INSIDE: &str = "/run/hallmark/workload.sock";
/// The probe gives up after this long without an SVID.
const PROBE_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Args, Debug, Clone)]
pub struct ContainerStartArgs {
    /// Containers to start, one after another.
    #[arg(long, default_value_t = 200)]
    pub starts: usize,
}

#[derive(Args, Debug, Clone)]
pub struct ResyncArgs {
    /// Containers running during the listing.
    #[arg(long, default_value_t = 200)]
    pub containers: usize,
    /// Listings timed per runtime.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// CRI socket; the CRI part is left out when it does not answer.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub cri_socket: String,
}

#[derive(Args, Debug, Clone)]
pub struct InventoryMemoryArgs {
    /// Synthetic workloads to hold.
    #[arg(long, default_value_t = 1000)]
    pub workloads: usize,
}

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The Workload API socket.
    #[arg(long, default_value = SOCKET_INSIDE)]
    pub socket: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct ContainerStartReport {
    pub starts: usize,
    /// StartedAt → the server lists the container as running.
    pub to_server_inventory: Summary,
    /// StartedAt → a process inside holds its SVID.
    pub to_svid_inside: Summary,
    /// `docker run -d` as the CLI sees it (create + start), for scale.
    pub docker_run: Summary,
    pub target_p99_ms: f64,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct ResyncRow {
    pub runtime: String,
    pub containers: usize,
    pub wall: Summary,
    pub calls: u32,
}

#[derive(Debug, Serialize)]
pub struct ResyncReport {
    pub rows: Vec<ResyncRow>,
}

#[derive(Debug, Serialize)]
pub struct InventoryMemoryReport {
    pub workloads: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_anon_delta_kib: i64,
    pub bytes_per_workload: f64,
}

fn unix_ns(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A container's output, stdout and stderr.
fn docker_logs(id: &str) -> Result<String> {
    let out = Command::new("docker")
        .args(["logs", id])
        .output()
        .with_context(|| format!("running docker logs {id}"))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `State.StartedAt` in unix nanoseconds (RFC 3339 with nanoseconds).
fn started_at_ns(id: &str) -> Result<i128> {
    let text = docker(&["inspect", "-f", "{{.State.StartedAt}}", id])?;
    let t = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("parsing StartedAt `{text}`"))?;
    Ok(t.unix_timestamp_nanos())
}

/// Read-only mounts giving a FROM-scratch container this binary and the
/// host libraries it links.
fn host_binary_mounts(exe: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for (host, inside) in [("/usr", "/usr"), ("/lib", "/lib"), ("/lib64", "/lib64")] {
        let host = std::fs::canonicalize(host).unwrap_or_else(|_| PathBuf::from(host));
        v.push("-v".to_string());
        v.push(format!("{}:{inside}:ro", host.display()));
    }
    v.push("-v".to_string());
    v.push(format!("{0}:{0}:ro", exe.display()));
    v
}

/// Removes every container carrying a label when dropped, so a failed run
/// leaves nothing behind.
struct LabelCleanup(String);

impl Drop for LabelCleanup {
    fn drop(&mut self) {
        let filter = format!("label={}", self.0);
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut rm = vec!["rm", "-f"];
                rm.extend(ids);
                let _ = docker(&rm);
            }
        }
    }
}

pub async fn container_start(args: &ContainerStartArgs) -> Result<ContainerStartReport> {
    let run_label = format!("hallmark-bench={}", std::process::id());
    let _cleanup = LabelCleanup(run_label.clone());
    let mut cluster = Cluster::start_server().await?;
    let mut admin = cluster.admin().await?;
    let id = cluster.spiffe_id("/bench/container");
    cluster
        .create_entry(
            &mut admin,
            &id,
            &[format!("docker:label:{}", run_label.replacen('=', ":", 1))],
        )
        .await?;
    cluster
        .start_agent_with(InventoryConfig {
            context_name: "bench".into(),
            discovery: DiscoveryConfig {
                choice: RuntimeChoice::Docker,
                ..Default::default()
            },
            resync_interval: Duration::from_secs(3600),
            ..Default::default()
        })
        .await?;
    tokio::time::timeout(SETUP_TIMEOUT, cluster.agent_mut()?.ready())
        .await
        .map_err(|_| anyhow!("the agent did not sync within {SETUP_TIMEOUT:?}"))?;
    let status = cluster.agent_mut()?.inventory.status();
    if status.runtime.runtime != "docker" {
        bail!(
            "the agent found no Docker Engine ({}); run `bash scripts/setup.d/10-containers.sh`",
            status.summary()
        );
    }
    cluster.wait_for_svids(1, SETUP_TIMEOUT).await?;
    let socket = cluster.workload_socket()?;
    let exe = std::env::current_exe().context("locating this binary")?;

    // Watch the server for the whole run, so that the first answer listing
    // a container as running is timed as it happens, even before `docker
    // run` returns.
    let seen: Seen = Arc::default();
    let watcher = tokio::spawn(watch_server(
        cluster.admin().await?,
        run_label.clone(),
        seen.clone(),
    ));
    let mut to_server = Samples::with_capacity(args.starts);
    let mut to_svid = Samples::with_capacity(args.starts);
    let mut docker_run = Samples::with_capacity(args.starts);
    for i in 0..args.starts {
        let name = format!("hm-bench-{}-{i}", std::process::id());
        let mut run_args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--network".into(),
            "none".into(),
            "-l".into(),
            run_label.clone(),
            "-v".into(),
            format!("{}:{SOCKET_INSIDE}", socket.display()),
        ];
        run_args.extend(host_binary_mounts(&exe));
        run_args.push("--entrypoint".into());
        run_args.push(exe.display().to_string());
        run_args.push(IMAGE.into());
        run_args.push("probe-svid".into());
        let refs: Vec<&str> = run_args.iter().map(String::as_str).collect();
        let t = Instant::now();
        let container = docker(&refs)?;
        docker_run.push(t.elapsed());
        let started = started_at_ns(&container)?;
        let server_ns = wait_seen(&seen, &container).await.ok_or_else(|| {
            anyhow!("{name}: the server did not list it as running within {PROBE_DEADLINE:?}")
        })?;
        // The probe stays up after its answer, so the container is running
        // while the server is watched.
        let deadline = Instant::now() + PROBE_DEADLINE;
        let logs = loop {
            let logs = docker_logs(&container)?;
            if logs.contains("svid_at_ns=") || logs.contains("error") {
                break logs;
            }
            if Instant::now() > deadline {
                bail!("{name}: no answer from the probe within {PROBE_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let svid_at: i128 = logs
            .lines()
            .find_map(|l| l.strip_prefix("svid_at_ns="))
            .ok_or_else(|| anyhow!("{name}: the probe printed no svid_at_ns (logs: {logs})"))?
            .trim()
            .parse()
            .with_context(|| format!("{name}: probe output {logs}"))?;
        docker(&["rm", "-f", &container])?;
        to_server.push(nonneg(server_ns - started));
        to_svid.push(nonneg(svid_at - started));
    }
    watcher.abort();
    let to_server_inventory = to_server.summary().ok_or_else(|| anyhow!("no samples"))?;
    let to_svid_inside = to_svid.summary().ok_or_else(|| anyhow!("no samples"))?;
    let met = to_server_inventory.p99_us < TARGET_P99.as_micros() as f64
        && to_svid_inside.p99_us < TARGET_P99.as_micros() as f64;
    cluster.shutdown().await;
    Ok(ContainerStartReport {
        starts: args.starts,
        to_server_inventory,
        to_svid_inside,
        docker_run: docker_run.summary().ok_or_else(|| anyhow!("no samples"))?,
        target_p99_ms: TARGET_P99.as_secs_f64() * 1000.0,
        met,
    })
}

fn nonneg(ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
}

/// When the server first listed each container as running (unix ns).
type Seen = Arc<std::sync::Mutex<HashMap<String, i128>>>;

async fn wait_seen(seen: &Seen, id: &str) -> Option<i128> {
    let deadline = Instant::now() + PROBE_DEADLINE;
    loop {
        if let Some(t) = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
        {
            return Some(*t);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls the server's workload listing (every millisecond) and records
/// when each container with `label` first shows as running.
async fn watch_server(
    mut admin: hallmark_proto::hallmark::admin_client::AdminClient<tonic::transport::Channel>,
    label: String,
    seen: Seen,
) {
    loop {
        let request = pb::ListWorkloadsRequest {
            labels: vec![label.clone()],
            state: "running".into(),
            ..Default::default()
        };
        if let Ok(list) = admin.list_workloads(request).await {
            let now = unix_ns(SystemTime::now());
            let mut seen = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for id in list
                .into_inner()
                .workloads
                .into_iter()
                .filter_map(|w| w.record.map(|r| r.container_id))
            {
                seen.entry(id).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Inside the container: FetchX509SVID until an SVID arrives; prints
/// `svid_at_ns=<unix ns>` and `attempts=<n>`.
pub async fn probe_svid(args: &ProbeArgs) -> Result<()> {
    let deadline = Instant::now() + PROBE_DEADLINE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        if let Ok(mut client) = workload_client(&args.socket).await {
            if let Ok(resp) = client
                .fetch_x509svid(workload_request(X509svidRequest {}))
                .await
            {
                let mut stream = resp.into_inner();
                if let Ok(Some(msg)) = stream.message().await {
                    if !msg.svids.is_empty() {
                        println!("svid_at_ns={}", unix_ns(SystemTime::now()));
                        println!("attempts={attempts}");
                        // Stay up until removed: the benchmark also times
                        // when the server lists this container as running.
                        tokio::time::sleep(PROBE_DEADLINE).await;
                        return Ok(());
                    }
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no SVID within {PROBE_DEADLINE:?} after {attempts} attempts");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub fn print_container_start(r: &ContainerStartReport) {
    println!();
    println!(
        "container start ({} starts), from the runtime's StartedAt:",
        r.starts
    );
    let mut t = Table::new(&["path", "p50 ms", "p99 ms", "max ms"]);
    let ms = |us: f64| num(us / 1000.0);
    for (name, s) in [
        ("-> listed running at the server", &r.to_server_inventory),
        ("-> SVID held inside the container", &r.to_svid_inside),
        ("(docker run -d, CLI, for scale)", &r.docker_run),
    ] {
        t.row(vec![name.into(), ms(s.p50_us), ms(s.p99_us), ms(s.max_us)]);
    }
    print!("{}", t.render());
    println!(
        "target p99 < {} ms: {}",
        num(r.target_p99_ms),
        verdict(r.met)
    );
}

pub async fn resync(args: &ResyncArgs) -> Result<ResyncReport> {
    let label = format!("hallmark-bench-resync={}", std::process::id());
    let _cleanup = LabelCleanup(label.clone());
    let names: Vec<String> = (0..args.containers)
        .map(|i| format!("hm-resync-{}-{i}", std::process::id()))
        .collect();
    resync_with(args, &label, &names).await
}

async fn resync_with(args: &ResyncArgs, label: &str, names: &[String]) -> Result<ResyncReport> {
    for name in names {
        docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "-l",
            label,
            IMAGE,
            "sleep",
            "3600",
        ])?;
    }
    let mut rows = Vec::new();
    let docker_rt: Arc<dyn Runtime> = Arc::new(hallmark_runtime::docker::DockerRuntime::connect(
        "/var/run/docker.sock",
    )?);
    rows.push(time_listing(docker_rt.as_ref(), args.rounds).await?);
    match hallmark_runtime::cri::CriRuntime::connect(&args.cri_socket).await {
        Ok(cri) => {
            let pods = crate::cri_pods::CriPods::start(&args.cri_socket, args.containers).await?;
            let row = time_listing(&cri, args.rounds).await;
            pods.stop().await;
            rows.push(row?);
        }
        Err(e) => println!("CRI left out: {e}"),
    }
    Ok(ResyncReport { rows })
}

async fn time_listing(rt: &dyn Runtime, rounds: usize) -> Result<ResyncRow> {
    let mut wall = Samples::with_capacity(rounds);
    let mut calls = 0;
    let mut containers = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let listing = rt.list().await?;
        wall.push(t.elapsed());
        calls = listing.calls;
        containers = listing.workloads.len();
    }
    Ok(ResyncRow {
        runtime: rt.source().to_string(),
        containers,
        wall: wall.summary().ok_or_else(|| anyhow!("no rounds"))?,
        calls,
    })
}

pub fn print_resync(r: &ResyncReport) {
    println!();
    println!("full resync (list + inspect every container):");
    let mut t = Table::new(&["runtime", "containers", "p50 ms", "max ms", "API calls"]);
    for row in &r.rows {
        t.row(vec![
            row.runtime.clone(),
            row.containers.to_string(),
            num(row.wall.p50_us / 1000.0),
            num(row.wall.max_us / 1000.0),
            row.calls.to_string(),
        ]);
    }
    print!("{}", t.render());
}

/// A plausible record: a Kubernetes pod container with a handful of
/// labels and annotations, or a Compose service.
fn synthetic(i: usize) -> Workload {
    let id = format!("{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15 + 1);
    let mut w = Workload::partial(&id, RuntimeSource::Cri, "");
    w.confidence = Confidence::Full;
    w.degraded_reason.clear();
    w.state = WorkloadState::Running;
    w.name = format!("app-{}", i % 50);
    w.image = format!("registry.example.com/team/app-{}:1.{}", i % 50, i % 7);
    w.image_id = format!("sha256:{:064x}", i % 50);
    w.image_digest = format!("registry.example.com/team/app@sha256:{:064x}", i % 50);
    w.pid = Some(10_000 + i as u32);
    w.cgroup = format!("/kubepods/burstable/pod{i:08x}-0000-4000-8000-000000000000/{id}");
    w.network_mode = "pod".into();
    w.ips = vec![format!(
        "10.{}.{}.{}",
        i / 65536 % 256,
        i / 256 % 256,
        i % 256
    )];
    w.created_at_ms = 1_700_000_000_000;
    w.started_at_ms = 1_700_000_000_100;
    for (k, v) in [("app", "shop"), ("tier", "web"), ("version", "1.2.3")] {
        w.labels.insert(k.into(), v.into());
    }
    if i.is_multiple_of(2) {
        let mut pod = PodInfo {
            uid: format!("{i:08x}-0000-4000-8000-000000000000"),
            name: format!("app-{i}"),
            namespace: format!("ns-{}", i % 10),
            sandbox_id: format!("{:064x}", i + 7),
            ips: w.ips.clone(),
            ..PodInfo::default()
        };
        for (k, v) in [
            ("app.kubernetes.io/name", "shop"),
            ("pod-template-hash", "5d8f7c9b4"),
            ("team", "payments"),
        ] {
            pod.labels.insert(k.into(), v.into());
        }
        pod.annotations
            .insert("kubernetes.io/config.source".into(), "api".into());
        w.pod = Some(pod);
    } else {
        w.source = RuntimeSource::Docker;
        w.compose = Some(Compose {
            project: "shop".into(),
            service: format!("svc-{}", i % 20),
            oneoff: false,
        });
    }
    w
}

pub async fn inventory_memory(args: &InventoryMemoryArgs) -> Result<InventoryMemoryReport> {
    let pid = std::process::id();
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let (_client_tx, clients) = tokio::sync::watch::channel(None);
    let (inventory, tasks) = Inventory::start(
        InventoryConfig::default(),
        dir.path(),
        RuntimeSetup::None {
            reason: "benchmark: synthetic records only".into(),
        },
        clients,
        Arc::new(hallmark_agent::metrics::AgentMetrics::default()),
        shutdown,
    )
    .await;
    // Records built before the baseline, so only the inventory's copies count.
    let records: Vec<Workload> = (0..args.workloads).map(synthetic).collect();
    let ids: HashSet<&str> = records.iter().map(|w| w.container_id.as_str()).collect();
    if ids.len() != args.workloads {
        bail!("synthetic container IDs collide");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = Memory::of_pid(pid)?;
    inventory.insert_synthetic(records);
    // Let the spool writer run once (it serializes the whole set).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = Memory::of_pid(pid)?;
    if inventory.workloads().len() != args.workloads {
        bail!(
            "the inventory holds {} records, not {}",
            inventory.workloads().len(),
            args.workloads
        );
    }
    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let delta = after.rss_anon_kib as i64 - before.rss_anon_kib as i64;
    Ok(InventoryMemoryReport {
        workloads: args.workloads,
        rss_before_kib: before.vm_rss_kib,
        rss_after_kib: after.vm_rss_kib,
        rss_anon_delta_kib: delta,
        bytes_per_workload: delta as f64 * 1024.0 / args.workloads.max(1) as f64,
    })
}

pub fn print_inventory_memory(r: &InventoryMemoryReport) {
    println!();
    println!(
        "inventory with {} synthetic workloads: RSS {} KiB -> {} KiB, anonymous +{} KiB ({} bytes per workload)",
        r.workloads,
        r.rss_before_kib,
        r.rss_after_kib,
        r.rss_anon_delta_kib,
        num(r.bytes_per_workload)
    );
}
