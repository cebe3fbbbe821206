//! The PostgreSQL back end against the conformance suite, plus what only a
//! shared server can show: several store handles (standing in for several
//! Hallmark servers) on one database, racing each other.
//!
//! PostgreSQL is set up by `scripts/setup.d/20-postgres.sh` (once per test
//! binary); each test gets a database of its own, dropped at its end. When
//! the script fails, the tests fail with its output.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hallmark_core::{EntryId, EntrySpec, SpiffeId};
use hallmark_store::prelude::*;
use hallmark_store::{
    conformance, AgentRecord, EntryFilter, JoinToken, PostgresStore, Store, StoreError,
};
use sqlx::{Connection, PgConnection};

/// The server the setup script prepares, as the role it creates.
const SERVER: &str = "postgres://hallmark:hallmark@127.0.0.1:5432";
const SETUP_SCRIPT: &str = "scripts/setup.d/20-postgres.sh";

/// Runs the setup script the first time a test asks; later callers get the
/// same outcome.
fn setup() {
    static OUTCOME: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = OUTCOME.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let script = root.join(SETUP_SCRIPT);
        let out = Command::new(&script)
            .current_dir(&root)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\n{text}",
                script.display(),
                out.status
            ))
        }
    });
    if let Err(e) = outcome {
        panic!("PostgreSQL could not be set up for the tests: {e}");
    }
}

/// Runs `test` with the URL of a fresh, empty database and drops the
/// database afterwards, also when the test panics.
async fn with_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    setup();
    let name = format!(
        "hallmark_test_{}",
        EntryId::new_random().as_str().replace('-', "")
    );
    let mut admin = PgConnection::connect(&format!("{SERVER}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    // Spawned so that a panic comes back as a value and the database is
    // dropped before the panic goes on.
    let outcome = tokio::spawn(test(format!("{SERVER}/{name}"))).await;
    // FORCE ends the sessions of pools the test left open (the setup script
    // grants the role pg_signal_backend, which an autovacuum worker on the
    // database needs). A worker starting at that instant can still make one
    // attempt fail, so a few are made.
    let drop = format!("DROP DATABASE {name} WITH (FORCE)");
    let mut attempt = 0;
    while let Err(e) = sqlx::query(&drop).execute(&mut admin).await {
        attempt += 1;
        assert!(attempt < 5, "{drop}: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

fn spec(name: &str, selectors: &[&str]) -> EntrySpec {
    hallmark_store::conformance::example_spec(name, selectors)
}

/// A port nothing listens on: bound once by the OS, then released.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn conformance_on_a_fresh_database_non_empty_and_reconnected() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url).await.unwrap();
        conformance::run_all(&store).await;
        // A second run finds the first run's leftovers (tokens, revision)
        // and must not be confused by them.
        conformance::run_all(&store).await;
        store.close().await;
        // Connecting again finds the schema in place.
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.unwrap());
        conformance::run_all(store.as_ref()).await;
    })
    .await;
}

