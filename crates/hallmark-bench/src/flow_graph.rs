//! `flow-graph`: `flows graph --since 24h` over a day of stored flows,
//! beside the plain SQL aggregate over the flows table that answers the
//! same question.
//!
//! A SQLite store is filled with N flows spread over the last 24 hours
//! (a service graph: each workload calls a few fixed peers), through
//! `FlowStore::write_flows`, which also adds the identity-graph buckets
//! (per minute, and their hourly sums). Then `FlowStore::graph` (what the
//! command runs: hourly sums for the whole hours, minutes at the ends) and
//! `FlowStore::graph_from_flows` (one aggregate over the flows) are timed
//! alternately, so that both see the same cache and load. Filling takes
//! minutes at 10M flows: `--keep PATH` keeps the store file and reuses it
//! when it already holds the flows.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, ensure, Context, Result};
use clap::Args;
use hallmark_core::time::unix_millis;
use hallmark_flows::{
    Endpoint, FlowQuery, Initiator, Protocol, Reporter, StoredFlow, TcpOutcome, WorkloadEndpoint,
};
use hallmark_store::flows::FlowWrite;
use hallmark_store::{FlowStore, SqliteStore, Store};
use serde::Serialize;

use crate::cluster::TRUST_DOMAIN;
use crate::report::{num, Table};
use crate::stats::{ratio, Samples, Summary};

/// Workloads in the filled store.
const WORKLOADS: u64 = 500;
/// Peers each workload calls.
const PEERS: u64 = 4;
/// Replicas per service.
const REPLICAS: u64 = 5;
/// Flows per fill transaction.
const FILL_BATCH: usize = 50_000;
/// Progress is printed every this many flows.
const PROGRESS_EVERY: usize = 500_000;
const DAY_MS: i64 = 24 * 3_600_000;

#[derive(Args, Debug, Clone)]
pub struct FlowGraphArgs {
    /// Flows stored over the 24 hours.
    #[arg(long, default_value_t = 10_000_000)]
    pub flows: usize,
    /// Timed queries of each kind.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Keep the SQLite store at this path (and reuse it when it already
    /// holds at least `--flows` flows) instead of a scratch file.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct FlowGraphReport {
    pub flows: u64,
    pub graph_rows: u64,
    /// Rows (edges) in the answer.
    pub answer_rows: usize,
    pub fill_seconds: Option<f64>,
    pub fill_flows_per_sec: Option<f64>,
    pub reused: bool,
    /// `FlowStore::graph`: what `flows graph --since 24h` runs.
    pub graph: Summary,
    /// `FlowStore::graph_from_flows`: the plain aggregate, the baseline.
    pub aggregate: Summary,
    /// Aggregate p50 over graph p50.
    pub speedup_p50: Option<f64>,
}

