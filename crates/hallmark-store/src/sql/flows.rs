//! [`FlowStore`] on SQL: batches written in one transaction with
//! multi-row statements, the identity graph kept by upserts, and listings
//! narrowed in SQL and decided by [`FlowQuery::matches`].
//!
//! Lock order, so that servers sharing PostgreSQL never wait on each other
//! in a cycle: the merge lock (batches with mergeable flows), the server's
//! liveness row, dictionary rows (by hash), graph buckets (minute rows by
//! key, then hour rows by key), pending rows, then the tail lock, held
//! while flows and evidence take their ids and until commit, and last the
//! merged flow rows (by id). Ids taken under that lock follow commit order,
//! so a reader tailing by id (`evidence_after`, `flows list --follow`)
//! never sees a later id before an earlier one commits: without it, a
//! transaction that took an id first but committed last would be skipped
//! for good.

use std::collections::HashMap;
use std::net::IpAddr;

use hallmark_flows::verdict::outcome_word;
use hallmark_flows::{
    Endpoint, EndpointFilter, Evidence, Flow, FlowQuery, GraphBucket, Judge, StoredFlow,
};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::flow_merge::{stored_connections, MergePlan};
use super::flow_rows::{
    cidr_range, hour_ceil, hour_of, ip_column, minute_ceil, minute_of, EncodedWrite, EvidenceRow,
    FlowRow, GraphRow, ENDPOINTS, EVIDENCE_SELECT, FLOW_JOINS, FLOW_SELECT_COLUMNS, OWNERS,
};
use super::flow_write::{
    add_buckets, add_pending, delete_empty_buckets, delete_pending, insert_evidence, insert_flows,
    intern, note_alive, prune_graph, update_flows,
};
use super::{Backend, RowsAffected, SqlStore, SqlValue};
use crate::codec::decode_error;
use crate::flows::{FlowCounts, FlowStore, FlowWrite, FlowWritten, FlowsPruned, PendingFlow};
use crate::{Result, StoreError};

/// Rows a listing reads per round while the endpoint filters run in Rust.
const LIST_PAGE: usize = 1_000;
/// Most endpoint ids a listing narrows by in SQL.
const MAX_LISTED_ENDPOINTS: usize = 500;
/// The lock whose holders take flow and evidence ids in commit order.
const TAIL_LOCK: &str = "flow tail";
/// The lock writers of mergeable flows take first, one at a time, so two
/// reports of one connection written at once by two servers still find
/// each other.
const MERGE_LOCK: &str = "flow merge";
/// The lock adopting servers take, one at a time.
const PENDING_LOCK: &str = "flow pending";

fn limit_column(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn count_column(table: &str, n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("table {table}: COUNT returned {n}")))
}

/// The columns a graph row of either table gives to the sum: an hourly
/// row's `minute_ms` is its first minute.
const GRAPH_COLUMNS: &str = "minute_ms, src_key, dst_key, dst_port, protocol, flows, bytes, \
     first_ms, last_ms, refused, reset, allowed, denied, would_deny, no_decision";

/// A graph query's window in whole minutes, and its split into the hours
/// wholly inside it and the minutes at either end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GraphWindow {
    /// `since_ms` rounded down to its minute.
    since_ms: i64,
    /// `until_ms` rounded up to a minute; `i64::MAX` for no end.
    until_ms: i64,
    /// The hours `hours.0..hours.1`, empty when none lies wholly inside.
    hours: (i64, i64),
}

impl GraphWindow {
    fn new(since_ms: i64, until_ms: Option<i64>) -> Self {
        let since_ms = minute_of(since_ms);
        let until_ms = until_ms.map_or(i64::MAX, minute_ceil);
        let first = hour_ceil(since_ms);
        // With no end, the last hour begun is wholly inside too.
        let end = if until_ms == i64::MAX {
            i64::MAX
        } else {
            hour_of(until_ms)
        };
        let hours = if first < end { (first, end) } else { (0, 0) };
        GraphWindow {
            since_ms,
            until_ms,
            hours,
        }
    }

    /// `$1..$6` of [`FlowStore::graph`]'s statement: the minutes before the
    /// hours, the hours, the minutes after them.
    fn bounds(&self) -> [i64; 6] {
        let (first, end) = self.hours;
        if first < end {
            [self.since_ms, first, first, end, end, self.until_ms]
        } else {
            [self.since_ms, self.until_ms, 0, 0, 0, 0]
        }
    }
}

