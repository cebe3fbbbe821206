//! The JSON documents of the policy queries (`ListGroups`, `GroupMembers`,
//! `CheckPolicy`, `AuditPolicy`, `DryRunPolicy`, `SuggestPolicy`): requests
//! and answers, the ones `hallmark group …` and `hallmark policy check|
//! audit|dry-run|suggest --json` print.
//!
//! Verdicts are the words `allowed`, `denied`, `would-deny`,
//! `no-decision`; modes `enforce`/`watch`; actions `allow`/`deny`. Flow
//! rows (audit, dry-run examples) are stored flows with `verdict`,
//! `verdict_rule`, `verdict_mode` and `policy_revision` at the top level.

use hallmark_policy::{Action, Block, Mode, Outcome};
use serde::{Deserialize, Serialize};

pub use super::membership::Member;

/// Default `audit` window: the last day.
pub const AUDIT_WINDOW_MS: i64 = 24 * 3_600_000;
/// Default `dry-run` and `suggest` window: the last week.
pub const REVIEW_WINDOW_MS: i64 = 7 * 24 * 3_600_000;

/// `ListGroups` answers an array of these, `any` first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    pub members: usize,
    /// The group's match blocks as the document writes them (none for
    /// `any`).
    pub blocks: Vec<serde_json::Value>,
    /// Rules naming the group in `from` or `to`.
    pub rules: Vec<String>,
}

impl GroupSummary {
    pub fn blocks_of(blocks: &[Block]) -> Vec<serde_json::Value> {
        blocks
            .iter()
            .filter_map(|b| serde_json::to_value(b).ok())
            .collect()
    }
}

/// `GroupMembers`: the group's members (an array of [`Member`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupMembersRequest {
    pub group: String,
}

/// `CheckPolicy`: may `from` reach `to` on `port`?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    /// A SPIFFE ID, a workload (container) ID or prefix, or an IP address.
    pub from: String,
    pub to: String,
    pub port: u32,
    /// `tcp` (the default) or `udp`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The instant an IP address is resolved at (unix ms); now when absent.
    #[serde(default)]
    pub at_ms: Option<i64>,
}

/// What `from` or `to` of a check turned out to be.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckEnd {
    pub input: String,
    /// `spiffe-id`, `workload`, `node` or `address`.
    pub kind: String,
    pub spiffe_ids: Vec<String>,
    /// The groups the end is in (the union over the workloads considered).
    pub groups: Vec<String>,
    /// The workloads or nodes considered for the end.
    pub workloads: Vec<Member>,
    /// How an address was resolved, when the end was given as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

/// The `CheckPolicy` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckAnswer {
    pub verdict: Outcome,
    /// False only for `denied`.
    pub allowed: bool,
    pub rule: Option<String>,
    pub mode: Option<Mode>,
    /// What decided: the rule's action or the default's.
    pub action: Option<Action>,
    /// `rule`, `default` or `nothing`.
    pub decided_by: String,
    pub policy_revision: i64,
    pub protocol: String,
    pub port: u16,
    pub at_ms: i64,
    pub from: CheckEnd,
    pub to: CheckEnd,
}

/// `AuditPolicy`: recorded flows the current policy denies or would deny.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditRequest {
    /// Flows that started at or after (unix ms); a day ago when absent.
    #[serde(default)]
    pub since_ms: Option<i64>,
    #[serde(default)]
    pub until_ms: Option<i64>,
    /// `denied` or `would-deny`; both when absent.
    #[serde(default)]
    pub verdict: Option<String>,
    /// At most this many flows, the newest (default 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `DryRunPolicy`: what a candidate document would change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunRequest {
    /// The candidate's file name, for its diagnostics.
    #[serde(default)]
    pub file: String,
    /// The candidate document (YAML).
    pub document: String,
    /// A week ago when absent.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// Also answer per edge of the identity graph grouped this way
    /// (`edges`), for a map to show which edges change colour.
    #[serde(default)]
    pub edges_by: Option<hallmark_flows::GraphBy>,
}

/// One edge of the identity graph under a dry-run: the worst verdict of
/// its decidable flows under the policy in force and under the candidate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunEdge {
    pub src: String,
    pub dst: String,
    pub dst_port: u16,
    pub protocol: hallmark_flows::Protocol,
    pub flows: u64,
    /// Flows of the edge whose verdict the candidate changes.
    pub changed: u64,
    pub current: Outcome,
    pub candidate: Outcome,
}

/// The `DryRunPolicy` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunAnswer {
    pub current_revision: i64,
    /// Recorded flows policy can decide (both ends attributed, initiator
    /// known, TCP or UDP).
    pub flows_considered: u64,
    /// Flows whose verdict the candidate changes.
    pub changed: u64,
    pub by_rule: Vec<DryRunChange>,
    pub unmatched: DryRunUnmatched,
    /// Per graph edge, when the request named `edges_by`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<DryRunEdge>,
}

/// Flows whose verdict changes the same way, by the same candidate rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunChange {
    /// The candidate's deciding rule; null when its default decides.
    pub rule: Option<String>,
    pub mode: Option<Mode>,
    pub from_verdict: Outcome,
    pub to_verdict: Outcome,
    pub flows: u64,
    /// Up to 10 flow rows, with the candidate's verdict.
    pub examples: Vec<serde_json::Value>,
}

/// Flows no candidate rule matches (its default decides them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DryRunUnmatched {
    pub flows: u64,
    pub examples: Vec<serde_json::Value>,
}

/// `SuggestPolicy`: least-privilege rules from observed flows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SuggestRequest {
    /// A week ago when absent.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// `spiffe-id` (the default), `service` or `namespace`.
    #[serde(default)]
    pub by: Option<String>,
    /// Fewest flows a (pair, port) needs to be allowed (default 1).
    #[serde(default)]
    pub min_flows: Option<u64>,
}

/// The `SuggestPolicy` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuggestAnswer {
    /// The suggested document (YAML, watch mode), ready for `apply`.
    pub document: String,
    pub groups: usize,
    pub rules: usize,
    pub flows_considered: u64,
}
