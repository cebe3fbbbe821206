//! The enforcement thread: owns the [`Enforcer`], keeps its image equal to
//! the policy over this node's workloads, turns kernel events into flows
//! and publishes status and metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hallmark_bpf::{
    Decisions, Direction, EnforceEvent, EnforceOptions, Enforcer, Mode, Protocol, Verdict,
};
use hallmark_flows::{EnforcedVerdict, Flow, TcpOutcome};
use hallmark_policy::Outcome;
use tokio::sync::broadcast::error::TryRecvError;

use super::coalesce::Recent;
use super::image::{compile, Compiled};
use super::inputs::{cgroup_id, gather, held_locally, resolvers, Inputs};
use super::{
    lock, now_ms, set_mode_metric, write_status, EnforceConfig, EnforceDeps, EnforceState,
    EnforceStatus, EnforcementMode, MapUse, OnAgentExit,
};
use crate::capture::cgroups::LocalTag;
use crate::capture::convert::{oriented, Clock, Seen};
use crate::metrics::{MapLabels, RuleVerdictLabels, VerdictLabels};

/// How long the thread waits on the event ring before it looks at the
/// policy, the inventory and the clock: a fleet switch or a policy change
/// is in the kernel well within a second.
const POLL_TIMEOUT_MS: u16 = 100;
/// The inputs are rebuilt at least this often (a cgroup that appeared, a
/// resolver that changed), even without an event.
const RECHECK_EVERY: Duration = Duration::from_secs(2);
/// A taken-over image stays untouched until the inventory has listed the
/// containers and attested their processes, or this long: installing
/// before would drop the running workloads from enforcement for a moment.
const TAKEOVER_GRACE: Duration = Duration::from_secs(10);
/// An address a local workload gave up stays "unknown" this long, unless
/// a local workload holds it again: long enough for the server to hear of
/// the stop and send the address's new state.
const RELEASE_HOLD: Duration = Duration::from_secs(10);
/// Counters, map use and the status file, this often.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// What the image in the kernel was built from; a change of any part
/// means a new image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Built {
    revision: i64,
    policy: usize,
    inputs: Inputs,
}

pub(super) fn run(
    config: EnforceConfig,
    deps: EnforceDeps,
    node: String,
    status: Arc<Mutex<EnforceStatus>>,
    status_path: PathBuf,
    stop: Arc<AtomicBool>,
) {
    let metrics = deps.metrics.clone();
    let unavailable = |code: &str, reason: String, state: EnforceState| {
        set_mode_metric(
            &metrics,
            if state == EnforceState::Off {
                "off"
            } else {
                "unavailable"
            },
        );
        let mut s = lock(&status);
        s.state = state;
        s.reason_code = code.to_string();
        s.reason = reason;
        s.at_ms = now_ms();
        write_status(&status_path, &s);
    };
    let pin_dir = config.pin_root.join(&node);
    if config.mode == EnforcementMode::Off {
        // Programs an earlier agent left pinned would go on enforcing:
        // `off` means nothing is enforced on this node.
        if pin_dir.join("hm_enf_config").exists() {
            let opts = EnforceOptions {
                cgroup: config.cgroup.clone(),
                pin_dir: Some(pin_dir.clone()),
            };
            match Enforcer::load(&opts).and_then(Enforcer::unpin_and_detach) {
                Ok(()) => {
                    tracing::info!(pin_dir = %pin_dir.display(), "removed pinned enforcement (--enforcement off)")
                }
                Err(e) => {
                    tracing::error!(pin_dir = %pin_dir.display(), error = %e, "removing pinned enforcement failed; remove the directory by hand")
                }
            }
        }
        unavailable(
            "off",
            "enforcement is off (--enforcement off)".into(),
            EnforceState::Off,
        );
        return;
    }
    let Some(root) = hallmark_bpf::cgroup2_mount() else {
        unavailable(
            "no-cgroup2",
            "no cgroup2 hierarchy is mounted".into(),
            EnforceState::Unavailable,
        );
        return;
    };
    let opts = EnforceOptions {
        cgroup: config.cgroup.clone(),
        pin_dir: (config.on_exit == OnAgentExit::Keep).then(|| pin_dir.clone()),
    };
    let loaded = hallmark_bpf::probe()
        .map_err(hallmark_bpf::EnforceError::from)
        .and_then(|()| Enforcer::load(&opts));
    let enforcer = match loaded {
        Ok(e) => e,
        Err(e) => {
            let reason = format!("{e}");
            tracing::warn!(reason = %reason, "policy enforcement unavailable; identities are served without it");
            unavailable(e.reason(), reason, EnforceState::Unavailable);
            return;
        }
    };
    let own_cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .and_then(|p| cgroup_id(&root, &p));
    {
        let mut s = lock(&status);
        s.state = EnforceState::Running;
        s.taken_over = enforcer.taken_over();
        s.pin_dir = opts
            .pin_dir
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        s.mode = enforcer
            .mode()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        s.at_ms = now_ms();
        write_status(&status_path, &s);
    }
    tracing::info!(
        pin_dir = %opts.pin_dir.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        taken_over = enforcer.taken_over(),
        "policy enforcement attached"
    );
    let inventory_events = deps.inventory.subscribe();
    let hold_until = enforcer
        .taken_over()
        .then(|| Instant::now() + TAKEOVER_GRACE);
    let w = Worker {
        hold_until,
        config,
        enforcer,
        deps,
        inventory_events,
        node,
        root,
        own_cgroup,
        status,
        status_path,
        built: None,
        failed: None,
        compiled: None,
        last_decisions: Decisions::default(),
        last_ring_drops: 0,
        last_rule_decisions: Vec::new(),
        rules_counted_at: Decisions::default(),
        held: BTreeSet::new(),
        released: BTreeMap::new(),
        recent: Recent::default(),
    };
    w.run(&stop);
}

