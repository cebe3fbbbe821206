//! The SQLite back end against the conformance suite, plus what only a file
//! can show: permissions, persistence across reopen, concurrency between
//! connections, and consistency after the writing process is killed.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hallmark_core::{Confidence, EntrySpec, RuntimeSource, SpiffeId, Workload, WorkloadState};
use hallmark_store::prelude::*;
use hallmark_store::{
    conformance, AgentRecord, AuthorityKind, AuthorityRecord, EntryFilter, InventoryReport,
    JoinToken, SnapshotPage, SqliteStore, Store, StoreError, WorkloadEvent, WorkloadEventKind,
    WorkloadFilter,
};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

fn spec(name: &str, selectors: &[&str]) -> EntrySpec {
    hallmark_store::conformance::example_spec(name, selectors)
}

#[tokio::test]
async fn conformance_in_memory() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn conformance_on_file_including_non_empty_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let store = SqliteStore::open(&path).await.unwrap();
    conformance::run_all(&store).await;
    // A second run finds the first run's leftovers (tokens, revision) and
    // must not be confused by them.
    conformance::run_all(&store).await;
    store.close().await;
    let store = SqliteStore::open(&path).await.unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn conformance_through_a_trait_object() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    conformance::run_all(store.as_ref()).await;
}

#[tokio::test]
async fn creates_private_directory_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("data")
        .join("hallmark")
        .join("store.sqlite3");
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
    // A write creates the WAL; SQLite gives it the database file's mode.
    store
        .create_entry(&spec("web", &["unix:uid:1"]), 1)
        .await
        .unwrap();
    let wal = sidecar(&path, "-wal");
    assert!(wal.exists(), "WAL journal expected at {}", wal.display());
    assert_eq!(mode(&wal), 0o600);
    store.close().await;
}

#[tokio::test]
async fn existing_directory_mode_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let store = SqliteStore::open(&dir.path().join("store.sqlite3"))
        .await
        .unwrap();
    assert_eq!(mode(dir.path()), 0o755);
    store.close().await;
}

#[tokio::test]
async fn reopen_tightens_a_loosened_file_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .create_entry(&spec("web", &["unix:uid:1"]), 1)
        .await
        .unwrap();
    store.close().await;

    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    // A WAL left by an earlier run gets the same treatment. It may hold
    // committed data, so it is opened without truncating.
    let wal = sidecar(&path, "-wal");
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&wal)
        .unwrap();
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o664)).unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(
        store.count_entries().await.unwrap(),
        1,
        "data intact after the mode fix"
    );
    store.close().await;
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let agent_id = id("spiffe://example.org/hallmark/agent/node1");

    let store = SqliteStore::open(&path).await.unwrap();
    let web = store
        .create_entry(&spec("web", &["unix:uid:1", "unix:gid:2"]), 10)
        .await
        .unwrap();
    let api = store
        .create_entry(&spec("api", &["docker:label:app:api"]), 11)
        .await
        .unwrap();
    let agent = AgentRecord {
        spiffe_id: agent_id.clone(),
        serial: "0a1b".into(),
        expires_at: 900,
        attested_at: 100,
        last_seen: 150,
        banned: true,
    };
    store.upsert_agent(&agent).await.unwrap();
    let ca = AuthorityRecord {
        id: "ca-1".into(),
        kind: AuthorityKind::X509,
        state: "active".into(),
        alg: "ec-p256".into(),
        key_pkcs8: vec![0x30, 0x81, 0x87, 0x02, 0x01, 0x00],
        cert_der: vec![0x30, 0x82, 0x01, 0x00],
        chain_der: vec![vec![0x30, 0x01], vec![0x30, 0x02]],
        created_at: 5,
        not_after: 50_000,
    };
    store.put_authority(&ca).await.unwrap();
    for (hash, expires_at) in [("aa", 1000), ("bb", 1000)] {
        store
            .create_join_token(&JoinToken {
                token_hash: hash.repeat(32),
                agent_id: agent_id.clone(),
                expires_at,
            })
            .await
            .unwrap();
    }
    store
        .consume_join_token(&"bb".repeat(32), 500)
        .await
        .unwrap();
    let revision = store.revision().await.unwrap();
    store.close().await;
    // Closing folds the WAL into the main file, so that file alone is a
    // complete backup.
    let wal_len = fs::metadata(sidecar(&path, "-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal_len, 0, "WAL not checkpointed on close");

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get_entry(&web.id).await.unwrap(), Some(web.clone()));
    assert_eq!(
        store.list_entries(&EntryFilter::default()).await.unwrap(),
        vec![api, web]
    );
    assert_eq!(store.revision().await.unwrap(), revision);
    assert_eq!(store.get_agent(&agent_id).await.unwrap(), Some(agent));
    assert_eq!(
        store.list_authorities(AuthorityKind::X509).await.unwrap(),
        vec![ca]
    );
    assert!(store
        .list_authorities(AuthorityKind::Jwt)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .consume_join_token(&"aa".repeat(32), 600)
            .await
            .unwrap(),
        agent_id
    );
    assert!(matches!(
        store.consume_join_token(&"bb".repeat(32), 600).await,
        Err(StoreError::TokenUsed)
    ));
    store.close().await;
}

