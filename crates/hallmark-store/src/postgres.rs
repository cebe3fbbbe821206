//! The PostgreSQL back end: one database shared by several servers.
//!
//! Every method is one transaction (or one statement), and every
//! check-and-set is done by the database rather than by reading first and
//! writing later, because another server may write between the two:
//!
//! - consuming a join token is one conditional `UPDATE ... RETURNING`;
//! - entry writers serialise on the row lock of the revision counter, which
//!   they take first, so revisions follow commit order and the duplicate
//!   check of a creation sees every entry committed before it;
//! - inventory reports of one (agent, context) serialise on a transaction
//!   advisory lock, so completing a snapshot sees the pages of exactly the
//!   reports committed before it.
//!
//! Rows are read back through the same codec as SQLite's, so both back ends
//! store and validate one format.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use hallmark_core::{Entry, EntryId, EntrySpec, SpiffeId, TrustDomain, Workload, WorkloadState};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};
use sqlx::{Connection, QueryBuilder};

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

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long the first connection may take. A refused port fails at once;
/// this bounds an unreachable host or a server that accepts and stalls.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a query waits for a free pooled connection (or a reconnect)
/// before failing, so an outage surfaces as an error instead of a hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per server; PostgreSQL's default limit is 100 for all of
/// them together.
const MAX_CONNECTIONS: u32 = 8;
/// Shown in `pg_stat_activity`, so an operator can tell whose sessions these are.
const APPLICATION_NAME: &str = "hallmark";
/// Reads that span several statements see one snapshot of the database.
const BEGIN_CONSISTENT_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
/// What to do about a connection failure, appended to its message.
const CONNECT_HINT: &str = "is PostgreSQL running? check the URL";

/// [`Store`] on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url`
    /// (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`) and applies the
    /// schema migrations. The database must exist; its tables are created
    /// on first use. Servers starting together on one database apply the
    /// migrations once (sqlx takes an advisory lock around them).
    ///
    /// Fails fast with [`StoreError::Connect`], naming the URL without its
    /// password, when the URL does not parse or the server cannot be
    /// reached or refuses the login.
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                StoreError::Connect(format!(
                    "PostgreSQL URL `{shown}` does not parse ({e}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                ))
            })?
            .application_name(APPLICATION_NAME);
        let connect_failed = |what: String| {
            StoreError::Connect(format!(
                "connecting to PostgreSQL at `{shown}`: {what}; {CONNECT_HINT}"
            ))
        };
        // One direct connection first: the pool retries a refused
        // connection until its acquire timeout, which would turn "nothing
        // listens there" into a long silent wait.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| connect_failed(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| connect_failed(e.to_string()))?;
        if let Err(e) = probe.close().await {
            tracing::debug!(error = %e, "datastore: closing the probe connection failed");
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| connect_failed(e.to_string()))?;
        MIGRATOR.run(&pool).await?;
        Ok(PostgresStore { pool })
    }

    /// Closes every connection; calls after this fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn create_entry(&self, spec: &EntrySpec, now: i64) -> Result<Entry> {
        let selectors = canonical_selectors(&spec.selectors);
        let key = selectors_key(&selectors);
        let x509_ttl = u64_column("x509_ttl_secs", spec.x509_ttl_secs)?;
        let jwt_ttl = u64_column("jwt_ttl_secs", spec.jwt_ttl_secs)?;

        let mut tx = self.pool.begin().await?;
        // Bumped before the duplicate check: the counter's row lock makes a
        // concurrent creation of the same entry wait until this one commits
        // or rolls back, and then its check sees the outcome. A refused
        // creation rolls the bump back.
        let revision = bump_revision(&mut tx).await?;
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
        .await
        .map_err(|e| {
            // Unreachable while every writer bumps the revision first; the
            // unique index still has the last word.
            if is_unique_violation(&e) {
                StoreError::AlreadyExists(format!(
                    "an entry granting {} under parent {} to the same selectors [{}] was created concurrently",
                    spec.spiffe_id,
                    spec.parent_id,
                    key.replace('\n', ", ")
                ))
            } else {
                StoreError::Database(e)
            }
        })?;
        // One statement for the whole set: fewer round trips to a server
        // that may be across the network.
        if !selectors.is_empty() {
            let mut q =
                QueryBuilder::<Postgres>::new("INSERT INTO entry_selectors (entry_id, selector) ");
            q.push_values(&selectors, |mut row, selector| {
                row.push_bind(id.as_str()).push_bind(selector.to_string());
            });
            q.build().execute(&mut *tx).await?;
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
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE TRUE"
        ));
        if let Some(parent) = &filter.parent_id {
            q.push(" AND parent_id = ").push_bind(parent.as_str());
        }
        if let Some(spiffe_id) = &filter.spiffe_id {
            q.push(" AND spiffe_id = ").push_bind(spiffe_id.as_str());
        }
        if let Some(selector) = &filter.selector {
            q.push(" AND id IN (SELECT entry_id FROM entry_selectors WHERE selector = ")
                .push_bind(selector.to_string())
                .push(")");
        }
        q.push(" ORDER BY spiffe_id, id");
        let rows: Vec<EntryRow> = q
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("entries", e))?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    async fn delete_entry(&self, id: &EntryId) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The selector rows go by ON DELETE CASCADE.
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

    fn shared_between_servers(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn change_notifications(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        let (tx, rx) = tokio::sync::watch::channel(0);
        tokio::spawn(listen_for_changes(self.pool.clone(), tx));
        Some(rx)
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
        let mut tx = self.pool.begin().await?;
        // One conditional UPDATE is the whole check-and-set. A concurrent
        // consumer blocks on the row lock, then re-checks `used_at IS NULL`
        // against the committed row and matches nothing.
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        // The upsert locks the authority row, so concurrent puts of one
        // authority replace its chain one after the other, never mixed.
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
        if !a.chain_der.is_empty() {
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO authority_chain (authority_id, position, cert_der) ",
            );
            q.push_values((0_i64..).zip(&a.chain_der), |mut row, (position, cert)| {
                row.push_bind(&a.id).push_bind(position).push_bind(cert);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_authorities(&self, kind: AuthorityKind) -> Result<Vec<AuthorityRecord>> {
        // One snapshot for both queries, so the chains match the authority
        // rows even if another server puts one meanwhile.
        let mut tx = self.pool.begin_with(BEGIN_CONSISTENT_READ).await?;
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
        let mut tx = self.pool.begin().await?;
        // An agent that failed over to another server may have a report
        // still in flight at the first: one (agent, context) at a time, so
        // a snapshot completes against the pages and workloads of the
        // reports committed before it. Other agents' reports run in
        // parallel.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "inventory\n{}\n{}",
                r.agent_id.as_str(),
                r.context_name
            ))
            .execute(&mut *tx)
            .await?;
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
        // starts_with, not LIKE: a prefix holding `%` or `_` is literal.
        let sql = format!(
            "SELECT {WORKLOAD_COLUMNS} FROM workloads \
             WHERE starts_with(container_id, $1) AND (stopped_at_ms IS NULL OR stopped_at_ms >= $2) \
             ORDER BY container_id, context_name, agent_id"
        );
        let rows: Vec<WorkloadRow> = sqlx::query_as(&sql)
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
            "SELECT COUNT(*) FILTER (WHERE stopped_at_ms IS NULL), COUNT(stopped_at_ms) \
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
        let mut tx = self.pool.begin().await?;
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

crate::shared_sql::inventory_writes!(PgConnection);
crate::shared_sql::federation_queries!(PgPool);
crate::shared_sql::workload_queries!(PgPool, Postgres);

/// Increments the entry revision inside the caller's transaction and
/// returns the new value. The row stays locked until the transaction ends,
/// which is what orders concurrent entry writers.
/// The channel on which entry changes are announced to every server.
const CHANGES_CHANNEL: &str = "hallmark_entries";

async fn bump_revision(conn: &mut PgConnection) -> Result<i64> {
    let revision: i64 =
        sqlx::query_scalar("UPDATE meta SET value = value + 1 WHERE key = $1 RETURNING value")
            .bind(ENTRY_REVISION_KEY)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| decode_error("meta", e))?
            .ok_or_else(missing_revision)?;
    // Delivered at commit, and only if the transaction commits.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(revision.to_string())
        .execute(conn)
        .await?;
    Ok(revision)
}

/// Follows `NOTIFY` on [`CHANGES_CHANNEL`], bumping `tx` on each; after a
/// lost connection it reconnects with backoff and bumps once (a change may
/// have been missed meanwhile). Ends when nobody listens any more.
async fn listen_for_changes(pool: PgPool, tx: tokio::sync::watch::Sender<u64>) {
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let connect = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen(CHANGES_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let listener = tokio::select! {
            r = connect => r,
            _ = tx.closed() => return,
        };
        let mut listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listening for datastore changes failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                if tx.is_closed() {
                    return;
                }
                continue;
            }
        };
        backoff = std::time::Duration::from_millis(100);
        tx.send_modify(|v| *v += 1);
        loop {
            let received = tokio::select! {
                r = listener.try_recv() => r,
                // The server stopped following: stop listening.
                _ = tx.closed() => return,
            };
            match received {
                Ok(Some(_)) => tx.send_modify(|v| *v += 1),
                // The connection was lost and re-established inside the
                // listener: notifications in between are gone.
                Ok(None) => tx.send_modify(|v| *v += 1),
                Err(e) => {
                    tracing::warn!(error = %e, "datastore change notifications interrupted; reconnecting");
                    break;
                }
            }
        }
    }
}

