//! The SPIFFE Workload API (`SpiffeWorkloadAPI`), served from the agent's
//! snapshot. Wire behaviour follows the spec exactly:
//! - every call must carry `workload.spiffe.io: true`, else InvalidArgument;
//! - a caller with no identity gets PermissionDenied "no identity issued";
//! - before the first sync with the server: Unavailable;
//! - streams send the full state at once and again on every change.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use hallmark_core::{EntryId, Selector, SelectorSet, SpiffeId, TrustDomain, Workload};
use hallmark_proto::hallmark as pb;
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use hallmark_proto::WORKLOAD_HEADER;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::attestor::{attest_process, attest_process_cached, Attested, PeerInfo, PeerStream};
use crate::authority_fix::AuthorityFix;
use crate::inventory::Inventory;
use crate::manager::{CachedSvid, Shared, Snapshot};
use crate::token_endpoint::TokenEndpoint;

/// The message SPIFFE clients match on (the Rust `spiffe` crate looks for it).
const NO_IDENTITY: &str = "no identity issued";
/// Reuse a cached JWT-SVID while more than this share of its lifetime is left.
const JWT_REUSE_FRACTION: f64 = 0.5;

/// Accepts Workload API connections, capturing each peer's credentials at
/// accept time and repairing gRPC C-core's `:authority` (see [`AuthorityFix`]).
pub fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = Result<AuthorityFix<PeerStream>, std::io::Error>> {
    incoming_with_tokens(listener, None)
}