#[tokio::test]
async fn revision_strictly_increases_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let mut seen = vec![];
    let mut ids = vec![];
    for round in 0..3 {
        let store = SqliteStore::open(&path).await.unwrap();
        seen.push(store.revision().await.unwrap());
        for i in 0..3 {
            let e = store
                .create_entry(&spec(&format!("r{round}/w{i}"), &["unix:uid:1"]), i)
                .await
                .unwrap();
            seen.push(e.revision);
            seen.push(store.revision().await.unwrap());
            ids.push(e.id);
        }
        // Deleting everything must not reset the counter.
        while let Some(id) = ids.pop() {
            assert!(store.delete_entry(&id).await.unwrap());
            seen.push(store.revision().await.unwrap());
        }
        assert_eq!(store.count_entries().await.unwrap(), 0);
        store.close().await;
    }
    // Each reading is the one after it (revision after create equals the
    // entry's) or strictly below.
    for pair in seen.windows(2) {
        assert!(pair[0] <= pair[1], "revision went backwards: {seen:?}");
    }
    let distinct: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(*distinct.iter().next().unwrap(), 0);
    assert_eq!(
        *distinct.iter().last().unwrap(),
        18,
        "3 rounds x (3 creates + 3 deletes)"
    );
    assert_eq!(
        distinct.len(),
        19,
        "every change made a new revision: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_in_tasks_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("store.sqlite3"))
            .await
            .unwrap(),
    );
    let agent_id = id("spiffe://example.org/hallmark/agent/racer");
    for round in 0..10u32 {
        let hash = format!("{round:064x}");
        store
            .create_join_token(&JoinToken {
                token_hash: hash.clone(),
                agent_id: agent_id.clone(),
                expires_at: 1000,
            })
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, hash, barrier) = (store.clone(), hash.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.consume_join_token(&hash, 500).await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(got) => {
                    assert_eq!(got, agent_id);
                    wins += 1;
                }
                Err(StoreError::TokenUsed) => {}
                Err(e) => panic!("round {round}: a losing consumer must see TokenUsed, got {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one consumer must win");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creators_of_one_entry_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("store.sqlite3"))
            .await
            .unwrap(),
    );
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create_entry(&spec("same", &["unix:uid:1"]), i).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("a losing creator must see AlreadyExists, got {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.count_entries().await.unwrap(), 1);
    assert_eq!(
        store.revision().await.unwrap(),
        1,
        "refused creates must not bump the revision"
    );
    store.close().await;
}

/// Set in the child process of the kill test: the database it writes to.
const CRASH_CHILD_DB: &str = "HALLMARK_STORE_CRASH_CHILD_DB";
const CRASH_CHILD_ROUND: &str = "HALLMARK_STORE_CRASH_CHILD_ROUND";
const CRASH_TEST: &str = "kill_mid_write_leaves_a_consistent_store";
/// Upper bound on a child's life should its parent vanish without killing it.
const CRASH_CHILD_MAX: Duration = Duration::from_secs(120);

