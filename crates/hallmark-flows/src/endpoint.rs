//! What an operator reads at each end of a stored flow: a workload with its
//! names and SPIFFE IDs, a node, a named external network, or the reason
//! there is no answer.
//!
//! The attribution engine answers with an [`Owner`] (context, node,
//! container); the server describes that owner from its inventory at the
//! time it stores the flow, so a flow keeps saying who it was even after
//! the workload is gone. [`StoredFlow`] is the flow with both ends
//! described, the row the flow store keeps and every listing prints.

use std::collections::BTreeMap;
use std::fmt;

use hallmark_policy::{Mode, Outcome};
use serde::{Deserialize, Serialize};

use crate::attribution::UnattributedReason;
use crate::flow::{Flow, Protocol};
use crate::owner::Owner;
use crate::verdict::VerdictCounts;

/// A workload as it was when the flow was stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadEndpoint {
    pub context: String,
    pub node: String,
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Kubernetes namespace; empty outside a pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compose_project: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compose_service: String,
    /// Container labels, with the pod's labels over them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The entries on its node whose selectors the workload holds, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spiffe_ids: Vec<String>,
    /// The selectors its agent derived for it (what policy groups match),
    /// sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<String>,
}

/// One end of a stored flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Endpoint {
    Workload(WorkloadEndpoint),
    /// A node's own address: host processes and host-network workloads.
    Node {
        context: String,
        node: String,
        /// The agent's SPIFFE ID.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        spiffe_id: String,
        /// The systemd unit of the host process at this end, when the
        /// reporter of the flow ran on this node and knew it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        unit: String,
    },
    /// No owner, inside an operator-named network.
    External {
        network: String,
    },
    Unattributed {
        reason: UnattributedReason,
    },
}

impl Endpoint {
    /// The endpoint for an owner the inventory no longer describes: its
    /// keys only.
    pub fn bare(owner: &Owner) -> Self {
        match owner {
            Owner::Workload {
                context,
                node,
                container_id,
            } => Endpoint::Workload(WorkloadEndpoint {
                context: context.clone(),
                node: node.clone(),
                container_id: container_id.clone(),
                ..WorkloadEndpoint::default()
            }),
            Owner::Node { context, node } => Endpoint::Node {
                context: context.clone(),
                node: node.clone(),
                spiffe_id: String::new(),
                unit: String::new(),
            },
        }
    }

    /// Whether the end has an owner (workload or node).
    pub fn is_attributed(&self) -> bool {
        matches!(self, Endpoint::Workload(_) | Endpoint::Node { .. })
    }

    /// The SPIFFE IDs this end held: a workload's entries, a node's agent ID.
    pub fn spiffe_ids(&self) -> &[String] {
        match self {
            Endpoint::Workload(w) => &w.spiffe_ids,
            Endpoint::Node { spiffe_id, .. } if !spiffe_id.is_empty() => {
                std::slice::from_ref(spiffe_id)
            }
            _ => &[],
        }
    }

    /// The name this end has under a graph grouping: the unit `flows graph
    /// --by` counts edges between.
    pub fn group_name(&self, by: GraphBy) -> String {
        match self {
            Endpoint::Workload(w) => match by {
                GraphBy::SpiffeId => match w.spiffe_ids.first() {
                    Some(id) => id.clone(),
                    None => format!("workload:{}", workload_name(w)),
                },
                GraphBy::Workload => format!("{}/{}", w.context, workload_name(w)),
                GraphBy::Namespace => {
                    if w.namespace.is_empty() {
                        format!("{}/(no namespace)", w.context)
                    } else {
                        format!("{}/{}", w.context, w.namespace)
                    }
                }
                GraphBy::Service => format!("{}/{}", w.context, service_name(w)),
                GraphBy::Context => format!("context:{}", w.context),
            },
            Endpoint::Node {
                context,
                node,
                spiffe_id,
                ..
            } => match by {
                GraphBy::SpiffeId if !spiffe_id.is_empty() => spiffe_id.clone(),
                GraphBy::Context => format!("context:{context}"),
                _ => format!("node:{context}/{node}"),
            },
            Endpoint::External { network } => format!("external:{network}"),
            Endpoint::Unattributed { reason } => format!("unattributed:{}", reason.as_str()),
        }
    }

