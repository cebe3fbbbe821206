//! The Hallmark server: one trust domain's CA, key manager and registry.
//!
//! It serves two APIs:
//! - the **node API** (gRPC over mTLS on TCP) to agents: join-token
//!   attestation, agent SVID renewal, a pushed stream of each agent's
//!   authorized entries and of the identity policy agents enforce (the
//!   document, identity groups, the peer map and the fleet-wide
//!   enforcement switch, see [`policy`]), batched X509-SVID signing and
//!   JWT-SVID minting;
//! - the **admin API** (gRPC on a local Unix socket, mode 0600) to operators.
//!
//! Agents also report their workload inventory (snapshot pages and
//! lifecycle events); the server keeps the current workload per (context,
//! agent, container), keeps stopped ones for [`ServerConfig::workload_retention`]
//! and prunes them afterwards (see [`inventory`]).
//!
//! All state lives in the datastore ([`hallmark_store::Store`]), so a restart
//! keeps the same CA, entries, agents and inventory.
//!
//! Layout: engines (`authority` and its rotation schedule, `federation`,
//! [`inventory`], and `follow` for a datastore shared between servers)
//! return domain errors; the APIs (`node`, `admin`) map them to gRPC
//! statuses. `startup` runs the steps of [`start_with_store`] in order.

#![forbid(unsafe_code)]

mod admin;
mod authority;
pub mod console_key;
mod federation;
mod flows;
mod follow;
pub mod inventory;
pub mod metrics;
mod node;
pub mod oidc;
pub mod policy;
mod rotation;
mod startup;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hallmark_ca::KeyAlg;
use hallmark_core::time::unix_millis;
use hallmark_core::{SpiffeId, TrustDomain};
use hallmark_store::{SqliteStore, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use admin::AdminService;
pub use authority::{AuthorityError, CaManager, CaSource, DEFAULT_REFRESH_HINT};
pub use federation::{EndpointError, EndpointProfile, FederationConfig};
pub use flows::{FlowConfig, FlowConfigError, FlowQueries};
pub use inventory::ALSO_REPORTED_BY_HEADER;
pub use oidc::{IssuerError, IssuerUrl, OidcConfig, OidcError, OidcTls};
pub use rotation::RotationConfig;

/// How long stopped workloads stay listed unless configured otherwise: long
/// enough to attribute flows exported late.
pub const DEFAULT_WORKLOAD_RETENTION: Duration = Duration::from_secs(3600);

/// Everything the server needs to run. Built by the binary from flags and
/// the config file; every field has a laptop-friendly default there.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub trust_domain: TrustDomain,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_socket: PathBuf,
    pub jwt_key_alg: KeyAlg,
    pub ca: CaSource,
    pub ca_ttl: Duration,
    pub agent_svid_ttl: Duration,
    pub join_token_ttl: Duration,
    /// How long a stopped workload (and a lifecycle event) is kept and
    /// listed; [`DEFAULT_WORKLOAD_RETENTION`] unless configured.
    pub workload_retention: Duration,
    /// Algorithm of the OIDC-profile signing key (RS256 by default: every
    /// cloud accepts it).
    pub oidc_key_alg: KeyAlg,
    /// The OIDC issuer (discovery document and JWKS over HTTPS); `None`
    /// serves neither, though agents may still mint OIDC tokens.
    pub oidc: Option<OidcConfig>,
    /// The SPIFFE bundle endpoint and foreign bundle refresh.
    pub federation: FederationConfig,
    /// Automatic rotation of signing authorities.
    pub rotation: RotationConfig,
    /// The admin API over mTLS on TCP, for SVIDs of admin entries; `None`
    /// serves it on the local socket only.
    pub admin_listen: Option<SocketAddr>,
    /// The bundle's `spiffe_refresh_hint`: how often federated trust
    /// domains (and agents) should fetch it again.
    pub bundle_refresh_hint: Duration,
    /// Flow attribution: heartbeat interval, hold-back, clock skew,
    /// networks, retention, the NetFlow/IPFIX collector.
    pub flows: FlowConfig,
}