/// A child process creates (and sometimes deletes) entries in a tight loop
/// and is SIGKILLed at an arbitrary point, three times over on one file.
/// After each kill the store must open, parse every row, keep every change
/// the child reported as committed, and hold no partial entry.
#[test]
fn kill_mid_write_leaves_a_consistent_store() {
    if let Ok(db) = std::env::var(CRASH_CHILD_DB) {
        let round: u32 = std::env::var(CRASH_CHILD_ROUND).unwrap().parse().unwrap();
        crash_child(Path::new(&db), round);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.sqlite3");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Entry id -> still present, per the child's reports.
    let mut reported: BTreeMap<String, bool> = BTreeMap::new();
    let mut changes = 0_i64;
    for round in 0..3u32 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([CRASH_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_DB, &db)
            .env(CRASH_CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Vary the kill point between rounds.
        let target = 120 + 41 * round as usize;
        let mut created = 0;
        while created < target {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("round {round}: child exited after {created} entries"))
                .unwrap();
            created += record(&line, &mut reported, &mut changes);
        }
        // Let the child run on a little, a different while each round, so
        // the kill lands at different points of a transaction.
        std::thread::sleep(Duration::from_micros(900 * u64::from(round)));
        child.kill().unwrap();
        child.wait().unwrap();
        // Whatever the child reported before it died is committed too.
        for line in lines {
            record(&line.unwrap(), &mut reported, &mut changes);
        }
        let (revision, present) = rt.block_on(verify_after_kill(&db, round, &reported, changes));
        // Start the next round from what the file holds, so an unreported
        // change of this round is not counted against the next one. The check
        // itself created and deleted one entry.
        changes = revision + 2;
        for (id, live) in reported.iter_mut() {
            *live = present.contains(id);
        }
        for id in present {
            reported.insert(id, true);
        }
    }
}

/// Tracks one line of the child's report; returns 1 for a creation.
fn record(line: &str, reported: &mut BTreeMap<String, bool>, changes: &mut i64) -> usize {
    // The test harness prints `test <name> ... ` without a newline before
    // the child's first report, so a report may start mid-line.
    let Some(at) = line.find("crash-child ") else {
        return 0;
    };
    let line = &line[at..];
    if let Some(id) = line.strip_prefix("crash-child created ") {
        reported.insert(id.to_string(), true);
        *changes += 1;
        1
    } else if let Some(id) = line.strip_prefix("crash-child deleted ") {
        reported.insert(id.to_string(), false);
        *changes += 1;
        0
    } else {
        0
    }
}

fn crash_child(db: &Path, round: u32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(db).await.unwrap();
        let started = Instant::now();
        let mut live = Vec::new();
        let mut i = 0_i64;
        while started.elapsed() < CRASH_CHILD_MAX {
            let s = spec(
                &format!("crash/r{round}/w{i}"),
                &[
                    "unix:uid:1000",
                    &format!("unix:gid:{i}"),
                    &format!("docker:label:round:{round}"),
                ],
            );
            let e = store.create_entry(&s, i).await.unwrap();
            // Printed only after commit returned: the parent may rely on it.
            println!("crash-child created {}", e.id);
            live.push(e.id);
            if i % 4 == 3 {
                let victim = live.remove(0);
                assert!(store.delete_entry(&victim).await.unwrap());
                println!("crash-child deleted {victim}");
            }
            i += 1;
        }
    });
}

/// Returns the revision and the entry ids found after the kill.
async fn verify_after_kill(
    db: &Path,
    round: u32,
    reported: &BTreeMap<String, bool>,
    changes: i64,
) -> (i64, BTreeSet<String>) {
    let store = SqliteStore::open(db)
        .await
        .unwrap_or_else(|e| panic!("round {round}: store does not open after kill: {e}"));
    let entries = store
        .list_entries(&EntryFilter::default())
        .await
        .unwrap_or_else(|e| panic!("round {round}: a row does not parse after kill: {e}"));
    let revision = store.revision().await.unwrap();
    assert!(
        revision >= entries.len() as i64,
        "round {round}: revision {revision} below entry count {}",
        entries.len()
    );
    // At most one change can have committed without being reported.
    assert!(
        revision >= changes && revision <= changes + 1,
        "round {round}: revision {revision}, {changes} changes reported"
    );

    // Every entry is whole: its three selectors are in the JSON and in the
    // selector table, and nothing is left of deleted ones.
    let mut conn =
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(db).read_only(true))
            .await
            .unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(integrity, "ok", "round {round}");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT entry_id, selector FROM entry_selectors")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    let mut by_entry: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (entry_id, selector) in rows {
        by_entry.entry(entry_id).or_default().insert(selector);
    }
    let present: BTreeSet<String> = entries.iter().map(|e| e.id.to_string()).collect();
    for e in &entries {
        assert_eq!(
            e.spec.selectors.len(),
            3,
            "round {round}: entry {} lost selectors",
            e.id
        );
        let want: BTreeSet<String> = e.spec.selectors.iter().map(ToString::to_string).collect();
        assert_eq!(
            by_entry.get(e.id.as_str()),
            Some(&want),
            "round {round}: selector rows of {}",
            e.id
        );
    }
    let orphans: Vec<&String> = by_entry.keys().filter(|k| !present.contains(*k)).collect();
    assert!(
        orphans.is_empty(),
        "round {round}: selector rows without an entry: {orphans:?}"
    );

    // Committed-and-reported changes are all there; at most one unreported
    // change separates the file from the report.
    let expected: BTreeSet<String> = reported
        .iter()
        .filter(|(_, live)| **live)
        .map(|(k, _)| k.clone())
        .collect();
    let differing: Vec<&String> = expected.symmetric_difference(&present).collect();
    assert!(
        differing.len() <= 1,
        "round {round}: entries differ from the child's report: {differing:?}"
    );
    for id in &differing {
        // An unreported creation is fine; an unreported deletion must be of
        // a reported entry, and a reported-deleted entry must stay deleted.
        assert!(
            reported.get(*id) != Some(&false),
            "round {round}: entry {id} was reported deleted but is present"
        );
    }

    // And it keeps working.
    let e = store
        .create_entry(&spec(&format!("after/r{round}"), &["unix:uid:7"]), 0)
        .await
        .unwrap();
    assert!(
        e.revision > revision,
        "round {round}: revision must move on after reopen"
    );
    assert!(store.delete_entry(&e.id).await.unwrap());
    store.close().await;
    (revision, present)
}