struct Worker {
    config: EnforceConfig,
    enforcer: Enforcer,
    deps: EnforceDeps,
    inventory_events: tokio::sync::broadcast::Receiver<crate::inventory::InventoryEvent>,
    node: String,
    root: PathBuf,
    own_cgroup: Option<u64>,
    status: Arc<Mutex<EnforceStatus>>,
    status_path: PathBuf,
    /// What the image in the kernel was built from.
    built: Option<Built>,
    /// Inputs whose image failed: not retried until something changes.
    failed: Option<Built>,
    /// The image in the kernel (rule names for events).
    compiled: Option<Compiled>,
    last_decisions: Decisions,
    last_ring_drops: u64,
    /// The kernel's per-rule counters at the last count, by rule id.
    last_rule_decisions: Vec<Decisions>,
    /// The totals when rules were last counted (no change: nothing to read).
    rules_counted_at: Decisions,
    /// After a takeover: the pinned image stays until the inventory is
    /// settled or this instant.
    hold_until: Option<Instant>,
    /// Addresses local workloads held at the last reconcile.
    held: BTreeSet<IpAddr>,
    /// Addresses local workloads gave up, and when.
    released: BTreeMap<IpAddr, Instant>,
    /// Events reported in the last minute (their repeats are left out).
    recent: Recent,
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        let mut events = Vec::new();
        let mut last_check: Option<Instant> = None;
        let mut last_housekeeping = Instant::now();
        let mut clock = Clock::now();
        let context = self.deps.inventory.context_name().to_string();
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [nix::poll::PollFd::new(
                self.enforcer.ring(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(POLL_TIMEOUT_MS));
            events.clear();
            self.enforcer.drain_events(&mut events);
            for ev in &events {
                self.report(ev, &context, &clock);
            }
            let mut changed = self.deps.policy.has_changed().unwrap_or(false);
            while let Ok(_) | Err(TryRecvError::Lagged(_)) = self.inventory_events.try_recv() {
                changed = true;
            }
            let now = Instant::now();
            if changed || last_check.is_none_or(|t| now.duration_since(t) >= RECHECK_EVERY) {
                last_check = Some(now);
                self.reconcile(&context);
            }
            if now.duration_since(last_housekeeping) >= HOUSEKEEPING_EVERY {
                last_housekeeping = now;
                clock = Clock::now();
                self.housekeeping();
            }
        }
        if self.config.on_exit == OnAgentExit::Detach {
            match self.enforcer.unpin_and_detach() {
                Ok(()) => tracing::info!("policy enforcement detached (--on-agent-exit detach)"),
                Err(e) => tracing::error!(error = %e, "detaching policy enforcement failed"),
            }
        } else {
            tracing::info!(
                "policy enforcement stays pinned for the next agent (--on-agent-exit keep)"
            );
        }
    }

