//! The admin API's workload requests: filters parsed into the store's
//! form, container ID prefixes resolved, stored records turned into wire
//! messages.

use hallmark_core::SpiffeId;
use hallmark_proto::hallmark as pb;
use hallmark_store::{
    AgentInventory, ImageMatch, LabelMatch, StateFilter, StoredWorkload, StoredWorkloadEvent,
    WorkloadFilter,
};

use super::{echo, is_name_char, validate_context_name, ReportError, MIN_CONTAINER_PREFIX_LEN};

/// How many matching IDs an ambiguous-prefix error lists.
const MAX_LISTED_MATCHES: usize = 10;
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

/// The [`ALSO_REPORTED_BY_HEADER`](super::ALSO_REPORTED_BY_HEADER) value for the other copies.
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
