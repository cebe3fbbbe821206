//! The attribution engine: each end of a flow gets an owner, an external
//! network's name, or a reason it has neither.
//!
//! The local end of a flow whose reporter tagged it at capture is that
//! owner, and the tag is itself evidence of who held the address. Every
//! other end is looked up in the [`OwnershipIndex`] at the flow's start
//! time. When the evidence does not reach past that time yet, the flow is
//! held back and retried by [`Attributor::poll`]; after the hold-back it is
//! emitted with that end unattributed (`late`). Nothing is ever guessed: an
//! end is attributed only to an owner proven on both sides of the instant
//! with no other owner within the clock skew.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::flow::{Flow, Side};
use crate::network::Networks;
use crate::owner::OwnerId;
use crate::ownership::{Evidence, EvidenceKind, Lookup, OwnershipIndex, OwnershipKey, RangeProof};

/// The engine's settings (server flags `--ownership-heartbeat`,
/// `--attribution-holdback`, `--clock-skew`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributorConfig {
    /// How often agents re-assert ownership.
    pub heartbeat_ms: i64,
    /// How long a flow may wait for evidence before it is emitted `late`.
    pub holdback_ms: i64,
    /// The largest clock difference between nodes.
    pub skew_ms: i64,
    /// Most flows held back at once; beyond it the oldest is emitted `late`.
    pub max_held: usize,
}

impl Default for AttributorConfig {
    fn default() -> Self {
        AttributorConfig {
            heartbeat_ms: 10_000,
            holdback_ms: 60_000,
            skew_ms: 500,
            max_held: 1_000_000,
        }
    }
}

/// Why an end has no owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnattributedReason {
    /// No owner held the address then (or none was ever seen).
    NoOwner,
    /// Two owners are proven too close to the instant to tell apart.
    Ambiguous,
    /// The evidence had not arrived when the hold-back ran out.
    Late,
}

impl UnattributedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnattributedReason::NoOwner => "no-owner",
            UnattributedReason::Ambiguous => "ambiguous",
            UnattributedReason::Late => "late",
        }
    }
}

/// What one end of a flow was attributed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndAttribution {
    /// The reporter's own side, tagged at capture.
    Local(OwnerId),
    /// Looked up in the ownership index; the range is the proof.
    Owned(RangeProof),
    /// No owner, but inside an operator-named network.
    External(String),
    Unattributed(UnattributedReason),
}

impl EndAttribution {
    /// The owner, when there is one.
    pub fn owner(&self) -> Option<OwnerId> {
        match self {
            EndAttribution::Local(o) => Some(*o),
            EndAttribution::Owned(p) => Some(p.owner),
            _ => None,
        }
    }
}

/// One end with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributedEnd {
    pub ip: IpAddr,
    pub port: u16,
    pub attribution: EndAttribution,
}

/// A flow with both ends answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributedFlow {
    pub flow: Flow,
    pub src: EndAttribution,
    pub dst: EndAttribution,
}

/// Counters for `hallmark flows stats` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttributorStats {
    /// Flows emitted.
    pub flows: u64,
    /// Ends attributed to an owner (local or looked up).
    pub ends_attributed: u64,
    pub ends_external: u64,
    pub ends_no_owner: u64,
    pub ends_ambiguous: u64,
    pub ends_late: u64,
    /// Flows held back when they arrived.
    pub flows_held: u64,
    /// Held flows emitted early because the hold-back queue was full.
    pub held_overflow: u64,
}

struct Held {
    flow: Flow,
    arrived_ms: i64,
}

enum Decision {
    Final(EndAttribution),
    Pending,
}

/// The engine: the ownership index, the operator's networks, and the flows
/// waiting for evidence.
pub struct Attributor {
    index: OwnershipIndex,
    networks: Networks,
    config: AttributorConfig,
    held: VecDeque<Held>,
    /// Held flows forced out of a full queue by [`Attributor::attribute`],
    /// which has no room to return them: the next poll emits them.
    ready: Vec<AttributedFlow>,
    stats: AttributorStats,
}

impl Attributor {
    pub fn new(config: AttributorConfig, networks: Networks) -> Self {
        Attributor {
            index: OwnershipIndex::new(config.heartbeat_ms, config.skew_ms),
            networks,
            config,
            held: VecDeque::new(),
            ready: Vec::new(),
            stats: AttributorStats::default(),
        }
    }

