//! The policy compiled into the tables a node's kernel decides with.
//!
//! The kernel cannot evaluate groups: it sees a socket's cgroup, an
//! address, a protocol and ports. [`compile_kernel`] therefore numbers the
//! distinct combinations of groups (identities), maps each local workload
//! (by whatever key the caller uses, a cgroup id on the agent) and each
//! peer address or CIDR prefix to its identity, and, for every (local
//! identity, remote identity, protocol, direction), splits the port space
//! into segments with the verdict [`Policy::decide`] gives there. The
//! kernel looks a flow up the same way:
//!
//! 1. local identity from the workload; remote identity by longest-prefix
//!    match of the peer address over [`KernelImage::peers`], 0 when no
//!    entry covers it;
//! 2. the [`PairKey`]'s segments, the last one starting at or below the
//!    port (the remote's port for egress, the local's for ingress);
//! 3. with no pair, or a port below the first segment, the image's
//!    `default` with rule 0.
//!
//! That lookup decides exactly as [`Policy::decide`] does for the local's
//! groups and the remote's (the tests prove it on random documents):
//!
//! - identity 0 is an address alone outside every `cidr` prefix of the
//!   policy (its groups are those an endpoint with no attributes has);
//! - each prefix gets an identity for an address alone inside it and
//!   inside no longer prefix of the policy, so nested prefixes each have
//!   their own and longest-prefix match picks the right one;
//! - a peer address is a host entry (`/32`, `/128`; IPv4-mapped IPv6 is
//!   IPv4) with the groups the caller gives, overriding a prefix entry
//!   for the same host.
//!
//! Nothing is dropped to fit: an image over a [`KernelLimits`] bound is a
//! [`KernelError`] naming the bound and the count.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::attributes::Attributes;
use crate::document::{Action, Protocol};
use crate::engine::{GroupSet, Outcome, Policy};

/// Who initiates a flow, seen from the local workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The local workload initiates; the port is the remote's.
    Egress,
    /// The remote initiates; the port is the local workload's.
    Ingress,
}

impl Direction {
    /// `egress` or `ingress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

/// What the kernel does with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelVerdict {
    /// Let through ([`Outcome::Allowed`]).
    Allow,
    /// Blocked ([`Outcome::Denied`]).
    Deny,
    /// Let through and reported ([`Outcome::WouldDeny`]).
    WouldDeny,
}

impl KernelVerdict {
    /// The kernel's verdict for the default action.
    pub fn of_action(action: Action) -> Self {
        match action {
            Action::Allow => KernelVerdict::Allow,
            Action::Deny => KernelVerdict::Deny,
        }
    }

    /// The kernel's verdict for an engine outcome. [`Outcome::NoDecision`]
    /// is never a segment's outcome; were it one, it would fail closed.
    pub fn of_outcome(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Allowed => KernelVerdict::Allow,
            Outcome::WouldDeny => KernelVerdict::WouldDeny,
            Outcome::Denied | Outcome::NoDecision => KernelVerdict::Deny,
        }
    }
}

/// The decision table's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    /// Identity of the local workload.
    pub local: u32,
    /// Identity of the peer (0: an address no peer entry covers).
    pub remote: u32,
    pub protocol: Protocol,
    pub direction: Direction,
}

/// Ports `start` up to the next segment's start (the last: up to 65535).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment {
    pub start: u16,
    pub verdict: KernelVerdict,
    /// The deciding rule: `rules[rule - 1]` of the image, 0 for the
    /// default.
    pub rule: u32,
}

/// How much the kernel maps hold; [`compile_kernel`] refuses more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLimits {
    /// Segments per pair.
    pub max_segs: usize,
    /// Local workload entries.
    pub max_locals: usize,
    /// Peer entries (hosts and prefixes, both families together).
    pub max_peers: usize,
    /// Pairs.
    pub max_pairs: usize,
}

