//! The Hallmark server: one trust domain's CA, key manager and registry.
//!
//! It serves two APIs:
//! - the **node API** (gRPC over mTLS on TCP) to agents: join-token
//!   attestation, agent SVID renewal, a pushed stream of each agent's
//!   authorized entries, batched X509-SVID signing and JWT-SVID minting;
//! - the **admin API** (gRPC on a local Unix socket, mode 0600) to operators.
//!
//! Agents also report their workload inventory (snapshot pages and
//! lifecycle events); the server keeps the current workload per (context,
//! agent, container), keeps stopped ones for [`ServerConfig::workload_retention`]
//! and prunes them afterwards (see [`inventory`]).
//!
//! All state lives in the datastore ([`hallmark_store::Store`]), so a restart
//! keeps the same CA, entries, agents and inventory.

mod admin;
mod admin_mtls;
mod authority;
mod federation;
pub mod inventory;
pub mod metrics;
mod node;
pub mod oidc;
mod rotation;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_ca::KeyAlg;
use hallmark_core::{SpiffeId, TrustDomain};
use hallmark_proto::hallmark::admin_server::AdminServer;
use hallmark_proto::hallmark::node_server::NodeServer;
use hallmark_store::{SqliteStore, Store};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

pub use admin::AdminService;
pub use authority::{AuthorityError, CaManager, CaSource, DEFAULT_REFRESH_HINT};
pub use federation::{EndpointError, EndpointProfile, FederationConfig};
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
}

/// A running server. Dropping it does not stop it; call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    pub listen_addr: SocketAddr,
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
            .count_workloads(inventory::unix_now_ms(), self.shared.workload_retention)
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

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The SPIFFE ID the server presents to agents.
pub fn server_spiffe_id(td: &TrustDomain) -> SpiffeId {
    // The path is a constant made of valid characters.
    td.id_with_path("/hallmark/server")
        .unwrap_or_else(|_| unreachable!("constant path is valid"))
}

/// The SPIFFE ID an agent attested for node `node` receives.
pub fn agent_spiffe_id(
    td: &TrustDomain,
    node: &str,
) -> Result<SpiffeId, hallmark_core::SpiffeIdError> {
    td.id_with_path(&format!("/hallmark/agent/{node}"))
}