/// Set in the child process of the inventory kill test.
const INVENTORY_CHILD_DB: &str = "HALLMARK_STORE_INVENTORY_CHILD_DB";
const INVENTORY_TEST: &str = "kill_mid_report_leaves_the_old_or_the_new_inventory";
/// Workloads (and events) per report in the inventory kill test.
const REPORT_SIZE: usize = 60;

fn inventory_agent() -> SpiffeId {
    id("spiffe://example.org/hallmark/agent/crash")
}

/// Report `generation`: every workload relabelled `gen=<generation>`, one
/// event per workload, and the generation as the dropped-event count.
fn generation_report(generation: u64) -> InventoryReport {
    let workloads: Vec<Workload> = (0..REPORT_SIZE)
        .map(|i| {
            let mut w = Workload::partial(&format!("{i:064x}"), RuntimeSource::Docker, "");
            w.confidence = Confidence::Full;
            w.state = WorkloadState::Running;
            w.labels.insert("gen".into(), generation.to_string());
            w
        })
        .collect();
    InventoryReport {
        agent_id: inventory_agent(),
        context_name: "crash".into(),
        events: workloads
            .iter()
            .map(|w| WorkloadEvent {
                kind: WorkloadEventKind::Updated,
                at_ms: i64::try_from(generation).unwrap(),
                workload: w.clone(),
            })
            .collect(),
        snapshot: Some(SnapshotPage {
            snapshot_id: generation + 1,
            page: 0,
            last_page: true,
            workloads,
        }),
        runtime: None,
        dropped_events: generation,
    }
}

/// A child process applies inventory reports in a tight loop and is
/// SIGKILLed at an arbitrary point, three times over on one file. After each
/// kill every workload, the event history and the agent status must all be
/// those of one report: the last one the child saw committed, or the one
/// after it.
#[test]
fn kill_mid_report_leaves_the_old_or_the_new_inventory() {
    if let Ok(db) = std::env::var(INVENTORY_CHILD_DB) {
        inventory_child(Path::new(&db));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("inventory.sqlite3");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..3u32 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([INVENTORY_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(INVENTORY_CHILD_DB, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = 20 + 7 * round;
        let mut applied = None;
        let mut reports = 0;
        while reports < target {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("round {round}: child exited after {reports} reports"))
                .unwrap();
            if let Some(g) = child_generation(&line) {
                applied = Some(g);
                reports += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(700 * u64::from(round)));
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines {
            if let Some(g) = child_generation(&line.unwrap()) {
                applied = Some(g);
            }
        }
        let applied = applied.unwrap();
        rt.block_on(verify_inventory_after_kill(&db, round, applied));
    }
}

fn child_generation(line: &str) -> Option<u64> {
    let at = line.find("inventory-child applied ")?;
    line[at..]
        .strip_prefix("inventory-child applied ")?
        .trim()
        .parse()
        .ok()
}

fn inventory_child(db: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(db).await.unwrap();
        // Continue from what the file holds, so generations keep rising
        // across rounds.
        let mut generation = store
            .agent_inventory(&inventory_agent())
            .await
            .unwrap()
            .map_or(0, |i| i.dropped_events + 1);
        let started = Instant::now();
        while started.elapsed() < CRASH_CHILD_MAX {
            store
                .apply_inventory(&generation_report(generation), 1_000)
                .await
                .unwrap();
            // Printed only after the commit returned.
            println!("inventory-child applied {generation}");
            generation += 1;
        }
    });
}

async fn verify_inventory_after_kill(db: &Path, round: u32, applied: u64) {
    let store = SqliteStore::open(db)
        .await
        .unwrap_or_else(|e| panic!("round {round}: store does not open after kill: {e}"));
    let status = store
        .agent_inventory(&inventory_agent())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("round {round}: agent status lost"));
    let generation = status.dropped_events;
    assert!(
        generation == applied || generation == applied + 1,
        "round {round}: the store holds report {generation}, the child last committed {applied}"
    );
    let workloads = store
        .list_workloads(&WorkloadFilter::default(), 1_000, Duration::from_secs(3600))
        .await
        .unwrap_or_else(|e| panic!("round {round}: a workload row does not parse after kill: {e}"));
    assert_eq!(workloads.len(), REPORT_SIZE, "round {round}");
    let want = generation.to_string();
    for w in &workloads {
        assert_eq!(
            w.workload.labels.get("gen"),
            Some(&want),
            "round {round}: workload {} is from another report than the agent status",
            w.workload.container_id
        );
    }
    // Every report added one event per workload; none is half there.
    for i in [0, REPORT_SIZE / 2, REPORT_SIZE - 1] {
        let events = store.workload_events(&format!("{i:064x}")).await.unwrap();
        assert_eq!(
            events.len() as u64,
            generation + 1,
            "round {round}: events of workload {i} after report {generation}"
        );
    }
    store.close().await;
}

