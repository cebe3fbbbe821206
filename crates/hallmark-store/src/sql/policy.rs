//! [`PolicyStore`] on SQL: one row per revision.
//!
//! An apply takes the entry revision counter's row first (as entry writers
//! do), so on a shared database concurrent applies run one after the
//! other: each sees the one before it committed and takes the next number.
//! Bumping the counter also announces the change, which wakes the other
//! servers' follow loops.
//!
//! The enforcement switch is one row of the `meta` table
//! ([`ENFORCEMENT_KEY`], 1 on, 0 off; no row: on), written the same way.

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{bump_revision, Backend, SqlStore, SqlValue};
use crate::codec::decode_error;
use crate::policy::missing_revision;
use crate::{
    policy_digest, NewPolicyRevision, PolicyApplied, PolicyRevision, PolicyRevisionInfo,
    PolicyStore, Result, StoreError,
};

const TABLE: &str = "policy_revisions";

/// The `meta` key of the fleet-wide enforcement switch.
pub(crate) const ENFORCEMENT_KEY: &str = "policy_enforcement";

/// Columns matching [`PolicyRow`], with the document.
const COLUMNS: &str = "revision, document, applied_at_ms, source, rolled_back_from, digest, \
     group_count, rule_count, default_action";

#[derive(Debug, sqlx::FromRow)]
struct PolicyRow {
    revision: i64,
    document: String,
    applied_at_ms: i64,
    source: String,
    rolled_back_from: Option<i64>,
    digest: String,
    group_count: i64,
    rule_count: i64,
    default_action: String,
}

impl PolicyRow {
    fn into_revision(self) -> PolicyRevision {
        PolicyRevision {
            info: PolicyRevisionInfo {
                revision: self.revision,
                applied_at_ms: self.applied_at_ms,
                source: self.source,
                rolled_back_from: self.rolled_back_from,
                digest: self.digest,
                groups: self.group_count,
                rules: self.rule_count,
                default: self.default_action,
            },
            document: self.document,
        }
    }
}

#[async_trait::async_trait]
impl<DB> PolicyStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    Option<i64>: SqlValue<DB>,
    String: SqlValue<DB>,
{
    async fn apply_policy(&self, new: &NewPolicyRevision<'_>) -> Result<PolicyApplied> {
        let digest = policy_digest(new.document);
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // First: the counter's row lock orders concurrent applies, and the
        // latest revision read below is then the one committed last. An
        // unchanged apply rolls the bump back.
        bump_revision::<DB>(&mut tx).await?;
        let sql = format!("SELECT {COLUMNS} FROM {TABLE} ORDER BY revision DESC LIMIT 1");
        let latest: Option<PolicyRow> = sqlx::query_as(&sql)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| decode_error(TABLE, e))?;
        if let Some(latest) = latest {
            if latest.digest == digest && latest.document == new.document {
                tx.rollback().await?;
                return Ok(PolicyApplied::Unchanged(latest.into_revision()));
            }
        }
        let revision: i64 = sqlx::query_scalar(
            "INSERT INTO policy_revisions (revision, document, applied_at_ms, source, rolled_back_from, \
             digest, group_count, rule_count, default_action) \
             SELECT COALESCE(MAX(revision), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8 FROM policy_revisions \
             RETURNING revision",
        )
        .bind(new.document)
        .bind(new.applied_at_ms)
        .bind(new.source)
        .bind(new.rolled_back_from)
        .bind(digest.as_str())
        .bind(new.groups)
        .bind(new.rules)
        .bind(new.default)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| decode_error(TABLE, e))?;
        tx.commit().await?;
        Ok(PolicyApplied::Applied(PolicyRevision {
            info: PolicyRevisionInfo {
                revision,
                applied_at_ms: new.applied_at_ms,
                source: new.source.to_string(),
                rolled_back_from: new.rolled_back_from,
                digest,
                groups: new.groups,
                rules: new.rules,
                default: new.default.to_string(),
            },
            document: new.document.to_string(),
        }))
    }

    async fn get_policy(&self, revision: i64) -> Result<PolicyRevision> {
        let sql = format!("SELECT {COLUMNS} FROM {TABLE} WHERE revision = $1");
        let row: Option<PolicyRow> = sqlx::query_as(&sql)
            .bind(revision)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| decode_error(TABLE, e))?;
        row.map(PolicyRow::into_revision)
            .ok_or_else(|| StoreError::NotFound(missing_revision(revision)))
    }

    async fn latest_policy(&self) -> Result<Option<PolicyRevision>> {
        let sql = format!("SELECT {COLUMNS} FROM {TABLE} ORDER BY revision DESC LIMIT 1");
        let row: Option<PolicyRow> = sqlx::query_as(&sql)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| decode_error(TABLE, e))?;
        Ok(row.map(PolicyRow::into_revision))
    }

    async fn latest_policy_revision(&self) -> Result<i64> {
        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(revision) FROM policy_revisions")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| decode_error(TABLE, e))?;
        Ok(latest.unwrap_or(0))
    }

    async fn policy_history(&self, limit: u32) -> Result<Vec<PolicyRevisionInfo>> {
        // The documents stay in the database: history shows their digests.
        let sql = format!(
            "SELECT revision, '' AS document, applied_at_ms, source, rolled_back_from, digest, \
             group_count, rule_count, default_action FROM {TABLE} ORDER BY revision DESC LIMIT $1"
        );
        let rows: Vec<PolicyRow> = sqlx::query_as(&sql)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error(TABLE, e))?;
        Ok(rows.into_iter().map(|r| r.into_revision().info).collect())
    }

    async fn policy_enforcement(&self) -> Result<bool> {
        let value: Option<i64> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(ENFORCEMENT_KEY)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| decode_error("meta", e))?;
        Ok(value.is_none_or(|v| v != 0))
    }

    async fn set_policy_enforcement(&self, on: bool) -> Result<bool> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // The counter's row lock first, as every writer takes it: two
        // servers switching at once run one after the other.
        bump_revision::<DB>(&mut tx).await?;
        let value: Option<i64> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(ENFORCEMENT_KEY)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| decode_error("meta", e))?;
        if value.is_none_or(|v| v != 0) == on {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(ENFORCEMENT_KEY)
        .bind(i64::from(on))
        .execute(&mut *tx)
        .await
        .map_err(|e| decode_error("meta", e))?;
        tx.commit().await?;
        Ok(true)
    }
}
