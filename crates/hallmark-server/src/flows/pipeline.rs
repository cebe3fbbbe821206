//! The one task that owns the attribution engine: it takes submissions in
//! arrival order, coalesces them into one datastore transaction, retries
//! held flows as time passes, and answers each submitter once its flows
//! are durable.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hallmark_core::time::unix_millis;
use hallmark_flows::verdict::{outcome_word, PolicyInForce, VerdictCounts, OUTCOMES};
use hallmark_flows::{
    AttributedFlow, Attributor, EndAttribution, Evidence, Flow, Judge, Owner, Side, StoredFlow,
};
use hallmark_policy::Policy;
use hallmark_store::flows::{FlowWrite, MergePolicy};
use hallmark_store::Store;
use tokio::sync::{mpsc, watch};

use super::describe::{with_local_unit, Describer};
use super::Submission;
use crate::metrics::ServerMetrics;
use crate::policy::{CurrentPolicy, PolicyCell};

/// Where flows came from, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    Agent,
    Collector,
    File,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Agent => "agent",
            Source::Collector => "collector",
            Source::File => "file",
        }
    }
}

pub(crate) enum Msg {
    Submit(Submission),
    /// Evidence another server (or this one) wrote, read back from a
    /// shared datastore: recorded, not written again.
    Tailed(Vec<Evidence>),
}

/// Counters for `flows stats`, kept beside the engine's own.
#[derive(Default)]
pub(crate) struct Counters {
    pub ingested: Mutex<BTreeMap<String, u64>>,
    pub rejected: Mutex<BTreeMap<String, u64>>,
    pub evidence: Mutex<BTreeMap<String, u64>>,
    pub stored: AtomicU64,
    pub store_errors: AtomicU64,
}

impl Counters {
    pub fn reject(&self, reason: &str, n: u64) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(reason.to_string()).or_default() += n;
        }
    }

    fn ingest(&self, source: Source, n: u64) {
        if let Ok(mut m) = self.ingested.lock() {
            *m.entry(source.as_str().to_string()).or_default() += n;
        }
    }

    fn evidence(&self, ev: &[Evidence]) {
        if let Ok(mut m) = self.evidence.lock() {
            for e in ev {
                *m.entry(e.kind.as_str().to_string()).or_default() += 1;
            }
        }
    }
}

/// The identity of a held flow, to find its pending row when the engine
/// emits it: identical flows are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlowKey {
    start_ms: i64,
    end_ms: i64,
    src: SocketAddr,
    dst: SocketAddr,
    protocol: u8,
    reporter: String,
    bytes: u64,
}

impl FlowKey {
    fn of(f: &Flow) -> Self {
        FlowKey {
            start_ms: f.start_ms,
            end_ms: f.end_ms,
            src: f.src,
            dst: f.dst,
            protocol: f.protocol.number(),
            reporter: f.reporter.to_string(),
            bytes: f.bytes_sent ^ f.bytes_received.rotate_left(32),
        }
    }
}

/// Most flows one transaction takes.
const MAX_BATCH_FLOWS: usize = 5_000;
/// How often held flows are retried.
const POLL_PERIOD: Duration = Duration::from_millis(250);

pub(crate) struct Pipeline {
    pub attributor: Arc<Mutex<Attributor>>,
    pub store: Arc<dyn Store>,
    pub describer: Describer,
    pub server_id: String,
    pub counters: Arc<Counters>,
    pub metrics: Arc<ServerMetrics>,
    /// Whether evidence comes back through the datastore tail (shared
    /// datastore) rather than being recorded at once.
    pub tailing: bool,
    /// How far apart two reports of one connection may start
    /// ([`FlowWrite::merge_window_ms`]).
    pub merge_window_ms: i64,
    /// The policy in force: every flow stored gets its verdict (revision 0,
    /// allowing everything, until the server's cell is set here).
    pub policy: Arc<PolicyCell>,
    /// Pending row IDs of held flows, by flow.
    pending: HashMap<FlowKey, VecDeque<i64>>,
}

