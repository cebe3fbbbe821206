//! The flow reporter: flows from the sink are gathered into batches (full
//! at `batch_max`, or whatever came within `batch_interval`), each batch
//! gets an ID and goes into the spool, and the spool's oldest batch is
//! sent with `Node.ReportFlows`. A batch leaves the spool only when the
//! server acknowledges its ID, so a failed or timed-out call is resent
//! with the same ID (the server may have stored it: the ID lets it tell a
//! resend from a new batch). One call at a time keeps batches in order.
//!
//! Receiving from the sink never waits for the server: calls run beside
//! it, and while the server is away flows pile up in the spool, not in
//! the sink. The spool is bounded by flow count; what does not fit is
//! dropped and counted (`spool-full`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hallmark_flows::Flow;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_client::NodeClient;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::{reason, to_record, FlowConfig, Shared};

/// A ReportFlows call that takes longer than this is treated as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One batch waiting for its acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledBatch {
    pub id: u64,
    pub flows: Vec<pb::FlowRecord>,
}

/// The batches not yet acknowledged, oldest first, bounded by the number
/// of flows they hold.
#[derive(Debug)]
pub struct Spool {
    batches: VecDeque<SpooledBatch>,
    flows: usize,
    capacity: usize,
    next_id: u64,
}

impl Spool {
    /// An empty spool for up to `capacity` flows. Batch IDs count up from
    /// `first_id` (0 is skipped: the wire reserves no meaning for it, but
    /// an unset field reads as 0).
    pub fn new(capacity: usize, first_id: u64) -> Self {
        Spool {
            batches: VecDeque::new(),
            flows: 0,
            capacity: capacity.max(1),
            next_id: first_id.max(1),
        }
    }

    /// Adds `flows` as one new batch, as far as they fit. Returns the
    /// number of flows dropped for lack of room (the newest ones: what is
    /// spooled already keeps its place and its order).
    pub fn push(&mut self, mut flows: Vec<pb::FlowRecord>) -> usize {
        let room = self.capacity.saturating_sub(self.flows);
        let dropped = flows.len().saturating_sub(room);
        flows.truncate(room);
        if !flows.is_empty() {
            self.flows += flows.len();
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            self.batches.push_back(SpooledBatch { id, flows });
        }
        dropped
    }

    /// The batch to send next.
    pub fn front(&self) -> Option<&SpooledBatch> {
        self.batches.front()
    }

    /// Removes the oldest batch if `id` is its ID; false otherwise (an
    /// acknowledgement of anything else removes nothing).
    pub fn ack(&mut self, id: u64) -> bool {
        match self.batches.front() {
            Some(b) if b.id == id => {
                self.flows -= b.flows.len();
                self.batches.pop_front();
                true
            }
            _ => false,
        }
    }

    pub fn batches(&self) -> usize {
        self.batches.len()
    }

    pub fn flows(&self) -> usize {
        self.flows
    }
}

type Call = Pin<Box<dyn Future<Output = Result<pb::FlowAck, tonic::Status>> + Send>>;

