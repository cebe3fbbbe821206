//! The node API: what agents call.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::Stream;
use hallmark_core::time::{unix_millis, unix_secs};
use hallmark_core::{Entry, EntryId, SpiffeId};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_server::Node;
use hallmark_store::{AgentRecord, EntryFilter, SnapshotOutcome, StoreError};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::inventory::parse_report;
use crate::policy::{CurrentPolicy, IdentityGroups, PeerAddresses};
use crate::Shared;

/// SVIDs are back-dated by this much (see hallmark-ca).
const SVID_BACKDATE_SECS: i64 = 10;
/// Rounding of certificate times to whole seconds.
const CLOCK_SLACK_SECS: i64 = 1;

/// Largest CSR batch one call may carry; larger batches are split by the agent.
pub const MAX_BATCH: usize = 1000;

/// Agents with an open entry stream, for `agent list` and status.
#[derive(Default)]
pub(crate) struct ConnectedAgents(Mutex<HashMap<SpiffeId, usize>>);

impl ConnectedAgents {
    fn enter(self: &Arc<Self>, id: &SpiffeId) -> ConnectedGuard {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default() += 1;
        ConnectedGuard {
            set: self.clone(),
            id: id.clone(),
        }
    }

    pub fn is_connected(&self, id: &SpiffeId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The agents with an open stream now.
    pub fn ids(&self) -> Vec<SpiffeId> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

struct ConnectedGuard {
    set: Arc<ConnectedAgents>,
    id: SpiffeId,
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        let mut m = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

pub(crate) struct NodeService {
    shared: Arc<Shared>,
    connected: Arc<ConnectedAgents>,
}

impl NodeService {
    pub fn new(shared: Arc<Shared>) -> Self {
        let connected = shared.connected.clone();
        NodeService { shared, connected }
    }

    /// The calling agent, from its verified client certificate, checked
    /// against the registry: it must be attested, not banned, and present
    /// the SVID most recently issued to it (an evicted or superseded SVID
    /// is refused even while it has not expired).
    async fn authorize<T>(&self, req: &Request<T>) -> Result<SpiffeId, Status> {
        let certs = req.peer_certs().ok_or_else(|| {
            Status::unauthenticated("this call needs the agent's SVID as TLS client certificate")
        })?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
        let id = hallmark_ca::spiffe_id_from_cert(leaf.as_ref())
            .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
        if !id.is_member_of(&self.shared.trust_domain) || id.agent_node().is_none() {
            return Err(Status::permission_denied(format!(
                "{id} is not an agent ID of this trust domain"
            )));
        }
        let record = self
            .shared
            .store
            .get_agent(&id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "agent {id} is not attested (evicted?); re-join with a new token"
                ))
            })?;
        if record.banned {
            return Err(Status::permission_denied(format!("agent {id} is banned")));
        }
        // SVIDs issued before the agent's current attestation belong to an
        // earlier (evicted) registration of this node and are refused. Any
        // later one is accepted, so an agent killed between a renewal and
        // saving its new SVID can still come back with the previous one.
        if not_before_of(leaf.as_ref())? + SVID_BACKDATE_SECS + CLOCK_SLACK_SECS
            < record.attested_at
        {
            return Err(Status::permission_denied(format!(
                "agent {id} presented an SVID from before its current registration; re-join with a new token"
            )));
        }
        Ok(id)
    }

    async fn sign_agent_svid(
        &self,
        id: &SpiffeId,
        csr: &[u8],
    ) -> Result<(pb::X509Svid, String), Status> {
        let auth = self.shared.ca.current();
        let chain = auth
            .x509
            .sign_x509_svid(csr, id, &[], self.shared.agent_svid_ttl, SystemTime::now())
            .map_err(|e| Status::invalid_argument(format!("agent CSR: {e}")))?;
        let serial = serial_of(&chain[0])?;
        let expires_at = not_after_of(&chain[0])?;
        Ok((
            pb::X509Svid {
                spiffe_id: id.to_string(),
                cert_chain: chain,
                expires_at,
            },
            serial,
        ))
    }

