//! The SQL back ends: one [`SqlStore`] generic over the sqlx database, whose
//! queries are written once in a form both SQLite and PostgreSQL accept
//! (`$n` placeholders, `ON CONFLICT` upserts, `RETURNING`, plain
//! expressions), and a [`Backend`] per database for what the two truly do
//! differently: how transactions begin, how concurrent writers are ordered,
//! how other servers learn of a change, and how a prefix is matched.
//!
//! Each concern's store trait is implemented in its own module here, beside
//! the trait's module at the crate root.

use std::fmt;
use std::future::Future;

use sqlx::query::QueryAs;
use sqlx::{ColumnIndex, Database, Decode, Encode, Pool, Type};
use tokio::sync::watch;

use crate::codec::{decode_error, ENTRY_REVISION_KEY};
use crate::{Result, StoreError};

mod authority;
mod federation;
mod flow_merge;
mod flow_rows;
mod flow_write;
mod flows;
mod inventory;
mod policy;
mod registry;

/// The store on one SQL database: [`crate::SqliteStore`] or
/// [`crate::PostgresStore`].
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
}

/// What a database does its own way; everything else is shared.
pub trait Backend: Database<QueryResult: RowsAffected> {
    /// The back end's name, for status output.
    const BACKEND_NAME: &'static str;

    /// Whether several servers may share the database.
    const SHARED_BETWEEN_SERVERS: bool;

    /// Whether a statement binding many arguments should number them by
    /// position (`?`) rather than by name (`$n`): SQLite finds a named
    /// argument by a linear scan each time one is bound, so binding
    /// thousands of them to one statement takes quadratic time.
    const POSITIONAL_ARGUMENTS: bool;

    /// Begins a transaction that writes.
    const BEGIN_WRITE: &'static str;

    /// Begins a transaction whose statements read one snapshot.
    const BEGIN_CONSISTENT_READ: &'static str;

    /// A condition on `container_id` that holds when it starts with the text
    /// [`Backend::bind_prefix`] binds, as `$2` onwards (`$1` is taken).
    const CONTAINER_ID_STARTS_WITH: &'static str;

    /// Binds the arguments of [`Backend::CONTAINER_ID_STARTS_WITH`] for
    /// `prefix`.
    fn bind_prefix<'q, O>(
        query: QueryAs<'q, Self, O, Self::Arguments<'q>>,
        prefix: &'q str,
    ) -> QueryAs<'q, Self, O, Self::Arguments<'q>>;

    /// Tells other servers, when the caller's transaction commits, that the
    /// entries changed to `revision`.
    fn announce_entry_change(
        conn: &mut Self::Connection,
        revision: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Serialises the inventory reports of one (agent, context) until the
    /// caller's transaction ends, where transactions of other reports may
    /// run beside it.
    fn lock_inventory(
        conn: &mut Self::Connection,
        agent_id: &str,
        context_name: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Serialises, until the caller's transaction ends, the transactions
    /// that take the lock named `name`, where other transactions may run
    /// beside them.
    fn lock_named(
        conn: &mut Self::Connection,
        name: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// See [`crate::RegistryStore::change_notifications`].
    fn change_notifications(_pool: &Pool<Self>) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// The outcome of a statement that writes.
pub trait RowsAffected {
    /// How many rows the statement inserted, updated or deleted.
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// A Rust type that a database stores in a column and reads back.
pub trait SqlValue<DB: Database>:
    for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync
{
}

impl<DB: Database, T> SqlValue<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync
{
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: Backend> fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &DB::BACKEND_NAME)
            .field("pool", &self.pool)
            .finish()
    }
}

/// Increments the entry revision inside the caller's transaction, announces
/// it, and returns the new value. On PostgreSQL the counter's row stays
/// locked until the transaction ends, which is what orders concurrent entry
/// writers.
async fn bump_revision<DB>(conn: &mut DB::Connection) -> Result<i64>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
{
    let revision: i64 =
        sqlx::query_scalar("UPDATE meta SET value = value + 1 WHERE key = $1 RETURNING value")
            .bind(ENTRY_REVISION_KEY)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| decode_error("meta", e))?
            .ok_or_else(missing_revision)?;
    DB::announce_entry_change(conn, revision).await?;
    Ok(revision)
}

fn missing_revision() -> StoreError {
    StoreError::Corrupt(format!(
        "table meta, key {ENTRY_REVISION_KEY}: row is missing"
    ))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// `VALUES ($first, ...), (...)` for `rows` rows of `columns` arguments each,
/// numbered from `$first`: one statement inserts a whole set, in one round
/// trip to a server that may be across the network.
fn values_list(first: usize, rows: usize, columns: usize) -> String {
    let row = |r: usize| {
        let args: Vec<String> = (0..columns)
            .map(|c| format!("${}", first + r * columns + c))
            .collect();
        format!("({})", args.join(", "))
    };
    let rows: Vec<String> = (0..rows).map(row).collect();
    format!("VALUES {}", rows.join(", "))
}

/// A `WHERE` clause under construction whose arguments are all text,
/// numbered after the ones the query binds before them.
struct TextConditions<'a> {
    /// The conditions, joined with `AND`.
    sql: Vec<String>,
    binds: Vec<&'a str>,
    /// Arguments bound before these.
    before: usize,
}

impl<'a> TextConditions<'a> {
    fn new(before: usize) -> Self {
        TextConditions {
            sql: Vec::new(),
            binds: Vec::new(),
            before,
        }
    }

    /// Adds `template` with every `{}` replaced by the placeholder of
    /// `value`.
    fn push(&mut self, template: &str, value: &'a str) {
        self.binds.push(value);
        let placeholder = format!("${}", self.before + self.binds.len());
        self.sql.push(template.replace("{}", &placeholder));
    }

    /// The conditions joined with `AND` after `prefix`, or nothing.
    fn clause(&self, prefix: &str) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("{prefix}{}", self.sql.join(" AND "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lists_number_every_argument() {
        assert_eq!(values_list(1, 1, 2), "VALUES ($1, $2)");
        assert_eq!(values_list(2, 2, 3), "VALUES ($2, $3, $4), ($5, $6, $7)");
    }

    #[test]
    fn text_conditions_number_after_earlier_arguments() {
        let mut c = TextConditions::new(1);
        assert_eq!(c.clause(" AND "), "");
        c.push("a = {}", "x");
        c.push("id IN (SELECT id FROM t WHERE b = {})", "y");
        assert_eq!(
            c.clause(" AND "),
            " AND a = $2 AND id IN (SELECT id FROM t WHERE b = $3)"
        );
        assert_eq!(c.binds, vec!["x", "y"]);
    }
}
