//! The current set of workloads and the rules that turn a change of record
//! into lifecycle events. No I/O here: the follower feeds records in, the
//! caller publishes the events this returns.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use hallmark_core::{Confidence, Workload, WorkloadState};
use hallmark_runtime::RuntimeEvent;
use serde::Serialize;

/// What happened to a workload, as the inventory tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The container runs (first time seen running, or running again).
    Started,
    /// The record changed while the container kept its lifecycle state.
    Updated,
    /// The container's process exited, or the container is gone.
    Stopped,
}

impl EventKind {
    /// The wire name (`WorkloadEvent.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Updated => "updated",
            EventKind::Stopped => "stopped",
        }
    }
}

/// One lifecycle event, with the record as it was at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryEvent {
    pub kind: EventKind,
    /// Unix milliseconds at which the agent saw the change.
    pub at_ms: i64,
    pub workload: Workload,
}

fn is_live(s: WorkloadState) -> bool {
    matches!(s, WorkloadState::Running | WorkloadState::Paused)
}

/// The events that moving a container from `prev` (what the inventory last
/// knew, `None` if nothing) to `next` (what the runtime says now) amounts to.
///
/// A container can start and exit between two looks at it (a short-lived
/// job, or events that arrive while an earlier inspect is in flight): a
/// stopped record whose start time the inventory never announced is told as
/// `started` then `stopped`, so that no run goes unrecorded.
pub fn transition(prev: Option<&Workload>, next: &Workload) -> Vec<EventKind> {
    use EventKind::*;
    let prev_state = prev.map(|p| p.state);
    let changed = prev != Some(next);
    match next.state {
        WorkloadState::Running | WorkloadState::Paused => match prev_state {
            Some(s) if is_live(s) => {
                if changed {
                    vec![Updated]
                } else {
                    vec![]
                }
            }
            _ => vec![Started],
        },
        WorkloadState::Stopped => {
            let unannounced_run = next.started_at_ms > 0
                && match prev {
                    None => true,
                    Some(p) if is_live(p.state) => false,
                    Some(p) if p.state == WorkloadState::Stopped => {
                        p.started_at_ms != next.started_at_ms
                    }
                    Some(_) => true,
                };
            match (unannounced_run, prev_state) {
                (true, _) => vec![Started, Stopped],
                (false, Some(WorkloadState::Stopped)) if changed => vec![Updated],
                (false, Some(WorkloadState::Stopped)) => vec![],
                (false, _) => vec![Stopped],
            }
        }
        WorkloadState::Created | WorkloadState::Unknown => {
            if changed {
                vec![Updated]
            } else {
                vec![]
            }
        }
    }
}

/// The inventory's mutable state. Guarded by one mutex in the inventory;
/// never held across an await.
#[derive(Default)]
pub struct State {
    workloads: HashMap<String, Workload>,
    partial: usize,
    /// Bumped for every runtime event and every record learnt outside a
    /// listing. A listing started at epoch E must not overwrite a container
    /// touched after E: its view of that container is older.
    epoch: u64,
    touched: HashMap<String, u64>,
    /// Per-container queues of events waiting for (or under) an inspect.
    /// A container is present here exactly while one task works on it,
    /// which keeps each container's events in order.
    lanes: HashMap<String, VecDeque<RuntimeEvent>>,
}

impl State {
    pub fn get(&self, id: &str) -> Option<&Workload> {
        self.workloads.get(id)
    }

    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    pub fn partial(&self) -> usize {
        self.partial
    }

