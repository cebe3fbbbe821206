//! Hallmark's datastore: registration entries, join tokens, attested agents,
//! the server's signing authorities and the workload inventory agents report.
//!
//! The server is stateless over its datastore (see the architecture map), so
//! everything it must remember across restarts, or share with other servers,
//! goes through the [`Store`] trait. [`SqliteStore`] is the embedded default;
//! [`PostgresStore`] lets several servers share one database, and
//! [`conformance::run_all`] is the single behavioural contract both must pass.
//!
//! Times are passed in by the caller, never read from a clock here, so
//! expiry and retention logic is testable without sleeping: unix seconds for
//! the registry, unix milliseconds for the inventory (see [`inventory`]).
//!
//! Every row is parsed back through the validating constructors of
//! `hallmark-core` when read; a row that does not parse is reported as
//! [`StoreError::Corrupt`] naming the table, the row and the column, instead
//! of being skipped or passed on half-valid.

use std::fmt;
use std::time::Duration;

use hallmark_core::{Entry, EntryId, EntrySpec, Selector, SpiffeId, TrustDomain};

mod codec;
pub mod conformance;
mod federation;
pub mod inventory;
mod postgres;
mod shared_sql;
mod sqlite;

pub use federation::{FederationProfile, FederationRecord, FederationRefresh};
pub use inventory::{
    AgentInventory, FilterError, ImageMatch, InventoryApplied, InventoryReport, LabelMatch,
    PrunedWorkloads, RuntimeStatus, SnapshotOutcome, SnapshotPage, StateFilter, StoredWorkload,
    StoredWorkloadEvent, WorkloadCounts, WorkloadEvent, WorkloadEventKind, WorkloadFilter,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub type Result<T> = std::result::Result<T, StoreError>;

/// Hint appended to every join token refusal: tokens are single-use and
/// short-lived, so the only remedy is a fresh one.
const NEW_TOKEN_HINT: &str = "generate a new one with `hallmark token generate`";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named record does not exist; the text is the whole message
    /// (`entry 7f3c... not found`).
    #[error("{0}")]
    NotFound(String),
    /// A record with the same identity exists already; the text names it.
    #[error("{0}")]
    AlreadyExists(String),
    /// No join token has this hash (never issued, or pruned after use or
    /// expiry).
    #[error("join token not found; {NEW_TOKEN_HINT}")]
    TokenNotFound,
    /// The join token's `expires_at` lies before the time of use.
    #[error("join token has expired; {NEW_TOKEN_HINT}")]
    TokenExpired,
    /// The join token was consumed already; tokens are single-use.
    #[error("join token was already used (tokens are single-use); {NEW_TOKEN_HINT}")]
    TokenUsed,
    /// A stored row does not parse back into domain types. The text names
    /// the table, the row's key and the column.
    #[error("corrupt datastore row: {0}")]
    Corrupt(String),
    /// The database refused or failed a query.
    #[error("datastore query failed: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema migrations could not be applied (e.g. the database was
    /// written by a newer Hallmark).
    #[error("applying datastore schema migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Preparing the database file or its directory failed; the message
    /// names the path.
    #[error("{0}")]
    Io(std::io::Error),
    /// Reaching a database server failed (refused, unreachable, timed out,
    /// login refused) or its URL does not parse. The text names the URL
    /// with its password masked and says what to check.
    #[error("{0}")]
    Connect(String),
}

/// Which entries [`Store::list_entries`] returns. Every set field must match;
/// the default matches all entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    pub parent_id: Option<SpiffeId>,
    pub spiffe_id: Option<SpiffeId>,
    /// Entries whose selector set contains this selector.
    pub selector: Option<Selector>,
}

/// A join token as stored: only the hash of the secret is kept, so reading
/// the datastore does not let anyone attest as an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the token text.
    pub token_hash: String,
    /// The SPIFFE ID the agent that presents this token is issued.
    pub agent_id: SpiffeId,
    /// Unix seconds; the token is refused at any later second.
    pub expires_at: i64,
}

