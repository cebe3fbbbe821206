//! The inventory's view of the container runtime: which one it follows,
//! whether it is degraded and why, what discovery tried; and the
//! [`InventoryStatus`] shown by the agent's `/status` endpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hallmark_runtime::Runtime;
use serde::Serialize;

use super::state::ResyncInfo;
use super::{lock, Inner, Inventory, RuntimeStatus};

/// One socket discovery tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryAttempt {
    pub runtime: String,
    pub endpoint: String,
    pub ok: bool,
    /// The runtime's version, or why it could not be used.
    pub outcome: String,
}

/// The inventory's state for the agent's `/status` endpoint and
/// `hallmark up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryStatus {
    pub context_name: String,
    #[serde(flatten)]
    pub runtime: RuntimeStatus,
    /// What discovery tried, last time it ran.
    pub attempts: Vec<DiscoveryAttempt>,
    /// Containers known (running and stopped).
    pub workloads: usize,
    pub running: usize,
    pub stopped: usize,
    /// Records without runtime metadata (the inspect failed).
    pub partial: usize,
    /// Unix milliseconds of the last completed full listing; 0 before one.
    pub last_resync_ms: i64,
    pub last_resync_duration_ms: u64,
    pub resyncs: u64,
    /// Events queued for the server.
    pub queued_events: usize,
    /// Events dropped because the queue was full, since start.
    pub dropped_events: u64,
}

impl InventoryStatus {
    /// One line for people: which runtime and what runs, or why not.
    pub fn summary(&self) -> String {
        let r = &self.runtime;
        if r.degraded {
            return format!("degraded: {}", r.reason);
        }
        if r.runtime == "none" {
            return if r.reason.is_empty() {
                "no container runtime".to_string()
            } else {
                r.reason.clone()
            };
        }
        let what = if r.version.is_empty() {
            r.runtime.clone()
        } else {
            r.version.clone()
        };
        format!(
            "{what} at {}: {} running, {} stopped",
            r.endpoint, self.running, self.stopped
        )
    }
}

/// What the runtime side looks like now.
pub(super) struct RuntimeInfo {
    pub(super) status: RuntimeStatus,
    pub(super) attempts: Vec<DiscoveryAttempt>,
    pub(super) runtime: Option<Arc<dyn Runtime>>,
    /// How discovery chose the runtime, when worth saying (a fallback);
    /// shown as the reason while the runtime is healthy.
    pub(super) note: String,
    pub(super) resync: ResyncInfo,
    pub(super) listed_once: bool,
}

impl Inventory {
    /// Whether the runtime is missing or not answering: the records may
    /// then be out of date.
    pub(crate) fn runtime_degraded(&self) -> bool {
        lock(&self.inner.info).status.degraded
    }

    /// Runtime status and inventory counts, for people and monitoring.
    pub fn status(&self) -> InventoryStatus {
        let counts = lock(&self.inner.state).counts();
        let (queued_events, dropped_events) = {
            let q = lock(&self.inner.queue);
            (q.len(), q.dropped())
        };
        let info = lock(&self.inner.info);
        InventoryStatus {
            context_name: self.inner.config.context_name.clone(),
            runtime: info.status.clone(),
            attempts: info.attempts.clone(),
            workloads: counts.total,
            running: counts.running,
            stopped: counts.stopped,
            partial: counts.partial,
            last_resync_ms: info.resync.at_ms,
            last_resync_duration_ms: u64::try_from(info.resync.took.as_millis())
                .unwrap_or(u64::MAX),
            resyncs: info.resync.count,
            queued_events,
            dropped_events,
        }
    }
}

impl Inner {
    pub(super) fn set_runtime(&self, rt: Option<Arc<dyn Runtime>>) {
        let mut info = lock(&self.info);
        if let Some(r) = &rt {
            info.status.runtime = r.source().as_str().to_string();
            info.status.endpoint = r.endpoint().to_string();
        }
        info.runtime = rt;
    }

    /// Replaces the whole runtime status (after a discovery round).
    pub(super) fn set_status(
        &self,
        runtime: &str,
        endpoint: &str,
        version: &str,
        degraded: bool,
        reason: &str,
        attempts: Vec<DiscoveryAttempt>,
    ) {
        let next = RuntimeStatus {
            runtime: runtime.to_string(),
            endpoint: endpoint.to_string(),
            version: version.to_string(),
            degraded,
            reason: reason.to_string(),
        };
        let mut info = lock(&self.info);
        info.attempts = attempts;
        if !degraded {
            info.note = reason.to_string();
        }
        self.replace_status(&mut info, next);
        drop(info);
        if degraded || runtime == "none" {
            self.mark_started();
        }
    }

    pub(super) fn set_degraded(&self, degraded: bool, reason: &str) {
        let mut info = lock(&self.info);
        let mut next = info.status.clone();
        next.degraded = degraded;
        next.reason = reason.to_string();
        self.replace_status(&mut info, next);
        drop(info);
        if degraded {
            self.mark_started();
        }
    }

    /// The runtime answers again (or for the first time).
    pub(super) fn set_healthy(&self) {
        let mut info = lock(&self.info);
        let mut next = info.status.clone();
        next.degraded = false;
        next.reason = info.note.clone();
        self.replace_status(&mut info, next);
    }

    pub(super) fn set_version(&self, version: &str) {
        let mut info = lock(&self.info);
        let mut next = info.status.clone();
        next.version = version.to_string();
        self.replace_status(&mut info, next);
    }

    /// Installs a new status; logs, and tells the server and the spool,
    /// only when it differs from the current one, so that a runtime that
    /// stays away is reported once, not at every retry.
    fn replace_status(&self, info: &mut RuntimeInfo, next: RuntimeStatus) {
        if info.status == next {
            return;
        }
        let was = std::mem::replace(&mut info.status, next);
        let now = &info.status;
        self.metrics.runtime_degraded.set(i64::from(now.degraded));
        if now.degraded && (!was.degraded || was.reason != now.reason) {
            tracing::warn!(reason = %now.reason, "container runtime unavailable: containers get unix selectors only");
        } else if !now.degraded && was.degraded {
            tracing::info!(runtime = %now.runtime, endpoint = %now.endpoint, version = %now.version, "container runtime available again");
        } else if !now.degraded && was.runtime != now.runtime {
            tracing::info!(runtime = %now.runtime, endpoint = %now.endpoint, version = %now.version, note = %now.reason, "following the container runtime");
        }
        self.snapshot_due.store(true, Ordering::SeqCst);
        self.report_work.notify_one();
        self.spool_changed();
    }
}
