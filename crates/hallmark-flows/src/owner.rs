//! Who can hold an IP address: a workload or a node.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::ownership::FastMap;

/// The holder of an IP address (or of a port on one).
///
/// A workload is keyed as the inventory keys it: the context, the node and
/// the container ID together, so the same container ID reported by two
/// clusters never merges. A node owns its host IPs, on which host processes
/// and host-network workloads talk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Owner {
    Workload {
        context: String,
        node: String,
        container_id: String,
    },
    Node {
        context: String,
        node: String,
    },
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Workload {
                context,
                node,
                container_id,
            } => {
                let short = container_id.get(..12).unwrap_or(container_id);
                write!(f, "workload {context}/{node}/{short}")
            }
            Owner::Node { context, node } => write!(f, "node {context}/{node}"),
        }
    }
}

/// A compact handle for an [`Owner`] in one [`Owners`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(u32);

impl OwnerId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Interns owners so the ownership index stores 4-byte handles.
///
/// Each owner is stored once, in `list`; the lookup side keeps only its
/// 64-bit hash. An index holds about one owner per range (every tenure of
/// an address is a new workload), so a second copy of each owner's three
/// strings as a map key would be most of the index's memory.
#[derive(Debug, Default, Clone)]
pub struct Owners {
    list: Vec<Owner>,
    /// Hash of an owner → the first owner interned with that hash.
    by_hash: FastMap<u64, OwnerId>,
    /// Owners whose hash an earlier, different owner already took. With a
    /// 64-bit hash this stays empty in practice; it keeps interning exact.
    collided: HashMap<Owner, OwnerId>,
}

/// A fixed hash of an owner (SipHash with the standard library's fixed
/// keys): stable within the process, which is all the table needs.
fn owner_hash(owner: &Owner) -> u64 {
    let mut h = DefaultHasher::new();
    owner.hash(&mut h);
    h.finish()
}

impl Owners {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle of `owner`, adding it when new.
    pub fn intern(&mut self, owner: &Owner) -> OwnerId {
        let hash = owner_hash(owner);
        if let Some(id) = self.lookup(hash, owner) {
            return id;
        }
        // More than 4 billion distinct owners in one process is not a
        // workload any index here is sized for; saturate rather than wrap.
        let id = OwnerId(u32::try_from(self.list.len()).unwrap_or(u32::MAX));
        self.list.push(owner.clone());
        match self.by_hash.entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(id);
            }
            Entry::Occupied(_) => {
                self.collided.insert(owner.clone(), id);
            }
        }
        id
    }

    /// The handle of `owner` if it was ever interned.
    pub fn find(&self, owner: &Owner) -> Option<OwnerId> {
        self.lookup(owner_hash(owner), owner)
    }

    fn lookup(&self, hash: u64, owner: &Owner) -> Option<OwnerId> {
        let id = *self.by_hash.get(&hash)?;
        if self.get(id) == Some(owner) {
            return Some(id);
        }
        self.collided.get(owner).copied()
    }

    /// The owner behind a handle from this table.
    pub fn get(&self, id: OwnerId) -> Option<&Owner> {
        self.list.get(id.index())
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable() {
        let a = Owner::Workload {
            context: "prod".into(),
            node: "n1".into(),
            container_id: "a".repeat(64),
        };
        let n = Owner::Node {
            context: "prod".into(),
            node: "n1".into(),
        };
        let mut owners = Owners::new();
        let ia = owners.intern(&a);
        let in_ = owners.intern(&n);
        assert_ne!(ia, in_);
        assert_eq!(owners.intern(&a), ia);
        assert_eq!(owners.find(&n), Some(in_));
        assert_eq!(owners.get(ia), Some(&a));
        assert_eq!(owners.len(), 2);
        assert_eq!(a.to_string(), "workload prod/n1/aaaaaaaaaaaa");
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, r#"{"kind":"node","context":"prod","node":"n1"}"#);
    }

    #[test]
    fn owners_sharing_a_hash_stay_apart() {
        let a = Owner::Node {
            context: "prod".into(),
            node: "a".into(),
        };
        let b = Owner::Node {
            context: "prod".into(),
            node: "b".into(),
        };
        let mut owners = Owners::new();
        let ia = owners.intern(&a);
        // Make `b`'s hash look taken by `a`, as a 64-bit collision would.
        owners.by_hash.insert(owner_hash(&b), ia);
        assert_eq!(owners.find(&b), None);
        let ib = owners.intern(&b);
        assert_ne!(ib, ia);
        assert_eq!(owners.intern(&b), ib);
        assert_eq!(owners.find(&b), Some(ib));
        assert_eq!(owners.find(&a), Some(ia));
        assert_eq!(owners.get(ib), Some(&b));
        assert_eq!(owners.len(), 2);
    }
}