    /// The identity this end contributes to the stored graph: everything
    /// `group_name` needs under any grouping, without the per-container
    /// details (container ID, node of a workload, unit of a host process),
    /// so a service restarted a hundred times is one key.
    pub fn graph_key(&self) -> Endpoint {
        match self {
            Endpoint::Workload(w) => Endpoint::Workload(WorkloadEndpoint {
                context: w.context.clone(),
                node: String::new(),
                container_id: String::new(),
                name: workload_name(w),
                image: String::new(),
                namespace: w.namespace.clone(),
                pod: String::new(),
                compose_project: w.compose_project.clone(),
                compose_service: w.compose_service.clone(),
                labels: service_label(w),
                spiffe_ids: w.spiffe_ids.clone(),
                selectors: Vec::new(),
            }),
            Endpoint::Node {
                context,
                node,
                spiffe_id,
                ..
            } => Endpoint::Node {
                context: context.clone(),
                node: node.clone(),
                spiffe_id: spiffe_id.clone(),
                unit: String::new(),
            },
            other => other.clone(),
        }
    }

    /// A stable text form of [`Endpoint::graph_key`], for a store's key
    /// column (serde's field order is the declaration order).
    pub fn graph_key_text(&self) -> String {
        serde_json::to_string(&self.graph_key()).unwrap_or_default()
    }
}

/// A workload's name without the parts that change on every restart: a
/// pod's name without its ReplicaSet/StatefulSet suffix when an `app`
/// label names it, else the container (or pod) name.
fn workload_name(w: &WorkloadEndpoint) -> String {
    if !w.compose_service.is_empty() {
        return format!("{}/{}", w.compose_project, w.compose_service);
    }
    if let Some(app) = app_label(w) {
        return app.to_string();
    }
    if !w.pod.is_empty() {
        return w.pod.clone();
    }
    if !w.name.is_empty() {
        return w.name.clone();
    }
    w.container_id
        .get(..12)
        .unwrap_or(&w.container_id)
        .to_string()
}

fn app_label(w: &WorkloadEndpoint) -> Option<&str> {
    ["app.kubernetes.io/name", "app"]
        .iter()
        .find_map(|k| w.labels.get(*k).map(String::as_str))
}

fn service_label(w: &WorkloadEndpoint) -> BTreeMap<String, String> {
    ["app.kubernetes.io/name", "app"]
        .iter()
        .find_map(|k| w.labels.get(*k).map(|v| ((*k).to_string(), v.clone())))
        .into_iter()
        .collect()
}

/// The service a workload belongs to: its Compose service, its `app`
/// label, else its workload name.
fn service_name(w: &WorkloadEndpoint) -> String {
    if !w.compose_service.is_empty() {
        return w.compose_service.clone();
    }
    match app_label(w) {
        Some(app) => app.to_string(),
        None => workload_name(w),
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Workload(w) => match w.spiffe_ids.first() {
                Some(id) => f.write_str(id),
                None => write!(f, "workload {}/{}", w.context, workload_name(w)),
            },
            Endpoint::Node {
                context,
                node,
                spiffe_id,
                unit,
            } => {
                if spiffe_id.is_empty() {
                    write!(f, "node {context}/{node}")?;
                } else {
                    f.write_str(spiffe_id)?;
                }
                if !unit.is_empty() {
                    write!(f, " ({unit})")?;
                }
                Ok(())
            }
            Endpoint::External { network } => write!(f, "external:{network}"),
            Endpoint::Unattributed { reason } => write!(f, "unattributed ({})", reason.as_str()),
        }
    }
}

/// How a flow as a whole came out, for `--status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowStatus {
    /// Both ends have an owner.
    Attributed,
    /// At least one end has neither an owner nor a network.
    Unattributed,
    /// No end is unattributed and at least one is an external network.
    External,
}

impl FlowStatus {
    pub fn of(src: &Endpoint, dst: &Endpoint) -> Self {
        let unattributed = |e: &Endpoint| matches!(e, Endpoint::Unattributed { .. });
        let external = |e: &Endpoint| matches!(e, Endpoint::External { .. });
        if unattributed(src) || unattributed(dst) {
            FlowStatus::Unattributed
        } else if external(src) || external(dst) {
            FlowStatus::External
        } else {
            FlowStatus::Attributed
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FlowStatus::Attributed => "attributed",
            FlowStatus::Unattributed => "unattributed",
            FlowStatus::External => "external",
        }
    }

