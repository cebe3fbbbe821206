//! The agent's sync with the server: one task owns the connection to the
//! server, the authorized entries, the bundle and the X509-SVID cache, and
//! publishes them as an immutable [`Snapshot`] through a watch channel
//! (see [`crate::state`]). The Workload API reads snapshots; it never waits
//! on the server for X.509. Joining with a token and renewing the agent's
//! own SVID happen here too; minting workload SVIDs is in `svid`.
//!
//! Invariants:
//! - a cached SVID is only replaced by a newer one, never dropped because a
//!   renewal failed: while the server is away, valid SVIDs keep being served;
//! - SVIDs of entries the server no longer authorizes are dropped at once;
//! - workload private keys are generated here and never leave the process
//!   (the server only ever sees CSRs).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hallmark_ca::tls::ServerTrust;
use hallmark_ca::Bundle;
use hallmark_core::spiffe_id::AGENT_PATH_PREFIX;
use hallmark_core::{Entry, TrustDomain};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_client::NodeClient;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::client::{self, ClientError, ServerTrustSource};
use crate::persist::{self, AgentCredentials, PersistError};
use crate::state::{AgentState, CachedSvid, Snapshot};
use crate::svid::{mint_batch, remaining, signed_by_any, validity};
use crate::AgentConfig;

