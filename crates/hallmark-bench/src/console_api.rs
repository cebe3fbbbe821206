//! `console-api`: the console's map query (`GET /api/v1/graph?since=24h`,
//! over HTTP with a bearer token, JSON out) against a stored flow history,
//! beside the admin call it makes (`FlowGraph` in process, what `hallmark
//! flows graph --json` asks for): the difference is the console's own
//! cost. The store is a SQLite file with flows in it, e.g. the one
//! `flow-graph --keep PATH` fills with 10 M flows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use clap::Args;
use hallmark_core::time::unix_millis;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use hallmark_server::ServerConfig;
use hallmark_store::SqliteStore;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::{num, Table};
use crate::stats::{ratio, Samples, Summary};

#[derive(Args, Debug, Clone)]
pub struct ConsoleApiArgs {
    /// The SQLite store to serve (`flow-graph --keep PATH` makes one).
    #[arg(long)]
    pub store: PathBuf,
    /// Timed requests of each kind.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// The map's window (the console's default is 24h).
    #[arg(long, default_value = "24h")]
    pub since: String,
}

#[derive(Debug, Serialize)]
pub struct ConsoleApiReport {
    pub store: String,
    pub edges: usize,
    pub answer_bytes: usize,
    /// `GET /api/v1/graph` over HTTP.
    pub console: Summary,
    /// The admin service's `FlowGraph`, in process.
    pub admin_call: Summary,
    /// Console p50 over admin-call p50.
    pub overhead_p50: Option<f64>,
}

/// One `GET` over a fresh connection: the status and the body.
async fn get(addr: std::net::SocketAddr, path: &str, token: &str) -> Result<(u16, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status in `{head}`"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

pub async fn run(args: &ConsoleApiArgs) -> Result<ConsoleApiReport> {
    ensure!(args.iterations > 0, "--iterations must be at least 1");
    ensure!(
        args.store.exists(),
        "{} does not exist: fill one with `hallmark-bench flow-graph --keep {}`",
        args.store.display(),
        args.store.display()
    );
    let now = unix_millis(std::time::SystemTime::now());
    let since_ms = hallmark_core::timearg::parse_instant(&args.since, now)
        .map_err(|e| anyhow!("--since: {e}"))?;
    let store = SqliteStore::open(&args.store)
        .await
        .with_context(|| format!("opening {}", args.store.display()))?;
    let dir = tempfile::tempdir()?;
    let td = hallmark_core::TrustDomain::new(crate::cluster::TRUST_DOMAIN)?;
    let mut config = ServerConfig::new(td, dir.path().join("server"));
    config.admin_socket = dir.path().join("admin.sock");
    // The stored history is the benchmark's: nothing of it is pruned
    // while it runs.
    config.flows.flow_retention = std::time::Duration::from_secs(365 * 86_400);
    config.flows.graph_retention = std::time::Duration::from_secs(365 * 86_400);
    let server = hallmark_server::start_with_store(config, Arc::new(store)).await?;
    let admin = server.admin();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let console = hallmark_console::serve(
        admin.clone(),
        server.console_key(),
        hallmark_console::ConsoleConfig {
            listen: "127.0.0.1:0".parse()?,
            tls: None,
            metrics: server.metrics(),
        },
        stopped,
    )
    .await?;
    let token = console.start_token().to_string();
    let path = format!("/api/v1/graph?since={}", args.since);
    let admin_json = serde_json::json!({ "since_ms": since_ms, "by": "spiffe-id" }).to_string();

    // One of each first: both read the same pages into the cache.
    let (status, body) = get(console.addr(), &path, &token).await?;
    ensure!(
        status == 200,
        "the console answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    let edges = answer["edges"].as_array().map_or(0, Vec::len);
    let answer_bytes = body.len();
    admin
        .flow_graph(tonic::Request::new(pb::FlowQueryRequest {
            json: admin_json.clone(),
        }))
        .await
        .map_err(|s| anyhow!("FlowGraph: {}", s.message()))?;

    let mut http = Samples::with_capacity(args.iterations);
    let mut call = Samples::with_capacity(args.iterations);
    for i in 0..args.iterations {
        let t = Instant::now();
        let (status, body) = get(console.addr(), &path, &token).await?;
        http.push(t.elapsed());
        ensure!(status == 200 && body.len() > 2, "request {i}: {status}");
        let t = Instant::now();
        admin
            .flow_graph(tonic::Request::new(pb::FlowQueryRequest {
                json: admin_json.clone(),
            }))
            .await
            .map_err(|s| anyhow!("FlowGraph: {}", s.message()))?;
        call.push(t.elapsed());
        if (i + 1) % 10 == 0 {
            eprintln!("console-api: {} of {} pairs", i + 1, args.iterations);
        }
    }
    console.stop();
    server.shutdown().await;
    let console_s = http.summary().ok_or_else(|| anyhow!("no samples"))?;
    let call_s = call.summary().ok_or_else(|| anyhow!("no samples"))?;
    Ok(ConsoleApiReport {
        store: args.store.display().to_string(),
        edges,
        answer_bytes,
        overhead_p50: ratio(console_s.p50_us, call_s.p50_us),
        console: console_s,
        admin_call: call_s,
    })
}

pub fn print(r: &ConsoleApiReport) {
    println!(
        "console map query over {} ({} edges, {} bytes of JSON)",
        r.store,
        r.edges,
        num(r.answer_bytes as f64)
    );
    let ms = |us: f64| num(us / 1_000.0);
    let mut t = Table::new(&[
        "request",
        "count",
        "p50 ms",
        "p99 ms",
        "max ms",
        "vs admin call",
    ]);
    t.row(vec![
        "GET /api/v1/graph (HTTP, JSON)".into(),
        r.console.count.to_string(),
        ms(r.console.p50_us),
        ms(r.console.p99_us),
        ms(r.console.max_us),
        r.overhead_p50
            .map_or_else(|| "-".into(), |s| format!("{s:.2}x")),
    ]);
    t.row(vec![
        "baseline: FlowGraph admin call".into(),
        r.admin_call.count.to_string(),
        ms(r.admin_call.p50_us),
        ms(r.admin_call.p99_us),
        ms(r.admin_call.max_us),
        "1.00x".into(),
    ]);
    print!("{}", t.render());
}