fn ip(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 2, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// Workload `i` as the describer stores it: one of five replicas of a
/// service (its `app` label), with the service's SPIFFE ID. The graph
/// groups the replicas into one identity.
fn endpoint(i: u64) -> Endpoint {
    let service = format!("svc-{}", i / REPLICAS);
    Endpoint::Workload(WorkloadEndpoint {
        context: "bench".into(),
        node: format!("node-{}", i % 16),
        container_id: format!("{:016x}{:048x}", mix(i), i),
        name: format!("{service}-{}", i % REPLICAS),
        image: format!("registry.example/{service}:1.0"),
        namespace: "bench".into(),
        pod: format!("{service}-{}", i % REPLICAS),
        compose_project: String::new(),
        compose_service: String::new(),
        labels: BTreeMap::from([("app".to_string(), service.clone())]),
        spiffe_ids: vec![format!("spiffe://{TRUST_DOMAIN}/ns/bench/sa/{service}")],
        selectors: vec![format!("k8s:pod-label:app:{service}")],
    })
}

/// splitmix64: flows that do not depend on the day.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Flow `k` of `n`, spread evenly over the day ending at `end_ms`.
fn flow(k: u64, n: u64, end_ms: i64, endpoints: &[Endpoint]) -> StoredFlow {
    let r = mix(k);
    let a = r % WORKLOADS;
    let b = (a + 1 + (r >> 16) % PEERS * 13) % WORKLOADS;
    let port = [443u16, 5432, 6379, 8080][(b % 4) as usize];
    let start = end_ms - DAY_MS + 1 + (k as i64 * (DAY_MS - 60_000)) / n.max(1) as i64;
    let f = hallmark_flows::Flow {
        start_ms: start,
        end_ms: start + (r >> 24) as i64 % 5_000,
        protocol: Protocol::Tcp,
        src: SocketAddr::new(ip(a), 32_768 + (r >> 32) as u16 % 28_000),
        dst: SocketAddr::new(ip(b), port),
        initiator: Initiator::Source,
        bytes_sent: 200 + (r >> 40) % 20_000,
        packets_sent: 2 + (r >> 48) % 20,
        bytes_received: 100 + (r >> 20) % 50_000,
        packets_received: 1 + (r >> 52) % 30,
        outcome: Some(if r.is_multiple_of(200) {
            TcpOutcome::Refused
        } else {
            TcpOutcome::Established
        }),
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::File("bench-day.jsonl".into()),
        local: None,
        enforced: None,
    };
    StoredFlow::new(
        f,
        endpoints[a as usize].clone(),
        endpoints[b as usize].clone(),
        start + 1_000,
    )
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// The start time of the newest stored flow: the end of the filled day.
async fn newest_start(store: &dyn Store) -> Result<Option<i64>> {
    let newest = store
        .list_flows(&FlowQuery {
            limit: 1,
            ..FlowQuery::default()
        })
        .await
        .context("reading the newest stored flow")?;
    Ok(newest.first().map(|f| f.flow.start_ms))
}

pub async fn run(args: &FlowGraphArgs) -> Result<FlowGraphReport> {
    ensure!(args.flows > 0, "--flows must be at least 1");
    ensure!(args.iterations > 0, "--iterations must be at least 1");
    let scratch = tempfile::Builder::new()
        .prefix("hallmark-bench-graph-")
        .tempdir()
        .context("creating the state directory")?;
    let path = match &args.keep {
        Some(p) => p.clone(),
        None => scratch.path().join("flows.db"),
    };
    let store = SqliteStore::open(&path)
        .await
        .with_context(|| format!("opening SQLite store {}", path.display()))?;
    let held = store.flow_counts().await?.flows();
    let n = args.flows as u64;
    let (reused, fill) = if args.keep.is_some() && held >= n {
        eprintln!(
            "flow-graph: reusing {} ({held} flows stored)",
            path.display()
        );
        (true, None)
    } else {
        ensure!(
            held == 0,
            "{} holds {held} flows, fewer than --flows {n}: remove it or pass its count",
            path.display()
        );
        (false, Some(fill_store(&store, n).await?))
    };
    let end_ms = newest_start(&store)
        .await?
        .ok_or_else(|| anyhow!("the store holds no flows"))?;
    let counts = store.flow_counts().await?;
    // `--since 24h` as of the moment the last flow was stored.
    let since = end_ms - DAY_MS + 60_000;
    let first = store.graph(since, None).await?;
    let baseline = store.graph_from_flows(since, None).await?;
    ensure!(
        first.len() == baseline.len(),
        "the graph has {} edges, the aggregate {}",
        first.len(),
        baseline.len()
    );
    if let Some((g, a)) = first.iter().zip(&baseline).find(|(g, a)| g != a) {
        return Err(anyhow!(
            "the graph and the aggregate differ: {g:?} against {a:?}"
        ));
    }
    let mut graph = Samples::with_capacity(args.iterations);
    let mut aggregate = Samples::with_capacity(args.iterations);
    for i in 0..args.iterations {
        let t = Instant::now();
        let g = store.graph(since, None).await?;
        graph.push(t.elapsed());
        let t = Instant::now();
        let a = store.graph_from_flows(since, None).await?;
        aggregate.push(t.elapsed());
        ensure!(g.len() == first.len() && a.len() == first.len());
        if (i + 1) % 10 == 0 {
            eprintln!("flow-graph: {} of {} query pairs", i + 1, args.iterations);
        }
    }
    let none = || anyhow!("no query was timed");
    let graph = graph.summary().ok_or_else(none)?;
    let aggregate = aggregate.summary().ok_or_else(none)?;
    Ok(FlowGraphReport {
        flows: counts.flows(),
        graph_rows: counts.graph_rows,
        answer_rows: first.len(),
        fill_seconds: fill.map(|d| d.as_secs_f64()),
        fill_flows_per_sec: fill.map(|d| n as f64 / d.as_secs_f64()),
        reused,
        speedup_p50: ratio(aggregate.p50_us, graph.p50_us),
        graph,
        aggregate,
    })
}

async fn fill_store(store: &dyn Store, n: u64) -> Result<Duration> {
    let endpoints: Vec<Endpoint> = (0..WORKLOADS).map(endpoint).collect();
    let end_ms = now_ms();
    let started = Instant::now();
    let mut done = 0u64;
    let mut next_report = PROGRESS_EVERY as u64;
    while done < n {
        let take = (n - done).min(FILL_BATCH as u64);
        let rows: Vec<StoredFlow> = (done..done + take)
            .map(|k| flow(k, n, end_ms, &endpoints))
            .collect();
        store
            .write_flows(&FlowWrite {
                server_id: "bench-fill".into(),
                now_ms: end_ms,
                flows: rows,
                ..FlowWrite::default()
            })
            .await
            .context("filling the store")?;
        done += take;
        if done >= next_report || done == n {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "flow-graph: {done} of {n} flows stored ({:.0} flows/s, {secs:.0} s)",
                done as f64 / secs.max(1e-9)
            );
            next_report += PROGRESS_EVERY as u64;
        }
    }
    Ok(started.elapsed())
}

pub fn print(r: &FlowGraphReport) {
    println!(
        "flows graph --since 24h over {} stored flows ({} minute graph rows, {} edges in the answer){}",
        r.flows,
        r.graph_rows,
        r.answer_rows,
        if r.reused { ", reused store" } else { "" }
    );
    if let (Some(s), Some(rate)) = (r.fill_seconds, r.fill_flows_per_sec) {
        println!("fill: {s:.0} s ({} flows/s through write_flows)", num(rate));
    }
    let ms = |us: f64| num(us / 1_000.0);
    let mut t = Table::new(&["query", "count", "p50 ms", "p99 ms", "max ms", "vs graph"]);
    t.row(vec![
        "FlowStore::graph (hourly sums + minutes)".into(),
        r.graph.count.to_string(),
        ms(r.graph.p50_us),
        ms(r.graph.p99_us),
        ms(r.graph.max_us),
        "1.00x".into(),
    ]);
    t.row(vec![
        "baseline: aggregate over the flows".into(),
        r.aggregate.count.to_string(),
        ms(r.aggregate.p50_us),
        ms(r.aggregate.p99_us),
        ms(r.aggregate.max_us),
        r.speedup_p50
            .map_or_else(|| "-".into(), |s| format!("{s:.2}x slower")),
    ]);
    print!("{}", t.render());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_span_the_day_and_never_talk_to_themselves() {
        let eps: Vec<Endpoint> = (0..WORKLOADS).map(endpoint).collect();
        let end = 1_750_000_000_000;
        let n = 10_000;
        let rows: Vec<StoredFlow> = (0..n).map(|k| flow(k, n, end, &eps)).collect();
        assert!(rows.iter().all(|r| r.flow.src.ip() != r.flow.dst.ip()));
        // Replicas share a graph identity; services do not.
        assert_eq!(eps[0].graph_key(), eps[4].graph_key());
        assert_ne!(eps[0].graph_key(), eps[5].graph_key());
        assert!(rows
            .iter()
            .all(|r| r.flow.start_ms > end - DAY_MS && r.flow.start_ms <= end));
        assert!(rows
            .iter()
            .all(|r| r.status == hallmark_flows::FlowStatus::Attributed));
        assert!(rows[0].flow.start_ms < end - DAY_MS + 60_000);
        assert!(rows[(n - 1) as usize].flow.start_ms > end - 120_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_times_both_queries_and_reuses_a_kept_store() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("graph.db");
        let args = FlowGraphArgs {
            flows: 3_000,
            iterations: 3,
            keep: Some(keep.clone()),
        };
        let r = run(&args).await.unwrap();
        assert_eq!(r.flows, 3_000);
        assert!(!r.reused);
        assert_eq!(r.graph.count, 3);
        assert_eq!(r.aggregate.count, 3);
        // Edges are between services: more than one, at most one per
        // (workload, peer) pair.
        assert!(
            r.answer_rows > 10 && r.answer_rows as u64 <= WORKLOADS * PEERS,
            "{r:?}"
        );
        let again = run(&args).await.unwrap();
        assert!(again.reused);
        assert_eq!(again.answer_rows, r.answer_rows);
        // A kept store with fewer flows than asked for is refused, not mixed.
        let more = FlowGraphArgs {
            flows: 5_000,
            ..args
        };
        let err = run(&more).await.unwrap_err().to_string();
        assert!(err.contains("fewer than --flows"), "{err}");
    }
}
