//! `workload-api`: latency and throughput of the agent's Workload API under
//! concurrent clients, against a no-op service on the same transport.
//!
//! Every client is a tokio task with its own connection (its own tonic
//! channel over the Unix socket), as separate workloads would have. All
//! clients of a level start together and each issues its share of calls
//! back to back; a call's latency runs from issuing it to its first
//! response message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtsvidRequest, X509svidRequest};
use serde::Serialize;
use tokio::sync::Barrier;
use tonic::transport::Channel;

use crate::cluster::{own_uid_selector, workload_client, workload_request, Cluster, SETUP_TIMEOUT};
use crate::noop::{NoopServer, Variant};
use crate::report::{num, ratio_cell, verdict, Table};
use crate::stats::{self, Samples, Summary};

/// The target: the agent's p99 within this factor of the no-op service's.
pub const TARGET_P99_RATIO: f64 = 2.0;
/// The audience of every FetchJWTSVID call: fixed, so the agent serves the
/// token from its cache after the first call.
const AUDIENCE: &str = "hallmark-bench";
/// Connections opened at once while setting up a level.
const CONNECT_PARALLELISM: usize = 64;
/// Calls of `attest_unix` timed on their own.
const ATTEST_CALLS: usize = 2_000;

#[derive(Args, Debug, Clone)]
pub struct WorkloadApiArgs {
    /// Concurrency levels: how many clients (each with its own connection) call at once.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub clients: Vec<usize>,
    /// Calls per method, target and level, spread evenly over the clients
    /// (each client makes at least one).
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
}

/// A Workload API method under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    FetchX509Svid,
    FetchJwtSvid,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::FetchX509Svid => "FetchX509SVID",
            Method::FetchJwtSvid => "FetchJWTSVID",
        }
    }
}

/// What answers the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Target {
    /// The no-op service on a plain tonic Unix socket server: the baseline.
    Noop,
    /// The no-op service behind the agent's accept path.
    NoopAgentAccept,
    /// The no-op service behind the agent's accept path, attesting each call.
    NoopAgentAttest,
    /// The real agent.
    Agent,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Noop => "noop",
            Target::NoopAgentAccept => "noop+accept",
            Target::NoopAgentAttest => "noop+accept+attest",
            Target::Agent => "agent",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Measurement {
    pub clients: usize,
    pub method: Method,
    pub target: Target,
    pub latency: Summary,
    pub calls_per_sec: f64,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub clients: usize,
    pub method: Method,
    pub agent_p99_us: f64,
    pub noop_p99_us: f64,
    /// agent p99 / noop p99.
    pub p99_ratio: Option<f64>,
    pub target_ratio: f64,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct WorkloadApiReport {
    pub requests_per_level: usize,
    pub measurements: Vec<Measurement>,
    pub comparisons: Vec<Comparison>,
    /// One `attest_unix` call of this process on itself, single-threaded.
    pub attest_unix: Summary,
    /// The user and group name lookups inside it (`getpwuid_r` and
    /// `getgrgid_r` through NSS), timed alone.
    pub name_lookup: Summary,
    /// `spawn_blocking` of an empty closure, awaited: the thread hop the
    /// agent makes around each attestation.
    pub blocking_hop: Summary,
}

pub async fn run(args: &WorkloadApiArgs) -> Result<WorkloadApiReport> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients: every level must be at least 1");
    }
    let mut cluster = Cluster::start().await?;
    let mut admin = cluster.admin().await?;
    let own = cluster.spiffe_id("bench/workload-api");
    cluster
        .create_entry(&mut admin, &own, &[own_uid_selector()])
        .await?;
    cluster.wait_for_svids(1, SETUP_TIMEOUT).await?;
    let agent_socket = cluster.workload_socket()?;

    let mut baselines = Vec::new();
    let mut targets: Vec<(Target, PathBuf)> = Vec::new();
    for (target, variant, file) in [
        (Target::Noop, Variant::Plain, "noop.sock"),
        (
            Target::NoopAgentAccept,
            Variant::AgentAccept,
            "noop-accept.sock",
        ),
        (
            Target::NoopAgentAttest,
            Variant::AgentAcceptAttest,
            "noop-attest.sock",
        ),
    ] {
        let socket = cluster.scratch_dir().join(file);
        baselines.push(NoopServer::start(&socket, variant)?);
        targets.push((target, socket));
    }
    targets.push((Target::Agent, agent_socket));

    let (attest, name_lookup) = tokio::task::spawn_blocking(|| {
        Ok::<_, anyhow::Error>((time_attestation()?, time_name_lookup()?))
    })
    .await
    .context("attestation timing task")??;
    let blocking_hop = time_blocking_hop().await?;

    let mut measurements = Vec::new();
    for &clients in &args.clients {
        for method in [Method::FetchX509Svid, Method::FetchJwtSvid] {
            for (target, socket) in &targets {
                let m = measure(socket, *target, method, clients, args.requests)
                    .await
                    .with_context(|| {
                        format!(
                            "{} on {} with {clients} clients",
                            method.name(),
                            target.name()
                        )
                    })?;
                eprintln!(
                    "  {:<14} {:<19} {:>5} clients  p50 {:>9} us  p99 {:>9} us  {:>8} calls/s",
                    method.name(),
                    target.name(),
                    clients,
                    num(m.latency.p50_us),
                    num(m.latency.p99_us),
                    num(m.calls_per_sec)
                );
                measurements.push(m);
            }
        }
    }

    for b in baselines {
        b.shutdown().await;
    }
    cluster.shutdown().await;

    let comparisons = compare(&measurements);
    Ok(WorkloadApiReport {
        requests_per_level: args.requests,
        measurements,
        comparisons,
        attest_unix: attest,
        name_lookup,
        blocking_hop,
    })
}

