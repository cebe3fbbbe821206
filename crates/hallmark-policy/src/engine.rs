//! The compiled policy: group membership of an endpoint, and decisions that
//! cost a few table lookups.
//!
//! Compilation numbers the groups (`any` is 0, then document order) and
//! ranks every rule once by (priority, deny before allow, document order):
//! the rule that decides a question is then simply the matching rule of
//! lowest rank. Rules are indexed by (initiator group, acceptor group,
//! protocol); each index entry splits the port space into segments and
//! stores, per segment, the lowest-ranked rule of any mode and the
//! lowest-ranked enforce-mode rule. Each initiator group also keeps the set
//! of acceptor groups some rule pairs it with, so a decision intersects
//! that set with the acceptor's groups (a few words of bits) and looks up
//! only the pairs a rule names, binary-searches the port, and keeps two
//! minima. It allocates nothing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::attributes::Attributes;
use crate::document::{Action, Block, Mode, PolicyDocument, Protocol, ProtocolMatch, ANY_GROUP};

/// A compiled policy, ready to decide.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Group names by id; id 0 is `any`.
    names: Vec<String>,
    /// Match blocks of each group; `any` has none (it needs none).
    blocks: Vec<Vec<Block>>,
    ids: HashMap<String, usize>,
    /// Rules by rank.
    ranked: Vec<RankedRule>,
    /// (from id, to id, protocol) -> port table.
    index: HashMap<u64, PortTable, BuildHasherDefault<PairHasher>>,
    /// Per initiator group, the acceptor groups some rule pairs it with:
    /// a decision looks up only those pairs, not every pair of the two
    /// endpoints' groups (most of which no rule names).
    targets: Vec<GroupSet>,
    default: Action,
}

#[derive(Debug, Clone)]
struct RankedRule {
    name: Arc<str>,
    action: Action,
    mode: Mode,
}

/// No rule.
const NONE: u32 = u32::MAX;

/// One (from, to, protocol) cell: segment `i` covers ports
/// `starts[i] ..= starts[i + 1] - 1` (the last one up to 65535).
#[derive(Debug, Clone)]
struct PortTable {
    starts: Vec<u16>,
    /// Lowest rank of any mode and of enforce mode, per segment.
    best: Vec<(u32, u32)>,
}

impl PortTable {
    fn lookup(&self, port: u16) -> (u32, u32) {
        let i = self.starts.partition_point(|s| *s <= port);
        // `starts[0]` is 0, so `i >= 1`.
        self.best
            .get(i.wrapping_sub(1))
            .copied()
            .unwrap_or((NONE, NONE))
    }
}

/// The groups an endpoint belongs to, as a bitset over the policy's group
/// ids. Computed once per endpoint with [`Policy::groups_of`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GroupSet {
    words: Box<[u64]>,
}

impl GroupSet {
    fn with_capacity(groups: usize) -> Self {
        GroupSet {
            words: vec![0; groups.div_ceil(64)].into_boxed_slice(),
        }
    }

    fn insert(&mut self, id: usize) {
        if let Some(w) = self.words.get_mut(id / 64) {
            *w |= 1 << (id % 64);
        }
    }

    /// Whether group `id` is in the set.
    pub fn contains(&self, id: usize) -> bool {
        self.words
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Ids of the groups in the set, ascending.
    pub fn ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| bits(i, w))
    }

    /// How many groups are in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Ids of the groups in both sets, ascending, without allocating.
    pub fn intersection<'a>(&'a self, other: &'a GroupSet) -> impl Iterator<Item = usize> + 'a {
        self.words
            .iter()
            .zip(other.words.iter())
            .enumerate()
            .flat_map(|(i, (a, b))| bits(i, a & b))
    }

    /// Adds every group of `other` (the groups of an identity held by
    /// several workloads are the union of theirs).
    pub fn union_with(&mut self, other: &GroupSet) {
        if other.words.len() > self.words.len() {
            let mut words = other.words.to_vec();
            for (w, mine) in words.iter_mut().zip(self.words.iter()) {
                *w |= mine;
            }
            self.words = words.into_boxed_slice();
        } else {
            for (mine, w) in self.words.iter_mut().zip(other.words.iter()) {
                *mine |= w;
            }
        }
    }
}

