//! The steps of starting a server, in the order they run: the signing
//! authorities and shared state, the background engines, then each
//! listener. Every listener that may bind port 0 writes its bound address
//! to a file in the data directory once it is bound.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hallmark_core::time::{unix_millis, unix_secs};
use hallmark_proto::hallmark::admin_server::AdminServer;
use hallmark_proto::hallmark::node_server::NodeServer;
use hallmark_store::Store;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

use crate::admin::{mtls::RequireAdminLayer, AdminService};
use crate::authority::CaManager;
use crate::tls::ServerTls;
use crate::{
    federation, flows, follow, inventory, node, oidc, rotation, ServerConfig, ServerError, Shared,
};

impl Shared {
    /// Loads or creates the signing authorities and builds the state every
    /// service shares, with the foreign bundles already loaded so agents'
    /// first Sync update carries them.
    pub(crate) async fn open(
        config: &ServerConfig,
        store: Arc<dyn Store>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Shared>, flows::FlowsStarted), ServerError> {
        let ca = CaManager::load_or_create(
            store.clone(),
            &config.trust_domain,
            &config.ca,
            config.ca_ttl,
            config.jwt_key_alg,
            config.oidc_key_alg,
            config.bundle_refresh_hint,
        )
        .await?;
        let (entries_changed, _) = watch::channel(0);
        let (federation_changed, _) = watch::channel(0);
        let (revoked, _) = tokio::sync::broadcast::channel(64);
        let metrics: Arc<crate::metrics::ServerMetrics> = Arc::default();
        // Created before the flow engine, which decides every flow it
        // stores by the policy in force.
        let policy: Arc<crate::policy::PolicyCell> = Arc::default();
        let started = flows::start(flows::FlowStart {
            config: &config.flows,
            store: store.clone(),
            trust_domain: config.trust_domain.clone(),
            data_dir: &config.data_dir,
            evidence_retention: config.workload_retention,
            metrics: metrics.clone(),
            policy: policy.clone(),
            shutdown,
        })
        .await?;
        let shared = Arc::new(Shared {
            trust_domain: config.trust_domain.clone(),
            store,
            ca: Arc::new(ca),
            entries_changed,
            federation_changed,
            revoked,
            connected: Arc::new(node::ConnectedAgents::default()),
            agent_svid_ttl: config.agent_svid_ttl,
            join_token_ttl: config.join_token_ttl,
            workload_retention: config.workload_retention,
            started_at: unix_secs(SystemTime::now()),
            metrics,
            oidc: config.oidc.clone(),
            federation: federation::Federations::default(),
            flows: started.engine.clone(),
            flow_queries: started.queries.clone(),
            policy,
            identity_groups: watch::channel(Arc::default()).0,
            membership: Arc::default(),
            peer_addresses: watch::channel(Arc::default()).0,
            enforcement: watch::channel(true).0,
            console_key: Arc::new(create_private_dir(&config.data_dir).and_then(|()| {
                crate::console_key::ConsoleKey::load_or_create(&config.data_dir).map_err(|source| {
                    ServerError::ConsoleKey {
                        path: config.data_dir.clone(),
                        source,
                    }
                })
            })?),
        });
        if let Err(e) = federation::reload(&shared).await {
            tracing::warn!(error = %e, "reading federation relationships failed");
        }
        // Before any listener: agents' first Sync update carries the policy.
        crate::policy::versions::load_latest(&shared).await;
        crate::policy::enforcement::follow(&shared).await;
        Ok((shared, started))
    }
}

/// A server being started: what its steps share, and the tasks they have
/// spawned so far.
pub(crate) struct Starting<'a> {
    pub config: &'a ServerConfig,
    pub shared: Arc<Shared>,
    pub shutdown: watch::Receiver<bool>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// An mTLS listener (the node API, the admin API over TCP), bound but not
/// serving yet.
pub(crate) struct BoundMtls {
    listener: TcpListener,
    pub addr: SocketAddr,
    pub tls: ServerTls,
}