fn compare(measurements: &[Measurement]) -> Vec<Comparison> {
    let find = |clients: usize, method: Method, target: Target| {
        measurements
            .iter()
            .find(|m| m.clients == clients && m.method == method && m.target == target)
    };
    measurements
        .iter()
        .filter(|m| m.target == Target::Agent)
        .filter_map(|agent| {
            let noop = find(agent.clients, agent.method, Target::Noop)?;
            let r = stats::ratio(agent.latency.p99_us, noop.latency.p99_us);
            Some(Comparison {
                clients: agent.clients,
                method: agent.method,
                agent_p99_us: agent.latency.p99_us,
                noop_p99_us: noop.latency.p99_us,
                p99_ratio: r,
                target_ratio: TARGET_P99_RATIO,
                met: r.is_some_and(|r| r <= TARGET_P99_RATIO),
            })
        })
        .collect()
}

/// One level: connect `clients` clients, warm each with one call, then let
/// them all make their share of `requests` calls at once.
async fn measure(
    socket: &Path,
    target: Target,
    method: Method,
    clients: usize,
    requests: usize,
) -> Result<Measurement> {
    let per_client = requests.div_ceil(clients).max(1);
    let expect_identity = target == Target::Agent;
    let connected: Vec<Result<SpiffeWorkloadApiClient<Channel>>> =
        futures::stream::iter((0..clients).map(|_| workload_client(socket)))
            .buffer_unordered(CONNECT_PARALLELISM)
            .collect()
            .await;
    // All connected before any task waits at the start line, so a failed
    // connection cannot leave tasks waiting there forever.
    let connected = connected.into_iter().collect::<Result<Vec<_>>>()?;
    let start_line = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for mut client in connected {
        let start_line = start_line.clone();
        tasks.push(tokio::spawn(async move {
            // Warm-up, not recorded: the first call on a connection pays for
            // HTTP/2 setup, and the agent's first FetchJWTSVID mints the token.
            let warm = call(&mut client, method, expect_identity).await;
            start_line.wait().await;
            warm?;
            let began = Instant::now();
            let mut samples = Samples::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                call(&mut client, method, expect_identity).await?;
                samples.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>((samples, began, Instant::now()))
        }));
    }
    start_line.wait().await;
    // Each task notes its own start: a task may finish all its calls
    // before this one is scheduled again after the start line.
    let mut all = Samples::with_capacity(per_client * clients);
    let mut window: Option<(Instant, Instant)> = None;
    for t in tasks {
        let (samples, began, done) = t.await.context("client task")??;
        all.extend(samples);
        window = Some(match window {
            None => (began, done),
            Some((b, d)) => (b.min(began), d.max(done)),
        });
    }
    let (started, finished) = window.ok_or_else(|| anyhow!("no client ran"))?;
    let latency = all
        .summary()
        .ok_or_else(|| anyhow!("no call was measured"))?;
    Ok(Measurement {
        clients,
        method,
        target,
        latency,
        calls_per_sec: stats::rate(all.len(), finished - started),
    })
}

