//! `token-endpoint`: the agent's HTTP token endpoint (`POST /v1/tokens/oidc`
//! on the Workload API socket) against FetchJWTSVID over gRPC on the same
//! socket, in the same run, from a warm agent.
//!
//! Both answer from the agent's token cache once warm, so the comparison is
//! the cost of the two front ends: HTTP/1.1 parsing, JSON and attestation
//! per request vs gRPC with attestation per call. The endpoint is measured
//! with persistent connections (like a gRPC channel) and, for the
//! `curl`-style case, with one new connection per request, which includes
//! accept, peer credentials and the protocol sniff.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hallmark_agent::AgentConfig;
use hallmark_core::TrustDomain;
use hallmark_proto::workload::JwtsvidRequest;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Barrier;

use crate::cluster::{
    admin_client, create_entry, generate_token, own_uid_selector, server_config, workload_client,
    workload_request, SETUP_TIMEOUT, TRUST_DOMAIN,
};
use crate::report::{num, ratio_cell, Table};
use crate::stats::{self, Samples, Summary};

const AUDIENCE: &str = "sts.amazonaws.com";
const BODY: &str = r#"{"aud":"sts.amazonaws.com"}"#;

#[derive(Args, Debug, Clone)]
pub struct TokenEndpointArgs {
    /// Concurrency levels: clients (each with its own connection) calling at once.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub clients: Vec<usize>,
    /// Requests per front end and level, spread over the clients.
    #[arg(long, default_value_t = 5_000)]
    pub requests: usize,
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub front_end: &'static str,
    pub clients: usize,
    pub tokens_per_sec: f64,
    pub latency: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenEndpointResult {
    pub requests: usize,
    pub rows: Vec<Row>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrontEnd {
    /// `POST /v1/tokens/oidc`, connection kept open.
    HttpKeepAlive,
    /// `POST /v1/tokens/oidc`, a new connection per request (like `curl`).
    HttpPerRequest,
    /// FetchJWTSVID over gRPC on one channel per client.
    Grpc,
}

impl FrontEnd {
    fn name(self) -> &'static str {
        match self {
            FrontEnd::HttpKeepAlive => "token endpoint (keep-alive)",
            FrontEnd::HttpPerRequest => "token endpoint (new connection)",
            FrontEnd::Grpc => "FetchJWTSVID (gRPC)",
        }
    }
}

pub async fn run(args: &TokenEndpointArgs) -> Result<TokenEndpointResult> {
    if args.clients.contains(&0) || args.requests == 0 {
        bail!("--clients and --requests must be at least 1");
    }
    let dir = tempfile::Builder::new()
        .prefix("hallmark-bench-")
        .tempdir()
        .context("creating the state directory")?;
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let mut config = server_config(&td, &dir.path().join("server"))?;
    config.oidc = Some(hallmark_server::OidcConfig {
        issuer: "https://oidc.bench.hallmark.test"
            .parse()
            .map_err(|e| anyhow!("{e}"))?,
        listen: "127.0.0.1:0".parse()?,
        // The discovery listener is not measured here.
        tls: hallmark_server::OidcTls::InsecureHttp,
        claims: vec!["context".into(), "node".into()],
        token_ttl: hallmark_server::oidc::DEFAULT_TOKEN_TTL,
    });
    let server = hallmark_server::start(config)
        .await
        .context("starting the server")?;
    let mut admin = admin_client(&server.admin_socket).await?;
    let token = generate_token(&mut admin, "bench").await?;
    let agent_dir = dir.path().join("agent");
    let mut agent = hallmark_agent::start(AgentConfig {
        enforcement: hallmark_agent::enforce::EnforceConfig::off(),
        trust_domain: td.clone(),
        socket_path: agent_dir.join("workload.sock"),
        data_dir: agent_dir,
        servers: vec![server.listen_addr.to_string()],
        join_token: Some(token.token.clone()),
        trust: hallmark_agent::ServerTrustSource::Fingerprint(token.ca_fingerprint.clone()),
        inventory: hallmark_agent::inventory::InventoryConfig {
            discovery: hallmark_runtime::discovery::DiscoveryConfig {
                choice: hallmark_runtime::discovery::RuntimeChoice::None,
                ..Default::default()
            },
            ..Default::default()
        },
        flows: Default::default(),
        // The identity plane alone: capture would add its own load.
        capture: hallmark_agent::capture::CaptureConfig {
            mode: hallmark_agent::capture::CaptureMode::Off,
            ..Default::default()
        },
    })
    .await
    .context("starting the agent")?;
    let id = format!("spiffe://{TRUST_DOMAIN}/bench/token-endpoint");
    create_entry(
        &mut admin,
        &token.agent_spiffe_id,
        &id,
        &[own_uid_selector()],
    )
    .await?;
    tokio::time::timeout(
        SETUP_TIMEOUT,
        agent.snapshots.wait_for(|s| !s.svids.is_empty()),
    )
    .await
    .map_err(|_| anyhow!("the agent got no SVID within {SETUP_TIMEOUT:?}"))?
    .map_err(|_| anyhow!("the agent stopped during setup"))?;
    let socket = agent.socket_path.clone();

    // Warm both caches, and check both answer at all. The agent may hold
    // its SVIDs a moment before its node API client is published (503).
    let warm_until = Instant::now() + SETUP_TIMEOUT;
    loop {
        let mut conn = UnixStream::connect(&socket).await?;
        match post_token(&mut conn).await {
            Ok(()) => break,
            Err(_) if Instant::now() < warm_until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.context("warming the token endpoint")),
        }
    }
    let mut grpc = workload_client(&socket).await?;
    grpc.fetch_jwtsvid(workload_request(JwtsvidRequest {
        audience: vec![AUDIENCE.into()],
        spiffe_id: String::new(),
    }))
    .await
    .map_err(|s| anyhow!("warming FetchJWTSVID: {}", s.message()))?;

