//! `flow-ingest`: flows into the store with attribution, beside raw batched
//! inserts of the same rows into the same kind of store.
//!
//! One set of flows between workloads whose ownership evidence (an hour of
//! 10 s heartbeats) the server holds before the first flow arrives, so every
//! end is attributed at once: the steady state. Each path runs on a fresh
//! store:
//!
//! - raw (the baseline): `FlowStore::write_flows` of the already described
//!   rows, 5000 per transaction;
//! - file: the flows as `IngestFlows` calls of 1000 records (what
//!   `hallmark flows ingest` sends) to an in-process server;
//! - collector: the flows as NetFlow v9 datagrams to the server's UDP
//!   collector, paced so that neither the socket buffer nor the pipeline
//!   overflows; losses are counted and reported, not hidden.
//!
//! The file and collector paths are timed until the store holds every flow.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use hallmark_core::time::unix_millis;
use hallmark_core::TrustDomain;
use hallmark_flows::{
    Endpoint, Evidence, EvidenceKind, Flow, Initiator, Owner, OwnershipKey, Protocol, Reporter,
    StoredFlow, TcpOutcome,
};
use hallmark_proto::hallmark as pb;
use hallmark_store::flows::FlowWrite;
use hallmark_store::{PostgresStore, SqliteStore, Store};
use serde::Serialize;
use tempfile::TempDir;

use crate::cluster::{admin_client, server_config, TRUST_DOMAIN};
use crate::ha::ScratchDatabase;
use crate::report::{num, verdict, Table};
use crate::stats::{rate, ratio};

/// The target: each ingest path stores at least this share of the raw rate.
pub const TARGET_SHARE: f64 = 0.5;
/// Workloads the flows run between.
const WORKLOADS: u32 = 200;
/// Rows per raw `write_flows` transaction.
const RAW_BATCH: usize = 5_000;
/// Records per `IngestFlows` call, as `hallmark flows ingest` sends them.
const INGEST_BATCH: usize = 1_000;
/// Heartbeat period of the seeded evidence (the server default).
const HEARTBEAT_MS: i64 = 10_000;
/// The seeded evidence reaches back this far before the run.
const EVIDENCE_SPAN_MS: i64 = 65 * 60_000;
/// Flows start within this span, ending a minute before the run.
const FLOW_SPAN_MS: i64 = 58 * 60_000;
/// NetFlow v9 records per datagram: about 1.3 KB, under an Ethernet MTU.
const V9_RECORDS: usize = 45;
/// The template is repeated every this many datagrams (exporters resend it
/// periodically).
const V9_TEMPLATE_EVERY: usize = 100;
/// Flows sent but not yet stored, at most, while pacing the collector path.
const UDP_WINDOW: u64 = 20_000;
/// Datagrams sent between two looks at the collector's socket queue.
const UDP_BURST: usize = 4;
/// Bytes queued at the collector socket (kernel accounting, about twice
/// the payload) above which the sender waits: a quarter of the default
/// 208 KiB receive buffer.
const UDP_QUEUE_LIMIT: u64 = 52 * 1024;
/// A path whose store stops growing for this long is over.
const STALL: Duration = Duration::from_secs(15);

#[derive(Args, Debug, Clone)]
pub struct FlowIngestArgs {
    /// Flows through each path.
    #[arg(long, default_value_t = 200_000)]
    pub flows: usize,
    /// `sqlite` (a file in a scratch directory) or a PostgreSQL server URL
    /// without a database name (`postgres://user:pw@host:port`): a scratch
    /// database is created there per path and dropped afterwards.
    #[arg(long, default_value = "sqlite")]
    pub datastore: String,
}

/// One path's figures.
#[derive(Debug, Serialize)]
pub struct PathResult {
    pub flows_sent: u64,
    pub flows_stored: u64,
    pub attributed: u64,
    pub seconds: f64,
    pub flows_per_sec: f64,
    /// Share of the raw rate; `None` for the raw path itself.
    pub share_of_raw: Option<f64>,
    /// Flows the server counted as refused, by reason.
    pub rejected: serde_json::Value,
    /// Datagrams the kernel dropped at the collector socket.
    pub socket_drops: u64,
}

