//! Following the container runtime: find it, subscribe to its events, list
//! everything, then keep the inventory current from events, with a full
//! resync every `resync_interval` as a safety net.
//!
//! The subscription is opened *before* each listing, so a container that
//! starts while the listing runs is seen by one or the other. Events are
//! handled concurrently across containers but in order per container (see
//! [`State::enqueue`](super::state::State::enqueue)); a listing never
//! overwrites a container that an event touched after the listing began.
//!
//! When the runtime is missing or stops answering, the inventory keeps what
//! it has, reports itself degraded with a reason a person can act on, and
//! retries with backoff (up to [`MAX_BACKOFF`]) so that a runtime started
//! later is picked up.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use hallmark_core::Workload;
use hallmark_runtime::discovery::{self, RuntimeChoice};
use hallmark_runtime::{EventAction, Listing, Runtime, RuntimeError};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{DiscoveryAttempt, Inner, RuntimeSetup};

/// First retry after the runtime failed; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A subscription that lasted this long was healthy: the backoff starts
/// over. Shorter-lived ones keep growing it, so a runtime whose event
/// stream fails at once is not relisted in a tight loop.
const STABLE_FOR: Duration = Duration::from_secs(10);

/// Why following one runtime connection ended.
enum End {
    Shutdown,
    /// The event stream broke or a listing failed: subscribe and list again.
    Retry,
}

