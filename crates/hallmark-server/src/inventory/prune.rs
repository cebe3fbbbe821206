//! The pruner: deletes stopped workloads and old lifecycle events once the
//! retention window has passed.

use std::sync::Arc;
use std::time::Duration;

use hallmark_store::Store;
use tokio::sync::watch;

use crate::metrics::ServerMetrics;

/// Bounds of the pruner's period (a quarter of the retention).
const MIN_PRUNE_PERIOD: Duration = Duration::from_millis(250);
const MAX_PRUNE_PERIOD: Duration = Duration::from_secs(60);
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
        if !crate::startup::next_tick(&mut tick, &mut shutdown).await {
            return;
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
