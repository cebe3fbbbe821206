//! Attributed flows, the identity graph and the ownership evidence behind
//! them, as the datastore keeps them.
//!
//! The attribution engine (`hallmark_flows`) is pure and in memory; this is
//! what makes its work durable and shared. A server writes everything one
//! batch produced with [`FlowStore::write_flows`] in one transaction, so a
//! batch is stored whole or not at all, and acknowledging a batch after the
//! call returns loses nothing on a crash. Servers sharing a PostgreSQL
//! database attribute alike because each tails the evidence the others
//! wrote ([`FlowStore::evidence_after`]); a restarted server rebuilds its
//! index the same way and takes back the flows it was holding
//! ([`FlowStore::pending_flows`]).
//!
//! Stored flows are kept for the flow retention, the per-minute identity
//! graph for the (longer) graph retention; [`FlowStore::prune_flows`]
//! applies both. Times are unix milliseconds passed in by the caller.

use std::net::IpAddr;
use std::sync::Arc;

use hallmark_flows::verdict::PolicyInForce;
use hallmark_flows::{Evidence, Flow, FlowQuery, GraphBucket, StoredFlow, DEFAULT_MERGE_WINDOW_MS};

use crate::Result;

/// Flows, the identity graph and ownership evidence. Every method is atomic
/// on its own.
#[async_trait::async_trait]
pub trait FlowStore: Send + Sync + 'static {
    /// Writes one batch in one transaction, all of it or (on error) none of
    /// it:
    ///
    /// 1. `server_id` is noted as alive at `now_ms` (see
    ///    [`FlowStore::pending_flows`]);
    /// 2. pending rows `pending_done` are deleted, and `pending_add` become
    ///    pending rows of `server_id` received at `now_ms`;
    /// 3. `flows` are stored with increasing ids, and the identity graph's
    ///    minute buckets of them (`hallmark_flows::buckets_of`) are added to
    ///    the stored ones; except that a flow reported again
    ///    ([`Flow::is_mergeable`]: an agent's TCP or UDP flow) whose
    ///    connection is already stored, or earlier in the batch, with a
    ///    start at most `merge_window_ms` from its own is merged into that
    ///    row ([`StoredFlow::merge`]), and the graph holds the merged row
    ///    in place of the row before the merge;
    /// 4. `evidence` is appended.
    ///
    /// Ids come back in the order of the inputs; a merged flow's is the id
    /// of the row it was merged into.
    async fn write_flows(&self, w: &FlowWrite) -> Result<FlowWritten>;

    /// The flows held back by `server_id`, oldest first, after adopting the
    /// pending rows of every server that has not written since
    /// `adopt_before_ms` (a server that never came back) and were received
    /// before it; notes `server_id` as alive at `now_ms`, in the same
    /// transaction. A server holding pending flows writes at least once per
    /// hold-back (it emits them, attributed or late), so `adopt_before_ms`
    /// must lie more than one hold-back before `now_ms`.
    async fn pending_flows(
        &self,
        server_id: &str,
        now_ms: i64,
        adopt_before_ms: i64,
    ) -> Result<Vec<PendingFlow>>;

    /// Evidence stored after id `after_id` whose time is at least
    /// `min_at_ms`, in id order, at most `limit`. Once an id is returned,
    /// no evidence with a smaller id can appear any more, so tailing from
    /// the last id returned misses nothing (also with several servers on
    /// one database). `after_id` 0 reads from the start.
    async fn evidence_after(
        &self,
        after_id: i64,
        min_at_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Evidence)>>;

    /// Evidence about `ip` (the whole IP and every port of it) with times
    /// in `from_ms..to_ms`, by time, at most `limit`: what `flows whois`
    /// shows.
    async fn evidence_for(
        &self,
        ip: IpAddr,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<Evidence>>;

    /// Stored flows satisfying `q` ([`FlowQuery::matches`] is the
    /// definition), newest first by start time (then id), or oldest first
    /// by id when `q.after_id` is set; at most `q.limit` of them, or all
    /// when `q.limit` is 0.
    async fn list_flows(&self, q: &FlowQuery) -> Result<Vec<StoredFlow>>;

    /// The identity graph between `since_ms` and `until_ms` (whole minutes:
    /// `since_ms` rounded down, `until_ms` up; `None` for no end): the
    /// stored minute buckets summed per (source, destination, destination
    /// port, protocol), with `minute_ms` the first minute. Ordered by
    /// source, destination (as their stored text), port and protocol. A
    /// back end may keep sums of the buckets by the hour for the hours
    /// wholly inside the window; the answer is the same.
    async fn graph(&self, since_ms: i64, until_ms: Option<i64>) -> Result<Vec<GraphBucket>>;

    /// The same answer as [`FlowStore::graph`], computed by one aggregate
    /// over the stored flows instead of the graph: the baseline the graph
    /// is measured against, and a check of it while flows are retained.
    async fn graph_from_flows(
        &self,
        since_ms: i64,
        until_ms: Option<i64>,
    ) -> Result<Vec<GraphBucket>>;

    /// Deletes flows that started before `flows_before_ms`, graph buckets of
    /// minutes before `graph_before_ms` and evidence from before
    /// `evidence_before_ms`, with the dictionary rows only they used, in one
    /// transaction.
    async fn prune_flows(
        &self,
        flows_before_ms: i64,
        graph_before_ms: i64,
        evidence_before_ms: i64,
    ) -> Result<FlowsPruned>;

    /// What the store holds.
    async fn flow_counts(&self) -> Result<FlowCounts>;
}

