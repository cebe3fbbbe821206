//! Who can hold an IP address: a workload or a node.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Default, Clone)]
pub struct Owners {
    list: Vec<Owner>,
    ids: HashMap<Owner, OwnerId>,
}

impl Owners {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle of `owner`, adding it when new.
    pub fn intern(&mut self, owner: &Owner) -> OwnerId {
        if let Some(id) = self.ids.get(owner) {
            return *id;
        }
        // More than 4 billion distinct owners in one process is not a
        // workload any index here is sized for; saturate rather than wrap.
        let id = OwnerId(u32::try_from(self.list.len()).unwrap_or(u32::MAX));
        self.list.push(owner.clone());
        self.ids.insert(owner.clone(), id);
        id
    }

    /// The handle of `owner` if it was ever interned.
    pub fn find(&self, owner: &Owner) -> Option<OwnerId> {
        self.ids.get(owner).copied()
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
}
