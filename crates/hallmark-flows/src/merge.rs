//! One connection reported more than once becomes one stored flow.
//!
//! An agent reports a long-lived connection several times (interim records
//! with cumulative counters, then the final one), and when both ends of a
//! connection run agents each end reports it. Every such report is oriented
//! the same way (`src` the initiator) and starts within the clock skew of
//! the others, so reports of one connection are recognised by protocol,
//! both addresses and a start within a short window, and folded into one
//! record by [`StoredFlow::merge`].

use crate::endpoint::{Endpoint, FlowStatus, StoredFlow};
use crate::flow::{Flow, Protocol, Reporter, Side, TcpOutcome};

/// The default window within which two reports' starts make them one
/// connection: below the second a 4-tuple waits in TIME_WAIT before reuse,
/// so two connections never fall into one window.
pub const DEFAULT_MERGE_WINDOW_MS: i64 = 750;

impl Flow {
    /// Whether reports of this flow are merged per connection: TCP and UDP
    /// captured by an agent, whose reports of one connection repeat.
    pub fn is_mergeable(&self) -> bool {
        matches!(self.reporter, Reporter::Agent(_))
            && matches!(self.protocol, Protocol::Tcp | Protocol::Udp)
    }

    /// Whether `other` reports the same connection as `self`: both
    /// mergeable, same protocol and addresses, starts at most `window_ms`
    /// apart (a negative window is 0).
    pub fn same_connection(&self, other: &Flow, window_ms: i64) -> bool {
        self.is_mergeable()
            && other.is_mergeable()
            && self.protocol == other.protocol
            && self.src == other.src
            && self.dst == other.dst
            && self.start_ms.abs_diff(other.start_ms) <= u64::try_from(window_ms).unwrap_or(0)
    }
}

/// The outcome of two reports of one connection: a failure (reset,
/// refused, timed out) is news an established report does not undo; of two
/// failures, the one stored first stays.
fn merged_outcome(old: Option<TcpOutcome>, new: Option<TcpOutcome>) -> Option<TcpOutcome> {
    match (old, new) {
        (None, n) => n,
        (Some(TcpOutcome::Established), Some(n)) => Some(n),
        (o, _) => o,
    }
}

/// An end of two reports: the stored one, unless
/// - the new report saw that end from inside (its own socket, tagged at
///   capture time) and the stored one did not: what the socket's cgroup
///   says beats what the ownership index says (a host-network workload
///   behind the node's address, a unit);
/// - it has no answer and the new one does;
/// - it is the same node and only the new one knew the host process's
///   unit (the report of that node's own agent).
fn merged_end(old: &Endpoint, new: &Endpoint, old_local: bool, new_local: bool) -> Endpoint {
    if new_local && !old_local {
        return new.clone();
    }
    match (old, new) {
        (Endpoint::Unattributed { .. }, n) if !matches!(n, Endpoint::Unattributed { .. }) => {
            n.clone()
        }
        (
            Endpoint::Node {
                context,
                node,
                spiffe_id,
                unit,
            },
            Endpoint::Node {
                context: c2,
                node: n2,
                unit: u2,
                ..
            },
        ) if unit.is_empty() && context == c2 && node == n2 => Endpoint::Node {
            context: context.clone(),
            node: node.clone(),
            spiffe_id: spiffe_id.clone(),
            unit: u2.clone(),
        },
        _ => old.clone(),
    }
}

impl StoredFlow {
    /// `self` (stored first) and `new`, reports of one connection, as one
    /// record: the earliest start and latest end, each counter's largest
    /// value (agents report cumulative counters), an RTT if either knew it,
    /// a failure outcome over an established one, each end as the report
    /// that saw it from inside describes it (else the first description
    /// that has an answer), and the first
    /// report's reporter and local side (the described ends carry both
    /// identities). Keeps `self`'s id.
    pub fn merge(&self, new: &StoredFlow) -> StoredFlow {
        let (a, b) = (&self.flow, &new.flow);
        let flow = Flow {
            start_ms: a.start_ms.min(b.start_ms),
            end_ms: a.end_ms.max(b.end_ms),
            protocol: a.protocol,
            src: a.src,
            dst: a.dst,
            initiator: a.initiator,
            bytes_sent: a.bytes_sent.max(b.bytes_sent),
            packets_sent: a.packets_sent.max(b.packets_sent),
            bytes_received: a.bytes_received.max(b.bytes_received),
            packets_received: a.packets_received.max(b.packets_received),
            outcome: merged_outcome(a.outcome, b.outcome),
            retransmits: a.retransmits.max(b.retransmits),
            rtt_us: a.rtt_us.or(b.rtt_us),
            reporter: a.reporter.clone(),
            local: a.local.clone(),
            // A kernel's decision is kept through a merge (a denied
            // connect is one report; the later one wins between two).
            enforced: b.enforced.clone().or_else(|| a.enforced.clone()),
        };
        let local_is = |f: &Flow, side: Side| f.local.as_ref().is_some_and(|l| l.side == side);
        let src = merged_end(
            &self.src,
            &new.src,
            local_is(a, Side::Source),
            local_is(b, Side::Source),
        );
        let dst = merged_end(
            &self.dst,
            &new.dst,
            local_is(a, Side::Destination),
            local_is(b, Side::Destination),
        );
        let mut merged = StoredFlow {
            id: self.id,
            status: FlowStatus::of(&src, &dst),
            src,
            dst,
            attributed_ms: self.attributed_ms.max(new.attributed_ms),
            flow,
            verdict: None,
            verdict_rule: None,
            verdict_mode: None,
            policy_revision: None,
        };
        merged.keep_verdict_of(self, new);
        merged
    }

    /// Keeps the verdict of a report that asked policy the same question
    /// as the merged flow (same ends, same initiator), the newer revision's
    /// if both did. When neither did (each report knew only one end), the
    /// merged flow has no verdict until it is decided again: a verdict
    /// decided from a half-known flow would be wrong for the whole one.
    fn keep_verdict_of(&mut self, a: &StoredFlow, b: &StoredFlow) {
        let same_question = |r: &StoredFlow| {
            r.verdict.is_some()
                && r.flow.initiator == self.flow.initiator
                && r.src == self.src
                && r.dst == self.dst
        };
        let pick = match (same_question(a), same_question(b)) {
            (true, true) if b.policy_revision > a.policy_revision => Some(b),
            (true, _) => Some(a),
            (false, true) => Some(b),
            (false, false) => None,
        };
        if let Some(r) = pick {
            self.verdict = r.verdict;
            self.verdict_rule = r.verdict_rule.clone();
            self.verdict_mode = r.verdict_mode;
            self.policy_revision = r.policy_revision;
        }
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