    pub fn index(&self) -> &OwnershipIndex {
        &self.index
    }

    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    pub fn stats(&self) -> AttributorStats {
        self.stats
    }

    /// Flows waiting for evidence (or, after [`attribute`](Self::attribute)
    /// overflowed the queue, decided and waiting for the next poll).
    pub fn held(&self) -> usize {
        self.held.len() + self.ready.len()
    }

    /// Forgets evidence older than `before_ms` (retention).
    pub fn prune(&mut self, before_ms: i64) -> usize {
        self.index.prune(before_ms)
    }

    /// Records ownership evidence. Held flows see it at the next
    /// [`poll`](Self::poll).
    pub fn record(&mut self, ev: &Evidence) {
        self.index.record(ev);
    }

    /// Attributes a flow that arrived at `now_ms` (the server's clock).
    /// `None` when it is held back; [`poll`](Self::poll) emits it later.
    pub fn submit(&mut self, flow: Flow, now_ms: i64) -> Option<AttributedFlow> {
        let local = self.record_local(&flow);
        match self.decide_both(&flow, local, false) {
            Some((src, dst)) => Some(self.emit(flow, src, dst)),
            None => self.hold(flow, now_ms),
        }
    }

    /// Attributes a flow by reference: both ends, counted as
    /// [`submit`](Self::submit) counts them, when they are decided at once
    /// (the common case, which neither moves nor copies the flow). `None`
    /// when an end is still pending: a copy of the flow is held back and
    /// [`poll`](Self::poll) emits it, as after `submit`. A held flow that a
    /// full queue forces out here is emitted by the next `poll` (with
    /// `submit`, it would be returned in place of the new one).
    pub fn attribute(
        &mut self,
        flow: &Flow,
        now_ms: i64,
    ) -> Option<(EndAttribution, EndAttribution)> {
        let local = self.record_local(flow);
        match self.decide_both(flow, local, false) {
            Some((src, dst)) => {
                self.count(&src);
                self.count(&dst);
                self.stats.flows += 1;
                Some((src, dst))
            }
            None => {
                if let Some(displaced) = self.hold(flow.clone(), now_ms) {
                    self.ready.push(displaced);
                }
                None
            }
        }
    }

    /// Records the reporter's tag of the local end as evidence, and
    /// returns that end's owner.
    fn record_local(&mut self, flow: &Flow) -> Option<(Side, OwnerId)> {
        let local = flow.local.as_ref()?;
        let addr = flow.addr(local.side);
        let key = if local.by_port {
            OwnershipKey::port(addr.ip(), addr.port())
        } else {
            OwnershipKey::ip(addr.ip())
        };
        let id = self.index.record_owner(&Evidence {
            key,
            owner: local.owner.clone(),
            at_ms: flow.start_ms,
            kind: EvidenceKind::LocalFlow,
        });
        Some((local.side, id))
    }

    /// Queues a flow with a pending end. When the queue is full, the oldest
    /// held flow is decided now and returned.
    fn hold(&mut self, flow: Flow, now_ms: i64) -> Option<AttributedFlow> {
        self.stats.flows_held += 1;
        let displaced = if self.held.len() >= self.config.max_held {
            self.held.pop_front().map(|oldest| {
                self.stats.held_overflow += 1;
                self.force(oldest.flow)
            })
        } else {
            None
        };
        self.held.push_back(Held {
            flow,
            arrived_ms: now_ms,
        });
        displaced
    }

    /// Retries every held flow against the evidence recorded since, and
    /// emits those decided now or held past the hold-back.
    pub fn poll(&mut self, now_ms: i64) -> Vec<AttributedFlow> {
        let mut out = std::mem::take(&mut self.ready);
        let mut still = VecDeque::with_capacity(self.held.len());
        while let Some(h) = self.held.pop_front() {
            let expired = now_ms.saturating_sub(h.arrived_ms) >= self.config.holdback_ms;
            match self.try_attribute(h.flow, expired) {
                Ok(done) => out.push(done),
                Err(flow) => still.push_back(Held {
                    flow: *flow,
                    arrived_ms: h.arrived_ms,
                }),
            }
        }
        self.held = still;
        out
    }

    /// Emits every held flow now, whatever its evidence (at shutdown).
    pub fn drain(&mut self) -> Vec<AttributedFlow> {
        let mut out = std::mem::take(&mut self.ready);
        let held = std::mem::take(&mut self.held);
        out.extend(held.into_iter().map(|h| self.force(h.flow)));
        out
    }

