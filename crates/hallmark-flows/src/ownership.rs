//! The ownership index: for each IP (and each port of an IP that several
//! owners share), the time ranges in which one owner was *proven* to hold it.
//!
//! Evidence is a timestamped claim "owner O held address A at time t": a
//! workload's start or stop (from the runtime, at agent time), a heartbeat
//! (each agent re-asserts every running workload's IPs and its node IPs
//! every heartbeat interval), or a flow whose local side the reporter knew.
//! Evidence of one owner for one address joins into a range while
//! consecutive points are at most `max_gap` apart (two heartbeat intervals,
//! so one lost heartbeat does not break a range). A start opens a range (no
//! earlier evidence joins across it), a stop closes it (no later evidence
//! joins across it, and a heartbeat stamped after the stop is stale).
//!
//! So every instant inside a range has evidence of its owner at most
//! `max_gap` before and after it. [`OwnershipIndex::lookup`] answers from
//! that and nothing else:
//! - one owner's range holds the instant, no other owner's range comes
//!   within the clock skew of it, and neither does the range's own start or
//!   stop: [`Lookup::Owned`], with the range as proof;
//! - another owner is proven within the skew, or the instant is within the
//!   skew of a start or stop (a change of owner): [`Lookup::Ambiguous`];
//! - no range holds it, and the address has evidence at least `max_gap`
//!   after it, so an owner would have shown by now: [`Lookup::NoOwner`];
//! - otherwise the evidence is not in yet: [`Lookup::Pending`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::owner::{Owner, OwnerId, Owners};

/// An address that can be owned: an IP, or one port on it (a host-network
/// workload owns the ports it listens and connects on, while the node owns
/// the rest of its IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnershipKey {
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl OwnershipKey {
    pub fn ip(ip: IpAddr) -> Self {
        OwnershipKey { ip, port: None }
    }

    pub fn port(ip: IpAddr, port: u16) -> Self {
        OwnershipKey {
            ip,
            port: Some(port),
        }
    }
}

/// What kind of observation a piece of evidence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvidenceKind {
    /// The owner started holding the address (a workload start event).
    Started,
    /// The owner still holds the address (a periodic re-assertion).
    Heartbeat,
    /// The owner stopped holding it (a workload stop event).
    Stopped,
    /// A flow captured on the owner's node had the owner on its local side.
    LocalFlow,
}

impl EvidenceKind {
    /// The name in the datastore, the JSON form and the counters.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Started => "started",
            EvidenceKind::Heartbeat => "heartbeat",
            EvidenceKind::Stopped => "stopped",
            EvidenceKind::LocalFlow => "local-flow",
        }
    }

    /// Inverse of [`EvidenceKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "started" => Some(EvidenceKind::Started),
            "heartbeat" => Some(EvidenceKind::Heartbeat),
            "stopped" => Some(EvidenceKind::Stopped),
            "local-flow" => Some(EvidenceKind::LocalFlow),
            _ => None,
        }
    }
}

/// One observation: `owner` held `key` at `at_ms` (the observer's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub key: OwnershipKey,
    pub owner: Owner,
    pub at_ms: i64,
    pub kind: EvidenceKind,
}

/// A range in which one owner was proven to hold an address: the proof an
/// attribution names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeProof {
    pub owner: OwnerId,
    /// Earliest evidence.
    pub first_ms: i64,
    /// Latest evidence.
    pub last_ms: i64,
    /// The range opens with a start event.
    pub started: bool,
    /// The range closes with a stop event.
    pub stopped: bool,
    /// How many observations it joins.
    pub points: u32,
}

impl RangeProof {
    fn holds(&self, t: i64) -> bool {
        self.first_ms <= t && t <= self.last_ms
    }

    fn near(&self, t: i64, skew_ms: i64) -> bool {
        self.first_ms.saturating_sub(skew_ms) <= t && t <= self.last_ms.saturating_add(skew_ms)
    }
}

/// The answer for one address at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// One owner, proven on both sides of the instant, none other near it.
    Owned(RangeProof),
    /// Two owners are proven within the clock skew of the instant.
    Ambiguous(RangeProof, RangeProof),
    /// No owner: evidence for the address continues well past the instant
    /// and none of it holds the instant.
    NoOwner,
    /// The evidence does not reach past the instant yet: ask again later.
    Pending,
    /// No evidence was ever recorded for the address.
    Unknown,
}