/// Like [`incoming`], and when `tokens` is given, connections that do not
/// open with the HTTP/2 preface are served HTTP/1.1 by the token endpoint
/// instead (see [`crate::token_endpoint`]). Credentials are captured at
/// accept either way, before the first byte is looked at.
pub fn incoming_with_tokens(
    listener: UnixListener,
    tokens: Option<Arc<TokenEndpoint>>,
) -> impl Stream<Item = Result<AuthorityFix<PeerStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match (PeerStream::new(stream), &tokens) {
                    (Ok(p), None) => {
                        if tx.send(Ok(AuthorityFix::new(p))).await.is_err() {
                            return;
                        }
                    }
                    // Sniffing waits for the client's first bytes: never in
                    // the accept loop, where one silent client would stall
                    // everyone.
                    (Ok(p), Some(tokens)) => {
                        let (tx, tokens) = (tx.clone(), tokens.clone());
                        tokio::spawn(async move {
                            match crate::token_endpoint::sniff_http2(p.get_ref()).await {
                                Ok(true) => {
                                    let _ = tx.send(Ok(AuthorityFix::new(p))).await;
                                }
                                Ok(false) => tokens.serve(p).await,
                                Err(e) => {
                                    tracing::debug!(error = %e, "reading a Workload API connection's first bytes failed")
                                }
                            }
                        });
                    }
                    (Err(e), _) => tracing::debug!(error = %e, "reading peer credentials failed"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a Workload API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

#[derive(Clone)]
struct CachedJwt {
    token: String,
    issued_at: i64,
    expires_at: i64,
}

/// JWT-SVIDs by (entry, sorted audiences).
type JwtCache = HashMap<(EntryId, Vec<String>), CachedJwt>;

#[derive(Clone)]
pub struct WorkloadService {
    shared: Arc<Shared>,
    inventory: Inventory,
    /// `hallmark:context:<name>`, attested for every caller on this node.
    context_selector: Option<Selector>,
    jwt_cache: Arc<Mutex<JwtCache>>,
}

impl WorkloadService {
    pub fn new(shared: Arc<Shared>, inventory: Inventory) -> Self {
        let context_selector =
            Selector::from_parts("hallmark", "context", inventory.context_name()).ok();
        WorkloadService {
            shared,
            inventory,
            context_selector,
            jwt_cache: Arc::default(),
        }
    }

    /// Header check, readiness check and caller attestation, in that order.
    async fn caller<T>(&self, req: &Request<T>) -> Result<(SelectorSet, Arc<Snapshot>), Status> {
        check_header(req)?;
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("caller credentials unavailable"))?;
        let caller = self.attest_peer(peer).await?;
        Ok((caller.selectors, caller.snapshot))
    }

    /// Readiness check and attestation of the process behind `peer`: what
    /// every API on the socket (gRPC or the token endpoint) decides by.
    pub(crate) async fn attest_peer(&self, peer: PeerInfo) -> Result<Caller, Status> {
        let snap = self.shared.snapshots.borrow().clone();
        if !snap.ready {
            return Err(Status::unavailable(
                "agent is starting: not yet synced with the server",
            ));
        }
        // Inline when the caller's binary was hashed before (the common
        // case); otherwise hash it off the async threads.
        let attested = match attest_process_cached(&peer) {
            Some(r) => r,
            None => tokio::task::spawn_blocking(move || attest_process(&peer))
                .await
                .map_err(|e| Status::internal(format!("attestation task failed: {e}")))?,
        };
        let attested = attested
            .map_err(|e| Status::permission_denied(format!("could not attest caller: {e}")))?;
        let (selectors, container) = self.container_selectors(attested).await;
        // The snapshot may have moved on while the runtime was asked.
        let snapshot = self.shared.snapshots.borrow().clone();
        Ok(Caller {
            selectors,
            snapshot,
            container,
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn context_name(&self) -> &str {
        self.inventory.context_name()
    }

    /// Adds the node's context and, for a process in a container, what the
    /// runtime says about that container. The container ID comes from the
    /// caller's own cgroup (read under the PID-reuse guard), and only that
    /// container's record is used: a container the runtime does not know
    /// (yet) is asked about for a short while, then the caller gets its unix
    /// selectors only, never another container's.
    async fn container_selectors(&self, attested: Attested) -> (SelectorSet, Option<Workload>) {
        let Attested {
            mut selectors,
            cgroup,
        } = attested;
        if let Some(s) = &self.context_selector {
            selectors.insert(s.clone());
        }
        if let Some(id) = cgroup.container_id {
            match self.inventory.resolve(&id).await {
                Some(w) if w.container_id == id && cgroup_matches(&w.cgroup, &cgroup.path) => {
                    for s in w.selectors() {
                        selectors.insert(s);
                    }
                    return (selectors, Some(w));
                }
                Some(w) if w.container_id == id => {
                    // Someone able to create cgroups can name one after
                    // another container; the runtime's own path for that
                    // container tells the impostor apart.
                    self.shared.metrics.unknown_container_calls.inc();
                    tracing::warn!(
                        container = %id,
                        caller_cgroup = %cgroup.path,
                        runtime_cgroup = %w.cgroup,
                        "caller's cgroup names a container but is not that container's cgroup: unix selectors only"
                    );
                }
                _ => {
                    self.shared.metrics.unknown_container_calls.inc();
                    tracing::debug!(container = %id, cgroup = %cgroup.path, "caller's container is unknown to the runtime: unix selectors only");
                }
            }
        }
        (selectors, None)
    }
}

/// An attested caller.
pub(crate) struct Caller {
    pub selectors: SelectorSet,
    /// The snapshot the selectors are to be matched against.
    pub snapshot: Arc<Snapshot>,
    /// The runtime's record of the caller's container, when it is in one
    /// the runtime vouched for.
    pub container: Option<Workload>,
}

/// Whether a caller in cgroup `caller` is inside the container whose cgroup
/// the runtime reports as `runtime` (the same cgroup or one below it). An
/// empty runtime path cannot be checked and is accepted: the container ID
/// itself already came from the caller's own cgroup membership.
fn cgroup_matches(runtime: &str, caller: &str) -> bool {
    if runtime.is_empty() {
        return true;
    }
    let runtime = runtime.trim_end_matches('/');
    caller == runtime
        || caller
            .strip_prefix(runtime)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req
        .metadata()
        .get(WORKLOAD_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some("true") => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "security header missing from request: set metadata `{WORKLOAD_HEADER}: true`"
        ))),
    }
}

/// The caller's SVIDs, default first, skipping expired ones and repeated hints.
fn svids_for<'a>(
    snap: &'a Snapshot,
    selectors: &SelectorSet,
) -> Vec<(&'a hallmark_core::Entry, &'a Arc<CachedSvid>)> {
    let now = SystemTime::now();
    let mut hints = std::collections::HashSet::new();
    snap.entries
        .iter()
        .filter(|e| e.spec.matches(&snap.agent_id, selectors))
        .filter_map(|e| snap.svids.get(&e.id).map(|s| (e, s)))
        .filter(|(_, s)| s.not_after > now)
        .filter(|(e, _)| e.spec.hint.is_empty() || hints.insert(e.spec.hint.clone()))
        .collect()
}