impl Starting<'_> {
    /// The background engines: following other servers on a shared
    /// datastore, pruning the inventory, the rotation schedule and the
    /// refresh of foreign bundles.
    pub fn start_engines(&mut self) {
        let shared = &self.shared;
        if shared.store.shared_between_servers() {
            self.tasks.push(tokio::spawn(follow::follow_datastore(
                shared.clone(),
                self.shutdown.clone(),
            )));
        }
        self.tasks.push(tokio::spawn(inventory::prune_loop(
            shared.store.clone(),
            self.config.workload_retention,
            || unix_millis(SystemTime::now()),
            shared.metrics.clone(),
            self.shutdown.clone(),
        )));
        self.tasks.push(tokio::spawn(rotation::schedule_loop(
            shared.clone(),
            self.config.rotation.clone(),
            self.shutdown.clone(),
        )));
        self.tasks.push(tokio::spawn(federation::refresh_loop(
            shared.clone(),
            self.shutdown.clone(),
        )));
        self.tasks
            .push(tokio::spawn(crate::policy::membership::membership_loop(
                shared.clone(),
                self.shutdown.clone(),
            )));
    }

    /// Binds the node API.
    pub async fn bind_node_api(&mut self) -> Result<BoundMtls, ServerError> {
        self.bind_mtls(self.config.listen).await
    }

    /// Binds `addr` for mTLS and starts renewing the server SVID presented
    /// there.
    async fn bind_mtls(&mut self, addr: SocketAddr) -> Result<BoundMtls, ServerError> {
        let listen_err = |source| ServerError::Listen { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
        let bound = listener.local_addr().map_err(listen_err)?;
        let tls = ServerTls::new(self.shared.ca.clone(), &self.config.trust_domain)?;
        self.tasks
            .push(tokio::spawn(tls.clone().rotate(self.shutdown.clone())));
        Ok(BoundMtls {
            listener,
            addr: bound,
            tls,
        })
    }

    /// The SPIFFE bundle endpoint, when configured; with the https_spiffe
    /// profile it presents the node API's SVID.
    pub async fn start_bundle_endpoint(&mut self, node_tls: &ServerTls) -> Result<(), ServerError> {
        let config = &self.config.federation;
        let Some(addr) = config.listen else {
            return Ok(());
        };
        let (bound, task) = federation::serve_endpoint(
            self.shared.clone(),
            config,
            addr,
            node_tls.clone(),
            self.shutdown.clone(),
        )
        .await?;
        self.tasks.push(task);
        // Like listen.addr: lets tests and scripts use port 0.
        let _ = std::fs::write(
            self.config.data_dir.join("federation.addr"),
            format!("{bound}\n"),
        );
        tracing::info!(listen = %bound, "SPIFFE bundle endpoint serving");
        Ok(())
    }

    /// Serves the node API over mTLS; returns its address.
    pub fn serve_node_api(&mut self, api: BoundMtls) -> SocketAddr {
        let incoming = crate::tls::incoming(api.listener, api.tls, self.shutdown.clone());
        let node = NodeServer::new(node::NodeService::new(self.shared.clone()));
        let stop = wait_for(self.shutdown.clone());
        self.tasks.push(tokio::spawn(async move {
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
            self.config.data_dir.join("listen.addr"),
            format!("{}\n", api.addr),
        );
        api.addr
    }

    /// The admin API over mTLS on TCP, when configured, for callers
    /// presenting an admin SVID.
    pub async fn start_admin_mtls(&mut self, admin: &AdminService) -> Result<(), ServerError> {
        let Some(addr) = self.config.admin_listen else {
            return Ok(());
        };
        let BoundMtls {
            listener,
            addr: bound,
            tls,
        } = self.bind_mtls(addr).await?;
        let incoming = crate::tls::incoming(listener, tls, self.shutdown.clone());
        let stop = wait_for(self.shutdown.clone());
        let layer = RequireAdminLayer {
            shared: self.shared.clone(),
        };
        let admin = admin.clone();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .layer(layer)
                .add_service(AdminServer::new(admin))
                .serve_with_incoming_shutdown(incoming, stop)
                .await
            {
                tracing::error!(error = %e, "admin API over mTLS stopped");
            }
        }));
        let _ = std::fs::write(
            self.config.data_dir.join("admin.addr"),
            format!("{bound}\n"),
        );
        tracing::info!(listen = %bound, "admin API over mTLS for admin SVIDs");
        Ok(())
    }

    /// The OIDC discovery document and JWKS, when an issuer is configured,
    /// for cloud federation.
    pub async fn start_oidc_issuer(&mut self) -> Result<(), ServerError> {
        let Some(oidc) = &self.config.oidc else {
            return Ok(());
        };
        let (addr, task) = oidc::start(
            self.shared.clone(),
            oidc,
            &self.config.data_dir,
            self.shutdown.clone(),
        )
        .await?;
        self.tasks.push(task);
        tracing::info!(
            issuer = %oidc.issuer,
            discovery = %oidc.issuer.discovery_url(),
            listen = %addr,
            "OIDC issuer serving discovery and JWKS"
        );
        if let Some(warning) = oidc.issuer.cloud_warning() {
            tracing::warn!("{warning}");
        }
        Ok(())
    }

    /// The admin API on a Unix socket only the owner can open.
    pub fn serve_admin_socket(&mut self, admin: &AdminService) -> Result<(), ServerError> {
        let uds = bind_private_socket(&self.config.admin_socket)?;
        let admin_svc = AdminServer::new(admin.clone());
        let stop = wait_for(self.shutdown.clone());
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(admin_svc)
                .serve_with_incoming_shutdown(UnixListenerStream::new(uds), stop)
                .await
            {
                tracing::error!(error = %e, "admin API stopped");
            }
        }));
        Ok(())
    }
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

/// Resolves once `rx` turns true (or its sender is gone): the graceful
/// shutdown signal of a listener.
pub(crate) async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Waits for the next tick of a periodic task; `false` once the server is
/// stopping.
pub(crate) async fn next_tick(
    tick: &mut tokio::time::Interval,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        tokio::select! {
            _ = tick.tick() => return true,
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return false;
                }
            }
        }
    }
}

pub(crate) fn create_private_dir(path: &Path) -> Result<(), ServerError> {
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
