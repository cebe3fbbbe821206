//! The peer map agents enforce with: each address that exactly one owner
//! holds right now, by the ownership index, with that owner's groups.
//!
//! An agent's kernel program sees a remote address, not an identity. It
//! maps the address to the groups of whoever holds it now; an address
//! missing from the map is decided as an address alone (the policy's CIDR
//! groups and its default). So an address is in the map only while the
//! evidence names one owner beyond doubt:
//! - a range of that owner holds the instant: an open range from the
//!   clock skew before its first evidence until `max_gap` after its latest
//!   (a heartbeat may still be on its way); a closed one only until the
//!   skew before its stop;
//! - a range claims the instant while it holds it, and a closed one also
//!   until the skew after its stop;
//! - no range of another owner claims it (two owners near the instant: the
//!   address is ambiguous, as when a workload stops and another starts on
//!   its IP within the skew);
//! - the owner is current in the inventory as the datastore holds it now
//!   (a workload whose stop is stored is nobody's peer, even before its
//!   stop event reached the index).
//!
//! So when workload B stops and D starts on B's IP, the map names D's
//! groups for it once B's stop is past the skew, and no groups (absent)
//! before that; never B's after B's stop is known.
//!
//! The map is computed by the membership task (see
//! [`super::membership`]) on each pass, under the policy revision in
//! force, and published through `Shared::peer_addresses` when it changed.
//! Ports owned on their own (host-network workloads) are not in it: the
//! node's groups stand for its addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hallmark_flows::{Owner, OwnerId, OwnershipKey, RangeProof};
use hallmark_policy::Policy;

use super::membership::{Listing, MemberKey};
use crate::Shared;

/// Most addresses one push carries; the rest (highest addresses first)
/// are left out, counted and logged. Left out means "decided as an address
/// alone", the same as an ambiguous address.
pub const MAX_PEER_ADDRESSES: usize = 32_768;

/// The peer map as published: address -> the names of its owner's groups
/// (with `any`), under `revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerAddresses {
    /// The policy revision the groups were computed under.
    pub revision: i64,
    pub addresses: BTreeMap<IpAddr, Vec<String>>,
}

/// One pass over the ownership index.
#[derive(Debug, Default)]
pub(crate) struct PeerPass {
    pub peers: PeerAddresses,
    /// Addresses held by one owner now that did not fit in the push.
    pub cut: usize,
    /// The next instant (unix ms) at which some address's answer changes
    /// by the passing of time alone (a stop leaves the skew, a heartbeat
    /// is overdue), so the task can look again then.
    pub next_change_ms: Option<i64>,
}

/// The answer for one address now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldNow {
    /// The one owner holding it, or `None` (ambiguous, nobody, stale).
    pub owner: Option<OwnerId>,
    /// When the answer changes next with no new evidence.
    pub next_change_ms: Option<i64>,
}

/// Who holds an address at `now`, from its whole-IP ranges (see the module
/// docs for the rules).
pub(crate) fn held_now(ranges: &[RangeProof], now: i64, max_gap: i64, skew: i64) -> HeldNow {
    let mut claimant: Option<OwnerId> = None;
    let mut conflict = false;
    let mut holder: Option<OwnerId> = None;
    let mut next: Option<i64> = None;
    let mut note = |t: i64| {
        if t > now {
            next = Some(next.map_or(t, |n: i64| n.min(t)));
        }
    };
    for r in ranges {
        let from = r.first_ms.saturating_sub(skew);
        let until = if r.stopped {
            r.last_ms.saturating_add(skew)
        } else {
            r.last_ms.saturating_add(max_gap)
        };
        if now < from {
            note(from);
            continue;
        }
        if now > until {
            continue;
        }
        note(until.saturating_add(1));
        match claimant {
            None => claimant = Some(r.owner),
            Some(o) if o != r.owner => conflict = true,
            Some(_) => {}
        }
        if !r.stopped {
            holder = Some(r.owner);
        } else {
            // A stop stamped ahead of this clock by more than the skew:
            // the owner still holds it until then.
            let held_until = r.last_ms.saturating_sub(skew);
            if now < held_until {
                holder = Some(r.owner);
                note(held_until);
            }
        }
    }
    HeldNow {
        owner: if conflict { None } else { holder },
        next_change_ms: next,
    }
}

/// The listing's key of an ownership index owner.
fn member_key(owner: &Owner) -> MemberKey {
    match owner {
        Owner::Workload {
            context,
            node,
            container_id,
        } => MemberKey::Workload {
            context: context.clone(),
            node: node.clone(),
            container_id: container_id.clone(),
        },
        Owner::Node { context, node } => MemberKey::Node {
            context: context.clone(),
            node: node.clone(),
        },
    }
}

/// Computes the peer map at `now` (unix ms) from the server's ownership
/// index and `listing`, under `policy` at `revision`.
pub(crate) fn compute(
    shared: &Shared,
    listing: &Listing,
    policy: &Policy,
    revision: i64,
    now: i64,
) -> PeerPass {
    let mut pass = PeerPass {
        peers: PeerAddresses {
            revision,
            addresses: BTreeMap::new(),
        },
        ..PeerPass::default()
    };
    // Read the index under its lock, decide groups afterwards.
    let held: Vec<(IpAddr, Owner)> = {
        let Ok(a) = shared.flows.attributor.lock() else {
            tracing::warn!("the flow engine is unavailable; the peer map is empty this pass");
            return pass;
        };
        let index = a.index();
        let (max_gap, skew) = (index.max_gap_ms(), index.skew_ms());
        let mut held = Vec::new();
        for ip in index.ips() {
            let answer = held_now(&index.ranges(OwnershipKey::ip(ip)), now, max_gap, skew);
            if let Some(t) = answer.next_change_ms {
                pass.next_change_ms = Some(pass.next_change_ms.map_or(t, |n| n.min(t)));
            }
            if let Some(owner) = answer.owner.and_then(|o| index.owners().get(o)) {
                held.push((ip, owner.clone()));
            }
        }
        held
    };
    for (ip, owner) in held {
        let Some((_, attributes)) = listing.members.get(&member_key(&owner)) else {
            // Not current in the inventory: stopped, or a banned node.
            continue;
        };
        // The groups of the owner at this address, as a flow to or from
        // it is decided (CIDR blocks see the address).
        let mut a = attributes.clone();
        a.addr = Some(ip);
        let set = policy.groups_of(&a);
        let names = policy.names_in(&set).map(str::to_string).collect();
        pass.peers.addresses.insert(ip, names);
    }
    if pass.peers.addresses.len() > MAX_PEER_ADDRESSES {
        pass.cut = pass.peers.addresses.len() - MAX_PEER_ADDRESSES;
        while pass.peers.addresses.len() > MAX_PEER_ADDRESSES {
            pass.peers.addresses.pop_last();
        }
    }
    pass
}

#[cfg(test)]
#[path = "peers_tests.rs"]
mod tests;