/// One batch of [`FlowStore::write_flows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowWrite {
    /// The writing server (any stable name unique among the servers).
    pub server_id: String,
    /// Server time of the write.
    pub now_ms: i64,
    pub evidence: Vec<Evidence>,
    /// Flows held back for evidence, to keep until they are done.
    pub pending_add: Vec<Flow>,
    /// Ids of pending rows now stored (or given up on).
    pub pending_done: Vec<i64>,
    /// Attributed flows; their `id` is ignored (the store assigns it).
    pub flows: Vec<StoredFlow>,
    /// How far apart the starts of two reports of one connection may be:
    /// the ends stamp a connection at slightly different instants, on
    /// clocks that differ by up to the clock skew.
    pub merge_window_ms: i64,
    /// The policy the batch's flows were decided by: a report merged into
    /// a row of its connection makes a flow neither report described
    /// whole, so the merged row is decided again by it. Without one, a
    /// merged row keeps a verdict only if a report asked the same question
    /// ([`StoredFlow::merge`]).
    pub policy: Option<MergePolicy>,
}

/// The policy a write decides merged rows by; writes are equal when their
/// policies have the same revision.
#[derive(Debug, Clone)]
pub struct MergePolicy(pub Arc<dyn PolicyInForce>);

impl PartialEq for MergePolicy {
    fn eq(&self, other: &Self) -> bool {
        self.0.revision() == other.0.revision()
    }
}

impl Eq for MergePolicy {}

impl Default for FlowWrite {
    fn default() -> Self {
        FlowWrite {
            server_id: String::new(),
            now_ms: 0,
            evidence: Vec::new(),
            pending_add: Vec::new(),
            pending_done: Vec::new(),
            flows: Vec::new(),
            merge_window_ms: DEFAULT_MERGE_WINDOW_MS,
            policy: None,
        }
    }
}

/// What [`FlowStore::write_flows`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowWritten {
    /// Ids of the `pending_add` flows, in their order.
    pub pending_ids: Vec<i64>,
    /// Ids of the stored `flows`, in their order.
    pub flow_ids: Vec<i64>,
    /// Ids of the `evidence` rows, in their order.
    pub evidence_ids: Vec<i64>,
    /// Pending rows deleted (ids already gone are not counted).
    pub pending_done: u64,
    /// Minute graph buckets inserted or added to (a back end's rollups of
    /// them are not counted).
    pub graph_rows: u64,
    /// Flows merged into a row of the same connection rather than stored
    /// as a row of their own.
    pub merged: u64,
}

/// A flow held back for evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFlow {
    pub id: i64,
    pub flow: Flow,
    /// Server time it was first held back; the hold-back counts from it.
    pub received_ms: i64,
}

/// What [`FlowStore::prune_flows`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowsPruned {
    pub flows: u64,
    /// Minute graph buckets.
    pub graph_rows: u64,
    pub evidence: u64,
    /// Endpoint and owner descriptions nothing refers to any more.
    pub dictionary_rows: u64,
}

/// How much the flow store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub attributed: u64,
    pub unattributed: u64,
    pub external: u64,
    /// Minute graph buckets.
    pub graph_rows: u64,
    pub evidence: u64,
    pub pending: u64,
}

impl FlowCounts {
    /// Stored flows of every status.
    pub fn flows(&self) -> u64 {
        self.attributed + self.unattributed + self.external
    }
}