/// One call. FetchX509SVID is a stream: the first message is the answer,
/// after which the stream is dropped (the client cancels it). With
/// `expect_identity`, an answer without an SVID is an error, so a
/// misconfigured run cannot report fast failures as fast answers.
async fn call(
    client: &mut SpiffeWorkloadApiClient<Channel>,
    method: Method,
    expect_identity: bool,
) -> Result<()> {
    match method {
        Method::FetchX509Svid => {
            let mut stream = client
                .fetch_x509svid(workload_request(X509svidRequest {}))
                .await
                .map_err(|s| anyhow!("FetchX509SVID: {} ({:?})", s.message(), s.code()))?
                .into_inner();
            let first = stream
                .message()
                .await
                .map_err(|s| anyhow!("FetchX509SVID stream: {} ({:?})", s.message(), s.code()))?
                .ok_or_else(|| {
                    anyhow!("FetchX509SVID: the stream ended before its first message")
                })?;
            if expect_identity && first.svids.is_empty() {
                bail!("FetchX509SVID: the response carries no SVID");
            }
        }
        Method::FetchJwtSvid => {
            let r = client
                .fetch_jwtsvid(workload_request(JwtsvidRequest {
                    audience: vec![AUDIENCE.into()],
                    spiffe_id: String::new(),
                }))
                .await
                .map_err(|s| anyhow!("FetchJWTSVID: {} ({:?})", s.message(), s.code()))?
                .into_inner();
            if expect_identity && r.svids.is_empty() {
                bail!("FetchJWTSVID: the response carries no SVID");
            }
        }
    }
    Ok(())
}

/// The agent's per-call attestation on its own: this process attesting
/// itself through a socket pair, as the Workload API does for each call.
fn time_attestation() -> Result<Summary> {
    let (ours, _theirs) =
        std::os::unix::net::UnixStream::pair().context("creating a socket pair")?;
    let peer = hallmark_agent::attestor::PeerInfo::from_socket(&ours)
        .context("reading this process's peer credentials")?;
    // The first call hashes this executable; later ones hit the digest cache,
    // which is the steady state of a long-running workload.
    hallmark_agent::attestor::attest_unix(&peer).context("attesting this process")?;
    let mut samples = Samples::with_capacity(ATTEST_CALLS);
    for _ in 0..ATTEST_CALLS {
        let t = Instant::now();
        hallmark_agent::attestor::attest_unix(&peer).context("attesting this process")?;
        samples.push(t.elapsed());
    }
    samples
        .summary()
        .ok_or_else(|| anyhow!("no attestation was measured"))
}

/// An empty round trip through tokio's blocking pool.
async fn time_blocking_hop() -> Result<Summary> {
    let mut samples = Samples::with_capacity(ATTEST_CALLS);
    for _ in 0..ATTEST_CALLS {
        let t = Instant::now();
        tokio::task::spawn_blocking(|| ())
            .await
            .context("an empty blocking task")?;
        samples.push(t.elapsed());
    }
    samples
        .summary()
        .ok_or_else(|| anyhow!("no blocking hop was measured"))
}

/// The part of attestation that turns ids into names, as `attest_unix`
/// does for every call: one user and one group lookup.
fn time_name_lookup() -> Result<Summary> {
    use nix::unistd::{Gid, Group, Uid, User};
    let (uid, gid) = (Uid::current(), Gid::current());
    let mut samples = Samples::with_capacity(ATTEST_CALLS);
    for _ in 0..ATTEST_CALLS {
        let t = Instant::now();
        User::from_uid(uid).context("looking up this process's user")?;
        Group::from_gid(gid).context("looking up this process's group")?;
        samples.push(t.elapsed());
    }
    samples
        .summary()
        .ok_or_else(|| anyhow!("no name lookup was measured"))
}

