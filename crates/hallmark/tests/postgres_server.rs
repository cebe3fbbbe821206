//! The server on a real PostgreSQL datastore: the identity plane works the
//! same as on SQLite and survives a restart with its CA and entries.

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

const PG: &str = "postgres://hallmark:hallmark@127.0.0.1:5432";

fn ensure_postgres() {
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

fn psql(sql: &str) -> Output {
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
struct Database(String);

impl Database {
    fn create() -> Self {
        ensure_postgres();
        let name = format!(
            "hm_server_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        psql(&format!("CREATE DATABASE {name}")).ok();
        Database(name)
    }

    fn url(&self) -> String {
        format!("{PG}/{}", self.0)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
    }
}

#[test]
fn the_server_runs_on_postgresql_and_keeps_its_state_there() {
    let db = Database::create();
    let url = db.url();
    let mut server = TestServer::start_with("pg.test", &["--datastore", &url]);
    assert!(
        !server.data_dir.join("datastore.sqlite3").exists(),
        "with --datastore postgres://… no SQLite file may be created"
    );
    let agent = TestAgent::start(&server, "pg-node");
    let first = server.id("/first");
    server.create_entry(&first, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&first], WAIT);
    let bundle = server.bundle_pem();

    // The CA, the entries and the agent's registration live in PostgreSQL.
    server.restart();
    assert_eq!(
        server.bundle_pem(),
        bundle,
        "the CA changed across a restart"
    );
    let second = server.id("/second");
    server.create_entry(&second, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&first, &second], Duration::from_secs(30));
    let entries = server.json(&["entry", "list"]);
    assert_eq!(
        entries.as_array().map(Vec::len),
        Some(2),
        "entries after restart: {entries}"
    );
}

#[test]
fn a_bad_datastore_is_refused_with_the_rule_and_no_password() {
    let mut cmd = hallmark_cmd(&[
        "server",
        "run",
        "--datastore",
        "mysql://root:s3cret@db/hallmark",
    ]);
    let out = run(&mut cmd, CLI_TIMEOUT).fails();
    assert!(out.stderr.contains("postgres://"), "{out}");
    assert!(!out.stderr.contains("s3cret"), "the password leaked: {out}");

    // Nothing listening: a clear error, quickly, without the password.
    let dir = short_tempdir();
    let mut cmd = hallmark_cmd(&[
        "server",
        "run",
        "--datastore",
        "postgres://hallmark:s3cret@127.0.0.1:1/hallmark",
        "--data-dir",
    ]);
    cmd.arg(dir.path());
    let started = std::time::Instant::now();
    let out = run(&mut cmd, CLI_TIMEOUT).fails();
    assert!(started.elapsed() < Duration::from_secs(15), "{out}");
    assert!(out.stderr.contains("PostgreSQL"), "{out}");
    assert!(!out.stderr.contains("s3cret"), "the password leaked: {out}");
}
