//! Writing a flow batch inside the caller's transaction: multi-row
//! statements in chunks, dictionary rows interned by upsert, graph buckets
//! added to, pending rows and the rows that take tail ids.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use sqlx::query::Query;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use hallmark_flows::GRAPH_BUCKET_MS;

use super::flow_rows::{
    hour_of, BucketSums, Dictionary, EncodedWrite, Entries, Hash, ENDPOINTS, FLOW_INSERT_COLUMNS,
    FLOW_INSERT_WIDTH, GRAPH_HOUR_MS, OWNERS,
};
use super::{values_list, Backend, RowsAffected, SqlValue};
use crate::codec::decode_error;
use crate::{Result, StoreError};

/// Most rows one statement writes: far below either database's limit on
/// arguments (32 766 for SQLite, 65 535 for PostgreSQL) at 28 per row.
const CHUNK_ROWS: usize = 512;

/// Row ranges of at most [`CHUNK_ROWS`], the last ones of power-of-two
/// sizes: few distinct statement texts, so prepared statements are reused.
pub(super) fn chunks(n: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while n - at >= CHUNK_ROWS {
        out.push(at..at + CHUNK_ROWS);
        at += CHUNK_ROWS;
    }
    let mut size = CHUNK_ROWS / 2;
    while at < n {
        if n - at >= size {
            out.push(at..at + size);
            at += size;
        }
        size /= 2;
    }
    out
}

/// `($1, $2, ...)` for `n` arguments, the statement's only ones.
pub(super) fn in_list<DB: Backend>(n: usize) -> String {
    if DB::POSITIONAL_ARGUMENTS {
        format!("({})", vec!["?"; n].join(", "))
    } else {
        let args: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        format!("({})", args.join(", "))
    }
}

/// `VALUES (...), ...` for `rows` rows of `columns` arguments, the
/// statement's only ones.
fn rows_list<DB: Backend>(rows: usize, columns: usize) -> String {
    if DB::POSITIONAL_ARGUMENTS {
        let row = format!("({})", vec!["?"; columns].join(", "));
        format!("VALUES {}", vec![row; rows].join(", "))
    } else {
        values_list(1, rows, columns)
    }
}

/// Notes `server_id` as alive at `now_ms`.
pub(super) async fn note_alive<DB>(
    conn: &mut DB::Connection,
    server_id: &str,
    now_ms: i64,
) -> Result<()>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB>,
    i64: SqlValue<DB>,
{
    sqlx::query(
        "INSERT INTO flow_servers (server_id, seen_ms) VALUES ($1, $2) \
         ON CONFLICT (server_id) DO UPDATE SET seen_ms = CASE \
         WHEN excluded.seen_ms > flow_servers.seen_ms THEN excluded.seen_ms ELSE flow_servers.seen_ms END",
    )
    .bind(server_id)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ids of `entries` in `dict`, adding the missing ones and raising the
/// times of the others. The upsert locks each row until commit, so a
/// concurrent prune cannot delete one that this transaction refers to.
pub(super) async fn intern<DB>(
    conn: &mut DB::Connection,
    dict: &Dictionary,
    entries: &Entries,
) -> Result<HashMap<Hash, i64>>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    Option<i64>: SqlValue<DB>,
    Vec<u8>: SqlValue<DB>,
{
    let mut ids = HashMap::with_capacity(entries.len());
    let list: Vec<(&Hash, &super::flow_rows::Entry)> = entries.iter().collect();
    let width = 2 + dict.used.len();
    let table = dict.table;
    let updates: Vec<String> = dict
        .used
        .iter()
        .map(|c| {
            format!(
                "{c} = CASE WHEN excluded.{c} IS NULL THEN {table}.{c} \
                 WHEN {table}.{c} IS NULL OR excluded.{c} > {table}.{c} THEN excluded.{c} \
                 ELSE {table}.{c} END"
            )
        })
        .collect();
    for range in chunks(list.len()) {
        let sql = format!(
            "INSERT INTO {table} (hash, {}, {}) {} ON CONFLICT (hash) DO UPDATE SET {} RETURNING id, hash",
            dict.text,
            dict.used.join(", "),
            rows_list::<DB>(range.len(), width),
            updates.join(", "),
        );
        let mut q = sqlx::query_as::<_, (i64, Vec<u8>)>(&sql);
        for (h, e) in &list[range] {
            q = q.bind(h.to_vec()).bind(e.text.as_str());
            for slot in 0..dict.used.len() {
                q = q.bind(e.used[slot]);
            }
        }
        for (id, h) in q
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| decode_error(table, e))?
        {
            let h: Hash = h.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt(format!("table {table}, id {id}: column hash: not 32 bytes"))
            })?;
            ids.insert(h, id);
        }
    }
    Ok(ids)
}

