//! The Hallmark node agent.
//!
//! One per node. It attests to the server once with a join token and then
//! authenticates with its own SVID (renewed at half its lifetime). The server
//! pushes the agent's authorized entries over a stream; the agent pre-mints
//! an X509-SVID for each (keys generated here, never sent anywhere), rotates
//! them at about half their lifetime with jitter, and serves them to
//! workloads over the SPIFFE Workload API on a Unix socket. While the server
//! is unreachable it keeps serving what it has cached and reconnects with
//! backoff.
//!
//! - [`attestor`]: who is calling (kernel peer credentials, PID-reuse safe).
//! - [`manager`]: the sync stream, SVID cache and rotation; publishes a
//!   [`manager::Snapshot`] through a watch channel.
//! - [`workload`]: the `SpiffeWorkloadAPI` gRPC service over the snapshot.

pub mod attestor;
pub mod authority_fix;
mod client;
pub mod inventory;
pub mod manager;
pub mod metrics;
mod persist;
pub mod token_endpoint;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;

use hallmark_core::TrustDomain;
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use client::ServerTrustSource;
pub use manager::{ManagerError, Snapshot};

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub trust_domain: TrustDomain,
    pub data_dir: PathBuf,
    /// Server node API addresses (`host:port`), tried in order.
    pub servers: Vec<String>,
    /// The Workload API socket path.
    pub socket_path: PathBuf,
    /// Single-use join token for the first attestation. Ignored when the
    /// agent already holds a valid SVID from an earlier run.
    pub join_token: Option<String>,
    /// First trust in the server, for the join-token attestation.
    pub trust: ServerTrustSource,
    /// Container runtime discovery and the workload inventory.
    pub inventory: inventory::InventoryConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error("Workload API socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A cheap handle on the agent's health.
#[derive(Clone)]
pub struct AgentStatus {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<metrics::AgentMetrics>,
    inventory: inventory::Inventory,
}

impl AgentStatus {
    /// True once the agent has synced with the server.
    pub fn ready(&self) -> bool {
        self.snapshots.borrow().ready
    }

    /// The Prometheus text exposition.
    pub fn metrics(&self) -> String {
        self.metrics.render()
    }

    /// The container runtime and inventory state (runtime found, why a
    /// source is degraded, workload counts).
    pub fn inventory(&self) -> inventory::InventoryStatus {
        self.inventory.status()
    }

    /// The agent's own SPIFFE ID, once attested.
    pub fn agent_id(&self) -> String {
        self.snapshots.borrow().agent_id.to_string()
    }
}

/// A running agent.
pub struct AgentHandle {
    pub socket_path: PathBuf,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The node's workload inventory.
    pub inventory: inventory::Inventory,
    metrics: Arc<metrics::AgentMetrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// Waits until the agent has synced with the server once.
    pub async fn ready(&mut self) {
        let _ = self.snapshots.wait_for(|s| s.ready).await;
    }

    /// Readiness and metrics, for the health endpoint.
    pub fn status(&self) -> AgentStatus {
        AgentStatus {
            snapshots: self.snapshots.clone(),
            metrics: self.metrics.clone(),
            inventory: self.inventory.clone(),
        }
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the agent: loads or obtains its SVID, starts the sync manager and
/// the Workload API. Returns once the socket is listening; the API answers
/// Unavailable until the first sync completes.
pub async fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let manager = manager::Manager::start(&config, shutdown_rx.clone()).await?;
    let snapshots = manager.snapshots();
    let metrics = manager.shared.metrics.clone();
    let mut tasks = vec![manager.task];

    let (inventory, inventory_tasks) = inventory::Inventory::start(
        config.inventory.clone(),
        &config.data_dir,
        inventory::RuntimeSetup::Discover,
        manager.shared.client.subscribe(),
        metrics.clone(),
        shutdown_rx.clone(),
    )
    .await;
    tasks.extend(inventory_tasks);

    let listener = bind_workload_socket(&config.socket_path)?;
    let service = workload::WorkloadService::new(manager.shared.clone(), inventory.clone());
    let mut stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        // HTTP/1.1 on the same socket is the token endpoint.
        let tokens = Arc::new(token_endpoint::TokenEndpoint::new(service.clone()));
        let incoming = workload::incoming_with_tokens(listener, Some(tokens));
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadApiServer::new(service))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        {
            tracing::error!(error = %e, "Workload API stopped");
        }
    }));
    tracing::info!(socket = %config.socket_path.display(), "Workload API listening");
    Ok(AgentHandle {
        socket_path: config.socket_path.clone(),
        snapshots,
        inventory,
        metrics,
        shutdown,
        tasks,
    })
}

/// The Workload API socket is open to every local user (0777): who may get
/// what is decided by attestation, not by file permissions.
fn bind_workload_socket(path: &std::path::Path) -> Result<UnixListener, AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| AgentError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another agent is listening on it",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(err)?;
    Ok(l)
}