    pub fn iter(&self) -> impl Iterator<Item = &Workload> {
        self.workloads.values()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Marks `id` as learnt about now (see `epoch`).
    pub fn touch(&mut self, id: &str) {
        self.epoch += 1;
        self.touched.insert(id.to_string(), self.epoch);
    }

    /// Whether a listing begun at `since` must leave `id` alone: something
    /// newer about it arrived after, or a task is still working on it.
    fn newer_than(&self, id: &str, since: u64) -> bool {
        self.lanes.contains_key(id) || self.touched.get(id).is_some_and(|e| *e > since)
    }

    /// Queues `event` on its container's lane. Returns true when the lane
    /// was idle, i.e. the caller must start a task to work it.
    pub fn enqueue(&mut self, event: RuntimeEvent) -> bool {
        self.touch(&event.container_id);
        match self.lanes.get_mut(&event.container_id) {
            Some(q) => {
                q.push_back(event);
                false
            }
            None => {
                let id = event.container_id.clone();
                self.lanes.insert(id, VecDeque::from([event]));
                true
            }
        }
    }

    /// The next events of `id`'s lane to handle together, or `None` (and
    /// the lane is closed) when there are none. Consecutive non-destroy
    /// events share one inspect, since an inspect shows the latest state
    /// anyway; a destroy is always handled on its own.
    pub fn next_batch(&mut self, id: &str) -> Option<Vec<RuntimeEvent>> {
        let q = self.lanes.get_mut(id)?;
        let Some(first) = q.pop_front() else {
            self.lanes.remove(id);
            return None;
        };
        let destroy = first.action == hallmark_runtime::EventAction::Destroyed;
        let mut batch = vec![first];
        while !destroy
            && q.front()
                .is_some_and(|e| e.action != hallmark_runtime::EventAction::Destroyed)
        {
            if let Some(e) = q.pop_front() {
                batch.push(e);
            }
        }
        Some(batch)
    }

    pub fn has_lane(&self, id: &str) -> bool {
        self.lanes.contains_key(id)
    }

    fn put(&mut self, w: Workload) -> Option<Workload> {
        if w.confidence == Confidence::Partial {
            self.partial += 1;
        }
        let old = self.workloads.insert(w.container_id.clone(), w);
        if old
            .as_ref()
            .is_some_and(|o| o.confidence == Confidence::Partial)
        {
            self.partial -= 1;
        }
        old
    }

    fn take(&mut self, id: &str) -> Option<Workload> {
        let old = self.workloads.remove(id);
        if old
            .as_ref()
            .is_some_and(|o| o.confidence == Confidence::Partial)
        {
            self.partial -= 1;
        }
        old
    }

    /// Stores what the runtime says about one container; returns the
    /// events this amounts to. A partial record never replaces a full one:
    /// an inspect that failed says nothing new about the container.
    ///
    /// The runtime's records carry no identity (selectors, SPIFFE IDs):
    /// the agent derives it from the record and the process. While the
    /// runtime's word is unchanged the derived identity stays; any change
    /// drops it until it is derived again from the new record.
    pub fn upsert(&mut self, mut next: Workload, at_ms: i64) -> Vec<InventoryEvent> {
        if let Some(prev) = self.workloads.get(&next.container_id) {
            let derived = !prev.selectors.is_empty() || !prev.spiffe_ids.is_empty();
            let none_given = next.selectors.is_empty() && next.spiffe_ids.is_empty();
            if derived && none_given && same_runtime_record(prev, &next) {
                next.selectors = prev.selectors.clone();
                next.spiffe_ids = prev.spiffe_ids.clone();
            }
        }
        self.upsert_exact(next, at_ms)
    }

    /// Sets the identity derived for a container from the record `basis`,
    /// if the inventory's record is still the runtime's same word (else a
    /// newer record is on its way to its own derivation). An identity that
    /// changes a running container's record is told as `updated`.
    pub fn set_identity(
        &mut self,
        basis: &Workload,
        selectors: Vec<String>,
        spiffe_ids: Vec<String>,
        at_ms: i64,
    ) -> Vec<InventoryEvent> {
        let Some(current) = self.workloads.get(&basis.container_id) else {
            return Vec::new();
        };
        if !same_runtime_record(current, basis)
            || (current.selectors == selectors && current.spiffe_ids == spiffe_ids)
        {
            return Vec::new();
        }
        let mut next = current.clone();
        next.selectors = selectors;
        next.spiffe_ids = spiffe_ids;
        self.upsert_exact(next, at_ms)
    }

    /// Running (or paused) containers with identity-bearing records: a
    /// process ID and a full record.
    pub fn live_with_pid(&self) -> Vec<Workload> {
        self.workloads
            .values()
            .filter(|w| is_live(w.state) && w.pid.is_some())
            .cloned()
            .collect()
    }

    /// Containers that currently carry a derived identity.
    pub fn with_identity(&self) -> usize {
        self.workloads
            .values()
            .filter(|w| !w.selectors.is_empty())
            .count()
    }

    fn upsert_exact(&mut self, next: Workload, at_ms: i64) -> Vec<InventoryEvent> {
        let prev = self.workloads.get(&next.container_id);
        if next.confidence == Confidence::Partial
            && prev.is_some_and(|p| p.confidence == Confidence::Full)
        {
            return Vec::new();
        }
        let kinds = transition(prev, &next);
        let events = kinds
            .into_iter()
            .map(|kind| InventoryEvent {
                kind,
                at_ms,
                workload: next.clone(),
            })
            .collect();
        self.put(next);
        events
    }

    /// Forgets a container the runtime no longer has. If it was not known
    /// as stopped, its last record is told as `stopped` first.
    pub fn remove(&mut self, id: &str, at_ms: i64) -> Vec<InventoryEvent> {
        let Some(mut last) = self.take(id) else {
            return Vec::new();
        };
        if last.state == WorkloadState::Stopped {
            return Vec::new();
        }
        last.state = WorkloadState::Stopped;
        // The process is gone; its PID may already name another one, and
        // the identity derived from it went with it.
        last.pid = None;
        last.selectors.clear();
        last.spiffe_ids.clear();
        vec![InventoryEvent {
            kind: EventKind::Stopped,
            at_ms,
            workload: last,
        }]
    }

    /// Applies a full listing begun at epoch `since`: containers touched
    /// after that are left to their newer information. Returns the events,
    /// or none when `quiet` (the very first listing is the starting state,
    /// not a change, and goes to the server as a snapshot).
    pub fn apply_listing(
        &mut self,
        listed: Vec<Workload>,
        since: u64,
        at_ms: i64,
        quiet: bool,
    ) -> Vec<InventoryEvent> {
        let mut events = Vec::new();
        let mut seen = HashSet::with_capacity(listed.len());
        for w in listed {
            seen.insert(w.container_id.clone());
            if self.newer_than(&w.container_id, since) {
                continue;
            }
            events.extend(self.upsert(w, at_ms));
        }
        let gone: Vec<String> = self
            .workloads
            .keys()
            .filter(|id| !seen.contains(*id) && !self.newer_than(id, since))
            .cloned()
            .collect();
        for id in gone {
            events.extend(self.remove(&id, at_ms));
        }
        // Marks older than this listing can no longer matter: any later
        // listing starts after it.
        self.touched.retain(|_, e| *e > since);
        if quiet {
            events.clear();
        }
        events
    }

    /// Inserts records directly, without events (benchmarks, tests).
    pub fn insert_quiet(&mut self, workloads: Vec<Workload>) {
        for w in workloads {
            self.put(w);
        }
    }
}

/// Whether two records are the same word of the runtime, whatever
/// identity the agent derived for either.
pub fn same_runtime_record(a: &Workload, b: &Workload) -> bool {
    if a.selectors == b.selectors && a.spiffe_ids == b.spiffe_ids {
        return a == b;
    }
    let strip = |w: &Workload| Workload {
        selectors: Vec::new(),
        spiffe_ids: Vec::new(),
        ..w.clone()
    };
    strip(a) == strip(b)
}

/// Counts for the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub running: usize,
    pub stopped: usize,
    pub partial: usize,
}