/// An attested agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub spiffe_id: SpiffeId,
    /// Serial number of the agent's current SVID; an SVID with another serial
    /// has been superseded.
    pub serial: String,
    /// Unix seconds at which the agent's current SVID expires.
    pub expires_at: i64,
    pub attested_at: i64,
    pub last_seen: i64,
    pub banned: bool,
}

/// Which kind of signing key an [`AuthorityRecord`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorityKind {
    /// A CA certificate and key that sign X.509-SVIDs.
    X509,
    /// A key that signs JWT-SVIDs.
    Jwt,
    /// A key that signs OIDC-profile tokens for cloud federation.
    Oidc,
}

/// A signing authority (CA or JWT key) with its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorityRecord {
    /// X.509: the CA's identifier; JWT: the key ID (`kid`).
    pub id: String,
    pub kind: AuthorityKind,
    /// `prepared`, `active`, `retired` or `tainted`.
    pub state: String,
    pub alg: String,
    /// PKCS#8 DER of the private key.
    pub key_pkcs8: Vec<u8>,
    /// DER certificate; empty for JWT keys.
    pub cert_der: Vec<u8>,
    /// DER certificates above `cert_der`, nearest first.
    pub chain_der: Vec<Vec<u8>>,
    pub created_at: i64,
    pub not_after: i64,
}