pub(crate) fn matching_entries<'a>(
    snap: &'a Snapshot,
    selectors: &SelectorSet,
) -> Vec<&'a hallmark_core::Entry> {
    snap.entries
        .iter()
        .filter(|e| e.spec.matches(&snap.agent_id, selectors))
        .collect()
}

/// The foreign bundles that `entries` federate with and the agent knows.
fn federated_for<'a>(
    snap: &'a Snapshot,
    entries: impl IntoIterator<Item = &'a hallmark_core::Entry>,
) -> std::collections::BTreeMap<&'a TrustDomain, &'a Arc<hallmark_ca::Bundle>> {
    entries
        .into_iter()
        .flat_map(|e| e.spec.federates_with.iter())
        .filter_map(|td| snap.federated.get_key_value(td))
        .collect()
}

fn td_key(td: &TrustDomain) -> String {
    td.id().to_string()
}

/// FetchJWTBundles carries JWT authorities only: clients parse every key as
/// a JWT key and need its `kid`.
fn jwt_jwks(bundle: &hallmark_ca::Bundle) -> Vec<u8> {
    hallmark_ca::Bundle {
        x509_authorities: Vec::new(),
        ..bundle.clone()
    }
    .to_jwks_json()
}

fn x509_response(snap: &Snapshot, selectors: &SelectorSet) -> Option<X509svidResponse> {
    let svids = svids_for(snap, selectors);
    if svids.is_empty() {
        return None;
    }
    let bundle = snap.bundle.x509_der_concat();
    let federated_bundles = federated_for(snap, svids.iter().map(|(e, _)| *e))
        .into_iter()
        .map(|(td, b)| (td_key(td), b.x509_der_concat()))
        .collect();
    Some(X509svidResponse {
        svids: svids
            .into_iter()
            .map(|(e, s)| X509svid {
                spiffe_id: s.spiffe_id.to_string(),
                x509_svid: s.chain.concat(),
                x509_svid_key: s.key_pkcs8.clone(),
                bundle: bundle.clone(),
                hint: e.spec.hint.clone(),
            })
            .collect(),
        crl: Vec::new(),
        federated_bundles,
    })
}

/// Runs a full-state stream: computes the response from each snapshot and
/// sends it when it differs from the last one sent. Ends with
/// PermissionDenied when the caller no longer has any identity.
fn state_stream<R, F>(
    shared: &Shared,
    selectors: SelectorSet,
    make: F,
) -> Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>
where
    R: PartialEq + Clone + Send + 'static,
    F: Fn(&Snapshot, &SelectorSet) -> Option<R> + Send + 'static,
{
    let mut snapshots = shared.snapshots.subscribe();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut last: Option<R> = None;
        loop {
            let snap = snapshots.borrow_and_update().clone();
            match make(&snap, &selectors) {
                Some(resp) => {
                    if last.as_ref() != Some(&resp) {
                        if tx.send(Ok(resp.clone())).await.is_err() {
                            return;
                        }
                        last = Some(resp);
                    }
                }
                None => {
                    let _ = tx.send(Err(Status::permission_denied(NO_IDENTITY))).await;
                    return;
                }
            }
            tokio::select! {
                r = snapshots.changed() => if r.is_err() {
                    let _ = tx.send(Err(Status::unavailable("agent is shutting down"))).await;
                    return;
                },
                _ = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn json_to_prost(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_prost).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_prost(v)))
                .collect::<BTreeMap<_, _>>(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadService {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let r = self.fetch_x509svid_inner(req).await;
        self.shared.metrics.record("FetchX509SVID", &r);
        r
    }

    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let r = self.fetch_x509_bundles_inner(req).await;
        self.shared.metrics.record("FetchX509Bundles", &r);
        r
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let r = self.fetch_jwtsvid_inner(req).await;
        self.shared.metrics.record("FetchJWTSVID", &r);
        r
    }

    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let r = self.fetch_jwt_bundles_inner(req).await;
        self.shared.metrics.record("FetchJWTBundles", &r);
        r
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let r = self.validate_jwtsvid_inner(req).await;
        self.shared.metrics.record("ValidateJWTSVID", &r);
        r
    }
}

