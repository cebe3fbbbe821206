//! The long-running roles: `server run`, `agent run` and `up`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use hallmark_agent::{AgentConfig, ServerTrustSource};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use hallmark_server::{CaSource, ServerConfig};

use crate::config::{self, DEFAULT_LISTEN, DEFAULT_TRUST_DOMAIN};
use crate::health;

/// How long shutdown may take before the process exits anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Flags every long-running role takes.
#[derive(Args, Debug)]
pub struct RoleArgs {
    /// TOML config file ([server] or [agent] section); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Trust domain [default: hallmark.local].
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// State directory [default: $HALLMARK_HOME/server or $HALLMARK_HOME/agent].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Serve /healthz, /readyz and /metrics over HTTP on this address.
    #[arg(long)]
    pub health_listen: Option<String>,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub common: RoleArgs,
    /// Node API address for agents [default: 127.0.0.1:8081].
    #[arg(long)]
    pub listen: Option<String>,
    /// Admin API socket [default: <data-dir>/admin.sock].
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Datastore: `sqlite` (a file in the data dir) or a PostgreSQL URL
    /// `postgres://user:password@host:port/db` [default: sqlite].
    #[arg(long, env = "HALLMARK_DATASTORE")]
    pub datastore: Option<String>,
    /// JWT-SVID signing key: ec-p256 (ES256) or rsa-2048 (RS256) [default: ec-p256].
    #[arg(long)]
    pub jwt_key_type: Option<String>,
    /// Lifetime of a self-signed root created on first start [default: 365d].
    #[arg(long)]
    pub ca_ttl: Option<String>,
    /// Lifetime of agent SVIDs [default: 1h].
    #[arg(long)]
    pub agent_svid_ttl: Option<String>,
    /// Default join token lifetime [default: 10m].
    #[arg(long)]
    pub join_token_ttl: Option<String>,
    /// How long stopped workloads stay in the inventory (late flow records
    /// still need them) [default: 1h].
    #[arg(long)]
    pub workload_retention: Option<String>,
    /// CA certificate (PEM) to sign with instead of a self-signed root.
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM, PKCS#8).
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Certificates above the CA up to the root (PEM), for an intermediate CA.
    #[arg(long, requires = "ca_cert")]
    pub ca_chain: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    pub common: RoleArgs,
    /// Server node API address HOST:PORT (repeat for failover) [default: 127.0.0.1:8081].
    #[arg(long = "server")]
    pub servers: Vec<String>,
    /// Workload API socket [default: <data-dir>/workload.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Single-use join token (only needed until the agent holds an SVID).
    #[arg(long, env = "HALLMARK_JOIN_TOKEN")]
    pub join_token: Option<String>,
    /// SHA-256 of the server's root CA, from `hallmark token generate`.
    #[arg(long, conflicts_with = "trust_bundle")]
    pub ca_fingerprint: Option<String>,
    /// PEM file with the server's root CA(s).
    #[arg(long)]
    pub trust_bundle: Option<PathBuf>,
    #[command(flatten)]
    pub inventory: InventoryArgs,
}

/// Container runtime and workload inventory options (agent and `up`).
#[derive(Args, Debug, Default)]
pub struct InventoryArgs {
    /// Name of the cluster or site this node belongs to; qualifies every
    /// inventory record and is attested as `hallmark:context:<name>` [default: default].
    #[arg(long)]
    pub context: Option<String>,
    /// Container runtime: auto (CRI, then Docker), docker, cri or none [default: auto].
    #[arg(long)]
    pub runtime: Option<String>,
    /// Docker Engine socket [default: $DOCKER_HOST, /var/run/docker.sock].
    #[arg(long)]
    pub docker_socket: Option<PathBuf>,
    /// CRI runtime socket [default: from crictl's config, else the usual containerd/CRI-O paths].
    #[arg(long)]
    pub cri_socket: Option<PathBuf>,
    /// crictl config file consulted for the CRI socket [default: /etc/crictl.yaml].
    #[arg(long)]
    pub crictl_config: Option<PathBuf>,
    /// Full inventory resync period, behind the runtime's events [default: 30s].
    #[arg(long)]
    pub resync_interval: Option<String>,
    /// Where the latest inventory snapshot is written [default: <data-dir>/inventory.json].
    #[arg(long)]
    pub inventory_spool: Option<PathBuf>,
}