fn dictionary_id(ids: &HashMap<Hash, i64>, h: &Hash, table: &str) -> Result<i64> {
    ids.get(h).copied().ok_or_else(|| {
        StoreError::Corrupt(format!("table {table}: an upserted row was not returned"))
    })
}

/// The counters of a graph row, after its key (and, hourly, its first
/// minute).
const GRAPH_COUNTERS: &str =
    "flows, bytes, first_ms, last_ms, refused, reset, allowed, denied, would_deny, no_decision";

/// How an upsert adds a batch's counters to a stored graph row of `table`.
fn graph_additions(table: &str) -> String {
    let mut set: Vec<String> = ["flows", "bytes", "refused", "reset"]
        .iter()
        .chain(VERDICT_COLUMNS)
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect();
    set.push(format!(
        "first_ms = CASE WHEN excluded.first_ms < {table}.first_ms THEN excluded.first_ms ELSE {table}.first_ms END"
    ));
    set.push(format!(
        "last_ms = CASE WHEN excluded.last_ms > {table}.last_ms THEN excluded.last_ms ELSE {table}.last_ms END"
    ));
    set.join(", ")
}

/// The graph's verdict counters, in [`hallmark_flows::verdict::OUTCOMES`]' order.
const VERDICT_COLUMNS: &[&str] = &["allowed", "denied", "would_deny", "no_decision"];

/// Hour row key: hour, source key, destination key, port, protocol.
type HourKey = [i64; 5];

/// The batch's minute buckets summed per hour: each hour row's first
/// minute and counters.
fn hours_of(rows: &[([i64; 5], &BucketSums)]) -> Result<BTreeMap<HourKey, (i64, BucketSums)>> {
    let mut hours: BTreeMap<HourKey, (i64, BucketSums)> = BTreeMap::new();
    for ([minute, src, dst, port, protocol], s) in rows {
        let key = [hour_of(*minute), *src, *dst, *port, *protocol];
        match hours.get_mut(&key) {
            None => {
                hours.insert(key, (*minute, **s));
            }
            Some((first_minute, h)) => {
                *first_minute = (*first_minute).min(*minute);
                h.flows += s.flows;
                h.bytes = h.bytes.checked_add(s.bytes).ok_or_else(|| {
                    StoreError::Database(sqlx::Error::Encode(
                        format!(
                            "hourly graph bytes exceed the largest storable integer ({})",
                            i64::MAX
                        )
                        .into(),
                    ))
                })?;
                h.first_ms = h.first_ms.min(s.first_ms);
                h.last_ms = h.last_ms.max(s.last_ms);
                h.refused += s.refused;
                h.reset += s.reset;
                for (n, add) in h.verdicts.iter_mut().zip(s.verdicts) {
                    *n += add;
                }
            }
        }
    }
    Ok(hours)
}

/// Binds a graph row's counters, in [`GRAPH_COUNTERS`]' order.
fn bind_counters<'q, DB>(
    mut q: Query<'q, DB, DB::Arguments<'q>>,
    s: &BucketSums,
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Backend,
    i64: SqlValue<DB>,
{
    q = q
        .bind(s.flows)
        .bind(s.bytes)
        .bind(s.first_ms)
        .bind(s.last_ms)
        .bind(s.refused)
        .bind(s.reset);
    for n in s.verdicts {
        q = q.bind(n);
    }
    q
}