/// Hallmark's persistent state. Implementations must be safe to share
/// between tasks and, for back ends that support it, between servers: every
/// method is atomic on its own.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new entry with a fresh [`EntryId`], `created_at = now` and
    /// `revision` = the datastore revision this creation bumped to (in the
    /// same transaction). Selectors are stored sorted and deduplicated; the
    /// returned entry carries them that way.
    ///
    /// Fails with [`StoreError::AlreadyExists`], naming the existing entry,
    /// when an entry with the same `spiffe_id`, `parent_id` and selector set
    /// exists.
    async fn create_entry(&self, spec: &EntrySpec, now: i64) -> Result<Entry>;

    async fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>>;

    /// Entries matching `filter`, ordered by `(spiffe_id, id)` compared
    /// bytewise.
    async fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<Entry>>;

    /// Deletes an entry; `false` when there was none. A deletion bumps the
    /// datastore revision.
    async fn delete_entry(&self, id: &EntryId) -> Result<bool>;

    async fn count_entries(&self) -> Result<u64>;

    /// The datastore-wide entry change counter: strictly increases on every
    /// entry creation or deletion, never decreases, survives restarts.
    async fn revision(&self) -> Result<i64>;

    /// True for back ends that several servers may share (PostgreSQL): a
    /// server then watches [`Store::revision`] for changes other servers
    /// make. An embedded database is private to one server.
    fn shared_between_servers(&self) -> bool {
        false
    }

    /// The back end's name, for status output: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// For shared back ends that can announce changes (PostgreSQL's
    /// `LISTEN`/`NOTIFY`): a receiver that changes soon after any server
    /// commits an entry change, and after a lost notification connection is
    /// re-established. `None` when the back end cannot; callers poll
    /// [`Store::revision`] either way, as notifications are best effort.
    fn change_notifications(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Fails with [`StoreError::AlreadyExists`] when a token with the same
    /// hash exists.
    async fn create_join_token(&self, t: &JoinToken) -> Result<()>;

    /// Atomically marks the token used and returns its agent ID. Unknown ->
    /// [`StoreError::TokenNotFound`]; already used ->
    /// [`StoreError::TokenUsed`] (even if also expired by now);
    /// `now > expires_at` -> [`StoreError::TokenExpired`], and the token
    /// stays unused. Of concurrent consumers of one token, exactly one
    /// succeeds.
    async fn consume_join_token(&self, token_hash: &str, now: i64) -> Result<SpiffeId>;

    /// Deletes tokens that can never be consumed again: expired before
    /// `now`, or used at or before `now`. Returns how many were deleted.
    async fn prune_join_tokens(&self, now: i64) -> Result<u64>;

    /// Inserts the agent or replaces every field of the stored one.
    async fn upsert_agent(&self, a: &AgentRecord) -> Result<()>;

    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>>;

    /// All agents, ordered by SPIFFE ID.
    async fn list_agents(&self) -> Result<Vec<AgentRecord>>;

    /// `false` when there was no such agent. Its inventory status goes with
    /// it; the workloads it reported stay until they stop and age out.
    async fn delete_agent(&self, id: &SpiffeId) -> Result<bool>;

    /// `false` when there is no such agent.
    async fn set_agent_banned(&self, id: &SpiffeId, banned: bool) -> Result<bool>;

    /// Records that the agent was seen at `now`; [`StoreError::NotFound`]
    /// for an unknown agent.
    async fn touch_agent(&self, id: &SpiffeId, now: i64) -> Result<()>;

    /// Inserts the authority or replaces every field (chain included) of the
    /// one with the same `id`.
    async fn put_authority(&self, a: &AuthorityRecord) -> Result<()>;

    /// Authorities of one kind, ordered by `created_at` (then `id`).
    async fn list_authorities(&self, kind: AuthorityKind) -> Result<Vec<AuthorityRecord>>;

    /// Applies one agent's inventory report received at server time
    /// `now_ms`, all of it or (on error) none of it, in this order:
    ///
    /// 1. The snapshot page's records are upserted (first and last seen at
    ///    `now_ms`, tagged with the snapshot ID). A record in state
    ///    `stopped` stops the workload (at its `finished_at_ms` when that is
    ///    known and not after `now_ms`, else at `now_ms`; an earlier stop
    ///    time is kept); any other state makes it current again.
    /// 2. On the last page, if every page of the snapshot arrived (pages
    ///    count from 0), every workload of this (agent, context)
    ///    that is current, was not listed by this snapshot and was not seen
    ///    since its first page arrived, is stopped at `now_ms`. With a page
    ///    missing, nothing is stopped ([`SnapshotOutcome::Incomplete`]). A
    ///    page of another snapshot ID abandons the one in progress.
    /// 3. Events are upserted and recorded in order: `started`/`updated`
    ///    like snapshot records (stop time reckoned from `at_ms`), `stopped`
    ///    stops the workload at exactly `at_ms` with the final record.
    /// 4. The agent's context, runtime status (when given) and dropped
    ///    event count replace the stored ones.
    async fn apply_inventory(
        &self,
        report: &InventoryReport,
        now_ms: i64,
    ) -> Result<InventoryApplied>;

    /// Workloads matching `filter` ([`WorkloadFilter::matches`]) that are
    /// current, or stopped no longer than `retention` before `now_ms` (older
    /// ones are hidden even before [`Store::prune_workloads`] deletes them).
    /// Ordered by `(context_name, agent_id, container_id)` bytewise.
    async fn list_workloads(
        &self,
        filter: &WorkloadFilter,
        now_ms: i64,
        retention: Duration,
    ) -> Result<Vec<StoredWorkload>>;

    /// Visible workloads (as for [`Store::list_workloads`]) whose container
    /// ID starts with `prefix`, under every agent and context. Ordered by
    /// `(container_id, context_name, agent_id)`.
    async fn find_workloads_by_prefix(
        &self,
        prefix: &str,
        now_ms: i64,
        retention: Duration,
    ) -> Result<Vec<StoredWorkload>>;

    /// The recorded events of one container (exact ID), from every agent
    /// and context, ordered by `at_ms` and then by arrival.
    async fn workload_events(&self, container_id: &str) -> Result<Vec<StoredWorkloadEvent>>;

    /// How many workloads [`Store::list_workloads`] would show, by state.
    async fn count_workloads(&self, now_ms: i64, retention: Duration) -> Result<WorkloadCounts>;

    /// Deletes workloads stopped before `before_ms` and events received
    /// before it, in one transaction.
    async fn prune_workloads(&self, before_ms: i64) -> Result<PrunedWorkloads>;

    /// The agent's latest inventory report; `None` before its first one.
    async fn agent_inventory(&self, agent_id: &SpiffeId) -> Result<Option<AgentInventory>>;

    /// Every agent's latest inventory report, ordered by agent ID.
    async fn list_agent_inventories(&self) -> Result<Vec<AgentInventory>>;

    /// Inserts the federation relationship or replaces every field of the
    /// one with the same trust domain.
    async fn put_federation(&self, f: &FederationRecord) -> Result<()>;

    async fn get_federation(&self, td: &TrustDomain) -> Result<Option<FederationRecord>>;

    /// All federation relationships, ordered by trust domain name bytewise.
    async fn list_federations(&self) -> Result<Vec<FederationRecord>>;

    /// `false` when there was no relationship with `td`.
    async fn delete_federation(&self, td: &TrustDomain) -> Result<bool>;

    /// Records the outcome of a fetch of `td`'s bundle, touching only the
    /// bundle, sequence, refresh times and error columns, so an operator's
    /// concurrent edit of the endpoint survives. `false` when the
    /// relationship was deleted meanwhile (nothing is written).
    async fn record_federation_refresh(
        &self,
        td: &TrustDomain,
        outcome: &FederationRefresh,
    ) -> Result<bool>;
}