#[derive(Debug, Serialize)]
pub struct FlowIngestReport {
    pub datastore: String,
    pub flows: usize,
    pub workloads: u32,
    pub raw: PathResult,
    pub file: PathResult,
    pub collector: PathResult,
    pub target_share: f64,
}

/// A workload of the run: its IP and owner.
struct Workload {
    ip: Ipv4Addr,
    owner: Owner,
}

fn workloads() -> Vec<Workload> {
    (0..WORKLOADS)
        .map(|i| Workload {
            ip: Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8),
            owner: Owner::Workload {
                context: "bench".into(),
                node: format!("node-{}", i % 8),
                // Distinct in their first 12 characters, the short form an
                // undescribed workload is named by.
                container_id: format!("{:016x}{:048x}", mix(u64::from(i)), i),
            },
        })
        .collect()
}

/// Heartbeats of every workload, every 10 s, up to `now_ms`.
fn evidence(ws: &[Workload], now_ms: i64) -> Vec<Evidence> {
    let first = now_ms - EVIDENCE_SPAN_MS;
    let mut out = Vec::new();
    for w in ws {
        let mut t = first;
        while t <= now_ms {
            out.push(Evidence {
                key: OwnershipKey::ip(IpAddr::V4(w.ip)),
                owner: w.owner.clone(),
                at_ms: t,
                kind: if t == first {
                    EvidenceKind::Started
                } else {
                    EvidenceKind::Heartbeat
                },
            });
            t += HEARTBEAT_MS;
        }
    }
    out
}

/// splitmix64: flows that do not depend on the day.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Service ports and their protocol, as a service graph has them.
const SERVICES: [(u16, Protocol); 6] = [
    (443, Protocol::Tcp),
    (5432, Protocol::Tcp),
    (6379, Protocol::Tcp),
    (8080, Protocol::Tcp),
    (9090, Protocol::Tcp),
    (53, Protocol::Udp),
];

/// `n` flows between the workloads, starting in the hour before `now_ms`;
/// each flow's (source, destination) workload indexes beside it.
fn flows(ws: &[Workload], n: usize, now_ms: i64) -> Vec<(Flow, usize, usize)> {
    let first = now_ms - 60_000 - FLOW_SPAN_MS;
    let w = ws.len() as u64;
    (0..n as u64)
        .map(|k| {
            let r = mix(k);
            let a = (r % w) as usize;
            // Each workload calls a few fixed peers, never itself.
            let b = ((a as u64 + 1 + (r >> 16) % 5 * 7) % w) as usize;
            let (port, protocol) = SERVICES[(a + b) % SERVICES.len()];
            let start = first + (k as i64 * FLOW_SPAN_MS) / n.max(1) as i64;
            let flow = Flow {
                start_ms: start,
                end_ms: start + (r >> 24) as i64 % 5_000,
                protocol,
                src: SocketAddr::new(IpAddr::V4(ws[a].ip), 32_768 + (r >> 32) as u16 % 28_000),
                dst: SocketAddr::new(IpAddr::V4(ws[b].ip), port),
                initiator: Initiator::Source,
                bytes_sent: 200 + (r >> 40) % 20_000,
                packets_sent: 2 + (r >> 48) % 20,
                bytes_received: 0,
                packets_received: 0,
                outcome: (protocol == Protocol::Tcp).then_some(TcpOutcome::Established),
                retransmits: 0,
                rtt_us: None,
                reporter: Reporter::File("bench-flows.jsonl".into()),
                local: None,
                enforced: None,
            };
            (flow, a, b)
        })
        .collect()
}

/// A fresh store of the kind `--datastore` names, and what keeps it alive.
struct FreshStore {
    store: Arc<dyn Store>,
    _dir: TempDir,
    _db: Option<ScratchDatabase>,
}

