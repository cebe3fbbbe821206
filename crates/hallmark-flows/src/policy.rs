//! What identity policy sees of a stored flow: the attributes of each end,
//! who initiated, and the acceptor's port. The server's verdicts, the audit
//! and the dry-run all ask through here, so they never disagree.
//!
//! A flow gets no decision ([`Outcome::NoDecision`]) when policy cannot be
//! asked honestly: an end is unattributed (its owner is unknown, and
//! deciding by the address alone would decide for whoever held it), the
//! initiator is unknown (the acceptor's port is then a guess), or the
//! protocol is neither TCP nor UDP.

use std::net::IpAddr;

use hallmark_policy::{Attributes, Outcome, Policy, Protocol as PolicyProtocol, Verdict};

use crate::endpoint::{Endpoint, StoredFlow};
use crate::flow::{Initiator, Protocol};

/// One question to policy: initiator -> acceptor on the acceptor's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub from: Attributes,
    pub to: Attributes,
    pub protocol: PolicyProtocol,
    pub port: u16,
}

/// The attributes of one end at `addr`; `None` for an unattributed end.
pub fn attributes(end: &Endpoint, addr: IpAddr) -> Option<Attributes> {
    let a = match end {
        Endpoint::Workload(w) => Attributes {
            spiffe_ids: w.spiffe_ids.clone(),
            selectors: w.selectors.clone(),
            namespace: w.namespace.clone(),
            labels: w.labels.clone(),
            image: w.image.clone(),
            context: w.context.clone(),
            node: w.node.clone(),
            addr: Some(addr),
        },
        Endpoint::Node {
            context,
            node,
            spiffe_id,
            ..
        } => Attributes {
            spiffe_ids: if spiffe_id.is_empty() {
                Vec::new()
            } else {
                vec![spiffe_id.clone()]
            },
            context: context.clone(),
            node: node.clone(),
            addr: Some(addr),
            ..Attributes::default()
        },
        Endpoint::External { .. } => Attributes::address(addr),
        Endpoint::Unattributed { .. } => return None,
    };
    Some(a)
}

/// The policy question a flow asks, or `None` when it asks none (see the
/// module docs).
pub fn question(f: &StoredFlow) -> Option<Question> {
    let protocol = match f.flow.protocol {
        Protocol::Tcp => PolicyProtocol::Tcp,
        Protocol::Udp => PolicyProtocol::Udp,
        _ => return None,
    };
    let src = attributes(&f.src, f.flow.src.ip())?;
    let dst = attributes(&f.dst, f.flow.dst.ip())?;
    match f.flow.initiator {
        Initiator::Source => Some(Question {
            from: src,
            to: dst,
            protocol,
            port: f.flow.dst.port(),
        }),
        Initiator::Destination => Some(Question {
            from: dst,
            to: src,
            protocol,
            port: f.flow.src.port(),
        }),
        Initiator::Unknown => None,
    }
}

/// What `policy` says about a stored flow.
pub fn decide(policy: &Policy, f: &StoredFlow) -> Verdict {
    match question(f) {
        Some(q) => policy.decide(
            &policy.groups_of(&q.from),
            &policy.groups_of(&q.to),
            q.protocol,
            q.port,
        ),
        None => Verdict::no_decision(),
    }
}

/// Whether `v` is a verdict a flow can be stored with and filtered by.
pub fn is_decided(v: &Verdict) -> bool {
    v.outcome != Outcome::NoDecision
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
