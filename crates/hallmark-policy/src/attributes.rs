//! Endpoints as attribution knows them, and when a block matches one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::document::{Block, MatchExpression, Operator};

/// What is known about one end of a flow.
///
/// A workload has its SPIFFE IDs, selectors, labels and place; a node (a
/// host process) has its selectors, context and node; an unattributed or
/// external end has only `addr`; a bare SPIFFE ID (checking a design
/// before deploying it) has only `spiffe_ids`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(default)]
    pub spiffe_ids: Vec<String>,
    /// Selectors in text form (`docker:label:app:web`).
    #[serde(default)]
    pub selectors: Vec<String>,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub addr: Option<IpAddr>,
}

impl Attributes {
    /// An endpoint known only by its SPIFFE ID.
    pub fn spiffe_id(id: &str) -> Self {
        Attributes {
            spiffe_ids: vec![id.to_string()],
            ..Attributes::default()
        }
    }

    /// An endpoint known only by its address.
    pub fn address(addr: IpAddr) -> Self {
        Attributes {
            addr: Some(addr),
            ..Attributes::default()
        }
    }

    /// Whether attestation described this endpoint (a workload or a host
    /// process): only then are its labels known, possibly known to be none.
    /// A bare SPIFFE ID or an address alone says nothing about labels, so
    /// `NotIn` and `DoesNotExist` do not hold for it.
    pub fn is_attested(&self) -> bool {
        !self.selectors.is_empty()
            || !self.namespace.is_empty()
            || !self.labels.is_empty()
            || !self.image.is_empty()
            || !self.context.is_empty()
            || !self.node.is_empty()
    }
}

impl Block {
    /// Whether every condition of the block holds for `e`.
    pub fn matches(&self, e: &Attributes) -> bool {
        let text = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        self.spiffe_id
            .as_ref()
            .is_none_or(|p| e.spiffe_ids.iter().any(|id| p.matches(id)))
            && self.selector.as_ref().is_none_or(|s| {
                let (ty, value) = (s.ty(), s.value());
                e.selectors.iter().any(|have| {
                    have.len() == ty.len() + 1 + value.len()
                        && have.starts_with(ty)
                        && have.as_bytes()[ty.len()] == b':'
                        && have.ends_with(value)
                })
            })
            && text(&self.namespace, &e.namespace)
            && text(&self.context, &e.context)
            && text(&self.node, &e.node)
            // An endpoint without an image (a host process, a bare ID, an
            // address) has none for even `*` to match.
            && self
                .image
                .as_ref()
                .is_none_or(|i| !e.image.is_empty() && i.matches(&e.image))
            && self
                .cidr
                .as_ref()
                .is_none_or(|c| e.addr.is_some_and(|a| c.contains(a)))
            && self
                .labels
                .iter()
                .all(|(k, v)| e.labels.get(k).is_some_and(|have| have == v))
            && self.match_expressions.iter().all(|m| m.holds(e))
    }
}

impl MatchExpression {
    /// Kubernetes semantics on an attested endpoint; on an endpoint whose
    /// labels are unknown, no expression holds.
    pub fn holds(&self, e: &Attributes) -> bool {
        if !e.is_attested() {
            return false;
        }
        let have = e.labels.get(&self.key);
        match self.operator {
            Operator::In => have.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => have.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => have.is_some(),
            Operator::DoesNotExist => have.is_none(),
        }
    }
}

#[cfg(test)]
#[path = "attributes_tests.rs"]
mod tests;