/// Adds the batch's buckets to the graph, minute rows then hour rows, each
/// in key order. Gives the number of minute rows written.
pub(super) async fn add_buckets<DB>(
    conn: &mut DB::Connection,
    enc: &EncodedWrite,
    endpoints: &HashMap<Hash, i64>,
) -> Result<u64>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: SqlValue<DB>,
{
    let mut rows = Vec::with_capacity(enc.buckets.len());
    for (k, s) in &enc.buckets {
        let src = dictionary_id(endpoints, &k.src_key, ENDPOINTS.table)?;
        let dst = dictionary_id(endpoints, &k.dst_key, ENDPOINTS.table)?;
        rows.push(([k.minute_ms, src, dst, k.dst_port, k.protocol], s));
    }
    // Ids, not hashes, are what the table's key and so its locks follow.
    rows.sort_by_key(|(k, _)| *k);
    let mut written = 0;
    for range in chunks(rows.len()) {
        let sql = format!(
            "INSERT INTO flow_graph (minute_ms, src_key, dst_key, dst_port, protocol, {GRAPH_COUNTERS}) {} \
             ON CONFLICT (minute_ms, src_key, dst_key, dst_port, protocol) DO UPDATE SET {}",
            rows_list::<DB>(range.len(), 15),
            graph_additions("flow_graph"),
        );
        let mut q = sqlx::query(&sql);
        for (k, s) in &rows[range] {
            for v in k {
                q = q.bind(*v);
            }
            q = bind_counters::<DB>(q, s);
        }
        written += q.execute(&mut *conn).await?.rows_affected();
    }
    let hours: Vec<(HourKey, (i64, BucketSums))> = hours_of(&rows)?.into_iter().collect();
    for range in chunks(hours.len()) {
        let sql = format!(
            "INSERT INTO flow_graph_hourly (hour_ms, src_key, dst_key, dst_port, protocol, minute_ms, \
             {GRAPH_COUNTERS}) {} \
             ON CONFLICT (hour_ms, src_key, dst_key, dst_port, protocol) DO UPDATE SET \
             minute_ms = CASE WHEN excluded.minute_ms < flow_graph_hourly.minute_ms \
             THEN excluded.minute_ms ELSE flow_graph_hourly.minute_ms END, {}",
            rows_list::<DB>(range.len(), 16),
            graph_additions("flow_graph_hourly"),
        );
        let mut q = sqlx::query(&sql);
        for (k, (minute, s)) in &hours[range] {
            for v in k {
                q = q.bind(*v);
            }
            q = bind_counters::<DB>(q.bind(*minute), s);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(written)
}

pub(super) async fn delete_pending<DB>(conn: &mut DB::Connection, done: &[i64]) -> Result<u64>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: SqlValue<DB>,
{
    let mut ids = done.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut deleted = 0;
    for range in chunks(ids.len()) {
        let sql = format!(
            "DELETE FROM flow_pending WHERE id IN {}",
            in_list::<DB>(range.len())
        );
        let mut q = sqlx::query(&sql);
        for id in &ids[range] {
            q = q.bind(*id);
        }
        deleted += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(deleted)
}

/// Runs a multi-row `INSERT ... RETURNING id` and gives the ids in the
/// order of the rows: both databases take identity values row by row in
/// `VALUES` order, so sorting the returned ids restores it.
async fn insert_returning_ids<'q, DB>(
    conn: &mut DB::Connection,
    q: Query<'q, DB, DB::Arguments<'q>>,
    table: &str,
    rows: usize,
) -> Result<Vec<i64>>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> DB::Arguments<'a>: IntoArguments<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
{
    use sqlx::Row;
    let mut ids = q
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0usize))
        .collect::<std::result::Result<Vec<i64>, _>>()
        .map_err(|e| decode_error(table, e))?;
    if ids.len() != rows {
        return Err(StoreError::Corrupt(format!(
            "table {table}: inserting {rows} rows returned {} ids",
            ids.len()
        )));
    }
    ids.sort_unstable();
    Ok(ids)
}