    /// Inverse of [`FlowStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "attributed" => Some(FlowStatus::Attributed),
            "unattributed" => Some(FlowStatus::Unattributed),
            "external" => Some(FlowStatus::External),
            _ => None,
        }
    }
}

/// A flow with both ends described: what the flow store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFlow {
    /// The store's ID, increasing in insertion order (0 before it is
    /// stored); `flows list --follow` continues after the last one seen.
    #[serde(default)]
    pub id: i64,
    pub flow: Flow,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub status: FlowStatus,
    /// Server time at which the flow was attributed.
    pub attributed_ms: i64,
    /// What the policy in force when the flow was stored said about it;
    /// absent on flows stored before verdicts existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Outcome>,
    /// The rule that decided, when a rule did (not the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict_rule: Option<String>,
    /// That rule's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict_mode: Option<Mode>,
    /// The policy revision the verdict was decided under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<i64>,
}

impl StoredFlow {
    /// A flow without a verdict yet ([`StoredFlow::with_verdict`] adds it).
    pub fn new(flow: Flow, src: Endpoint, dst: Endpoint, attributed_ms: i64) -> Self {
        let status = FlowStatus::of(&src, &dst);
        StoredFlow {
            id: 0,
            flow,
            src,
            dst,
            status,
            attributed_ms,
            verdict: None,
            verdict_rule: None,
            verdict_mode: None,
            policy_revision: None,
        }
    }
}

/// The unit `flows graph --by` groups endpoints into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GraphBy {
    #[default]
    SpiffeId,
    Workload,
    Namespace,
    Service,
    /// The operator-set context name of the node the end ran on.
    Context,
}

impl GraphBy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "spiffe-id" => Some(GraphBy::SpiffeId),
            "workload" => Some(GraphBy::Workload),
            "namespace" => Some(GraphBy::Namespace),
            "service" => Some(GraphBy::Service),
            "context" => Some(GraphBy::Context),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GraphBy::SpiffeId => "spiffe-id",
            GraphBy::Workload => "workload",
            GraphBy::Namespace => "namespace",
            GraphBy::Service => "service",
            GraphBy::Context => "context",
        }
    }
}

/// Length of one identity-graph bucket.
pub const GRAPH_BUCKET_MS: i64 = 60_000;

/// One identity-graph bucket: per minute, per (source identity,
/// destination identity, destination port, protocol), what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphBucket {
    /// Start of the minute (unix ms, a multiple of [`GRAPH_BUCKET_MS`]).
    pub minute_ms: i64,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub dst_port: u16,
    pub protocol: Protocol,
    pub flows: u64,
    /// Both directions.
    pub bytes: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub refused: u64,
    pub reset: u64,
    /// Flows per verdict.
    #[serde(default)]
    pub verdicts: VerdictCounts,
}

/// One edge of `flows graph`: a sum of buckets between two groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEdge {
    pub src: String,
    pub dst: String,
    pub dst_port: u16,
    pub protocol: Protocol,
    pub flows: u64,
    pub bytes: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub refused: u64,
    pub reset: u64,
    /// Flows per verdict.
    #[serde(default)]
    pub verdicts: VerdictCounts,
    /// The worst verdict of its flows (denied > would-deny > allowed >
    /// no-decision); absent when none of them has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Outcome>,
}

/// Folds stored flows into graph buckets (their minute is the flow's
/// start), one per (minute, src key, dst key, port, protocol).
pub fn buckets_of<'a>(flows: impl IntoIterator<Item = &'a StoredFlow>) -> Vec<GraphBucket> {
    use crate::flow::TcpOutcome;
    let mut map: BTreeMap<(i64, String, String, u16, u8), GraphBucket> = BTreeMap::new();
    for f in flows {
        let minute_ms = f.flow.start_ms.div_euclid(GRAPH_BUCKET_MS) * GRAPH_BUCKET_MS;
        let src = f.src.graph_key();
        let dst = f.dst.graph_key();
        let port = f.flow.dst.port();
        let proto = f.flow.protocol;
        let key = (
            minute_ms,
            serde_json::to_string(&src).unwrap_or_default(),
            serde_json::to_string(&dst).unwrap_or_default(),
            port,
            proto.number(),
        );
        let b = map.entry(key).or_insert_with(|| GraphBucket {
            minute_ms,
            src,
            dst,
            dst_port: port,
            protocol: proto,
            flows: 0,
            bytes: 0,
            first_ms: f.flow.start_ms,
            last_ms: f.flow.end_ms,
            refused: 0,
            reset: 0,
            verdicts: VerdictCounts::default(),
        });
        b.flows += 1;
        if let Some(v) = f.verdict {
            *b.verdicts.slot(v) += 1;
        }
        b.bytes = b
            .bytes
            .saturating_add(f.flow.bytes_sent)
            .saturating_add(f.flow.bytes_received);
        b.first_ms = b.first_ms.min(f.flow.start_ms);
        b.last_ms = b.last_ms.max(f.flow.end_ms);
        match f.flow.outcome {
            Some(TcpOutcome::Refused) => b.refused += 1,
            Some(TcpOutcome::Reset) => b.reset += 1,
            _ => {}
        }
    }
    map.into_values().collect()
}

