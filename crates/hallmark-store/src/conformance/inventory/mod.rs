//! The workload inventory part of the conformance suite.
//!
//! Every record lives in a context and under container IDs derived from the
//! run's tag, so runs sharing a store do not see each other's workloads.
//! Counting and pruning touch the whole store; those checks compare what
//! changed around their own writes.

use std::time::Duration;

use hallmark_core::{
    Compose, Confidence, PodInfo, RuntimeSource, SpiffeId, Workload, WorkloadState,
};

use super::{ok, Run};
use crate::inventory::{
    AgentInventory, ImageMatch, InventoryApplied, InventoryReport, LabelMatch, RuntimeStatus,
    SnapshotOutcome, SnapshotPage, StateFilter, StoredWorkload, WorkloadEvent, WorkloadEventKind,
    WorkloadFilter,
};
use crate::prelude::*;
use crate::AgentRecord;

mod listing;
mod reports;

/// Server time of the first report of each check (unix ms).
const T: i64 = 1_700_000_000_000;
const HOUR: Duration = Duration::from_secs(3600);
const HOUR_MS: i64 = 3_600_000;

pub(super) async fn run_all(store: &dyn Store, run: &Run) {
    reports::round_trip_and_state_changes(store, run).await;
    reports::snapshot_completion(store, run).await;
    listing::listing_filters(store, run).await;
    listing::retention_hides_stopped_workloads(store, run).await;
    listing::counting(store, run).await;
    listing::prefix_lookup(store, run).await;
    reports::event_history(store, run).await;
    reports::readers_see_whole_reports(store, run).await;
    reports::agent_inventory_goes_with_the_agent(store, run).await;
    reports::pruning(store, run).await;
}

impl Run {
    /// A context name unique to this run (at most 63 characters).
    pub(super) fn context(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }

    /// A container ID unique to this run: the tag's 32 hex digits, then
    /// `suffix`.
    pub(super) fn container(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.tag.replace('-', ""))
    }
}

fn docker(id: &str, name: &str, image: &str, state: WorkloadState) -> Workload {
    let mut w = Workload::partial(id, RuntimeSource::Docker, "");
    w.confidence = Confidence::Full;
    w.name = name.into();
    w.image = image.into();
    w.state = state;
    w
}

fn cri(id: &str, name: &str, namespace: &str, state: WorkloadState) -> Workload {
    let mut w = docker(id, name, "docker.io/library/busybox:1", state);
    w.source = RuntimeSource::Cri;
    w.pod = Some(PodInfo {
        uid: format!("uid-{id}"),
        name: format!("{name}-pod"),
        namespace: namespace.into(),
        sandbox_id: format!("sb-{id}"),
        ..PodInfo::default()
    });
    w
}

fn report(ctx: &str, agent: &SpiffeId) -> InventoryReport {
    InventoryReport {
        agent_id: agent.clone(),
        context_name: ctx.to_string(),
        snapshot: None,
        events: Vec::new(),
        runtime: None,
        dropped_events: 0,
    }
}

fn page(snapshot_id: u64, page: u32, last_page: bool, workloads: Vec<Workload>) -> SnapshotPage {
    SnapshotPage {
        snapshot_id,
        page,
        last_page,
        workloads,
    }
}

fn event(kind: WorkloadEventKind, at_ms: i64, workload: &Workload) -> WorkloadEvent {
    WorkloadEvent {
        kind,
        at_ms,
        workload: workload.clone(),
    }
}

async fn apply(store: &dyn Store, what: &str, r: InventoryReport, now_ms: i64) -> InventoryApplied {
    ok(what, store.apply_inventory(&r, now_ms).await)
}

async fn in_context(store: &dyn Store, what: &str, ctx: &str, now_ms: i64) -> Vec<StoredWorkload> {
    let filter = WorkloadFilter {
        context_name: Some(ctx.to_string()),
        ..WorkloadFilter::default()
    };
    ok(what, store.list_workloads(&filter, now_ms, HOUR).await)
}

/// The one stored workload with this container ID in `ctx`.
async fn one(store: &dyn Store, what: &str, ctx: &str, id: &str, now_ms: i64) -> StoredWorkload {
    let all = in_context(store, what, ctx, now_ms).await;
    let mut found: Vec<StoredWorkload> = all
        .into_iter()
        .filter(|s| s.workload.container_id == id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "conformance: {what}: expected exactly one workload {id} in context {ctx}: {found:?}"
    );
    found.remove(0)
}

/// `(container_id, stopped)` of each workload `agent` reported in `ctx`,
/// in listing order.
async fn states(
    store: &dyn Store,
    what: &str,
    ctx: &str,
    agent: &SpiffeId,
    now_ms: i64,
) -> Vec<(String, bool)> {
    in_context(store, what, ctx, now_ms)
        .await
        .into_iter()
        .filter(|s| s.agent_id == *agent)
        .map(|s| (s.workload.container_id, s.stopped_at_ms.is_some()))
        .collect()
}

fn ids(list: &[StoredWorkload]) -> Vec<&str> {
    list.iter()
        .map(|s| s.workload.container_id.as_str())
        .collect()
}