    /// Brings the kernel image and mode in line with the policy and the
    /// workloads.
    fn reconcile(&mut self, context: &str) {
        let state = self.deps.policy.borrow_and_update().clone();
        let mode = if state.fleet_enforcement_off {
            Mode::Off
        } else {
            self.config.mode.kernel()
        };
        lock(&self.status).fleet_off = state.fleet_enforcement_off;
        // The mode follows the switch first, whether or not a new image
        // follows: turning enforcement off never waits for a compile, and
        // a mode change alone needs no new image.
        if self.enforcer.mode().ok() != Some(mode) {
            match self.enforcer.set_mode(mode) {
                Ok(()) => tracing::info!(mode = mode.as_str(), "enforcement mode set"),
                Err(e) => tracing::error!(error = %e, "setting the enforcement mode failed"),
            }
        }
        if let Err(e) = state.usable() {
            // No readable revision yet: the kernel keeps what it has.
            self.failed_install(format!("no policy to enforce: {e}"), None);
        } else {
            let resolv = std::fs::read_to_string(&self.config.resolv_conf)
                .map(|t| resolvers(&t))
                .unwrap_or_default();
            let workloads = self.deps.inventory.workloads();
            let hold = match self.hold_until {
                Some(until) if Instant::now() < until && !self.inventory_settled(&workloads) => {
                    true
                }
                _ => {
                    self.hold_until = None;
                    false
                }
            };
            let released = self.released_addresses(&workloads);
            let root = self.root.clone();
            let inputs = gather(
                &state,
                &workloads,
                context,
                &self.node,
                self.own_cgroup,
                &|p: &str| cgroup_id(&root, p),
                &resolv,
                &released,
            );
            let want = Built {
                revision: state.revision,
                policy: Arc::as_ptr(&state.policy) as usize,
                inputs,
            };
            if !hold && self.built.as_ref() != Some(&want) && self.failed.as_ref() != Some(&want) {
                self.install(&state.policy, want, mode);
            }
        }
        let kernel = self.enforcer.mode().unwrap_or(mode);
        set_mode_metric(&self.deps.metrics, kernel.as_str());
        lock(&self.status).mode = kernel.as_str().to_string();
    }

    /// The addresses local workloads gave up within [`RELEASE_HOLD`] and
    /// that none holds now.
    fn released_addresses(&mut self, workloads: &[hallmark_core::Workload]) -> BTreeSet<IpAddr> {
        let now = Instant::now();
        let held = held_locally(workloads);
        for ip in self.held.difference(&held) {
            self.released.insert(*ip, now);
        }
        self.released
            .retain(|ip, at| !held.contains(ip) && now.duration_since(*at) < RELEASE_HOLD);
        self.held = held;
        self.released.keys().copied().collect()
    }

    /// Whether the inventory has listed the runtime's containers and
    /// attested every running one that has a process.
    fn inventory_settled(&self, workloads: &[hallmark_core::Workload]) -> bool {
        self.deps.inventory.status().resyncs > 0
            && workloads.iter().all(|w| {
                w.state != hallmark_core::WorkloadState::Running
                    || w.pid.is_none()
                    || !w.selectors.is_empty()
            })
    }

    fn install(&mut self, policy: &hallmark_policy::Policy, want: Built, mode: Mode) {
        let compiled = match compile(policy, &want.inputs, mode) {
            Ok(c) => c,
            Err(e) => {
                self.failed_install(
                    format!(
                        "policy revision {} not compiled for the kernel: {e}",
                        want.revision
                    ),
                    Some(want),
                );
                return;
            }
        };
        // Decisions so far belong to the rule names of the image leaving.
        self.count_rules();
        match self.enforcer.install(&compiled.image) {
            Ok(report) => {
                tracing::info!(
                    revision = want.revision,
                    workloads = report.locals,
                    peers = report.peers,
                    pairs = report.pairs,
                    tables = report.tables,
                    generation = report.generation,
                    "policy image installed in the kernel"
                );
                let mut s = lock(&self.status);
                s.revision = want.revision;
                s.workloads = report.locals;
                s.peers = report.peers;
                s.pairs = report.pairs;
                s.last_error = None;
                drop(s);
                self.compiled = Some(compiled);
                self.built = Some(want);
                self.failed = None;
            }
            Err(e) => self.failed_install(
                format!(
                    "policy revision {} refused by the kernel, revision {} stays in force: {e}",
                    want.revision,
                    lock(&self.status).revision
                ),
                Some(want),
            ),
        }
    }

