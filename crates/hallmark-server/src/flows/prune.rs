//! Retention: stored flows after `--flow-retention`, the identity graph
//! after `--graph-retention`, and ownership evidence (in the datastore and
//! in the in-memory index) once no flow can still need it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hallmark_flows::Attributor;
use hallmark_store::Store;
use tokio::sync::watch;

use super::pipeline::now_ms;

const PERIOD: Duration = Duration::from_secs(60);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) async fn prune_loop(
    store: Arc<dyn Store>,
    attributor: Arc<Mutex<Attributor>>,
    flow_retention: Duration,
    graph_retention: Duration,
    evidence_retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !crate::startup::next_tick(&mut tick, &mut shutdown).await {
            return;
        }
        let now = now_ms();
        let evidence_before = now.saturating_sub(ms(evidence_retention));
        match store
            .prune_flows(
                now.saturating_sub(ms(flow_retention)),
                now.saturating_sub(ms(graph_retention)),
                evidence_before,
            )
            .await
        {
            Ok(p) => tracing::debug!(?p, "pruned flows, graph and evidence past their retention"),
            Err(e) => tracing::warn!(error = %e, "pruning flows failed; retrying at the next tick"),
        }
        if let Ok(mut a) = attributor.lock() {
            a.prune(evidence_before);
        }
    }
}
