//! What policy said about each stored flow: the verdict a flow is stored
//! with, the words it is stored and filtered by, the per-edge counts of the
//! identity graph, and the judge that decides a batch of flows cheaply.
//!
//! A flow is decided once, when it is stored, by the policy in force then
//! (its revision is stored beside the verdict), so "what did policy say
//! about this flow" stays answerable after the policy changes. Deciding a
//! batch asks for each end's groups; a batch names few ends many times, so
//! [`Judge`] computes the groups of each described end once.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use hallmark_policy::Verdict;
use hallmark_policy::{DecidedBy, GroupSet, Mode, Outcome, Policy, Protocol as PolicyProtocol};
use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, StoredFlow};
use crate::flow::{Initiator, Protocol};
use crate::policy::attributes;

/// Every verdict, in the order listings count them.
pub const OUTCOMES: [Outcome; 4] = [
    Outcome::Allowed,
    Outcome::Denied,
    Outcome::WouldDeny,
    Outcome::NoDecision,
];

/// The stored (and JSON) word of a verdict: `allowed`, `denied`,
/// `would-deny`, `no-decision`.
pub fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Allowed => "allowed",
        Outcome::Denied => "denied",
        Outcome::WouldDeny => "would-deny",
        Outcome::NoDecision => "no-decision",
    }
}

/// Inverse of [`outcome_word`].
pub fn parse_outcome_word(s: &str) -> Option<Outcome> {
    OUTCOMES.into_iter().find(|o| outcome_word(*o) == s)
}

/// A verdict as an operator types it (`flows list --verdict`): the four
/// words, `allow`/`deny` for short, `_` for `-`, any case.
pub fn parse_verdict_filter(input: &str) -> Result<Outcome, String> {
    let s = input.trim().to_ascii_lowercase().replace('_', "-");
    let o = match s.as_str() {
        "allow" => Some(Outcome::Allowed),
        "deny" => Some(Outcome::Denied),
        other => parse_outcome_word(other),
    };
    o.ok_or_else(|| {
        format!(
            "verdict `{input}` is not one of allowed, denied (or deny), would-deny, no-decision"
        )
    })
}

/// How bad a verdict is, for an edge's summary: denied > would-deny >
/// allowed > no-decision.
fn severity(o: Outcome) -> u8 {
    match o {
        Outcome::NoDecision => 0,
        Outcome::Allowed => 1,
        Outcome::WouldDeny => 2,
        Outcome::Denied => 3,
    }
}

/// Flows per verdict, in an identity-graph bucket or edge. Flows stored
/// before verdicts existed are in none of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictCounts {
    #[serde(default)]
    pub allowed: u64,
    #[serde(default)]
    pub denied: u64,
    #[serde(default)]
    pub would_deny: u64,
    #[serde(default)]
    pub no_decision: u64,
}

impl VerdictCounts {
    /// The counter of `o`.
    pub fn get(&self, o: Outcome) -> u64 {
        match o {
            Outcome::Allowed => self.allowed,
            Outcome::Denied => self.denied,
            Outcome::WouldDeny => self.would_deny,
            Outcome::NoDecision => self.no_decision,
        }
    }

    /// The counter of `o`, to add to.
    pub fn slot(&mut self, o: Outcome) -> &mut u64 {
        match o {
            Outcome::Allowed => &mut self.allowed,
            Outcome::Denied => &mut self.denied,
            Outcome::WouldDeny => &mut self.would_deny,
            Outcome::NoDecision => &mut self.no_decision,
        }
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &VerdictCounts) {
        for o in OUTCOMES {
            let n = other.get(o);
            let s = self.slot(o);
            *s = s.saturating_add(n);
        }
    }

    /// The worst verdict counted (denied > would-deny > allowed >
    /// no-decision); `None` when nothing was counted.
    pub fn worst(&self) -> Option<Outcome> {
        OUTCOMES
            .into_iter()
            .filter(|o| self.get(*o) > 0)
            .max_by_key(|o| severity(*o))
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        OUTCOMES.into_iter().all(|o| self.get(o) == 0)
    }
}