/// Sums buckets into edges between the groups `by` names, heaviest first
/// (by flows, then bytes, then names).
pub fn edges_of<'a>(
    buckets: impl IntoIterator<Item = &'a GraphBucket>,
    by: GraphBy,
) -> Vec<GraphEdge> {
    let mut map: BTreeMap<(String, String, u16, u8), GraphEdge> = BTreeMap::new();
    for b in buckets {
        let src = b.src.group_name(by);
        let dst = b.dst.group_name(by);
        let key = (src.clone(), dst.clone(), b.dst_port, b.protocol.number());
        let e = map.entry(key).or_insert_with(|| GraphEdge {
            src,
            dst,
            dst_port: b.dst_port,
            protocol: b.protocol,
            flows: 0,
            bytes: 0,
            first_ms: b.first_ms,
            last_ms: b.last_ms,
            refused: 0,
            reset: 0,
            verdicts: VerdictCounts::default(),
            verdict: None,
        });
        e.flows = e.flows.saturating_add(b.flows);
        e.verdicts.add(&b.verdicts);
        e.bytes = e.bytes.saturating_add(b.bytes);
        e.first_ms = e.first_ms.min(b.first_ms);
        e.last_ms = e.last_ms.max(b.last_ms);
        e.refused = e.refused.saturating_add(b.refused);
        e.reset = e.reset.saturating_add(b.reset);
    }
    let mut edges: Vec<GraphEdge> = map.into_values().collect();
    for e in &mut edges {
        e.verdict = e.verdicts.worst();
    }
    edges.sort_by(|a, b| {
        b.flows
            .cmp(&a.flows)
            .then(b.bytes.cmp(&a.bytes))
            .then_with(|| (&a.src, &a.dst, a.dst_port).cmp(&(&b.src, &b.dst, b.dst_port)))
    });
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(context: &str, namespace: &str, id: &str) -> Endpoint {
        Endpoint::Workload(WorkloadEndpoint {
            context: context.into(),
            node: "n1".into(),
            container_id: "c".repeat(64),
            name: "api-1".into(),
            image: "api:1".into(),
            namespace: namespace.into(),
            pod: String::new(),
            compose_project: String::new(),
            compose_service: String::new(),
            labels: BTreeMap::new(),
            spiffe_ids: vec![id.into()],
            selectors: vec![],
        })
    }

    #[test]
    fn every_grouping_reads_back_and_context_names_the_site() {
        for by in [
            GraphBy::SpiffeId,
            GraphBy::Workload,
            GraphBy::Namespace,
            GraphBy::Service,
            GraphBy::Context,
        ] {
            assert_eq!(GraphBy::parse(by.as_str()), Some(by));
        }
        assert_eq!(GraphBy::parse("pod"), None);
        let w = workload("eu-1", "payments", "spiffe://td/api");
        assert_eq!(w.group_name(GraphBy::Context), "context:eu-1");
        assert_eq!(w.group_name(GraphBy::Namespace), "eu-1/payments");
        let node = Endpoint::Node {
            context: "eu-1".into(),
            node: "n1".into(),
            spiffe_id: "spiffe://td/hallmark/agent/n1".into(),
            unit: String::new(),
        };
        assert_eq!(node.group_name(GraphBy::Context), "context:eu-1");
        let far = Endpoint::External {
            network: "corp".into(),
        };
        assert_eq!(far.group_name(GraphBy::Context), "external:corp");
    }
}
