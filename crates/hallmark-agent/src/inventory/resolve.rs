//! Looking a container up for attestation: the inventory's record when it
//! is complete, else the runtime asked directly (one inspect shared by
//! concurrent callers), for a bounded while.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hallmark_core::{Confidence, Workload};
use hallmark_runtime::Runtime;

use super::{follow, lock, Inventory};

/// First pause between [`Inventory::resolve`] retries; doubles up to
/// [`RESOLVE_MAX_PAUSE`].
const RESOLVE_FIRST_PAUSE: Duration = Duration::from_millis(20);
const RESOLVE_MAX_PAUSE: Duration = Duration::from_millis(200);

impl Inventory {
    /// The record of `container_id` for attestation. When the inventory has
    /// no full record of it yet (its start event may still be on the way),
    /// asks the runtime directly, again and again until
    /// `unknown_container_wait` has passed. `None` when it is still unknown
    /// or there is no runtime. Concurrent callers about one container share
    /// one inspect. Never returns a record of another container.
    pub async fn resolve(&self, container_id: &str) -> Option<Workload> {
        let known = self.get(container_id);
        if let Some(w) = &known {
            if w.confidence == Confidence::Full {
                return known;
            }
        }
        if container_id.is_empty() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + self.inner.config.unknown_container_wait;
        let mut pause = RESOLVE_FIRST_PAUSE;
        loop {
            let rt = lock(&self.inner.info).runtime.clone()?;
            if let Some(w) = self.shared_inspect(rt, container_id).await {
                if w.container_id == container_id {
                    self.inner.offer(w.clone());
                    return Some(w);
                }
            }
            if let Some(w) = self.get(container_id) {
                if w.confidence == Confidence::Full || known.is_some() {
                    return Some(w);
                }
            }
            // A record the inventory holds only in part: the runtime was
            // asked once more and still could not say; no use waiting.
            if known.is_some() {
                return known;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(RESOLVE_MAX_PAUSE);
        }
    }

    async fn shared_inspect(&self, rt: Arc<dyn Runtime>, id: &str) -> Option<Workload> {
        let fut = {
            let mut inflight = lock(&self.inner.inflight);
            match inflight.get(id) {
                Some(f) => f.clone(),
                None => {
                    let inner = self.inner.clone();
                    let key = id.to_string();
                    let f = async move {
                        let r = follow::inspect(&inner, rt.as_ref(), &key).await;
                        lock(&inner.inflight).remove(&key);
                        match r {
                            Ok(w) => w,
                            Err(e) => {
                                tracing::debug!(container = %key, error = %e, "inspect for attestation failed");
                                None
                            }
                        }
                    }
                    .boxed()
                    .shared();
                    inflight.insert(id.to_string(), f.clone());
                    f
                }
            }
        };
        fut.await
    }
}
