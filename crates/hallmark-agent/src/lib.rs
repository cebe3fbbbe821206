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
//! - [`sync`]: the sync stream with the server, the agent's own SVID, and
//!   the SVID cache and rotation (minting in `svid`); publishes a
//!   [`Snapshot`] of [`state`] through a watch channel.
//! - [`socket`]: the Workload API socket; each connection goes by its first
//!   bytes to one of two sibling APIs:
//!   - [`workload`]: the `SpiffeWorkloadAPI` gRPC service over the snapshot;
//!   - [`token_endpoint`]: OIDC tokens over plain HTTP/1.1, and
//!     [`authorize`]: policy decisions about the caller on the same path.
//! - [`policy`]: the identity policy and identity groups from the sync
//!   stream, what `authorize` decides with.
//! - [`caller`]: who is calling, for both APIs: [`attestor`] (kernel peer
//!   credentials, PID-reuse safe) plus what the container runtime says
//!   ([`inventory`]).
//! - [`token_cache`]: JWT-SVIDs and OIDC tokens minted by the server, cached
//!   for both APIs.
//! - [`h2_authority`]: the HTTP/2 `:authority` repair for gRPC C-core
//!   clients.
//! - [`identity`]: each running workload's selectors and SPIFFE IDs,
//!   derived as for a caller and reported with the inventory.
//! - [`flows`]: flow reports (batched, spooled until acknowledged) and
//!   ownership heartbeats, the agent's evidence for flow attribution.
//! - [`capture`]: eBPF capture of every connection on the node (programs in
//!   `hallmark_bpf`), each tagged with its local workload, fed to `flows`.
//! - [`enforce`]: the identity policy enforced in the node's kernel
//!   (`--enforcement`, `--on-agent-exit`), its events reported as flows.

// Not `forbid(unsafe_code)`: the attestor makes the pidfd and clock
// syscalls that the PID-reuse guard needs through `libc`.

pub mod attestor;
pub mod authorize;
pub mod caller;
pub mod capture;
mod client;
pub mod enforce;
pub mod flows;
pub mod h2_authority;
pub mod identity;
pub mod inventory;
pub mod metrics;
mod persist;
pub mod policy;
pub mod socket;
pub mod state;
mod svid;
pub mod sync;
pub mod token_cache;
pub mod token_endpoint;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;

use hallmark_core::TrustDomain;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use client::ServerTrustSource;
pub use state::Snapshot;
pub use sync::SyncError;

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
    /// Flow reporting and ownership heartbeats.
    pub flows: flows::FlowConfig,
    /// eBPF flow capture (`--flows`).
    pub capture: capture::CaptureConfig,
    /// Policy enforcement in the kernel (`--enforcement`,
    /// `--on-agent-exit`).
    pub enforcement: enforce::EnforceConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("agent configuration: {0}")]
    Config(String),
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
    flows: flows::Flows,
    capture: capture::CaptureHandle,
    policy: watch::Receiver<Arc<policy::AgentPolicy>>,
    enforcement: enforce::EnforceHandle,
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

    /// Flow reporting: spool depth, drops, the last ownership heartbeat.
    pub fn flows(&self) -> flows::FlowStatus {
        self.flows.status()
    }

    /// Flow capture: running or why not, drops, map use.
    pub fn capture(&self) -> capture::CaptureStatus {
        self.capture.status()
    }

    /// The policy in force: revision, size, and why the server's latest
    /// revision is not in force when it is not.
    pub fn policy(&self) -> policy::PolicyStatus {
        self.policy.borrow().status()
    }

    /// Policy enforcement in the kernel: mode, revision in force, map use,
    /// the last install error.
    pub fn enforcement(&self) -> enforce::EnforceStatus {
        self.enforcement.status()
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
    /// Flow reporting; capture sends flows to `flows.sink()`.
    pub flows: flows::Flows,
    /// eBPF flow capture.
    pub capture: capture::CaptureHandle,
    /// The identity policy in force on this node.
    pub policy: watch::Receiver<Arc<policy::AgentPolicy>>,
    /// Policy enforcement in the kernel.
    pub enforcement: enforce::EnforceHandle,
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
            flows: self.flows.clone(),
            capture: self.capture.clone(),
            policy: self.policy.clone(),
            enforcement: self.enforcement.clone(),
        }
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the agent: loads or obtains its SVID, starts the sync task and
/// the Workload API. Returns once the socket is listening; the API answers
/// Unavailable until the first sync completes.
pub async fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
    config.flows.validate().map_err(AgentError::Config)?;
    config.capture.validate().map_err(AgentError::Config)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let sync = sync::SyncTask::start(&config, shutdown_rx.clone()).await?;
    let snapshots = sync.snapshots();
    let policy = sync.shared.policy.subscribe();
    let metrics = sync.shared.metrics.clone();
    let mut tasks = vec![sync.task];

    let (inventory, inventory_tasks) = inventory::Inventory::start(
        config.inventory.clone(),
        &config.data_dir,
        inventory::RuntimeSetup::Discover,
        sync.shared.client.subscribe(),
        metrics.clone(),
        shutdown_rx.clone(),
    )
    .await;
    tasks.extend(inventory_tasks);
    tasks.push(tokio::spawn(identity::run(
        inventory.clone(),
        snapshots.clone(),
        metrics.clone(),
        config.inventory.resync_interval,
        shutdown_rx.clone(),
    )));
    let (flows, flow_tasks) = flows::Flows::start(
        config.flows.clone(),
        inventory.clone(),
        sync.shared.client.subscribe(),
        metrics.clone(),
        shutdown_rx.clone(),
    );
    tasks.extend(flow_tasks);
    let (capture, capture_task) = capture::start(
        config.capture.clone(),
        flows.sink(),
        inventory.clone(),
        metrics.clone(),
        &config.data_dir,
        shutdown_rx.clone(),
    )
    .map_err(AgentError::Config)?;
    tasks.extend(capture_task);
    let (enforcement, enforce_task) = enforce::start(
        config.enforcement.clone(),
        enforce::EnforceDeps {
            policy: policy.clone(),
            snapshots: snapshots.clone(),
            inventory: inventory.clone(),
            sink: flows.sink(),
            metrics: metrics.clone(),
        },
        &config.data_dir,
        shutdown_rx.clone(),
    );
    tasks.push(enforce_task);

    let listener = socket::bind(&config.socket_path).map_err(|source| AgentError::Socket {
        path: config.socket_path.clone(),
        source,
    })?;
    let callers = caller::CallerAttestor::new(sync.shared.clone(), inventory.clone());
    let tokens = Arc::new(token_cache::TokenCache::new(sync.shared.clone()));
    let workload =
        workload::WorkloadService::new(sync.shared.clone(), callers.clone(), tokens.clone());
    let token_endpoint = Arc::new(token_endpoint::TokenEndpoint::new(
        sync.shared.clone(),
        callers,
        tokens,
    ));
    tasks.push(tokio::spawn(socket::serve(
        listener,
        workload,
        token_endpoint,
        shutdown_rx,
    )));
    tracing::info!(socket = %config.socket_path.display(), "Workload API listening");
    Ok(AgentHandle {
        socket_path: config.socket_path.clone(),
        snapshots,
        inventory,
        flows,
        capture,
        policy,
        enforcement,
        metrics,
        shutdown,
        tasks,
    })
}