#[tokio::test]
async fn two_servers_see_each_others_writes_and_share_single_use_tokens() {
    with_database(|url| async move {
        // Two servers starting together both apply the migrations.
        let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
        let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));

        let e = a
            .create_entry(&spec("web", &["unix:uid:1000"]), 10)
            .await
            .unwrap();
        assert_eq!(b.get_entry(&e.id).await.unwrap(), Some(e.clone()));
        assert_eq!(b.revision().await.unwrap(), e.revision);
        let agent = AgentRecord {
            spiffe_id: id("spiffe://example.org/hallmark/agent/node1"),
            serial: "01".into(),
            expires_at: 100,
            attested_at: 1,
            last_seen: 1,
            banned: false,
        };
        b.upsert_agent(&agent).await.unwrap();
        assert_eq!(
            a.get_agent(&agent.spiffe_id).await.unwrap(),
            Some(agent.clone())
        );
        assert!(b.delete_entry(&e.id).await.unwrap());
        assert_eq!(a.get_entry(&e.id).await.unwrap(), None);
        assert!(a.revision().await.unwrap() > e.revision);

        // Each token is consumed by three tasks on each server at once.
        const TOKENS: u32 = 20;
        const PER_SERVER: usize = 3;
        for n in 0..TOKENS {
            a.create_join_token(&JoinToken {
                token_hash: format!("{n:064x}"),
                agent_id: id(&format!("spiffe://example.org/hallmark/agent/t{n}")),
                expires_at: 1_000,
            })
            .await
            .unwrap();
        }
        let mut tasks = Vec::new();
        for n in 0..TOKENS {
            for _ in 0..PER_SERVER {
                for store in [&a, &b] {
                    let store = Arc::clone(store);
                    tasks.push(tokio::spawn(async move {
                        (n, store.consume_join_token(&format!("{n:064x}"), 500).await)
                    }));
                }
            }
        }
        let mut wins = vec![0; TOKENS as usize];
        for task in tasks {
            let (n, outcome) = task.await.unwrap();
            match outcome {
                Ok(agent_id) => {
                    assert_eq!(
                        agent_id,
                        id(&format!("spiffe://example.org/hallmark/agent/t{n}"))
                    );
                    wins[n as usize] += 1;
                }
                Err(StoreError::TokenUsed) => {}
                Err(e) => panic!("token {n}: unexpected error {e:?}"),
            }
        }
        assert_eq!(
            wins,
            vec![1; TOKENS as usize],
            "every token must be consumed exactly once"
        );
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_entry_writers_on_two_servers() {
    with_database(|url| async move {
        let a = Arc::new(PostgresStore::connect(&url).await.unwrap());
        let b = Arc::new(PostgresStore::connect(&url).await.unwrap());
        let start = a.revision().await.unwrap();

        // Distinct entries from both servers at once: every creation gets
        // its own revision, and the counter ends up moved by exactly as
        // many.
        const WRITERS: usize = 24;
        let mut tasks = Vec::new();
        for i in 0..WRITERS {
            let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
            tasks.push(tokio::spawn(async move {
                store
                    .create_entry(&spec(&format!("w{i}"), &["unix:uid:1"]), 1)
                    .await
                    .unwrap()
            }));
        }
        let mut revisions = Vec::new();
        for task in tasks {
            revisions.push(task.await.unwrap().revision);
        }
        revisions.sort_unstable();
        let want: Vec<i64> = (start + 1..=start + WRITERS as i64).collect();
        assert_eq!(revisions, want, "revisions must be distinct and gap-free");
        assert_eq!(b.revision().await.unwrap(), start + WRITERS as i64);

        // The same entry from both servers at once: exactly one is created,
        // the others are told which entry exists.
        let same = spec("contested", &["unix:uid:2", "unix:gid:3"]);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let same = same.clone();
            tasks.push(tokio::spawn(
                async move { store.create_entry(&same, 2).await },
            ));
        }
        let mut created = Vec::new();
        let mut refused = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(e) => created.push(e),
                Err(StoreError::AlreadyExists(msg)) => refused.push(msg),
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(created.len(), 1, "exactly one creation wins");
        for msg in &refused {
            assert!(msg.contains(created[0].id.as_str()), "{msg}");
        }
        assert_eq!(
            a.revision().await.unwrap(),
            start + WRITERS as i64 + 1,
            "refused creations must not bump the revision"
        );
        let listed = b
            .list_entries(&EntryFilter {
                spiffe_id: Some(same.spiffe_id.clone()),
                ..EntryFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(listed, created);
    })
    .await;
}

#[tokio::test]
async fn connect_to_a_closed_port_fails_fast_and_clearly() {
    let port = closed_port();
    let url = format!("postgres://hallmark:s3cret@127.0.0.1:{port}/hallmark");
    let started = Instant::now();
    let err = PostgresStore::connect(&url).await.unwrap_err();
    let took = started.elapsed();
    let msg = err.to_string();
    assert!(took < Duration::from_secs(3), "took {took:?}: {msg}");
    assert!(matches!(err, StoreError::Connect(_)), "{msg}");
    assert!(
        msg.contains(&format!(
            "postgres://hallmark:***@127.0.0.1:{port}/hallmark"
        )),
        "must name the URL with the password masked: {msg}"
    );
    assert!(
        msg.contains("is PostgreSQL running? check the URL"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "password leaked: {msg}");
}

#[tokio::test]
async fn a_refused_login_names_the_url_not_the_password() {
    setup();
    let url = "postgres://hallmark:wrong-s3cret@127.0.0.1:5432/postgres";
    let err = PostgresStore::connect(url).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Connect(_)), "{msg}");
    assert!(
        msg.contains("postgres://hallmark:***@127.0.0.1:5432/postgres"),
        "{msg}"
    );
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(!msg.contains("wrong-s3cret"), "password leaked: {msg}");
}

#[tokio::test]
async fn entry_changes_are_announced_to_other_servers() {
    with_database(|url| async move {
        let a = PostgresStore::connect(&url).await.unwrap();
        let b = PostgresStore::connect(&url).await.unwrap();
        assert!(a.shared_between_servers());
        let mut notes = b
            .change_notifications()
            .expect("PostgreSQL announces changes");
        // The first mark says the listener is up.
        tokio::time::timeout(Duration::from_secs(10), notes.changed())
            .await
            .expect("the listener connects")
            .unwrap();
        notes.borrow_and_update();

        let created = a
            .create_entry(&spec("announced", &["unix:uid:7"]), 1)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), notes.changed())
            .await
            .expect("a creation on another handle is announced")
            .unwrap();
        notes.borrow_and_update();

        a.delete_entry(&created.id).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), notes.changed())
            .await
            .expect("a deletion is announced")
            .unwrap();

        // A refused write (duplicate) commits nothing and announces nothing.
        notes.borrow_and_update();
        a.create_entry(&spec("dup", &["unix:uid:8"]), 1)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), notes.changed())
            .await
            .unwrap()
            .unwrap();
        notes.borrow_and_update();
        assert!(a
            .create_entry(&spec("dup", &["unix:uid:8"]), 1)
            .await
            .is_err());
        assert!(
            tokio::time::timeout(Duration::from_millis(500), notes.changed())
                .await
                .is_err(),
            "a rolled-back write must not be announced"
        );
    })
    .await;
}