fn missing_revision() -> StoreError {
    StoreError::Corrupt(format!(
        "table meta, key {ENTRY_REVISION_KEY}: row is missing"
    ))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// `url` fit for messages and logs: the password replaced by `***`. Text
/// that does not parse as a URL is not shown at all, since where a password
/// sits in it is anyone's guess.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
                // Only URLs that cannot have a password refuse one, and
                // those did not have one to hide.
                return "<URL without a host>".to_string();
            }
            parsed.to_string()
        }
        Err(e) => format!("<not a URL: {e}>"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        // (input, shown)
        let cases: &[(&str, &str)] = &[
            (
                "postgres://hallmark:s3cret@db.example:5432/hallmark",
                "postgres://hallmark:***@db.example:5432/hallmark",
            ),
            (
                "postgres://hallmark@127.0.0.1/hallmark",
                "postgres://hallmark@127.0.0.1/hallmark",
            ),
            (
                "postgresql://u:p%40ss@localhost/db?sslmode=disable",
                "postgresql://u:***@localhost/db?sslmode=disable",
            ),
            ("postgres://localhost", "postgres://localhost"),
            (
                "host=db user=u password=s3cret",
                "<not a URL: relative URL without a base>",
            ),
            ("", "<not a URL: relative URL without a base>"),
        ];
        for (input, want) in cases {
            let shown = redact_url(input);
            assert_eq!(&shown, want, "input {input}");
            assert!(!shown.contains("s3cret") && !shown.contains("p%40ss"));
        }
    }

    #[tokio::test]
    async fn unparseable_url_is_a_connect_error_without_the_secret() {
        let err = PostgresStore::connect("host=db password=s3cret")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Connect(_)), "{msg}");
        assert!(msg.contains("does not parse"), "{msg}");
        assert!(msg.contains("postgres://USER:PASSWORD@HOST"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }
}