pub fn print(report: &WorkloadApiReport) {
    println!(
        "Workload API: {} calls per method, target and level",
        report.requests_per_level
    );
    let mut t = Table::new(&[
        "method / target",
        "clients",
        "p50 us",
        "p99 us",
        "max us",
        "calls/s",
    ]);
    for m in &report.measurements {
        t.row(vec![
            format!("{} / {}", m.method.name(), m.target.name()),
            m.clients.to_string(),
            num(m.latency.p50_us),
            num(m.latency.p99_us),
            num(m.latency.max_us),
            num(m.calls_per_sec),
        ]);
    }
    print!("{}", t.render());
    println!();
    let mut c = Table::new(&[
        "method",
        "clients",
        "agent p99 us",
        "noop p99 us",
        "ratio",
        "target",
        "verdict",
    ]);
    for cmp in &report.comparisons {
        c.row(vec![
            cmp.method.name().into(),
            cmp.clients.to_string(),
            num(cmp.agent_p99_us),
            num(cmp.noop_p99_us),
            ratio_cell(cmp.p99_ratio),
            format!("<= {:.1}x", cmp.target_ratio),
            verdict(cmp.met),
        ]);
    }
    print!("{}", c.render());
    println!();
    println!(
        "attest_unix alone (single thread): p50 {} us, p99 {} us; of which user+group name lookup: p50 {} us",
        num(report.attest_unix.p50_us),
        num(report.attest_unix.p99_us),
        num(report.name_lookup.p50_us)
    );
    println!(
        "spawn_blocking round trip (empty closure, idle runtime): p50 {} us, p99 {} us",
        num(report.blocking_hop.p50_us),
        num(report.blocking_hop.p99_us)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(clients: usize, method: Method, target: Target, p99_us: f64) -> Measurement {
        Measurement {
            clients,
            method,
            target,
            latency: Summary {
                count: 1,
                mean_us: p99_us,
                p50_us: p99_us,
                p99_us,
                max_us: p99_us,
            },
            calls_per_sec: 1.0,
        }
    }

    #[test]
    fn compares_agent_with_the_plain_noop_of_the_same_level_and_method() {
        let ms = vec![
            m(1, Method::FetchX509Svid, Target::Noop, 100.0),
            m(1, Method::FetchX509Svid, Target::NoopAgentAccept, 150.0),
            m(1, Method::FetchX509Svid, Target::NoopAgentAttest, 200.0),
            m(1, Method::FetchX509Svid, Target::Agent, 250.0),
            m(1, Method::FetchJwtSvid, Target::Noop, 100.0),
            m(1, Method::FetchJwtSvid, Target::Agent, 150.0),
            m(10, Method::FetchJwtSvid, Target::Noop, 0.0),
            m(10, Method::FetchJwtSvid, Target::Agent, 150.0),
        ];
        let c = compare(&ms);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].p99_ratio, Some(2.5));
        assert!(!c[0].met, "2.5x misses a 2x target");
        assert_eq!(c[1].p99_ratio, Some(1.5));
        assert!(c[1].met);
        assert_eq!(c[2].p99_ratio, None, "nothing to divide by");
        assert!(!c[2].met);
    }

    #[test]
    fn attestation_and_name_lookups_of_this_process_succeed_and_are_timed() {
        let s = time_attestation().unwrap();
        assert_eq!(s.count, ATTEST_CALLS);
        assert!(s.p50_us > 0.0);
        let n = time_name_lookup().unwrap();
        assert_eq!(n.count, ATTEST_CALLS);
        assert!(n.p50_us > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_blocking_hop_is_timed() {
        let s = time_blocking_hop().await.unwrap();
        assert_eq!(s.count, ATTEST_CALLS);
        assert!(s.p50_us > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn measures_the_noop_service_and_rejects_empty_answers_where_identity_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("noop.sock");
        let server = NoopServer::start(&socket, Variant::Plain).unwrap();
        let got = measure(&socket, Target::Noop, Method::FetchX509Svid, 3, 10)
            .await
            .unwrap();
        assert_eq!(got.latency.count, 12, "10 calls over 3 clients is 4 each");
        assert!(got.calls_per_sec > 0.0);
        // An empty answer from something claiming to be the agent is an error.
        let err = measure(&socket, Target::Agent, Method::FetchJwtSvid, 2, 2)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("carries no SVID"), "{err:#}");
        server.shutdown().await;
    }
}