impl FreshStore {
    async fn open(datastore: &str, dir: TempDir) -> Result<Self> {
        if datastore == "sqlite" {
            let path = dir.path().join("flows.db");
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening SQLite store {}", path.display()))?;
            return Ok(FreshStore {
                store: Arc::new(store),
                _dir: dir,
                _db: None,
            });
        }
        if !datastore.starts_with("postgres://") && !datastore.starts_with("postgresql://") {
            bail!("--datastore `{datastore}`: must be `sqlite` or a postgres:// server URL");
        }
        let db = ScratchDatabase::create(datastore)?;
        let store = PostgresStore::connect(&db.url())
            .await
            .context("connecting to PostgreSQL")?;
        Ok(FreshStore {
            store: Arc::new(store),
            _dir: dir,
            _db: Some(db),
        })
    }
}

fn scratch() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("hallmark-bench-flows-")
        .tempdir()
        .context("creating the state directory")
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// Writes the evidence in transactions of a manageable size.
async fn seed(store: &dyn Store, evidence: &[Evidence]) -> Result<()> {
    for chunk in evidence.chunks(20_000) {
        store
            .write_flows(&FlowWrite {
                server_id: "bench-seed".into(),
                now_ms: now_ms(),
                evidence: chunk.to_vec(),
                ..FlowWrite::default()
            })
            .await
            .context("seeding ownership evidence")?;
    }
    Ok(())
}

pub async fn run(args: &FlowIngestArgs) -> Result<FlowIngestReport> {
    ensure!(args.flows > 0, "--flows must be at least 1");
    let ws = workloads();
    let now = now_ms();
    let ev = evidence(&ws, now);
    let input = flows(&ws, args.flows, now);

    eprintln!("flow-ingest: raw write_flows of {} rows", args.flows);
    let raw = raw_path(args, &ws, &input).await?;
    eprintln!("flow-ingest: IngestFlows ({INGEST_BATCH} records per call)");
    let mut file = server_path(args, &ev, &input, Via::File).await?;
    eprintln!("flow-ingest: NetFlow v9 to the UDP collector");
    let mut collector = server_path(args, &ev, &input, Via::Collector).await?;
    file.share_of_raw = ratio(file.flows_per_sec, raw.flows_per_sec);
    collector.share_of_raw = ratio(collector.flows_per_sec, raw.flows_per_sec);
    Ok(FlowIngestReport {
        datastore: args.datastore.clone(),
        flows: args.flows,
        workloads: WORKLOADS,
        raw,
        file,
        collector,
        target_share: TARGET_SHARE,
    })
}

