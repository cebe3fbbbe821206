//! The server side of the workload inventory: validating agents' reports
//! into store types, the admin API's filters and lookups, and the pruner
//! that deletes stopped workloads once the retention window has passed.
//!
//! Reports are untrusted input from a node: everything is checked here,
//! before the datastore sees it, and a refusal names the field, the value
//! and the rule so the agent's log says what to fix.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_core::{SpiffeId, Workload};
use hallmark_proto::convert::WorkloadConvertError;
use hallmark_proto::hallmark as pb;
use hallmark_store::{
    AgentInventory, ImageMatch, InventoryReport, LabelMatch, RuntimeStatus, SnapshotPage,
    StateFilter, Store, StoredWorkload, StoredWorkloadEvent, WorkloadEvent, WorkloadEventKind,
    WorkloadFilter,
};
use tokio::sync::watch;

use crate::metrics::ServerMetrics;

/// Most workload records one report may carry (a snapshot page).
pub const MAX_REPORT_WORKLOADS: usize = 1000;
/// Most lifecycle events one report may carry.
pub const MAX_REPORT_EVENTS: usize = 1000;
/// Longest context name; it is also a DNS-label-sized selector value.
pub const MAX_CONTEXT_NAME_LEN: usize = 63;
/// Shortest container ID prefix `GetWorkload` accepts.
pub const MIN_CONTAINER_PREFIX_LEN: usize = 4;
/// Longest runtime endpoint or version text accepted from an agent.
const MAX_RUNTIME_FIELD_LEN: usize = 256;
/// Longest degradation reason accepted from an agent.
const MAX_RUNTIME_REASON_LEN: usize = 1024;
/// How much of an untrusted value an error message repeats.
const ECHO_LEN: usize = 64;
/// How many matching IDs an ambiguous-prefix error lists.
const MAX_LISTED_MATCHES: usize = 10;
/// Bounds of the pruner's period (a quarter of the retention).
const MIN_PRUNE_PERIOD: Duration = Duration::from_millis(250);
const MAX_PRUNE_PERIOD: Duration = Duration::from_secs(60);

/// Response metadata of `GetWorkload` when other agents or contexts report
/// the same container: their `context agent_id` pairs, comma-separated.
pub const ALSO_REPORTED_BY_HEADER: &str = "hallmark-also-reported-by";

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

/// Why an admin workload request was refused: InvalidArgument, except
/// [`QueryError::NotFound`].
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A filter text that does not parse; `field` names the request field.
    #[error("{field}: {source}")]
    Filter {
        field: String,
        source: hallmark_store::FilterError,
    },
    /// The context filter breaks the context name rule.
    #[error("context_name filter: {0}")]
    Context(ReportError),
    /// The node filter is neither an agent SPIFFE ID nor a node name.
    #[error("node `{node}` is neither an agent SPIFFE ID nor a node name: {reason}")]
    Node { node: String, reason: String },
    /// A container ID (prefix) that is too short or has bad characters.
    #[error("container ID `{0}` must be at least {MIN_CONTAINER_PREFIX_LEN} characters of [A-Za-z0-9._-] (a full ID or a unique prefix)")]
    ContainerPrefix(String),
    /// No visible workload has an ID starting with the prefix.
    #[error("no workload with container ID {0}")]
    NotFound(String),
    /// Several containers match the prefix.
    #[error(
        "container ID prefix `{prefix}` is ambiguous: it matches {matches}; give more characters"
    )]
    Ambiguous { prefix: String, matches: String },
}