pub(super) async fn add_pending<DB>(
    conn: &mut DB::Connection,
    server_id: &str,
    now_ms: i64,
    flows: &[String],
) -> Result<Vec<i64>>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
{
    let mut ids = Vec::with_capacity(flows.len());
    for range in chunks(flows.len()) {
        let sql = format!(
            "INSERT INTO flow_pending (server_id, received_ms, flow) {} RETURNING id",
            rows_list::<DB>(range.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for f in &flows[range.clone()] {
            q = q.bind(server_id).bind(now_ms).bind(f.as_str());
        }
        ids.extend(insert_returning_ids::<DB>(conn, q, "flow_pending", range.len()).await?);
    }
    Ok(ids)
}

pub(super) async fn insert_evidence<DB>(
    conn: &mut DB::Connection,
    enc: &EncodedWrite,
    owners: &HashMap<Hash, i64>,
) -> Result<Vec<i64>>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    Option<i64>: SqlValue<DB>,
    Vec<u8>: SqlValue<DB>,
{
    let mut ids = Vec::with_capacity(enc.evidence.len());
    for range in chunks(enc.evidence.len()) {
        let sql = format!(
            "INSERT INTO flow_evidence (ip, port, owner_id, at_ms, kind) {} RETURNING id",
            rows_list::<DB>(range.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for e in &enc.evidence[range.clone()] {
            let owner = dictionary_id(owners, &e.owner, OWNERS.table)?;
            q = q
                .bind(&e.ip)
                .bind(e.port)
                .bind(owner)
                .bind(e.at_ms)
                .bind(e.kind);
        }
        ids.extend(insert_returning_ids::<DB>(conn, q, "flow_evidence", range.len()).await?);
    }
    Ok(ids)
}

pub(super) async fn insert_flows<DB>(
    conn: &mut DB::Connection,
    enc: &EncodedWrite,
    endpoints: &HashMap<Hash, i64>,
) -> Result<Vec<i64>>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    Option<i64>: SqlValue<DB>,
    Option<String>: SqlValue<DB>,
    Vec<u8>: SqlValue<DB>,
    Option<Vec<u8>>: SqlValue<DB>,
{
    let mut ids = Vec::with_capacity(enc.flows.len());
    let id = |h: &Hash| dictionary_id(endpoints, h, ENDPOINTS.table);
    for range in chunks(enc.flows.len()) {
        let sql = format!(
            "INSERT INTO flows ({FLOW_INSERT_COLUMNS}) {} RETURNING id",
            rows_list::<DB>(range.len(), FLOW_INSERT_WIDTH)
        );
        let mut q = sqlx::query(&sql);
        for f in &enc.flows[range.clone()] {
            q = q
                .bind(f.start_ms)
                .bind(f.end_ms)
                .bind(f.protocol)
                .bind(&f.src_ip)
                .bind(f.src_port)
                .bind(&f.dst_ip)
                .bind(f.dst_port)
                .bind(f.initiator)
                .bind(f.bytes_sent)
                .bind(f.packets_sent)
                .bind(f.bytes_received)
                .bind(f.packets_received)
                .bind(&f.outcome)
                .bind(f.retransmits)
                .bind(f.rtt_us)
                .bind(&f.conn_key)
                .bind(f.reporter.as_str())
                .bind(&f.local_side)
                .bind(f.status)
                .bind(f.attributed_ms)
                .bind(&f.verdict)
                .bind(&f.verdict_rule)
                .bind(&f.verdict_mode)
                .bind(f.policy_revision)
                .bind(id(&f.src_endpoint)?)
                .bind(id(&f.dst_endpoint)?)
                .bind(id(&f.src_key)?)
                .bind(id(&f.dst_key)?);
        }
        ids.extend(insert_returning_ids::<DB>(conn, q, "flows", range.len()).await?);
    }
    Ok(ids)
}

/// Rewrites the stored rows reports were merged into. What a merge keeps
/// (addresses, protocol, initiator, reporter, local side, connection key)
/// is left as stored.
pub(super) async fn update_flows<DB>(
    conn: &mut DB::Connection,
    enc: &EncodedWrite,
    endpoints: &HashMap<Hash, i64>,
) -> Result<()>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: SqlValue<DB>,
    Option<i64>: SqlValue<DB>,
    Option<String>: SqlValue<DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB>,
{
    let id = |h: &Hash| dictionary_id(endpoints, h, ENDPOINTS.table);
    let mut rows: Vec<&(i64, super::flow_rows::FlowColumns)> = enc.updates.iter().collect();
    // Row locks in id order.
    rows.sort_by_key(|(row, _)| *row);
    for (row, f) in rows {
        let done = sqlx::query(
            "UPDATE flows SET start_ms = $1, end_ms = $2, bytes_sent = $3, packets_sent = $4, \
             bytes_received = $5, packets_received = $6, outcome = $7, retransmits = $8, rtt_us = $9, \
             status = $10, attributed_ms = $11, src_endpoint = $12, dst_endpoint = $13, \
             src_key = $14, dst_key = $15, verdict = $16, verdict_rule = $17, verdict_mode = $18, \
             policy_revision = $19 WHERE id = $20",
        )
        .bind(f.start_ms)
        .bind(f.end_ms)
        .bind(f.bytes_sent)
        .bind(f.packets_sent)
        .bind(f.bytes_received)
        .bind(f.packets_received)
        .bind(&f.outcome)
        .bind(f.retransmits)
        .bind(f.rtt_us)
        .bind(f.status)
        .bind(f.attributed_ms)
        .bind(id(&f.src_endpoint)?)
        .bind(id(&f.dst_endpoint)?)
        .bind(id(&f.src_key)?)
        .bind(id(&f.dst_key)?)
        .bind(&f.verdict)
        .bind(&f.verdict_rule)
        .bind(&f.verdict_mode)
        .bind(f.policy_revision)
        .bind(*row)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if done != 1 {
            // Read under the merge lock in this transaction: only a prune
            // racing the merge removes it, and the batch is retried whole.
            return Err(StoreError::NotFound(format!(
                "flow {row}, which a report of the same connection was merged into, \
                 was pruned during the write; write the batch again"
            )));
        }
    }
    Ok(())
}

/// Deletes the graph buckets of `minutes` that merges emptied (a merged
/// flow whose ends became known moved to another key, or whose start
/// became earlier to another minute), then recomputes the hour rows they
/// were part of: a deleted bucket's first and last times leave its hour's
/// with it, which no subtraction undoes.
pub(super) async fn delete_empty_buckets<DB>(
    conn: &mut DB::Connection,
    minutes: &[i64],
) -> Result<u64>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
{
    let mut emptied: Vec<HourKey> = Vec::new();
    for range in chunks(minutes.len()) {
        let sql = format!(
            "DELETE FROM flow_graph WHERE flows <= 0 AND minute_ms IN {} \
             RETURNING minute_ms, src_key, dst_key, dst_port, protocol",
            in_list::<DB>(range.len())
        );
        let mut q = sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(&sql);
        for m in &minutes[range] {
            q = q.bind(*m);
        }
        for (minute, src, dst, port, protocol) in q
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| decode_error("flow_graph", e))?
        {
            emptied.push([hour_of(minute), src, dst, port, protocol]);
        }
    }
    let deleted = u64::try_from(emptied.len()).unwrap_or(u64::MAX);
    // The hour rows are locked already, by the batch's additions to them.
    emptied.sort_unstable();
    emptied.dedup();
    for key in &emptied {
        let sql = format!(
            "{} WHERE hour_ms = $1 AND src_key = $2 AND dst_key = $3 AND dst_port = $4 AND protocol = $5",
            recompute_hours()
        );
        let mut q = sqlx::query(&sql);
        for v in key {
            q = q.bind(*v);
        }
        q.execute(&mut *conn).await?;
    }
    let hours: Vec<i64> = emptied.iter().map(|k| k[0]).collect();
    delete_empty_hours::<DB>(conn, &hours).await?;
    Ok(deleted)
}

/// Minute buckets `g` of the hour row's own key.
const SAME_KEY: &str = "AND g.src_key = flow_graph_hourly.src_key \
     AND g.dst_key = flow_graph_hourly.dst_key AND g.dst_port = flow_graph_hourly.dst_port \
     AND g.protocol = flow_graph_hourly.protocol";

/// `UPDATE flow_graph_hourly` setting each row's counters to the sum of
/// its key's minute buckets (`flow_graph g`) in its hour: a row left
/// without any has no flows. The caller adds the `WHERE`.
fn recompute_hours() -> String {
    // One lookup per minute of the hour, rather than a scan of the hour's
    // buckets of every key.
    let minutes: Vec<String> = (0..GRAPH_HOUR_MS / GRAPH_BUCKET_MS)
        .map(|i| format!("flow_graph_hourly.hour_ms + {}", i * GRAPH_BUCKET_MS))
        .collect();
    let sum = |c: &str| format!("COALESCE(CAST(SUM(g.{c}) AS BIGINT), 0)");
    let mut exprs = vec![
        "COALESCE(MIN(g.minute_ms), flow_graph_hourly.hour_ms)".to_string(),
        sum("flows"),
        sum("bytes"),
        "COALESCE(MIN(g.first_ms), 0)".to_string(),
        "COALESCE(MAX(g.last_ms), 0)".to_string(),
        sum("refused"),
        sum("reset"),
    ];
    exprs.extend(VERDICT_COLUMNS.iter().map(|c| sum(c)));
    format!(
        "UPDATE flow_graph_hourly SET (minute_ms, {GRAPH_COUNTERS}) = \
         (SELECT {} FROM flow_graph g WHERE g.minute_ms IN ({}) {SAME_KEY})",
        exprs.join(", "),
        minutes.join(", "),
    )
}

/// Deletes the hour rows of `hours` left without flows.
async fn delete_empty_hours<DB>(conn: &mut DB::Connection, hours: &[i64]) -> Result<()>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: SqlValue<DB>,
{
    let mut hours = hours.to_vec();
    hours.sort_unstable();
    hours.dedup();
    for range in chunks(hours.len()) {
        let sql = format!(
            "DELETE FROM flow_graph_hourly WHERE flows <= 0 AND hour_ms IN {}",
            in_list::<DB>(range.len())
        );
        let mut q = sqlx::query(&sql);
        for h in &hours[range] {
            q = q.bind(*h);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes the graph buckets of minutes before `before_ms` and keeps the
/// hour rows the sums of what remains: hours wholly before it go, and the
/// hour it falls inside is recomputed from its remaining minutes. Gives
/// the number of minute buckets deleted.
pub(super) async fn prune_graph<DB>(conn: &mut DB::Connection, before_ms: i64) -> Result<u64>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: SqlValue<DB>,
{
    let deleted = sqlx::query("DELETE FROM flow_graph WHERE minute_ms < $1")
        .bind(before_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let hour = hour_of(before_ms);
    sqlx::query("DELETE FROM flow_graph_hourly WHERE hour_ms < $1")
        .bind(hour)
        .execute(&mut *conn)
        .await?;
    if before_ms > hour {
        // Lock the hour's rows first: writers adding to them commit before
        // the recomputation reads the minutes (a statement reads what was
        // committed when it began), or wait and add to it after.
        sqlx::query("UPDATE flow_graph_hourly SET flows = flows WHERE hour_ms = $1")
            .bind(hour)
            .execute(&mut *conn)
            .await?;
        let sql = format!("{} WHERE hour_ms = $1", recompute_hours());
        sqlx::query(&sql).bind(hour).execute(&mut *conn).await?;
        delete_empty_hours::<DB>(conn, &[hour]).await?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_with_few_sizes() {
        for n in [0, 1, 2, 3, 511, 512, 513, 1000, 1024, 5000] {
            let cs = chunks(n);
            let mut at = 0;
            for c in &cs {
                assert_eq!(c.start, at, "n={n}");
                assert!(
                    c.len() <= CHUNK_ROWS && c.len().is_power_of_two(),
                    "n={n}: {c:?}"
                );
                at = c.end;
            }
            assert_eq!(at, n);
        }
        assert_eq!(chunks(1000).len(), 6, "512 + 256 + 128 + 64 + 32 + 8");
        assert_eq!(in_list::<sqlx::Postgres>(2), "($1, $2)");
        assert_eq!(in_list::<sqlx::Sqlite>(2), "(?, ?)");
        assert_eq!(rows_list::<sqlx::Sqlite>(2, 2), "VALUES (?, ?), (?, ?)");
        assert_eq!(
            rows_list::<sqlx::Postgres>(2, 2),
            "VALUES ($1, $2), ($3, $4)"
        );
    }
}
