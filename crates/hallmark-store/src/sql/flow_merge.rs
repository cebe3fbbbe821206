//! Reports of one connection folded into one stored flow, inside the
//! write's transaction: the stored rows of the batch's connections are read
//! by connection key, and every report of a connection already stored (or
//! earlier in the batch) within the merge window becomes an update of that
//! row instead of a new one.

use std::collections::HashMap;

use hallmark_flows::{Judge, StoredFlow};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::flow_rows::{conn_key, FlowRow, FLOW_JOINS, FLOW_SELECT_COLUMNS};
use super::flow_write::{chunks, in_list};
use super::{Backend, SqlValue};
use crate::codec::decode_error;
use crate::Result;

/// Where a flow of the batch ends up.
pub(super) struct MergePlan<'a> {
    /// Rows as they will be: stored rows (with their id and their stored
    /// form) and new ones, each as merged so far.
    rows: Vec<PlannedRow>,
    /// For each flow of the batch, its row.
    row_of: Vec<usize>,
    /// Flows of the batch that were merged into another row.
    pub merged: u64,
    flows: &'a [StoredFlow],
}

struct PlannedRow {
    /// The stored row (id, as stored), or `None` for a new one.
    stored: Option<(i64, StoredFlow)>,
    /// The batch flow a new row starts from.
    first: usize,
    /// The row merged so far; `None` while a new row is its first flow.
    now: Option<StoredFlow>,
}

impl<'a> MergePlan<'a> {
    /// Plans `flows` against the `stored` rows of their connections: each
    /// mergeable flow joins the row of its connection whose start is
    /// nearest its own within `window_ms`, stored or earlier in the batch.
    pub fn new(flows: &'a [StoredFlow], stored: Vec<StoredFlow>, window_ms: i64) -> Self {
        let mut rows: Vec<PlannedRow> = Vec::new();
        let mut by_key: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for s in stored {
            if let Some(k) = conn_key(&s.flow) {
                by_key.entry(k).or_default().push(rows.len());
                rows.push(PlannedRow {
                    stored: Some((s.id, s)),
                    first: usize::MAX,
                    now: None,
                });
            }
        }
        let mut row_of = Vec::with_capacity(flows.len());
        let mut merged = 0;
        for (i, f) in flows.iter().enumerate() {
            let key = conn_key(&f.flow);
            let current = |r: usize| current(&rows[r], flows);
            let found = key.as_ref().and_then(|k| by_key.get(k)).and_then(|cands| {
                cands
                    .iter()
                    .copied()
                    .filter(|&r| current(r).flow.same_connection(&f.flow, window_ms))
                    .min_by_key(|&r| current(r).flow.start_ms.abs_diff(f.flow.start_ms))
            });
            match found {
                Some(r) => {
                    let m = current(r).merge(f);
                    rows[r].now = Some(m);
                    row_of.push(r);
                    merged += 1;
                }
                None => {
                    if let Some(k) = key {
                        by_key.entry(k).or_default().push(rows.len());
                    }
                    row_of.push(rows.len());
                    rows.push(PlannedRow {
                        stored: None,
                        first: i,
                        now: None,
                    });
                }
            }
        }
        MergePlan {
            rows,
            row_of,
            merged,
            flows,
        }
    }

    /// Decides every merged row again with `judge`: its ends may be known
    /// now where no single report knew both.
    pub fn rejudge(&mut self, judge: &mut Judge<'_>) {
        for r in &mut self.rows {
            if let Some(now) = &mut r.now {
                judge.judge(now);
            }
        }
    }

    /// The new rows, in batch order.
    pub fn inserts(&self) -> Vec<&StoredFlow> {
        self.rows
            .iter()
            .filter(|r| r.stored.is_none())
            .map(|r| r.now.as_ref().unwrap_or(&self.flows[r.first]))
            .collect()
    }

    /// The stored rows that change: id, as stored, as merged.
    pub fn updates(&self) -> Vec<(i64, &StoredFlow, &StoredFlow)> {
        self.rows
            .iter()
            .filter_map(|r| match (&r.stored, &r.now) {
                (Some((id, old)), Some(now)) if now != old => Some((*id, old, now)),
                _ => None,
            })
            .collect()
    }

    /// The id of each flow of the batch, given the ids the inserts took
    /// (in [`MergePlan::inserts`]' order).
    pub fn flow_ids(&self, inserted: &[i64]) -> Vec<i64> {
        let mut next = inserted.iter();
        let ids: Vec<Option<i64>> = self
            .rows
            .iter()
            .map(|r| match &r.stored {
                Some((id, _)) => Some(*id),
                None => next.next().copied(),
            })
            .collect();
        self.row_of
            .iter()
            .map(|&r| ids[r].unwrap_or_default())
            .collect()
    }
}

/// A planned row as merged so far.
fn current<'r>(r: &'r PlannedRow, flows: &'r [StoredFlow]) -> &'r StoredFlow {
    match (&r.now, &r.stored) {
        (Some(now), _) => now,
        (None, Some((_, s))) => s,
        (None, None) => &flows[r.first],
    }
}

/// The stored flows of the connections of `flows` that started within
/// `window_ms` of the batch's starts.
pub(super) async fn stored_connections<DB>(
    conn: &mut DB::Connection,
    flows: &[StoredFlow],
    window_ms: i64,
) -> Result<Vec<StoredFlow>>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: ColumnIndex<DB::Row>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    Option<i64>: SqlValue<DB>,
    String: SqlValue<DB>,
    Option<String>: SqlValue<DB>,
    Vec<u8>: SqlValue<DB>,
{
    let window_ms = window_ms.max(0);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for f in flows {
        if let Some(k) = conn_key(&f.flow) {
            keys.push(k);
            lo = lo.min(f.flow.start_ms);
            hi = hi.max(f.flow.start_ms);
        }
    }
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::new();
    let mut cache = HashMap::new();
    for range in chunks(keys.len()) {
        let n = range.len();
        // `in_list` numbers its arguments from 1; the bounds follow them.
        let sql = format!(
            "SELECT {FLOW_SELECT_COLUMNS} FROM flows f {FLOW_JOINS} \
             WHERE f.conn_key IS NOT NULL AND f.conn_key IN {} \
             AND f.start_ms >= {} AND f.start_ms <= {} ORDER BY f.id",
            in_list::<DB>(n),
            arg::<DB>(n + 1),
            arg::<DB>(n + 2),
        );
        let mut q = sqlx::query_as::<_, FlowRow>(&sql);
        for k in &keys[range] {
            q = q.bind(k.clone());
        }
        let rows = q
            .bind(lo.saturating_sub(window_ms))
            .bind(hi.saturating_add(window_ms))
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| decode_error("flows", e))?;
        for row in rows {
            out.push(row.into_flow(&mut cache)?);
        }
    }
    Ok(out)
}

/// The placeholder of argument `n` (from 1).
fn arg<DB: Backend>(n: usize) -> String {
    if DB::POSITIONAL_ARGUMENTS {
        "?".into()
    } else {
        format!("${n}")
    }
}

#[cfg(test)]
#[path = "flow_merge_tests.rs"]
mod tests;
