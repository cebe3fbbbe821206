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
    stats: AttributorStats,
}

impl Attributor {
    pub fn new(config: AttributorConfig, networks: Networks) -> Self {
        Attributor {
            index: OwnershipIndex::new(config.heartbeat_ms, config.skew_ms),
            networks,
            config,
            held: VecDeque::new(),
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

    /// Flows waiting for evidence.
    pub fn held(&self) -> usize {
        self.held.len()
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
        if let Some(local) = &flow.local {
            let addr = flow.addr(local.side);
            let key = if local.by_port {
                OwnershipKey::port(addr.ip(), addr.port())
            } else {
                OwnershipKey::ip(addr.ip())
            };
            self.index.record(&Evidence {
                key,
                owner: local.owner.clone(),
                at_ms: flow.start_ms,
                kind: EvidenceKind::LocalFlow,
            });
        }
        match self.try_attribute(flow, false) {
            Ok(done) => Some(done),
            Err(flow) => {
                let flow = *flow;
                self.stats.flows_held += 1;
                if self.held.len() >= self.config.max_held {
                    if let Some(oldest) = self.held.pop_front() {
                        self.stats.held_overflow += 1;
                        let out = self.force(oldest.flow);
                        self.held.push_back(Held {
                            flow,
                            arrived_ms: now_ms,
                        });
                        // The caller gets the displaced flow now; the new
                        // one waits in its place.
                        return Some(out);
                    }
                }
                self.held.push_back(Held {
                    flow,
                    arrived_ms: now_ms,
                });
                None
            }
        }
    }

    /// Retries every held flow against the evidence recorded since, and
    /// emits those decided now or held past the hold-back.
    pub fn poll(&mut self, now_ms: i64) -> Vec<AttributedFlow> {
        let mut out = Vec::new();
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
        let held = std::mem::take(&mut self.held);
        held.into_iter().map(|h| self.force(h.flow)).collect()
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
        match self.decide_both(&flow, final_answer) {
            Some((src, dst)) => {
                self.count(&src);
                self.count(&dst);
                self.stats.flows += 1;
                Ok(AttributedFlow { flow, src, dst })
            }
            None => Err(Box::new(flow)),
        }
    }

    fn decide_both(
        &self,
        flow: &Flow,
        final_answer: bool,
    ) -> Option<(EndAttribution, EndAttribution)> {
        match (
            self.decide(flow, Side::Source, final_answer),
            self.decide(flow, Side::Destination, final_answer),
        ) {
            (Decision::Final(src), Decision::Final(dst)) => Some((src, dst)),
            _ => None,
        }
    }

    fn decide(&self, flow: &Flow, side: Side, final_answer: bool) -> Decision {
        if let Some(local) = &flow.local {
            if local.side == side {
                if let Some(id) = self.index.owners().find(&local.owner) {
                    return Decision::Final(EndAttribution::Local(id));
                }
            }
        }
        let addr = flow.addr(side);
        let port = flow.protocol.has_ports().then_some(addr.port());
        let external_or = |reason| match self.networks.name_of(addr.ip()) {
            Some(name) => EndAttribution::External(name.to_string()),
            None => EndAttribution::Unattributed(reason),
        };
        match self.index.lookup(addr.ip(), port, flow.start_ms) {
            Lookup::Owned(proof) => Decision::Final(EndAttribution::Owned(proof)),
            Lookup::Ambiguous(..) => {
                Decision::Final(EndAttribution::Unattributed(UnattributedReason::Ambiguous))
            }
            Lookup::NoOwner => Decision::Final(external_or(UnattributedReason::NoOwner)),
            // An address no workload ever held: a named network answers at
            // once; otherwise an owner's first evidence may still come.
            Lookup::Unknown if self.networks.name_of(addr.ip()).is_some() || final_answer => {
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
