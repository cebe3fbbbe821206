//! A server and an agent in this process, with their state in a temporary
//! directory, and the clients the benchmarks talk to them with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hallmark_agent::{AgentConfig, AgentHandle, ServerTrustSource};
use hallmark_core::TrustDomain;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_client::AdminClient;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::WORKLOAD_HEADER;
use hallmark_server::{ServerConfig, ServerHandle};
use hallmark_store::Store;
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

/// The trust domain every benchmark uses.
pub const TRUST_DOMAIN: &str = "bench.hallmark.test";
/// How long setup steps (agent sync, minting) may take before the run fails.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server with its agent, or with the token and agent ID an
/// agent would need (see [`Cluster::start_server`]).
pub struct Cluster {
    /// Kept for its Drop: removes the state directory.
    dir: TempDir,
    pub server: ServerHandle,
    pub agent: Option<AgentHandle>,
    pub trust_domain: TrustDomain,
    /// The SPIFFE ID the agent was (or will be) attested as.
    pub agent_id: String,
    token: pb::GenerateTokenResponse,
}

impl Cluster {
    /// A server and an attested agent that has completed its first sync.
    pub async fn start() -> Result<Self> {
        Self::start_on(None).await
    }

    /// [`Cluster::start`] on `store` (see [`Cluster::start_server_on`]).
    pub async fn start_on(store: Option<Arc<dyn Store>>) -> Result<Self> {
        let mut cluster = Self::start_server_on(store).await?;
        cluster.start_agent().await?;
        let agent = cluster.agent_mut()?;
        tokio::time::timeout(SETUP_TIMEOUT, agent.ready())
            .await
            .map_err(|_| {
                anyhow!("the agent did not sync with the server within {SETUP_TIMEOUT:?}")
            })?;
        Ok(cluster)
    }

    /// A server and a join token for the agent, but no agent yet, so that
    /// entries can be registered before the agent's first sync.
    pub async fn start_server() -> Result<Self> {
        Self::start_server_on(None).await
    }

    /// [`Cluster::start_server`] on `store` (a SQLite file in the state
    /// directory when `None`).
    pub async fn start_server_on(store: Option<Arc<dyn Store>>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hallmark-bench-")
            .tempdir()
            .context("creating the state directory")?;
        let trust_domain = TrustDomain::new(TRUST_DOMAIN)?;
        let config = server_config(&trust_domain, &dir.path().join("server"))?;
        let server = match store {
            Some(store) => hallmark_server::start_with_store(config, store).await,
            None => hallmark_server::start(config).await,
        }
        .context("starting the server")?;
        let token = generate_token(&mut admin_client(&server.admin_socket).await?, "bench").await?;
        Ok(Cluster {
            dir,
            server,
            agent: None,
            trust_domain,
            agent_id: token.agent_spiffe_id.clone(),
            token,
        })
    }

