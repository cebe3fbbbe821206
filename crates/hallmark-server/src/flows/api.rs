//! The node and admin API calls that feed the pipeline: agents' flow
//! batches and heartbeats, evidence from inventory reports, and operators'
//! flow-log ingestion. Each answers once what it sent is durable.

use hallmark_core::SpiffeId;
use hallmark_flows::{Evidence, EvidenceKind, Flow, Owner, OwnershipKey, Reporter};
use hallmark_proto::hallmark as pb;
use hallmark_store::inventory::InventoryReport;
use tonic::Status;

use super::pipeline::{now_ms, Source};
use super::{evidence_from_heartbeat, flow_from_record, FlowEngine};
use crate::metrics::ServerMetrics;

/// Most flows one batch (node API) or one ingest call (admin API) carries.
pub(crate) const MAX_FLOWS_PER_CALL: usize = 10_000;
/// Refusals listed in an ingest answer.
const MAX_LISTED_ERRORS: usize = 100;

fn node_of(agent: &SpiffeId) -> String {
    agent.agent_node().unwrap_or_default().to_string()
}

/// The evidence a locally tagged flow is: its owner held its local
/// address when it started.
///
/// Not for loopback addresses: every network namespace has its own, so
/// `127.0.0.1` held by one container says nothing about another's.
fn local_evidence(f: &Flow) -> Option<Evidence> {
    let local = f.local.as_ref()?;
    let addr = f.addr(local.side);
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        return None;
    }
    Some(Evidence {
        key: if local.by_port {
            OwnershipKey::port(addr.ip(), addr.port())
        } else {
            OwnershipKey::ip(addr.ip())
        },
        owner: local.owner.clone(),
        at_ms: f.start_ms,
        kind: EvidenceKind::LocalFlow,
    })
}

/// `ReportFlows` from an authorized agent.
pub(crate) async fn report_flows(
    engine: &FlowEngine,
    metrics: &ServerMetrics,
    agent: &SpiffeId,
    batch: pb::FlowBatch,
) -> Result<pb::FlowAck, Status> {
    crate::inventory::validate_context_name(&batch.context_name)
        .map_err(|e| Status::invalid_argument(format!("flow batch: {e}")))?;
    if batch.flows.len() > MAX_FLOWS_PER_CALL {
        metrics.flow_rejected("batch-too-large", batch.flows.len() as u64);
        return Err(Status::invalid_argument(format!(
            "flow batch of {} flows (at most {MAX_FLOWS_PER_CALL}): send smaller batches",
            batch.flows.len()
        )));
    }
    let node = node_of(agent);
    let context = &batch.context_name;
    let mut flows = Vec::with_capacity(batch.flows.len());
    let mut rejected = 0u32;
    for rec in &batch.flows {
        let owner = |cid: &str| {
            Some(if cid.is_empty() {
                Owner::Node {
                    context: context.clone(),
                    node: node.clone(),
                }
            } else {
                Owner::Workload {
                    context: context.clone(),
                    node: node.clone(),
                    container_id: cid.to_string(),
                }
            })
        };
        match flow_from_record(rec, Reporter::Agent(node.clone()), owner) {
            Ok(f) => flows.push(f),
            Err(e) => {
                rejected += 1;
                engine.counters.reject(e.reason(), 1);
                metrics.flow_rejected(e.reason(), 1);
                tracing::debug!(agent = %agent, error = %e, "flow record refused");
            }
        }
    }
    let evidence = flows.iter().filter_map(local_evidence).collect();
    engine
        .submit(flows, evidence, Source::Agent)
        .await
        .map_err(Status::unavailable)?;
    Ok(pb::FlowAck {
        batch_id: batch.batch_id,
        rejected,
    })
}

/// `Heartbeat` from an authorized agent.
pub(crate) async fn heartbeat(
    engine: &FlowEngine,
    metrics: &ServerMetrics,
    agent: &SpiffeId,
    hb: pb::OwnershipHeartbeat,
) -> Result<pb::HeartbeatAck, Status> {
    let evidence = evidence_from_heartbeat(&node_of(agent), &hb, now_ms()).map_err(|e| {
        metrics.flow_rejected(&format!("heartbeat-{}", e.reason()), 1);
        tracing::warn!(agent = %agent, error = %e, "ownership heartbeat refused");
        Status::invalid_argument(format!("ownership heartbeat: {e}"))
    })?;
    engine
        .submit(Vec::new(), evidence, Source::Agent)
        .await
        .map_err(Status::unavailable)?;
    metrics.ownership_heartbeats.inc();
    Ok(pb::HeartbeatAck {})
}

/// The ownership evidence in an accepted inventory report. A failure to
/// record it is logged: the inventory itself is already stored.
pub(crate) async fn inventory_evidence(
    engine: &FlowEngine,
    agent: &SpiffeId,
    report: &InventoryReport,
) {
    let evidence = engine.inventory_ips.evidence(&node_of(agent), report);
    if evidence.is_empty() {
        return;
    }
    if let Err(e) = engine.submit(Vec::new(), evidence, Source::Agent).await {
        tracing::warn!(agent = %agent, error = %e, "recording ownership evidence from an inventory report failed");
    }
}

/// `IngestFlows`: flow-log records an operator sends, reported by the file
/// they came from.
pub(crate) async fn ingest(
    engine: &FlowEngine,
    metrics: &ServerMetrics,
    req: pb::IngestFlowsRequest,
) -> Result<pb::IngestFlowsResponse, Status> {
    let source = req.source.trim();
    if source.is_empty() || source.len() > 512 || source.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "ingest: source must name the file the flows came from (1-512 printable characters, `-` for standard input)",
        ));
    }
    if req.flows.len() > MAX_FLOWS_PER_CALL {
        return Err(Status::invalid_argument(format!(
            "ingest: {} flows in one call (at most {MAX_FLOWS_PER_CALL}): send smaller batches",
            req.flows.len()
        )));
    }
    let mut flows = Vec::with_capacity(req.flows.len());
    let mut rejected = 0u64;
    let mut errors = Vec::new();
    for (i, rec) in req.flows.iter().enumerate() {
        let result = flow_from_record(rec, Reporter::File(source.to_string()), |_| None)
            .map_err(|e| (e.reason(), e.to_string()));
        match result {
            Ok(f) => flows.push(f),
            Err((reason, msg)) => {
                rejected += 1;
                engine.counters.reject(reason, 1);
                metrics.flow_rejected(reason, 1);
                if errors.len() < MAX_LISTED_ERRORS {
                    errors.push(format!("flow {i}: {msg}"));
                }
            }
        }
    }
    let accepted = flows.len() as u64;
    engine
        .submit(flows, Vec::new(), Source::File)
        .await
        .map_err(Status::unavailable)?;
    Ok(pb::IngestFlowsResponse {
        accepted,
        rejected,
        errors,
    })
}