/// One batch of 1 000 attributed flows (with their evidence) on a file
/// store with its durable settings: the figure the ingest path builds on.
#[tokio::test]
async fn a_batch_of_a_thousand_flows_writes_quickly() {
    use hallmark_flows::{
        Endpoint, Evidence, EvidenceKind, Flow, Initiator, Owner, OwnershipKey, Protocol, Reporter,
        StoredFlow, WorkloadEndpoint,
    };
    use hallmark_store::FlowWrite;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite3"))
        .await
        .unwrap();
    let t = 1_700_000_000_000;
    let end = |n: usize| {
        Endpoint::Workload(WorkloadEndpoint {
            context: "prod".into(),
            node: format!("n{}", n % 4),
            container_id: format!("{n:064x}"),
            name: format!("svc{}", n % 10),
            image: "shop/svc:1".into(),
            namespace: "shop".into(),
            labels: [("app".to_string(), format!("svc{}", n % 10))].into(),
            spiffe_ids: vec![format!("spiffe://example.org/ns/shop/sa/svc{}", n % 10)],
            ..WorkloadEndpoint::default()
        })
    };
    let batch = |round: i64| {
        let flows: Vec<StoredFlow> = (0..1_000usize)
            .map(|i| {
                let start = t + round * 60_000 + i as i64 * 50;
                let flow = Flow {
                    start_ms: start,
                    end_ms: start + 800,
                    protocol: Protocol::Tcp,
                    src: format!("10.0.{}.{}:{}", i % 50, i % 200, 30_000 + i)
                        .parse()
                        .unwrap(),
                    dst: format!("10.1.0.{}:443", i % 40).parse().unwrap(),
                    initiator: Initiator::Source,
                    bytes_sent: 1_000,
                    packets_sent: 5,
                    bytes_received: 4_000,
                    packets_received: 6,
                    outcome: None,
                    retransmits: 0,
                    rtt_us: None,
                    reporter: Reporter::File("bench".into()),
                    local: None,
                    enforced: None,
                };
                StoredFlow::new(flow, end(i % 50), end(50 + i % 40), start + 1_000)
            })
            .collect();
        let evidence = (0..100u8)
            .map(|i| Evidence {
                key: OwnershipKey::ip([10, 0, 0, i].into()),
                owner: Owner::Node {
                    context: "prod".into(),
                    node: format!("n{i}"),
                },
                at_ms: t + round * 60_000,
                kind: EvidenceKind::Heartbeat,
            })
            .collect();
        FlowWrite {
            server_id: "s1".into(),
            now_ms: t + round * 60_000,
            evidence,
            flows,
            ..FlowWrite::default()
        }
    };
    // The first write creates the dictionary rows; later ones find them.
    store.write_flows(&batch(0)).await.unwrap();
    let mut times = Vec::new();
    for round in 1..=5 {
        let w = batch(round);
        let started = Instant::now();
        let written = store.write_flows(&w).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(written.flow_ids.len(), 1_000);
    }
    times.sort();
    println!("write of 1000 flows + 100 evidence on SQLite (file, synchronous=FULL): median {:?}, all {times:?}", times[2]);
    assert!(
        times[2] < Duration::from_secs(2),
        "a batch of 1000 flows took {:?}",
        times[2]
    );
    assert_eq!(store.flow_counts().await.unwrap().flows(), 6_000);
}