/// A fixed-key multiplicative hasher (FxHash's construction, with a final
/// rotation so the table's bucket bits come from the well-mixed high bits)
/// for the index's maps. Their keys are addresses and ports that agents
/// proved they hold, not values a flow's sender picks, so SipHash's flood
/// resistance buys nothing here, and its cost would be paid for every end
/// of every flow.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

/// An odd constant with well-spread bits (rustc-hash's).
const FAST_HASH_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(FAST_HASH_K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

/// Up to this many ranges, a timeline is counted through rather than
/// binary-searched.
const SHORT_TIMELINE: usize = 16;

/// A map hashed with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// The ranges of one address, sorted by `first_ms`.
#[derive(Debug, Default, Clone)]
struct Timeline {
    ranges: Vec<RangeProof>,
    /// Latest evidence of any owner.
    newest_ms: i64,
    /// `last_ms` never decreases along `ranges` (no range lies inside an
    /// earlier one's span, the usual case), so a lookup can binary-search
    /// past every range that ended long before its instant.
    ends_sorted: bool,
}

/// The index: per IP, its timeline and the timelines of any owned ports.
#[derive(Debug, Default, Clone)]
struct IpEntry {
    whole: Timeline,
    // Boxed: most IPs own no ports, and an empty map would cost every IP
    // 48 bytes instead of 8.
    #[allow(clippy::box_collection)]
    ports: Option<Box<FastMap<u16, Timeline>>>,
}

/// Per-IP entries, IPv4 and IPv6 apart so each is keyed by a plain
/// integer: one multiply to hash, one compare to match, and a small bucket
/// (a lookup's first cache miss is its bucket).
#[derive(Debug, Default, Clone)]
struct IpMap {
    v4: FastMap<u32, IpEntry>,
    v6: FastMap<u128, IpEntry>,
}

impl IpMap {
    #[inline]
    fn get(&self, ip: IpAddr) -> Option<&IpEntry> {
        match ip {
            IpAddr::V4(a) => self.v4.get(&a.to_bits()),
            IpAddr::V6(a) => self.v6.get(&a.to_bits()),
        }
    }

    fn entry(&mut self, ip: IpAddr) -> &mut IpEntry {
        match ip {
            IpAddr::V4(a) => self.v4.entry(a.to_bits()).or_default(),
            IpAddr::V6(a) => self.v6.entry(a.to_bits()).or_default(),
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&mut IpEntry) -> bool) {
        self.v4.retain(|_, e| keep(e));
        self.v6.retain(|_, e| keep(e));
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// IP ownership over time.
#[derive(Debug, Clone)]
pub struct OwnershipIndex {
    owners: Owners,
    ips: IpMap,
    max_gap_ms: i64,
    skew_ms: i64,
    ranges: usize,
}

impl OwnershipIndex {
    /// `heartbeat_ms`: how often agents re-assert ownership (consecutive
    /// evidence may be up to two of these apart); `skew_ms`: the largest
    /// clock difference between nodes.
    pub fn new(heartbeat_ms: i64, skew_ms: i64) -> Self {
        OwnershipIndex {
            owners: Owners::new(),
            ips: IpMap::default(),
            max_gap_ms: heartbeat_ms.max(1).saturating_mul(2),
            skew_ms: skew_ms.max(0),
            ranges: 0,
        }
    }

    /// The owners table behind the [`OwnerId`]s in answers.
    pub fn owners(&self) -> &Owners {
        &self.owners
    }

    /// Consecutive evidence further apart than this breaks a range.
    pub fn max_gap_ms(&self) -> i64 {
        self.max_gap_ms
    }

    /// The clock skew allowed between nodes.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms
    }

    /// Records one observation.
    pub fn record(&mut self, ev: &Evidence) {
        self.record_owner(ev);
    }

    /// Records one observation and returns its owner's handle.
    pub(crate) fn record_owner(&mut self, ev: &Evidence) -> OwnerId {
        let owner = self.owners.intern(&ev.owner);
        let entry = self.ips.entry(ev.key.ip);
        let timeline = match ev.key.port {
            None => &mut entry.whole,
            Some(port) => entry
                .ports
                .get_or_insert_with(Default::default)
                .entry(port)
                .or_default(),
        };
        let before = timeline.ranges.len();
        timeline.add(owner, ev.at_ms, ev.kind, self.max_gap_ms);
        self.ranges = self.ranges + timeline.ranges.len() - before;
        owner
    }

    /// Who held `ip` (port `port`, when the flow end has one) at `at_ms`.
    /// A port owned on its own answers first; the IP answers for every
    /// port with no owner of its own.
    pub fn lookup(&self, ip: IpAddr, port: Option<u16>, at_ms: i64) -> Lookup {
        let entry = self.ips.get(ip);
        let start = entry.map_or(0, |e| {
            e.whole
                .first_candidate(at_ms, self.max_gap_ms, self.skew_ms)
        });
        self.lookup_in(entry, start, port, at_ms)
    }

    /// [`lookup`](Self::lookup) of two addresses at one instant (both ends
    /// of a flow). Both entries are fetched before either is searched, so
    /// the two cache misses overlap rather than follow each other.
    pub(crate) fn lookup_two(
        &self,
        a: (IpAddr, Option<u16>),
        b: (IpAddr, Option<u16>),
        at_ms: i64,
    ) -> (Lookup, Lookup) {
        let (ea, eb) = (self.ips.get(a.0), self.ips.get(b.0));
        // Then both searches, branch-free, before either scan: the second
        // timeline's miss overlaps the first's too.
        let start = |e: Option<&IpEntry>| {
            e.map_or(0, |e| {
                e.whole
                    .first_candidate(at_ms, self.max_gap_ms, self.skew_ms)
            })
        };
        let (sa, sb) = (start(ea), start(eb));
        (
            self.lookup_in(ea, sa, a.1, at_ms),
            self.lookup_in(eb, sb, b.1, at_ms),
        )
    }

    /// [`lookup`](Self::lookup) in a fetched entry, whose whole-IP
    /// timeline's first candidate range is `start`.
    #[inline]
    fn lookup_in(
        &self,
        entry: Option<&IpEntry>,
        start: usize,
        port: Option<u16>,
        at_ms: i64,
    ) -> Lookup {
        let Some(entry) = entry else {
            return Lookup::Unknown;
        };
        if let (Some(port), Some(ports)) = (port, entry.ports.as_deref()) {
            if let Some(timeline) = ports.get(&port) {
                let first = timeline.first_candidate(at_ms, self.max_gap_ms, self.skew_ms);
                match timeline.lookup_from(first, at_ms, self.max_gap_ms, self.skew_ms) {
                    Lookup::NoOwner | Lookup::Unknown => {}
                    decided => return decided,
                }
            }
        }
        if entry.whole.ranges.is_empty() {
            // Only ports of this IP are owned; the rest is nobody's we know.
            return if entry.ports.is_some() {
                Lookup::NoOwner
            } else {
                Lookup::Unknown
            };
        }
        entry
            .whole
            .lookup_from(start, at_ms, self.max_gap_ms, self.skew_ms)
    }

    /// The ranges recorded for one address, oldest first (for `whois`).
    pub fn ranges(&self, key: OwnershipKey) -> Vec<RangeProof> {
        let Some(entry) = self.ips.get(key.ip) else {
            return Vec::new();
        };
        let timeline = match key.port {
            None => Some(&entry.whole),
            Some(port) => entry.ports.as_deref().and_then(|p| p.get(&port)),
        };
        timeline.map(|t| t.ranges.clone()).unwrap_or_default()
    }

    /// Forgets every range whose latest evidence is before `before_ms`.
    /// Returns how many ranges went.
    pub fn prune(&mut self, before_ms: i64) -> usize {
        let mut dropped = 0;
        self.ips.retain(|entry| {
            dropped += entry.whole.prune(before_ms);
            if let Some(ports) = entry.ports.as_deref_mut() {
                ports.retain(|_, t| {
                    dropped += t.prune(before_ms);
                    !t.ranges.is_empty()
                });
                if ports.is_empty() {
                    entry.ports = None;
                }
            }
            !entry.whole.ranges.is_empty() || entry.ports.is_some()
        });
        self.ranges -= dropped;
        dropped
    }

    /// Number of ranges held.
    pub fn range_count(&self) -> usize {
        self.ranges
    }

    /// Number of IPs with any evidence.
    pub fn ip_count(&self) -> usize {
        self.ips.len()
    }

    /// Every IP with any evidence, in no particular order (the server's
    /// peer map walks them; [`ranges`](Self::ranges) tells their story).
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self
            .ips
            .v4
            .keys()
            .map(|&a| IpAddr::from(Ipv4Addr::from_bits(a)));
        let v6 = self
            .ips
            .v6
            .keys()
            .map(|&a| IpAddr::from(Ipv6Addr::from_bits(a)));
        v4.chain(v6)
    }
}

impl Timeline {
    fn add(&mut self, owner: OwnerId, t: i64, kind: EvidenceKind, max_gap: i64) {
        self.add_point(owner, t, kind, max_gap);
        self.sort_check();
    }

    fn sort_check(&mut self) {
        self.ends_sorted = self.ranges.windows(2).all(|w| w[0].last_ms <= w[1].last_ms);
    }

    fn add_point(&mut self, owner: OwnerId, t: i64, kind: EvidenceKind, max_gap: i64) {
        self.newest_ms = if self.ranges.is_empty() {
            t
        } else {
            self.newest_ms.max(t)
        };
        let fresh = RangeProof {
            owner,
            first_ms: t,
            last_ms: t,
            started: kind == EvidenceKind::Started,
            stopped: kind == EvidenceKind::Stopped,
            points: 1,
        };
        let mine = |r: &RangeProof| r.owner == owner;
        match kind {
            EvidenceKind::Started => {
                // Evidence that arrived before its start event: the start
                // moves the range's beginning back to itself.
                if let Some(r) = self
                    .ranges
                    .iter_mut()
                    .find(|r| mine(r) && !r.started && t <= r.first_ms && r.first_ms - t <= max_gap)
                {
                    r.first_ms = t;
                    r.started = true;
                    r.points += 1;
                } else if let Some(r) = self.ranges.iter_mut().find(|r| mine(r) && r.holds(t)) {
                    r.points += 1;
                } else {
                    self.insert(fresh);
                }
            }
            EvidenceKind::Stopped => {
                if let Some(r) = self.ranges.iter_mut().find(|r| {
                    mine(r)
                        && r.first_ms <= t
                        && if r.stopped {
                            t <= r.last_ms
                        } else {
                            t <= r.last_ms.saturating_add(max_gap)
                        }
                }) {
                    // A heartbeat stamped after the stop came from an
                    // inventory that had not seen the stop yet: the runtime's
                    // stop is the last word.
                    r.last_ms = t;
                    r.stopped = true;
                    r.points += 1;
                } else {
                    self.insert(fresh);
                }
            }
            EvidenceKind::Heartbeat | EvidenceKind::LocalFlow => {
                let joinable = |r: &RangeProof| {
                    mine(r)
                        && (if r.started {
                            r.first_ms <= t
                        } else {
                            r.first_ms.saturating_sub(max_gap) <= t
                        })
                        && (if r.stopped {
                            t <= r.last_ms
                        } else {
                            t <= r.last_ms.saturating_add(max_gap)
                        })
                };
                let mut merged: Option<RangeProof> = None;
                self.ranges.retain(|r| {
                    if !joinable(r) {
                        return true;
                    }
                    merged = Some(match merged {
                        None => *r,
                        Some(m) => join(m, *r),
                    });
                    false
                });
                let range = match merged {
                    None => fresh,
                    Some(m) => RangeProof {
                        first_ms: m.first_ms.min(t),
                        last_ms: m.last_ms.max(t),
                        points: m.points.saturating_add(1),
                        ..m
                    },
                };
                self.insert(range);
            }
        }
    }

    fn insert(&mut self, range: RangeProof) {
        let at = self
            .ranges
            .partition_point(|r| (r.first_ms, r.last_ms) <= (range.first_ms, range.last_ms));
        self.ranges.insert(at, range);
    }

    #[cfg(test)]
    fn lookup(&self, t: i64, max_gap: i64, skew: i64) -> Lookup {
        self.lookup_from(self.first_candidate(t, max_gap, skew), t, max_gap, skew)
    }

    /// The first range that may say anything about `t`.
    ///
    /// Ranges that could hold, come near or grow to `t` start no later
    /// than `t + max(skew, max_gap)` and end no earlier than
    /// `t - max(skew, max_gap)`; the rest say nothing about it. The list is
    /// sorted by start, and usually by end too: then the ones ending too
    /// early all come first.
    #[inline]
    fn first_candidate(&self, t: i64, max_gap: i64, skew: i64) -> usize {
        if self.ends_sorted {
            let floor = t.saturating_sub(skew.max(max_gap));
            if self.ranges.len() <= SHORT_TIMELINE {
                // Counting reads every range independently, so their cache
                // misses overlap; a binary search's reads wait on each other.
                self.ranges
                    .iter()
                    .map(|r| usize::from(r.last_ms < floor))
                    .sum()
            } else {
                self.ranges.partition_point(|r| r.last_ms < floor)
            }
        } else {
            0
        }
    }

    /// The answer for `t`, scanning from `start` (from
    /// [`first_candidate`](Self::first_candidate)).
    fn lookup_from(&self, start: usize, t: i64, max_gap: i64, skew: i64) -> Lookup {
        if self.ranges.is_empty() {
            return Lookup::Unknown;
        }
        let reach = t.saturating_add(skew.max(max_gap));
        let mut holder: Option<RangeProof> = None;
        // A range near the instant, and one of another owner if any.
        let mut near: Option<RangeProof> = None;
        let mut near_other: Option<RangeProof> = None;
        let mut may_grow = false;
        let candidates = self.ranges[start.min(self.ranges.len())..]
            .iter()
            .take_while(|r| r.first_ms <= reach);
        for r in candidates {
            if r.holds(t) {
                match holder {
                    Some(h) if h.owner != r.owner => return Lookup::Ambiguous(h, *r),
                    _ => holder = Some(*r),
                }
                continue;
            }
            if r.near(t, skew) {
                match near {
                    None => near = Some(*r),
                    Some(n) if n.owner != r.owner => near_other = Some(*r),
                    Some(_) => {}
                }
            }
            may_grow |= could_grow_to(r, t, max_gap);
        }
        if let (Some(h), Some(n)) = (holder, near_other) {
            // Two owners near it: at least one is not the holder.
            let other = if n.owner != h.owner {
                n
            } else {
                near.unwrap_or(n)
            };
            return Lookup::Ambiguous(h, other);
        }
        match (holder, near) {
            (Some(h), Some(n)) if n.owner != h.owner => Lookup::Ambiguous(h, n),
            // Within the skew of the holder's own start or stop, the flow may
            // have been just outside its tenure, when nobody (or the
            // previous owner) held the address.
            (Some(h), _)
                if (h.started && t < h.first_ms.saturating_add(skew))
                    || (h.stopped && t > h.last_ms.saturating_sub(skew)) =>
            {
                Lookup::Ambiguous(h, h)
            }
            (Some(h), _) => Lookup::Owned(h),
            // Evidence still on its way could stretch a range over `t`.
            (None, _) if may_grow => Lookup::Pending,
            // Proven just before or after, within the skew: the flow may
            // belong to it or to nobody; the evidence cannot say.
            (None, Some(n)) => Lookup::Ambiguous(n, n),
            (None, None) if self.newest_ms >= t.saturating_add(max_gap) => Lookup::NoOwner,
            (None, None) => Lookup::Pending,
        }
    }

    fn prune(&mut self, before_ms: i64) -> usize {
        let n = self.ranges.len();
        self.ranges.retain(|r| r.last_ms >= before_ms);
        self.sort_check();
        n - self.ranges.len()
    }
}

/// Whether evidence not yet recorded could still stretch `r` over `t`: an
/// open range ending less than `max_gap` before it, or a range with no
/// start event beginning less than `max_gap` after it.
fn could_grow_to(r: &RangeProof, t: i64, max_gap: i64) -> bool {
    let forward = !r.stopped && r.last_ms < t && t <= r.last_ms.saturating_add(max_gap);
    let backward = !r.started && t < r.first_ms && r.first_ms.saturating_sub(max_gap) <= t;
    forward || backward
}

/// One range from two of the same owner joined by evidence between them.
fn join(a: RangeProof, b: RangeProof) -> RangeProof {
    let (early, late) = if a.first_ms <= b.first_ms {
        (a, b)
    } else {
        (b, a)
    };
    RangeProof {
        owner: a.owner,
        first_ms: early.first_ms,
        last_ms: early.last_ms.max(late.last_ms),
        started: early.started,
        stopped: late.stopped || early.stopped && early.last_ms >= late.last_ms,
        points: early.points.saturating_add(late.points),
    }
}

#[cfg(test)]
#[path = "ownership_tests.rs"]
mod tests;