/// Evidence written by several servers at once, tailed by id from another:
/// every row is seen exactly once and in id order, although the writers'
/// transactions take ids and commit in any interleaving.
#[tokio::test]
async fn evidence_tail_across_servers_misses_nothing() {
    use hallmark_flows::{Evidence, EvidenceKind, Owner, OwnershipKey};
    use hallmark_store::FlowWrite;

    with_database(|url| async move {
        let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
        let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4u32 {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            writers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..40u32 {
                    let evidence = (0..10u32)
                        .map(|i| Evidence {
                            key: OwnershipKey::ip(std::net::IpAddr::from([
                                10, w as u8, n as u8, i as u8,
                            ])),
                            owner: Owner::Node {
                                context: "prod".into(),
                                node: format!("n{w}"),
                            },
                            at_ms: 1_700_000_000_000 + i64::from(n),
                            kind: EvidenceKind::Heartbeat,
                        })
                        .collect();
                    let write = FlowWrite {
                        server_id: format!("server-{w}"),
                        now_ms: 1_700_000_000_000,
                        evidence,
                        ..FlowWrite::default()
                    };
                    ids.extend(store.write_flows(&write).await.unwrap().evidence_ids);
                }
                ids
            }));
        }
        let tail = {
            let (store, done) = (b.clone(), done.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut last = 0;
                loop {
                    // Read the flag first: a page read after it was set
                    // sees every write.
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let page = store.evidence_after(last, 0, 7).await.unwrap();
                    if let Some((id, _)) = page.last() {
                        last = *id;
                    }
                    let empty = page.is_empty();
                    seen.extend(page.into_iter().map(|(id, _)| id));
                    if finished && empty {
                        return seen;
                    }
                }
            })
        };
        let mut written = Vec::new();
        for w in writers {
            written.extend(w.await.unwrap());
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = tail.await.unwrap();
        assert_eq!(written.len(), 4 * 40 * 10);
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "the tail reads ids in increasing order"
        );
        written.sort_unstable();
        let missed: Vec<&i64> = written.iter().filter(|id| !seen.contains(id)).collect();
        assert!(
            missed.is_empty(),
            "the tail skipped evidence ids {missed:?}"
        );
        assert_eq!(seen, written, "the tail saw every row exactly once");
    })
    .await;
}

