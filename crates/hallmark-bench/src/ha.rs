//! Benchmarks of the control plane on a shared PostgreSQL datastore:
//!
//! - `propagation-ha`: registration change -> workload stream with two
//!   servers on one PostgreSQL (changes made through the server the agent is
//!   NOT connected to), beside one server on SQLite in the same run.
//! - `server-start`: server start to ready with N entries in the datastore,
//!   beside an empty datastore, on SQLite and PostgreSQL.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hallmark_core::{EntrySpec, RawEntrySpec, TrustDomain};
use hallmark_store::{PostgresStore, SqliteStore, Store};
use serde::Serialize;

use crate::cluster::{admin_client, server_config, Cluster, TRUST_DOMAIN};
use crate::propagation::{self, PropagationArgs, PropagationReport};
use crate::report::{num, Table};

/// Where the benchmarks find PostgreSQL unless told otherwise: the server
/// `scripts/setup.d/20-postgres.sh` sets up.
const DEFAULT_POSTGRES: &str = "postgres://hallmark:hallmark@127.0.0.1:5432";

#[derive(Args, Debug, Clone)]
pub struct PropagationHaArgs {
    /// Entries to create (and then delete), one at a time, per topology.
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
    /// PostgreSQL server URL without a database name; a scratch database is
    /// created there and dropped afterwards (needs CREATEDB and `psql`).
    #[arg(long, default_value = DEFAULT_POSTGRES)]
    pub postgres: String,
}

#[derive(Debug, Serialize)]
pub struct PropagationHaReport {
    /// One server, embedded SQLite: the baseline.
    pub single_sqlite: PropagationReport,
    /// Two servers on one PostgreSQL; the agent on the first, changes made
    /// through the second.
    pub two_servers_postgres: PropagationReport,
}

/// A scratch PostgreSQL database, dropped on drop.
pub(crate) struct ScratchDatabase {
    server: String,
    name: String,
}

