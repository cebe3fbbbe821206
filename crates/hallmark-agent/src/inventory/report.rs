//! Reporting the inventory to the server: a bounded queue of lifecycle
//! events, drained by one task into `Node.ReportInventory` calls, and full
//! snapshots after every (re)connect and every full resync.
//!
//! Events are sent as soon as they are queued (whatever accumulated while
//! the previous call was in flight goes in the next one): the path from a
//! container start to the server is latency-bound, not throughput-bound.
//! A call that fails leaves its events queued; they go again after the
//! next (re)connect. When the server is away for long, the oldest events
//! are dropped first and counted: the snapshot sent on reconnect restores
//! the current state, only the history in between is lost.

use std::collections::VecDeque;
use std::time::Duration;

use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_client::NodeClient;
use rand::Rng;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::state::InventoryEvent;
use super::Inner;

/// Events kept while the server cannot take them.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Events or records per ReportInventory call.
pub const BATCH: usize = 500;
/// A report call that takes longer than this is treated as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The events not yet accepted by the server, oldest first. Each has a
/// sequence number so that an acknowledgement removes exactly what was
/// sent, even if overflow dropped some of it in the meantime.
pub struct EventQueue {
    items: VecDeque<(u64, InventoryEvent)>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
}

impl EventQueue {
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
            dropped: 0,
        }
    }

    /// Queues one event; returns how many old ones were dropped for it.
    pub fn push(&mut self, event: InventoryEvent) -> u64 {
        let mut dropped = 0;
        while self.items.len() >= self.capacity {
            self.items.pop_front();
            dropped += 1;
        }
        self.dropped += dropped;
        self.items.push_back((self.next_seq, event));
        self.next_seq += 1;
        dropped
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Events dropped since the inventory started.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Up to `max` of the oldest events, as wire messages, with the
    /// sequence number of the last one (to acknowledge them).
    pub fn batch(&self, max: usize) -> Option<(u64, Vec<pb::WorkloadEvent>)> {
        let last = self.items.iter().take(max).next_back()?.0;
        let events = self
            .items
            .iter()
            .take(max)
            .map(|(_, e)| pb::WorkloadEvent {
                kind: e.kind.as_str().to_string(),
                at_ms: e.at_ms,
                record: Some(pb::WorkloadRecord::from(&e.workload)),
            })
            .collect();
        Some((last, events))
    }

    /// Removes every event up to and including sequence number `last`.
    pub fn ack(&mut self, last: u64) {
        while self.items.front().is_some_and(|(seq, _)| *seq <= last) {
            self.items.pop_front();
        }
    }
}

/// Why a reporting session ended.
enum SessionEnd {
    Shutdown,
    /// The node client changed (reconnected, or went away).
    Reconnect,
}

/// The reporter task: follows the node client and sends what is queued.
pub async fn run(
    inner: std::sync::Arc<Inner>,
    mut client: watch::Receiver<Option<NodeClient<Channel>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let current = client.borrow_and_update().clone();
        let Some(c) = current else {
            tokio::select! {
                changed = client.changed() => {
                    if changed.is_err() {
                        // No client will ever come: nothing to report to.
                        let _ = shutdown.wait_for(|s| *s).await;
                        return;
                    }
                }
                _ = shutdown.changed() => {}
            }
            continue;
        };
        match session(&inner, c, &mut client, &mut shutdown).await {
            SessionEnd::Shutdown => return,
            SessionEnd::Reconnect => {}
        }
    }
}

/// One client's life: a snapshot first (the server may have missed
/// anything while we were apart), then events as they come, and a new
/// snapshot after each full resync.
async fn session(
    inner: &Inner,
    mut node: NodeClient<Channel>,
    client: &mut watch::Receiver<Option<NodeClient<Channel>>>,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let mut need_snapshot = true;
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    // False once the client's sender is gone: the current client is then
    // the last one, and there is no change left to wait for.
    let mut watching = true;
    loop {
        need_snapshot |= inner.take_snapshot_due();
        match send_pending(inner, &mut node, &mut need_snapshot).await {
            Ok(()) => {
                if failing {
                    tracing::info!("inventory reports reach the server again");
                }
                failing = false;
                backoff = MIN_BACKOFF;
                tokio::select! {
                    _ = inner.report_work.notified() => {}
                    changed = client.changed(), if watching => match changed {
                        Ok(()) => return SessionEnd::Reconnect,
                        Err(_) => watching = false,
                    },
                    _ = shutdown.changed() => return SessionEnd::Shutdown,
                }
            }
            Err(status) => {
                inner.metrics.inventory_reports_failed.inc();
                if !failing {
                    tracing::warn!(error = %status, "reporting the inventory failed; events stay queued and are retried");
                }
                failing = true;
                let wait = backoff.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    changed = client.changed(), if watching => match changed {
                        Ok(()) => return SessionEnd::Reconnect,
                        Err(_) => watching = false,
                    },
                    _ = shutdown.changed() => return SessionEnd::Shutdown,
                }
            }
        }
    }
}

