//! Capture to `hallmark flows list`: a server and an agent with capture on,
//! in this process; short connections to a listener on a known port at a
//! steady pace; the admin API's `ListFlows` polled until each connection's
//! flow is there.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use hallmark_agent::capture::{CaptureConfig, CaptureMode};
use hallmark_agent::AgentConfig;
use hallmark_core::time::unix_millis;
use hallmark_core::TrustDomain;
use hallmark_flows::{FlowQuery, Protocol, Reporter, StoredFlow};
use hallmark_proto::hallmark as pb;
use serde::Serialize;

use crate::cluster::{admin_client, generate_token, server_config, SETUP_TIMEOUT, TRUST_DOMAIN};
use crate::stats::Samples;

/// How often `ListFlows` is asked: the resolution of the figures.
pub const POLL_EVERY: Duration = Duration::from_millis(25);
/// A connection whose flow is not listed this long after the last close
/// counts as missing.
const GIVE_UP: Duration = Duration::from_secs(30);

/// Close → listed, per connection.
#[derive(Debug, Clone, Serialize)]
pub struct Visibility {
    pub connections: usize,
    pub listed: usize,
    pub missing: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub poll_ms: f64,
    /// The agent's batch period (a flow waits up to this long in the agent).
    pub agent_batch_ms: f64,
    /// How the agent attached the TCP program.
    pub tcp_attach: String,
}

pub async fn run(connections: usize, pace: Duration) -> Result<Visibility> {
    let dir = tempfile::Builder::new()
        .prefix("hallmark-bench-capture-")
        .tempdir()
        .context("creating the state directory")?;
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let server = hallmark_server::start(server_config(&td, &dir.path().join("server"))?)
        .await
        .context("starting the server")?;
    let mut admin = admin_client(&server.admin_socket).await?;
    let token = generate_token(&mut admin, "bench").await?;
    let agent_dir = dir.path().join("agent");
    let flows = hallmark_agent::flows::FlowConfig::default();
    let agent_batch_ms = flows.batch_interval.as_secs_f64() * 1000.0;
    let agent = hallmark_agent::start(AgentConfig {
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
        flows,
        capture: CaptureConfig {
            mode: CaptureMode::On,
            ..CaptureConfig::default()
        },
    })
    .await
    .context("starting the agent with capture on")?;
    let result = async {
        let mut agent = agent;
        tokio::time::timeout(SETUP_TIMEOUT, agent.ready())
            .await
            .map_err(|_| anyhow!("the agent did not sync within {SETUP_TIMEOUT:?}"))?;
        let tcp_attach = agent.capture.status().tcp_attach;
        let r = measure(&mut admin, connections, pace).await;
        agent.shutdown().await;
        r.map(|(samples, listed)| {
            let s = samples.summary();
            let ms = |f: fn(&crate::stats::Summary) -> f64| s.as_ref().map(|s| f(s) / 1000.0);
            Visibility {
                connections,
                listed,
                missing: connections - listed,
                p50_ms: ms(|s| s.p50_us),
                p99_ms: ms(|s| s.p99_us),
                max_ms: ms(|s| s.max_us),
                poll_ms: POLL_EVERY.as_secs_f64() * 1000.0,
                agent_batch_ms,
                tcp_attach,
            }
        })
    }
    .await;
    server.shutdown().await;
    result
}

async fn measure(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    connections: usize,
    pace: Duration,
) -> Result<(Samples, usize)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the listener")?;
    let port = listener.local_addr()?.port();
    let since_ms = unix_millis(SystemTime::now()) - 60_000;
    let server = std::thread::Builder::new()
        .name("bench-visible-server".into())
        .spawn(move || serve(listener, connections))
        .context("starting the listener thread")?;
    let (tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<(u16, Instant)>();
    let client = tokio::task::spawn_blocking(move || -> Result<()> {
        for _ in 0..connections {
            let started = Instant::now();
            let (local_port, closed) = one_connection(port)?;
            let _ = tx.send((local_port, closed));
            std::thread::sleep(pace.saturating_sub(started.elapsed()));
        }
        Ok(())
    });

    let query = FlowQuery {
        since_ms,
        port: Some(port),
        protocol: Some(Protocol::Tcp),
        limit: connections * 4 + 100,
        ..FlowQuery::default()
    };
    let json = serde_json::to_string(&query).context("encoding the flow query")?;
    let mut closes: HashMap<u16, Instant> = HashMap::new();
    let mut listed: HashMap<u16, Instant> = HashMap::new();
    let mut all_closed_at: Option<Instant> = None;
    loop {
        let client_done = client.is_finished();
        while let Ok((p, at)) = closed_rx.try_recv() {
            closes.insert(p, at);
        }
        if client_done && closes.len() < connections {
            // The client stopped early: its error is reported below.
            break;
        }
        if all_closed_at.is_none() && closes.len() == connections {
            all_closed_at = Some(Instant::now());
        }
        let answer = admin
            .list_flows(pb::FlowQueryRequest { json: json.clone() })
            .await
            .map_err(|s| anyhow!("ListFlows: {} ({:?})", s.message(), s.code()))?
            .into_inner();
        let now = Instant::now();
        let flows: Vec<StoredFlow> =
            serde_json::from_str(&answer.json).context("decoding the ListFlows answer")?;
        for f in flows {
            if matches!(f.flow.reporter, Reporter::Agent(_)) && f.flow.dst.port() == port {
                listed.entry(f.flow.src.port()).or_insert(now);
            }
        }
        let done = closes.len() == connections && closes.keys().all(|p| listed.contains_key(p));
        if done || all_closed_at.is_some_and(|t| t.elapsed() > GIVE_UP) {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    client
        .await
        .map_err(|e| anyhow!("the client task failed: {e}"))??;
    server
        .join()
        .map_err(|_| anyhow!("the listener thread panicked"))?;
    let mut samples = Samples::with_capacity(connections);
    for (p, closed) in &closes {
        if let Some(seen) = listed.get(p) {
            samples.push(seen.saturating_duration_since(*closed));
        }
    }
    let n = samples.len();
    Ok((samples, n))
}

/// Accepts `n` connections; reads each to its end, then closes it.
fn serve(listener: TcpListener, n: usize) {
    let mut buf = [0u8; 64];
    for mut s in listener.incoming().take(n).flatten() {
        while matches!(s.read(&mut buf), Ok(k) if k > 0) {}
    }
}

/// One short connection: a request, the client's half-close, the server's
/// close read. Returns the client's port and when both ends were closed.
fn one_connection(port: u16) -> Result<(u16, Instant)> {
    let mut s =
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).context("connecting to the listener")?;
    let local = s.local_addr()?.port();
    s.write_all(b"ping").context("writing the request")?;
    s.shutdown(Shutdown::Write)
        .context("half-closing the connection")?;
    let mut buf = [0u8; 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).context("reading the server's close"),
        }
    }
    drop(s);
    Ok((local, Instant::now()))
}
