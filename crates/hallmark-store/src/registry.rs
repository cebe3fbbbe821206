//! The registry: registration entries and the revision counter that
//! announces their changes, join tokens, and attested agents. These are what
//! a server consults to attest an agent and to decide which SVIDs it may
//! issue.

use hallmark_core::{Entry, EntryId, EntrySpec, Selector, SpiffeId};

use crate::Result;

/// Which entries [`RegistryStore::list_entries`] returns. Every set field must match;
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

/// Registration entries, join tokens and agents. Every method is atomic on
/// its own.
#[async_trait::async_trait]
pub trait RegistryStore: Send + Sync + 'static {
    /// Stores a new entry with a fresh [`EntryId`], `created_at = now` and
    /// `revision` = the datastore revision this creation bumped to (in the
    /// same transaction). Selectors are stored sorted and deduplicated; the
    /// returned entry carries them that way.
    ///
    /// Fails with [`StoreError::AlreadyExists`](crate::StoreError::AlreadyExists), naming the existing entry,
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
    /// server then watches [`RegistryStore::revision`] for changes other servers
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
    /// [`RegistryStore::revision`] either way, as notifications are best effort.
    fn change_notifications(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Fails with [`StoreError::AlreadyExists`](crate::StoreError::AlreadyExists) when a token with the same
    /// hash exists.
    async fn create_join_token(&self, t: &JoinToken) -> Result<()>;

    /// Atomically marks the token used and returns its agent ID. Unknown ->
    /// [`StoreError::TokenNotFound`](crate::StoreError::TokenNotFound); already used ->
    /// [`StoreError::TokenUsed`](crate::StoreError::TokenUsed) (even if also expired by now);
    /// `now > expires_at` -> [`StoreError::TokenExpired`](crate::StoreError::TokenExpired), and the token
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

    /// Records that the agent was seen at `now`; [`StoreError::NotFound`](crate::StoreError::NotFound)
    /// for an unknown agent.
    async fn touch_agent(&self, id: &SpiffeId, now: i64) -> Result<()>;
}