/// What policy says about a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Allowed,
    Denied,
    /// Allowed, but a watch-mode rule would deny it.
    WouldDeny,
    /// Not decided: an end is not attributed. Never returned by
    /// [`Policy::decide`]; callers that hold an unattributed end say it.
    NoDecision,
}

/// Who decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum DecidedBy {
    Rule {
        name: Arc<str>,
        mode: Mode,
        action: Action,
    },
    /// No rule matched; the document's `default` applied.
    Default { action: Action },
    /// Nothing decided ([`Outcome::NoDecision`]).
    Nothing,
}

/// A decision and its reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Verdict {
    pub outcome: Outcome,
    pub decided_by: DecidedBy,
}

impl Verdict {
    /// The verdict for a flow with an unattributed end.
    pub fn no_decision() -> Self {
        Verdict {
            outcome: Outcome::NoDecision,
            decided_by: DecidedBy::Nothing,
        }
    }

    /// The deciding rule's name, if a rule decided.
    pub fn rule(&self) -> Option<&str> {
        match &self.decided_by {
            DecidedBy::Rule { name, .. } => Some(name),
            _ => None,
        }
    }
}

impl Policy {
    /// Compiles a document. A rule naming a group the document does not
    /// define matches nothing ([`crate::parse`] refuses such documents).
    pub fn compile(doc: &PolicyDocument) -> Policy {
        let mut names = vec![ANY_GROUP.to_string()];
        let mut blocks = vec![Vec::new()];
        let mut ids = HashMap::from([(ANY_GROUP.to_string(), 0)]);
        for g in &doc.groups {
            if ids.contains_key(&g.name) {
                continue;
            }
            ids.insert(g.name.clone(), names.len());
            names.push(g.name.clone());
            blocks.push(g.blocks.clone());
        }

        let mut order: Vec<usize> = (0..doc.rules.len()).collect();
        order.sort_by_key(|&i| {
            let r = &doc.rules[i];
            (r.priority, r.action == Action::Allow, i)
        });
        let ranked = order
            .iter()
            .map(|&i| RankedRule {
                name: Arc::from(doc.rules[i].name.as_str()),
                action: doc.rules[i].action,
                mode: doc.rules[i].mode,
            })
            .collect();

        // Per cell, the (rank, ports, mode) of every rule in it.
        let mut cells: HashMap<u64, Vec<(u32, &[_], Mode)>> = HashMap::new();
        for (rank, &i) in order.iter().enumerate() {
            let r = &doc.rules[i];
            let protocols: &[Protocol] = match r.protocol {
                ProtocolMatch::Tcp => &[Protocol::Tcp],
                ProtocolMatch::Udp => &[Protocol::Udp],
                ProtocolMatch::Any => &[Protocol::Tcp, Protocol::Udp],
            };
            for f in r.from.iter().filter_map(|n| ids.get(n)) {
                for t in r.to.iter().filter_map(|n| ids.get(n)) {
                    for &p in protocols {
                        cells.entry(cell(*f, *t, p)).or_default().push((
                            rank as u32,
                            r.ports.as_slice(),
                            r.mode,
                        ));
                    }
                }
            }
        }
        let mut targets = vec![GroupSet::with_capacity(names.len()); names.len()];
        for key in cells.keys() {
            let (from, to) = ((key >> 32) as usize, ((key & 0xffff_ffff) >> 1) as usize);
            if let Some(set) = targets.get_mut(from) {
                set.insert(to);
            }
        }
        let index = cells
            .into_iter()
            .map(|(key, rules)| (key, port_table(&rules)))
            .collect();
        Policy {
            names,
            blocks,
            ids,
            ranked,
            index,
            targets,
            default: doc.default,
        }
    }

    /// The groups `e` belongs to (always `any`).
    pub fn groups_of(&self, e: &Attributes) -> GroupSet {
        let mut set = GroupSet::with_capacity(self.names.len());
        set.insert(0);
        for (id, blocks) in self.blocks.iter().enumerate().skip(1) {
            if blocks.iter().any(|b| b.matches(e)) {
                set.insert(id);
            }
        }
        set
    }

