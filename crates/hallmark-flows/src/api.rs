//! The JSON documents of the admin API's flow queries (`ListFlows`,
//! `FlowGraph`, `Whois`, `FlowStats`): what `hallmark flows … --json`
//! prints and what a console reads. A list answer is a JSON array of
//! [`crate::StoredFlow`]; the others are below.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, GraphBy, GraphEdge};
use crate::ownership::{EvidenceKind, OwnershipKey};

/// `FlowGraph` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphRequest {
    pub since_ms: i64,
    #[serde(default)]
    pub until_ms: Option<i64>,
    #[serde(default)]
    pub by: GraphBy,
}

/// `FlowGraph` answer: edges heaviest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphAnswer {
    pub since_ms: i64,
    pub until_ms: Option<i64>,
    pub by: GraphBy,
    pub edges: Vec<GraphEdge>,
}

/// `Whois` request: who held `ip` at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoisRequest {
    pub ip: IpAddr,
    pub at_ms: i64,
}

/// The index's answer, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhoisVerdict {
    /// One owner, proven on both sides of the instant.
    Owned,
    /// Two owners are proven within the clock skew of the instant.
    Ambiguous,
    /// Evidence for the address continues past the instant and none of it
    /// holds the instant.
    NoOwner,
    /// The evidence does not reach past the instant yet.
    Pending,
    /// No evidence was ever recorded for the address (in the window the
    /// server keeps).
    Unknown,
}

/// One proven time range of one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoisRange {
    pub key: OwnershipKey,
    pub owner: Endpoint,
    pub first_ms: i64,
    pub last_ms: i64,
    /// A start event opened the range.
    pub started: bool,
    /// A stop event closed it.
    pub stopped: bool,
    /// Evidence points in it.
    pub points: u32,
}

/// One piece of evidence as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoisEvidence {
    pub key: OwnershipKey,
    pub owner: Endpoint,
    pub at_ms: i64,
    pub kind: EvidenceKind,
}

/// `Whois` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoisAnswer {
    pub ip: IpAddr,
    pub at_ms: i64,
    pub verdict: WhoisVerdict,
    /// The owner when the verdict is `owned`; both when `ambiguous`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<Endpoint>,
    /// An operator-named network holding the address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Why, in a sentence an operator can act on.
    pub explanation: String,
    /// The ranges of this address (and its ports) near the instant.
    pub ranges: Vec<WhoisRange>,
    /// The evidence near the instant, oldest first.
    pub evidence: Vec<WhoisEvidence>,
}

/// `FlowStats` answer: this server's counters since it started, and what
/// the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStatsAnswer {
    /// Flows received, per source (`agent`, `collector`, `file`).
    pub ingested: BTreeMap<String, u64>,
    /// Flows refused, per reason.
    pub rejected: BTreeMap<String, u64>,
    /// Flows stored, by their status.
    pub attributed: u64,
    pub external: u64,
    pub unattributed: u64,
    /// Ends left unattributed, per reason (`no-owner`, `ambiguous`, `late`).
    pub unattributed_ends: BTreeMap<String, u64>,
    /// Flows waiting for evidence now.
    pub held: u64,
    /// Flows that had to wait when they arrived.
    pub held_total: u64,
    /// Ownership evidence recorded, per kind.
    pub evidence: BTreeMap<String, u64>,
    /// Time ranges and addresses in the in-memory index.
    pub ownership_ranges: u64,
    pub ownership_addresses: u64,
    /// What the store holds now.
    pub stored_flows: u64,
    pub stored_graph_rows: u64,
    pub stored_evidence: u64,
    pub stored_pending: u64,
}
