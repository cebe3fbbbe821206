//! [`InventoryStore`] on SQL: applying agents' reports (upserts, snapshot
//! pages and their completion, per-agent status) and listing what they say.
//!
//! Reports of one (agent, context) are serialised ([`Backend::lock_inventory`]),
//! so completing a snapshot sees the pages of exactly the reports committed
//! before it. The SQL narrows listings by plain columns; the filter's own
//! `matches` decides.

use std::time::Duration;

use hallmark_core::{SpiffeId, Workload, WorkloadState};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Backend, RowsAffected, SqlStore, SqlValue, TextConditions};
use crate::codec::{
    counter_column, decode_error, namespace_column, snapshot_column, state_column, workload_json,
    AgentInventoryRow, WorkloadEventRow, WorkloadRow, AGENT_INVENTORY_COLUMNS, WORKLOAD_COLUMNS,
    WORKLOAD_EVENT_COLUMNS,
};
use crate::inventory::{
    visible_since_ms, AgentInventory, InventoryApplied, InventoryReport, InventoryStore,
    PrunedWorkloads, SnapshotOutcome, StateFilter, StoredWorkload, StoredWorkloadEvent,
    WorkloadCounts, WorkloadEventKind, WorkloadFilter,
};
use crate::{Result, StoreError};

#[async_trait::async_trait]
impl<DB> InventoryStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    Option<i64>: SqlValue<DB>,
    bool: SqlValue<DB>,
    String: SqlValue<DB>,
{
    async fn apply_inventory(&self, r: &InventoryReport, now_ms: i64) -> Result<InventoryApplied> {
        let encoded = EncodedReport::new(r)?;
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // An agent that failed over to another server may have a report
        // still in flight at the first: one (agent, context) at a time.
        DB::lock_inventory(&mut tx, r.agent_id.as_str(), &r.context_name).await?;
        let key = InventoryKey {
            context_name: &r.context_name,
            agent_id: r.agent_id.as_str(),
        };
        let applied = ReportWriter::<DB> { conn: &mut tx, key }
            .write(r, &encoded, now_ms)
            .await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn list_workloads(
        &self,
        filter: &WorkloadFilter,
        now_ms: i64,
        retention: Duration,
    ) -> Result<Vec<StoredWorkload>> {
        // `$1` is the visibility bound.
        let mut conditions = TextConditions::new(1);
        if let Some(c) = &filter.context_name {
            conditions.push("context_name = {}", c);
        }
        if let Some(a) = &filter.agent_id {
            conditions.push("agent_id = {}", a.as_str());
        }
        if let Some(ns) = &filter.namespace {
            conditions.push("namespace = {}", ns);
        }
        match filter.state {
            Some(StateFilter::Current) => conditions.sql.push("stopped_at_ms IS NULL".into()),
            Some(StateFilter::Is(state)) => conditions.push("state = {}", state.as_str()),
            None => {}
        }
        let sql = format!(
            "SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE (stopped_at_ms IS NULL OR stopped_at_ms >= $1){} \
             ORDER BY context_name, agent_id, container_id",
            conditions.clause(" AND ")
        );
        let mut query =
            sqlx::query_as::<_, WorkloadRow>(&sql).bind(visible_since_ms(now_ms, retention));
        for value in conditions.binds {
            query = query.bind(value);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("workloads", e))?;
        let mut out = Vec::new();
        for row in rows {
            let w = row.into_workload()?;
            // The definition of a match; it also checks images and labels.
            if filter.matches(&w) {
                out.push(w);
            }
        }
        Ok(out)
    }

    async fn find_workloads_by_prefix(
        &self,
        prefix: &str,
        now_ms: i64,
        retention: Duration,
    ) -> Result<Vec<StoredWorkload>> {
        let sql = format!(
            "SELECT {WORKLOAD_COLUMNS} FROM workloads \
             WHERE (stopped_at_ms IS NULL OR stopped_at_ms >= $1) AND {} \
             ORDER BY container_id, context_name, agent_id",
            DB::CONTAINER_ID_STARTS_WITH
        );
        let query = sqlx::query_as(&sql).bind(visible_since_ms(now_ms, retention));
        let rows: Vec<WorkloadRow> = DB::bind_prefix(query, prefix)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("workloads", e))?;
        rows.into_iter().map(WorkloadRow::into_workload).collect()
    }

    async fn workload_events(&self, container_id: &str) -> Result<Vec<StoredWorkloadEvent>> {
        let sql = format!(
            "SELECT {WORKLOAD_EVENT_COLUMNS} FROM workload_events WHERE container_id = $1 ORDER BY at_ms, id"
        );
        let rows: Vec<WorkloadEventRow> = sqlx::query_as(&sql)
            .bind(container_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("workload_events", e))?;
        rows.into_iter().map(WorkloadEventRow::into_event).collect()
    }

    async fn count_workloads(&self, now_ms: i64, retention: Duration) -> Result<WorkloadCounts> {
        let (current, stopped): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(CASE WHEN stopped_at_ms IS NULL THEN 1 END), COUNT(stopped_at_ms) \
             FROM workloads WHERE stopped_at_ms IS NULL OR stopped_at_ms >= $1",
        )
        .bind(visible_since_ms(now_ms, retention))
        .fetch_one(&self.pool)
        .await?;
        let count = |n: i64| {
            u64::try_from(n)
                .map_err(|_| StoreError::Corrupt(format!("table workloads: COUNT returned {n}")))
        };
        Ok(WorkloadCounts {
            current: count(current)?,
            stopped: count(stopped)?,
        })
    }

    async fn prune_workloads(&self, before_ms: i64) -> Result<PrunedWorkloads> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let workloads = sqlx::query("DELETE FROM workloads WHERE stopped_at_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let events = sqlx::query("DELETE FROM workload_events WHERE received_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(PrunedWorkloads { workloads, events })
    }

    async fn agent_inventory(&self, agent_id: &SpiffeId) -> Result<Option<AgentInventory>> {
        let sql =
            format!("SELECT {AGENT_INVENTORY_COLUMNS} FROM agent_inventory WHERE agent_id = $1");
        let row: Option<AgentInventoryRow> = sqlx::query_as(&sql)
            .bind(agent_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| decode_error("agent_inventory", e))?;
        row.map(AgentInventoryRow::into_inventory).transpose()
    }

    async fn list_agent_inventories(&self) -> Result<Vec<AgentInventory>> {
        let sql =
            format!("SELECT {AGENT_INVENTORY_COLUMNS} FROM agent_inventory ORDER BY agent_id");
        let rows: Vec<AgentInventoryRow> = sqlx::query_as(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("agent_inventory", e))?;
        rows.into_iter()
            .map(AgentInventoryRow::into_inventory)
            .collect()
    }
}