    /// Starts the agent; returns once it is attested and listening (its
    /// first sync may still be under way).
    pub async fn start_agent(&mut self) -> Result<()> {
        // Benchmarks of the identity plane measure it alone.
        self.start_agent_with(hallmark_agent::inventory::InventoryConfig {
            discovery: hallmark_runtime::discovery::DiscoveryConfig {
                choice: hallmark_runtime::discovery::RuntimeChoice::None,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
    }

    /// [`Cluster::start_agent`] with a container runtime configuration.
    pub async fn start_agent_with(
        &mut self,
        inventory: hallmark_agent::inventory::InventoryConfig,
    ) -> Result<()> {
        let agent_dir = self.dir.path().join("agent");
        let agent = hallmark_agent::start(AgentConfig {
            enforcement: hallmark_agent::enforce::EnforceConfig::off(),
            trust_domain: self.trust_domain.clone(),
            socket_path: agent_dir.join("workload.sock"),
            data_dir: agent_dir,
            servers: vec![self.server.listen_addr.to_string()],
            join_token: Some(self.token.token.clone()),
            trust: ServerTrustSource::Fingerprint(self.token.ca_fingerprint.clone()),
            inventory,
            flows: Default::default(),
            // The identity plane alone: capture would add its own load.
            capture: hallmark_agent::capture::CaptureConfig {
                mode: hallmark_agent::capture::CaptureMode::Off,
                ..Default::default()
            },
        })
        .await
        .context("starting the agent")?;
        self.agent = Some(agent);
        Ok(())
    }

    pub fn agent_mut(&mut self) -> Result<&mut AgentHandle> {
        self.agent
            .as_mut()
            .ok_or_else(|| anyhow!("the agent has not been started"))
    }

    pub fn workload_socket(&self) -> Result<PathBuf> {
        self.agent
            .as_ref()
            .map(|a| a.socket_path.clone())
            .ok_or_else(|| anyhow!("the agent has not been started"))
    }

    /// A directory that lives as long as the cluster, for extra sockets.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn admin(&self) -> Result<AdminClient<Channel>> {
        admin_client(&self.server.admin_socket).await
    }

    /// A workload SPIFFE ID under this trust domain.
    pub fn spiffe_id(&self, path: &str) -> String {
        format!(
            "spiffe://{}/{}",
            self.trust_domain,
            path.trim_start_matches('/')
        )
    }

    /// Registers `spiffe_id` for callers with all of `selectors` on this agent.
    pub async fn create_entry(
        &self,
        admin: &mut AdminClient<Channel>,
        spiffe_id: &str,
        selectors: &[String],
    ) -> Result<pb::Entry> {
        create_entry(admin, &self.agent_id, spiffe_id, selectors).await
    }

    /// Waits until the agent's snapshot holds at least `n` SVIDs.
    pub async fn wait_for_svids(&mut self, n: usize, timeout: Duration) -> Result<Duration> {
        let agent = self.agent_mut()?;
        let start = Instant::now();
        tokio::time::timeout(timeout, agent.snapshots.wait_for(|s| s.svids.len() >= n))
            .await
            .map_err(|_| anyhow!("the agent did not hold {n} SVIDs within {timeout:?}"))?
            .map_err(|_| anyhow!("the agent stopped while waiting for {n} SVIDs"))?;
        Ok(start.elapsed())
    }

    pub async fn shutdown(self) {
        if let Some(agent) = self.agent {
            agent.shutdown().await;
        }
        self.server.shutdown().await;
    }
}

/// The benchmarks' server configuration with its state under `data_dir`.
pub fn server_config(trust_domain: &TrustDomain, data_dir: &Path) -> Result<ServerConfig> {
    Ok(ServerConfig {
        ca_ttl: Duration::from_secs(86_400),
        ..ServerConfig::new(trust_domain.clone(), data_dir.to_path_buf())
    })
}

pub async fn generate_token(
    admin: &mut AdminClient<Channel>,
    node: &str,
) -> Result<pb::GenerateTokenResponse> {
    Ok(admin
        .generate_token(pb::GenerateTokenRequest {
            node: node.into(),
            ttl_secs: 600,
        })
        .await
        .map_err(|s| anyhow!("GenerateToken for node {node}: {}", s.message()))?
        .into_inner())
}

pub async fn create_entry(
    admin: &mut AdminClient<Channel>,
    parent_id: &str,
    spiffe_id: &str,
    selectors: &[String],
) -> Result<pb::Entry> {
    Ok(admin
        .create_entry(pb::CreateEntryRequest {
            spiffe_id: spiffe_id.into(),
            parent_id: parent_id.into(),
            selectors: selectors.to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("CreateEntry {spiffe_id}: {}", s.message()))?
        .into_inner())
}

pub async fn delete_entry(admin: &mut AdminClient<Channel>, id: &str) -> Result<()> {
    admin
        .delete_entry(pb::DeleteEntryRequest { id: id.into() })
        .await
        .map_err(|s| anyhow!("DeleteEntry {id}: {}", s.message()))?;
    Ok(())
}

/// A gRPC channel over one new connection to a Unix socket. tonic wants a
/// URI; with a custom connector it is never resolved.
pub async fn uds_channel(path: &Path) -> Result<Channel> {
    let p = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to {}", path.display()))
}

pub async fn admin_client(path: &Path) -> Result<AdminClient<Channel>> {
    Ok(AdminClient::new(uds_channel(path).await?))
}

pub async fn workload_client(path: &Path) -> Result<SpiffeWorkloadApiClient<Channel>> {
    Ok(SpiffeWorkloadApiClient::new(uds_channel(path).await?))
}

/// A Workload API request with the header every call must carry.
pub fn workload_request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        WORKLOAD_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

/// The `unix:uid` selector of this process.
pub fn own_uid_selector() -> String {
    format!("unix:uid:{}", nix::unistd::getuid().as_raw())
}
