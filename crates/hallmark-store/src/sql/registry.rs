//! [`RegistryStore`] on SQL: entries with their revision counter, join
//! tokens and agents.
//!
//! Every check-and-set is done by the database rather than by reading first
//! and writing later, because another server may write between the two:
//! consuming a join token is one conditional `UPDATE ... RETURNING`, and
//! entry writers take the revision counter's row first, so revisions follow
//! commit order and the duplicate check of a creation sees every entry
//! committed before it.

use hallmark_core::{Entry, EntryId, EntrySpec, SpiffeId};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use tokio::sync::watch;

use super::{
    bump_revision, is_unique_violation, missing_revision, values_list, Backend, RowsAffected,
    SqlStore, SqlValue, TextConditions,
};
use crate::codec::{
    agent_id_column, canonical_selectors, decode_error, json_strings, selectors_key, token_label,
    u64_column, AgentRow, EntryRow, AGENT_COLUMNS, ENTRY_COLUMNS, ENTRY_REVISION_KEY,
};
use crate::{AgentRecord, EntryFilter, JoinToken, RegistryStore, Result, StoreError};

#[async_trait::async_trait]
impl<DB> RegistryStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    bool: SqlValue<DB>,
    String: SqlValue<DB>,
{
    async fn create_entry(&self, spec: &EntrySpec, now: i64) -> Result<Entry> {
        let selectors = canonical_selectors(&spec.selectors);
        let key = selectors_key(&selectors);
        let x509_ttl = u64_column("x509_ttl_secs", spec.x509_ttl_secs)?;
        let jwt_ttl = u64_column("jwt_ttl_secs", spec.jwt_ttl_secs)?;
        let same_selectors = || key.replace('\n', ", ");

        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // Bumped before the duplicate check: on a shared database the
        // counter's row lock makes a concurrent creation of the same entry
        // wait until this one commits or rolls back, and then its check sees
        // the outcome. A refused creation rolls the bump back.
        let revision = bump_revision::<DB>(&mut tx).await?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM entries WHERE spiffe_id = $1 AND parent_id = $2 AND selectors_key = $3",
        )
        .bind(spec.spiffe_id.as_str())
        .bind(spec.parent_id.as_str())
        .bind(key.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = existing {
            return Err(StoreError::AlreadyExists(format!(
                "entry {existing} already grants {} under parent {} to the same selectors [{}]",
                spec.spiffe_id,
                spec.parent_id,
                same_selectors()
            )));
        }
        let id = EntryId::new_random();
        sqlx::query(
            "INSERT INTO entries (id, spiffe_id, parent_id, selectors, selectors_key, x509_ttl_secs, jwt_ttl_secs, \
             dns_names, hint, admin, created_at, revision, federates_with, oidc_claims) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(id.as_str())
        .bind(spec.spiffe_id.as_str())
        .bind(spec.parent_id.as_str())
        .bind(json_strings(&selectors))
        .bind(key.as_str())
        .bind(x509_ttl)
        .bind(jwt_ttl)
        .bind(json_strings(&spec.dns_names))
        .bind(spec.hint.as_str())
        .bind(spec.admin)
        .bind(now)
        .bind(revision)
        .bind(json_strings(&spec.federates_with))
        .bind(json_strings(&spec.oidc_claims))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            // Unreachable while every writer bumps the revision first; the
            // unique index still has the last word.
            if is_unique_violation(&e) {
                StoreError::AlreadyExists(format!(
                    "an entry granting {} under parent {} to the same selectors [{}] was created concurrently",
                    spec.spiffe_id,
                    spec.parent_id,
                    same_selectors()
                ))
            } else {
                StoreError::Database(e)
            }
        })?;
        if !selectors.is_empty() {
            let sql = format!(
                "INSERT INTO entry_selectors (entry_id, selector) {}",
                values_list(1, selectors.len(), 2)
            );
            let mut insert = sqlx::query(&sql);
            for selector in &selectors {
                insert = insert.bind(id.as_str()).bind(selector.to_string());
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Entry {
            id,
            spec: EntrySpec {
                selectors,
                ..spec.clone()
            },
            created_at: now,
            revision,
        })
    }

    async fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1");
        let row: Option<EntryRow> = sqlx::query_as(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| decode_error("entries", e))?;
        row.map(EntryRow::into_entry).transpose()
    }

    async fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<Entry>> {
        let selector = filter.selector.as_ref().map(ToString::to_string);
        let mut conditions = TextConditions::new(0);
        if let Some(parent) = &filter.parent_id {
            conditions.push("parent_id = {}", parent.as_str());
        }
        if let Some(spiffe_id) = &filter.spiffe_id {
            conditions.push("spiffe_id = {}", spiffe_id.as_str());
        }
        if let Some(selector) = &selector {
            conditions.push(
                "id IN (SELECT entry_id FROM entry_selectors WHERE selector = {})",
                selector,
            );
        }
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries{} ORDER BY spiffe_id, id",
            conditions.clause(" WHERE ")
        );
        let mut query = sqlx::query_as::<_, EntryRow>(&sql);
        for value in conditions.binds {
            query = query.bind(value);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("entries", e))?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    async fn delete_entry(&self, id: &EntryId) -> Result<bool> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // Explicit rather than left to ON DELETE CASCADE, which SQLite only
        // honours on connections with foreign_keys on.
        sqlx::query("DELETE FROM entry_selectors WHERE entry_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM entries WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if deleted {
            bump_revision::<DB>(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn count_entries(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries")
            .fetch_one(&self.pool)
            .await?;
        u64::try_from(n)
            .map_err(|_| StoreError::Corrupt(format!("table entries: COUNT(*) returned {n}")))
    }

    async fn revision(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(ENTRY_REVISION_KEY)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| decode_error("meta", e))?
            .ok_or_else(missing_revision)
    }

    fn shared_between_servers(&self) -> bool {
        DB::SHARED_BETWEEN_SERVERS
    }

    fn backend(&self) -> &'static str {
        DB::BACKEND_NAME
    }

    fn change_notifications(&self) -> Option<watch::Receiver<u64>> {
        DB::change_notifications(&self.pool)
    }

    async fn create_join_token(&self, t: &JoinToken) -> Result<()> {
        sqlx::query("INSERT INTO join_tokens (token_hash, agent_id, expires_at, used_at) VALUES ($1, $2, $3, NULL)")
            .bind(t.token_hash.as_str())
            .bind(t.agent_id.as_str())
            .bind(t.expires_at)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists(format!(
                        "a join token with {} already exists",
                        token_label(&t.token_hash)
                    ))
                } else {
                    StoreError::Database(e)
                }
            })?;
        Ok(())
    }

    async fn consume_join_token(&self, token_hash: &str, now: i64) -> Result<SpiffeId> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // One conditional UPDATE is the whole check-and-set. A concurrent
        // consumer waits for the write lock (SQLite) or the row lock
        // (PostgreSQL), then re-checks `used_at IS NULL` against the
        // committed row and matches nothing.
        let agent_id: Option<String> = sqlx::query_scalar(
            "UPDATE join_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at >= $1 RETURNING agent_id",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| decode_error("join_tokens", e))?;
        if let Some(agent_id) = agent_id {
            // Parsed before commit: a corrupt row must not burn the token.
            let id = agent_id_column("join_tokens", &token_label(token_hash), &agent_id)?;
            tx.commit().await?;
            return Ok(id);
        }
        let state: Option<(i64, Option<i64>)> =
            sqlx::query_as("SELECT expires_at, used_at FROM join_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| decode_error("join_tokens", e))?;
        match state {
            None => Err(StoreError::TokenNotFound),
            Some((_, Some(_))) => Err(StoreError::TokenUsed),
            Some((expires_at, None)) if expires_at < now => Err(StoreError::TokenExpired),
            Some((expires_at, None)) => Err(StoreError::Corrupt(format!(
                "table join_tokens, {}: unused and valid until {expires_at}, yet the update at {now} did not match",
                token_label(token_hash)
            ))),
        }
    }

    async fn prune_join_tokens(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM join_tokens WHERE expires_at < $1 OR (used_at IS NOT NULL AND used_at <= $1)")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn upsert_agent(&self, a: &AgentRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (spiffe_id, serial, expires_at, attested_at, last_seen, banned) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (spiffe_id) DO UPDATE SET serial = excluded.serial, expires_at = excluded.expires_at, \
             attested_at = excluded.attested_at, last_seen = excluded.last_seen, banned = excluded.banned",
        )
        .bind(a.spiffe_id.as_str())
        .bind(a.serial.as_str())
        .bind(a.expires_at)
        .bind(a.attested_at)
        .bind(a.last_seen)
        .bind(a.banned)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE spiffe_id = $1");
        let row: Option<AgentRow> = sqlx::query_as(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| decode_error("agents", e))?;
        row.map(AgentRow::into_agent).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY spiffe_id");
        let rows: Vec<AgentRow> = sqlx::query_as(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("agents", e))?;
        rows.into_iter().map(AgentRow::into_agent).collect()
    }

    async fn delete_agent(&self, id: &SpiffeId) -> Result<bool> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        sqlx::query("DELETE FROM agent_inventory WHERE agent_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM agents WHERE spiffe_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_agent_banned(&self, id: &SpiffeId, banned: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE agents SET banned = $1 WHERE spiffe_id = $2")
            .bind(banned)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_agent(&self, id: &SpiffeId, now: i64) -> Result<()> {
        let done = sqlx::query("UPDATE agents SET last_seen = $1 WHERE spiffe_id = $2")
            .bind(now)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("agent {id} not found")));
        }
        Ok(())
    }
}
