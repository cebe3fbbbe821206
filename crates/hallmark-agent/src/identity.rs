//! Workload identities in the inventory: for each running container, the
//! selectors its process would be attested with as a Workload API caller,
//! and the SPIFFE IDs of the agent's entries those selectors satisfy. The
//! server attributes flows to these identities.
//!
//! The same code decides as for callers ([`crate::caller`]): the unix
//! attestor reads the container's init process under the PID-reuse guard
//! ([`attest_pid`]), the process's own cgroup must name the container and
//! be the runtime's cgroup for it (`caller::container_vouches`), and then the
//! node's context and the runtime's selectors of the container are added.
//! A process that does not pass gets no identity at all, never a guess.
//!
//! Off the event path: one task derives identities after the inventory
//! has published a record (a `started` or `updated` event), re-matches
//! the stored selectors when the agent's entries change, and re-attests
//! every running container each `refresh` (a process may exec or change
//! user). A changed identity reaches the server as an `updated` event of
//! the container (or in a snapshot, when one round changes many), and with
//! every snapshot after it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hallmark_core::{Selector, SelectorSet, Workload, WorkloadState};
use tokio::sync::{broadcast, watch};

use crate::attestor::{attest_pid, boot_ticks, AttestError};
use crate::caller::{caller_selectors, container_vouches, context_selector};
use crate::inventory::{EventKind, IdentityUpdate, Inventory, InventoryEvent};
use crate::metrics::AgentMetrics;
use crate::state::Snapshot;

/// Why a container's process was given no identity.
#[derive(Debug, thiserror::Error)]
pub enum NoIdentity {
    #[error("the runtime reports no process ID")]
    NoPid,
    #[error(transparent)]
    Attest(#[from] AttestError),
    #[error("process {pid} is not in container {container}'s cgroup (its cgroup: `{cgroup}`)")]
    NotTheContainers {
        pid: u32,
        container: String,
        cgroup: String,
    },
}

/// The selectors of `w`'s process, as a caller from it would be attested:
/// what the kernel says of the process at `w.pid` (which must have started
/// no later than boot tick `known_at_ticks`), the node's `context`, and the
/// runtime's selectors of `w`, which must be the process's container.
///
/// Blocking (reads /proc, may hash the executable).
pub fn process_selectors(
    w: &Workload,
    known_at_ticks: u64,
    context: Option<&Selector>,
) -> Result<SelectorSet, NoIdentity> {
    let pid = w.pid.ok_or(NoIdentity::NoPid)?;
    let raw = i32::try_from(pid).map_err(|_| NoIdentity::NoPid)?;
    let attested = attest_pid(raw, known_at_ticks)?;
    if !container_vouches(w, &attested.cgroup) {
        return Err(NoIdentity::NotTheContainers {
            pid,
            container: w.container_id.clone(),
            cgroup: attested.cgroup.path,
        });
    }
    Ok(caller_selectors(attested.selectors, context, Some(w)))
}

/// The SPIFFE IDs of the entries a caller with `selectors` is entitled to
/// in `snap`, sorted; none before the agent has synced (callers are
/// refused then).
pub fn spiffe_ids(snap: &Snapshot, selectors: &SelectorSet) -> Vec<String> {
    if !snap.ready {
        return Vec::new();
    }
    let mut ids: Vec<String> = snap
        .matching_entries(selectors)
        .into_iter()
        .map(|e| e.spec.spiffe_id.to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn strings(set: &SelectorSet) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

/// Whether an event leaves a running container without an identity.
fn needs_identity(e: &InventoryEvent) -> bool {
    matches!(e.kind, EventKind::Started | EventKind::Updated)
        && matches!(
            e.workload.state,
            WorkloadState::Running | WorkloadState::Paused
        )
        && e.workload.pid.is_some()
        && e.workload.selectors.is_empty()
}

/// Derives and keeps the identities of the inventory's containers until
/// `shutdown` turns true.
pub async fn run(
    inventory: Inventory,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<AgentMetrics>,
    refresh: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let context = context_selector(inventory.context_name());
    let mut events = inventory.subscribe();
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                derive(&inventory, &snapshots, context.as_ref(), &metrics, None).await;
            }
            ev = events.recv() => {
                let mut next = match ev {
                    Ok(e) => Ok(e),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        Err(broadcast::error::TryRecvError::Lagged(n))
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        // The inventory is gone: nothing left to derive for.
                        let _ = shutdown.wait_for(|s| *s).await;
                        return;
                    }
                };
                let mut wanted = HashSet::new();
                let mut all = false;
                loop {
                    match next {
                        Ok(e) if needs_identity(&e) => {
                            wanted.insert(e.workload.container_id);
                        }
                        Ok(_) => {}
                        Err(broadcast::error::TryRecvError::Lagged(_)) => all = true,
                        Err(_) => break,
                    }
                    next = events.try_recv();
                }
                if all {
                    derive(&inventory, &snapshots, context.as_ref(), &metrics, None).await;
                } else if !wanted.is_empty() {
                    derive(&inventory, &snapshots, context.as_ref(), &metrics, Some(&wanted)).await;
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    // No more entries will come; what is set stays right.
                    let _ = shutdown.wait_for(|s| *s).await;
                    return;
                }
                rematch(&inventory, &snapshots.borrow_and_update().clone());
                metrics.workload_identities.set(inventory.identity_count() as i64);
            }
        }
    }
}

