//! Who is calling on the Workload API socket: the readiness check, the
//! attestation of the process behind a connection (unix selectors under the
//! PID-reuse guard, see [`crate::attestor`]), and what the container
//! runtime vouches for about the caller's container. Every API on the
//! socket (the gRPC Workload API and the token endpoint) decides by this.

use std::sync::Arc;

use hallmark_core::cgroup::CgroupIdentity;
use hallmark_core::{Selector, SelectorSet, Workload};
use tonic::Status;

use crate::attestor::{attest_process, attest_process_cached, Attested, PeerInfo};
use crate::inventory::Inventory;
use crate::state::{AgentState, Snapshot};

/// What a caller without any identity is told, on every API of the socket
/// (SPIFFE clients match on it; the Rust `spiffe` crate looks for it).
pub const NO_IDENTITY: &str = "no identity issued";

/// Attests callers for the APIs on the socket. Cheap to clone.
#[derive(Clone)]
pub struct CallerAttestor {
    shared: Arc<AgentState>,
    inventory: Inventory,
    /// `hallmark:context:<name>`, attested for every caller on this node.
    context_selector: Option<Selector>,
}

impl CallerAttestor {
    pub fn new(shared: Arc<AgentState>, inventory: Inventory) -> Self {
        let context_selector = context_selector(inventory.context_name());
        CallerAttestor {
            shared,
            inventory,
            context_selector,
        }
    }

    /// The operator-set context (cluster/site) name of this node.
    pub fn context_name(&self) -> &str {
        self.inventory.context_name()
    }

    /// Readiness check and attestation of the process behind `peer`: what
    /// every API on the socket (gRPC or the token endpoint) decides by.
    pub async fn attest(&self, peer: PeerInfo) -> Result<Caller, Status> {
        let snap = self.shared.snapshots.borrow().clone();
        if !snap.ready {
            return Err(Status::unavailable(
                "agent is starting: not yet synced with the server",
            ));
        }
        // Inline when the caller's binary was hashed before (the common
        // case); otherwise hash it off the async threads.
        let attested = match attest_process_cached(&peer) {
            Some(r) => r,
            None => tokio::task::spawn_blocking(move || attest_process(&peer))
                .await
                .map_err(|e| Status::internal(format!("attestation task failed: {e}")))?,
        };
        let attested = attested
            .map_err(|e| Status::permission_denied(format!("could not attest caller: {e}")))?;
        let (selectors, container) = self.container_selectors(attested).await;
        // The snapshot may have moved on while the runtime was asked.
        let snapshot = self.shared.snapshots.borrow().clone();
        Ok(Caller {
            selectors,
            snapshot,
            container,
        })
    }

    /// Adds the node's context and, for a process in a container, what the
    /// runtime says about that container. The container ID comes from the
    /// caller's own cgroup (read under the PID-reuse guard), and only that
    /// container's record is used: a container the runtime does not know
    /// (yet) is asked about for a short while, then the caller gets its unix
    /// selectors only, never another container's.
    async fn container_selectors(&self, attested: Attested) -> (SelectorSet, Option<Workload>) {
        let Attested { selectors, cgroup } = attested;
        let context = self.context_selector.as_ref();
        if let Some(id) = cgroup.container_id.clone() {
            match self.inventory.resolve(&id).await {
                Some(w) if container_vouches(&w, &cgroup) => {
                    return (caller_selectors(selectors, context, Some(&w)), Some(w));
                }
                Some(w) if w.container_id == id => {
                    // Someone able to create cgroups can name one after
                    // another container; the runtime's own path for that
                    // container tells the impostor apart.
                    self.shared.metrics.unknown_container_calls.inc();
                    tracing::warn!(
                        container = %id,
                        caller_cgroup = %cgroup.path,
                        runtime_cgroup = %w.cgroup,
                        "caller's cgroup names a container but is not that container's cgroup: unix selectors only"
                    );
                }
                _ => {
                    self.shared.metrics.unknown_container_calls.inc();
                    tracing::debug!(container = %id, cgroup = %cgroup.path, "caller's container is unknown to the runtime: unix selectors only");
                }
            }
        }
        (caller_selectors(selectors, context, None), None)
    }
}

/// `hallmark:context:<name>`, attested for every caller on the node.
pub(crate) fn context_selector(context_name: &str) -> Option<Selector> {
    Selector::from_parts("hallmark", "context", context_name).ok()
}

/// Whether the runtime's record `w` speaks for a process in `cgroup`: the
/// process's own cgroup names that container, and is that container's
/// cgroup (or one below it) as the runtime reports it.
pub(crate) fn container_vouches(w: &Workload, cgroup: &CgroupIdentity) -> bool {
    cgroup.container_id.as_deref() == Some(w.container_id.as_str())
        && cgroup_matches(&w.cgroup, &cgroup.path)
}

/// A caller's selectors: the kernel's (`unix`), the node's context, and
/// the runtime's selectors of the caller's container when the runtime
/// vouches for it ([`container_vouches`]).
pub(crate) fn caller_selectors(
    mut unix: SelectorSet,
    context: Option<&Selector>,
    container: Option<&Workload>,
) -> SelectorSet {
    if let Some(s) = context {
        unix.insert(s.clone());
    }
    if let Some(w) = container {
        for s in w.selectors() {
            unix.insert(s);
        }
    }
    unix
}

/// An attested caller.
pub struct Caller {
    pub selectors: SelectorSet,
    /// The snapshot the selectors are to be matched against.
    pub snapshot: Arc<Snapshot>,
    /// The runtime's record of the caller's container, when it is in one
    /// the runtime vouched for.
    pub container: Option<Workload>,
}

/// Whether a caller in cgroup `caller` is inside the container whose cgroup
/// the runtime reports as `runtime` (the same cgroup or one below it). An
/// empty runtime path cannot be checked and is accepted: the container ID
/// itself already came from the caller's own cgroup membership.
fn cgroup_matches(runtime: &str, caller: &str) -> bool {
    if runtime.is_empty() {
        return true;
    }
    let runtime = runtime.trim_end_matches('/');
    caller == runtime
        || caller
            .strip_prefix(runtime)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn caller_cgroup_must_be_the_containers() {
        let id = "a".repeat(64);
        let rt = format!("/docker/{id}");
        assert!(super::cgroup_matches(&rt, &rt));
        assert!(super::cgroup_matches(&rt, &format!("{rt}/init.scope")));
        assert!(super::cgroup_matches("", "/anything"));
        assert!(!super::cgroup_matches(
            &rt,
            &format!("/user.slice/user-1000.slice/docker-{id}.scope")
        ));
        assert!(!super::cgroup_matches(&rt, &format!("{rt}x")));
        assert!(!super::cgroup_matches(&rt, "/docker"));
    }
}