/// CSRs per BatchNewX509Svid call (the server's limit).
const BATCH: usize = 1000;
/// First retry after a failed renewal; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long the first attestation keeps retrying an unreachable server.
const ATTEST_RETRY_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("agent state in {0}")]
    Persist(#[from] PersistError),
    #[error("this agent has no valid SVID yet: start it with --join-token (get one with `hallmark token generate`)")]
    NeedJoinToken,
    #[error("first contact with the server needs explicit trust: pass --ca-fingerprint (printed by `hallmark token generate`) or --trust-bundle FILE")]
    NeedTrust,
    #[error("reading the trust bundle {path}: {reason}")]
    TrustBundle { path: String, reason: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the server refused the join token: {0}")]
    Attest(String),
    #[error("CA: {0}")]
    Ca(#[from] hallmark_ca::CaError),
    #[error("the server sent an invalid {what}: {reason}")]
    BadServerData { what: &'static str, reason: String },
}

/// The running sync task and the state it publishes.
pub(crate) struct SyncTask {
    pub shared: Arc<AgentState>,
    pub task: JoinHandle<()>,
}

impl SyncTask {
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.snapshots.subscribe()
    }

    pub async fn start(
        config: &AgentConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, SyncError> {
        persist::create_dir(&config.data_dir)?;
        let td = config.trust_domain.clone();
        let saved = persist::load_credentials(&config.data_dir)?;
        let saved_bundle = persist::load_bundle(&config.data_dir, &td)?;
        let (creds, bundle) = match (saved, saved_bundle) {
            (Some(c), Some(b)) if remaining(&c.chain[0]) > Duration::from_secs(30) => {
                tracing::info!("resuming with the agent SVID from an earlier run");
                (c, b)
            }
            _ => attest(config).await?,
        };
        let agent_id = hallmark_ca::spiffe_id_from_cert(&creds.chain[0])?;
        let snapshot = Snapshot {
            ready: false,
            agent_id: agent_id.clone(),
            entries: Vec::new(),
            svids: HashMap::new(),
            bundle: Arc::new(bundle),
            federated: BTreeMap::new(),
        };
        let shared = Arc::new(AgentState {
            trust_domain: td,
            snapshots: watch::channel(Arc::new(snapshot)).0,
            client: watch::channel(None).0,
            metrics: Arc::default(),
            tainted_jwt_keys: RwLock::new(Vec::new()),
            policy: Default::default(),
        });
        let worker = Worker {
            shared: shared.clone(),
            servers: config.servers.clone(),
            data_dir: config.data_dir.clone(),
            creds,
            roots: Arc::new(RwLock::new(Vec::new())),
            backoff: MIN_BACKOFF,
            renew_agent_now: false,
            policy_status: None,
        };
        let task = tokio::spawn(worker.run(shutdown));
        Ok(SyncTask { shared, task })
    }
}

fn load_trust(config: &AgentConfig) -> Result<ServerTrust, SyncError> {
    match &config.trust {
        ServerTrustSource::Fingerprint(fp) => Ok(ServerTrust::Fingerprint(fp.to_ascii_lowercase())),
        ServerTrustSource::BundleFile(path) => {
            let bad = |reason: String| SyncError::TrustBundle {
                path: path.display().to_string(),
                reason,
            };
            let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let roots: Vec<Vec<u8>> = pem::parse_many(&data)
                .map_err(|e| bad(e.to_string()))?
                .into_iter()
                .filter(|p| p.tag() == "CERTIFICATE")
                .map(|p| p.into_contents())
                .collect();
            if roots.is_empty() {
                return Err(bad("no CERTIFICATE block found".into()));
            }
            Ok(client::roots_trust(roots))
        }
        ServerTrustSource::None => Err(SyncError::NeedTrust),
    }
}

/// First contact: join token + CSR for a key made here.
async fn attest(config: &AgentConfig) -> Result<(AgentCredentials, Bundle), SyncError> {
    let token = config.join_token.clone().ok_or(SyncError::NeedJoinToken)?;
    let trust = load_trust(config)?;
    let td = &config.trust_domain;
    // The CSR's names are ignored by the server, which assigns the ID bound
    // to the token.
    let placeholder = td
        .id_with_path(AGENT_PATH_PREFIX.trim_end_matches('/'))
        .map_err(|e| SyncError::BadServerData {
            what: "trust domain",
            reason: e.to_string(),
        })?;
    let (key_pkcs8, csr) = hallmark_ca::generate_key_and_csr(&placeholder)?;
    let tls = client::tls_config(td, trust, None)?;
    let deadline = Instant::now() + ATTEST_RETRY_FOR;
    let mut backoff = MIN_BACKOFF;
    let mut client = loop {
        match client::connect(&config.servers, tls.clone()).await {
            Ok(c) => break c,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tracing::warn!(error = %e, "server not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let resp = client
        .attest(pb::AttestRequest {
            join_token: token,
            csr,
        })
        .await
        .map_err(|s| SyncError::Attest(s.message().to_string()))?
        .into_inner();
    let svid = resp.svid.ok_or(SyncError::BadServerData {
        what: "attestation response",
        reason: "no SVID".into(),
    })?;
    let bundle = parse_bundle(td, resp.bundle)?;
    let creds = AgentCredentials {
        key_pkcs8,
        chain: svid.cert_chain,
    };
    if creds.chain.is_empty() {
        return Err(SyncError::BadServerData {
            what: "agent SVID",
            reason: "empty chain".into(),
        });
    }
    persist::save_credentials(&config.data_dir, &creds)?;
    persist::save_bundle(&config.data_dir, &bundle)?;
    tracing::info!(agent = %svid.spiffe_id, "attested with the join token");
    Ok((creds, bundle))
}

fn parse_bundle(td: &TrustDomain, b: Option<pb::Bundle>) -> Result<Bundle, SyncError> {
    let b = b.ok_or(SyncError::BadServerData {
        what: "bundle",
        reason: "missing".into(),
    })?;
    hallmark_proto::convert::bundle_from_pb(td, &b).map_err(|e| SyncError::BadServerData {
        what: "bundle",
        reason: e.to_string(),
    })
}

/// The foreign bundles of a Sync update. One that does not parse is left
/// out with a warning: a bad foreign bundle must not stop the agent from
/// serving its own trust domain. Unchanged bundles keep their `Arc`, so
/// streams can tell what changed cheaply.
fn parse_federated(
    update: &[pb::Bundle],
    current: &BTreeMap<TrustDomain, Arc<Bundle>>,
) -> BTreeMap<TrustDomain, Arc<Bundle>> {
    let mut out = BTreeMap::new();
    for b in update {
        let td = match TrustDomain::new(&b.trust_domain) {
            Ok(td) => td,
            Err(e) => {
                tracing::warn!(trust_domain = %b.trust_domain, error = %e, "server sent a federated bundle with a bad trust domain name; skipping it");
                continue;
            }
        };
        match hallmark_proto::convert::bundle_from_pb(&td, b) {
            Ok(parsed) => {
                let bundle = match current.get(&td) {
                    Some(old) if **old == parsed => old.clone(),
                    _ => Arc::new(parsed),
                };
                out.insert(td, bundle);
            }
            Err(e) => {
                tracing::warn!(trust_domain = %td, error = %e, "server sent a federated bundle that does not parse; skipping it")
            }
        }
    }
    out
}

struct Worker {
    shared: Arc<AgentState>,
    servers: Vec<String>,
    data_dir: std::path::PathBuf,
    creds: AgentCredentials,
    /// Roots the TLS client trusts, updated in place when the bundle changes.
    roots: Arc<RwLock<Vec<Vec<u8>>>>,
    backoff: Duration,
    /// The agent SVID was signed by a tainted authority: renew it now
    /// instead of at half its lifetime.
    renew_agent_now: bool,
    /// The policy status last written to the data directory.
    policy_status: Option<crate::policy::PolicyStatus>,
}

/// Why a sync session ended.
enum SessionEnd {
    Shutdown,
    Reconnect,
}

impl Worker {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshots.borrow().clone()
    }

    fn publish(&self, f: impl FnOnce(&Snapshot) -> Snapshot) {
        let next = Arc::new(f(&self.snapshot()));
        let m = &self.shared.metrics;
        m.svids_cached.set(next.svids.len() as i64);
        m.ready.set(i64::from(next.ready));
        self.shared.snapshots.send_replace(next);
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        *self.roots.write().unwrap_or_else(|p| p.into_inner()) =
            self.snapshot().bundle.x509_authorities.clone();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let end = self.session(&mut shutdown).await;
            self.shared.metrics.server_connected.set(0);
            match end {
                SessionEnd::Shutdown => return,
                SessionEnd::Reconnect => {}
            }
            let wait = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            let jittered = wait.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
            tokio::select! {
                _ = tokio::time::sleep(jittered) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One connection's life: connect, renew the agent SVID if due, follow
    /// the entry stream and keep SVIDs fresh until something breaks.
    async fn session(&mut self, shutdown: &mut watch::Receiver<bool>) -> SessionEnd {
        let identity = Some((self.creds.chain.clone(), self.creds.key_pkcs8.clone()));
        let tls = match client::tls_config(
            &self.shared.trust_domain,
            ServerTrust::Roots(self.roots.clone()),
            identity,
        ) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "building the TLS client failed");
                return SessionEnd::Reconnect;
            }
        };
        let mut client = match client::connect(&self.servers, tls).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "server unreachable; serving cached SVIDs");
                return SessionEnd::Reconnect;
            }
        };
        let (not_before, not_after) = validity(&self.creds.chain[0]);
        let half = not_after
            .duration_since(not_before)
            .unwrap_or(Duration::ZERO)
            / 2;
        if self.renew_agent_now || SystemTime::now() >= not_before + half {
            match self.renew_agent(&mut client).await {
                // Reconnect at once so every call presents the new SVID.
                Ok(()) => {
                    self.backoff = Duration::ZERO;
                    return SessionEnd::Reconnect;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the agent SVID failed");
                    return SessionEnd::Reconnect;
                }
            }
        }
        let agent_renew_at = Instant::now()
            + (not_before + half)
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
        self.shared.client.send_replace(Some(client.clone()));

        let mut stream = match client.sync(pb::SyncRequest {}).await {
            Ok(s) => s.into_inner(),
            Err(s) => {
                if s.code() == tonic::Code::PermissionDenied {
                    tracing::error!(error = %s.message(), "the server refuses this agent");
                } else {
                    tracing::warn!(error = %s, "opening the entry stream failed");
                }
                return SessionEnd::Reconnect;
            }
        };
        self.shared.metrics.server_connected.set(1);
        let mut retry_at: Option<Instant> = None;
        loop {
            let next_svid = self.snapshot().svids.values().map(|s| s.renew_at).min();
            let due = [Some(agent_renew_at), next_svid, retry_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(agent_renew_at);
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(update)) => {
                        self.backoff = MIN_BACKOFF;
                        // Before the entries: the document comes only when
                        // the revision changes, so an update refused for a
                        // bad entry must not lose it.
                        self.apply_policy(&update);
                        if let Err(e) = self.apply(update) {
                            tracing::error!(error = %e, "ignoring an invalid update from the server");
                            continue;
                        }
                        retry_at = self.refresh(&mut client).await;
                        self.publish(|s| Snapshot {
                            ready: true,
                            agent_id: s.agent_id.clone(),
                            entries: s.entries.clone(),
                            svids: s.svids.clone(),
                            bundle: s.bundle.clone(),
                            federated: s.federated.clone(),
                        });
                        if self.renew_agent_now {
                            return SessionEnd::Reconnect;
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("the server closed the entry stream; reconnecting");
                        return SessionEnd::Reconnect;
                    }
                    Err(s) => {
                        tracing::warn!(error = %s, "entry stream broke; reconnecting");
                        return SessionEnd::Reconnect;
                    }
                },
                _ = tokio::time::sleep_until(due) => {
                    if Instant::now() >= agent_renew_at {
                        return SessionEnd::Reconnect;
                    }
                    retry_at = self.refresh(&mut client).await;
                }
                _ = shutdown.changed() => return SessionEnd::Shutdown,
            }
        }
    }

    async fn renew_agent(&mut self, client: &mut NodeClient<Channel>) -> Result<(), SyncError> {
        let id = hallmark_ca::spiffe_id_from_cert(&self.creds.chain[0])?;
        let (key_pkcs8, csr) = hallmark_ca::generate_key_and_csr(&id)?;
        let svid = client
            .renew_agent(pb::RenewAgentRequest { csr })
            .await
            .map_err(|s| SyncError::Attest(s.message().to_string()))?
            .into_inner()
            .svid
            .ok_or(SyncError::BadServerData {
                what: "renewal",
                reason: "no SVID".into(),
            })?;
        self.creds = AgentCredentials {
            key_pkcs8,
            chain: svid.cert_chain,
        };
        persist::save_credentials(&self.data_dir, &self.creds)?;
        self.renew_agent_now = false;
        tracing::info!(agent = %id, "agent SVID renewed");
        Ok(())
    }

    /// Takes the policy part of an update and refreshes the status file
    /// `hallmark agent status` reads.
    fn apply_policy(&mut self, update: &pb::SyncUpdate) {
        let status = self
            .shared
            .policy
            .apply(update, &self.shared.metrics)
            .status();
        if self.policy_status.as_ref() != Some(&status) {
            crate::policy::write_status(&self.data_dir, &status);
            self.policy_status = Some(status);
        }
    }

    /// Takes the server's view of entries and bundle; drops SVIDs of
    /// entries that are gone.
    fn apply(&mut self, update: pb::SyncUpdate) -> Result<(), SyncError> {
        let mut entries = update
            .entries
            .iter()
            .map(Entry::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SyncError::BadServerData {
                what: "entry",
                reason: e.to_string(),
            })?;
        entries.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let current = self.snapshot();
        let bundle = match update.bundle {
            Some(b) => {
                let parsed = parse_bundle(&self.shared.trust_domain, Some(b))?;
                if parsed != *current.bundle {
                    persist::save_bundle(&self.data_dir, &parsed)?;
                    *self.roots.write().unwrap_or_else(|p| p.into_inner()) =
                        parsed.x509_authorities.clone();
                    Arc::new(parsed)
                } else {
                    current.bundle.clone()
                }
            }
            None => current.bundle.clone(),
        };
        let mut svids = current.svids.clone();
        svids.retain(|id, _| entries.iter().any(|e| &e.id == id));
        // What a tainted authority signed is re-issued now, not at half
        // its lifetime; the tainted root stays in the bundle meanwhile, so
        // the current SVIDs keep verifying until they are replaced.
        *self
            .shared
            .tainted_jwt_keys
            .write()
            .unwrap_or_else(|p| p.into_inner()) = update.tainted_jwt_keys.clone();
        let tainted = &update.tainted_x509_authorities;
        if !tainted.is_empty() {
            let now = Instant::now();
            for svid in svids.values_mut() {
                if svid.renew_at > now && signed_by_any(&svid.chain, &bundle, tainted) {
                    *svid = Arc::new(CachedSvid {
                        entry_id: svid.entry_id.clone(),
                        spiffe_id: svid.spiffe_id.clone(),
                        chain: svid.chain.clone(),
                        key_pkcs8: svid.key_pkcs8.clone(),
                        not_after: svid.not_after,
                        entry_revision: svid.entry_revision,
                        renew_at: now,
                    });
                }
            }
            if signed_by_any(&self.creds.chain, &bundle, tainted) {
                tracing::warn!("the agent SVID was signed by a tainted authority; renewing it now");
                self.renew_agent_now = true;
            }
        }
        let federated = parse_federated(&update.federated_bundles, &current.federated);
        self.publish(|s| Snapshot {
            ready: s.ready,
            agent_id: s.agent_id.clone(),
            entries,
            svids,
            bundle,
            federated,
        });
        Ok(())
    }

    /// Mints SVIDs for entries that have none, whose entry changed, or whose
    /// renewal time has come. Returns when to retry if some failed.
    async fn refresh(&mut self, client: &mut NodeClient<Channel>) -> Option<Instant> {
        let snap = self.snapshot();
        let now = Instant::now();
        let due: Vec<Entry> = snap
            .entries
            .iter()
            .filter(|e| match snap.svids.get(&e.id) {
                None => true,
                Some(s) => s.renew_at <= now || s.entry_revision != e.revision,
            })
            .cloned()
            .collect();
        if due.is_empty() {
            return None;
        }
        let mut minted = Vec::with_capacity(due.len());
        let mut failed = false;
        for chunk in due.chunks(BATCH) {
            match mint_batch(client, chunk).await {
                Ok((ok, any_failed)) => {
                    minted.extend(ok);
                    failed |= any_failed;
                }
                Err(s) => {
                    tracing::warn!(error = %s, count = chunk.len(), "signing SVIDs failed; keeping the current ones");
                    failed = true;
                    break;
                }
            }
        }
        self.shared.metrics.svids_minted.inc_by(minted.len() as u64);
        if failed {
            self.shared.metrics.svid_mint_failures.inc();
        }
        if !minted.is_empty() {
            tracing::debug!(count = minted.len(), "SVIDs minted");
            self.publish(|s| {
                let mut svids = s.svids.clone();
                for m in minted {
                    // The entry may have been removed while we were signing.
                    if s.entries.iter().any(|e| e.id == m.entry_id) {
                        svids.insert(m.entry_id.clone(), Arc::new(m));
                    }
                }
                Snapshot {
                    ready: s.ready,
                    agent_id: s.agent_id.clone(),
                    entries: s.entries.clone(),
                    svids,
                    bundle: s.bundle.clone(),
                    federated: s.federated.clone(),
                }
            });
        }
        failed.then(|| Instant::now() + Duration::from_secs(2))
    }
}