    /// One of the agent's own entries, by ID; anything else is refused.
    async fn agent_entry(&self, agent: &SpiffeId, entry_id: &str) -> Result<Entry, Status> {
        let id = EntryId::parse(entry_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.shared
            .store
            .get_entry(&id)
            .await
            .map_err(internal)?
            .filter(|e| &e.spec.parent_id == agent)
            .ok_or_else(|| {
                Status::permission_denied(format!("entry {id} is not authorized for this agent"))
            })
    }

    async fn entries_for(&self, agent: &SpiffeId) -> Result<Vec<Entry>, Status> {
        self.shared
            .store
            .list_entries(&EntryFilter {
                parent_id: Some(agent.clone()),
                ..Default::default()
            })
            .await
            .map_err(internal)
    }
}

fn check_audience(audience: &[String]) -> Result<(), Status> {
    if audience.is_empty() || audience.iter().any(String::is_empty) {
        return Err(Status::invalid_argument(
            "audience must list at least one non-empty value",
        ));
    }
    Ok(())
}

pub(crate) fn internal(e: StoreError) -> Status {
    tracing::error!(error = %e, "datastore error");
    Status::internal(format!("datastore: {e}"))
}

fn parse_cert(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, Status> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| Status::internal(format!("parsing a certificate: {e}")))
}

fn serial_of(der: &[u8]) -> Result<String, Status> {
    Ok(hex::encode(parse_cert(der)?.raw_serial()))
}

fn not_before_of(der: &[u8]) -> Result<i64, Status> {
    Ok(parse_cert(der)?.validity().not_before.timestamp())
}

fn not_after_of(der: &[u8]) -> Result<i64, Status> {
    Ok(parse_cert(der)?.validity().not_after.timestamp())
}

pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What an agent was last sent; a new update goes out when it changes.
#[derive(PartialEq)]
struct SyncState {
    entries: BTreeMap<EntryId, i64>,
    bundle_sequence: u64,
    federated_bundles: Vec<pb::Bundle>,
    tainted: crate::authority::Tainted,
}

/// The policy an agent was last sent: the revision, the identity groups
/// and the peer map (compared by value, since they are republished whole)
/// and the enforcement switch.
#[derive(Default)]
struct PolicySent {
    revision: Option<i64>,
    groups: Option<Arc<IdentityGroups>>,
    peers: Option<Arc<PeerAddresses>>,
    enforcement: Option<bool>,
}

/// The policy state in force when an update is built.
struct PolicyNow {
    in_force: Arc<CurrentPolicy>,
    groups: Arc<IdentityGroups>,
    peers: Arc<PeerAddresses>,
    enforcement: bool,
}

/// What of the policy a Sync update must carry.
struct PolicyNews {
    document: bool,
    groups: bool,
    peers: bool,
    enforcement: bool,
}

/// Whether a republished whole value differs from the one sent.
fn differs<T: PartialEq>(sent: Option<&Arc<T>>, now: &Arc<T>) -> bool {
    sent.is_none_or(|s| !Arc::ptr_eq(s, now) && **s != **now)
}

impl PolicySent {
    fn news(&self, now: &PolicyNow) -> PolicyNews {
        PolicyNews {
            document: self.revision != Some(now.in_force.revision),
            groups: differs(self.groups.as_ref(), &now.groups),
            peers: differs(self.peers.as_ref(), &now.peers),
            enforcement: self.enforcement != Some(now.enforcement),
        }
    }

    fn of(now: PolicyNow) -> Self {
        PolicySent {
            revision: Some(now.in_force.revision),
            groups: Some(now.groups),
            peers: Some(now.peers),
            enforcement: Some(now.enforcement),
        }
    }
}

impl PolicyNews {
    fn any(&self) -> bool {
        self.document || self.groups || self.peers || self.enforcement
    }