/// The worst case of merging: every flow of a batch of 1 000 is an
/// interim record of a stored connection, so each rewrites its row and
/// moves its graph contribution.
#[tokio::test]
async fn a_batch_of_a_thousand_interim_records_merges_quickly() {
    use hallmark_flows::{
        Endpoint, Flow, Initiator, Protocol, Reporter, StoredFlow, WorkloadEndpoint,
    };
    use hallmark_store::FlowWrite;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite3"))
        .await
        .unwrap();
    let t = 1_700_000_000_000;
    let end = |n: usize| {
        Endpoint::Workload(WorkloadEndpoint {
            context: "prod".into(),
            node: "n1".into(),
            container_id: format!("{n:064x}"),
            name: format!("svc{}", n % 10),
            spiffe_ids: vec![format!("spiffe://example.org/svc{}", n % 10)],
            ..WorkloadEndpoint::default()
        })
    };
    let batch = |round: u64| {
        let flows: Vec<StoredFlow> = (0..1_000usize)
            .map(|i| {
                let start = t + i as i64 * 50;
                let flow = Flow {
                    start_ms: start,
                    end_ms: start + 30_000 * (round as i64 + 1),
                    protocol: Protocol::Tcp,
                    src: format!("10.0.{}.{}:{}", i % 50, i % 200, 30_000 + i)
                        .parse()
                        .unwrap(),
                    dst: format!("10.1.0.{}:443", i % 40).parse().unwrap(),
                    initiator: Initiator::Source,
                    bytes_sent: 1_000 * (round + 1),
                    packets_sent: 5 * (round + 1),
                    bytes_received: 4_000,
                    packets_received: 6,
                    outcome: None,
                    retransmits: round,
                    rtt_us: Some(300),
                    reporter: Reporter::Agent(format!("n{}", i % 4)),
                    local: None,
                    enforced: None,
                };
                StoredFlow::new(flow, end(i % 50), end(50 + i % 40), start + 1_000)
            })
            .collect();
        FlowWrite {
            server_id: "s1".into(),
            now_ms: t,
            flows,
            ..FlowWrite::default()
        }
    };
    let first = store.write_flows(&batch(0)).await.unwrap();
    assert_eq!(first.merged, 0);
    let mut times = Vec::new();
    for round in 1..=5 {
        let w = batch(round);
        let started = Instant::now();
        let written = store.write_flows(&w).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(written.merged, 1_000);
        assert_eq!(
            written.flow_ids, first.flow_ids,
            "every record found its row"
        );
    }
    times.sort();
    println!("write of 1000 interim records merged into stored rows on SQLite (file, synchronous=FULL): median {:?}, all {times:?}", times[2]);
    assert!(
        times[2] < Duration::from_secs(2),
        "a batch of 1000 merged records took {:?}",
        times[2]
    );
    assert_eq!(store.flow_counts().await.unwrap().flows(), 1_000);
    let graph = store.graph(t, Some(t + 3_600_000)).await.unwrap();
    assert_eq!(graph.iter().map(|g| g.flows).sum::<u64>(), 1_000);
    assert_eq!(
        graph.iter().map(|g| g.bytes).sum::<u64>(),
        1_000 * (6_000 + 4_000),
        "the graph holds the last records' bytes"
    );
    assert_eq!(
        store
            .graph_from_flows(t, Some(t + 3_600_000))
            .await
            .unwrap(),
        graph
    );
}

const FLOWS_CHILD_DB: &str = "HALLMARK_STORE_FLOWS_CHILD_DB";
const FLOWS_TEST: &str = "kill_mid_flow_batch_loses_no_acknowledged_batch";
const FLOW_BATCH: usize = 200;

