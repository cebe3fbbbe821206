//! Flow attribution on the server: flows arrive from agents (`ReportFlows`),
//! operators (`IngestFlows`: flow-log files) and NetFlow/IPFIX exporters
//! (the UDP collector); ownership evidence arrives from agents' inventory
//! events and heartbeats. One pipeline task owns the attribution engine,
//! so every decision is made in one place, in order:
//!
//! 1. evidence is written to the datastore and recorded in the in-memory
//!    ownership index (with a datastore shared between servers, every
//!    server records what the datastore holds, its own writes included, by
//!    tailing it: so they all attribute alike);
//! 2. each flow is attributed at once, or held back (and written to the
//!    datastore as pending, so a crash loses no acknowledged flow) until
//!    evidence arrives or the hold-back runs out;
//! 3. attributed flows are described from the inventory (names, images,
//!    SPIFFE IDs as they were) and stored with their identity-graph buckets,
//!    in the same transaction that retires their pending rows.
//!
//! A submitter is answered once its flows are durable: stored or pending.
//! On start the index is rebuilt from the stored evidence and this server's
//! pending flows are taken up again.

mod admin;
pub(crate) mod api;
mod collector;
pub(crate) mod describe;
mod evidence;
mod wire;

mod pipeline;
mod prune;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hallmark_core::TrustDomain;
use hallmark_flows::{Attributor, AttributorConfig, Evidence, Flow, Networks};
use hallmark_store::Store;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::metrics::ServerMetrics;
use crate::ServerError;
use describe::Describer;

pub use admin::{FlowQueries, QueryError};
pub(crate) use evidence::{evidence_from_heartbeat, InventoryIps};
pub(crate) use pipeline::Source;
pub(crate) use wire::flow_from_record;

/// The flow pipeline's settings (server flags).
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// How often agents re-assert ownership (`--ownership-heartbeat`): a
    /// range is proven only by evidence at most twice this apart.
    pub heartbeat: Duration,
    /// How long a flow waits for evidence (`--attribution-holdback`).
    pub holdback: Duration,
    /// The largest clock difference between nodes (`--clock-skew`).
    pub clock_skew: Duration,
    /// Operator-named networks (`--network NAME=CIDR`).
    pub networks: Vec<String>,
    /// How long attributed flows are kept (`--flow-retention`).
    pub flow_retention: Duration,
    /// How long the identity graph is kept (`--graph-retention`).
    pub graph_retention: Duration,
    /// The NetFlow v5/v9 and IPFIX collector (`--flow-collector-listen`).
    pub collector_listen: Option<SocketAddr>,
    /// Most flows held back at once.
    pub max_held: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            heartbeat: Duration::from_secs(10),
            holdback: Duration::from_secs(60),
            clock_skew: Duration::from_millis(500),
            networks: Vec::new(),
            flow_retention: Duration::from_secs(24 * 3600),
            graph_retention: Duration::from_secs(30 * 86_400),
            collector_listen: None,
            max_held: 1_000_000,
        }
    }
}

impl FlowConfig {
    pub(crate) fn attributor(&self) -> Result<Attributor, FlowConfigError> {
        let mut networks = Networks::default();
        for spec in &self.networks {
            networks
                .add_spec(spec)
                .map_err(|e| FlowConfigError::Network(spec.clone(), e))?;
        }
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if self.heartbeat.is_zero() {
            return Err(FlowConfigError::ZeroHeartbeat);
        }
        Ok(Attributor::new(
            AttributorConfig {
                heartbeat_ms: ms(self.heartbeat),
                holdback_ms: ms(self.holdback),
                skew_ms: ms(self.clock_skew),
                max_held: self.max_held.max(1),
            },
            networks,
        ))
    }
}

/// Why the flow settings cannot start a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum FlowConfigError {
    #[error("--network {0}: {1}")]
    Network(String, hallmark_flows::NetworkError),
    #[error("--ownership-heartbeat must be longer than 0")]
    ZeroHeartbeat,
    #[error(
        "flow collector on {addr}: {source} (pick another address with --flow-collector-listen)"
    )]
    Collector {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server ID file {path}: {source}")]
    ServerId {
        path: String,
        source: std::io::Error,
    },
}