/// Attests the running containers (`only` these, when given) and sets
/// their identities.
async fn derive(
    inventory: &Inventory,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    context: Option<&Selector>,
    metrics: &AgentMetrics,
    only: Option<&HashSet<String>>,
) {
    let mut records = inventory.live_with_pid();
    if let Some(ids) = only {
        records.retain(|w| ids.contains(&w.container_id));
    }
    if records.is_empty() {
        return;
    }
    // Taken after the records were read: each PID in them was the
    // runtime's word before this moment.
    let known_at = match boot_ticks() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "reading the boot clock failed; workload identities not derived");
            return;
        }
    };
    let context = context.cloned();
    let results = tokio::task::spawn_blocking(move || {
        records
            .into_iter()
            .map(|w| {
                let r = process_selectors(&w, known_at, context.as_ref());
                (w, r)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(results) = results else {
        tracing::warn!("deriving workload identities: the task panicked");
        return;
    };
    let snap = snapshots.borrow().clone();
    let updates = results
        .into_iter()
        .map(|(basis, r)| match r {
            Ok(set) => IdentityUpdate {
                spiffe_ids: spiffe_ids(&snap, &set),
                selectors: strings(&set),
                basis,
            },
            Err(e) => {
                metrics.workload_identity_failures.inc();
                tracing::debug!(container = %basis.container_id, error = %e, "no identity for the container's process");
                IdentityUpdate {
                    basis,
                    selectors: Vec::new(),
                    spiffe_ids: Vec::new(),
                }
            }
        })
        .collect();
    inventory.set_identities(updates);
    metrics
        .workload_identities
        .set(inventory.identity_count() as i64);
}

/// Matches the stored selectors against the entries again.
fn rematch(inventory: &Inventory, snap: &Snapshot) {
    let mut updates = Vec::new();
    for w in inventory.live_with_pid() {
        if w.selectors.is_empty() {
            continue;
        }
        // They were valid selectors when derived.
        let set: SelectorSet = w
            .selectors
            .iter()
            .filter_map(|s| Selector::new(s).ok())
            .collect();
        let ids = spiffe_ids(snap, &set);
        if ids != w.spiffe_ids {
            updates.push(IdentityUpdate {
                selectors: w.selectors.clone(),
                spiffe_ids: ids,
                basis: w,
            });
        }
    }
    inventory.set_identities(updates);
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