/// The inventory configuration from flags over the config file.
pub fn inventory_config(
    a: InventoryArgs,
    file: &config::AgentFile,
) -> Result<hallmark_agent::inventory::InventoryConfig> {
    use hallmark_agent::inventory::{InventoryConfig, DEFAULT_CONTEXT};
    use hallmark_runtime::discovery::DiscoveryConfig;
    let defaults = InventoryConfig::default();
    let context = pick(a.context, file.context.clone()).unwrap_or_else(|| DEFAULT_CONTEXT.into());
    let runtime = pick(a.runtime, file.runtime.clone()).unwrap_or_else(|| "auto".into());
    let resync_interval = match pick(a.resync_interval, file.resync_interval.clone()) {
        Some(v) => {
            let d = config::duration("resync_interval", &v)?;
            if d < Duration::from_secs(1) {
                return Err(anyhow!("resync_interval `{v}`: must be at least 1s"));
            }
            d
        }
        None => defaults.resync_interval,
    };
    Ok(InventoryConfig {
        context_name: config::context_name("context", &context)?,
        discovery: DiscoveryConfig {
            choice: config::runtime_choice("runtime", &runtime)?,
            docker_socket: pick(a.docker_socket, file.docker_socket.clone()),
            cri_socket: pick(a.cri_socket, file.cri_socket.clone()),
            crictl_config: pick(a.crictl_config, file.crictl_config.clone()),
        },
        resync_interval,
        spool_path: pick(a.inventory_spool, file.inventory_spool.clone()),
        ..defaults
    })
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// State directory [default: $HALLMARK_HOME, else ~/.hallmark].
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Trust domain [default: hallmark.local].
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Serve /healthz, /readyz, /metrics and /status over HTTP on this address.
    #[arg(long)]
    pub health_listen: Option<String>,
    #[command(flatten)]
    pub inventory: InventoryArgs,
}

fn pick<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

/// The server configuration and its datastore, from flags over the file.
fn server_config(a: ServerArgs) -> Result<(ServerConfig, Datastore)> {
    let file = config::load_file(a.common.config.as_deref())?.server;
    let store = datastore(
        "datastore",
        &pick(a.datastore, file.datastore).unwrap_or_else(|| "sqlite".into()),
    )?;
    let td = pick(a.common.trust_domain, file.trust_domain)
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.into());
    let data_dir = pick(a.common.data_dir, file.data_dir)
        .unwrap_or_else(|| config::default_home().join("server"));
    let listen = pick(a.listen, file.listen).unwrap_or_else(|| DEFAULT_LISTEN.into());
    let ca = match (pick(a.ca_cert, file.ca_cert), pick(a.ca_key, file.ca_key)) {
        (Some(cert), Some(key)) => CaSource::Disk {
            cert,
            key,
            chain: pick(a.ca_chain, file.ca_chain),
        },
        (None, None) => CaSource::SelfSigned,
        _ => return Err(anyhow!("ca_cert and ca_key must be given together")),
    };
    let config = ServerConfig {
        trust_domain: config::trust_domain("trust_domain", &td)?,
        admin_socket: pick(a.admin_socket, file.admin_socket)
            .unwrap_or_else(|| data_dir.join("admin.sock")),
        listen: config::socket_addr("listen", &listen)?,
        jwt_key_alg: config::key_alg(
            "jwt_key_type",
            &pick(a.jwt_key_type, file.jwt_key_type).unwrap_or_else(|| "ec-p256".into()),
        )?,
        ca,
        ca_ttl: config::duration(
            "ca_ttl",
            &pick(a.ca_ttl, file.ca_ttl).unwrap_or_else(|| "365d".into()),
        )?,
        agent_svid_ttl: config::duration(
            "agent_svid_ttl",
            &pick(a.agent_svid_ttl, file.agent_svid_ttl).unwrap_or_else(|| "1h".into()),
        )?,
        join_token_ttl: config::duration(
            "join_token_ttl",
            &pick(a.join_token_ttl, file.join_token_ttl).unwrap_or_else(|| "10m".into()),
        )?,
        workload_retention: match pick(a.workload_retention, file.workload_retention) {
            Some(v) => {
                let d = config::duration("workload_retention", &v)?;
                if d < Duration::from_secs(1) {
                    return Err(anyhow!("workload_retention `{v}`: must be at least 1s"));
                }
                d
            }
            None => hallmark_server::DEFAULT_WORKLOAD_RETENTION,
        },
        oidc_key_alg: hallmark_ca::KeyAlg::Rsa2048,
        oidc: None,
        federation: Default::default(),
        rotation: Default::default(),
        admin_listen: None,
        data_dir,
    };
    Ok((config, store))
}