async fn raw_path(
    args: &FlowIngestArgs,
    ws: &[Workload],
    input: &[(Flow, usize, usize)],
) -> Result<PathResult> {
    let fresh = FreshStore::open(&args.datastore, scratch()?).await?;
    let attributed_ms = now_ms();
    // The pipeline stores what the describer makes of an owner that the
    // inventory does not hold: its keys, as `Endpoint::bare`.
    let rows: Vec<StoredFlow> = input
        .iter()
        .map(|(f, a, b)| {
            StoredFlow::new(
                f.clone(),
                Endpoint::bare(&ws[*a].owner),
                Endpoint::bare(&ws[*b].owner),
                attributed_ms,
            )
        })
        .collect();
    let mut batches = Vec::with_capacity(rows.len() / RAW_BATCH + 1);
    for chunk in rows.chunks(RAW_BATCH) {
        batches.push(FlowWrite {
            server_id: "bench-raw".into(),
            now_ms: attributed_ms,
            flows: chunk.to_vec(),
            ..FlowWrite::default()
        });
    }
    let started = Instant::now();
    for w in &batches {
        fresh
            .store
            .write_flows(w)
            .await
            .context("raw write_flows")?;
    }
    let elapsed = started.elapsed();
    let counts = fresh.store.flow_counts().await?;
    ensure!(
        counts.flows() == args.flows as u64,
        "raw path stored {} of {} flows",
        counts.flows(),
        args.flows
    );
    Ok(PathResult {
        flows_sent: args.flows as u64,
        flows_stored: counts.flows(),
        attributed: counts.attributed,
        seconds: elapsed.as_secs_f64(),
        flows_per_sec: rate(args.flows, elapsed),
        share_of_raw: None,
        rejected: serde_json::Value::Null,
        socket_drops: 0,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    File,
    Collector,
}

async fn server_path(
    args: &FlowIngestArgs,
    evidence: &[Evidence],
    input: &[(Flow, usize, usize)],
    via: Via,
) -> Result<PathResult> {
    let dir = scratch()?;
    let data_dir = dir.path().join("server");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let fresh = FreshStore::open(&args.datastore, dir).await?;
    seed(fresh.store.as_ref(), evidence).await?;
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let mut config = server_config(&td, &data_dir)?;
    // Evidence older than the retention is not taken up at start.
    config.workload_retention = Duration::from_secs(24 * 3600);
    config.flows.collector_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let server = hallmark_server::start_with_store(config, fresh.store.clone())
        .await
        .context("starting the server")?;
    let mut admin = admin_client(&server.admin_socket).await?;
    let result: Result<PathResult> = async {
        let store = fresh.store.as_ref();
        let n = input.len() as u64;
        let started = Instant::now();
        let mut socket_drops = 0;
        match via {
            Via::File => {
                for chunk in input.chunks(INGEST_BATCH) {
                    let req = pb::IngestFlowsRequest {
                        source: "bench-flows.jsonl".into(),
                        flows: chunk
                            .iter()
                            .map(|(f, _, _)| pb::FlowRecord::from(f))
                            .collect(),
                    };
                    let resp = admin
                        .ingest_flows(req)
                        .await
                        .map_err(|s| anyhow!("IngestFlows: {} ({:?})", s.message(), s.code()))?
                        .into_inner();
                    ensure!(
                        resp.rejected == 0,
                        "IngestFlows refused {} flows: {:?}",
                        resp.rejected,
                        resp.errors
                    );
                }
            }
            Via::Collector => {
                let addr = server
                    .flow_collector_addr
                    .ok_or_else(|| anyhow!("the server started no flow collector"))?;
                send_v9(addr, input, store).await?;
                socket_drops = udp_socket(addr.port()).map_or(0, |q| q.drops);
            }
        }
        let (stored, last_write) = wait_stored(store, n).await?;
        let elapsed = last_write.duration_since(started);
        let counts = store.flow_counts().await?;
        let stats = admin
            .flow_stats(pb::FlowQueryRequest { json: "{}".into() })
            .await
            .map_err(|s| anyhow!("FlowStats: {}", s.message()))?
            .into_inner();
        let stats: serde_json::Value =
            serde_json::from_str(&stats.json).context("decoding FlowStats")?;
        Ok(PathResult {
            flows_sent: n,
            flows_stored: stored,
            attributed: counts.attributed,
            seconds: elapsed.as_secs_f64(),
            flows_per_sec: rate(stored as usize, elapsed),
            share_of_raw: None,
            rejected: stats
                .get("rejected")
                .cloned()
                .unwrap_or(serde_json::Value::Null),
            socket_drops,
        })
    }
    .await;
    server.shutdown().await;
    result
}

/// Waits until the store holds `n` flows, or it stops growing (a loss);
/// returns the count and when it last grew.
async fn wait_stored(store: &dyn Store, n: u64) -> Result<(u64, Instant)> {
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        let stored = store.flow_counts().await?.flows();
        if stored >= n {
            return Ok((stored, Instant::now()));
        }
        if stored != last {
            last = stored;
            last_change = Instant::now();
        } else if last_change.elapsed() > STALL {
            eprintln!("flow-ingest: the store stopped at {stored} of {n} flows");
            return Ok((stored, last_change));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the flows as NetFlow v9 datagrams from one exporter, keeping the
/// collector's socket queue under [`UDP_QUEUE_LIMIT`] and at most
/// [`UDP_WINDOW`] flows sent and not yet stored (the pipeline's queue).
async fn send_v9(to: SocketAddr, input: &[(Flow, usize, usize)], store: &dyn Store) -> Result<()> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the exporter socket")?;
    socket
        .connect(to)
        .await
        .with_context(|| format!("connecting the exporter socket to {to}"))?;
    // The exporter booted two hours before the run: every flow time is an
    // uptime well within 2^31 ms.
    let boot_ms = now_ms() - 2 * 3_600_000;
    let mut sent = 0u64;
    let mut stored = 0u64;
    let mut buf = Vec::with_capacity(1500);
    for (i, chunk) in input.chunks(V9_RECORDS).enumerate() {
        if i % UDP_BURST == 0 {
            while udp_socket(to.port()).is_some_and(|q| q.rx_queue > UDP_QUEUE_LIMIT) {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            while sent - stored.min(sent) > UDP_WINDOW {
                tokio::time::sleep(Duration::from_millis(10)).await;
                stored = store.flow_counts().await?.flows();
            }
        }
        let export_secs = (now_ms() / 1000) as u32;
        v9_datagram(
            &mut buf,
            export_secs,
            boot_ms,
            i as u32,
            i % V9_TEMPLATE_EVERY == 0,
            chunk.iter().map(|(f, _, _)| f),
        )?;
        socket
            .send(&buf)
            .await
            .context("sending a NetFlow v9 datagram")?;
        sent += chunk.len() as u64;
    }
    Ok(())
}

/// The template's fields: (NetFlow v9 type, length).
const V9_FIELDS: [(u16, u16); 9] = [
    (8, 4),  // IPV4_SRC_ADDR
    (12, 4), // IPV4_DST_ADDR
    (7, 2),  // L4_SRC_PORT
    (11, 2), // L4_DST_PORT
    (4, 1),  // PROTOCOL
    (1, 4),  // IN_BYTES
    (2, 4),  // IN_PKTS
    (22, 4), // FIRST_SWITCHED
    (21, 4), // LAST_SWITCHED
];
const V9_TEMPLATE_ID: u16 = 256;

/// Encodes one NetFlow v9 export packet (RFC 3954) into `buf`: the 20-byte
/// header, optionally the template flowset (id 0), and one data flowset.
/// Record times are exporter uptime: `boot_ms` is when it started.
fn v9_datagram<'a>(
    buf: &mut Vec<u8>,
    export_secs: u32,
    boot_ms: i64,
    sequence: u32,
    with_template: bool,
    flows: impl ExactSizeIterator<Item = &'a Flow>,
) -> Result<()> {
    buf.clear();
    let records = flows.len();
    let count = records + usize::from(with_template);
    let uptime = |unix_ms: i64| -> Result<u32> {
        u32::try_from(unix_ms - boot_ms)
            .map_err(|_| anyhow!("time {unix_ms} is not within 49 days after the exporter's boot"))
    };
    buf.extend_from_slice(&9u16.to_be_bytes());
    buf.extend_from_slice(&u16::try_from(count)?.to_be_bytes());
    // Collectors place a whole-second export time at the middle of its
    // second; the uptime is given for that instant, so record times come
    // back exactly as generated.
    buf.extend_from_slice(&uptime(i64::from(export_secs) * 1000 + 500)?.to_be_bytes());
    buf.extend_from_slice(&export_secs.to_be_bytes());
    buf.extend_from_slice(&sequence.to_be_bytes());
    buf.extend_from_slice(&0u32.to_be_bytes()); // source ID
    if with_template {
        let len = 4 + 4 + 4 * V9_FIELDS.len();
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&(len as u16).to_be_bytes());
        buf.extend_from_slice(&V9_TEMPLATE_ID.to_be_bytes());
        buf.extend_from_slice(&(V9_FIELDS.len() as u16).to_be_bytes());
        for (t, l) in V9_FIELDS {
            buf.extend_from_slice(&t.to_be_bytes());
            buf.extend_from_slice(&l.to_be_bytes());
        }
    }
    let record_len: usize = V9_FIELDS.iter().map(|(_, l)| usize::from(*l)).sum();
    let body = 4 + records * record_len;
    let padded = body.div_ceil(4) * 4;
    buf.extend_from_slice(&V9_TEMPLATE_ID.to_be_bytes());
    buf.extend_from_slice(&u16::try_from(padded)?.to_be_bytes());
    for f in flows {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (f.src.ip(), f.dst.ip()) else {
            bail!("the NetFlow v9 template here carries IPv4 flows only");
        };
        buf.extend_from_slice(&src.octets());
        buf.extend_from_slice(&dst.octets());
        buf.extend_from_slice(&f.src.port().to_be_bytes());
        buf.extend_from_slice(&f.dst.port().to_be_bytes());
        buf.push(f.protocol.number());
        buf.extend_from_slice(&u32::try_from(f.bytes_sent)?.to_be_bytes());
        buf.extend_from_slice(&u32::try_from(f.packets_sent)?.to_be_bytes());
        buf.extend_from_slice(&uptime(f.start_ms)?.to_be_bytes());
        buf.extend_from_slice(&uptime(f.end_ms)?.to_be_bytes());
    }
    buf.resize(buf.len() + (padded - body), 0);
    Ok(())
}

/// A local UDP socket's receive queue and drops, as /proc/net/udp shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UdpSocketState {
    /// Bytes queued (kernel accounting).
    rx_queue: u64,
    /// Datagrams dropped since the socket was opened.
    drops: u64,
}

fn udp_socket(port: u16) -> Option<UdpSocketState> {
    let text = std::fs::read_to_string(Path::new("/proc/net/udp")).ok()?;
    parse_proc_net_udp(&text, port)
}

/// The line of the socket bound to `port`: `local_address` is `IP:PORT` in
/// hex, `tx_queue:rx_queue` in hex, `drops` the last column in decimal.
fn parse_proc_net_udp(text: &str, port: u16) -> Option<UdpSocketState> {
    let want = format!(":{port:04X}");
    text.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        if !cols.get(1)?.ends_with(&want) {
            return None;
        }
        let (_, rx) = cols.get(4)?.split_once(':')?;
        Some(UdpSocketState {
            rx_queue: u64::from_str_radix(rx, 16).ok()?,
            drops: cols.last()?.parse().ok()?,
        })
    })
}