/// The follower task.
pub async fn run(inner: Arc<Inner>, setup: RuntimeSetup, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = MIN_BACKOFF;
    let mut runtime: Option<Arc<dyn Runtime>> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let rt = match &runtime {
            Some(rt) => rt.clone(),
            None => match find(&inner, &setup).await {
                Found::Runtime(rt) => {
                    runtime = Some(rt.clone());
                    inner.set_runtime(Some(rt.clone()));
                    rt
                }
                Found::Retry => {
                    if !pause(&mut backoff, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
                Found::Never => {
                    // Nothing will ever be found: idle until shutdown.
                    let _ = shutdown.wait_for(|s| *s).await;
                    return;
                }
            },
        };
        match follow(&inner, &rt, &mut backoff, &mut shutdown).await {
            End::Shutdown => return,
            End::Retry => {
                if !pause(&mut backoff, &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps for the jittered backoff and doubles it; false on shutdown.
async fn pause(backoff: &mut Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    use rand::Rng;
    let wait = backoff.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

enum Found {
    Runtime(Arc<dyn Runtime>),
    /// Not now; look again later.
    Retry,
    /// The configuration rules a runtime out.
    Never,
}

async fn find(inner: &Inner, setup: &RuntimeSetup) -> Found {
    match setup {
        RuntimeSetup::Given(rt) => Found::Runtime(rt.clone()),
        RuntimeSetup::None { reason } => {
            inner.set_status("none", "", "", true, reason, Vec::new());
            Found::Never
        }
        RuntimeSetup::Discover => {
            let cfg = &inner.config.discovery;
            let found = discovery::discover(cfg).await;
            let attempts = found
                .attempts
                .iter()
                .map(|a| DiscoveryAttempt {
                    runtime: a.runtime.to_string(),
                    endpoint: a.endpoint.clone(),
                    ok: a.outcome.is_ok(),
                    outcome: match &a.outcome {
                        Ok(v) | Err(v) => v.clone(),
                    },
                })
                .collect();
            let reason = found.degraded_reason().unwrap_or_default();
            match found.runtime {
                Some(rt) => {
                    // A fallback (Auto took Docker after CRI failed) works;
                    // the reason stays as a note, not as degradation.
                    inner.set_status(
                        rt.source().as_str(),
                        rt.endpoint(),
                        &found.version,
                        false,
                        &reason,
                        attempts,
                    );
                    Found::Runtime(rt)
                }
                None if cfg.choice == RuntimeChoice::None => {
                    inner.set_status("none", "", "", false, &reason, attempts);
                    Found::Never
                }
                None => {
                    let reason = format!(
                        "{reason}; looking again with backoff (at most every {} s): start \
                         the runtime, or set --runtime, --docker-socket or --cri-socket",
                        MAX_BACKOFF.as_secs()
                    );
                    inner.set_status("none", "", "", true, &reason, attempts);
                    Found::Retry
                }
            }
        }
    }
}

/// What a person should do about a runtime error.
fn advice(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Unreachable { .. } => {
            "is the runtime running, and may this agent (root) read its socket?"
        }
        RuntimeError::Timeout { .. } => "the runtime is not answering; is it overloaded or hung?",
        RuntimeError::Api { .. } | RuntimeError::Events { .. } => {
            "the runtime refused the call; see its logs"
        }
    }
}

fn degraded_reason(rt: &dyn Runtime, e: &RuntimeError) -> String {
    format!(
        "{} at {}: {e}: {}; retrying with backoff",
        rt.source(),
        rt.endpoint(),
        advice(e)
    )
}

/// Awaits `f` if there is one, else never completes (for `select!`).
async fn maybe<T>(f: &mut Option<BoxFuture<'static, T>>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

type ListResult = (u64, Instant, Result<Listing, RuntimeError>);

fn start_listing(inner: &Inner, rt: &Arc<dyn Runtime>) -> BoxFuture<'static, ListResult> {
    let since = inner.epoch();
    let rt = rt.clone();
    async move {
        let began = Instant::now();
        let result = rt.list().await;
        (since, began, result)
    }
    .boxed()
}

/// One subscription's life: version check, subscribe, list, then events
/// and periodic resyncs until something breaks.
async fn follow(
    inner: &Arc<Inner>,
    rt: &Arc<dyn Runtime>,
    backoff: &mut Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let source = rt.source().as_str();
    let version = tokio::select! {
        v = rt.version() => v,
        _ = shutdown.wait_for(|s| *s) => return End::Shutdown,
    };
    let version = match version {
        Ok(v) => v,
        Err(e) => {
            inner.metrics.runtime_failure("version");
            inner.set_degraded(true, &degraded_reason(rt.as_ref(), &e));
            return End::Retry;
        }
    };
    inner.set_version(&version);
    let mut events = rt.events();
    let subscribed_at = Instant::now();
    let mut listing = Some(start_listing(inner, rt));
    let mut healthy = false;
    let mut next_resync = Instant::now() + inner.config.resync_interval;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => inner.on_event(rt, ev),
                Some(Err(e)) => {
                    inner.metrics.runtime_failure("events");
                    tracing::debug!(error = %e, "runtime event stream broke; resubscribing and resyncing");
                    if subscribed_at.elapsed() >= STABLE_FOR {
                        *backoff = MIN_BACKOFF;
                    }
                    return End::Retry;
                }
                None => {
                    inner.metrics.runtime_failure("events");
                    tracing::debug!("runtime event stream ended; resubscribing and resyncing");
                    if subscribed_at.elapsed() >= STABLE_FOR {
                        *backoff = MIN_BACKOFF;
                    }
                    return End::Retry;
                }
            },
            (since, began, result) = maybe(&mut listing) => {
                listing = None;
                let took = began.elapsed();
                inner
                    .metrics
                    .runtime_list_seconds
                    .get_or_create(&crate::metrics::RuntimeLabels { runtime: source.to_string() })
                    .observe(took.as_secs_f64());
                match result {
                    Ok(l) => {
                        if l.failures > 0 {
                            inner.metrics.runtime_call_failures
                                .get_or_create(&crate::metrics::CallLabels { call: "inspect".into() })
                                .inc_by(u64::from(l.failures));
                        }
                        inner.apply_listing(l.workloads, since, took);
                        if !healthy {
                            healthy = true;
                            inner.set_healthy();
                        }
                    }
                    Err(e) => {
                        inner.metrics.runtime_failure("list");
                        inner.set_degraded(true, &degraded_reason(rt.as_ref(), &e));
                        return End::Retry;
                    }
                }
                next_resync = Instant::now() + inner.config.resync_interval;
            }
            _ = tokio::time::sleep_until(next_resync), if listing.is_none() => {
                listing = Some(start_listing(inner, rt));
            }
            _ = shutdown.wait_for(|s| *s) => return End::Shutdown,
        }
    }
}

/// Works one container's lane until it is empty. At most one of these runs
/// per container, which is what keeps a slow inspect of `start` from
/// landing after the `die` that followed it.
pub async fn lane(inner: Arc<Inner>, rt: Arc<dyn Runtime>, id: String) {
    while let Some(batch) = inner.next_batch(&id) {
        let destroyed = batch.iter().any(|e| e.action == EventAction::Destroyed);
        if destroyed {
            inner.forget(&id);
            continue;
        }
        match inspect(&inner, rt.as_ref(), &id).await {
            Ok(Some(w)) if w.container_id == id => inner.upsert(w),
            Ok(Some(w)) => {
                // A back end must never answer for another container;
                // trusting it would give one container another's identity.
                inner.metrics.runtime_failure("inspect");
                tracing::warn!(asked = %id, answered = %w.container_id, "runtime inspect answered for another container; ignored");
            }
            // Gone before we could look: it was removed (its destroy event
            // follows, or is already queued).
            Ok(None) => inner.forget(&id),
            Err(e) => {
                let reason = format!("inspect failed: {e}");
                inner.upsert_partial(&id, rt.source(), &reason);
            }
        }
    }
}

/// One inspect, timed, counted, and bounded in concurrency so that a burst
/// of events cannot open thousands of runtime calls at once.
pub async fn inspect(
    inner: &Inner,
    rt: &dyn Runtime,
    id: &str,
) -> Result<Option<Workload>, RuntimeError> {
    let _permit = inner.inspect_limit.acquire().await;
    let began = Instant::now();
    let result = rt.inspect(id).await;
    inner
        .metrics
        .runtime_inspect_seconds
        .get_or_create(&crate::metrics::RuntimeLabels {
            runtime: rt.source().as_str().to_string(),
        })
        .observe(began.elapsed().as_secs_f64());
    if result.is_err() {
        inner.metrics.runtime_failure("inspect");
    }
    result
}

/// Labels one runtime event for the events-received counter.
pub fn action_name(a: EventAction) -> &'static str {
    match a {
        EventAction::Created => "created",
        EventAction::Started => "started",
        EventAction::Died => "died",
        EventAction::Destroyed => "destroyed",
        EventAction::Renamed => "renamed",
        EventAction::Updated => "updated",
    }
}