/// Repeats at most [`ECHO_LEN`] characters of an untrusted value.
fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_LEN {
        s.to_string()
    } else {
        let head: String = s.chars().take(ECHO_LEN).collect();
        format!("{head}...")
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
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

/// Turns a `ListWorkloads` request into a store filter. `agent_for_node`
/// maps a bare node name to its agent ID.
pub fn parse_filter(
    r: &pb::ListWorkloadsRequest,
    agent_for_node: impl Fn(&str) -> Result<SpiffeId, String>,
) -> Result<WorkloadFilter, QueryError> {
    let given = |s: &str| (!s.is_empty()).then(|| s.to_string());
    if !r.context_name.is_empty() {
        validate_context_name(&r.context_name).map_err(QueryError::Context)?;
    }
    let agent_id = if r.node.is_empty() {
        None
    } else if r.node.starts_with("spiffe://") {
        Some(SpiffeId::new(&r.node).map_err(|e| QueryError::Node {
            node: echo(&r.node),
            reason: e.to_string(),
        })?)
    } else {
        Some(agent_for_node(&r.node).map_err(|reason| QueryError::Node {
            node: echo(&r.node),
            reason,
        })?)
    };
    let filter_err = |field: String| move |source| QueryError::Filter { field, source };
    let image = given(&r.image)
        .map(|i| ImageMatch::parse(&i))
        .transpose()
        .map_err(filter_err("image".into()))?;
    let labels = r
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| LabelMatch::parse(l).map_err(filter_err(format!("labels[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    let state = given(&r.state)
        .map(|s| StateFilter::parse(&s))
        .transpose()
        .map_err(filter_err("state".into()))?;
    Ok(WorkloadFilter {
        context_name: given(&r.context_name),
        agent_id,
        namespace: given(&r.namespace),
        image,
        labels,
        state,
    })
}

/// Checks a `GetWorkload` container ID or prefix.
pub fn validate_container_prefix(prefix: &str) -> Result<(), QueryError> {
    if prefix.len() < MIN_CONTAINER_PREFIX_LEN
        || prefix.len() > hallmark_proto::convert::MAX_CONTAINER_ID_LEN
        || !prefix.chars().all(is_name_char)
    {
        return Err(QueryError::ContainerPrefix(echo(prefix)));
    }
    Ok(())
}

/// Picks the answer to `GetWorkload` among the visible workloads whose ID
/// starts with `prefix`: an exact ID wins over longer ones; several
/// containers are ambiguous. One container reported by several agents or
/// contexts (a container moved with its node's context renamed, or two
/// agents watching one runtime) answers the most recently seen copy; the
/// others are returned second so the caller can say so.
pub fn pick_workload(
    prefix: &str,
    found: Vec<StoredWorkload>,
) -> Result<(StoredWorkload, Vec<StoredWorkload>), QueryError> {
    let exact: Vec<StoredWorkload> = found
        .iter()
        .filter(|s| s.workload.container_id == prefix)
        .cloned()
        .collect();
    let mut candidates = if exact.is_empty() { found } else { exact };
    let mut ids: Vec<&str> = candidates
        .iter()
        .map(|s| s.workload.container_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    match ids.len() {
        0 => return Err(QueryError::NotFound(prefix.to_string())),
        1 => {}
        n => {
            let mut matches = ids
                .iter()
                .take(MAX_LISTED_MATCHES)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if n > MAX_LISTED_MATCHES {
                matches.push_str(&format!(" and {} more", n - MAX_LISTED_MATCHES));
            }
            return Err(QueryError::Ambiguous {
                prefix: prefix.to_string(),
                matches,
            });
        }
    }
    candidates.sort_by(|a, b| {
        (b.stopped_at_ms.is_none(), b.last_seen_ms)
            .cmp(&(a.stopped_at_ms.is_none(), a.last_seen_ms))
    });
    let chosen = candidates.remove(0);
    Ok((chosen, candidates))
}

/// The [`ALSO_REPORTED_BY_HEADER`] value for the other copies.
pub fn also_reported_by(others: &[StoredWorkload]) -> String {
    others
        .iter()
        .map(|s| format!("{} {}", s.context_name, s.agent_id))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn stored_to_pb(s: &StoredWorkload) -> pb::StoredWorkload {
    pb::StoredWorkload {
        context_name: s.context_name.clone(),
        agent_id: s.agent_id.to_string(),
        record: Some(pb::WorkloadRecord::from(&s.workload)),
        first_seen_ms: s.first_seen_ms,
        last_seen_ms: s.last_seen_ms,
        stopped_at_ms: s.stopped_at_ms.unwrap_or(0),
        events: Vec::new(),
    }
}

pub fn event_to_pb(e: &StoredWorkloadEvent) -> pb::WorkloadEvent {
    pb::WorkloadEvent {
        kind: e.kind.as_str().to_string(),
        at_ms: e.at_ms,
        record: Some(pb::WorkloadRecord::from(&e.workload)),
    }
}

/// The runtime status ListAgents shows; `None` until the agent reported one.
pub fn runtime_to_pb(i: &AgentInventory) -> Option<pb::RuntimeStatus> {
    (!i.runtime.runtime.is_empty()).then(|| pb::RuntimeStatus {
        runtime: i.runtime.runtime.clone(),
        endpoint: i.runtime.endpoint.clone(),
        version: i.runtime.version.clone(),
        degraded: i.runtime.degraded,
        reason: i.runtime.reason.clone(),
    })
}

/// Unix milliseconds now, from the system clock.
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How often the pruner runs for `retention`: a quarter of it, so a stopped
/// workload outlives its window by at most a quarter more, within bounds
/// that keep a tiny retention from spinning and a long one from piling up.
pub fn prune_period(retention: Duration) -> Duration {
    (retention / 4).clamp(MIN_PRUNE_PERIOD, MAX_PRUNE_PERIOD)
}

/// Deletes workloads stopped, and events received, more than `retention`
/// before `clock()`, every [`prune_period`], until `shutdown` turns true.
/// A failed pass is logged and retried at the next tick.
pub async fn prune_loop(
    store: Arc<dyn Store>,
    retention: Duration,
    clock: impl Fn() -> i64 + Send,
    metrics: Arc<ServerMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(prune_period(retention));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        let before = hallmark_store::inventory::visible_since_ms(clock(), retention);
        match store.prune_workloads(before).await {
            Ok(p) => {
                metrics.workloads_pruned.inc_by(p.workloads);
                if p.workloads > 0 || p.events > 0 {
                    tracing::debug!(
                        workloads = p.workloads,
                        events = p.events,
                        "pruned stopped workloads and events past the retention window"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning the workload inventory failed; retrying at the next tick")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use hallmark_core::{Confidence, RuntimeSource, WorkloadState};
    use hallmark_store::SqliteStore;

    use super::*;

    fn agent() -> SpiffeId {
        SpiffeId::new("spiffe://example.org/hallmark/agent/n1").unwrap()
    }

    fn record(id: &str) -> pb::WorkloadRecord {
        let mut w = Workload::partial(id, RuntimeSource::Docker, "");
        w.confidence = Confidence::Full;
        w.state = WorkloadState::Running;
        pb::WorkloadRecord::from(&w)
    }

    fn good_report() -> pb::InventoryReport {
        pb::InventoryReport {
            context_name: "prod-eu.1_a".into(),
            snapshot_id: 9,
            page: 0,
            last_page: true,
            workloads: vec![record("c1"), record("c2")],
            events: vec![pb::WorkloadEvent {
                kind: "stopped".into(),
                at_ms: 5,
                record: Some(record("c3")),
            }],
            runtime: Some(pb::RuntimeStatus {
                runtime: "docker".into(),
                endpoint: "/var/run/docker.sock".into(),
                version: "20.10".into(),
                degraded: false,
                reason: String::new(),
            }),
            dropped_events: 2,
        }
    }

    #[test]
    fn a_good_report_converts_whole() {
        let r = parse_report(&agent(), good_report()).unwrap();
        assert_eq!(r.context_name, "prod-eu.1_a");
        let snap = r.snapshot.unwrap();
        assert_eq!((snap.snapshot_id, snap.page, snap.last_page), (9, 0, true));
        assert_eq!(snap.workloads.len(), 2);
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].kind, WorkloadEventKind::Stopped);
        assert_eq!(r.events[0].workload.container_id, "c3");
        assert_eq!(r.runtime.unwrap().endpoint, "/var/run/docker.sock");
        assert_eq!(r.dropped_events, 2);

        let events_only = pb::InventoryReport {
            snapshot_id: 0,
            workloads: vec![],
            runtime: None,
            ..good_report()
        };
        let r = parse_report(&agent(), events_only).unwrap();
        assert!(r.snapshot.is_none() && r.runtime.is_none());
    }

    #[test]
    fn bad_reports_name_the_field_and_rule() {
        type Mutate = Box<dyn Fn(&mut pb::InventoryReport)>;
        let cases: Vec<(Mutate, &str, &[&str])> = vec![
            (
                Box::new(|r| r.context_name.clear()),
                "context_name",
                &["context_name ``", "1 to 63 characters"],
            ),
            (
                Box::new(|r| r.context_name = "a".repeat(64)),
                "context_name",
                &["1 to 63 characters of [A-Za-z0-9._-]"],
            ),
            (
                Box::new(|r| r.context_name = "prod/eu".into()),
                "context_name",
                &["context_name `prod/eu`"],
            ),
            (
                Box::new(|r| r.context_name = "x".repeat(5000) + "/"),
                "context_name",
                &["xxxx...`"],
            ),
            (
                Box::new(|r| r.workloads = vec![record("c"); 1001]),
                "too_many_workloads",
                &["1001 workloads", "limit is 1000"],
            ),
            (
                Box::new(|r| {
                    r.events = vec![
                        pb::WorkloadEvent {
                            kind: "started".into(),
                            at_ms: 1,
                            record: Some(record("c")),
                        };
                        1001
                    ]
                }),
                "too_many_events",
                &["1001 events", "limit is 1000"],
            ),
            (
                Box::new(|r| r.snapshot_id = 0),
                "workloads_without_snapshot",
                &["snapshot_id is 0"],
            ),
            (
                Box::new(|r| r.workloads[1].state = "exploded".into()),
                "bad_workload",
                &["workloads[1]", "`c2`", "field `state`"],
            ),
            (
                Box::new(|r| r.workloads[0].container_id = "a/b".into()),
                "bad_workload",
                &["workloads[0]", "field `container_id`"],
            ),
            (
                Box::new(|r| r.events[0].kind = "paused".into()),
                "bad_event",
                &["events[0]: kind `paused`", "started, updated, stopped"],
            ),
            (
                Box::new(|r| r.events[0].at_ms = 0),
                "bad_event",
                &["events[0]: at_ms 0", "positive"],
            ),
            (
                Box::new(|r| r.events[0].record = None),
                "bad_event",
                &["events[0]: record is missing"],
            ),
            (
                Box::new(|r| {
                    if let Some(rec) = r.events[0].record.as_mut() {
                        rec.source = "lxc".into();
                    }
                }),
                "bad_event",
                &["events[0]", "`c3`", "field `source`"],
            ),
            (
                Box::new(|r| {
                    if let Some(rt) = r.runtime.as_mut() {
                        rt.runtime = "podman".into();
                    }
                }),
                "bad_runtime",
                &["runtime.runtime `podman`"],
            ),
            (
                Box::new(|r| {
                    if let Some(rt) = r.runtime.as_mut() {
                        rt.reason = "r".repeat(2000);
                    }
                }),
                "bad_runtime",
                &["runtime.reason is 2000 bytes", "limit is 1024"],
            ),
        ];
        for (mutate, reason, needles) in cases {
            let mut r = good_report();
            mutate(&mut r);
            let e = parse_report(&agent(), r).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.reason(), reason, "{msg}");
            for n in needles {
                assert!(msg.contains(n), "want `{n}` in: {msg}");
            }
            assert!(msg.len() < 300, "message too long: {msg}");
        }
    }

    #[test]
    fn filters_parse_or_name_the_field() {
        let node = |n: &str| {
            if n.contains('/') {
                Err("must not contain `/`".to_string())
            } else {
                Ok(SpiffeId::new(&format!("spiffe://example.org/hallmark/agent/{n}")).unwrap())
            }
        };
        let f = parse_filter(
            &pb::ListWorkloadsRequest {
                context_name: "prod".into(),
                node: "n1".into(),
                namespace: "payments".into(),
                image: "busybox:1".into(),
                labels: vec!["app=web".into(), "tier".into()],
                state: "current".into(),
            },
            node,
        )
        .unwrap();
        assert_eq!(f.agent_id, Some(agent()));
        assert_eq!(f.labels.len(), 2);
        assert_eq!(f.state, Some(StateFilter::Current));
        let f = parse_filter(
            &pb::ListWorkloadsRequest {
                node: agent().to_string(),
                ..Default::default()
            },
            node,
        )
        .unwrap();
        assert_eq!(f.agent_id, Some(agent()));
        assert_eq!(
            parse_filter(&pb::ListWorkloadsRequest::default(), node).unwrap(),
            WorkloadFilter::default()
        );

        let cases: Vec<(pb::ListWorkloadsRequest, &[&str])> = vec![
            (
                pb::ListWorkloadsRequest {
                    state: "gone".into(),
                    ..Default::default()
                },
                &["state: state `gone` is not one of current"],
            ),
            (
                pb::ListWorkloadsRequest {
                    labels: vec!["a=b".into(), "=x".into()],
                    ..Default::default()
                },
                &["labels[1]: label `=x` has an empty key"],
            ),
            (
                pb::ListWorkloadsRequest {
                    image: "a b".into(),
                    ..Default::default()
                },
                &["image: image `a b`"],
            ),
            (
                pb::ListWorkloadsRequest {
                    context_name: "a b".into(),
                    ..Default::default()
                },
                &["context_name filter: context_name `a b`"],
            ),
            (
                pb::ListWorkloadsRequest {
                    node: "spiffe://Bad/x".into(),
                    ..Default::default()
                },
                &["node `spiffe://Bad/x`"],
            ),
            (
                pb::ListWorkloadsRequest {
                    node: "a/b".into(),
                    ..Default::default()
                },
                &["node `a/b`", "must not contain `/`"],
            ),
        ];
        for (req, needles) in cases {
            let msg = parse_filter(&req, node).unwrap_err().to_string();
            for n in needles {
                assert!(msg.contains(n), "want `{n}` in: {msg}");
            }
        }
    }

    fn stored(id: &str, ctx: &str, last_seen_ms: i64, stopped: bool) -> StoredWorkload {
        let mut w = Workload::partial(id, RuntimeSource::Docker, "");
        w.state = WorkloadState::Running;
        StoredWorkload {
            context_name: ctx.into(),
            agent_id: agent(),
            workload: w,
            first_seen_ms: 0,
            last_seen_ms,
            stopped_at_ms: stopped.then_some(last_seen_ms),
        }
    }

    #[test]
    fn picking_a_workload_by_prefix() {
        let err = pick_workload("abcd", vec![]).unwrap_err();
        assert!(matches!(err, QueryError::NotFound(_)), "{err}");

        let (one, others) = pick_workload("abcd", vec![stored("abcd1", "p", 1, false)]).unwrap();
        assert_eq!(one.workload.container_id, "abcd1");
        assert!(others.is_empty());

        let err = pick_workload(
            "abcd",
            vec![
                stored("abcd1", "p", 1, false),
                stored("abcd2", "p", 1, false),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`abcd` is ambiguous: it matches abcd1, abcd2; give more characters"),
            "{err}"
        );

        // An exact ID wins over longer IDs it is a prefix of.
        let (one, _) = pick_workload(
            "abcd1",
            vec![
                stored("abcd1", "p", 1, false),
                stored("abcd12", "p", 1, false),
            ],
        )
        .unwrap();
        assert_eq!(one.workload.container_id, "abcd1");

        // One container under two contexts: the current, most recent copy.
        let (one, others) = pick_workload(
            "abcd",
            vec![
                stored("abcd1", "a", 50, true),
                stored("abcd1", "b", 10, false),
                stored("abcd1", "c", 20, false),
            ],
        )
        .unwrap();
        assert_eq!(one.context_name, "c");
        assert_eq!(others.len(), 2);
        let header = also_reported_by(&others);
        assert!(
            header.contains("b spiffe://example.org/hallmark/agent/n1")
                && header.contains("a spiffe://"),
            "{header}"
        );

        let many: Vec<StoredWorkload> = (0..15)
            .map(|i| stored(&format!("abcd{i:02}"), "p", 1, false))
            .collect();
        let err = pick_workload("abcd", many).unwrap_err().to_string();
        assert!(err.contains("and 5 more"), "{err}");
    }

    #[test]
    fn container_prefixes() {
        for good in ["abcd", "0123456789ab", "a.b_c-d"] {
            validate_container_prefix(good).unwrap();
        }
        for bad in ["abc", "", "ab/cd", "abcd%", &"a".repeat(129)] {
            let msg = validate_container_prefix(bad).unwrap_err().to_string();
            assert!(msg.contains("at least 4 characters"), "{msg}");
        }
    }

    #[test]
    fn prune_period_is_a_bounded_quarter() {
        let ms = Duration::from_millis;
        assert_eq!(prune_period(ms(100)), ms(250));
        assert_eq!(prune_period(ms(4_000)), ms(1_000));
        assert_eq!(
            prune_period(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }

    /// Real time (sqlx's pool timeouts do not survive paused time), but
    /// the pruner's notion of now comes from the injected clock.
    #[tokio::test]
    async fn the_pruner_deletes_what_ages_out() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let mut stopped = Workload::partial("gone1", RuntimeSource::Docker, "");
        stopped.state = WorkloadState::Stopped;
        let report = InventoryReport {
            agent_id: agent(),
            context_name: "p".into(),
            snapshot: None,
            events: vec![WorkloadEvent {
                kind: WorkloadEventKind::Stopped,
                at_ms: 10_000,
                workload: stopped,
            }],
            runtime: None,
            dropped_events: 0,
        };
        store.apply_inventory(&report, 10_000).await.unwrap();

        // A 1 s retention: the pruner runs every 250 ms.
        let retention = Duration::from_secs(1);
        let now = Arc::new(AtomicI64::new(10_000));
        let clock = {
            let now = now.clone();
            move || now.load(Ordering::SeqCst)
        };
        let metrics = Arc::new(ServerMetrics::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(prune_loop(
            store.clone(),
            retention,
            clock,
            metrics.clone(),
            stop_rx,
        ));
        let stored = || async {
            store
                .list_workloads(&WorkloadFilter::default(), 0, Duration::MAX)
                .await
                .unwrap()
                .len()
        };
        // At the window's edge, several passes delete nothing.
        now.store(11_000, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(stored().await, 1);
        assert_eq!(metrics.workloads_pruned.get(), 0);
        // Past it, the next pass deletes the workload and its event.
        now.store(11_001, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while stored().await > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pruner did not delete the expired workload"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(store.workload_events("gone1").await.unwrap().is_empty());
        assert_eq!(metrics.workloads_pruned.get(), 1);

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }
}