impl State {
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            total: self.workloads.len(),
            partial: self.partial,
            ..Counts::default()
        };
        for w in self.workloads.values() {
            match w.state {
                WorkloadState::Running | WorkloadState::Paused => c.running += 1,
                WorkloadState::Stopped => c.stopped += 1,
                _ => {}
            }
        }
        c
    }
}

/// When the last full listing finished and how long it took.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResyncInfo {
    pub at_ms: i64,
    pub took: Duration,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hallmark_core::RuntimeSource;
    use hallmark_runtime::EventAction;
    use WorkloadState::{Running, Stopped};

    fn rec(id: &str, state: WorkloadState, started: i64) -> Workload {
        let mut w = Workload::partial(id, RuntimeSource::Docker, "");
        w.confidence = Confidence::Full;
        w.degraded_reason.clear();
        w.state = state;
        w.started_at_ms = started;
        w
    }

    #[test]
    fn transitions_table() {
        use EventKind::{Started, Stopped as Gone, Updated};
        use WorkloadState::{Created, Paused, Running, Stopped};
        let relabelled = {
            let mut w = rec("c", Running, 10);
            w.labels.insert("a".into(), "b".into());
            w
        };
        let cases: Vec<(&str, Option<Workload>, Workload, Vec<EventKind>)> = vec![
            ("new running", None, rec("c", Running, 10), vec![Started]),
            ("new paused", None, rec("c", Paused, 10), vec![Started]),
            (
                "created then running",
                Some(rec("c", Created, 0)),
                rec("c", Running, 10),
                vec![Started],
            ),
            (
                "unchanged running",
                Some(rec("c", Running, 10)),
                rec("c", Running, 10),
                vec![],
            ),
            (
                "changed running",
                Some(rec("c", Running, 10)),
                relabelled,
                vec![Updated],
            ),
            (
                "running then paused",
                Some(rec("c", Running, 10)),
                rec("c", Paused, 10),
                vec![Updated],
            ),
            (
                "restart after stop",
                Some(rec("c", Stopped, 10)),
                rec("c", Running, 20),
                vec![Started],
            ),
            (
                "running then died",
                Some(rec("c", Running, 10)),
                rec("c", Stopped, 10),
                vec![Gone],
            ),
            (
                "created, ran and exited unseen",
                Some(rec("c", Created, 0)),
                rec("c", Stopped, 10),
                vec![Started, Gone],
            ),
            (
                "new, ran and exited unseen",
                None,
                rec("c", Stopped, 10),
                vec![Started, Gone],
            ),
            (
                "new, never started, stopped",
                None,
                rec("c", Stopped, 0),
                vec![Gone],
            ),
            (
                "stopped stays stopped",
                Some(rec("c", Stopped, 10)),
                rec("c", Stopped, 10),
                vec![],
            ),
            (
                "ran again between looks",
                Some(rec("c", Stopped, 10)),
                rec("c", Stopped, 20),
                vec![Started, Gone],
            ),
            ("new created", None, rec("c", Created, 0), vec![Updated]),
            (
                "created unchanged",
                Some(rec("c", Created, 0)),
                rec("c", Created, 0),
                vec![],
            ),
            (
                "partial unknown",
                None,
                Workload::partial("c", RuntimeSource::Docker, "inspect failed"),
                vec![Updated],
            ),
        ];
        for (name, prev, next, want) in cases {
            assert_eq!(transition(prev.as_ref(), &next), want, "{name}");
        }
    }

    #[test]
    fn partial_never_replaces_full_and_is_counted() {
        let mut s = State::default();
        let events = s.upsert(
            Workload::partial("p", RuntimeSource::Docker, "inspect failed"),
            1,
        );
        assert_eq!(events.len(), 1);
        assert_eq!(s.partial(), 1);
        s.upsert(rec("p", Running, 5), 2);
        assert_eq!(s.partial(), 0, "a full record replaced the partial one");
        let events = s.upsert(
            Workload::partial("p", RuntimeSource::Docker, "inspect failed"),
            3,
        );
        assert!(events.is_empty());
        assert_eq!(s.get("p").map(|w| w.confidence), Some(Confidence::Full));
    }

    #[test]
    fn remove_tells_stopped_once() {
        let mut s = State::default();
        s.upsert(rec("a", Running, 5), 1);
        s.upsert(rec("b", Stopped, 5), 1);
        let ev = s.remove("a", 9);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Stopped);
        assert_eq!(ev[0].workload.state, WorkloadState::Stopped);
        assert!(
            s.remove("b", 9).is_empty(),
            "already stopped: no second stopped"
        );
        assert!(s.remove("nope", 9).is_empty());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn listing_skips_containers_touched_after_it_began() {
        let mut s = State::default();
        s.upsert(rec("a", Running, 5), 1);
        s.upsert(rec("b", Running, 5), 1);
        let since = s.epoch();
        // An event about `a` arrived while the listing was under way.
        s.touch("a");
        s.upsert(rec("a", Stopped, 5), 2);
        // The listing still saw `a` running and does not list `b` any more.
        let events = s.apply_listing(vec![rec("a", Running, 5)], since, 3, false);
        assert_eq!(s.get("a").map(|w| w.state), Some(WorkloadState::Stopped));
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].workload.container_id, "b");
        assert_eq!(events[0].kind, EventKind::Stopped);
        assert!(s.get("b").is_none());
    }

    #[test]
    fn a_derived_identity_lasts_as_long_as_the_runtimes_word() {
        let mut s = State::default();
        let basis = rec("c", Running, 5);
        s.upsert(basis.clone(), 1);
        let sel = vec!["docker:label:app:web".to_string()];
        let ids = vec!["spiffe://td/web".to_string()];
        let ev = s.set_identity(&basis, sel.clone(), ids.clone(), 2);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Updated);
        assert_eq!(ev[0].workload.spiffe_ids, ids);
        assert!(
            s.set_identity(&basis, sel.clone(), ids.clone(), 3)
                .is_empty(),
            "no change, no event"
        );
        // The runtime says the same again: the identity stays, quietly.
        assert!(s.upsert(basis.clone(), 4).is_empty());
        assert_eq!(s.get("c").map(|w| w.selectors.clone()), Some(sel.clone()));
        // The runtime's word changes: the identity goes until derived anew.
        let mut relabelled = basis.clone();
        relabelled.labels.insert("app".into(), "db".into());
        let ev = s.upsert(relabelled.clone(), 5);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].workload.selectors.is_empty() && ev[0].workload.spiffe_ids.is_empty());
        // An identity derived from the old record is not applied.
        assert!(s
            .set_identity(&basis, sel.clone(), ids.clone(), 6)
            .is_empty());
        assert!(s.get("c").is_some_and(|w| w.selectors.is_empty()));
        assert_eq!(s.set_identity(&relabelled, sel, ids, 7).len(), 1);
        assert_eq!(s.with_identity(), 1);
        assert_eq!(s.live_with_pid().len(), 0, "rec() has no pid");
        // Stopped: the identity went with the process.
        let ev = s.remove("c", 8);
        assert!(ev[0].workload.selectors.is_empty() && ev[0].workload.spiffe_ids.is_empty());
        assert_eq!(s.with_identity(), 0);
    }

    #[test]
    fn lanes_keep_order_and_batch_until_a_destroy() {
        let ev = |a| RuntimeEvent {
            container_id: "c".into(),
            action: a,
            at_ms: 0,
        };
        let mut s = State::default();
        assert!(s.enqueue(ev(EventAction::Created)));
        assert!(!s.enqueue(ev(EventAction::Started)), "lane already busy");
        assert!(!s.enqueue(ev(EventAction::Destroyed)));
        assert!(!s.enqueue(ev(EventAction::Died)));
        let b = s.next_batch("c").unwrap();
        assert_eq!(
            b.iter().map(|e| e.action).collect::<Vec<_>>(),
            vec![EventAction::Created, EventAction::Started]
        );
        let b = s.next_batch("c").unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].action, EventAction::Destroyed);
        assert_eq!(s.next_batch("c").unwrap()[0].action, EventAction::Died);
        assert!(s.has_lane("c"));
        assert!(s.next_batch("c").is_none());
        assert!(!s.has_lane("c"), "an empty lane is closed");
        assert!(
            s.enqueue(ev(EventAction::Started)),
            "a closed lane needs a new task"
        );
    }
}