/// Starts the server: opens the datastore, loads or creates the CA, and
/// starts the node and admin listeners. Returns once both are listening.
pub async fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
    create_private_dir(&config.data_dir)?;
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
    let ca = Arc::new(
        CaManager::load_or_create(
            store.clone(),
            &config.trust_domain,
            &config.ca,
            config.ca_ttl,
            config.jwt_key_alg,
            config.oidc_key_alg,
            config.bundle_refresh_hint,
        )
        .await?,
    );
    let (entries_changed, _) = watch::channel(0);
    let (federation_changed, _) = watch::channel(0);
    let (revoked, _) = tokio::sync::broadcast::channel(64);
    let shared = Arc::new(Shared {
        trust_domain: config.trust_domain.clone(),
        store,
        ca: ca.clone(),
        entries_changed,
        federation_changed,
        revoked,
        connected: Arc::new(node::ConnectedAgents::default()),
        agent_svid_ttl: config.agent_svid_ttl,
        join_token_ttl: config.join_token_ttl,
        workload_retention: config.workload_retention,
        started_at: unix_now(),
        metrics: Arc::default(),
        oidc: config.oidc.clone(),
        federation: federation::Federations::default(),
    });
    // Loaded before agents can connect, so their first Sync update already
    // carries the foreign bundles.
    if let Err(e) = federation::reload(&shared).await {
        tracing::warn!(error = %e, "reading federation relationships failed");
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    if shared.store.shared_between_servers() {
        tasks.push(tokio::spawn(follow_datastore(
            shared.clone(),
            shutdown_rx.clone(),
        )));
    }

    tasks.push(tokio::spawn(inventory::prune_loop(
        shared.store.clone(),
        config.workload_retention,
        inventory::unix_now_ms,
        shared.metrics.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(rotation::schedule_loop(
        shared.clone(),
        config.rotation.clone(),
        shutdown_rx.clone(),
    )));

    let admin = AdminService::new(shared.clone());

    // Node API over mTLS.
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
    let listen_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let tls = tls::ServerTls::new(ca.clone(), &config.trust_domain)?;
    tasks.push(tokio::spawn(tls.clone().rotate(shutdown_rx.clone())));
    tasks.push(tokio::spawn(federation::refresh_loop(
        shared.clone(),
        shutdown_rx.clone(),
    )));
    if let Some(addr) = config.federation.listen {
        let (bound, task) = federation::serve_endpoint(
            shared.clone(),
            &config.federation,
            addr,
            tls.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        tasks.push(task);
        // Like listen.addr: lets tests and scripts use port 0.
        let _ = std::fs::write(
            config.data_dir.join("federation.addr"),
            format!("{bound}\n"),
        );
        tracing::info!(listen = %bound, "SPIFFE bundle endpoint serving");
    }
    let incoming = tls::incoming(listener, tls, shutdown_rx.clone());
    let node = NodeServer::new(node::NodeService::new(shared.clone()));
    let stop = wait_for(shutdown_rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .add_service(node)
            .serve_with_incoming_shutdown(incoming, stop)
            .await
        {
            tracing::error!(error = %e, "node API stopped");
        }
    }));
    // Written after bind so tests and scripts can use `--listen 127.0.0.1:0`.
    let _ = std::fs::write(
        config.data_dir.join("listen.addr"),
        format!("{listen_addr}\n"),
    );

    if let Some(addr) = config.admin_listen {
        let bound = serve_admin_mtls(
            addr,
            shared.clone(),
            admin.clone(),
            &config,
            &mut tasks,
            shutdown_rx.clone(),
        )
        .await?;
        let _ = std::fs::write(config.data_dir.join("admin.addr"), format!("{bound}\n"));
        tracing::info!(listen = %bound, "admin API over mTLS for admin SVIDs");
    }

    // OIDC discovery document and JWKS, for cloud federation.
    if let Some(oidc) = &config.oidc {
        let (addr, task) =
            oidc::start(shared.clone(), oidc, &config.data_dir, shutdown_rx.clone()).await?;
        tasks.push(task);
        tracing::info!(
            issuer = %oidc.issuer,
            discovery = %oidc.issuer.discovery_url(),
            listen = %addr,
            "OIDC issuer serving discovery and JWKS"
        );
        if let Some(warning) = oidc.issuer.cloud_warning() {
            tracing::warn!("{warning}");
        }
    }

    // Admin API on a Unix socket only the owner can open.
    let uds = bind_private_socket(&config.admin_socket)?;
    let admin_svc = AdminServer::new(admin.clone());
    let stop = wait_for(shutdown_rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(admin_svc)
            .serve_with_incoming_shutdown(UnixListenerStream::new(uds), stop)
            .await
        {
            tracing::error!(error = %e, "admin API stopped");
        }
    }));

    tracing::info!(
        trust_domain = %config.trust_domain,
        listen = %listen_addr,
        admin_socket = %config.admin_socket.display(),
        ca_fingerprint = %ca.fingerprint(),
        "hallmark server ready"
    );
    Ok(ServerHandle {
        listen_addr,
        admin_socket: config.admin_socket.clone(),
        admin,
        shared,
        shutdown,
        tasks,
    })
}

/// How often a server on a shared datastore looks for entry changes made
/// by the other servers when the datastore cannot announce them: the floor
/// of cross-server propagation latency, for one tiny query per period.
const DATASTORE_POLL: Duration = Duration::from_millis(50);
/// The same when changes are announced (PostgreSQL NOTIFY): the poll only
/// covers notifications lost while the listening connection was down.
const DATASTORE_POLL_NOTIFIED: Duration = Duration::from_secs(1);
/// How often it reloads the signing authorities others may have rotated.
const AUTHORITY_POLL: Duration = Duration::from_secs(1);
/// How often it checks its connected agents against evictions and bans
/// made through other servers (its own close streams at once).
const AGENT_POLL: Duration = Duration::from_secs(5);