impl fmt::Display for VerdictCounts {
    /// `2 allowed, 1 denied`: the non-zero counters, `-` when none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = OUTCOMES
            .into_iter()
            .filter(|o| self.get(*o) > 0)
            .map(|o| format!("{} {}", self.get(o), outcome_word(o)))
            .collect();
        if parts.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl StoredFlow {
    /// The flow with `v`, decided under policy revision `revision`.
    pub fn with_verdict(mut self, v: &Verdict, revision: i64) -> Self {
        self.set_verdict(v, revision);
        self
    }

    /// Sets the verdict fields from `v`, decided under `revision`.
    pub fn set_verdict(&mut self, v: &Verdict, revision: i64) {
        self.verdict = Some(v.outcome);
        self.verdict_rule = v.rule().map(str::to_string);
        self.verdict_mode = match &v.decided_by {
            DecidedBy::Rule { mode, .. } => Some(*mode),
            _ => None,
        };
        self.policy_revision = Some(revision);
    }

    /// Removes the verdict (a flow whose verdict is unknown).
    pub fn clear_verdict(&mut self) {
        self.verdict = None;
        self.verdict_rule = None;
        self.verdict_mode = None;
        self.policy_revision = None;
    }
}

/// A policy and its revision: what a flow's verdict is decided by.
pub trait PolicyInForce: Send + Sync + fmt::Debug {
    fn revision(&self) -> i64;
    fn policy(&self) -> &Policy;
}

/// A compiled policy with its revision, for callers that hold no other
/// form of it.
#[derive(Debug, Clone)]
pub struct RevisedPolicy {
    pub revision: i64,
    pub policy: Policy,
}

impl PolicyInForce for RevisedPolicy {
    fn revision(&self) -> i64 {
        self.revision
    }

    fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Decides the verdicts of many flows under one policy, computing the
/// groups of each described end (the description and its address) once.
/// Decides exactly as [`crate::policy::decide`] does.
pub struct Judge<'p> {
    policy: &'p Policy,
    revision: i64,
    /// Per address, the ends seen there and their groups (`None`: the end
    /// is unattributed). Few ends share an address, so a short list.
    groups: HashMap<IpAddr, Vec<(Endpoint, Option<GroupSet>)>>,
}

impl<'p> Judge<'p> {
    pub fn new(p: &'p dyn PolicyInForce) -> Self {
        Judge {
            policy: p.policy(),
            revision: p.revision(),
            groups: HashMap::new(),
        }
    }

    /// The revision verdicts are decided under.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    fn groups_of(&mut self, end: &Endpoint, addr: IpAddr) -> Option<GroupSet> {
        let seen = self.groups.entry(addr).or_default();
        if let Some((_, g)) = seen.iter().find(|(e, _)| e == end) {
            return g.clone();
        }
        let g = attributes(end, addr).map(|a| self.policy.groups_of(&a));
        seen.push((end.clone(), g.clone()));
        g
    }

    /// What the policy says about `f`.
    pub fn decide(&mut self, f: &StoredFlow) -> Verdict {
        let protocol = match f.flow.protocol {
            Protocol::Tcp => PolicyProtocol::Tcp,
            Protocol::Udp => PolicyProtocol::Udp,
            _ => return Verdict::no_decision(),
        };
        // Both ends are described before the initiator is looked at, as
        // `policy::question` does: an unattributed end decides nothing.
        let Some(src) = self.groups_of(&f.src, f.flow.src.ip()) else {
            return Verdict::no_decision();
        };
        let Some(dst) = self.groups_of(&f.dst, f.flow.dst.ip()) else {
            return Verdict::no_decision();
        };
        match f.flow.initiator {
            Initiator::Source => self.policy.decide(&src, &dst, protocol, f.flow.dst.port()),
            Initiator::Destination => self.policy.decide(&dst, &src, protocol, f.flow.src.port()),
            Initiator::Unknown => Verdict::no_decision(),
        }
    }

    /// `f` with its verdict set.
    pub fn judge(&mut self, f: &mut StoredFlow) {
        // A node's kernel decided this one (an agent's enforcement
        // event): that decision is the flow's, whatever the policy in
        // force here says now.
        if let Some(e) = &f.flow.enforced {
            f.verdict = Some(e.verdict);
            f.verdict_rule = e.rule.clone();
            f.verdict_mode = e.mode;
            f.policy_revision = Some(e.policy_revision);
            return;
        }
        let v = self.decide(f);
        f.set_verdict(&v, self.revision);
    }
}

/// The mode word of a stored rule mode.
pub fn mode_word(m: Mode) -> &'static str {
    m.as_str()
}

/// Inverse of [`mode_word`].
pub fn parse_mode_word(s: &str) -> Option<Mode> {
    [Mode::Enforce, Mode::Watch]
        .into_iter()
        .find(|m| m.as_str() == s)
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
