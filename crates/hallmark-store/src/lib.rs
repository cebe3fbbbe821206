//! Hallmark's datastore: registration entries, join tokens, attested agents,
//! the server's signing authorities, the workload inventory agents report,
//! and attributed flows with the identity graph and ownership evidence.
//!
//! The server is stateless over its datastore (see the architecture map), so
//! everything it must remember across restarts, or share with other servers,
//! goes through one trait per concern: [`RegistryStore`] (entries, join
//! tokens, agents), [`AuthorityStore`], [`InventoryStore`],
//! [`FederationStore`], [`FlowStore`] and [`PolicyStore`] (the identity
//! policy's revisions). [`Store`] is all of them together, the handle the
//! server holds; [`prelude`] brings the traits into scope to call them.
//!
//! [`SqliteStore`] is the embedded default; [`PostgresStore`] lets several
//! servers share one database. Both are [`SqlStore`]: each query is written
//! once for both dialects, and only what the dialects truly disagree on is
//! the [`sql::Backend`] of each. The conformance suite (`conformance::run_all`,
//! behind the `conformance` feature) is the single behavioural contract every
//! back end must pass.
//!
//! Times are passed in by the caller, never read from a clock here, so
//! expiry and retention logic is testable without sleeping: unix seconds for
//! the registry, unix milliseconds for the inventory and flows (see
//! [`inventory`], [`flows`]).
//!
//! Every row is parsed back through the validating constructors of
//! `hallmark-core` when read; a row that does not parse is reported as
//! [`StoreError::Corrupt`] naming the table, the row and the column, instead
//! of being skipped or passed on half-valid.

#![forbid(unsafe_code)]

mod authority;
mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
mod federation;
pub mod flows;
pub mod inventory;
pub mod policy;
mod postgres;
mod registry;
pub mod sql;
mod sqlite;

pub use authority::{AuthorityKind, AuthorityRecord, AuthorityStore};
pub use federation::{FederationProfile, FederationRecord, FederationRefresh, FederationStore};
pub use flows::{
    FlowCounts, FlowStore, FlowWrite, FlowWritten, FlowsPruned, MergePolicy, PendingFlow,
};
pub use inventory::{
    AgentInventory, FilterError, ImageMatch, InventoryApplied, InventoryReport, InventoryStore,
    LabelMatch, PrunedWorkloads, RuntimeStatus, SnapshotOutcome, SnapshotPage, StateFilter,
    StoredWorkload, StoredWorkloadEvent, WorkloadCounts, WorkloadEvent, WorkloadEventKind,
    WorkloadFilter,
};
pub use policy::{
    policy_digest, NewPolicyRevision, PolicyApplied, PolicyRevision, PolicyRevisionInfo,
    PolicyStore,
};
pub use postgres::PostgresStore;
pub use registry::{AgentRecord, EntryFilter, JoinToken, RegistryStore};
pub use sql::SqlStore;
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

/// Hallmark's persistent state: every concern's store in one handle.
/// Implementations must be safe to share between tasks and, for back ends
/// that support it, between servers: every method is atomic on its own.
///
/// Implemented for every type that implements the concern traits; callers
/// bring those into scope with `use hallmark_store::prelude::*`.
pub trait Store:
    RegistryStore + AuthorityStore + InventoryStore + FederationStore + FlowStore + PolicyStore
{
}

impl<T> Store for T where
    T: RegistryStore + AuthorityStore + InventoryStore + FederationStore + FlowStore + PolicyStore
{
}

/// The store traits, for callers of their methods.
pub mod prelude {
    pub use crate::{
        AuthorityStore, FederationStore, FlowStore, InventoryStore, PolicyStore, RegistryStore,
        Store,
    };
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
}
