//! The embedded SQLite back end: one file next to the server, no daemon.
//!
//! The file holds the CA's private keys, so it is created 0600 in a 0700
//! directory before SQLite ever opens it. Durability settings (WAL,
//! `synchronous=FULL`) make every committed transaction survive a crash or
//! a kill at any moment, and leave no half-written one behind.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hallmark_core::{Entry, EntryId, EntrySpec, SpiffeId, TrustDomain, Workload, WorkloadState};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::QueryBuilder;

use crate::codec::{
    agent_id_column, canonical_selectors, counter_column, decode_error, json_strings,
    namespace_column, selectors_key, snapshot_column, state_column, token_label, u64_column,
    workload_json, AgentInventoryRow, AgentRow, AuthorityRow, ChainRow, EntryRow, WorkloadEventRow,
    WorkloadRow, AGENT_COLUMNS, AGENT_INVENTORY_COLUMNS, AUTHORITY_COLUMNS, ENTRY_COLUMNS,
    ENTRY_REVISION_KEY, WORKLOAD_COLUMNS, WORKLOAD_EVENT_COLUMNS,
};
use crate::federation::{
    FederationRow, FEDERATION_COLUMNS, PUT_FEDERATION, SET_FAILED, SET_FETCHED,
};
use crate::inventory::{
    visible_since_ms, AgentInventory, InventoryApplied, InventoryReport, PrunedWorkloads,
    SnapshotOutcome, StateFilter, StoredWorkload, StoredWorkloadEvent, WorkloadCounts,
    WorkloadEventKind, WorkloadFilter,
};
use crate::{
    AgentRecord, AuthorityKind, AuthorityRecord, EntryFilter, FederationRecord, FederationRefresh,
    JoinToken, Result, Store, StoreError,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a writer waits for another connection's write lock before
/// failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL lets readers proceed beside the single writer; a few connections
/// cover a server's concurrency.
const MAX_CONNECTIONS: u32 = 4;
/// Write transactions take the write lock up front. A deferred transaction
/// that reads first and writes later fails at once with SQLITE_BUSY if
/// another writer committed in between (the busy timeout does not apply to
/// upgrading a stale snapshot).
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
/// Files SQLite keeps next to the database; they hold the same data.
const SIDECAR_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// [`Store`] on an SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies the
    /// schema migrations.
    ///
    /// A missing parent directory is created with mode 0700 and a missing
    /// file with mode 0600 before SQLite opens it. An existing database (or
    /// WAL/shared-memory file) readable by group or others is set back to
    /// 0600 with a warning: refusing to start would not make the key any
    /// less exposed.
    pub async fn open(path: &Path) -> Result<Self> {
        prepare_files(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    /// A private in-memory database, for tests.
    pub async fn open_in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // Each connection to `:memory:` is its own database, so the pool
        // keeps exactly one connection alive for its whole life.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    /// Folds the WAL into the database file and closes every connection.
    /// Calls after this fail.
    pub async fn close(&self) {
        // SQLite checkpoints on close only when it is sure it is the last
        // connection, which connections closing together can defeat; doing
        // it here leaves one self-contained file to back up.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "datastore: final WAL checkpoint failed; the WAL file keeps the data");
        }
        self.pool.close().await;
    }

    async fn migrated(pool: SqlitePool) -> Result<Self> {
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_entry(&self, spec: &EntrySpec, now: i64) -> Result<Entry> {
        let selectors = canonical_selectors(&spec.selectors);
        let key = selectors_key(&selectors);
        let x509_ttl = u64_column("x509_ttl_secs", spec.x509_ttl_secs)?;
        let jwt_ttl = u64_column("jwt_ttl_secs", spec.jwt_ttl_secs)?;

        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM entries WHERE spiffe_id = $1 AND parent_id = $2 AND selectors_key = $3",
        )
        .bind(spec.spiffe_id.as_str())
        .bind(spec.parent_id.as_str())
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = existing {
            return Err(StoreError::AlreadyExists(format!(
                "entry {existing} already grants {} under parent {} to the same selectors [{}]",
                spec.spiffe_id,
                spec.parent_id,
                key.replace('\n', ", ")
            )));
        }
        let revision = bump_revision(&mut tx).await?;
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
        .bind(&key)
        .bind(x509_ttl)
        .bind(jwt_ttl)
        .bind(json_strings(&spec.dns_names))
        .bind(&spec.hint)
        .bind(spec.admin)
        .bind(now)
        .bind(revision)
        .bind(json_strings(&spec.federates_with))
        .bind(json_strings(&spec.oidc_claims))
        .execute(&mut *tx)
        .await?;
        for selector in &selectors {
            sqlx::query("INSERT INTO entry_selectors (entry_id, selector) VALUES ($1, $2)")
                .bind(id.as_str())
                .bind(selector.to_string())
                .execute(&mut *tx)
                .await?;
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
        let mut binds: Vec<&str> = Vec::new();
        let mut conditions: Vec<String> = Vec::new();
        if let Some(parent) = &filter.parent_id {
            binds.push(parent.as_str());
            conditions.push(format!("parent_id = ${}", binds.len()));
        }
        if let Some(spiffe_id) = &filter.spiffe_id {
            binds.push(spiffe_id.as_str());
            conditions.push(format!("spiffe_id = ${}", binds.len()));
        }
        if let Some(selector) = &selector {
            binds.push(selector);
            conditions.push(format!(
                "id IN (SELECT entry_id FROM entry_selectors WHERE selector = ${})",
                binds.len()
            ));
        }
        let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM entries");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY spiffe_id, id");
        let mut query = sqlx::query_as::<_, EntryRow>(&sql);
        for value in binds {
            query = query.bind(value);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("entries", e))?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    async fn delete_entry(&self, id: &EntryId) -> Result<bool> {
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
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
            bump_revision(&mut tx).await?;
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

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn revision(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(ENTRY_REVISION_KEY)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| decode_error("meta", e))?
            .ok_or_else(missing_revision)
    }

    async fn create_join_token(&self, t: &JoinToken) -> Result<()> {
        sqlx::query("INSERT INTO join_tokens (token_hash, agent_id, expires_at, used_at) VALUES ($1, $2, $3, NULL)")
            .bind(&t.token_hash)
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
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        // One conditional UPDATE is the whole check-and-set, so two
        // consumers cannot both see the token unused.
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
        .bind(&a.serial)
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
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
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

    async fn put_authority(&self, a: &AuthorityRecord) -> Result<()> {
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        sqlx::query(
            "INSERT INTO authorities (id, kind, state, alg, key_pkcs8, cert_der, created_at, not_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, state = excluded.state, alg = excluded.alg, \
             key_pkcs8 = excluded.key_pkcs8, cert_der = excluded.cert_der, created_at = excluded.created_at, \
             not_after = excluded.not_after",
        )
        .bind(&a.id)
        .bind(a.kind.as_str())
        .bind(&a.state)
        .bind(&a.alg)
        .bind(&a.key_pkcs8)
        .bind(&a.cert_der)
        .bind(a.created_at)
        .bind(a.not_after)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM authority_chain WHERE authority_id = $1")
            .bind(&a.id)
            .execute(&mut *tx)
            .await?;
        for (position, cert) in (0_i64..).zip(&a.chain_der) {
            sqlx::query("INSERT INTO authority_chain (authority_id, position, cert_der) VALUES ($1, $2, $3)")
                .bind(&a.id)
                .bind(position)
                .bind(cert)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_authorities(&self, kind: AuthorityKind) -> Result<Vec<AuthorityRecord>> {
        // One read transaction, so the chains match the authority rows even
        // if a put runs meanwhile.
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE kind = $1 ORDER BY created_at, id"
        );
        let rows: Vec<AuthorityRow> = sqlx::query_as(&sql)
            .bind(kind.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| decode_error("authorities", e))?;
        let links: Vec<ChainRow> = sqlx::query_as(
            "SELECT c.authority_id AS authority_id, c.position AS position, c.cert_der AS cert_der \
             FROM authority_chain c JOIN authorities a ON a.id = c.authority_id \
             WHERE a.kind = $1 ORDER BY c.authority_id, c.position",
        )
        .bind(kind.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| decode_error("authority_chain", e))?;
        tx.commit().await?;

        let mut chains: HashMap<String, Vec<ChainRow>> = HashMap::new();
        for link in links {
            chains
                .entry(link.authority_id.clone())
                .or_default()
                .push(link);
        }
        rows.into_iter()
            .map(|row| {
                let chain = chains.remove(&row.id).unwrap_or_default();
                row.into_authority(chain)
            })
            .collect()
    }

    async fn apply_inventory(&self, r: &InventoryReport, now_ms: i64) -> Result<InventoryApplied> {
        let encoded = encode_report(r)?;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        let applied = write_report(&mut tx, r, &encoded, now_ms).await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn list_workloads(
        &self,
        filter: &WorkloadFilter,
        now_ms: i64,
        retention: Duration,
    ) -> Result<Vec<StoredWorkload>> {
        workload_sql::list_workloads(&self.pool, filter, now_ms, retention).await
    }

    async fn find_workloads_by_prefix(
        &self,
        prefix: &str,
        now_ms: i64,
        retention: Duration,
    ) -> Result<Vec<StoredWorkload>> {
        // substr counts characters, so the length bound is in characters.
        let len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {WORKLOAD_COLUMNS} FROM workloads \
             WHERE substr(container_id, 1, $1) = $2 AND (stopped_at_ms IS NULL OR stopped_at_ms >= $3) \
             ORDER BY container_id, context_name, agent_id"
        );
        let rows: Vec<WorkloadRow> = sqlx::query_as(&sql)
            .bind(len)
            .bind(prefix)
            .bind(visible_since_ms(now_ms, retention))
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
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
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

    async fn put_federation(&self, f: &FederationRecord) -> Result<()> {
        federation_sql::put_federation(&self.pool, f).await
    }

    async fn get_federation(&self, td: &TrustDomain) -> Result<Option<FederationRecord>> {
        federation_sql::get_federation(&self.pool, td).await
    }

    async fn list_federations(&self) -> Result<Vec<FederationRecord>> {
        federation_sql::list_federations(&self.pool).await
    }

    async fn delete_federation(&self, td: &TrustDomain) -> Result<bool> {
        federation_sql::delete_federation(&self.pool, td).await
    }

    async fn record_federation_refresh(
        &self,
        td: &TrustDomain,
        outcome: &FederationRefresh,
    ) -> Result<bool> {
        federation_sql::record_federation_refresh(&self.pool, td, outcome).await
    }
}

crate::shared_sql::inventory_writes!(SqliteConnection);
crate::shared_sql::federation_queries!(SqlitePool);
crate::shared_sql::workload_queries!(SqlitePool, Sqlite);

/// Increments the entry revision inside the caller's transaction and
/// returns the new value.
async fn bump_revision(conn: &mut SqliteConnection) -> Result<i64> {
    sqlx::query_scalar("UPDATE meta SET value = value + 1 WHERE key = $1 RETURNING value")
        .bind(ENTRY_REVISION_KEY)
        .fetch_optional(conn)
        .await
        .map_err(|e| decode_error("meta", e))?
        .ok_or_else(missing_revision)
}

fn missing_revision() -> StoreError {
    StoreError::Corrupt(format!(
        "table meta, key {ENTRY_REVISION_KEY}: row is missing"
    ))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Creates the directory and the database file with private modes, and
/// tightens the mode of existing files that are readable by others.
fn prepare_files(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Only directories this creates get the mode; an existing one (say
        // /var/lib) is the operator's business.
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| io_error(e, "creating the datastore directory", dir))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| io_error(e, "creating the datastore file", path))?;
    restrict_mode(path)?;
    for suffix in SIDECAR_SUFFIXES {
        let mut name = OsString::from(path.as_os_str());
        name.push(suffix);
        restrict_mode(&PathBuf::from(name))?;
    }
    Ok(())
}

fn restrict_mode(path: &Path) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(e, "reading the mode of", path)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "datastore file holds private keys but was accessible to group or others; set its mode to 0600"
        );
        fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
            .map_err(|e| io_error(e, "setting mode 0600 on", path))?;
    }
    Ok(())
}

fn io_error(e: io::Error, doing: &str, path: &Path) -> StoreError {
    StoreError::Io(io::Error::new(
        e.kind(),
        format!("{doing} {}: {e}", path.display()),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    async fn raw_entry_insert(
        store: &SqliteStore,
        id: &str,
        spiffe_id: &str,
        selectors: &str,
        ttl: i64,
    ) {
        sqlx::query(
            "INSERT INTO entries (id, spiffe_id, parent_id, selectors, selectors_key, x509_ttl_secs, jwt_ttl_secs, \
             dns_names, hint, admin, created_at, revision) \
             VALUES ($1, $2, 'spiffe://example.org/agent', $3, $1, $4, 300, '[]', '', 0, 1, 1)",
        )
        .bind(id)
        .bind(spiffe_id)
        .bind(selectors)
        .bind(ttl)
        .execute(&store.pool)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn corrupt_rows_are_reported_not_skipped() {
        let good = "7f3c2a4e-1b2c-4d5e-8f90-123456789abc";
        // (row id, spiffe_id, selectors JSON, x509 ttl, text the error must contain)
        let cases: &[(&str, &str, &str, i64, &str)] = &[
            (
                "not-a-uuid",
                "spiffe://example.org/w",
                r#"["unix:uid:1"]"#,
                60,
                "id not-a-uuid: column id",
            ),
            (
                good,
                "spiffe://EXAMPLE.org/w",
                r#"["unix:uid:1"]"#,
                60,
                "column spiffe_id",
            ),
            (
                good,
                "spiffe://example.org/w",
                r#"["bogus"]"#,
                60,
                "column selectors: selector `bogus`",
            ),
            (
                good,
                "spiffe://example.org/w",
                "not json",
                60,
                "column selectors: not a JSON array",
            ),
            (
                good,
                "spiffe://example.org/w",
                r#"["unix:uid:1"]"#,
                -60,
                "column x509_ttl_secs: negative",
            ),
        ];
        for (id, spiffe_id, selectors, ttl, want) in cases {
            let store = SqliteStore::open_in_memory().await.unwrap();
            raw_entry_insert(&store, id, spiffe_id, selectors, *ttl).await;
            let err = store
                .list_entries(&EntryFilter::default())
                .await
                .unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StoreError::Corrupt(_)), "{msg}");
            assert!(
                msg.contains("table entries") && msg.contains(want),
                "want `{want}` in: {msg}"
            );
        }
    }

    #[tokio::test]
    async fn wrongly_typed_column_is_corrupt() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        sqlx::query(
            "INSERT INTO agents (spiffe_id, serial, expires_at, attested_at, last_seen, banned) \
             VALUES ('spiffe://example.org/a', 's', 'soon', 0, 0, 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let err = store.list_agents().await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Corrupt(_)), "{msg}");
        assert!(
            msg.contains("table agents") && msg.contains("expires_at"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn missing_revision_row_is_corrupt() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        sqlx::query("DELETE FROM meta")
            .execute(&store.pool)
            .await
            .unwrap();
        let msg = store.revision().await.unwrap_err().to_string();
        assert!(
            msg.contains("table meta, key entry_revision: row is missing"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn corrupt_token_agent_id_does_not_burn_the_token() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let hash = "ab".repeat(32);
        sqlx::query("INSERT INTO join_tokens (token_hash, agent_id, expires_at) VALUES ($1, 'not-an-id', 100)")
            .bind(&hash)
            .execute(&store.pool)
            .await
            .unwrap();
        let msg = store
            .consume_join_token(&hash, 50)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("table join_tokens, token_hash abababab...: column agent_id"),
            "{msg}"
        );
        let used: Option<i64> =
            sqlx::query_scalar("SELECT used_at FROM join_tokens WHERE token_hash = $1")
                .bind(&hash)
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(used, None, "a failed consume must roll back");
    }

    #[tokio::test]
    async fn file_store_uses_durable_settings() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite3"))
            .await
            .unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        assert_eq!(fk, 1);
        assert_eq!(busy, 5000);
    }

    #[tokio::test]
    async fn deleting_an_entry_removes_its_selector_rows() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let spec = EntrySpec {
            spiffe_id: SpiffeId::new("spiffe://example.org/w").unwrap(),
            parent_id: SpiffeId::new("spiffe://example.org/agent").unwrap(),
            selectors: vec!["unix:uid:1".parse().unwrap(), "unix:gid:2".parse().unwrap()],
            x509_ttl_secs: 60,
            jwt_ttl_secs: 60,
            dns_names: vec![],
            hint: String::new(),
            admin: false,
            federates_with: Vec::new(),
            oidc_claims: Vec::new(),
        };
        let e = store.create_entry(&spec, 1).await.unwrap();
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM entry_selectors")
                .fetch_one(&store.pool)
                .await
                .unwrap()
        };
        assert_eq!(count().await, 2);
        assert!(store.delete_entry(&e.id).await.unwrap());
        assert_eq!(count().await, 0);
    }

    #[test]
    fn open_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        // A path whose parent is a regular file cannot be created.
        let err = prepare_files(&blocker.join("db.sqlite3")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Io(_)), "{msg}");
        assert!(
            msg.contains("creating the datastore") && msg.contains(&blocker.display().to_string()),
            "{msg}"
        );
    }
}