    fn failed_install(&mut self, error: String, inputs: Option<Built>) {
        let mut s = lock(&self.status);
        if s.last_error.as_deref() == Some(error.as_str()) {
            return;
        }
        tracing::error!("{error}");
        s.install_errors += 1;
        s.last_error = Some(error);
        drop(s);
        self.deps.metrics.enforcement_install_errors.inc();
        self.failed = inputs;
    }

    /// A kernel event as a flow: a denied TCP connect is a refused
    /// connection of 0 bytes.
    fn report(&mut self, ev: &EnforceEvent, context: &str, clock: &Clock) {
        let rule = self
            .compiled
            .as_ref()
            .map(|c| c.rule_name(ev.rule).to_string())
            .unwrap_or_default();
        tracing::debug!(
            verdict = ev.verdict.as_str(),
            rule = %rule,
            local = %ev.local,
            remote = %ev.remote,
            "enforcement event"
        );
        if !self.recent.first(ev) {
            return;
        }
        let locals = self.built.as_ref().map(|b| b.inputs.locals.as_slice());
        let locals = locals.unwrap_or_default();
        // A TCP connect let through in watch mode towards a workload this
        // agent also enforces: that workload's inbound decision reports the
        // same connection with both ports; this one has no source port yet.
        if ev.direction == Direction::Egress
            && ev.protocol == Protocol::Tcp
            && ev.verdict == Verdict::WouldDeny
            && locals
                .iter()
                .any(|l| l.attributes.addr == Some(ev.remote.ip()))
        {
            return;
        }
        let local = locals.iter().find(|l| l.cgroup_id == ev.cgroup_id);
        let mut ev = ev.clone();
        // A connect decided before the socket was bound has no local
        // address yet: the workload's own, of the same family.
        if ev.local.ip().is_unspecified() {
            let own = local.and_then(|l| l.attributes.addr);
            let own = match own {
                Some(ip) if ip.is_ipv4() == ev.remote.ip().is_ipv4() => Some(ip),
                _ => self
                    .deps
                    .inventory
                    .workloads()
                    .into_iter()
                    .find(|w| local.is_some_and(|l| l.container_id == w.container_id))
                    .and_then(|w| {
                        w.ips
                            .iter()
                            .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
                            .find(|ip| ip.is_ipv4() == ev.remote.ip().is_ipv4())
                    }),
            };
            if let Some(ip) = own {
                ev.local.set_ip(ip);
            }
        }
        let ev = &ev;
        // Before the first image of this agent (a taken-over one is in
        // force): the inventory, by cgroup.
        let container_id = local.map(|l| l.container_id.clone()).or_else(|| {
            self.deps
                .inventory
                .workloads()
                .into_iter()
                .find(|w| cgroup_id(&self.root, &w.cgroup) == Some(ev.cgroup_id))
                .map(|w| w.container_id)
        });
        let tag = LocalTag {
            container_id,
            unit: String::new(),
            by_port: false,
        };
        let revision = lock(&self.status).revision;
        let rule = (ev.rule != 0).then_some(rule);
        let flow = event_flow(ev, &tag, context, clock, rule, revision);
        if self.deps.sink.offer(flow).is_err() {
            self.deps.metrics.enforcement_events_dropped.inc();
            lock(&self.status).events_dropped += 1;
        }
    }

    /// Adds the kernel's per-rule decisions since the last count to
    /// `hallmark_agent_enforcement_rule_decisions_total` and the status,
    /// named by the image in force.
    fn count_rules(&mut self) {
        let Some(compiled) = &self.compiled else {
            return;
        };
        let totals = self.enforcer.decisions();
        if totals == self.rules_counted_at {
            return;
        }
        self.rules_counted_at = totals;
        let ids = compiled.rules.len().max(self.last_rule_decisions.len());
        let now = self
            .enforcer
            .rule_decisions(u32::try_from(ids).unwrap_or(u32::MAX));
        let mut s = lock(&self.status);
        for (id, d) in now.iter().enumerate() {
            let before = self
                .last_rule_decisions
                .get(id)
                .copied()
                .unwrap_or_default();
            let name = compiled.rule_name(u32::try_from(id).unwrap_or(u32::MAX));
            for (verdict, n) in [
                ("allowed", d.allowed.saturating_sub(before.allowed)),
                ("denied", d.denied.saturating_sub(before.denied)),
                ("would-deny", d.would_deny.saturating_sub(before.would_deny)),
            ] {
                if n == 0 {
                    continue;
                }
                self.deps
                    .metrics
                    .enforcement_rule_decisions
                    .get_or_create(&RuleVerdictLabels {
                        rule: name.to_string(),
                        verdict: verdict.to_string(),
                    })
                    .inc_by(n);
                *s.rule_decisions
                    .entry(name.to_string())
                    .or_default()
                    .entry(verdict.to_string())
                    .or_default() += n;
            }
        }
        drop(s);
        self.last_rule_decisions = now;
    }

