//! Flow records and their attribution to workload identities.
//!
//! A flow says that two IP endpoints talked; an operator wants to know which
//! *workloads* talked. IPs are handed from one workload to the next within
//! seconds, so "who has this IP now" answers wrongly for any flow that is a
//! little old. This crate answers "who held this IP at that instant", from
//! evidence with timestamps, and refuses to answer when the evidence does
//! not prove one owner:
//!
//! - [`flow`]: the flow record every source produces (agents, flow logs,
//!   NetFlow/IPFIX collectors), validated once at the edge; [`vpc`] (AWS
//!   VPC Flow Logs) and [`jsonl`] (Hallmark's own schema) read files into it;
//!   [`collector`] decodes NetFlow v5/v9 and IPFIX datagrams into it.
//! - [`sim`]: a ground-truth simulation of IP churn that grades the engine
//!   and two naive baselines.
//! - [`owner`]: who can hold an IP: a workload (context, node, container) or
//!   a node itself.
//! - [`ownership`]: the index from (IP, optional port) to the time ranges in
//!   which one owner was proven to hold it, built from lifecycle events,
//!   heartbeats and locally tagged flows.
//! - [`network`]: operator-named CIDRs for addresses no workload holds.
//! - [`endpoint`]: what an operator reads at each end of a stored flow
//!   (workload, node, external network, unattributed), and the identity
//!   graph's buckets and edges.
//! - [`query`]: flow filters as operators write them (`--from`, `--to`).
//! - [`api`]: the JSON documents of the admin API's flow queries.
//! - [`merge`]: reports of one connection (interim and final records, or
//!   both ends' agents) folded into one stored flow.
//! - [`verdict`]: what policy said about each stored flow, and the graph's
//!   counts of it.
//! - [`attribution`]: the engine: each end of a flow is attributed to an
//!   owner, an external network, or left unattributed with a reason; flows
//!   whose evidence is not complete yet are held back and retried.
//!
//! Pure: no I/O and no clock. Every function that needs "now" takes it, so
//! the rules are tested from tables and a ground-truth simulation.

#![forbid(unsafe_code)]

pub mod api;
pub mod attribution;
pub mod collector;
pub mod endpoint;
pub mod flow;
pub mod jsonl;
pub mod merge;
pub mod network;
pub mod owner;
pub mod ownership;
pub mod policy;
pub mod query;
pub mod sim;
pub mod verdict;
pub mod vpc;

pub use attribution::{
    AttributedEnd, AttributedFlow, Attributor, AttributorConfig, AttributorStats, EndAttribution,
    UnattributedReason,
};
pub use collector::{
    Collector, CollectorConfig, CollectorConfigError, CollectorError, CollectorStats, Datagram,
    Domain, Reason, Rejection, StreamStats,
};
pub use endpoint::{
    buckets_of, edges_of, Endpoint, FlowStatus, GraphBucket, GraphBy, GraphEdge, StoredFlow,
    WorkloadEndpoint, GRAPH_BUCKET_MS,
};
pub use flow::{
    EnforcedVerdict, Flow, FlowError, Initiator, LocalSide, Protocol, Reporter, Side, TcpOutcome,
    MAX_UNIT_LEN,
};
pub use merge::DEFAULT_MERGE_WINDOW_MS;
pub use network::{NetworkError, Networks};
pub use owner::{Owner, OwnerId, Owners};
pub use ownership::{Evidence, EvidenceKind, Lookup, OwnershipIndex, OwnershipKey, RangeProof};
pub use query::{EndpointFilter, FilterError, FlowQuery};
pub use verdict::{Judge, PolicyInForce, RevisedPolicy, VerdictCounts};
pub use vpc::{VpcError, VpcFormat, VpcRecord};