/// A policy as the kernel tables hold it, for one node's workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelImage<K> {
    /// The policy's default: the verdict (rule 0) of a flow no pair or
    /// segment covers.
    pub default: Action,
    /// Each local workload's identity, in the order given.
    pub locals: Vec<(K, u32)>,
    /// `(network, prefix length, identity)`, ordered by address and
    /// length; at most one entry per network and length.
    pub peers: Vec<(IpAddr, u8, u32)>,
    /// Segments per pair, ordered by key; starts strictly increase and
    /// none is empty. A pair whose every port takes the default is left
    /// out, as is a leading segment that equals the default.
    pub pairs: Vec<(PairKey, Vec<Segment>)>,
    /// Rule names by id: id `i + 1` is `rules[i]`; 0 is the default.
    pub rules: Vec<String>,
    /// The groups of each identity: identity `i` is `identities[i]`.
    pub identities: Vec<GroupSet>,
}

/// An image that does not fit, or input that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// More local workloads than the local map holds.
    #[error(
        "the policy image needs {count} local workload entries, more than the limit of \
         {limit}: enforce for fewer workloads on this node or raise the local map's size"
    )]
    TooManyLocals { count: usize, limit: usize },
    /// More peer hosts and prefixes than the peer maps hold.
    #[error(
        "the policy image needs {count} peer entries (peer addresses and the policy's cidr \
         prefixes), more than the limit of {limit}: reduce the peers this node may talk to \
         or the policy's cidr blocks, or raise the peer map's size"
    )]
    TooManyPeers { count: usize, limit: usize },
    /// More identity pairs than the pair map holds.
    #[error(
        "the policy image needs {count} identity pairs, more than the limit of {limit}: \
         fewer distinct combinations of groups among this node's workloads and peers would \
         need fewer, or raise the pair map's size"
    )]
    TooManyPairs { count: usize, limit: usize },
    /// One pair splits the port space into more segments than fit.
    #[error(
        "{} {} flows between local identity {} (groups {local_groups}) and remote identity \
         {} (groups {remote_groups}) need {count} port segments, more than the limit of \
         {limit}: merge or drop port ranges of the rules between these groups",
        pair.direction.as_str(), protocol_name(pair.protocol), pair.local, pair.remote
    )]
    TooManySegments {
        pair: PairKey,
        local_groups: String,
        remote_groups: String,
        count: usize,
        limit: usize,
    },
    /// One peer address given twice with different groups.
    #[error(
        "peer address {addr} is given twice with different groups: leave out an address \
         whose owner is ambiguous (it is then decided as an address alone)"
    )]
    AmbiguousPeer { addr: IpAddr },
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Compiles `policy` for the workloads `locals` (a key the caller maps
/// back, and the workload's groups) talking to the peers `peers` (an
/// address and its owner's groups). See the module docs.
///
/// A peer's groups are those [`Policy::groups_of`] gives its owner with
/// its address (so `cidr` groups count); the node's own workloads are
/// peers too when they talk to each other by address. An address whose
/// owner is ambiguous is left out: it is then decided as an address
/// alone, never with a previous owner's groups.
pub fn compile_kernel<K: Clone>(
    policy: &Policy,
    locals: &[(K, GroupSet)],
    peers: &[(IpAddr, GroupSet)],
    limits: &KernelLimits,
) -> Result<KernelImage<K>, KernelError> {
    if locals.len() > limits.max_locals {
        return Err(KernelError::TooManyLocals {
            count: locals.len(),
            limit: limits.max_locals,
        });
    }
    // Identities are group sets cut to the groups that can change a
    // decision on this node: a local's to the groups rules name, a peer's
    // to the counterparts of the locals' groups. Decisions are the same
    // (see `Policy::counterparts`), and workloads that differ only in
    // groups no rule here looks at share one identity, so the pairs grow
    // with the policy's distinctions, not with the workloads'.
    let ruled = policy.ruled_groups();
    let mut relevant = GroupSet::default();
    for (_, set) in locals {
        relevant.union_with(&policy.counterparts(set));
    }
    let remote = |set: &GroupSet| set.projected(&relevant);
    let mut ids = Identities::new(&remote(&policy.groups_of(&Attributes::default())));
    let local_entries: Vec<(K, u32)> = locals
        .iter()
        .map(|(k, set)| (k.clone(), ids.intern(&set.projected(&ruled))))
        .collect();

    let mut entries: BTreeMap<(IpAddr, u8), u32> = BTreeMap::new();
    let nets = prefixes(policy);
    for net in &nets {
        let addr = net.representative(&nets).unwrap_or(net.bits);
        let set = policy.groups_of(&Attributes::address(net.to_addr(addr)));
        entries.insert((net.to_addr(net.bits), net.len), ids.intern(&remote(&set)));
    }
    let mut given: HashMap<IpAddr, GroupSet> = HashMap::new();
    for (addr, set) in peers {
        let addr = addr.to_canonical();
        let set = set.normalized();
        if given.get(&addr).is_some_and(|prev| *prev != set) {
            return Err(KernelError::AmbiguousPeer { addr });
        }
        let len = if addr.is_ipv4() { 32 } else { 128 };
        entries.insert((addr, len), ids.intern(&remote(&set)));
        given.insert(addr, set);
    }
    if entries.len() > limits.max_peers {
        return Err(KernelError::TooManyPeers {
            count: entries.len(),
            limit: limits.max_peers,
        });
    }

    let rules: Vec<String> = policy.rule_names().map(str::to_string).collect();
    let default = Segment {
        start: 0,
        verdict: KernelVerdict::of_action(policy.default_action()),
        rule: 0,
    };
    let local_idents: BTreeSet<u32> = local_entries.iter().map(|(_, id)| *id).collect();
    let remote_idents: BTreeSet<u32> = entries.values().copied().chain([0]).collect();
    let mut pairs = Vec::new();
    for &local in &local_idents {
        for &remote in &remote_idents {
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                for direction in [Direction::Egress, Direction::Ingress] {
                    let (l, r) = (ids.set(local), ids.set(remote));
                    let (from, to) = match direction {
                        Direction::Egress => (l, r),
                        Direction::Ingress => (r, l),
                    };
                    let mut segs: Vec<Segment> = policy
                        .ranked_segments(from, to, protocol)
                        .into_iter()
                        .map(|s| Segment {
                            start: s.start,
                            verdict: KernelVerdict::of_outcome(s.outcome),
                            rule: if (s.rank as usize) < rules.len() {
                                s.rank + 1
                            } else {
                                0
                            },
                        })
                        .collect();
                    // A port below the first start takes the default.
                    if segs.first() == Some(&default) {
                        segs.remove(0);
                    }
                    if segs.is_empty() {
                        continue;
                    }
                    let pair = PairKey {
                        local,
                        remote,
                        protocol,
                        direction,
                    };
                    if segs.len() > limits.max_segs {
                        return Err(KernelError::TooManySegments {
                            pair,
                            local_groups: names(policy, l),
                            remote_groups: names(policy, r),
                            count: segs.len(),
                            limit: limits.max_segs,
                        });
                    }
                    pairs.push((pair, segs));
                }
            }
        }
    }
    if pairs.len() > limits.max_pairs {
        return Err(KernelError::TooManyPairs {
            count: pairs.len(),
            limit: limits.max_pairs,
        });
    }
    pairs.sort_by_key(|(k, _)| *k);
    Ok(KernelImage {
        default: policy.default_action(),
        locals: local_entries,
        peers: entries
            .into_iter()
            .map(|((addr, len), id)| (addr, len, id))
            .collect(),
        pairs,
        rules,
        identities: ids.sets,
    })
}