impl WorkloadService {
    async fn fetch_x509svid_inner(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<BoxStream<X509svidResponse>>, Status> {
        let (selectors, snap) = self.caller(&req).await?;
        if x509_response(&snap, &selectors).is_none() {
            return Err(Status::permission_denied(NO_IDENTITY));
        }
        Ok(Response::new(state_stream(
            &self.shared,
            selectors,
            x509_response,
        )))
    }

    async fn fetch_x509_bundles_inner(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<BoxStream<X509BundlesResponse>>, Status> {
        let (selectors, snap) = self.caller(&req).await?;
        let make = |snap: &Snapshot, sel: &SelectorSet| {
            let entries = matching_entries(snap, sel);
            (!entries.is_empty()).then(|| {
                let mut bundles: HashMap<String, Vec<u8>> = federated_for(snap, entries)
                    .into_iter()
                    .map(|(td, b)| (td_key(td), b.x509_der_concat()))
                    .collect();
                bundles.insert(
                    td_key(&snap.bundle.trust_domain),
                    snap.bundle.x509_der_concat(),
                );
                X509BundlesResponse {
                    crl: Vec::new(),
                    bundles,
                }
            })
        };
        if make(&snap, &selectors).is_none() {
            return Err(Status::permission_denied(NO_IDENTITY));
        }
        Ok(Response::new(state_stream(&self.shared, selectors, make)))
    }

    async fn fetch_jwtsvid_inner(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let (selectors, snap) = self.caller(&req).await?;
        let r = req.into_inner();
        if r.audience.is_empty() || r.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument(
                "audience must be specified (at least one, none empty)",
            ));
        }
        let mut entries = matching_entries(&snap, &selectors);
        if entries.is_empty() {
            return Err(Status::permission_denied(NO_IDENTITY));
        }
        if !r.spiffe_id.is_empty() {
            let want = SpiffeId::new(&r.spiffe_id).map_err(|e| {
                Status::invalid_argument(format!("spiffe_id `{}` {e}", r.spiffe_id))
            })?;
            entries.retain(|e| e.spec.spiffe_id == want);
            if entries.is_empty() {
                return Err(Status::permission_denied(format!(
                    "caller is not entitled to {want}"
                )));
            }
        }
        let mut audience = r.audience.clone();
        audience.sort();
        audience.dedup();
        let mut svids = Vec::new();
        let mut seen_hints = std::collections::HashSet::new();
        for e in entries {
            if !e.spec.hint.is_empty() && !seen_hints.insert(e.spec.hint.clone()) {
                continue;
            }
            let token = self.jwt_for(&e.id, &audience).await?;
            svids.push(Jwtsvid {
                spiffe_id: e.spec.spiffe_id.to_string(),
                svid: token,
                hint: e.spec.hint.clone(),
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles_inner(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<BoxStream<JwtBundlesResponse>>, Status> {
        let (selectors, snap) = self.caller(&req).await?;
        let make = |snap: &Snapshot, sel: &SelectorSet| {
            let entries = matching_entries(snap, sel);
            (!entries.is_empty()).then(|| {
                let mut bundles: HashMap<String, Vec<u8>> = federated_for(snap, entries)
                    .into_iter()
                    .map(|(td, b)| (td_key(td), jwt_jwks(b)))
                    .collect();
                bundles.insert(td_key(&snap.bundle.trust_domain), jwt_jwks(&snap.bundle));
                JwtBundlesResponse { bundles }
            })
        };
        if make(&snap, &selectors).is_none() {
            return Err(Status::permission_denied(NO_IDENTITY));
        }
        Ok(Response::new(state_stream(&self.shared, selectors, make)))
    }

    async fn validate_jwtsvid_inner(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&req)?;
        // Tokens of a foreign trust domain are accepted only for callers
        // whose entries federate with it; a caller without an identity can
        // still validate tokens of the agent's own trust domain.
        let federated: std::collections::BTreeMap<TrustDomain, Arc<hallmark_ca::Bundle>> =
            match self.caller(&req).await {
                Ok((selectors, snap)) => federated_for(&snap, matching_entries(&snap, &selectors))
                    .into_iter()
                    .map(|(td, b)| (td.clone(), b.clone()))
                    .collect(),
                Err(_) => Default::default(),
            };
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if r.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let snap = self.shared.snapshots.borrow().clone();
        if !snap.ready {
            return Err(Status::unavailable(
                "agent is starting: not yet synced with the server",
            ));
        }
        let bundle = snap.bundle.clone();
        let lookup = move |td: &TrustDomain| {
            if td == &bundle.trust_domain {
                Some((*bundle).clone())
            } else {
                federated.get(td).map(|b| (**b).clone())
            }
        };
        let v = hallmark_ca::validate_jwt_svid(&r.svid, &r.audience, &lookup, SystemTime::now())
            .map_err(|e| Status::invalid_argument(format!("invalid JWT-SVID: {e}")))?;
        let claims = prost_types::Struct {
            fields: v
                .claims
                .iter()
                .map(|(k, v)| (k.clone(), json_to_prost(v)))
                .collect(),
        };
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: v.spiffe_id.to_string(),
            claims: Some(claims),
        }))
    }

    /// A JWT-SVID for an entry and audience set: from cache while more than
    /// half its lifetime is left, else freshly minted by the server.
    async fn jwt_for(&self, entry: &EntryId, audience: &[String]) -> Result<String, Status> {
        let key = (entry.clone(), audience.to_vec());
        let now = unix_now();
        let cached = self
            .jwt_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
            .filter(|c| !self.shared.jwt_signed_by_tainted_key(&c.token));
        if let Some(c) = &cached {
            let life = (c.expires_at - c.issued_at).max(1) as f64;
            if (c.expires_at - now) as f64 > life * JWT_REUSE_FRACTION {
                return Ok(c.token.clone());
            }
        }
        let client = self.shared.client.borrow().clone();
        let minted = match client {
            Some(mut client) => client
                .new_jwt_svid(pb::NewJwtSvidRequest {
                    entry_id: entry.to_string(),
                    audience: audience.to_vec(),
                })
                .await
                .map(|r| r.into_inner()),
            None => Err(Status::unavailable("not connected to the server")),
        };
        match minted {
            Ok(r) => {
                let mut cache = self.jwt_cache.lock().unwrap_or_else(|p| p.into_inner());
                // Bounded: drop expired tokens before adding.
                cache.retain(|_, c| c.expires_at > now);
                cache.insert(
                    key,
                    CachedJwt {
                        token: r.token.clone(),
                        issued_at: r.issued_at,
                        expires_at: r.expires_at,
                    },
                );
                Ok(r.token)
            }
            // The server is away: a cached token that is still valid beats none.
            Err(s) => match cached {
                Some(c) if c.expires_at > now + 1 => Ok(c.token),
                _ => Err(Status::unavailable(format!(
                    "minting a JWT-SVID: {}",
                    s.message()
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn caller_cgroup_must_be_the_containers() {
        let id = "a".repeat(64);
        let rt = format!("/docker/{id}");
        assert!(super::cgroup_matches(&rt, &rt));
        assert!(super::cgroup_matches(&rt, &format!("{rt}/init.scope")));
        assert!(super::cgroup_matches("", "/anything"));
        assert!(!super::cgroup_matches(
            &rt,
            &format!("/user.slice/user-1000.slice/docker-{id}.scope")
        ));
        assert!(!super::cgroup_matches(&rt, &format!("{rt}x")));
        assert!(!super::cgroup_matches(&rt, "/docker"));
    }
}