impl ScratchDatabase {
    pub(crate) fn create(server: &str) -> Result<Self> {
        let server = server.trim_end_matches('/').to_string();
        let name = format!("hallmark_bench_{}", std::process::id());
        psql(
            &server,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(&server, &format!("CREATE DATABASE {name}"))?;
        Ok(ScratchDatabase { server, name })
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let _ = psql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(server: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .context(
            "running psql (install the PostgreSQL client, or run scripts/setup.d/20-postgres.sh)",
        )?;
    if !out.status.success() {
        bail!(
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

async fn postgres(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        PostgresStore::connect(url)
            .await
            .context("connecting to PostgreSQL")?,
    ))
}

pub async fn propagation_ha(args: &PropagationHaArgs) -> Result<PropagationHaReport> {
    let p = PropagationArgs {
        iterations: args.iterations,
        background: 0,
    };
    let single_sqlite = propagation::run(&p).await?;

    let db = ScratchDatabase::create(&args.postgres)?;
    let mut cluster = Cluster::start_on(Some(postgres(&db.url()).await?)).await?;
    let second_dir = cluster.scratch_dir().join("second-server");
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let second = hallmark_server::start_with_store(
        server_config(&td, &second_dir)?,
        postgres(&db.url()).await?,
    )
    .await
    .context("starting the second server")?;
    let admin = admin_client(&second.admin_socket).await?;
    let two_servers_postgres = propagation::measure(&mut cluster, admin, &p).await;
    second.shutdown().await;
    cluster.shutdown().await;
    Ok(PropagationHaReport {
        single_sqlite,
        two_servers_postgres: two_servers_postgres?,
    })
}

pub fn print_propagation_ha(r: &PropagationHaReport) {
    println!(
        "Propagation, {} entries created then deleted one at a time",
        r.single_sqlite.iterations
    );
    let ms = |us: f64| num(us / 1_000.0);
    let mut t = Table::new(&["topology", "change", "p50 ms", "p99 ms", "max ms"]);
    for (topology, rep) in [
        ("1 server, SQLite (baseline)", &r.single_sqlite),
        (
            "2 servers, PostgreSQL, change via the other",
            &r.two_servers_postgres,
        ),
    ] {
        for (change, p) in [
            ("create -> served", &rep.create),
            ("delete -> gone", &rep.delete),
        ] {
            t.row(vec![
                topology.into(),
                change.into(),
                ms(p.end_to_end.p50_us),
                ms(p.end_to_end.p99_us),
                ms(p.end_to_end.max_us),
            ]);
        }
    }
    print!("{}", t.render());
}

#[derive(Args, Debug, Clone)]
pub struct ServerStartArgs {
    /// Entries in the datastore before the timed start.
    #[arg(long, default_value_t = 100_000)]
    pub entries: usize,
    /// Entries per agent (parent ID): the datastore holds entries of
    /// `entries / per_agent` agents.
    #[arg(long, default_value_t = 1_000)]
    pub per_agent: usize,
    /// Timed starts per datastore (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub starts: usize,
    /// PostgreSQL server URL without a database name (see propagation-ha).
    #[arg(long, default_value = DEFAULT_POSTGRES)]
    pub postgres: String,
}

#[derive(Debug, Serialize)]
pub struct StartFigure {
    pub datastore: &'static str,
    pub entries: usize,
    /// Median over the starts: opening the datastore (connect, migrations
    /// check).
    pub open_ms: f64,
    /// Median: `start_with_store` returning (CA loaded, listeners bound).
    pub start_ms: f64,
    /// Median: open + start + the first admin Status call answered (it
    /// counts the entries): ready to serve.
    pub ready_ms: f64,
    pub fill_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct ServerStartReport {
    pub figures: Vec<StartFigure>,
}

/// Registers `n` entries straight into the datastore, spread over agents.
async fn fill(store: &Arc<dyn Store>, n: usize, per_agent: usize) -> Result<Duration> {
    let t = Instant::now();
    let per_agent = per_agent.max(1);
    let workers = 8usize;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/bench/start/{i}");
                let parent = format!(
                    "spiffe://{TRUST_DOMAIN}/hallmark/agent/node-{}",
                    i / per_agent
                );
                let selector = format!("unix:uid:{}", 100_000 + i);
                let spec = EntrySpec::parse(
                    &RawEntrySpec {
                        spiffe_id: &spiffe_id,
                        parent_id: &parent,
                        selectors: vec![&selector],
                        ..Default::default()
                    },
                    TRUST_DOMAIN,
                )
                .map_err(|e| anyhow!("entry {i}: {e}"))?;
                store
                    .create_entry(&spec, 1_700_000_000)
                    .await
                    .map_err(|e| anyhow!("storing entry {i}: {e}"))?;
                i += workers;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("fill task")??;
    }
    Ok(t.elapsed())
}

/// Times `starts` server starts on the datastore `open` opens.
async fn time_starts<F, Fut>(starts: usize, state_dir: &Path, open: F) -> Result<(f64, f64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Arc<dyn Store>>>,
{
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let (mut opens, mut started, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..starts.max(1) {
        let dir = state_dir.join(format!("start-{i}"));
        let t = Instant::now();
        let store = open().await?;
        opens.push(t.elapsed());
        let server = hallmark_server::start_with_store(server_config(&td, &dir)?, store)
            .await
            .context("starting the server")?;
        started.push(t.elapsed());
        let mut admin = admin_client(&server.admin_socket).await?;
        admin
            .status(hallmark_proto::hallmark::StatusRequest {})
            .await
            .map_err(|s| anyhow!("Status: {}", s.message()))?;
        ready.push(t.elapsed());
        server.shutdown().await;
    }
    Ok((median_ms(opens), median_ms(started), median_ms(ready)))
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
}

pub async fn server_start(args: &ServerStartArgs) -> Result<ServerStartReport> {
    let scratch = tempfile::Builder::new()
        .prefix("hallmark-bench-start-")
        .tempdir()
        .context("creating the state directory")?;
    let mut figures = Vec::new();
    for entries in [0, args.entries] {
        // SQLite: the datastore file in a directory of its own, shared by
        // every timed start (as a restarted server would find it).
        let db_path = scratch.path().join(format!("sqlite-{entries}.db"));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db_path).await?);
        let fill_secs = fill(&store, entries, args.per_agent).await?.as_secs_f64();
        drop(store);
        let path = db_path.clone();
        let (open_ms, start_ms, ready_ms) = time_starts(
            args.starts,
            &scratch.path().join(format!("sqlite-{entries}")),
            || {
                let path = path.clone();
                async move { Ok(Arc::new(SqliteStore::open(&path).await?) as Arc<dyn Store>) }
            },
        )
        .await?;
        figures.push(StartFigure {
            datastore: "sqlite",
            entries,
            open_ms,
            start_ms,
            ready_ms,
            fill_secs,
        });

        let db = ScratchDatabase::create(&args.postgres)?;
        let url = db.url();
        let fill_secs = fill(&postgres(&url).await?, entries, args.per_agent)
            .await?
            .as_secs_f64();
        let (open_ms, start_ms, ready_ms) = time_starts(
            args.starts,
            &scratch.path().join(format!("postgres-{entries}")),
            || {
                let url = url.clone();
                async move { postgres(&url).await }
            },
        )
        .await?;
        figures.push(StartFigure {
            datastore: "postgres",
            entries,
            open_ms,
            start_ms,
            ready_ms,
            fill_secs,
        });
    }
    Ok(ServerStartReport { figures })
}

pub fn print_server_start(r: &ServerStartReport) {
    println!("Server start to ready (median of the timed starts)");
    let mut t = Table::new(&[
        "datastore",
        "entries",
        "open ms",
        "started ms",
        "ready ms",
        "(fill s)",
    ]);
    for f in &r.figures {
        t.row(vec![
            f.datastore.into(),
            f.entries.to_string(),
            num(f.open_ms),
            num(f.start_ms),
            num(f.ready_ms),
            num(f.fill_secs),
        ]);
    }
    print!("{}", t.render());
}