    let mut rows = Vec::new();
    for &clients in &args.clients {
        for fe in [
            FrontEnd::HttpKeepAlive,
            FrontEnd::HttpPerRequest,
            FrontEnd::Grpc,
        ] {
            rows.push(measure(&socket, fe, clients, args.requests).await?);
        }
    }
    agent.shutdown().await;
    server.shutdown().await;
    Ok(TokenEndpointResult {
        requests: args.requests,
        rows,
    })
}

async fn measure(socket: &Path, fe: FrontEnd, clients: usize, requests: usize) -> Result<Row> {
    let per_client = requests.div_ceil(clients).max(1);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let socket = socket.to_path_buf();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::with_capacity(per_client);
            match fe {
                FrontEnd::Grpc => {
                    let mut c = workload_client(&socket).await?;
                    barrier.wait().await;
                    for _ in 0..per_client {
                        let t = Instant::now();
                        c.fetch_jwtsvid(workload_request(JwtsvidRequest {
                            audience: vec![AUDIENCE.into()],
                            spiffe_id: String::new(),
                        }))
                        .await
                        .map_err(|s| anyhow!("FetchJWTSVID: {}", s.message()))?;
                        samples.push(t.elapsed());
                    }
                }
                FrontEnd::HttpKeepAlive => {
                    let mut conn = UnixStream::connect(&socket).await?;
                    barrier.wait().await;
                    for _ in 0..per_client {
                        let t = Instant::now();
                        post_token(&mut conn).await?;
                        samples.push(t.elapsed());
                    }
                }
                FrontEnd::HttpPerRequest => {
                    barrier.wait().await;
                    for _ in 0..per_client {
                        let t = Instant::now();
                        let mut conn = UnixStream::connect(&socket).await?;
                        post_token(&mut conn).await?;
                        samples.push(t.elapsed());
                    }
                }
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut all = Samples::with_capacity(per_client * clients);
    for t in tasks {
        all.extend(t.await.context("benchmark client task")??);
    }
    let elapsed = start.elapsed();
    Ok(Row {
        front_end: fe.name(),
        clients,
        tokens_per_sec: stats::rate(all.len(), elapsed),
        latency: all
            .summary()
            .ok_or_else(|| anyhow!("{}: no samples", fe.name()))?,
    })
}

/// One `POST /v1/tokens/oidc` on an open connection; fails unless 200 with
/// a token. A minimal HTTP/1.1 client: the cost measured is the agent's.
async fn post_token(conn: &mut UnixStream) -> Result<()> {
    let req = format!(
        "POST /v1/tokens/oidc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    conn.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let (head_len, body_len) = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .map_err(|_| anyhow!("no answer within 10s"))??;
        if n == 0 {
            bail!("connection closed before a full answer");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            if !head.starts_with("HTTP/1.1 200") {
                bail!(
                    "token endpoint answered {}: {}",
                    head.lines().next().unwrap_or(""),
                    String::from_utf8_lossy(&buf[end..])
                );
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .ok_or_else(|| anyhow!("answer without Content-Length"))?;
            break (end + 4, len);
        }
    };
    while buf.len() < head_len + body_len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside the body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if !buf[head_len..].starts_with(b"{\"") {
        bail!("answer body is not JSON");
    }
    Ok(())
}

pub fn print(r: &TokenEndpointResult) {
    let mut t = Table::new(&[
        "front end",
        "clients",
        "tokens/s",
        "p50 us",
        "p99 us",
        "p99 vs gRPC",
    ]);
    for row in &r.rows {
        let grpc = r
            .rows
            .iter()
            .find(|g| g.clients == row.clients && g.front_end == FrontEnd::Grpc.name());
        t.row(vec![
            row.front_end.to_string(),
            row.clients.to_string(),
            num(row.tokens_per_sec),
            num(row.latency.p50_us),
            num(row.latency.p99_us),
            ratio_cell(grpc.and_then(|g| stats::ratio(row.latency.p99_us, g.latency.p99_us))),
        ]);
    }
    println!(
        "token-endpoint: {} requests per front end and level",
        r.requests
    );
    println!("{}", t.render());
}