pub fn agent_config(a: AgentArgs) -> Result<AgentConfig> {
    let file = config::load_file(a.common.config.as_deref())?.agent;
    let inventory = inventory_config(a.inventory, &file)?;
    let td = pick(a.common.trust_domain, file.trust_domain)
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.into());
    let data_dir = pick(a.common.data_dir, file.data_dir)
        .unwrap_or_else(|| config::default_home().join("agent"));
    let servers = if a.servers.is_empty() {
        file.servers.unwrap_or_else(|| vec![DEFAULT_LISTEN.into()])
    } else {
        a.servers
    };
    let servers = servers
        .iter()
        .map(|s| config::server_addr("server", s))
        .collect::<Result<Vec<_>>>()?;
    let trust = match (
        pick(a.ca_fingerprint, file.ca_fingerprint),
        pick(a.trust_bundle, file.trust_bundle),
    ) {
        (Some(fp), None) => {
            ServerTrustSource::Fingerprint(config::fingerprint("ca_fingerprint", &fp)?)
        }
        (None, Some(path)) => ServerTrustSource::BundleFile(path),
        (None, None) => ServerTrustSource::None,
        (Some(_), Some(_)) => {
            return Err(anyhow!(
                "give either ca_fingerprint or trust_bundle, not both"
            ))
        }
    };
    Ok(AgentConfig {
        trust_domain: config::trust_domain("trust_domain", &td)?,
        socket_path: pick(a.socket, file.socket).unwrap_or_else(|| data_dir.join("workload.sock")),
        data_dir,
        servers,
        join_token: pick(a.join_token, file.join_token),
        trust,
        inventory,
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Where the server keeps its state.
enum Datastore {
    Sqlite,
    Postgres(String),
}

fn datastore(key: &str, v: &str) -> Result<Datastore> {
    if v == "sqlite" {
        Ok(Datastore::Sqlite)
    } else if v.starts_with("postgres://") || v.starts_with("postgresql://") {
        Ok(Datastore::Postgres(v.to_string()))
    } else {
        // The value may be a URL with a password: do not echo it.
        Err(anyhow!(
            "{key}: must be `sqlite` or a PostgreSQL URL starting with postgres:// (e.g. postgres://hallmark:secret@db:5432/hallmark)"
        ))
    }
}

pub async fn run_server(a: ServerArgs) -> Result<()> {
    let health = a.common.health_listen.clone();
    let (cfg, store) = server_config(a)?;
    let handle = match store {
        Datastore::Sqlite => hallmark_server::start(cfg).await?,
        Datastore::Postgres(url) => {
            let store = hallmark_store::PostgresStore::connect(&url)
                .await
                .context("opening the PostgreSQL datastore")?;
            hallmark_server::start_with_store(cfg, std::sync::Arc::new(store)).await?
        }
    };
    if let Some(addr) = health {
        let s = handle.status();
        let probe = health::Probe::new(
            {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    Box::pin(async move { s.ready().await })
                }
            },
            move || {
                let s = s.clone();
                Box::pin(async move { s.metrics().await })
            },
        );
        health::serve(config::socket_addr("health_listen", &addr)?, probe).await?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = tokio::time::timeout(DRAIN_DEADLINE, handle.shutdown()).await;
    Ok(())
}

fn agent_probe(a: hallmark_agent::AgentStatus) -> health::Probe {
    let m = a.clone();
    let st = a.clone();
    health::Probe::new(
        move || {
            let r = a.ready();
            Box::pin(async move { r })
        },
        move || {
            let text = m.metrics();
            Box::pin(async move { text })
        },
    )
    .with_status(move || agent_status_json(&st))
}

/// The agent's `/status` document.
pub fn agent_status_json(a: &hallmark_agent::AgentStatus) -> serde_json::Value {
    serde_json::json!({
        "ready": a.ready(),
        "agent_id": a.agent_id(),
        "inventory": a.inventory(),
    })
}

pub async fn run_agent(a: AgentArgs) -> Result<()> {
    let health = a.common.health_listen.clone();
    let cfg = agent_config(a)?;
    let handle = hallmark_agent::start(cfg).await?;
    if let Some(addr) = health {
        health::serve(
            config::socket_addr("health_listen", &addr)?,
            agent_probe(handle.status()),
        )
        .await?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = tokio::time::timeout(DRAIN_DEADLINE, handle.shutdown()).await;
    Ok(())
}

/// The user who ran `hallmark up` (through sudo: the user behind it).
fn invoking_user() -> (u32, String) {
    let uid = std::env::var("SUDO_UID")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| nix::unistd::getuid().as_raw());
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
        .unwrap_or_else(|| format!("uid-{uid}"));
    (uid, name)
}

pub async fn up(a: UpArgs) -> Result<()> {
    let inventory = inventory_config(a.inventory, &config::AgentFile::default())?;
    let home = a.home.unwrap_or_else(config::default_home);
    let td_name = a
        .trust_domain
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.into());
    let td = config::trust_domain("--trust-domain", &td_name)?;
    let server_dir = home.join("server");
    let server = hallmark_server::start(ServerConfig {
        trust_domain: td.clone(),
        admin_socket: server_dir.join("admin.sock"),
        data_dir: server_dir,
        listen: config::socket_addr("listen", "127.0.0.1:0")?,
        jwt_key_alg: hallmark_ca::KeyAlg::EcP256,
        ca: CaSource::SelfSigned,
        ca_ttl: Duration::from_secs(365 * 86400),
        agent_svid_ttl: Duration::from_secs(3600),
        join_token_ttl: Duration::from_secs(600),
        workload_retention: hallmark_server::DEFAULT_WORKLOAD_RETENTION,
        oidc_key_alg: hallmark_ca::KeyAlg::Rsa2048,
        oidc: None,
        federation: Default::default(),
        rotation: Default::default(),
        admin_listen: None,
    })
    .await
    .context("starting the server")?;
    let admin = server.admin();

    // A token every time: the agent ignores it while it holds a valid SVID
    // from an earlier run, and uses it after a long pause.
    let token = admin
        .generate_token(tonic::Request::new(pb::GenerateTokenRequest {
            node: "local".into(),
            ttl_secs: 600,
        }))
        .await
        .map_err(crate::admin::status_err)?
        .into_inner();

    let (uid, user) = invoking_user();
    let spiffe_id = format!("spiffe://{td}/user/{user}");
    match admin
        .create_entry(tonic::Request::new(pb::CreateEntryRequest {
            spiffe_id: spiffe_id.clone(),
            parent_id: token.agent_spiffe_id.clone(),
            selectors: vec![format!("unix:uid:{uid}")],
            ..Default::default()
        }))
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => return Err(crate::admin::status_err(s)),
    }

    let agent_dir = home.join("agent");
    let socket = agent_dir.join("workload.sock");
    let mut agent = hallmark_agent::start(AgentConfig {
        trust_domain: td.clone(),
        data_dir: agent_dir,
        servers: vec![server.listen_addr.to_string()],
        socket_path: socket.clone(),
        join_token: Some(token.token),
        trust: ServerTrustSource::Fingerprint(token.ca_fingerprint),
        inventory,
    })
    .await
    .context("starting the agent")?;
    tokio::time::timeout(Duration::from_secs(30), agent.ready())
        .await
        .map_err(|_| anyhow!("the agent did not sync with the server within 30s"))?;

    if let Some(addr) = a.health_listen {
        let (srv, ag) = (server.status(), agent.status());
        let (srv2, ag2) = (srv.clone(), ag.clone());
        let ag3 = ag.clone();
        let probe = health::Probe::new(
            move || {
                let (srv, ag) = (srv.clone(), ag.clone());
                Box::pin(async move { ag.ready() && srv.ready().await })
            },
            move || {
                let (srv, ag) = (srv2.clone(), ag2.clone());
                Box::pin(async move {
                    // One exposition: drop the first part's end marker.
                    let server = srv.metrics().await;
                    format!("{}{}", server.trim_end_matches("# EOF\n"), ag.metrics())
                })
            },
        )
        .with_status(move || agent_status_json(&ag3));
        health::serve(config::socket_addr("--health-listen", &addr)?, probe).await?;
    }

    println!("Hallmark is up.");
    println!();
    println!("  trust domain   {td}");
    println!("  your identity  {spiffe_id}   (selector unix:uid:{uid})");
    println!("  workload API   unix://{}", socket.display());
    println!("  admin socket   {}", server.admin_socket.display());
    println!("  containers     {}", agent.inventory.status().summary());
    println!();
    println!("Try it in another terminal:");
    println!(
        "  export SPIFFE_ENDPOINT_SOCKET=unix://{}",
        socket.display()
    );
    println!("  hallmark svid fetch");
    println!();
    println!("Ctrl-C stops it; state is kept in {}.", home.display());

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = tokio::time::timeout(DRAIN_DEADLINE, async {
        agent.shutdown().await;
        server.shutdown().await;
    })
    .await;
    Ok(())
}