/// What one submission carries.
pub(crate) struct Submission {
    pub source: Source,
    pub flows: Vec<Flow>,
    pub evidence: Vec<Evidence>,
    /// Answered once the flows and evidence are durable, with the store's
    /// error otherwise. `None`: nobody waits (the UDP collector).
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// The handle every API uses to feed the pipeline.
#[derive(Clone)]
pub(crate) struct FlowEngine {
    tx: mpsc::Sender<pipeline::Msg>,
    pub attributor: Arc<Mutex<Attributor>>,
    pub counters: Arc<pipeline::Counters>,
    pub inventory_ips: Arc<InventoryIps>,
}

impl FlowEngine {
    /// Queues a submission and waits until it is durable. Fails when the
    /// pipeline is gone (server stopping) or the store refused the write.
    pub async fn submit(
        &self,
        flows: Vec<Flow>,
        evidence: Vec<Evidence>,
        source: Source,
    ) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        let sub = Submission {
            source,
            flows,
            evidence,
            reply: Some(reply),
        };
        self.tx
            .send(pipeline::Msg::Submit(sub))
            .await
            .map_err(|_| "the flow pipeline has stopped".to_string())?;
        rx.await
            .map_err(|_| "the flow pipeline stopped before the write".to_string())?
    }

    /// Queues flows nobody waits for; counts and drops them when the
    /// pipeline is saturated rather than blocking the caller.
    pub fn offer(&self, flows: Vec<Flow>, source: Source) -> bool {
        let n = flows.len() as u64;
        let sub = Submission {
            source,
            flows,
            evidence: Vec::new(),
            reply: None,
        };
        match self.tx.try_send(pipeline::Msg::Submit(sub)) {
            Ok(()) => true,
            Err(_) => {
                self.counters.reject("pipeline-full", n);
                false
            }
        }
    }
}

/// This server's stable name among the servers of one datastore: its
/// pending flows are kept under it.
pub(crate) fn server_id(data_dir: &Path) -> Result<String, FlowConfigError> {
    let path = data_dir.join("server-id");
    let err = |source| FlowConfigError::ServerId {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let id = format!("{:032x}", rand::random::<u128>());
    std::fs::write(&path, &id).map_err(err)?;
    Ok(id)
}

/// What [`start`] needs from the server.
pub(crate) struct FlowStart<'a> {
    pub config: &'a FlowConfig,
    pub store: Arc<dyn Store>,
    pub trust_domain: TrustDomain,
    pub data_dir: &'a Path,
    /// How long evidence is kept: as long as stopped workloads are.
    pub evidence_retention: Duration,
    pub metrics: Arc<ServerMetrics>,
    /// The policy in force, whose verdict every stored flow gets.
    pub policy: Arc<crate::policy::PolicyCell>,
    pub shutdown: watch::Receiver<bool>,
}