fn names(policy: &Policy, set: &GroupSet) -> String {
    policy.names_in(set).collect::<Vec<_>>().join(", ")
}

/// Distinct group sets, numbered in the order first seen.
struct Identities {
    sets: Vec<GroupSet>,
    by_set: HashMap<GroupSet, u32>,
}

impl Identities {
    /// Identity 0 is `unknown`'s groups.
    fn new(unknown: &GroupSet) -> Self {
        let mut ids = Identities {
            sets: Vec::new(),
            by_set: HashMap::new(),
        };
        ids.intern(unknown);
        ids
    }

    fn intern(&mut self, set: &GroupSet) -> u32 {
        let set = set.normalized();
        if let Some(id) = self.by_set.get(&set) {
            return *id;
        }
        // Identities are bounded by the entries that carry them, which
        // the limits bound far below u32::MAX.
        let id = u32::try_from(self.sets.len()).unwrap_or(u32::MAX);
        self.sets.push(set.clone());
        self.by_set.insert(set, id);
        id
    }

    fn set(&self, id: u32) -> &GroupSet {
        // Every id handed out indexes `sets`.
        &self.sets[id as usize]
    }
}

/// A prefix with its bits top-aligned in a u128, IPv4 and IPv6 apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Net {
    v4: bool,
    bits: u128,
    len: u8,
}