/// Follows changes other servers sharing the datastore make: entry changes
/// wake this server's agent streams (they re-read their entries), authority
/// changes swap the signing keys and bundle, and agents evicted elsewhere
/// lose their streams here too.
async fn follow_datastore(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut notes = shared.store.change_notifications();
    let mut last = shared.store.revision().await.ok();
    let mut failing = false;
    let mut next_authorities = tokio::time::Instant::now() + AUTHORITY_POLL;
    let mut next_agents = tokio::time::Instant::now() + AGENT_POLL;
    loop {
        let period = if notes.is_some() {
            DATASTORE_POLL_NOTIFIED
        } else {
            DATASTORE_POLL
        };
        let deadline = (tokio::time::Instant::now() + period)
            .min(next_authorities)
            .min(next_agents);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            r = async {
                match notes.as_mut() {
                    Some(n) => n.changed().await,
                    None => std::future::pending().await,
                }
            } => if r.is_err() { notes = None },
            _ = shutdown.changed() => return,
        }
        match shared.store.revision().await {
            Ok(rev) => {
                if failing {
                    tracing::info!("datastore reachable again");
                    failing = false;
                }
                if last != Some(rev) {
                    last = Some(rev);
                    shared.entries_changed.send_modify(|v| *v += 1);
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "reading the datastore revision failed; retrying");
                    failing = true;
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= next_authorities {
            next_authorities = now + AUTHORITY_POLL;
            reload_authorities(&shared).await;
        }
        if now >= next_agents {
            next_agents = now + AGENT_POLL;
            end_revoked_streams(&shared).await;
        }
    }
}

/// Picks up authorities another server prepared, activated, retired or
/// tainted; agents' streams follow through the bundle watch.
async fn reload_authorities(shared: &Shared) {
    match shared.ca.reload().await {
        Ok(true) => tracing::info!("signing authorities changed in the datastore; reloaded"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "reloading the signing authorities failed; keeping the current ones")
        }
    }
}

/// Ends the streams of connected agents that another server evicted or
/// banned.
async fn end_revoked_streams(shared: &Shared) {
    let connected = shared.connected.ids();
    if connected.is_empty() {
        return;
    }
    let Ok(agents) = shared.store.list_agents().await else {
        return;
    };
    let allowed: std::collections::HashSet<&SpiffeId> = agents
        .iter()
        .filter(|a| !a.banned)
        .map(|a| &a.spiffe_id)
        .collect();
    for id in connected {
        if !allowed.contains(&id) {
            tracing::info!(agent = %id, "agent evicted or banned through another server; ending its stream");
            let _ = shared.revoked.send(id);
        }
    }
}

/// Serves the admin API over mTLS on `addr`; returns the bound address.
async fn serve_admin_mtls(
    addr: SocketAddr,
    shared: Arc<Shared>,
    admin: AdminService,
    config: &ServerConfig,
    tasks: &mut Vec<JoinHandle<()>>,
    shutdown_rx: watch::Receiver<bool>,
) -> Result<SocketAddr, ServerError> {
    let listen_err = |source| ServerError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
    let bound = listener.local_addr().map_err(listen_err)?;
    let tls = tls::ServerTls::new(shared.ca.clone(), &config.trust_domain)?;
    tasks.push(tokio::spawn(tls.clone().rotate(shutdown_rx.clone())));
    let incoming = tls::incoming(listener, tls, shutdown_rx.clone());
    let stop = wait_for(shutdown_rx);
    let layer = admin_mtls::RequireAdminLayer { shared };
    tasks.push(tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .layer(layer)
            .add_service(AdminServer::new(admin))
            .serve_with_incoming_shutdown(incoming, stop)
            .await
        {
            tracing::error!(error = %e, "admin API over mTLS stopped");
        }
    }));
    Ok(bound)
}

/// How long a client of the server's HTTPS listeners (OIDC discovery, the
/// bundle endpoint) may take to send a request's headers, or sit idle
/// between requests, before its connection is closed: these listeners face
/// the network, and a connection that never speaks must not be kept.
const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/1.1 server settings of those listeners.
pub(crate) fn http1_server() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_TIMEOUT);
    b
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| ServerError::DataDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Binds a Unix socket with mode 0600. A stale socket file left by a killed
/// server is removed; a live one (something answers) is an error.
fn bind_private_socket(path: &Path) -> Result<UnixListener, ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| ServerError::AdminSocket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another server is listening on it",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}
