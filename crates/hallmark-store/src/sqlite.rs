//! The embedded SQLite back end: one file next to the server, no daemon.
//!
//! The file holds the CA's private keys, so it is created 0600 in a 0700
//! directory before SQLite ever opens it. Durability settings (WAL,
//! `synchronous=FULL`) make every committed transaction survive a crash or
//! a kill at any moment, and leave no half-written one behind.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::query::QueryAs;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};

use crate::sql::{Backend, SqlStore};
use crate::{Result, StoreError};

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

/// The store on an SQLite database.
pub type SqliteStore = SqlStore<Sqlite>;

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
        Ok(SqlStore { pool })
    }
}

impl Backend for Sqlite {
    const BACKEND_NAME: &'static str = "sqlite";
    const SHARED_BETWEEN_SERVERS: bool = false;
    const POSITIONAL_ARGUMENTS: bool = true;
    const BEGIN_WRITE: &'static str = BEGIN_WRITE;
    // One read transaction is one snapshot already.
    const BEGIN_CONSISTENT_READ: &'static str = "BEGIN";
    // substr counts characters, so the length bound is in characters.
    const CONTAINER_ID_STARTS_WITH: &'static str = "substr(container_id, 1, $3) = $2";

    fn bind_prefix<'q, O>(
        query: QueryAs<'q, Sqlite, O, SqliteArguments<'q>>,
        prefix: &'q str,
    ) -> QueryAs<'q, Sqlite, O, SqliteArguments<'q>> {
        let len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
        query.bind(prefix).bind(len)
    }

    // Nobody else shares the file.
    async fn announce_entry_change(_: &mut SqliteConnection, _: i64) -> Result<()> {
        Ok(())
    }

    // Write transactions already run one at a time (`BEGIN IMMEDIATE`).
    async fn lock_inventory(_: &mut SqliteConnection, _: &str, _: &str) -> Result<()> {
        Ok(())
    }

    // Likewise.
    async fn lock_named(_: &mut SqliteConnection, _: &str) -> Result<()> {
        Ok(())
    }
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
    use hallmark_core::{EntrySpec, SpiffeId};

    use super::*;
    use crate::prelude::*;
    use crate::EntryFilter;

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
