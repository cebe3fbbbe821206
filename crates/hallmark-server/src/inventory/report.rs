//! Agents' inventory reports, validated into the store's form. A report is
//! untrusted input from a node; it is refused whole at the first broken
//! rule.

use hallmark_core::{SpiffeId, Workload};
use hallmark_proto::convert::WorkloadConvertError;
use hallmark_proto::hallmark as pb;
use hallmark_store::{
    InventoryReport, RuntimeStatus, SnapshotPage, WorkloadEvent, WorkloadEventKind,
};

use super::{echo, is_name_char, MAX_CONTEXT_NAME_LEN, MAX_REPORT_EVENTS, MAX_REPORT_WORKLOADS};

/// Longest runtime endpoint or version text accepted from an agent.
const MAX_RUNTIME_FIELD_LEN: usize = 256;
/// Longest degradation reason accepted from an agent.
const MAX_RUNTIME_REASON_LEN: usize = 1024;
/// Why a report was refused. Every variant becomes InvalidArgument.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The context name is empty, too long or has other characters.
    #[error("context_name `{0}` must be 1 to {MAX_CONTEXT_NAME_LEN} characters of [A-Za-z0-9._-]")]
    ContextName(String),
    /// More workload records than one report may carry.
    #[error("report carries {0} workloads; the limit is {MAX_REPORT_WORKLOADS} per report (send more snapshot pages)")]
    TooManyWorkloads(usize),
    /// More events than one report may carry.
    #[error("report carries {0} events; the limit is {MAX_REPORT_EVENTS} per report")]
    TooManyEvents(usize),
    /// Workload records outside a snapshot (`snapshot_id` 0).
    #[error("report carries {0} workloads but snapshot_id is 0: workload records travel only in snapshot pages")]
    WorkloadsWithoutSnapshot(usize),
    /// A snapshot record that does not convert into a workload.
    #[error("workloads[{index}]: {source}")]
    BadWorkload {
        index: usize,
        source: WorkloadConvertError,
    },
    /// An event without its record.
    #[error("events[{0}]: record is missing")]
    MissingEventRecord(usize),
    /// An event record that does not convert into a workload.
    #[error("events[{index}]: {source}")]
    BadEventRecord {
        index: usize,
        source: WorkloadConvertError,
    },
    /// An event kind other than started, updated or stopped.
    #[error("events[{index}]: kind `{kind}` is not one of started, updated, stopped")]
    BadEventKind { index: usize, kind: String },
    /// An event time that is not a positive unix time in milliseconds.
    #[error("events[{index}]: at_ms {at_ms} must be a positive unix time in milliseconds")]
    BadEventTime { index: usize, at_ms: i64 },
    /// A runtime name other than docker, cri or none.
    #[error("runtime.runtime `{0}` is not one of docker, cri, none")]
    RuntimeName(String),
    /// A runtime status text longer than its limit.
    #[error("runtime.{field} is {len} bytes long; the limit is {limit}")]
    RuntimeFieldTooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
}

impl ReportError {
    /// The `reason` label of the rejected-reports metric.
    pub fn reason(&self) -> &'static str {
        match self {
            ReportError::ContextName(_) => "context_name",
            ReportError::TooManyWorkloads(_) => "too_many_workloads",
            ReportError::TooManyEvents(_) => "too_many_events",
            ReportError::WorkloadsWithoutSnapshot(_) => "workloads_without_snapshot",
            ReportError::BadWorkload { .. } => "bad_workload",
            ReportError::MissingEventRecord(_)
            | ReportError::BadEventRecord { .. }
            | ReportError::BadEventKind { .. }
            | ReportError::BadEventTime { .. } => "bad_event",
            ReportError::RuntimeName(_) | ReportError::RuntimeFieldTooLong { .. } => "bad_runtime",
        }
    }
}

/// Checks a context name: 1 to 63 characters of `[A-Za-z0-9._-]`.
pub fn validate_context_name(name: &str) -> Result<(), ReportError> {
    if name.is_empty() || name.len() > MAX_CONTEXT_NAME_LEN || !name.chars().all(is_name_char) {
        return Err(ReportError::ContextName(echo(name)));
    }
    Ok(())
}

/// Turns a wire report from `agent` into the store's form, refusing it
/// whole at the first broken rule.
pub fn parse_report(
    agent: &SpiffeId,
    r: pb::InventoryReport,
) -> Result<InventoryReport, ReportError> {
    validate_context_name(&r.context_name)?;
    if r.workloads.len() > MAX_REPORT_WORKLOADS {
        return Err(ReportError::TooManyWorkloads(r.workloads.len()));
    }
    if r.events.len() > MAX_REPORT_EVENTS {
        return Err(ReportError::TooManyEvents(r.events.len()));
    }
    if r.snapshot_id == 0 && !r.workloads.is_empty() {
        return Err(ReportError::WorkloadsWithoutSnapshot(r.workloads.len()));
    }
    let workloads = r
        .workloads
        .iter()
        .enumerate()
        .map(|(index, w)| {
            Workload::try_from(w).map_err(|source| ReportError::BadWorkload { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let events = r
        .events
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let kind =
                WorkloadEventKind::parse(&e.kind).ok_or_else(|| ReportError::BadEventKind {
                    index,
                    kind: echo(&e.kind),
                })?;
            if e.at_ms <= 0 {
                return Err(ReportError::BadEventTime {
                    index,
                    at_ms: e.at_ms,
                });
            }
            let record = e
                .record
                .as_ref()
                .ok_or(ReportError::MissingEventRecord(index))?;
            let workload = Workload::try_from(record)
                .map_err(|source| ReportError::BadEventRecord { index, source })?;
            Ok(WorkloadEvent {
                kind,
                at_ms: e.at_ms,
                workload,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = r.runtime.as_ref().map(parse_runtime).transpose()?;
    let snapshot = (r.snapshot_id != 0).then_some(SnapshotPage {
        snapshot_id: r.snapshot_id,
        page: r.page,
        last_page: r.last_page,
        workloads,
    });
    Ok(InventoryReport {
        agent_id: agent.clone(),
        context_name: r.context_name,
        snapshot,
        events,
        runtime,
        dropped_events: r.dropped_events,
    })
}

fn parse_runtime(r: &pb::RuntimeStatus) -> Result<RuntimeStatus, ReportError> {
    if !matches!(r.runtime.as_str(), "docker" | "cri" | "none") {
        return Err(ReportError::RuntimeName(echo(&r.runtime)));
    }
    for (field, value, limit) in [
        ("endpoint", &r.endpoint, MAX_RUNTIME_FIELD_LEN),
        ("version", &r.version, MAX_RUNTIME_FIELD_LEN),
        ("reason", &r.reason, MAX_RUNTIME_REASON_LEN),
    ] {
        if value.len() > limit {
            return Err(ReportError::RuntimeFieldTooLong {
                field,
                len: value.len(),
                limit,
            });
        }
    }
    Ok(RuntimeStatus {
        runtime: r.runtime.clone(),
        endpoint: r.endpoint.clone(),
        version: r.version.clone(),
        degraded: r.degraded,
        reason: r.reason.clone(),
    })
}
