//! The SPIFFE Workload API (`SpiffeWorkloadAPI`), served from the agent's
//! snapshot. Wire behaviour follows the spec exactly:
//! - every call must carry `workload.spiffe.io: true`, else InvalidArgument;
//! - a caller with no identity gets PermissionDenied "no identity issued";
//! - before the first sync with the server: Unavailable;
//! - streams send the full state at once and again on every change.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use futures::Stream;
use hallmark_core::{EntryId, SelectorSet, SpiffeId, TrustDomain};
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use hallmark_proto::WORKLOAD_HEADER;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::attestor::PeerInfo;
use crate::caller::{CallerAttestor, NO_IDENTITY};
use crate::state::{AgentState, CachedSvid, Snapshot};
use crate::token_cache::TokenCache;

/// The gRPC service. Cheap to clone.
#[derive(Clone)]
pub struct WorkloadService {
    shared: Arc<AgentState>,
    callers: CallerAttestor,
    tokens: Arc<TokenCache>,
}

impl WorkloadService {
    pub fn new(shared: Arc<AgentState>, callers: CallerAttestor, tokens: Arc<TokenCache>) -> Self {
        WorkloadService {
            shared,
            callers,
            tokens,
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
        let caller = self.callers.attest(peer).await?;
        Ok((caller.selectors, caller.snapshot))
    }
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

/// The bundles a caller with `selectors` gets, by trust domain, each
/// encoded by `encode`: its own trust domain's and those its entries
/// federate with. `None` when the caller has no identity.
fn bundles_for(
    snap: &Snapshot,
    selectors: &SelectorSet,
    encode: fn(&hallmark_ca::Bundle) -> Vec<u8>,
) -> Option<HashMap<String, Vec<u8>>> {
    let entries = snap.matching_entries(selectors);
    if entries.is_empty() {
        return None;
    }
    let mut bundles: HashMap<String, Vec<u8>> = federated_for(snap, entries)
        .into_iter()
        .map(|(td, b)| (td_key(td), encode(b)))
        .collect();
    bundles.insert(td_key(&snap.bundle.trust_domain), encode(&snap.bundle));
    Some(bundles)
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
    shared: &AgentState,
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
            bundles_for(snap, sel, hallmark_ca::Bundle::x509_der_concat).map(|bundles| {
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
        let mut entries = snap.matching_entries(&selectors);
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
            let token = self.jwt_svid(&e.id, &audience).await?;
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
            bundles_for(snap, sel, jwt_jwks).map(|bundles| JwtBundlesResponse { bundles })
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
                Ok((selectors, snap)) => federated_for(&snap, snap.matching_entries(&selectors))
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

    /// A JWT-SVID for an entry and audience set, from the token cache.
    async fn jwt_svid(&self, entry: &EntryId, audience: &[String]) -> Result<String, Status> {
        self.tokens
            .jwt_svid(entry, audience)
            .await
            .map(|t| t.token)
            .map_err(|s| Status::unavailable(format!("minting a JWT-SVID: {}", s.message())))
    }
}