/// A child process writes flow batches in a tight loop, printing each one
/// after its write returned (the acknowledgement), and is SIGKILLed at an
/// arbitrary point, three times over on one file. Every acknowledged batch
/// must be there whole, the one in flight whole or not at all, and the
/// graph, evidence and pending rows must agree with the flows.
#[test]
fn kill_mid_flow_batch_loses_no_acknowledged_batch() {
    if let Ok(db) = std::env::var(FLOWS_CHILD_DB) {
        flows_child(Path::new(&db));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("flows.sqlite3");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..3u32 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([FLOWS_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(FLOWS_CHILD_DB, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = 10 + 3 * round;
        let mut acked = None;
        let mut seen = 0;
        while seen < target {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("round {round}: child exited after {seen} batches"))
                .unwrap();
            if let Some(b) = flows_child_batch(&line) {
                acked = Some(b);
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(900 * u64::from(round)));
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines {
            if let Some(b) = flows_child_batch(&line.unwrap()) {
                acked = Some(b);
            }
        }
        rt.block_on(verify_flows_after_kill(&db, round, acked.unwrap()));
    }
}

fn flows_child_batch(line: &str) -> Option<u64> {
    let at = line.find("flows-child acked ")?;
    line[at..]
        .strip_prefix("flows-child acked ")?
        .trim()
        .parse()
        .ok()
}

/// Batch `b`: its flows carry `b` in `bytes_sent`.
fn flow_batch(b: u64) -> hallmark_store::FlowWrite {
    use hallmark_flows::{
        Endpoint, Evidence, EvidenceKind, Flow, Initiator, Owner, OwnershipKey, Protocol, Reporter,
        StoredFlow, UnattributedReason,
    };
    let t = 1_700_000_000_000 + i64::try_from(b).unwrap() * 1_000;
    let flow = |i: usize| Flow {
        start_ms: t + i as i64,
        end_ms: t + i as i64 + 5,
        protocol: Protocol::Udp,
        src: format!("10.0.0.{}:5000", i % 250 + 1).parse().unwrap(),
        dst: "10.0.1.1:53".parse().unwrap(),
        initiator: Initiator::Unknown,
        bytes_sent: b,
        packets_sent: 1,
        bytes_received: 0,
        packets_received: 0,
        outcome: None,
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::File("crash".into()),
        local: None,
        enforced: None,
    };
    let node = |i: usize| Owner::Node {
        context: "prod".into(),
        node: format!("n{i}"),
    };
    hallmark_store::FlowWrite {
        server_id: "crash".into(),
        now_ms: t,
        evidence: (0..5)
            .map(|i| Evidence {
                key: OwnershipKey::ip([10, 0, 0, i as u8].into()),
                owner: node(i),
                at_ms: t,
                kind: EvidenceKind::Heartbeat,
            })
            .collect(),
        pending_add: vec![flow(0)],
        pending_done: Vec::new(),
        flows: (0..FLOW_BATCH)
            .map(|i| {
                let src = Endpoint::bare(&node(i % 7));
                let dst = Endpoint::Unattributed {
                    reason: UnattributedReason::NoOwner,
                };
                StoredFlow::new(flow(i), src, dst, t)
            })
            .collect(),
        ..hallmark_store::FlowWrite::default()
    }
}

fn flows_child(db: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(db).await.unwrap();
        // Continue after what the file holds.
        let mut b = store.flow_counts().await.unwrap().flows() / FLOW_BATCH as u64;
        let started = Instant::now();
        while started.elapsed() < CRASH_CHILD_MAX {
            store.write_flows(&flow_batch(b)).await.unwrap();
            // Printed only after the write returned.
            println!("flows-child acked {b}");
            b += 1;
        }
    });
}

async fn verify_flows_after_kill(db: &Path, round: u32, acked: u64) {
    use hallmark_flows::FlowQuery;
    let store = SqliteStore::open(db)
        .await
        .unwrap_or_else(|e| panic!("round {round}: store does not open after kill: {e}"));
    let counts = store.flow_counts().await.unwrap();
    let batches = counts.flows() / FLOW_BATCH as u64;
    assert_eq!(
        counts.flows() % FLOW_BATCH as u64,
        0,
        "round {round}: a batch is stored in part: {counts:?}"
    );
    assert!(
        batches == acked + 1 || batches == acked + 2,
        "round {round}: {batches} batches stored, batch {acked} was the last acknowledged"
    );
    assert_eq!(counts.evidence, 5 * batches, "round {round}: {counts:?}");
    assert_eq!(counts.pending, batches, "round {round}: {counts:?}");
    let all = store
        .list_flows(&FlowQuery::default())
        .await
        .unwrap_or_else(|e| panic!("round {round}: a flow row does not parse after kill: {e}"));
    let mut per_batch: BTreeMap<u64, usize> = BTreeMap::new();
    for f in &all {
        *per_batch.entry(f.flow.bytes_sent).or_default() += 1;
    }
    for b in 0..batches {
        assert_eq!(
            per_batch.get(&b),
            Some(&FLOW_BATCH),
            "round {round}: batch {b} is not whole"
        );
    }
    let graph = store.graph(0, None).await.unwrap();
    let in_graph: u64 = graph.iter().map(|g| g.flows).sum();
    assert_eq!(
        in_graph,
        counts.flows(),
        "round {round}: the graph counts other flows than are stored"
    );
    store.close().await;
}

/// A flow held back before flows had retransmits, RTTs and units is still
/// taken up after the upgrade: its pending row is the old JSON.
#[tokio::test]
async fn pending_flows_stored_before_the_capture_fields_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    let store = SqliteStore::open(&db).await.unwrap();
    let old = r#"{"start_ms":1700000000000,"end_ms":1700000000040,"protocol":"tcp","src":"10.0.0.1:40000","dst":"10.0.0.2:443","initiator":"source","bytes_sent":512,"packets_sent":4,"reporter":{"kind":"agent","name":"n1"},"local":{"side":"source","owner":{"kind":"node","context":"prod","node":"n1"}}}"#;
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&db))
        .await
        .unwrap();
    sqlx::query("INSERT INTO flow_pending (server_id, received_ms, flow) VALUES ('s1', 1, $1)")
        .bind(old)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let pending = store.pending_flows("s1", 2, 0).await.unwrap();
    assert_eq!(pending.len(), 1);
    let f = &pending[0].flow;
    assert_eq!((f.bytes_sent, f.retransmits, f.rtt_us), (512, 0, None));
    assert_eq!(f.local.as_ref().unwrap().unit, "");
}