    fn force(&mut self, flow: Flow) -> AttributedFlow {
        match self.try_attribute(flow, true) {
            Ok(done) => done,
            // `final_answer` decides every end.
            Err(_) => unreachable!("a final attempt always decides"),
        }
    }

    /// Both ends decided, or the flow back when one is still pending (and
    /// `final_answer` is false).
    fn try_attribute(
        &mut self,
        flow: Flow,
        final_answer: bool,
    ) -> Result<AttributedFlow, Box<Flow>> {
        let local = flow.local.as_ref().and_then(|local| {
            let id = self.index.owners().find(&local.owner)?;
            Some((local.side, id))
        });
        match self.decide_both(&flow, local, final_answer) {
            Some((src, dst)) => Ok(self.emit(flow, src, dst)),
            None => Err(Box::new(flow)),
        }
    }

    fn emit(&mut self, flow: Flow, src: EndAttribution, dst: EndAttribution) -> AttributedFlow {
        self.count(&src);
        self.count(&dst);
        self.stats.flows += 1;
        AttributedFlow { flow, src, dst }
    }

    /// `local`: the reporter's own side and its owner, when it tagged one.
    fn decide_both(
        &self,
        flow: &Flow,
        local: Option<(Side, OwnerId)>,
        final_answer: bool,
    ) -> Option<(EndAttribution, EndAttribution)> {
        let end = |side: Side| {
            let addr = flow.addr(side);
            (addr.ip(), flow.protocol.has_ports().then_some(addr.port()))
        };
        let (src, dst) = (end(Side::Source), end(Side::Destination));
        let (src, dst) = match local {
            Some((Side::Source, id)) => (
                Decision::Final(EndAttribution::Local(id)),
                self.decide(
                    dst.0,
                    self.index.lookup(dst.0, dst.1, flow.start_ms),
                    final_answer,
                ),
            ),
            Some((Side::Destination, id)) => (
                self.decide(
                    src.0,
                    self.index.lookup(src.0, src.1, flow.start_ms),
                    final_answer,
                ),
                Decision::Final(EndAttribution::Local(id)),
            ),
            None => {
                let (ls, ld) = self.index.lookup_two(src, dst, flow.start_ms);
                (
                    self.decide(src.0, ls, final_answer),
                    self.decide(dst.0, ld, final_answer),
                )
            }
        };
        match (src, dst) {
            (Decision::Final(src), Decision::Final(dst)) => Some((src, dst)),
            _ => None,
        }
    }

    /// The answer for one end, at address `ip`, from its index lookup.
    fn decide(&self, ip: IpAddr, lookup: Lookup, final_answer: bool) -> Decision {
        let external_or = |reason| match self.networks.name_of(ip) {
            Some(name) => EndAttribution::External(name.to_string()),
            None => EndAttribution::Unattributed(reason),
        };
        match lookup {
            Lookup::Owned(proof) => Decision::Final(EndAttribution::Owned(proof)),
            Lookup::Ambiguous(..) => {
                Decision::Final(EndAttribution::Unattributed(UnattributedReason::Ambiguous))
            }
            Lookup::NoOwner => Decision::Final(external_or(UnattributedReason::NoOwner)),
            // An address no workload ever held: a named network answers at
            // once; otherwise an owner's first evidence may still come.
            Lookup::Unknown if self.networks.name_of(ip).is_some() || final_answer => {
                Decision::Final(external_or(UnattributedReason::NoOwner))
            }
            Lookup::Pending if final_answer => {
                Decision::Final(EndAttribution::Unattributed(UnattributedReason::Late))
            }
            Lookup::Unknown | Lookup::Pending => Decision::Pending,
        }
    }

    fn count(&mut self, end: &EndAttribution) {
        let s = &mut self.stats;
        match end {
            EndAttribution::Local(_) | EndAttribution::Owned(_) => s.ends_attributed += 1,
            EndAttribution::External(_) => s.ends_external += 1,
            EndAttribution::Unattributed(UnattributedReason::NoOwner) => s.ends_no_owner += 1,
            EndAttribution::Unattributed(UnattributedReason::Ambiguous) => s.ends_ambiguous += 1,
            EndAttribution::Unattributed(UnattributedReason::Late) => s.ends_late += 1,
        }
    }
}

#[cfg(test)]
#[path = "attribution_tests.rs"]
mod tests;