/// The reporter task.
pub(super) async fn run(
    shared: Arc<Shared>,
    config: FlowConfig,
    mut rx: mpsc::Receiver<Flow>,
    mut client: watch::Receiver<Option<NodeClient<Channel>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let batch_max = config.batch_max.max(1);
    let mut spool = Spool::new(config.spool_capacity, rand::thread_rng().gen());
    let mut pending: Vec<pb::FlowRecord> = Vec::with_capacity(batch_max);
    let mut buf: Vec<Flow> = Vec::with_capacity(batch_max);
    let mut tick = tokio::time::interval(config.batch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut call: Option<(u64, usize, Call)> = None;
    let mut retry_at: Option<Instant> = None;
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    let mut watching = true;
    let mut receiving = true;

    loop {
        if call.is_none() && retry_at.is_none() {
            let node = client.borrow().clone();
            if let (Some(batch), Some(mut node)) = (spool.front(), node) {
                let req = pb::FlowBatch {
                    context_name: shared.context_name.clone(),
                    batch_id: batch.id,
                    flows: batch.flows.clone(),
                    dropped_flows: shared.dropped(),
                };
                let fut: Call = Box::pin(async move {
                    match tokio::time::timeout(CALL_TIMEOUT, node.report_flows(req)).await {
                        Ok(r) => r.map(tonic::Response::into_inner),
                        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                            "ReportFlows: no answer within {CALL_TIMEOUT:?}"
                        ))),
                    }
                });
                call = Some((batch.id, batch.flows.len(), fut));
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                // What was never acknowledged is lost with the process;
                // say how much.
                let lost = spool.flows() + pending.len() + rx.len();
                shared.drop_flows(reason::SHUTDOWN, lost as u64);
                rx.close();
                return;
            }
            r = async { match call.as_mut() { Some((_, _, f)) => f.await, None => std::future::pending().await } } => {
                let Some((id, n, _)) = call.take() else { continue };
                match r.and_then(|ack| check_ack(id, ack)) {
                    Ok(ack) => {
                        spool.ack(id);
                        let rejected = (ack.rejected as usize).min(n);
                        shared.metrics.flow_batches_sent.inc();
                        shared.metrics.flows_reported.inc_by((n - rejected) as u64);
                        shared.metrics.flows_rejected.inc_by(rejected as u64);
                        if failing {
                            tracing::info!("flow reports reach the server again");
                        }
                        failing = false;
                        backoff = MIN_BACKOFF;
                    }
                    Err(status) => {
                        shared.metrics.flow_batches_failed.inc();
                        if !failing {
                            tracing::warn!(error = %status, spooled = spool.flows(), "reporting flows failed; batches stay spooled and are resent");
                        }
                        failing = true;
                        retry_at = Some(Instant::now() + backoff.mul_f64(rand::thread_rng().gen_range(0.8..1.2)));
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                shared.set_spool_depth(spool.batches(), spool.flows());
            }
            _ = async { match retry_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                retry_at = None;
            }
            changed = client.changed(), if watching => match changed {
                // A new connection: try it now rather than after the backoff.
                Ok(()) => {
                    retry_at = None;
                    backoff = MIN_BACKOFF;
                }
                Err(_) => watching = false,
            },
            got = rx.recv_many(&mut buf, batch_max - pending.len()), if receiving => {
                if got == 0 {
                    // Every sink is gone: nothing more will come.
                    receiving = false;
                }
                pending.extend(buf.drain(..).map(|f| to_record(&f)));
                if pending.len() >= batch_max {
                    seal(&shared, &mut spool, &mut pending, batch_max);
                }
            }
            _ = tick.tick() => {
                if !pending.is_empty() {
                    seal(&shared, &mut spool, &mut pending, batch_max);
                }
            }
        }
    }
}

/// Moves the pending flows into the spool as one batch.
fn seal(shared: &Shared, spool: &mut Spool, pending: &mut Vec<pb::FlowRecord>, batch_max: usize) {
    let flows = std::mem::replace(pending, Vec::with_capacity(batch_max));
    let dropped = spool.push(flows);
    if dropped > 0 {
        shared.drop_flows(reason::SPOOL_FULL, dropped as u64);
        tracing::debug!(
            dropped,
            spooled = spool.flows(),
            "flow spool full: newest flows dropped"
        );
    }
    shared.set_spool_depth(spool.batches(), spool.flows());
}

/// An acknowledgement must name the batch that was sent.
fn check_ack(sent: u64, ack: pb::FlowAck) -> Result<pb::FlowAck, tonic::Status> {
    if ack.batch_id == sent {
        Ok(ack)
    } else {
        Err(tonic::Status::internal(format!(
            "ReportFlows: sent batch {sent}, the server acknowledged batch {}",
            ack.batch_id
        )))
    }
}
