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
//!   reports committed before it;
//! - flow batches take their flow and evidence ids under a transaction
//!   advisory lock held until commit, so ids follow commit order and a
//!   server tailing another's evidence by id misses nothing; adopting the
//!   held-back flows of a silent server is serialised the same way.
//!
//! The queries are SQLite's too ([`crate::sql`]); this module holds how to
//! connect and what PostgreSQL does its own way.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres,
};
use sqlx::query::QueryAs;
use sqlx::Connection;
use tokio::sync::watch;

use crate::sql::{Backend, SqlStore};
use crate::{Result, StoreError};

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

/// The store on a PostgreSQL database.
pub type PostgresStore = SqlStore<Postgres>;

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
        Ok(SqlStore { pool })
    }

    /// Closes every connection; calls after this fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The channel on which entry changes are announced to every server.
const CHANGES_CHANNEL: &str = "hallmark_entries";

impl Backend for Postgres {
    const BACKEND_NAME: &'static str = "postgres";
    const SHARED_BETWEEN_SERVERS: bool = true;
    const POSITIONAL_ARGUMENTS: bool = false;
    // Writers that need ordering take row locks (the revision counter) or
    // advisory locks (inventory) themselves.
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_CONSISTENT_READ: &'static str = BEGIN_CONSISTENT_READ;
    // starts_with, not LIKE: a prefix holding `%` or `_` is literal.
    const CONTAINER_ID_STARTS_WITH: &'static str = "starts_with(container_id, $2)";

    fn bind_prefix<'q, O>(
        query: QueryAs<'q, Postgres, O, PgArguments>,
        prefix: &'q str,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query.bind(prefix)
    }

    async fn announce_entry_change(conn: &mut PgConnection, revision: i64) -> Result<()> {
        // Delivered at commit, and only if the transaction commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(revision.to_string())
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn lock_inventory(
        conn: &mut PgConnection,
        agent_id: &str,
        context_name: &str,
    ) -> Result<()> {
        // A transaction advisory lock: released at commit or rollback.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("inventory\n{agent_id}\n{context_name}"))
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn lock_named(conn: &mut PgConnection, name: &str) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("lock\n{name}"))
            .execute(conn)
            .await?;
        Ok(())
    }

    fn change_notifications(pool: &PgPool) -> Option<watch::Receiver<u64>> {
        let (tx, rx) = watch::channel(0);
        tokio::spawn(listen_for_changes(pool.clone(), tx));
        Some(rx)
    }
}

/// Follows `NOTIFY` on [`CHANGES_CHANNEL`], bumping `tx` on each; after a
/// lost connection it reconnects with backoff and bumps once (a change may
/// have been missed meanwhile). Ends when nobody listens any more.
async fn listen_for_changes(pool: PgPool, tx: watch::Sender<u64>) {
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
