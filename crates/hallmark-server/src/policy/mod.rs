//! Identity policy on the server: the versioned document in force, group
//! membership that follows the inventory, the peer map and the fleet-wide
//! enforcement switch agents enforce with, and the admin queries over them
//! (apply, show, history, rollback, check, groups; audit, dry-run and
//! suggest over recorded flows).
//!
//! The policy in force is one [`CurrentPolicy`] in a [`PolicyCell`]: every
//! reader (flow verdicts, Sync streams, queries) takes the same compiled
//! [`Policy`], so they never disagree within a revision.

pub(crate) mod admin;
pub mod api;
pub mod api_queries;
pub(crate) mod enforcement;
pub mod membership;
pub mod peers;
mod queries;
mod review;
pub(crate) mod versions;

use std::collections::BTreeMap;
use std::sync::Arc;

use hallmark_policy::{Policy, PolicyDocument};
use tokio::sync::watch;

pub use peers::PeerAddresses;

/// A revision of the policy, compiled.
#[derive(Debug)]
pub struct CurrentPolicy {
    /// 0 before any document was applied.
    pub revision: i64,
    /// The document as applied (YAML); empty for revision 0.
    pub document: String,
    pub policy: Policy,
    /// Server time the revision was applied (unix ms); 0 for revision 0.
    pub applied_at_ms: i64,
}

impl CurrentPolicy {
    /// Revision 0: no groups, no rules, every flow allowed by default.
    pub fn none() -> Self {
        CurrentPolicy {
            revision: 0,
            document: String::new(),
            policy: Policy::compile(&PolicyDocument::default()),
            applied_at_ms: 0,
        }
    }
}

/// The policy in force on this server; subscribers wake on every change.
#[derive(Debug)]
pub struct PolicyCell {
    tx: watch::Sender<Arc<CurrentPolicy>>,
}

impl Default for PolicyCell {
    fn default() -> Self {
        PolicyCell {
            tx: watch::channel(Arc::new(CurrentPolicy::none())).0,
        }
    }
}

impl PolicyCell {
    pub fn current(&self) -> Arc<CurrentPolicy> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<CurrentPolicy>> {
        self.tx.subscribe()
    }

    /// Puts `next` in force unless it is older than the one in force (two
    /// servers' notices may arrive out of order).
    pub fn set(&self, next: CurrentPolicy) {
        self.tx.send_if_modified(|cur| {
            if next.revision <= cur.revision && cur.revision != 0 {
                return false;
            }
            *cur = Arc::new(next);
            true
        });
    }
}

/// What each identity the server knows is, in policy terms: SPIFFE ID ->
/// the names of its groups (the union over the running workloads holding
/// it, with the groups the bare ID matches), under `revision`. Agents
/// decide for a peer presenting that ID with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityGroups {
    /// The policy revision the groups were computed under.
    pub revision: i64,
    pub groups: BTreeMap<String, Vec<String>>,
}