impl ServerConfig {
    /// The laptop defaults (those of `hallmark up`), with state in
    /// `data_dir`: node API on an ephemeral loopback port, admin socket
    /// `<data_dir>/admin.sock`, self-signed root for a year, ES256 JWT-SVIDs,
    /// RS256 OIDC tokens with no issuer served, one-hour agent SVIDs,
    /// ten-minute join tokens, no admin API over TCP.
    pub fn new(trust_domain: TrustDomain, data_dir: PathBuf) -> Self {
        ServerConfig {
            trust_domain,
            admin_socket: data_dir.join("admin.sock"),
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            jwt_key_alg: KeyAlg::EcP256,
            ca: CaSource::SelfSigned,
            ca_ttl: Duration::from_secs(365 * 86_400),
            agent_svid_ttl: Duration::from_secs(3_600),
            join_token_ttl: Duration::from_secs(600),
            workload_retention: DEFAULT_WORKLOAD_RETENTION,
            oidc_key_alg: KeyAlg::Rsa2048,
            oidc: None,
            federation: FederationConfig::default(),
            rotation: RotationConfig::default(),
            admin_listen: None,
            bundle_refresh_hint: authority::DEFAULT_REFRESH_HINT,
            flows: FlowConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening the datastore at {path}: {source}")]
    Store {
        path: PathBuf,
        source: hallmark_store::StoreError,
    },
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error("listening for agents on {addr}: {source} (is another server running? pick another address with --listen)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin socket {path}: {source}")]
    AdminSocket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Oidc(#[from] oidc::OidcError),
    #[error(transparent)]
    Federation(#[from] federation::EndpointError),
    #[error(transparent)]
    Flows(#[from] flows::FlowConfigError),
    #[error("console key in {path}: {source}")]
    ConsoleKey {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// State shared by the node and admin services.
pub(crate) struct Shared {
    pub trust_domain: TrustDomain,
    pub store: Arc<dyn Store>,
    pub ca: Arc<CaManager>,
    /// Bumped after every entry change; agent streams wake on it.
    pub entries_changed: watch::Sender<u64>,
    /// Bumped after a federation relationship or a foreign bundle changes;
    /// agent streams wake on it.
    pub federation_changed: watch::Sender<u64>,
    /// Agents whose SVIDs were revoked by an operator (evict/ban); their
    /// open streams end at once.
    pub revoked: tokio::sync::broadcast::Sender<SpiffeId>,
    pub connected: Arc<node::ConnectedAgents>,
    pub agent_svid_ttl: Duration,
    pub join_token_ttl: Duration,
    pub workload_retention: Duration,
    pub started_at: i64,
    pub metrics: Arc<metrics::ServerMetrics>,
    /// The OIDC issuer, when configured: the `iss` and extra claims of
    /// OIDC-profile tokens.
    pub oidc: Option<OidcConfig>,
    /// Foreign bundles decoded from the datastore, for Sync streams.
    pub federation: federation::Federations,
    /// The flow pipeline and its queries.
    pub flows: flows::FlowEngine,
    pub flow_queries: flows::FlowQueries,
    /// The identity policy in force.
    pub policy: Arc<policy::PolicyCell>,
    /// Group membership of the known identities, pushed to agents.
    pub identity_groups: watch::Sender<Arc<policy::IdentityGroups>>,
    /// Wakes the group membership task after an inventory change.
    pub membership: Arc<policy::membership::MembershipTracker>,
    /// The peer map (address -> its current owner's groups), pushed to
    /// agents.
    pub peer_addresses: watch::Sender<Arc<policy::PeerAddresses>>,
    /// The fleet-wide enforcement switch (true: on), pushed to agents.
    pub enforcement: watch::Sender<bool>,
    /// Mints and checks console tokens.
    pub console_key: Arc<console_key::ConsoleKey>,
}

/// A running server. Dropping it does not stop it; call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    pub listen_addr: SocketAddr,
    /// The NetFlow/IPFIX collector's bound address, when it runs.
    pub flow_collector_addr: Option<SocketAddr>,
    pub admin_socket: PathBuf,
    admin: AdminService,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The admin service, for in-process callers (`hallmark up`).
    pub fn admin(&self) -> AdminService {
        self.admin.clone()
    }

    /// The server's metrics (the console counts its logins and refusals).
    pub fn metrics(&self) -> Arc<metrics::ServerMetrics> {
        self.shared.metrics.clone()
    }

    /// The key console tokens are minted and checked with.
    pub fn console_key(&self) -> Arc<console_key::ConsoleKey> {
        self.shared.console_key.clone()
    }

    /// Readiness and metrics, for the health endpoint.
    pub fn status(&self) -> ServerStatus {
        ServerStatus {
            shared: self.shared.clone(),
        }
    }

    /// Stops accepting, ends agent streams and waits for the listeners.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A cheap handle on the server's health.
#[derive(Clone)]
pub struct ServerStatus {
    shared: Arc<Shared>,
}

impl ServerStatus {
    /// Ready when the datastore answers.
    pub async fn ready(&self) -> bool {
        self.shared.store.count_entries().await.is_ok()
    }

    /// The Prometheus text exposition, with gauges read now.
    pub async fn metrics(&self) -> String {
        let m = &self.shared.metrics;
        let store = &self.shared.store;
        if let Ok(n) = store.count_entries().await {
            m.entries.set(n as i64);
        }
        if let Ok(c) = store
            .count_workloads(
                unix_millis(SystemTime::now()),
                self.shared.workload_retention,
            )
            .await
        {
            m.set_workloads("current", c.current);
            m.set_workloads("stopped", c.stopped);
        }
        if let Ok(agents) = store.list_agent_inventories().await {
            let dropped = agents
                .iter()
                .fold(0u64, |sum, a| sum.saturating_add(a.dropped_events));
            m.agent_dropped_events
                .set(i64::try_from(dropped).unwrap_or(i64::MAX));
        }
        m.agents_connected.set(self.shared.connected.count() as i64);
        if let Ok(records) = self.shared.ca.list(None).await {
            m.set_authorities(records.iter().map(|r| (r.kind.as_str(), r.state.as_str())));
        }
        m.bundle_sequence
            .set(i64::try_from(self.shared.ca.bundle().sequence).unwrap_or(i64::MAX));
        m.render()
    }
}

/// Starts the server: opens the datastore, loads or creates the CA, and
/// starts the node and admin listeners. Returns once both are listening.
pub async fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
    startup::create_private_dir(&config.data_dir)?;
    let db_path = config.data_dir.join("datastore.sqlite3");
    let store: Arc<dyn Store> =
        Arc::new(
            SqliteStore::open(&db_path)
                .await
                .map_err(|source| ServerError::Store {
                    path: db_path.clone(),
                    source,
                })?,
        );
    start_with_store(config, store).await
}

/// Like [`start`] with a datastore chosen by the caller.
pub async fn start_with_store(
    config: ServerConfig,
    store: Arc<dyn Store>,
) -> Result<ServerHandle, ServerError> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (shared, flows) = Shared::open(&config, store, shutdown_rx.clone()).await?;
    let mut server = startup::Starting {
        config: &config,
        shared: shared.clone(),
        shutdown: shutdown_rx,
        tasks: flows.tasks,
    };
    server.start_engines();
    let node_api = server.bind_node_api().await?;
    server.start_bundle_endpoint(&node_api.tls).await?;
    let listen_addr = server.serve_node_api(node_api);
    let admin = AdminService::new(shared.clone());
    server.start_admin_mtls(&admin).await?;
    server.start_oidc_issuer().await?;
    server.serve_admin_socket(&admin)?;
    let tasks = server.tasks;

    tracing::info!(
        trust_domain = %config.trust_domain,
        listen = %listen_addr,
        admin_socket = %config.admin_socket.display(),
        ca_fingerprint = %shared.ca.fingerprint(),
        "hallmark server ready"
    );
    Ok(ServerHandle {
        listen_addr,
        flow_collector_addr: flows.collector_addr,
        admin_socket: config.admin_socket.clone(),
        admin,
        shared,
        shutdown,
        tasks,
    })
}