pub fn print(r: &FlowIngestReport) {
    println!(
        "Flow ingest to the store: {} flows between {} workloads (evidence known first), datastore {}",
        r.flows, r.workloads, r.datastore
    );
    let mut t = Table::new(&[
        "path", "stored", "seconds", "flows/s", "vs raw", "target", "verdict",
    ]);
    for (name, p) in [
        ("raw write_flows, 5000/txn (baseline)", &r.raw),
        ("file: IngestFlows, 1000/call", &r.file),
        ("collector: NetFlow v9 over UDP", &r.collector),
    ] {
        let (share, target, v) = match p.share_of_raw {
            Some(s) => (
                format!("{s:.2}x"),
                format!(">= {:.2}x", r.target_share),
                verdict(s >= r.target_share && p.flows_stored == p.flows_sent),
            ),
            None => ("1.00x".into(), String::new(), String::new()),
        };
        t.row(vec![
            name.into(),
            format!("{}/{}", p.flows_stored, p.flows_sent),
            format!("{:.2}", p.seconds),
            num(p.flows_per_sec),
            share,
            target,
            v,
        ]);
    }
    print!("{}", t.render());
    for (name, p) in [("file", &r.file), ("collector", &r.collector)] {
        println!(
            "{name}: {} attributed; refused by the server: {}; kernel socket drops: {}",
            p.attributed, p.rejected, p.socket_drops
        );
    }
}

#[cfg(test)]
#[path = "flow_ingest_tests.rs"]
mod tests;
