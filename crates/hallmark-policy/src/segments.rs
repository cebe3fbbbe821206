//! A decision over the whole port space at once: the segments of ports on
//! which [`Policy::decide`] gives one verdict, for tables that look a port
//! up instead of asking the engine (the kernel's, see [`crate::kernel`]).
//!
//! The segments come from the port tables of the (initiator group,
//! acceptor group) cells a rule names, the same cells a decision visits:
//! the verdict can only change where one of those tables starts a
//! segment, so each boundary is decided once with the same two minima
//! [`Policy::decide`] keeps, and runs with the same outcome and deciding
//! rule are merged.

use super::{cell, GroupSet, Outcome, Policy, PortTable, Verdict, NONE};
use crate::document::{Action, Cidr, Protocol};

/// One run of ports with one verdict, by rank (`NONE`: the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RankedSegment {
    pub(crate) start: u16,
    pub(crate) outcome: Outcome,
    pub(crate) rank: u32,
}

impl Policy {
    /// The groups some rule names, on either side: a decision depends on
    /// an endpoint's membership of these only.
    pub(crate) fn ruled_groups(&self) -> GroupSet {
        let mut set = GroupSet::with_capacity(self.targets.len());
        for (f, targets) in self.targets.iter().enumerate() {
            if !targets.is_empty() {
                set.insert(f);
                set.union_with(targets);
            }
        }
        set
    }

    /// The groups of the other end that can change a decision for an
    /// endpoint in `set`: the acceptors rules name for an initiator in
    /// `set`, and the initiators rules name for an acceptor in `set`.
    /// Deciding with the other end's groups cut to these gives the same
    /// verdict as with all of them.
    pub(crate) fn counterparts(&self, set: &GroupSet) -> GroupSet {
        let mut out = GroupSet::with_capacity(self.targets.len());
        for (f, targets) in self.targets.iter().enumerate() {
            if set.contains(f) {
                out.union_with(targets);
            }
            if targets.intersection(set).next().is_some() {
                out.insert(f);
            }
        }
        out
    }

    /// The acceptor's port space split into maximal runs with one verdict
    /// (outcome and deciding rule): `(start, verdict)` pairs, the first
    /// starting at 0, starts strictly increasing, each run reaching up to
    /// the next start (the last up to 65535). For every port `p`,
    /// `decide(from, to, protocol, p)` is the verdict of the run holding
    /// `p`.
    pub fn port_segments(
        &self,
        from: &GroupSet,
        to: &GroupSet,
        protocol: Protocol,
    ) -> Vec<(u16, Verdict)> {
        self.ranked_segments(from, to, protocol)
            .into_iter()
            .map(|s| (s.start, self.verdict(s.outcome, s.rank)))
            .collect()
    }

    /// Rule names by rank: the order in which rules decide (priority, deny
    /// before allow, document order). Kernel images number rules by this
    /// order from 1 (0 is the default).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.ranked.iter().map(|r| &*r.name)
    }

    /// The document's `default`: what decides when no rule matches.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// [`Policy::port_segments`] with the deciding rule as its rank.
    pub(crate) fn ranked_segments(
        &self,
        from: &GroupSet,
        to: &GroupSet,
        protocol: Protocol,
    ) -> Vec<RankedSegment> {
        let tables = self.tables(from, to, protocol);
        let mut starts: Vec<u16> = tables
            .iter()
            .flat_map(|t| t.starts.iter().copied())
            .collect();
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        let mut out: Vec<RankedSegment> = Vec::new();
        for start in starts {
            let (mut all, mut enforced) = (NONE, NONE);
            for t in &tables {
                let (a, e) = t.lookup(start);
                all = all.min(a);
                enforced = enforced.min(e);
            }
            let (outcome, rank) = self.outcome(all, enforced);
            if out
                .last()
                .is_some_and(|s| s.outcome == outcome && s.rank == rank)
            {
                continue;
            }
            out.push(RankedSegment {
                start,
                outcome,
                rank,
            });
        }
        out
    }

    /// Every `cidr` condition of the document's groups, duplicates
    /// included.
    pub(crate) fn cidrs(&self) -> impl Iterator<Item = &Cidr> {
        self.blocks.iter().flatten().filter_map(|b| b.cidr.as_ref())
    }

    /// The port tables a decision from `from` to `to` visits.
    fn tables(&self, from: &GroupSet, to: &GroupSet, protocol: Protocol) -> Vec<&PortTable> {
        let mut tables = Vec::new();
        for f in from.ids() {
            let Some(targets) = self.targets.get(f) else {
                continue;
            };
            for t in targets.intersection(to) {
                if let Some(table) = self.index.get(&cell(f, t, protocol)) {
                    tables.push(table);
                }
            }
        }
        tables
    }

    /// The outcome and deciding rank from the two minima, as
    /// [`Policy::decide`] derives them.
    fn outcome(&self, all: u32, enforced: u32) -> (Outcome, u32) {
        let action_of = |rank: u32| {
            self.ranked
                .get(rank as usize)
                .map_or(self.default, |r| r.action)
        };
        if action_of(enforced) == Action::Deny {
            (Outcome::Denied, enforced)
        } else if action_of(all) == Action::Deny {
            (Outcome::WouldDeny, all)
        } else {
            (Outcome::Allowed, all)
        }
    }
}

impl GroupSet {
    /// The same set without trailing empty words, so sets built with
    /// different capacities compare equal when they hold the same groups.
    /// The groups of this set that are also in `onto`.
    pub(crate) fn projected(&self, onto: &GroupSet) -> GroupSet {
        GroupSet {
            words: self
                .words
                .iter()
                .zip(onto.words.iter())
                .map(|(a, b)| a & b)
                .collect(),
        }
        .normalized()
    }

    pub(crate) fn normalized(&self) -> GroupSet {
        let used = self
            .words
            .iter()
            .rposition(|w| *w != 0)
            .map_or(0, |i| i + 1);
        GroupSet {
            words: self.words.get(..used).unwrap_or_default().into(),
        }
    }
}

#[cfg(test)]
#[path = "segments_tests.rs"]
mod tests;