/// The inventory rows one report may touch belong to this pair.
struct InventoryKey<'a> {
    context_name: &'a str,
    agent_id: &'a str,
}

/// How an upsert stops a workload.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Stopped at this time unless it was stopped already (then the earlier
    /// time stays): the record says stopped, but not when it was seen to.
    Keep(i64),
    /// Stopped at exactly this time: the agent saw it stop then.
    Exact(i64),
}

/// When a record in state stopped stopped: the runtime's finish time when
/// it is known and not after `reference_ms`, else `reference_ms`. An exited
/// container listed long after it exited thus ages out of the retention
/// window instead of being listed as freshly stopped by every snapshot.
fn stop_time(w: &Workload, reference_ms: i64) -> i64 {
    if w.finished_at_ms > 0 && w.finished_at_ms <= reference_ms {
        w.finished_at_ms
    } else {
        reference_ms
    }
}

/// A report's records encoded for storage, before any transaction is
/// opened so that locks are held for writing only.
struct EncodedReport {
    /// The snapshot page's records, in order.
    pages: Vec<String>,
    /// The events' records, in order.
    events: Vec<String>,
}

impl EncodedReport {
    fn new(r: &InventoryReport) -> Result<Self> {
        Ok(EncodedReport {
            pages: r
                .snapshot
                .iter()
                .flat_map(|p| &p.workloads)
                .map(workload_json)
                .collect::<Result<Vec<_>>>()?,
            events: r
                .events
                .iter()
                .map(|e| workload_json(&e.workload))
                .collect::<Result<Vec<_>>>()?,
        })
    }
}

/// Writes one report of one (agent, context) inside the caller's
/// transaction.
struct ReportWriter<'a, DB: Backend> {
    conn: &'a mut DB::Connection,
    key: InventoryKey<'a>,
}