    fn housekeeping(&mut self) {
        self.count_rules();
        let d = self.enforcer.decisions();
        let last = std::mem::replace(&mut self.last_decisions, d);
        let m = &self.deps.metrics;
        for (verdict, now, before) in [
            ("allowed", d.allowed, last.allowed),
            ("denied", d.denied, last.denied),
            ("would-deny", d.would_deny, last.would_deny),
        ] {
            m.enforcement_decisions
                .get_or_create(&VerdictLabels {
                    verdict: verdict.into(),
                })
                .inc_by(now.saturating_sub(before));
        }
        let ring = self.enforcer.drops().ringbuf_full;
        let lost = ring.saturating_sub(std::mem::replace(&mut self.last_ring_drops, ring));
        m.enforcement_events_dropped.inc_by(lost);
        self.recent.forget_before(
            hallmark_bpf::monotonic_now_ns().saturating_sub(super::coalesce::WINDOW_NS),
        );
        let mut s = lock(&self.status);
        s.events_coalesced = self.recent.coalesced;
        s.events_dropped += lost;
        s.decisions = [
            ("allowed", d.allowed),
            ("denied", d.denied),
            ("would-deny", d.would_deny),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Ok(u) = self.enforcer.map_usage() {
            for (map, usage) in [
                ("locals", u.locals),
                ("peers4", u.peers4),
                ("peers6", u.peers6),
                ("pairs", u.pairs),
                ("tables", u.tables),
                ("exempt", u.exempt),
                ("udp_ok", u.udp_ok),
            ] {
                let labels = MapLabels { map: map.into() };
                m.enforcement_map_entries
                    .get_or_create(&labels)
                    .set(i64::try_from(usage.used).unwrap_or(i64::MAX));
                m.enforcement_map_capacity
                    .get_or_create(&labels)
                    .set(i64::try_from(usage.capacity).unwrap_or(i64::MAX));
                s.maps.insert(
                    map.to_string(),
                    MapUse {
                        used: usage.used,
                        capacity: usage.capacity,
                    },
                );
            }
        }
        s.at_ms = now_ms();
        write_status(&self.status_path, &s);
    }
}

/// The flow of one enforcement event, oriented initiator first, with the
/// kernel's verdict, its rule (`None`: the default) and the revision in
/// force. A denied TCP connection never opened: outcome `refused`, 0
/// bytes.
pub(crate) fn event_flow(
    ev: &EnforceEvent,
    tag: &LocalTag,
    context: &str,
    clock: &Clock,
    rule: Option<String>,
    revision: i64,
) -> Flow {
    let seen = Seen {
        initiated: ev.direction == Direction::Egress,
        local: ev.local,
        remote: ev.remote,
        start_ns: ev.ts_ns,
        end_ns: ev.ts_ns,
        sent: (0, 0),
        received: (0, 0),
    };
    let protocol = match ev.protocol {
        Protocol::Tcp => hallmark_flows::Protocol::Tcp,
        Protocol::Udp => hallmark_flows::Protocol::Udp,
    };
    let mut flow = oriented(seen, protocol, Some(tag), context, clock);
    if protocol == hallmark_flows::Protocol::Tcp && ev.verdict == Verdict::Deny {
        flow.outcome = Some(TcpOutcome::Refused);
    }
    let verdict = match ev.verdict {
        Verdict::WouldDeny => Outcome::WouldDeny,
        // An allow raises no event; were one reported, it is no deny.
        Verdict::Deny => Outcome::Denied,
        Verdict::Allow => Outcome::Allowed,
    };
    // A rule that would-denies is in watch mode; one that denies, enforce.
    let mode = rule.as_ref().map(|_| match ev.verdict {
        Verdict::WouldDeny => hallmark_policy::Mode::Watch,
        _ => hallmark_policy::Mode::Enforce,
    });
    flow.enforced = Some(EnforcedVerdict {
        verdict,
        rule,
        mode,
        policy_revision: revision,
    });
    flow
}