/// Sends every queued event, then the snapshot if one is due. Events go
/// first so that the snapshot, taken last, is the newest word the server
/// has; events queued meanwhile follow it and only repeat what it says.
async fn send_pending(
    inner: &Inner,
    node: &mut NodeClient<Channel>,
    need_snapshot: &mut bool,
) -> Result<(), tonic::Status> {
    loop {
        let Some((last, events)) = inner.queue().batch(BATCH) else {
            break;
        };
        let report = pb::InventoryReport {
            events,
            ..inner.report_header()
        };
        call(inner, node, report).await?;
        inner.queue().ack(last);
    }
    if *need_snapshot {
        send_snapshot(inner, node).await?;
        *need_snapshot = false;
    }
    Ok(())
}

/// One full snapshot as pages sharing a fresh id, the last one marked.
async fn send_snapshot(inner: &Inner, node: &mut NodeClient<Channel>) -> Result<(), tonic::Status> {
    let records = inner.snapshot_records();
    let count = records.len();
    let pages = snapshot_pages(records, inner.report_header(), rand::thread_rng().gen());
    for page in pages {
        call(inner, node, page).await?;
    }
    inner.metrics.inventory_snapshot_records.set(count as i64);
    tracing::debug!(records = count, "inventory snapshot sent");
    Ok(())
}

/// Splits `records` into snapshot pages of at most [`BATCH`] records; an
/// empty inventory is one empty last page (it tells the server that
/// nothing runs here). `id` 0 is replaced: 0 means "no snapshot" on the wire.
pub fn snapshot_pages(
    records: Vec<pb::WorkloadRecord>,
    header: pb::InventoryReport,
    id: u64,
) -> Vec<pb::InventoryReport> {
    let snapshot_id = id.max(1);
    let mut chunks: Vec<Vec<pb::WorkloadRecord>> = Vec::new();
    let mut it = records.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(BATCH).collect());
    }
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, workloads)| pb::InventoryReport {
            snapshot_id,
            page: u32::try_from(i).unwrap_or(u32::MAX),
            last_page: i == last,
            workloads,
            ..header.clone()
        })
        .collect()
}

async fn call(
    inner: &Inner,
    node: &mut NodeClient<Channel>,
    report: pb::InventoryReport,
) -> Result<(), tonic::Status> {
    match tokio::time::timeout(CALL_TIMEOUT, node.report_inventory(report)).await {
        Ok(Ok(_)) => {
            inner.metrics.inventory_reports_sent.inc();
            Ok(())
        }
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "ReportInventory: no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::state::EventKind;
    use hallmark_core::{RuntimeSource, Workload};

    fn event(n: i64) -> InventoryEvent {
        InventoryEvent {
            kind: EventKind::Started,
            at_ms: n,
            workload: Workload::partial(&format!("c{n}"), RuntimeSource::Docker, ""),
        }
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts() {
        let mut q = EventQueue::new(3);
        for n in 0..5 {
            q.push(event(n));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 2);
        let (_, events) = q.batch(10).unwrap();
        let at: Vec<i64> = events.iter().map(|e| e.at_ms).collect();
        assert_eq!(at, vec![2, 3, 4], "the oldest went first");
    }

    #[test]
    fn ack_removes_what_was_sent_even_after_overflow() {
        let mut q = EventQueue::new(4);
        for n in 0..4 {
            q.push(event(n));
        }
        let (last, events) = q.batch(2).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, "started");
        assert_eq!(
            events[0].record.as_ref().map(|r| r.container_id.as_str()),
            Some("c0")
        );
        // While the call was in flight, overflow pushed out c0 and c1.
        q.push(event(4));
        q.push(event(5));
        q.ack(last);
        let (_, rest) = q.batch(10).unwrap();
        let at: Vec<i64> = rest.iter().map(|e| e.at_ms).collect();
        assert_eq!(at, vec![2, 3, 4, 5], "nothing unsent was acknowledged");
        q.ack(u64::MAX);
        assert!(q.batch(10).is_none());
    }

    #[test]
    fn snapshot_pages_are_bounded_and_marked() {
        let header = pb::InventoryReport {
            context_name: "lab".into(),
            dropped_events: 7,
            ..Default::default()
        };
        let rec = |i: usize| pb::WorkloadRecord {
            container_id: format!("c{i}"),
            ..Default::default()
        };
        let cases: Vec<(usize, Vec<usize>)> = vec![
            (0, vec![0]),
            (1, vec![1]),
            (BATCH, vec![BATCH]),
            (BATCH + 1, vec![BATCH, 1]),
            (3 * BATCH, vec![BATCH, BATCH, BATCH]),
        ];
        for (n, sizes) in cases {
            let pages = snapshot_pages((0..n).map(rec).collect(), header.clone(), 0);
            assert_eq!(
                pages.iter().map(|p| p.workloads.len()).collect::<Vec<_>>(),
                sizes,
                "{n} records"
            );
            let id = pages[0].snapshot_id;
            assert_ne!(id, 0, "snapshot ids are never 0");
            for (i, p) in pages.iter().enumerate() {
                assert_eq!(p.snapshot_id, id);
                assert_eq!(p.page as usize, i);
                assert_eq!(p.last_page, i == pages.len() - 1);
                assert_eq!(p.context_name, "lab");
                assert_eq!(p.dropped_events, 7);
                assert!(p.events.is_empty());
            }
        }
    }
}
