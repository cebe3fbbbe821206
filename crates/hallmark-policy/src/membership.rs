//! Group membership of many endpoints, kept current one change at a time.
//!
//! A [`Membership`] holds, per key (a workload or a node), the endpoint's
//! [`Attributes`] and its [`GroupSet`] under one compiled [`Policy`], with
//! two reverse indexes: group -> keys (for `group members` and the member
//! counts) and SPIFFE ID -> keys (for the groups an identity stands for
//! when a peer presents it). A change costs one [`Policy::groups_of`] and
//! the index updates of what changed; only a new policy recomputes all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::attributes::Attributes;
use crate::engine::{GroupSet, Policy};

/// Endpoints and their groups under one policy.
#[derive(Debug, Clone)]
pub struct Membership<K: Ord + Clone> {
    policy: Arc<Policy>,
    endpoints: BTreeMap<K, Member>,
    /// Group id -> keys of its members.
    by_group: Vec<BTreeSet<K>>,
    /// SPIFFE ID -> keys of the endpoints holding it.
    by_id: BTreeMap<String, BTreeSet<K>>,
}

#[derive(Debug, Clone)]
struct Member {
    attributes: Attributes,
    groups: GroupSet,
}

impl<K: Ord + Clone> Membership<K> {
    /// An empty index under `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        let groups = policy.group_names().count();
        Membership {
            policy,
            endpoints: BTreeMap::new(),
            by_group: vec![BTreeSet::new(); groups],
            by_id: BTreeMap::new(),
        }
    }

    /// The policy the groups are computed under.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Adds or replaces the endpoint at `key`; true when its groups
    /// changed (a new endpoint's always do: it joins at least `any`).
    /// Unchanged attributes cost nothing.
    pub fn upsert(&mut self, key: K, attributes: Attributes) -> bool {
        if let Some(old) = self.endpoints.get(&key) {
            if old.attributes == attributes {
                return false;
            }
        }
        let groups = self.policy.groups_of(&attributes);
        let old = self.endpoints.remove(&key);
        let changed = old.as_ref().is_none_or(|o| o.groups != groups);
        if let Some(old) = &old {
            if changed {
                for id in old.groups.ids() {
                    if !groups.contains(id) {
                        if let Some(keys) = self.by_group.get_mut(id) {
                            keys.remove(&key);
                        }
                    }
                }
            }
            for id in &old.attributes.spiffe_ids {
                if !attributes.spiffe_ids.contains(id) {
                    self.unlink_id(id, &key);
                }
            }
        }
        for id in groups.ids() {
            if old.as_ref().is_none_or(|o| !o.groups.contains(id)) {
                if let Some(keys) = self.by_group.get_mut(id) {
                    keys.insert(key.clone());
                }
            }
        }
        for id in &attributes.spiffe_ids {
            self.by_id
                .entry(id.clone())
                .or_default()
                .insert(key.clone());
        }
        self.endpoints.insert(key, Member { attributes, groups });
        changed
    }

    /// Forgets the endpoint at `key`; true when it was known.
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(old) = self.endpoints.remove(key) else {
            return false;
        };
        for id in old.groups.ids() {
            if let Some(keys) = self.by_group.get_mut(id) {
                keys.remove(key);
            }
        }
        for id in &old.attributes.spiffe_ids {
            self.unlink_id(id, key);
        }
        true
    }

    fn unlink_id(&mut self, id: &str, key: &K) {
        if let Some(keys) = self.by_id.get_mut(id) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_id.remove(id);
            }
        }
    }

    /// The groups of the endpoint at `key`.
    pub fn groups(&self, key: &K) -> Option<&GroupSet> {
        self.endpoints.get(key).map(|m| &m.groups)
    }

    /// The attributes of the endpoint at `key`.
    pub fn attributes(&self, key: &K) -> Option<&Attributes> {
        self.endpoints.get(key).map(|m| &m.attributes)
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.endpoints.keys()
    }

    /// The members of `group`, in key order; none for a group the policy
    /// does not define.
    pub fn members(&self, group: &str) -> Vec<(&K, &Attributes)> {
        let Some(keys) = self
            .policy
            .group_id(group)
            .and_then(|id| self.by_group.get(id))
        else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| self.endpoints.get_key_value(k))
            .map(|(k, m)| (k, &m.attributes))
            .collect()
    }

    /// Members per group, in the policy's group order (`any` first).
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.policy
            .group_names()
            .zip(self.by_group.iter())
            .map(|(name, keys)| (name.to_string(), keys.len()))
            .collect()
    }

    /// The groups a peer presenting `spiffe_id` is in: the union of the
    /// groups of every endpoint holding it, with the groups the bare ID
    /// matches. `None` when no endpoint holds it.
    pub fn identity_groups(&self, spiffe_id: &str) -> Option<GroupSet> {
        let keys = self.by_id.get(spiffe_id)?;
        let mut set = self.policy.groups_of(&Attributes::spiffe_id(spiffe_id));
        for m in keys.iter().filter_map(|k| self.endpoints.get(k)) {
            set.union_with(&m.groups);
        }
        Some(set)
    }

    /// Every SPIFFE ID an endpoint holds -> the names of its
    /// [`Membership::identity_groups`].
    pub fn identities(&self) -> BTreeMap<String, Vec<String>> {
        self.by_id
            .keys()
            .filter_map(|id| {
                let set = self.identity_groups(id)?;
                let names = self.policy.names_in(&set).map(str::to_string).collect();
                Some((id.clone(), names))
            })
            .collect()
    }

    /// Puts `policy` in force and recomputes every endpoint's groups.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        let groups = policy.group_names().count();
        self.policy = policy;
        self.by_group = vec![BTreeSet::new(); groups];
        for (key, m) in &mut self.endpoints {
            m.groups = self.policy.groups_of(&m.attributes);
            for id in m.groups.ids() {
                if let Some(keys) = self.by_group.get_mut(id) {
                    keys.insert(key.clone());
                }
            }
        }
    }

    /// How many endpoints are held.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