/// A store written before the hourly rollup (schema version 7) answers the
/// same graph after the upgrade: migration 8 sums the minute buckets it
/// holds by the hour.
#[tokio::test]
async fn the_hourly_rollup_is_filled_from_the_minutes_on_upgrade() {
    use hallmark_flows::{Endpoint, Flow, Initiator, Protocol, Reporter, StoredFlow};
    use hallmark_store::FlowWrite;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    let store = SqliteStore::open(&db).await.unwrap();
    let hour = 3_600_000;
    let t = 472_222 * hour;
    // 300 flows over three and a half hours, between a few nodes.
    let flows: Vec<StoredFlow> = (0..300i64)
        .map(|i| {
            let start = t + 10 * 60_000 + i * 41_999;
            let flow = Flow {
                start_ms: start,
                end_ms: start + i % 7 * 10_000,
                protocol: if i % 5 == 0 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                src: format!("10.0.0.{}:40000", i % 3 + 1).parse().unwrap(),
                dst: format!("10.0.1.1:{}", 443 + i % 2).parse().unwrap(),
                initiator: Initiator::Source,
                bytes_sent: 100 + i as u64,
                packets_sent: 1,
                bytes_received: 7,
                packets_received: 1,
                outcome: None,
                retransmits: 0,
                rtt_us: None,
                reporter: Reporter::File("upgrade".into()),
                local: None,
                enforced: None,
            };
            let node = |n: i64| Endpoint::Node {
                context: "prod".into(),
                node: format!("n{n}"),
                spiffe_id: String::new(),
                unit: String::new(),
            };
            StoredFlow::new(flow, node(i % 3), node(9), start)
        })
        .collect();
    for part in flows.chunks(70) {
        store
            .write_flows(&FlowWrite {
                server_id: "s1".into(),
                now_ms: t,
                flows: part.to_vec(),
                ..FlowWrite::default()
            })
            .await
            .unwrap();
    }
    let windows = [
        (t + 17 * 60_000 + 5, Some(t + 3 * hour + 20 * 60_000)),
        (t, Some(t + 4 * hour)),
        (t + hour, Some(t + 3 * hour)),
        (t + 30 * 60_000, None),
    ];
    let mut before = Vec::new();
    for (since, until) in windows {
        let g = store.graph(since, until).await.unwrap();
        assert_eq!(g, store.graph_from_flows(since, until).await.unwrap());
        assert!(!g.is_empty());
        before.push(g);
    }
    store.close().await;

    // Back to version 7: no hourly table, migration 8 not applied.
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&db))
        .await
        .unwrap();
    sqlx::query("DROP TABLE flow_graph_hourly")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 8")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let store = SqliteStore::open(&db).await.unwrap();
    for ((since, until), want) in windows.into_iter().zip(before) {
        assert_eq!(
            store.graph(since, until).await.unwrap(),
            want,
            "graph({since}, {until:?}) after the upgrade"
        );
    }
    store.close().await;
}