    /// Every update names the revision in force and the enforcement
    /// switch; the document goes out on a stream's first update and when
    /// the revision changed, the groups and the peer map likewise when
    /// they changed.
    fn fill(&self, update: &mut pb::SyncUpdate, now: &PolicyNow) {
        let (in_force, groups) = (&now.in_force, &now.groups);
        update.policy_revision = in_force.revision;
        update.enforcement = crate::policy::enforcement::word(now.enforcement).to_string();
        if self.document {
            update.policy_document = in_force.document.clone();
        }
        if self.peers {
            update.peer_addresses_sent = true;
            update.peer_addresses = now
                .peers
                .addresses
                .iter()
                .map(|(ip, names)| pb::PeerAddress {
                    ip: ip.to_string(),
                    groups: names.clone(),
                })
                .collect();
        }
        if self.groups {
            update.identity_groups_sent = true;
            update.identity_groups = groups
                .groups
                .iter()
                .map(|(id, names)| pb::IdentityGroups {
                    spiffe_id: id.clone(),
                    groups: names.clone(),
                })
                .collect();
        }
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::SyncUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Node for NodeService {
    async fn attest(
        &self,
        req: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        let req = req.into_inner();
        if req.join_token.is_empty() {
            return Err(Status::invalid_argument("join_token is empty"));
        }
        // Verify the CSR before spending the token, so a malformed request
        // does not burn it.
        hallmark_ca::verify_csr(&req.csr)
            .map_err(|e| Status::invalid_argument(format!("agent CSR: {e}")))?;
        let now = unix_secs(SystemTime::now());
        let id = match self
            .shared
            .store
            .consume_join_token(&hash_token(&req.join_token), now)
            .await
        {
            Ok(id) => id,
            Err(
                e @ (StoreError::TokenNotFound | StoreError::TokenExpired | StoreError::TokenUsed),
            ) => {
                return Err(Status::permission_denied(format!(
                    "join token refused: {e}"
                )))
            }
            Err(e) => return Err(internal(e)),
        };
        if let Some(prev) = self.shared.store.get_agent(&id).await.map_err(internal)? {
            if prev.banned {
                return Err(Status::permission_denied(format!("agent {id} is banned")));
            }
        }
        let (svid, serial) = self.sign_agent_svid(&id, &req.csr).await?;
        self.shared
            .store
            .upsert_agent(&AgentRecord {
                spiffe_id: id.clone(),
                serial,
                expires_at: svid.expires_at,
                attested_at: now,
                last_seen: now,
                banned: false,
            })
            .await
            .map_err(internal)?;
        self.shared.metrics.attestation("ok");
        tracing::info!(agent = %id, "agent attested with a join token");
        Ok(Response::new(pb::AttestResponse {
            svid: Some(svid),
            bundle: Some(pb::Bundle::from(&*self.shared.ca.bundle())),
        }))
    }

    async fn renew_agent(
        &self,
        req: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let id = self.authorize(&req).await?;
        let (svid, serial) = self.sign_agent_svid(&id, &req.get_ref().csr).await?;
        let mut record = self
            .shared
            .store
            .get_agent(&id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::permission_denied(format!("agent {id} was evicted")))?;
        record.serial = serial;
        record.expires_at = svid.expires_at;
        record.last_seen = unix_secs(SystemTime::now());
        self.shared
            .store
            .upsert_agent(&record)
            .await
            .map_err(internal)?;
        tracing::debug!(agent = %id, "agent SVID renewed");
        Ok(Response::new(pb::RenewAgentResponse { svid: Some(svid) }))
    }

    type SyncStream = SyncStream;

    async fn sync(&self, req: Request<pb::SyncRequest>) -> Result<Response<SyncStream>, Status> {
        let id = self.authorize(&req).await?;
        let _ = self
            .shared
            .store
            .touch_agent(&id, unix_secs(SystemTime::now()))
            .await;
        let (tx, rx) = mpsc::channel(4);
        let shared = self.shared.clone();
        let guard = self.connected.enter(&id);
        let mut changed = shared.entries_changed.subscribe();
        let mut bundles = shared.ca.subscribe_bundle();
        let mut federation = shared.federation_changed.subscribe();
        let mut revoked = shared.revoked.subscribe();
        let mut policy = shared.policy.subscribe();
        let mut groups = shared.identity_groups.subscribe();
        let mut peers = shared.peer_addresses.subscribe();
        let mut enforcement = shared.enforcement.subscribe();
        let svc = NodeService {
            shared: shared.clone(),
            connected: self.connected.clone(),
        };
        tokio::spawn(async move {
            let _guard = guard;
            let mut last: Option<SyncState> = None;
            let mut sent = PolicySent::default();
            loop {
                changed.borrow_and_update();
                federation.borrow_and_update();
                let bundle = bundles.borrow_and_update().clone();
                let now = PolicyNow {
                    in_force: policy.borrow_and_update().clone(),
                    groups: groups.borrow_and_update().clone(),
                    peers: peers.borrow_and_update().clone(),
                    enforcement: *enforcement.borrow_and_update(),
                };
                let entries = match svc.entries_for(&id).await {
                    Ok(e) => e,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let fingerprint: BTreeMap<EntryId, i64> =
                    entries.iter().map(|e| (e.id.clone(), e.revision)).collect();
                let federated_bundles = crate::federation::bundles_for(&svc.shared, &entries).await;
                let tainted = svc.shared.ca.tainted();
                let state = SyncState {
                    entries: fingerprint,
                    bundle_sequence: bundle.sequence,
                    federated_bundles,
                    tainted,
                };
                let policy_news = sent.news(&now);
                if last.as_ref() != Some(&state) || policy_news.any() {
                    let mut update = pb::SyncUpdate {
                        entries: entries.iter().map(pb::Entry::from).collect(),
                        bundle: Some(pb::Bundle::from(&*bundle)),
                        revision: *changed.borrow() as i64,
                        federated_bundles: state.federated_bundles.clone(),
                        tainted_x509_authorities: state.tainted.x509.clone(),
                        tainted_jwt_keys: state.tainted.jwt.clone(),
                        ..Default::default()
                    };
                    policy_news.fill(&mut update, &now);
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                    last = Some(state);
                    sent = PolicySent::of(now);
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    r = bundles.changed() => if r.is_err() { return },
                    r = federation.changed() => if r.is_err() { return },
                    r = policy.changed() => if r.is_err() { return },
                    r = groups.changed() => if r.is_err() { return },
                    r = peers.changed() => if r.is_err() { return },
                    r = enforcement.changed() => if r.is_err() { return },
                    r = revoked.recv() => match r {
                        Ok(who) if who == id => {
                            let _ = tx.send(Err(Status::permission_denied(format!("agent {id} was evicted or banned")))).await;
                            return;
                        }
                        _ => {}
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn batch_new_x509_svid(
        &self,
        req: Request<pb::BatchNewX509SvidRequest>,
    ) -> Result<Response<pb::BatchNewX509SvidResponse>, Status> {
        let agent = self.authorize(&req).await?;
        let requests = req.into_inner().requests;
        if requests.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "batch of {} CSRs exceeds the limit of {MAX_BATCH}",
                requests.len()
            )));
        }
        let entries: HashMap<String, Entry> = self
            .entries_for(&agent)
            .await?
            .into_iter()
            .map(|e| (e.id.to_string(), e))
            .collect();
        let auth = self.shared.ca.current();
        // Signing is CPU work: keep it off the async workers, and spread a
        // large batch over every core (each CSR costs a signature check and
        // a signature).
        let results = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let chunk = requests.len().div_ceil(threads).max(16);
            std::thread::scope(|scope| {
                let workers: Vec<_> = requests
                    .chunks(chunk)
                    .map(|part| {
                        let (auth, entries) = (&auth, &entries);
                        scope.spawn(move || {
                            part.iter()
                                .map(|r| sign_one(auth, entries, r, now))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| {
                        w.join().unwrap_or_else(|_| {
                            vec![pb::SvidResult {
                                error: "signing worker panicked".into(),
                                ..Default::default()
                            }]
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|e| Status::internal(format!("signing task failed: {e}")))?;
        let signed = results.iter().filter(|r| r.svid.is_some()).count() as u64;
        self.shared.metrics.x509_svids_signed.inc_by(signed);
        self.shared
            .metrics
            .x509_sign_failures
            .inc_by(results.len() as u64 - signed);
        Ok(Response::new(pb::BatchNewX509SvidResponse { results }))
    }

    async fn new_jwt_svid(
        &self,
        req: Request<pb::NewJwtSvidRequest>,
    ) -> Result<Response<pb::NewJwtSvidResponse>, Status> {
        let agent = self.authorize(&req).await?;
        let req = req.into_inner();
        let entry = self.agent_entry(&agent, &req.entry_id).await?;
        check_audience(&req.audience)?;
        let now = SystemTime::now();
        let ttl = Duration::from_secs(entry.spec.jwt_ttl_secs);
        let token = self
            .shared
            .ca
            .current()
            .jwt
            .mint(&entry.spec.spiffe_id, &req.audience, ttl, now, None)
            .map_err(|e| Status::internal(format!("minting a JWT-SVID: {e}")))?;
        let issued_at = unix_secs(SystemTime::now());
        self.shared.metrics.jwt_svids_minted.inc();
        Ok(Response::new(pb::NewJwtSvidResponse {
            token,
            issued_at,
            expires_at: issued_at + ttl.as_secs() as i64,
        }))
    }

    async fn new_oidc_token(
        &self,
        req: Request<pb::NewOidcTokenRequest>,
    ) -> Result<Response<pb::NewJwtSvidResponse>, Status> {
        let agent = self.authorize(&req).await?;
        let req = req.into_inner();
        let entry = self.agent_entry(&agent, &req.entry_id).await?;
        check_audience(&req.audience)?;
        let answer =
            crate::oidc::mint_for_entry(&self.shared, &entry, &req.audience, &req.attributes)?;
        Ok(Response::new(answer))
    }

    async fn report_inventory(
        &self,
        req: Request<pb::InventoryReport>,
    ) -> Result<Response<pb::InventoryAck>, Status> {
        let metrics = &self.shared.metrics;
        let agent = self.authorize(&req).await.inspect_err(|_| {
            metrics.report_rejected("unauthorized");
        })?;
        let report = parse_report(&agent, req.into_inner()).map_err(|e| {
            metrics.report_rejected(e.reason());
            tracing::warn!(agent = %agent, error = %e, "inventory report refused");
            Status::invalid_argument(format!("inventory report: {e}"))
        })?;
        let applied = self
            .shared
            .store
            .apply_inventory(&report, unix_millis(SystemTime::now()))
            .await
            .map_err(internal)?;
        self.shared.membership.changed();
        metrics.inventory_reports.inc();
        metrics.inventory_events.inc_by(applied.events);
        match applied.snapshot {
            SnapshotOutcome::Completed { marked_stopped } if marked_stopped > 0 => {
                tracing::debug!(agent = %agent, context = %report.context_name, marked_stopped, "inventory snapshot complete; unlisted workloads stopped");
            }
            SnapshotOutcome::Incomplete { missing_pages } => {
                tracing::warn!(agent = %agent, context = %report.context_name, missing_pages, "inventory snapshot ended with pages missing; no workload was marked stopped");
            }
            _ => {}
        }
        crate::flows::api::inventory_evidence(&self.shared.flows, &agent, &report).await;
        // Again once the index holds the report's evidence: the peer map
        // reads it.
        self.shared.membership.changed();
        Ok(Response::new(pb::InventoryAck {}))
    }

    async fn report_flows(
        &self,
        req: Request<pb::FlowBatch>,
    ) -> Result<Response<pb::FlowAck>, Status> {
        let agent = self.authorize(&req).await?;
        let s = &self.shared;
        crate::flows::api::report_flows(&s.flows, &s.metrics, &agent, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn heartbeat(
        &self,
        req: Request<pb::OwnershipHeartbeat>,
    ) -> Result<Response<pb::HeartbeatAck>, Status> {
        let agent = self.authorize(&req).await?;
        let s = &self.shared;
        crate::flows::api::heartbeat(&s.flows, &s.metrics, &agent, req.into_inner())
            .await
            .map(Response::new)
    }
}

/// Signs one CSR of a batch for an entry the agent is authorized for.
fn sign_one(
    auth: &crate::authority::Authorities,
    entries: &HashMap<String, Entry>,
    r: &pb::SvidRequest,
    now: SystemTime,
) -> pb::SvidResult {
    let fail = |error: String| pb::SvidResult {
        entry_id: r.entry_id.clone(),
        svid: None,
        error,
    };
    let Some(entry) = entries.get(&r.entry_id) else {
        return fail(format!(
            "entry {} is not authorized for this agent",
            r.entry_id
        ));
    };
    match auth.x509.sign_x509_svid(
        &r.csr,
        &entry.spec.spiffe_id,
        &entry.spec.dns_names,
        Duration::from_secs(entry.spec.x509_ttl_secs),
        now,
    ) {
        Ok(chain) => match not_after_of(&chain[0]) {
            Ok(expires_at) => pb::SvidResult {
                entry_id: r.entry_id.clone(),
                svid: Some(pb::X509Svid {
                    spiffe_id: entry.spec.spiffe_id.to_string(),
                    cert_chain: chain,
                    expires_at,
                }),
                error: String::new(),
            },
            Err(e) => fail(e.message().to_string()),
        },
        Err(e) => fail(format!("CSR for entry {}: {e}", r.entry_id)),
    }
}

/// Validates a node name for `/hallmark/agent/<node>`.
pub(crate) fn agent_id_for_node(shared: &Shared, node: &str) -> Result<SpiffeId, Status> {
    if node.contains('/') {
        return Err(Status::invalid_argument(format!(
            "node name `{node}` must not contain `/`"
        )));
    }
    shared
        .trust_domain
        .agent_id(node)
        .map_err(|e| Status::invalid_argument(format!("node name `{node}`: {e}")))
}