/// One argument of a statement assembled at run time.
enum Arg {
    I64(i64),
    Bytes(Vec<u8>),
    Text(&'static str),
}

#[async_trait::async_trait]
impl<DB> FlowStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    Option<i64>: SqlValue<DB>,
    String: SqlValue<DB>,
    Option<String>: SqlValue<DB>,
    Vec<u8>: SqlValue<DB>,
    Option<Vec<u8>>: SqlValue<DB>,
{
    async fn write_flows(&self, w: &FlowWrite) -> Result<FlowWritten> {
        let merging = w.flows.iter().any(|f| f.flow.is_mergeable());
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let conn: &mut DB::Connection = &mut tx;
        if merging {
            DB::lock_named(conn, MERGE_LOCK).await?;
        }
        note_alive::<DB>(conn, &w.server_id, w.now_ms).await?;
        let stored = if merging {
            stored_connections::<DB>(conn, &w.flows, w.merge_window_ms).await?
        } else {
            Vec::new()
        };
        let mut plan = MergePlan::new(&w.flows, stored, w.merge_window_ms);
        if let Some(p) = &w.policy {
            plan.rejudge(&mut Judge::new(p.0.as_ref()));
        }
        let enc = EncodedWrite::new(w, &plan.inserts(), &plan.updates())?;
        let endpoints = intern::<DB>(conn, &ENDPOINTS, &enc.endpoints).await?;
        let owners = intern::<DB>(conn, &OWNERS, &enc.owners).await?;
        let graph_rows = add_buckets::<DB>(conn, &enc, &endpoints).await?;
        // Only a bucket a merge took a flow out of can have become empty.
        let mut emptied: Vec<i64> = enc
            .buckets
            .iter()
            .filter(|(_, s)| s.flows < 0)
            .map(|(k, _)| k.minute_ms)
            .collect();
        emptied.dedup();
        delete_empty_buckets::<DB>(conn, &emptied).await?;
        let pending_done = delete_pending::<DB>(conn, &w.pending_done).await?;
        let pending_ids = add_pending::<DB>(conn, &w.server_id, w.now_ms, &enc.pending).await?;
        if !enc.evidence.is_empty() || !enc.flows.is_empty() {
            DB::lock_named(conn, TAIL_LOCK).await?;
        }
        let evidence_ids = insert_evidence::<DB>(conn, &enc, &owners).await?;
        let inserted = insert_flows::<DB>(conn, &enc, &endpoints).await?;
        update_flows::<DB>(conn, &enc, &endpoints).await?;
        tx.commit().await?;
        Ok(FlowWritten {
            pending_ids,
            flow_ids: plan.flow_ids(&inserted),
            evidence_ids,
            pending_done,
            graph_rows,
            merged: plan.merged,
        })
    }

    async fn pending_flows(
        &self,
        server_id: &str,
        now_ms: i64,
        adopt_before_ms: i64,
    ) -> Result<Vec<PendingFlow>> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // Adopters one at a time, each statement after the lock reading what
        // the previous one committed: a row is adopted once, not twice.
        DB::lock_named(&mut tx, PENDING_LOCK).await?;
        note_alive::<DB>(&mut tx, server_id, now_ms).await?;
        sqlx::query(
            "UPDATE flow_pending SET server_id = $1 \
             WHERE server_id <> $1 AND received_ms < $2 \
             AND server_id NOT IN (SELECT server_id FROM flow_servers WHERE seen_ms >= $2)",
        )
        .bind(server_id)
        .bind(adopt_before_ms)
        .execute(&mut *tx)
        .await?;
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT id, received_ms, flow FROM flow_pending WHERE server_id = $1 ORDER BY id",
        )
        .bind(server_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| decode_error("flow_pending", e))?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(id, received_ms, text)| {
                let flow: Flow = serde_json::from_str(&text).map_err(|e| {
                    StoreError::Corrupt(format!("table flow_pending, id {id}: column flow: {e}"))
                })?;
                Ok(PendingFlow {
                    id,
                    flow,
                    received_ms,
                })
            })
            .collect()
    }

    async fn evidence_after(
        &self,
        after_id: i64,
        min_at_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Evidence)>> {
        let sql =
            format!("{EVIDENCE_SELECT} WHERE e.id > $1 AND e.at_ms >= $2 ORDER BY e.id LIMIT $3");
        let rows: Vec<EvidenceRow> = sqlx::query_as(&sql)
            .bind(after_id)
            .bind(min_at_ms)
            .bind(limit_column(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("flow_evidence", e))?;
        rows.into_iter().map(EvidenceRow::into_evidence).collect()
    }

    async fn evidence_for(
        &self,
        ip: IpAddr,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<Evidence>> {
        let sql = format!(
            "{EVIDENCE_SELECT} WHERE e.ip = $1 AND e.at_ms >= $2 AND e.at_ms < $3 \
             ORDER BY e.at_ms, e.id LIMIT $4"
        );
        let rows: Vec<EvidenceRow> = sqlx::query_as(&sql)
            .bind(ip_column(ip))
            .bind(from_ms)
            .bind(to_ms)
            .bind(limit_column(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("flow_evidence", e))?;
        rows.into_iter()
            .map(|r| r.into_evidence().map(|(_, ev)| ev))
            .collect()
    }

    async fn list_flows(&self, q: &FlowQuery) -> Result<Vec<StoredFlow>> {
        // Filters on descriptions (SPIFFE ID, namespace, label, ...) become
        // the ids of the described endpoints they accept, among those of
        // flows in the window, when there are few enough to list.
        let described = [&q.from, &q.to].map(|fs| {
            fs.iter()
                .filter(|f| !matches!(f, EndpointFilter::Ip(_)))
                .collect::<Vec<_>>()
        });
        let mut end_ids: [Option<Vec<i64>>; 2] = [None, None];
        if described.iter().any(|d| !d.is_empty()) {
            let rows: Vec<(i64, String)> =
                sqlx::query_as("SELECT id, endpoint FROM flow_endpoints WHERE flow_used_ms >= $1")
                    .bind(q.since_ms)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| decode_error("flow_endpoints", e))?;
            // Unused by every filter but the address ones, which stay out.
            let any_ip = IpAddr::from([0, 0, 0, 0]);
            let mut accepted: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            for (id, text) in &rows {
                let e: Endpoint = serde_json::from_str(text).map_err(|err| {
                    StoreError::Corrupt(format!(
                        "table flow_endpoints, id {id}: column endpoint: {err}"
                    ))
                })?;
                for (slot, filters) in described.iter().enumerate() {
                    if filters.iter().all(|f| f.matches(&e, any_ip)) {
                        accepted[slot].push(*id);
                    }
                }
            }
            for (slot, ids) in accepted.into_iter().enumerate() {
                if described[slot].is_empty() {
                    continue;
                }
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                end_ids[slot] = Some(ids);
            }
        }

        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        let mut push = |sql: &str, values: Vec<Arg>| {
            let mut sql = sql.to_string();
            for v in values {
                args.push(v);
                sql = sql.replacen("{}", &format!("${}", args.len()), 1);
            }
            conds.push(sql);
        };
        push("f.start_ms >= {}", vec![Arg::I64(q.since_ms)]);
        if let Some(u) = q.until_ms {
            push("f.start_ms < {}", vec![Arg::I64(u)]);
        }
        if let Some(p) = q.port {
            push("f.dst_port = {}", vec![Arg::I64(i64::from(p))]);
        }
        if let Some(p) = q.protocol {
            push("f.protocol = {}", vec![Arg::I64(i64::from(p.number()))]);
        }
        if let Some(s) = q.status {
            push("f.status = {}", vec![Arg::Text(s.as_str())]);
        }
        if let Some(v) = q.verdict {
            push("f.verdict = {}", vec![Arg::Text(outcome_word(v))]);
        }
        // Address filters are ranges of the IP columns.
        for (column, filters) in [("f.src_ip", &q.from), ("f.dst_ip", &q.to)] {
            for f in filters {
                if let EndpointFilter::Ip(c) = f {
                    let (lo, hi) = cidr_range(c);
                    push(
                        &format!("{column} >= {{}} AND {column} <= {{}}"),
                        vec![Arg::Bytes(lo), Arg::Bytes(hi)],
                    );
                }
            }
        }
        let mut rust_filters = false;
        for (column, ids) in ["f.src_endpoint", "f.dst_endpoint"].iter().zip(end_ids) {
            match ids {
                Some(ids) if ids.len() <= MAX_LISTED_ENDPOINTS => {
                    let marks = vec!["{}"; ids.len()].join(", ");
                    push(
                        &format!("{column} IN ({marks})"),
                        ids.into_iter().map(Arg::I64).collect(),
                    );
                }
                // Too many to list: `matches` decides on every candidate.
                Some(_) => rust_filters = true,
                None => {}
            }
        }
        let following = q.after_id.is_some();
        let wanted = if q.limit == 0 { usize::MAX } else { q.limit };
        let page = if rust_filters {
            LIST_PAGE
        } else {
            wanted.min(LIST_PAGE)
        };
        let base = args.len();
        let (cursor_cond, order) = if following {
            (format!("f.id > ${}", base + 1), "f.id")
        } else {
            (
                format!(
                    "(f.start_ms < ${a} OR (f.start_ms = ${a} AND f.id < ${b}))",
                    a = base + 1,
                    b = base + 2
                ),
                "f.start_ms DESC, f.id DESC",
            )
        };
        let sql = format!(
            "SELECT {FLOW_SELECT_COLUMNS} FROM flows f {FLOW_JOINS} WHERE {} AND {cursor_cond} \
             ORDER BY {order} LIMIT ${}",
            conds.join(" AND "),
            base + if following { 2 } else { 3 },
        );
        // The cursor: after this id (following), or before this (start, id).
        let mut cursor = (i64::MAX, i64::MAX);
        if let Some(a) = q.after_id {
            cursor.1 = a;
        }
        let mut cache = HashMap::new();
        let mut out = Vec::new();
        loop {
            let mut query = sqlx::query_as::<_, FlowRow>(&sql);
            for a in &args {
                query = match a {
                    Arg::I64(v) => query.bind(*v),
                    Arg::Bytes(v) => query.bind(v.clone()),
                    Arg::Text(v) => query.bind(*v),
                };
            }
            if following {
                query = query.bind(cursor.1);
            } else {
                query = query.bind(cursor.0).bind(cursor.1);
            }
            let rows = query
                .bind(limit_column(page))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| decode_error("flows", e))?;
            let read = rows.len();
            for row in rows {
                let f = row.into_flow(&mut cache)?;
                cursor = (f.flow.start_ms, f.id);
                // The definition of a match; SQL only narrowed.
                if q.matches(&f) {
                    out.push(f);
                    if out.len() >= wanted {
                        return Ok(out);
                    }
                }
            }
            if read < page {
                return Ok(out);
            }
        }
    }

    async fn graph(&self, since_ms: i64, until_ms: Option<i64>) -> Result<Vec<GraphBucket>> {
        // The hours wholly inside the window from the hourly rows, the
        // minutes before the first of them and after the last from the
        // minute buckets: each minute counted once, from one table.
        let sql = format!(
            "SELECT g.minute_ms, g.src_key, g.dst_key, g.dst_port, g.protocol, g.flows, g.bytes, \
             g.first_ms, g.last_ms, g.refused, g.reset, g.allowed, g.denied, g.would_deny, g.no_decision, \
             s.endpoint AS src_text, d.endpoint AS dst_text \
             FROM (SELECT MIN(minute_ms) AS minute_ms, src_key, dst_key, dst_port, protocol, \
                   CAST(SUM(flows) AS BIGINT) AS flows, CAST(SUM(bytes) AS BIGINT) AS bytes, \
                   MIN(first_ms) AS first_ms, MAX(last_ms) AS last_ms, \
                   CAST(SUM(refused) AS BIGINT) AS refused, CAST(SUM(reset) AS BIGINT) AS reset, \
                   CAST(SUM(allowed) AS BIGINT) AS allowed, CAST(SUM(denied) AS BIGINT) AS denied, \
                   CAST(SUM(would_deny) AS BIGINT) AS would_deny, \
                   CAST(SUM(no_decision) AS BIGINT) AS no_decision \
                   FROM (SELECT {GRAPH_COLUMNS} FROM flow_graph WHERE minute_ms >= $1 AND minute_ms < $2 \
                         UNION ALL \
                         SELECT {GRAPH_COLUMNS} FROM flow_graph_hourly WHERE hour_ms >= $3 AND hour_ms < $4 \
                         UNION ALL \
                         SELECT {GRAPH_COLUMNS} FROM flow_graph WHERE minute_ms >= $5 AND minute_ms < $6) u \
                   GROUP BY src_key, dst_key, dst_port, protocol) g \
             LEFT JOIN flow_endpoints s ON s.id = g.src_key \
             LEFT JOIN flow_endpoints d ON d.id = g.dst_key"
        );
        let window = GraphWindow::new(since_ms, until_ms);
        self.graph_query(&sql, "flow_graph", &window.bounds()).await
    }

    async fn graph_from_flows(
        &self,
        since_ms: i64,
        until_ms: Option<i64>,
    ) -> Result<Vec<GraphBucket>> {
        let sql = "SELECT g.minute_ms, g.src_key, g.dst_key, g.dst_port, g.protocol, g.flows, g.bytes, \
             g.first_ms, g.last_ms, g.refused, g.reset, g.allowed, g.denied, g.would_deny, g.no_decision, \
             s.endpoint AS src_text, d.endpoint AS dst_text \
             FROM (SELECT MIN(start_ms) AS minute_ms, src_key, dst_key, dst_port, protocol, \
                   COUNT(*) AS flows, CAST(SUM(bytes_sent + bytes_received) AS BIGINT) AS bytes, \
                   MIN(start_ms) AS first_ms, MAX(end_ms) AS last_ms, \
                   CAST(SUM(CASE WHEN outcome = 'refused' THEN 1 ELSE 0 END) AS BIGINT) AS refused, \
                   CAST(SUM(CASE WHEN outcome = 'reset' THEN 1 ELSE 0 END) AS BIGINT) AS reset, \
                   CAST(SUM(CASE WHEN verdict = 'allowed' THEN 1 ELSE 0 END) AS BIGINT) AS allowed, \
                   CAST(SUM(CASE WHEN verdict = 'denied' THEN 1 ELSE 0 END) AS BIGINT) AS denied, \
                   CAST(SUM(CASE WHEN verdict = 'would-deny' THEN 1 ELSE 0 END) AS BIGINT) AS would_deny, \
                   CAST(SUM(CASE WHEN verdict = 'no-decision' THEN 1 ELSE 0 END) AS BIGINT) AS no_decision \
                   FROM flows WHERE start_ms >= $1 AND start_ms < $2 \
                   GROUP BY src_key, dst_key, dst_port, protocol) g \
             LEFT JOIN flow_endpoints s ON s.id = g.src_key \
             LEFT JOIN flow_endpoints d ON d.id = g.dst_key";
        let window = GraphWindow::new(since_ms, until_ms);
        self.graph_query(sql, "flows", &[window.since_ms, window.until_ms])
            .await
    }

    async fn prune_flows(
        &self,
        flows_before_ms: i64,
        graph_before_ms: i64,
        evidence_before_ms: i64,
    ) -> Result<FlowsPruned> {
        // A dictionary row's times are the latest of the rows referring to
        // it, so past every bound nothing refers to it any more: it goes
        // after them.
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let flows = sqlx::query("DELETE FROM flows WHERE start_ms < $1")
            .bind(flows_before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let graph_rows = prune_graph::<DB>(&mut tx, graph_before_ms).await?;
        let statements: [(&str, &[i64]); 3] = [
            (
                "DELETE FROM flow_evidence WHERE at_ms < $1",
                &[evidence_before_ms],
            ),
            (
                "DELETE FROM flow_endpoints WHERE (flow_used_ms IS NULL OR flow_used_ms < $1) \
                 AND (graph_used_ms IS NULL OR graph_used_ms < $2)",
                &[flows_before_ms, graph_before_ms],
            ),
            (
                "DELETE FROM flow_owners WHERE used_ms < $1",
                &[evidence_before_ms],
            ),
        ];
        let mut deleted = [0u64; 3];
        for (n, (sql, bounds)) in deleted.iter_mut().zip(statements) {
            let mut q = sqlx::query(sql);
            for b in bounds {
                q = q.bind(*b);
            }
            *n = q.execute(&mut *tx).await?.rows_affected();
        }
        let [evidence, endpoints, owners] = deleted;
        tx.commit().await?;
        Ok(FlowsPruned {
            flows,
            graph_rows,
            evidence,
            dictionary_rows: endpoints + owners,
        })
    }

    async fn flow_counts(&self) -> Result<FlowCounts> {
        let mut tx = self.pool.begin_with(DB::BEGIN_CONSISTENT_READ).await?;
        let by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM flows GROUP BY status")
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| decode_error("flows", e))?;
        let mut counts = FlowCounts::default();
        for (status, n) in by_status {
            let n = count_column("flows", n)?;
            match status.as_str() {
                "attributed" => counts.attributed = n,
                "unattributed" => counts.unattributed = n,
                "external" => counts.external = n,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "table flows: column status: `{other}`"
                    )))
                }
            }
        }
        for (table, slot) in [
            ("flow_graph", &mut counts.graph_rows),
            ("flow_evidence", &mut counts.evidence),
            ("flow_pending", &mut counts.pending),
        ] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| decode_error(table, e))?;
            *slot = count_column(table, n)?;
        }
        tx.commit().await?;
        Ok(counts)
    }
}

impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    Option<String>: SqlValue<DB>,
{
    /// Runs a graph aggregate with its `bounds` (`$1`, `$2`, ...) and
    /// orders its buckets.
    async fn graph_query(
        &self,
        sql: &str,
        table: &str,
        bounds: &[i64],
    ) -> Result<Vec<GraphBucket>> {
        let mut q = sqlx::query_as::<_, GraphRow>(sql);
        for b in bounds {
            q = q.bind(*b);
        }
        let rows: Vec<GraphRow> = q
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error(table, e))?;
        let mut keyed = rows
            .into_iter()
            .map(|r| r.into_bucket(table))
            .collect::<Result<Vec<_>>>()?;
        keyed.sort_by(|(s1, d1, b1), (s2, d2, b2)| {
            (s1, d1, b1.dst_port, b1.protocol.number()).cmp(&(
                s2,
                d2,
                b2.dst_port,
                b2.protocol.number(),
            ))
        });
        Ok(keyed.into_iter().map(|(_, _, b)| b).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;
    const H: i64 = 3_600_000;

    #[test]
    fn a_window_splits_into_whole_hours_and_the_minutes_around_them() {
        let t = 500_000 * H;
        let w = |since, until| GraphWindow::new(since, until).bounds();
        // Partial hours at both ends, in whole minutes.
        assert_eq!(
            w(t + 17 * M + 5, Some(t + 3 * H + 41 * M + 1)),
            [
                t + 17 * M,
                t + H,
                t + H,
                t + 3 * H,
                t + 3 * H,
                t + 3 * H + 42 * M
            ]
        );
        // Whole hours only: the minute ranges are empty.
        assert_eq!(
            w(t, Some(t + 2 * H)),
            [t, t, t, t + 2 * H, t + 2 * H, t + 2 * H]
        );
        // Less than an hour, within one or across a boundary: minutes only.
        assert_eq!(
            w(t + 5 * M, Some(t + 50 * M)),
            [t + 5 * M, t + 50 * M, 0, 0, 0, 0]
        );
        assert_eq!(
            w(t + 40 * M, Some(t + H + 20 * M)),
            [t + 40 * M, t + H + 20 * M, 0, 0, 0, 0]
        );
        // An end rounded up to the next hour makes that hour whole.
        assert_eq!(
            w(t + 10 * M, Some(t + 2 * H - 1)),
            [t + 10 * M, t + H, t + H, t + 2 * H, t + 2 * H, t + 2 * H]
        );
        // No end: every hour from the first whole one on.
        assert_eq!(
            w(t + 30 * M, None),
            [t + 30 * M, t + H, t + H, i64::MAX, i64::MAX, i64::MAX]
        );
        assert_eq!(w(t, None), [t, t, t, i64::MAX, i64::MAX, i64::MAX]);
        // Before 1970 too, and an empty or reversed window.
        assert_eq!(w(-H - 30 * M, Some(M)), [-H - 30 * M, -H, -H, 0, 0, M]);
        assert_eq!(w(t + H, Some(t + H)), [t + H, t + H, 0, 0, 0, 0]);
        assert_eq!(w(t + H, Some(t)), [t + H, t, 0, 0, 0, 0]);
    }
}