/// Servers writing batches that add to the same graph buckets and intern the
/// same endpoints at once: no write fails (no deadlock), and the graph adds
/// up to what was written.
#[tokio::test]
async fn concurrent_writers_add_to_the_same_graph_rows() {
    use hallmark_flows::{
        Endpoint, Flow, Initiator, Protocol, Reporter, StoredFlow, WorkloadEndpoint,
    };
    use hallmark_store::FlowWrite;

    with_database(|url| async move {
        let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
        let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
        // A whole minute.
        let t = 1_700_000_040_000;
        let end = |name: &str| {
            Endpoint::Workload(WorkloadEndpoint {
                context: "prod".into(),
                node: "n1".into(),
                container_id: format!("{name:0>64}"),
                name: name.into(),
                spiffe_ids: vec![format!("spiffe://example.org/{name}")],
                ..WorkloadEndpoint::default()
            })
        };
        let mut tasks = Vec::new();
        for w in 0..4i64 {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            let names: Vec<Endpoint> = ["web", "api", "db", "cache"]
                .iter()
                .map(|n| end(n))
                .collect();
            tasks.push(tokio::spawn(async move {
                for n in 0..15i64 {
                    // Each task walks the endpoints in its own order.
                    let flows: Vec<StoredFlow> = (0..40i64)
                        .map(|i| {
                            let k = usize::try_from((i + w * 7 + n) % 4).unwrap();
                            let start = t + (i % 3) * 60_000 + w;
                            let flow = Flow {
                                start_ms: start,
                                end_ms: start + 10,
                                protocol: Protocol::Tcp,
                                src: "10.0.0.1:40000".parse().unwrap(),
                                dst: "10.0.0.2:443".parse().unwrap(),
                                initiator: Initiator::Source,
                                bytes_sent: 10,
                                packets_sent: 1,
                                bytes_received: 5,
                                packets_received: 1,
                                outcome: None,
                                retransmits: 0,
                                rtt_us: None,
                                reporter: Reporter::File("f".into()),
                                local: None,
                                enforced: None,
                            };
                            StoredFlow::new(
                                flow,
                                names[k].clone(),
                                names[(k + 1) % 4].clone(),
                                start,
                            )
                        })
                        .collect();
                    let write = FlowWrite {
                        server_id: format!("server-{w}"),
                        now_ms: t,
                        flows,
                        ..FlowWrite::default()
                    };
                    store.write_flows(&write).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let graph = a.graph(t, Some(t + 3_600_000)).await.unwrap();
        let flows: u64 = graph.iter().map(|g| g.flows).sum();
        let bytes: u64 = graph.iter().map(|g| g.bytes).sum();
        assert_eq!(flows, 4 * 15 * 40);
        assert_eq!(bytes, 4 * 15 * 40 * 15);
        assert_eq!(graph.len(), 4, "four edges between four endpoints");
        assert_eq!(
            b.graph_from_flows(t, Some(t + 3_600_000)).await.unwrap(),
            graph
        );
        // Whole hours, summed by the hour, hold the same.
        let hour = t - t % 3_600_000;
        assert_eq!(b.graph(hour, Some(hour + 7_200_000)).await.unwrap(), graph);
    })
    .await;
}

/// Servers sharing one database each store a report of the same
/// connections at the same time (the two ends' agents reporting to two
/// servers, interim records in between): every connection is one row, and
/// the graph counts it once.
#[tokio::test]
async fn reports_of_one_connection_written_by_several_servers_make_one_row() {
    use hallmark_flows::{
        Endpoint, Flow, FlowQuery, Initiator, Protocol, Reporter, StoredFlow, TcpOutcome,
        UnattributedReason, WorkloadEndpoint,
    };
    use hallmark_store::FlowWrite;

    const CONNECTIONS: u16 = 30;
    with_database(|url| async move {
        let mut stores = Vec::new();
        for _ in 0..3 {
            stores.push(Arc::new(PostgresStore::connect(&url).await.unwrap()));
        }
        let t = 1_700_000_040_000;
        let workload = |name: &str| {
            Endpoint::Workload(WorkloadEndpoint {
                context: "prod".into(),
                node: "n1".into(),
                container_id: format!("{name:0>64}"),
                name: name.into(),
                spiffe_ids: vec![format!("spiffe://example.org/{name}")],
                ..WorkloadEndpoint::default()
            })
        };
        let mut tasks = Vec::new();
        for (w, store) in stores.iter().enumerate() {
            let store = store.clone();
            let w = i64::try_from(w).unwrap();
            // Server 0 knows the clients, 1 the servers, 2 neither.
            let (src, dst) = match w {
                0 => (
                    workload("web"),
                    Endpoint::Unattributed {
                        reason: UnattributedReason::NoOwner,
                    },
                ),
                1 => (
                    Endpoint::Unattributed {
                        reason: UnattributedReason::NoOwner,
                    },
                    workload("db"),
                ),
                _ => (
                    Endpoint::Unattributed {
                        reason: UnattributedReason::NoOwner,
                    },
                    Endpoint::Unattributed {
                        reason: UnattributedReason::NoOwner,
                    },
                ),
            };
            tasks.push(tokio::spawn(async move {
                for round in 0..4u64 {
                    let flows: Vec<StoredFlow> = (0..CONNECTIONS)
                        .map(|c| {
                            let start = t + i64::from(c) * 1_000 + w * 3;
                            let flow = Flow {
                                start_ms: start,
                                end_ms: start + 500,
                                protocol: Protocol::Tcp,
                                src: format!("10.0.0.1:{}", 40_000 + c).parse().unwrap(),
                                dst: "10.0.0.2:5432".parse().unwrap(),
                                initiator: Initiator::Source,
                                bytes_sent: 100 * (round + 1),
                                packets_sent: round + 1,
                                bytes_received: 10,
                                packets_received: 1,
                                outcome: Some(TcpOutcome::Established),
                                retransmits: 0,
                                rtt_us: None,
                                reporter: Reporter::Agent(format!("n{w}")),
                                local: None,
                                enforced: None,
                            };
                            StoredFlow::new(flow, src.clone(), dst.clone(), start)
                        })
                        .collect();
                    let write = FlowWrite {
                        server_id: format!("server-{w}"),
                        now_ms: t,
                        flows,
                        ..FlowWrite::default()
                    };
                    store.write_flows(&write).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let q = FlowQuery {
            since_ms: t - 60_000,
            ..FlowQuery::default()
        };
        let listed = stores[0].list_flows(&q).await.unwrap();
        assert_eq!(
            listed.len(),
            usize::from(CONNECTIONS),
            "one row per connection"
        );
        for f in &listed {
            assert_eq!(f.flow.bytes_sent, 400, "the latest counters: {f:?}");
            assert_eq!(
                (&f.src, &f.dst),
                (&workload("web"), &workload("db")),
                "{f:?}"
            );
        }
        let graph = stores[1]
            .graph(t - 60_000, Some(t + 3_600_000))
            .await
            .unwrap();
        let flows: u64 = graph.iter().map(|g| g.flows).sum();
        let bytes: u64 = graph.iter().map(|g| g.bytes).sum();
        assert_eq!(flows, u64::from(CONNECTIONS));
        assert_eq!(bytes, u64::from(CONNECTIONS) * 410);
        assert_eq!(graph.len(), 1, "web to db only: {graph:#?}");
        assert_eq!(
            stores[2]
                .graph_from_flows(t - 60_000, Some(t + 3_600_000))
                .await
                .unwrap(),
            graph
        );
        // Whole hours, summed by the hour, hold the same.
        let hour = t - t % 3_600_000;
        assert_eq!(
            stores[0].graph(hour, Some(hour + 7_200_000)).await.unwrap(),
            graph
        );
    })
    .await;
}
