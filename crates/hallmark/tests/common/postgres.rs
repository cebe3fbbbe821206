//! A real PostgreSQL for end-to-end tests: set up once per test binary by
//! the same script the test command runs, one fresh database per test.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::{repo_root, run, Output, CLI_TIMEOUT};

/// The server every test database lives on.
pub const PG: &str = "postgres://hallmark:hallmark@127.0.0.1:5432";

/// Installs and starts PostgreSQL (`scripts/setup.d/20-postgres.sh`), once.
pub fn ensure_postgres() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = repo_root().join("scripts/setup.d/20-postgres.sh");
        let out = run(Command::new("bash").arg(&script), Duration::from_secs(600));
        assert!(
            out.success(),
            "setting up PostgreSQL with {} failed:\n{out}",
            script.display()
        );
    });
}

/// Runs one SQL statement as the test role on the `postgres` database.
pub fn psql(sql: &str) -> Output {
    let mut cmd = Command::new("psql");
    cmd.env("PGPASSWORD", "hallmark").args([
        "-h",
        "127.0.0.1",
        "-U",
        "hallmark",
        "-d",
        "postgres",
        "-c",
        sql,
    ]);
    run(&mut cmd, CLI_TIMEOUT)
}

/// A fresh database, dropped when the test ends.
pub struct Database(String);

impl Database {
    /// A new database named `<prefix>_<pid>_<nanos>`.
    pub fn create(prefix: &str) -> Self {
        ensure_postgres();
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        psql(&format!("CREATE DATABASE {name}")).ok();
        Database(name)
    }

    pub fn url(&self) -> String {
        format!("{PG}/{}", self.0)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
    }
}