impl<DB> ReportWriter<'_, DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    Option<i64>: SqlValue<DB>,
    bool: SqlValue<DB>,
{
    /// Applies the report (see [`InventoryStore::apply_inventory`] for the
    /// order and the rules).
    async fn write(
        &mut self,
        r: &InventoryReport,
        encoded: &EncodedReport,
        now_ms: i64,
    ) -> Result<InventoryApplied> {
        let mut applied = InventoryApplied {
            upserted: 0,
            events: 0,
            snapshot: SnapshotOutcome::None,
        };
        if let Some(page) = &r.snapshot {
            let snapshot = snapshot_column(page.snapshot_id);
            self.record_page(snapshot, page.page, now_ms).await?;
            for (w, json) in page.workloads.iter().zip(&encoded.pages) {
                let stop =
                    (w.state == WorkloadState::Stopped).then(|| Stop::Keep(stop_time(w, now_ms)));
                self.upsert_workload(w, json, now_ms, Some(snapshot), stop)
                    .await?;
                applied.upserted += 1;
            }
            applied.snapshot = if page.last_page {
                self.complete_snapshot(snapshot, page.page, now_ms).await?
            } else {
                SnapshotOutcome::Page
            };
        }
        for (e, json) in r.events.iter().zip(&encoded.events) {
            let stop = match e.kind {
                WorkloadEventKind::Stopped => Some(Stop::Exact(e.at_ms)),
                _ if e.workload.state == WorkloadState::Stopped => {
                    Some(Stop::Keep(stop_time(&e.workload, e.at_ms)))
                }
                _ => None,
            };
            self.upsert_workload(&e.workload, json, now_ms, None, stop)
                .await?;
            sqlx::query(
                "INSERT INTO workload_events (context_name, agent_id, container_id, kind, at_ms, received_ms, record) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(self.key.context_name)
            .bind(self.key.agent_id)
            .bind(e.workload.container_id.as_str())
            .bind(e.kind.as_str())
            .bind(e.at_ms)
            .bind(now_ms)
            .bind(json.as_str())
            .execute(&mut *self.conn)
            .await?;
            applied.upserted += 1;
            applied.events += 1;
        }
        self.set_agent_inventory(r, now_ms).await?;
        Ok(applied)
    }

    async fn upsert_workload(
        &mut self,
        w: &Workload,
        json: &str,
        now_ms: i64,
        snapshot: Option<i64>,
        stop: Option<Stop>,
    ) -> Result<()> {
        let (stopped_at, exact) = match stop {
            None => (None, false),
            Some(Stop::Keep(at)) => (Some(at), false),
            Some(Stop::Exact(at)) => (Some(at), true),
        };
        sqlx::query(
            "INSERT INTO workloads (context_name, agent_id, container_id, record, state, namespace, \
             first_seen_ms, last_seen_ms, stopped_at_ms, snapshot_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9) \
             ON CONFLICT (context_name, agent_id, container_id) DO UPDATE SET \
             record = excluded.record, state = excluded.state, namespace = excluded.namespace, \
             last_seen_ms = excluded.last_seen_ms, \
             stopped_at_ms = CASE WHEN excluded.stopped_at_ms IS NULL OR $10 THEN excluded.stopped_at_ms \
                                  ELSE COALESCE(workloads.stopped_at_ms, excluded.stopped_at_ms) END, \
             snapshot_id = COALESCE(excluded.snapshot_id, workloads.snapshot_id)",
        )
        .bind(self.key.context_name)
        .bind(self.key.agent_id)
        .bind(w.container_id.as_str())
        .bind(json)
        .bind(state_column(w, stopped_at.is_some()))
        .bind(namespace_column(w))
        .bind(now_ms)
        .bind(stopped_at)
        .bind(snapshot)
        .bind(exact)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    /// Notes that a page of `snapshot` arrived; a page of another snapshot
    /// abandons the one in progress.
    async fn record_page(&mut self, snapshot: i64, page: u32, now_ms: i64) -> Result<()> {
        sqlx::query(
            "DELETE FROM inventory_snapshot_pages WHERE context_name = $1 AND agent_id = $2 AND snapshot_id <> $3",
        )
        .bind(self.key.context_name)
        .bind(self.key.agent_id)
        .bind(snapshot)
        .execute(&mut *self.conn)
        .await?;
        // A page sent twice (a retry after a lost answer) keeps its first
        // arrival time.
        sqlx::query(
            "INSERT INTO inventory_snapshot_pages (context_name, agent_id, snapshot_id, page, received_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (context_name, agent_id, snapshot_id, page) DO NOTHING",
        )
        .bind(self.key.context_name)
        .bind(self.key.agent_id)
        .bind(snapshot)
        .bind(i64::from(page))
        .bind(now_ms)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    /// Handles the last page (`last`) of `snapshot`: see
    /// [`InventoryStore::apply_inventory`].
    async fn complete_snapshot(
        &mut self,
        snapshot: i64,
        last: u32,
        now_ms: i64,
    ) -> Result<SnapshotOutcome> {
        let (received, started): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(received_ms) FROM inventory_snapshot_pages \
             WHERE context_name = $1 AND agent_id = $2 AND snapshot_id = $3 AND page <= $4",
        )
        .bind(self.key.context_name)
        .bind(self.key.agent_id)
        .bind(snapshot)
        .bind(i64::from(last))
        .fetch_one(&mut *self.conn)
        .await
        .map_err(|e| decode_error("inventory_snapshot_pages", e))?;
        // The snapshot is over either way: a later page of it cannot complete
        // it again.
        sqlx::query(
            "DELETE FROM inventory_snapshot_pages WHERE context_name = $1 AND agent_id = $2",
        )
        .bind(self.key.context_name)
        .bind(self.key.agent_id)
        .execute(&mut *self.conn)
        .await?;
        // Pages are numbered from 0 and stored once each, so a count short of
        // `last + 1` means some page never arrived.
        let expected = i64::from(last) + 1;
        if received < expected {
            return Ok(SnapshotOutcome::Incomplete {
                missing_pages: u64::try_from(expected - received).unwrap_or(0),
            });
        }
        // Workloads an event touched after the snapshot began may have started
        // after the agent listed its containers; the next snapshot settles them.
        let marked = sqlx::query(
            "UPDATE workloads SET stopped_at_ms = $1, state = 'stopped' \
             WHERE context_name = $2 AND agent_id = $3 AND stopped_at_ms IS NULL \
             AND (snapshot_id IS NULL OR snapshot_id <> $4) AND last_seen_ms < $5",
        )
        .bind(now_ms)
        .bind(self.key.context_name)
        .bind(self.key.agent_id)
        .bind(snapshot)
        .bind(started.unwrap_or(now_ms))
        .execute(&mut *self.conn)
        .await?
        .rows_affected();
        Ok(SnapshotOutcome::Completed {
            marked_stopped: marked,
        })
    }

    async fn set_agent_inventory(&mut self, r: &InventoryReport, now_ms: i64) -> Result<()> {
        // Without a status the stored one stays; an agent that never sent one
        // has an empty runtime name, which readers take as "not reported".
        let keep_runtime = r.runtime.is_none();
        let runtime = r.runtime.clone().unwrap_or_default();
        sqlx::query(
            "INSERT INTO agent_inventory (agent_id, context_name, runtime, endpoint, version, degraded, reason, \
             dropped_events, reported_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (agent_id) DO UPDATE SET context_name = excluded.context_name, \
             runtime = CASE WHEN $10 THEN agent_inventory.runtime ELSE excluded.runtime END, \
             endpoint = CASE WHEN $10 THEN agent_inventory.endpoint ELSE excluded.endpoint END, \
             version = CASE WHEN $10 THEN agent_inventory.version ELSE excluded.version END, \
             degraded = CASE WHEN $10 THEN agent_inventory.degraded ELSE excluded.degraded END, \
             reason = CASE WHEN $10 THEN agent_inventory.reason ELSE excluded.reason END, \
             dropped_events = excluded.dropped_events, reported_at_ms = excluded.reported_at_ms",
        )
        .bind(r.agent_id.as_str())
        .bind(r.context_name.as_str())
        .bind(runtime.runtime.as_str())
        .bind(runtime.endpoint.as_str())
        .bind(runtime.version.as_str())
        .bind(runtime.degraded)
        .bind(runtime.reason.as_str())
        .bind(counter_column(r.dropped_events))
        .bind(now_ms)
        .bind(keep_runtime)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }
}