/// The running pipeline: its handle, its queries and its tasks.
pub(crate) struct FlowsStarted {
    pub engine: FlowEngine,
    pub queries: FlowQueries,
    pub collector_addr: Option<SocketAddr>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Evidence rows read per page when rebuilding or tailing.
const EVIDENCE_PAGE: usize = 10_000;
/// How often a server on a shared datastore reads the evidence others wrote.
const TAIL_PERIOD: Duration = Duration::from_millis(250);

/// Rebuilds the ownership index from the datastore, takes up pending
/// flows, and starts the pipeline, the evidence tail (shared datastore),
/// the pruner and the collector.
pub(crate) async fn start(s: FlowStart<'_>) -> Result<FlowsStarted, ServerError> {
    let mut attributor = s.config.attributor()?;
    crate::startup::create_private_dir(s.data_dir)?;
    let server_id = server_id(s.data_dir)?;
    let now = pipeline::now_ms();
    let retention_ms = i64::try_from(s.evidence_retention.as_millis()).unwrap_or(i64::MAX);
    let min_at = now.saturating_sub(retention_ms);
    let store_err = |source| ServerError::Store {
        path: s.data_dir.to_path_buf(),
        source,
    };
    let mut last_id = 0;
    let mut rebuilt = 0usize;
    loop {
        let page = s
            .store
            .evidence_after(last_id, min_at, EVIDENCE_PAGE)
            .await
            .map_err(store_err)?;
        let Some((id, _)) = page.last() else { break };
        last_id = *id;
        rebuilt += page.len();
        for (_, e) in &page {
            attributor.record(e);
        }
    }
    let adopt_before = now.saturating_sub(
        i64::try_from(
            (s.config.holdback * 3)
                .max(Duration::from_secs(600))
                .as_millis(),
        )
        .unwrap_or(i64::MAX),
    );
    let pending = s
        .store
        .pending_flows(&server_id, now, adopt_before)
        .await
        .map_err(store_err)?;
    tracing::info!(
        evidence = rebuilt,
        ranges = attributor.index().range_count(),
        pending = pending.len(),
        "ownership index rebuilt from the datastore"
    );
    let attributor = Arc::new(Mutex::new(attributor));
    let counters = Arc::new(pipeline::Counters::default());
    let describer = Describer::new(
        s.store.clone(),
        s.trust_domain.clone(),
        s.evidence_retention,
    );
    let tailing = s.store.shared_between_servers();
    let (tx, rx) = pipeline::channel();
    let engine = FlowEngine {
        tx: tx.clone(),
        attributor: attributor.clone(),
        counters: counters.clone(),
        inventory_ips: Arc::default(),
    };
    let mut p = pipeline::Pipeline::new(
        attributor.clone(),
        s.store.clone(),
        describer.clone(),
        server_id,
        counters,
        s.metrics.clone(),
        tailing,
    );
    p.policy = s.policy.clone();
    // Two ends stamp a connection up to the clock skew apart, plus the
    // time between the connect and the accept.
    p.merge_window_ms = i64::try_from(s.config.clock_skew.as_millis())
        .unwrap_or(i64::MAX)
        .saturating_add(250);
    p.resume(pending).await;
    let mut tasks = vec![tokio::spawn(p.run(rx, s.shutdown.clone()))];
    if tailing {
        tasks.push(tokio::spawn(tail_loop(
            s.store.clone(),
            tx,
            last_id,
            s.shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(prune::prune_loop(
        s.store.clone(),
        attributor,
        s.config.flow_retention,
        s.config.graph_retention,
        s.evidence_retention,
        s.shutdown.clone(),
    )));
    let mut collector_addr = None;
    if let Some(addr) = s.config.collector_listen {
        let socket = collector::bind(addr).await?;
        let bound = socket
            .local_addr()
            .map_err(|source| FlowConfigError::Collector { addr, source })?;
        collector_addr = Some(bound);
        // Like listen.addr: lets tests and scripts use port 0.
        let _ = std::fs::write(s.data_dir.join("flow-collector.addr"), format!("{bound}\n"));
        tracing::info!(listen = %bound, "flow collector (NetFlow v5/v9, IPFIX) listening");
        tasks.push(tokio::spawn(collector::run(
            socket,
            engine.clone(),
            s.metrics.clone(),
            s.shutdown.clone(),
        )));
    }
    let queries = FlowQueries {
        store: s.store.clone(),
        engine: engine.clone(),
        describer,
    };
    Ok(FlowsStarted {
        engine,
        queries,
        collector_addr,
        tasks,
    })
}

/// Reads the evidence every server wrote to the shared datastore and
/// hands it to the pipeline, in ID order.
async fn tail_loop(
    store: Arc<dyn Store>,
    tx: mpsc::Sender<pipeline::Msg>,
    mut last_id: i64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TAIL_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        if !crate::startup::next_tick(&mut tick, &mut shutdown).await {
            return;
        }
        loop {
            match store.evidence_after(last_id, 0, EVIDENCE_PAGE).await {
                Ok(page) => {
                    failing = false;
                    let Some((id, _)) = page.last() else { break };
                    last_id = *id;
                    let full = page.len() == EVIDENCE_PAGE;
                    let ev = page.into_iter().map(|(_, e)| e).collect();
                    if tx.send(pipeline::Msg::Tailed(ev)).await.is_err() {
                        return;
                    }
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "reading ownership evidence from the shared datastore failed; retrying");
                    }
                    failing = true;
                    break;
                }
            }
        }
    }
}