impl Pipeline {
    pub fn new(
        attributor: Arc<Mutex<Attributor>>,
        store: Arc<dyn Store>,
        describer: Describer,
        server_id: String,
        counters: Arc<Counters>,
        metrics: Arc<ServerMetrics>,
        tailing: bool,
    ) -> Self {
        Pipeline {
            policy: Arc::default(),
            attributor,
            store,
            describer,
            server_id,
            counters,
            metrics,
            tailing,
            merge_window_ms: hallmark_flows::DEFAULT_MERGE_WINDOW_MS,
            pending: HashMap::new(),
        }
    }

    /// Takes up flows a previous run of this server (or a server that did
    /// not come back) held: they are attributed or held again, keeping
    /// their pending rows.
    pub async fn resume(&mut self, pending: Vec<hallmark_store::flows::PendingFlow>) {
        if pending.is_empty() {
            return;
        }
        let now = now_ms();
        let mut done = Vec::new();
        let mut emitted = Vec::new();
        {
            let Ok(mut a) = self.attributor.lock() else {
                return;
            };
            for p in pending {
                let key = FlowKey::of(&p.flow);
                match a.submit(p.flow, now) {
                    Some(af) => {
                        done.push(p.id);
                        emitted.push(af);
                    }
                    None => self.pending.entry(key).or_default().push_back(p.id),
                }
            }
        }
        tracing::info!(
            resumed = done.len() + self.pending.values().map(VecDeque::len).sum::<usize>(),
            "flows held before the restart taken up again"
        );
        let _ = self.write(Vec::new(), Vec::new(), done, emitted, now).await;
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(first) = msg else { return };
                    let mut batch = vec![first];
                    let mut flows = batch_flows(&batch);
                    while flows < MAX_BATCH_FLOWS {
                        match rx.try_recv() {
                            Ok(m) => {
                                flows += batch_flows(std::slice::from_ref(&m));
                                batch.push(m);
                            }
                            Err(_) => break,
                        }
                    }
                    self.handle(batch).await;
                }
                _ = tick.tick() => self.poll().await,
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        // Held flows stay pending in the datastore and are
                        // taken up at the next start.
                        return;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, batch: Vec<Msg>) {
        let now = now_ms();
        let mut evidence_to_write = Vec::new();
        let mut replies = Vec::new();
        let mut held = Vec::new();
        let mut emitted = Vec::new();
        {
            let Ok(mut a) = self.attributor.lock() else {
                return;
            };
            for msg in batch {
                match msg {
                    Msg::Tailed(ev) => {
                        for e in &ev {
                            a.record(e);
                        }
                    }
                    Msg::Submit(sub) => {
                        self.counters.ingest(sub.source, sub.flows.len() as u64);
                        self.metrics
                            .flows_ingested(sub.source.as_str(), sub.flows.len() as u64);
                        self.counters.evidence(&sub.evidence);
                        if !self.tailing {
                            for e in &sub.evidence {
                                a.record(e);
                            }
                        }
                        evidence_to_write.extend(sub.evidence);
                        for flow in sub.flows {
                            let copy = flow.clone();
                            match a.submit(flow, now) {
                                Some(af) => emitted.push(af),
                                None => held.push(copy),
                            }
                        }
                        if let Some(r) = sub.reply {
                            replies.push(r);
                        }
                    }
                }
            }
            emitted.extend(a.poll(now));
        }
        let done = self.retire(&emitted);
        let result = self
            .write(evidence_to_write, held, done, emitted, now)
            .await;
        for r in replies {
            let _ = r.send(result.clone());
        }
    }

    async fn poll(&mut self) {
        let now = now_ms();
        let emitted = match self.attributor.lock() {
            Ok(mut a) => {
                self.metrics.set_flow_engine(&a);
                if a.held() == 0 {
                    return;
                }
                a.poll(now)
            }
            Err(_) => return,
        };
        if emitted.is_empty() {
            return;
        }
        let done = self.retire(&emitted);
        let _ = self.write(Vec::new(), Vec::new(), done, emitted, now).await;
    }

    /// The pending rows of emitted flows that were held.
    fn retire(&mut self, emitted: &[AttributedFlow]) -> Vec<i64> {
        let mut done = Vec::new();
        if self.pending.is_empty() {
            return done;
        }
        for af in emitted {
            let key = FlowKey::of(&af.flow);
            if let Some(ids) = self.pending.get_mut(&key) {
                if let Some(id) = ids.pop_front() {
                    done.push(id);
                }
                if ids.is_empty() {
                    self.pending.remove(&key);
                }
            }
        }
        done
    }

    /// Describes and stores emitted flows, adds held ones as pending and
    /// retires done ones, in one transaction.
    async fn write(
        &mut self,
        evidence: Vec<Evidence>,
        held: Vec<Flow>,
        pending_done: Vec<i64>,
        emitted: Vec<AttributedFlow>,
        now: i64,
    ) -> Result<(), String> {
        if evidence.is_empty() && held.is_empty() && pending_done.is_empty() && emitted.is_empty() {
            return Ok(());
        }
        let mut flows = self.describe(emitted, now).await;
        // Decided by the policy in force now, once both ends are described;
        // the store decides merged rows again by the same revision.
        let current = self.policy.current();
        let mut verdicts = VerdictCounts::default();
        if !flows.is_empty() {
            let mut judge = Judge::new(current.as_ref());
            for f in &mut flows {
                judge.judge(f);
                if let Some(v) = f.verdict {
                    *verdicts.slot(v) += 1;
                }
            }
        }
        let held_keys: Vec<FlowKey> = held.iter().map(FlowKey::of).collect();
        let stored = flows.len() as u64;
        let write = FlowWrite {
            server_id: self.server_id.clone(),
            now_ms: now,
            evidence,
            pending_add: held,
            pending_done,
            flows,
            merge_window_ms: self.merge_window_ms,
            policy: Some(MergePolicy(current)),
        };
        match self.store.write_flows(&write).await {
            Ok(written) => {
                self.metrics.flows_merged.inc_by(written.merged);
                for (key, id) in held_keys.into_iter().zip(written.pending_ids) {
                    self.pending.entry(key).or_default().push_back(id);
                }
                self.counters.stored.fetch_add(stored, Ordering::Relaxed);
                self.metrics.flows_stored.inc_by(stored);
                for o in OUTCOMES {
                    let n = verdicts.get(o);
                    if n > 0 {
                        self.metrics.flow_verdict(outcome_word(o), n);
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                self.metrics.flow_store_errors.inc();
                tracing::warn!(error = %e, flows = stored, "writing flows to the datastore failed; submitters are told to retry");
                Err(format!("writing flows to the datastore: {e}"))
            }
        }
    }

    async fn describe(&self, emitted: Vec<AttributedFlow>, now: i64) -> Vec<StoredFlow> {
        if emitted.is_empty() {
            return Vec::new();
        }
        // Owners are read under the lock; descriptions need the store.
        let owners: Vec<(Option<Owner>, Option<Owner>)> = match self.attributor.lock() {
            Ok(a) => {
                let table = a.index().owners();
                let owner = |e: &EndAttribution| e.owner().and_then(|id| table.get(id).cloned());
                emitted
                    .iter()
                    .map(|af| (owner(&af.src), owner(&af.dst)))
                    .collect()
            }
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::with_capacity(emitted.len());
        for (af, (src_owner, dst_owner)) in emitted.into_iter().zip(owners) {
            self.metrics.flow_end(&af.src);
            self.metrics.flow_end(&af.dst);
            let src = self
                .describer
                .endpoint(&af.src, src_owner.as_ref(), now)
                .await;
            let src = with_local_unit(src, &af.src, &af.flow, Side::Source);
            let dst = self
                .describer
                .endpoint(&af.dst, dst_owner.as_ref(), now)
                .await;
            let dst = with_local_unit(dst, &af.dst, &af.flow, Side::Destination);
            out.push(StoredFlow::new(af.flow, src, dst, now));
        }
        out
    }
}

/// The policy in force decides flows under its revision.
impl PolicyInForce for CurrentPolicy {
    fn revision(&self) -> i64 {
        self.revision
    }

    fn policy(&self) -> &Policy {
        &self.policy
    }
}

fn batch_flows(batch: &[Msg]) -> usize {
    batch
        .iter()
        .map(|m| match m {
            Msg::Submit(s) => s.flows.len().max(1),
            Msg::Tailed(ev) => ev.len() / 100 + 1,
        })
        .sum()
}

pub(crate) fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// Creates the submission channel.
pub(crate) fn channel() -> (mpsc::Sender<Msg>, mpsc::Receiver<Msg>) {
    mpsc::channel(1024)
}