impl AuthorityKind {
    /// The name stored in the datastore.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityKind::X509 => "x509",
            AuthorityKind::Jwt => "jwt",
            AuthorityKind::Oidc => "oidc",
        }
    }

    /// Inverse of [`AuthorityKind::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "x509" => Some(AuthorityKind::X509),
            "jwt" => Some(AuthorityKind::Jwt),
            "oidc" => Some(AuthorityKind::Oidc),
            _ => None,
        }
    }
}

impl fmt::Display for AuthorityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Written by hand so the private key never reaches a log line.
impl fmt::Debug for AuthorityRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("alg", &self.alg)
            .field(
                "key_pkcs8",
                &format_args!("<{} bytes redacted>", self.key_pkcs8.len()),
            )
            .field("cert_der", &format_args!("<{} bytes>", self.cert_der.len()))
            .field(
                "chain_der",
                &format_args!("<{} certificates>", self.chain_der.len()),
            )
            .field("created_at", &self.created_at)
            .field("not_after", &self.not_after)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn token_errors_say_what_to_do() {
        for e in [
            StoreError::TokenNotFound,
            StoreError::TokenExpired,
            StoreError::TokenUsed,
        ] {
            let msg = e.to_string();
            assert!(msg.contains("hallmark token generate"), "{msg}");
        }
        assert!(StoreError::TokenUsed.to_string().contains("already used"));
        assert!(StoreError::TokenExpired.to_string().contains("expired"));
    }

    #[test]
    fn authority_kind_names_round_trip() {
        for kind in [AuthorityKind::X509, AuthorityKind::Jwt, AuthorityKind::Oidc] {
            assert_eq!(AuthorityKind::from_name(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(AuthorityKind::from_name("X509"), None);
    }

    #[test]
    fn authority_debug_hides_the_key() {
        let r = AuthorityRecord {
            id: "ca1".into(),
            kind: AuthorityKind::X509,
            state: "active".into(),
            alg: "ec-p256".into(),
            key_pkcs8: vec![0xAB; 40],
            cert_der: vec![1, 2, 3],
            chain_der: vec![vec![4]],
            created_at: 1,
            not_after: 2,
        };
        let dbg = format!("{r:?}");
        assert!(dbg.contains("40 bytes redacted"), "{dbg}");
        assert!(!dbg.contains("171"), "key bytes leaked: {dbg}");
    }
}