    /// Decides a flow from an initiator in `from` to an acceptor in `to`
    /// on the acceptor's `port`. See the crate docs for the semantics.
    pub fn decide(&self, from: &GroupSet, to: &GroupSet, protocol: Protocol, port: u16) -> Verdict {
        let (mut all, mut enforced) = (NONE, NONE);
        for f in from.ids() {
            let Some(targets) = self.targets.get(f) else {
                continue;
            };
            for t in targets.intersection(to) {
                if let Some(table) = self.index.get(&cell(f, t, protocol)) {
                    let (a, e) = table.lookup(port);
                    all = all.min(a);
                    enforced = enforced.min(e);
                }
            }
        }
        let action_of = |rank: u32| {
            self.ranked
                .get(rank as usize)
                .map_or(self.default, |r| r.action)
        };
        if action_of(enforced) == Action::Deny {
            return self.verdict(Outcome::Denied, enforced);
        }
        if action_of(all) == Action::Deny {
            return self.verdict(Outcome::WouldDeny, all);
        }
        self.verdict(Outcome::Allowed, all)
    }

    fn verdict(&self, outcome: Outcome, rank: u32) -> Verdict {
        let decided_by = match self.ranked.get(rank as usize) {
            Some(r) => DecidedBy::Rule {
                name: Arc::clone(&r.name),
                mode: r.mode,
                action: r.action,
            },
            None => DecidedBy::Default {
                action: self.default,
            },
        };
        Verdict {
            outcome,
            decided_by,
        }
    }

    /// Group names, `any` first, then document order. A name's position is
    /// its id in a [`GroupSet`].
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The id of a group by name.
    pub fn group_id(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }

    /// The set of the named groups, with `any`; names this policy does not
    /// define are skipped (a membership computed under another revision).
    pub fn set_of<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> GroupSet {
        let mut set = GroupSet::with_capacity(self.names.len());
        set.insert(0);
        for id in names.into_iter().filter_map(|n| self.group_id(n)) {
            set.insert(id);
        }
        set
    }

    /// The names of the groups in `set`.
    pub fn names_in<'s>(&'s self, set: &'s GroupSet) -> impl Iterator<Item = &'s str> + 's {
        set.ids()
            .filter_map(|id| self.names.get(id).map(String::as_str))
    }

    /// The endpoints that are members of `group` (none for an unknown
    /// group).
    pub fn members<'a, 's>(
        &'s self,
        group: &str,
        endpoints: impl Iterator<Item = &'a Attributes> + 's,
    ) -> impl Iterator<Item = &'a Attributes> + 's {
        let id = self.group_id(group);
        endpoints.filter(move |e| match id {
            Some(0) => true,
            Some(id) => self.blocks[id].iter().any(|b| b.matches(e)),
            None => false,
        })
    }
}

/// The ids of the set bits of word `i`.
fn bits(i: usize, word: u64) -> impl Iterator<Item = usize> {
    let mut rest = word;
    std::iter::from_fn(move || {
        if rest == 0 {
            return None;
        }
        let bit = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        Some(i * 64 + bit)
    })
}

fn cell(from: usize, to: usize, protocol: Protocol) -> u64 {
    ((from as u64) << 32) | ((to as u64) << 1) | u64::from(protocol == Protocol::Udp)
}

/// Builds one cell's segments from its rules `(rank, ports, mode)`.
fn port_table(rules: &[(u32, &[crate::document::PortRange], Mode)]) -> PortTable {
    let mut starts = vec![0u16];
    for (_, ports, _) in rules {
        for p in *ports {
            starts.push(p.lo());
            if let Some(next) = p.hi().checked_add(1) {
                starts.push(next);
            }
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let best = starts
        .iter()
        .map(|&port| {
            let covering = rules
                .iter()
                .filter(|(_, ports, _)| ports.is_empty() || ports.iter().any(|p| p.contains(port)));
            let mut best = (NONE, NONE);
            for (rank, _, mode) in covering {
                best.0 = best.0.min(*rank);
                if *mode == Mode::Enforce {
                    best.1 = best.1.min(*rank);
                }
            }
            best
        })
        .collect();
    PortTable { starts, best }
}

/// A hasher for the cell keys, which are already well spread integers: one
/// multiply instead of SipHash, since a decision does a few dozen lookups.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The fold brings the initiator id (high half) into the low bits
        // the table indexes by.
        let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

#[path = "segments.rs"]
mod segments;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