/// `::ffff:0:0/96`: IPv4-mapped IPv6 addresses count as IPv4.
const MAPPED: Net = Net {
    v4: false,
    bits: 0xffff << 32,
    len: 96,
};

impl Net {
    fn new(addr: IpAddr, len: u8) -> Net {
        match addr {
            IpAddr::V4(a) => Net {
                v4: true,
                bits: u128::from(u32::from(a)) << 96,
                len,
            },
            IpAddr::V6(a) => Net {
                v4: false,
                bits: u128::from(a),
                len,
            },
        }
    }

    fn max_len(self) -> u8 {
        if self.v4 {
            32
        } else {
            128
        }
    }

    fn to_addr(self, bits: u128) -> IpAddr {
        if self.v4 {
            // The low 96 bits of an IPv4 prefix are zero.
            IpAddr::V4(Ipv4Addr::from((bits >> 96) as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }

    /// Whether `inner` is inside (or is) this prefix.
    fn covers(&self, inner: &Net) -> bool {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0);
        self.v4 == inner.v4 && inner.len >= self.len && inner.bits & mask == self.bits
    }

    /// An address inside this prefix and inside no longer one of `nets`
    /// (nor an IPv4-mapped one): what longest-prefix match resolves to
    /// this prefix. None when longer prefixes cover it all.
    fn representative(&self, nets: &[Net]) -> Option<u128> {
        let mut inside: Vec<Net> = nets
            .iter()
            .filter(|n| n.len > self.len && self.covers(n))
            .copied()
            .collect();
        if self.covers(&MAPPED) {
            inside.push(MAPPED);
        }
        uncovered(*self, &inside)
    }
}

/// An address of `region` inside none of `inside`.
fn uncovered(region: Net, inside: &[Net]) -> Option<u128> {
    if inside.iter().any(|n| n.covers(&region)) {
        return None;
    }
    if !inside.iter().any(|n| region.covers(n)) {
        return Some(region.bits);
    }
    if region.len >= region.max_len() {
        return None;
    }
    let half = Net {
        len: region.len + 1,
        ..region
    };
    let upper = Net {
        bits: region.bits | (1u128 << (127 - u32::from(region.len))),
        ..half
    };
    uncovered(half, inside).or_else(|| uncovered(upper, inside))
}

/// The distinct `cidr` prefixes of the policy that can hold an address:
/// an IPv6 prefix inside `::ffff:0:0/96` holds none, since such addresses
/// count as IPv4.
fn prefixes(policy: &Policy) -> Vec<Net> {
    let nets: BTreeSet<Net> = policy
        .cidrs()
        .map(|c| Net::new(c.network(), c.prefix_len()))
        .filter(|n| !MAPPED.covers(n))
        .collect();
    nets.into_iter().collect()
}

impl fmt::Display for KernelVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelVerdict::Allow => "allow",
            KernelVerdict::Deny => "deny",
            KernelVerdict::WouldDeny => "would-deny",
        })
    }
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
pub(crate) mod tests;
