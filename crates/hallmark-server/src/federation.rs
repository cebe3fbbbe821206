//! Federation with other trust domains: the SPIFFE bundle endpoint this
//! server serves, the relationships operators create, and the refresh of
//! foreign bundles.
//!
//! Relationships and the foreign bundles live in the datastore, so every
//! server on one PostgreSQL sees the same ones. Each server keeps the decoded
//! bundles in memory ([`Federations`]), rebuilt from the datastore every
//! [`TICK`] by [`refresh_loop`], which also fetches the bundles that are due
//! and wakes the agents' Sync streams when any foreign bundle changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hallmark_ca::tls::ServerTrust;
use hallmark_ca::Bundle;
use hallmark_core::{Entry, SpiffeId, TrustDomain};
use hallmark_proto::hallmark as pb;
use hallmark_store::{FederationProfile, FederationRecord, FederationRefresh};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::Status;

use crate::node::{bundle_to_pb, internal};
use crate::tls::ServerTls;
use crate::{unix_now, Shared};

/// How often the refresh loop re-reads the relationships.
const TICK: Duration = Duration::from_secs(1);
/// A fetch gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A bundle larger than this is refused.
const MAX_BUNDLE_BYTES: usize = 1 << 20;
/// When the foreign bundle has no `spiffe_refresh_hint`.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const MIN_REFRESH: Duration = Duration::from_secs(10);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Retry delays after failed fetches: doubling from the first to the last.
const FIRST_RETRY: Duration = Duration::from_secs(10);
const MAX_RETRY: Duration = Duration::from_secs(300);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bundle endpoint this server serves to other trust domains.
#[derive(Debug, Clone, Default)]
pub struct FederationConfig {
    /// Where to serve the SPIFFE bundle endpoint; `None` serves none.
    pub listen: Option<SocketAddr>,
    /// How the endpoint authenticates itself.
    pub profile: EndpointProfile,
}

/// The certificate the bundle endpoint presents.
#[derive(Debug, Clone, Default)]
pub enum EndpointProfile {
    /// An X509-SVID for `spiffe://<td>/hallmark/server`, renewed like the
    /// node API's.
    #[default]
    HttpsSpiffe,
    /// The operator's WebPKI certificate chain and key (PEM files).
    HttpsWeb { cert: PathBuf, key: PathBuf },
}

/// Why the bundle endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Binding the listen address failed.
    #[error("federation bundle endpoint: listening on {addr}: {source} (pick another address with --federation-listen)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// An https_web certificate or key file is unreadable or not PEM.
    #[error("federation bundle endpoint: {path}: {reason} (--federation-tls-cert takes a PEM certificate chain, --federation-tls-key a PEM private key)")]
    WebCert { path: PathBuf, reason: String },
    /// rustls refused the https_web certificate and key.
    #[error(
        "federation bundle endpoint: the certificate and key do not make a TLS configuration: {0}"
    )]
    Tls(String),
}

/// Why a foreign bundle could not be fetched or was refused.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The endpoint URL does not parse or is not https.
    #[error("bundle endpoint URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    /// https_spiffe needs the foreign X.509 authorities to authenticate
    /// the endpoint, and none are known.
    #[error("no X.509 authorities of {0} are known to authenticate its https_spiffe endpoint; delete the relationship and create it again with --trust-bundle")]
    NoRoots(TrustDomain),
    /// The endpoint SPIFFE ID does not parse.
    #[error("endpoint SPIFFE ID `{0}` is not a valid SPIFFE ID")]
    EndpointId(String),
    /// An https_web extra root does not parse.
    #[error("web CA PEM: {0}")]
    WebCa(String),
    /// TCP, TLS or HTTP failed.
    #[error("fetching {url}: {reason}")]
    Transport { url: String, reason: String },
    /// No answer within [`FETCH_TIMEOUT`].
    #[error("fetching {url}: no answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    /// The endpoint answered with a status other than 200.
    #[error("fetching {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    /// The body is larger than [`MAX_BUNDLE_BYTES`].
    #[error("fetching {url}: the bundle is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge { url: String },
    /// The body is not a usable SPIFFE bundle.
    #[error("bundle of {td} from {url} refused: {reason}")]
    Bundle {
        td: TrustDomain,
        url: String,
        reason: String,
    },
}

/// Foreign bundles decoded from the datastore, and per-relationship retry
/// state.
#[derive(Default)]
pub(crate) struct Federations {
    bundles: RwLock<BTreeMap<TrustDomain, Arc<Bundle>>>,
    /// The retry delay after each relationship's last failed fetch.
    backoff: Mutex<HashMap<TrustDomain, Duration>>,
}

/// The foreign bundles that `entries` federate with, one per trust domain,
/// ordered by trust domain name. Domains without a known bundle are left
/// out.
pub(crate) async fn bundles_for(shared: &Shared, entries: &[Entry]) -> Vec<pb::Bundle> {
    let wanted: BTreeSet<&TrustDomain> = entries
        .iter()
        .flat_map(|e| e.spec.federates_with.iter())
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let bundles = shared
        .federation
        .bundles
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    wanted
        .into_iter()
        .filter_map(|td| bundles.get(td))
        .map(|b| bundle_to_pb(b))
        .collect()
}

/// Rebuilds the in-memory bundles from the datastore and wakes the agents'
/// streams if any differs from before.
pub(crate) async fn reload(shared: &Shared) -> Result<(), hallmark_store::StoreError> {
    let records = shared.store.list_federations().await?;
    let mut fresh = BTreeMap::new();
    let now = unix_now();
    for r in &records {
        if r.last_refresh > 0 {
            shared
                .metrics
                .federation_bundle_age
                .get_or_create(&crate::metrics::TrustDomainLabels {
                    trust_domain: r.trust_domain.to_string(),
                })
                .set(now.saturating_sub(r.last_refresh));
        }
        if r.bundle.is_empty() {
            continue;
        }
        match Bundle::from_jwks_json(&r.trust_domain, &r.bundle) {
            Ok(b) => {
                fresh.insert(r.trust_domain.clone(), Arc::new(b));
            }
            Err(e) => {
                tracing::warn!(trust_domain = %r.trust_domain, error = %e, "stored foreign bundle does not parse; leaving it out")
            }
        }
    }
    let changed = {
        let mut bundles = shared
            .federation
            .bundles
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let changed = *bundles != fresh;
        *bundles = fresh;
        changed
    };
    if changed {
        shared.federation_changed.send_modify(|n| *n += 1);
    }
    Ok(())
}

/// Every [`TICK`]: reloads the relationships, fetches the due ones, until
/// shutdown.
pub(crate) async fn refresh_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = reload(&shared).await {
            tracing::warn!(error = %e, "reading federation relationships failed");
        }
        if let Ok(records) = shared.store.list_federations().await {
            let now = unix_now();
            let due = records.into_iter().filter(|r| r.next_refresh <= now);
            let fetches = due.map(|r| {
                let shared = shared.clone();
                async move { refresh_one(&shared, &r).await }
            });
            let results = futures::future::join_all(fetches).await;
            if results.iter().any(|r| r.is_ok()) {
                if let Err(e) = reload(&shared).await {
                    tracing::warn!(error = %e, "reading federation relationships failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Fetches one relationship's bundle and records the outcome.
async fn refresh_one(shared: &Shared, r: &FederationRecord) -> Result<(), String> {
    let now = unix_now();
    let outcome = match fetch(r).await {
        Ok((bundle, json)) => {
            shared
                .federation
                .backoff
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&r.trust_domain);
            shared.metrics.federation_refreshes_ok.inc();
            let every = match bundle.refresh_hint_secs {
                0 => DEFAULT_REFRESH,
                s => Duration::from_secs(s).clamp(MIN_REFRESH, MAX_REFRESH),
            };
            tracing::debug!(trust_domain = %r.trust_domain, sequence = bundle.sequence, "foreign bundle fetched");
            FederationRefresh::Fetched {
                bundle: json,
                sequence: bundle.sequence,
                at: now,
                next_refresh: now.saturating_add(every.as_secs() as i64),
            }
        }
        Err(e) => {
            shared.metrics.federation_refreshes_failed.inc();
            let delay = {
                let mut backoff = shared
                    .federation
                    .backoff
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let d = backoff
                    .get(&r.trust_domain)
                    .map_or(FIRST_RETRY, |d| (*d * 2).min(MAX_RETRY));
                backoff.insert(r.trust_domain.clone(), d);
                d
            };
            tracing::warn!(trust_domain = %r.trust_domain, error = %e, retry_in_secs = delay.as_secs(), "fetching a foreign bundle failed; keeping the one in force");
            FederationRefresh::Failed {
                error: e.to_string(),
                next_refresh: now.saturating_add(delay.as_secs() as i64),
            }
        }
    };
    let ok = matches!(outcome, FederationRefresh::Fetched { .. });
    shared
        .store
        .record_federation_refresh(&r.trust_domain, &outcome)
        .await
        .map_err(|e| e.to_string())?;
    if ok {
        Ok(())
    } else {
        Err(String::new())
    }
}

/// Fetches the relationship's bundle endpoint: the parsed bundle and the
/// JSON as received.
async fn fetch(r: &FederationRecord) -> Result<(Bundle, Vec<u8>), FetchError> {
    let url_text = r.bundle_endpoint_url.clone();
    let bad_url = |reason: &str| FetchError::Url {
        url: url_text.clone(),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(&r.bundle_endpoint_url).map_err(|e| bad_url(&e.to_string()))?;
    if url.scheme() != "https" {
        return Err(bad_url("the scheme must be https"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| bad_url("it has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let config = client_config(r)?;
    let server_name = ServerName::try_from(host.clone())
        .map_err(|_| bad_url("the host is not a valid DNS name or IP address"))?;
    let transport = |reason: String| FetchError::Transport {
        url: url_text.clone(),
        reason,
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let body = tokio::time::timeout(FETCH_TIMEOUT, async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| transport(format!("connecting: {e}")))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| transport(format!("TLS: {e}{}", tls_hint(r.profile, &e))))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| transport(format!("HTTP: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| transport(format!("building the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transport(format!("HTTP: {e}")))?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(FetchError::Status {
                url: url_text.clone(),
                status: resp.status().as_u16(),
            });
        }
        let body = Limited::new(resp.into_body(), MAX_BUNDLE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge {
                        url: url_text.clone(),
                    }
                } else {
                    transport(format!("reading the body: {e}"))
                }
            })?;
        Ok(body.to_bytes().to_vec())
    })
    .await
    .map_err(|_| FetchError::Timeout {
        url: url_text.clone(),
        secs: FETCH_TIMEOUT.as_secs(),
    })??;
    let bundle =
        parse_foreign_bundle(&r.trust_domain, &body).map_err(|reason| FetchError::Bundle {
            td: r.trust_domain.clone(),
            url: url_text.clone(),
            reason,
        })?;
    Ok((bundle, body))
}

/// A foreign bundle document we can use: it parses and has X.509
/// authorities (without them neither its SVIDs nor its https_spiffe
/// endpoint could ever be verified).
fn parse_foreign_bundle(td: &TrustDomain, json: &[u8]) -> Result<Bundle, String> {
    let bundle = Bundle::from_jwks_json(td, json).map_err(|e| e.to_string())?;
    if bundle.x509_authorities.is_empty() {
        return Err("it has no X.509 authorities (keys with use x509-svid)".into());
    }
    Ok(bundle)
}

/// What an operator can do about an https_web endpoint certificate that
/// chains to no trusted root: rustls only says `UnknownIssuer`, not which
/// roots were tried.
fn tls_hint(profile: FederationProfile, e: &std::io::Error) -> &'static str {
    let unknown_issuer = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            )
        });
    if unknown_issuer && profile == FederationProfile::HttpsWeb {
        " (the endpoint's certificate chains neither to the system's WebPKI roots nor to the relationship's web CA; recreate the relationship with --web-ca naming the CA that issued it)"
    } else {
        ""
    }
}

fn client_config(r: &FederationRecord) -> Result<rustls::ClientConfig, FetchError> {
    let mut config = match r.profile {
        FederationProfile::HttpsSpiffe => {
            let roots = if r.bundle.is_empty() {
                Vec::new()
            } else {
                Bundle::from_jwks_json(&r.trust_domain, &r.bundle)
                    .map(|b| b.x509_authorities)
                    .unwrap_or_default()
            };
            if roots.is_empty() {
                return Err(FetchError::NoRoots(r.trust_domain.clone()));
            }
            let id = SpiffeId::new(&r.endpoint_spiffe_id)
                .map_err(|_| FetchError::EndpointId(r.endpoint_spiffe_id.clone()))?;
            hallmark_ca::tls::client_config(
                ServerTrust::Roots(Arc::new(RwLock::new(roots))),
                id,
                None,
            )
            .map_err(|e| FetchError::Transport {
                url: r.bundle_endpoint_url.clone(),
                reason: e.to_string(),
            })?
        }
        FederationProfile::HttpsWeb => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for der in pem_certs(&r.web_ca_pem).map_err(FetchError::WebCa)? {
                roots
                    .add(CertificateDer::from(der))
                    .map_err(|e| FetchError::WebCa(e.to_string()))?;
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| FetchError::WebCa(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The DER certificates of a PEM document (CERTIFICATE blocks only).
fn pem_certs(pem_text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("not PEM: {e}"))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect())
}

/// Parses a bootstrap bundle: a SPIFFE bundle (JWKS JSON) or PEM
/// certificates.
fn parse_bootstrap(td: &TrustDomain, data: &[u8]) -> Result<Bundle, String> {
    let text = String::from_utf8_lossy(data);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return parse_foreign_bundle(td, data);
    }
    if trimmed.starts_with("-----BEGIN") {
        let certs = pem_certs(data)?;
        if certs.is_empty() {
            return Err("the PEM holds no CERTIFICATE block".into());
        }
        for (i, der) in certs.iter().enumerate() {
            x509_parser::parse_x509_certificate(der)
                .map_err(|e| format!("certificate {i} of the PEM does not parse: {e}"))?;
        }
        let mut b = Bundle::new(td.clone());
        b.x509_authorities = certs;
        return Ok(b);
    }
    Err("neither a SPIFFE bundle (JWKS JSON) nor PEM certificates".into())
}

// ------------------------------------------------------------ admin API

fn to_pb(r: &FederationRecord) -> pb::Federation {
    let bundle = if r.bundle.is_empty() {
        None
    } else {
        Bundle::from_jwks_json(&r.trust_domain, &r.bundle)
            .ok()
            .map(|b| bundle_to_pb(&b))
    };
    pb::Federation {
        trust_domain: r.trust_domain.to_string(),
        bundle_endpoint_url: r.bundle_endpoint_url.clone(),
        profile: r.profile.to_string(),
        endpoint_spiffe_id: r.endpoint_spiffe_id.clone(),
        bundle,
        created_at: r.created_at,
        last_refresh: r.last_refresh,
        next_refresh: r.next_refresh,
        last_error: r.last_error.clone(),
        web_ca_pem: r.web_ca_pem.clone(),
    }
}

fn parse_td(shared: &Shared, name: &str) -> Result<TrustDomain, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "trust_domain: required (the foreign trust domain's name, e.g. partner.example)",
        ));
    }
    let td = TrustDomain::new(name).map_err(|e| {
        Status::invalid_argument(format!(
            "trust_domain `{name}` is not a trust domain name: {e}"
        ))
    })?;
    if td == shared.trust_domain {
        return Err(Status::invalid_argument(format!(
            "trust_domain `{td}` is this server's own trust domain; federate with another one"
        )));
    }
    Ok(td)
}

fn not_found(td: &TrustDomain) -> Status {
    Status::not_found(format!(
        "no federation with {td}; list them with `hallmark federation list`"
    ))
}

/// Checks a creation request and turns it into the record to store.
fn validate(shared: &Shared, req: pb::CreateFederationRequest) -> Result<FederationRecord, Status> {
    let f = req.federation.unwrap_or_default();
    let td = parse_td(shared, &f.trust_domain)?;
    let url = url::Url::parse(&f.bundle_endpoint_url).map_err(|e| {
        Status::invalid_argument(format!(
            "bundle_endpoint_url `{}` is not a URL: {e}",
            f.bundle_endpoint_url
        ))
    })?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(Status::invalid_argument(format!(
            "bundle_endpoint_url `{}` must be an https:// URL with a host",
            f.bundle_endpoint_url
        )));
    }
    let profile = match f.profile.as_str() {
        "" => FederationProfile::HttpsSpiffe,
        p => FederationProfile::from_name(p).ok_or_else(|| {
            Status::invalid_argument(format!(
                "profile `{p}` is not a bundle endpoint profile (https_spiffe or https_web)"
            ))
        })?,
    };
    let bundle = if req.bootstrap_bundle.is_empty() {
        None
    } else {
        Some(
            parse_bootstrap(&td, &req.bootstrap_bundle)
                .map_err(|e| Status::invalid_argument(format!("bootstrap bundle for {td}: {e}")))?,
        )
    };
    let endpoint_spiffe_id = match profile {
        FederationProfile::HttpsSpiffe => {
            let id = if f.endpoint_spiffe_id.is_empty() {
                crate::server_spiffe_id(&td)
            } else {
                SpiffeId::new(&f.endpoint_spiffe_id).map_err(|e| {
                    Status::invalid_argument(format!(
                        "endpoint_spiffe_id `{}` is not a SPIFFE ID: {e}",
                        f.endpoint_spiffe_id
                    ))
                })?
            };
            if !id.is_member_of(&td) {
                return Err(Status::invalid_argument(format!(
                    "endpoint_spiffe_id `{id}` must be in trust domain {td}"
                )));
            }
            if bundle.is_none() {
                return Err(Status::invalid_argument(format!(
                    "bootstrap bundle: required for profile https_spiffe, whose endpoint is authenticated with {td}'s X.509 authorities (get them with `hallmark bundle show --format jwks` on a {td} server and pass the file with --trust-bundle)"
                )));
            }
            id.to_string()
        }
        FederationProfile::HttpsWeb => {
            if !f.endpoint_spiffe_id.is_empty() {
                return Err(Status::invalid_argument(
                    "endpoint_spiffe_id: only profile https_spiffe takes one",
                ));
            }
            String::new()
        }
    };
    if !f.web_ca_pem.is_empty() {
        if profile != FederationProfile::HttpsWeb {
            return Err(Status::invalid_argument(
                "web_ca_pem: only profile https_web takes one",
            ));
        }
        let certs = pem_certs(&f.web_ca_pem)
            .map_err(|e| Status::invalid_argument(format!("web_ca_pem: {e}")))?;
        if certs.is_empty() {
            return Err(Status::invalid_argument(
                "web_ca_pem: holds no CERTIFICATE block",
            ));
        }
    }
    let now = unix_now();
    let (bundle, bundle_sequence) = match bundle {
        Some(b) => (b.to_jwks_json(), b.sequence),
        None => (Vec::new(), 0),
    };
    Ok(FederationRecord {
        trust_domain: td,
        bundle_endpoint_url: f.bundle_endpoint_url,
        profile,
        endpoint_spiffe_id,
        web_ca_pem: f.web_ca_pem,
        bundle,
        bundle_sequence,
        created_at: now,
        last_refresh: 0,
        next_refresh: now,
        last_error: String::new(),
    })
}

pub(crate) async fn create(
    shared: &Shared,
    req: pb::CreateFederationRequest,
) -> Result<pb::Federation, Status> {
    let record = validate(shared, req)?;
    if shared
        .store
        .get_federation(&record.trust_domain)
        .await
        .map_err(internal)?
        .is_some()
    {
        return Err(Status::already_exists(format!(
            "a federation with {} exists already; delete it first with `hallmark federation delete {}`",
            record.trust_domain, record.trust_domain
        )));
    }
    shared
        .store
        .put_federation(&record)
        .await
        .map_err(internal)?;
    tracing::info!(trust_domain = %record.trust_domain, url = %record.bundle_endpoint_url, profile = %record.profile, "federation created");
    // A first fetch failure is recorded in last_error, not fatal: the
    // other side may not be up yet.
    let _ = refresh_one(shared, &record).await;
    reload(shared).await.map_err(internal)?;
    get(shared, record.trust_domain.name()).await
}

pub(crate) async fn list(shared: &Shared) -> Result<pb::ListFederationsResponse, Status> {
    let records = shared.store.list_federations().await.map_err(internal)?;
    Ok(pb::ListFederationsResponse {
        federations: records.iter().map(to_pb).collect(),
    })
}

/// The stored relationship with `trust_domain`, or NotFound saying how to
/// list them.
async fn stored(shared: &Shared, trust_domain: &str) -> Result<FederationRecord, Status> {
    let td = parse_td(shared, trust_domain)?;
    shared
        .store
        .get_federation(&td)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(&td))
}

pub(crate) async fn get(shared: &Shared, trust_domain: &str) -> Result<pb::Federation, Status> {
    Ok(to_pb(&stored(shared, trust_domain).await?))
}

pub(crate) async fn delete(shared: &Shared, trust_domain: &str) -> Result<(), Status> {
    let td = parse_td(shared, trust_domain)?;
    if !shared
        .store
        .delete_federation(&td)
        .await
        .map_err(internal)?
    {
        return Err(not_found(&td));
    }
    tracing::info!(trust_domain = %td, "federation deleted");
    reload(shared).await.map_err(internal)
}

pub(crate) async fn refresh(shared: &Shared, trust_domain: &str) -> Result<pb::Federation, Status> {
    let r = stored(shared, trust_domain).await?;
    let _ = refresh_one(shared, &r).await;
    reload(shared).await.map_err(internal)?;
    get(shared, trust_domain).await
}

// ------------------------------------------------------- bundle endpoint

/// Where the endpoint's TLS configuration comes from.
#[derive(Clone)]
enum EndpointTls {
    /// The node API's SVID, renewed by its rotation task.
    Spiffe(ServerTls),
    Web(Arc<rustls::ServerConfig>),
}

impl EndpointTls {
    fn acceptor(&self) -> TlsAcceptor {
        match self {
            EndpointTls::Spiffe(tls) => TlsAcceptor::from(tls.config_with_alpn(&[b"http/1.1"])),
            EndpointTls::Web(c) => TlsAcceptor::from(c.clone()),
        }
    }
}

/// Binds the bundle endpoint and returns its address and the task serving
/// it until shutdown.
pub(crate) async fn serve_endpoint(
    shared: Arc<Shared>,
    config: &FederationConfig,
    addr: SocketAddr,
    node_tls: ServerTls,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), EndpointError> {
    let tls = match &config.profile {
        EndpointProfile::HttpsSpiffe => EndpointTls::Spiffe(node_tls),
        EndpointProfile::HttpsWeb { cert, key } => EndpointTls::Web(web_config(cert, key)?),
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| EndpointError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| EndpointError::Listen { addr, source })?;
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a bundle endpoint connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let acceptor = tls.acceptor();
            let shared = shared.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "bundle endpoint TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&shared, &req)) }
                });
                let _ = crate::http1_server()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

fn answer<B>(shared: &Shared, req: &hyper::Request<B>) -> hyper::Response<Full<Bytes>> {
    let reply = |status: hyper::StatusCode, ctype: &str, body: Vec<u8>| {
        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        resp
    };
    if req.uri().path() != "/" {
        return reply(
            hyper::StatusCode::NOT_FOUND,
            "text/plain",
            b"the SPIFFE bundle is served at /\n".to_vec(),
        );
    }
    if req.method() != hyper::Method::GET {
        return reply(
            hyper::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"only GET\n".to_vec(),
        );
    }
    reply(
        hyper::StatusCode::OK,
        "application/json",
        shared.ca.bundle().to_jwks_json(),
    )
}

/// The operator's https_web certificate, re-read when its files change (a
/// renewed WebPKI certificate is served without a restart).
fn web_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, EndpointError> {
    hallmark_ca::ReloadingIdentity::open(cert, key, hallmark_ca::RELOAD_CHECK)
        .and_then(hallmark_ca::ReloadingIdentity::server_config)
        .map_err(|e| EndpointError::WebCert {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("partner.example").unwrap()
    }

    fn authority() -> hallmark_ca::X509Authority {
        hallmark_ca::X509Authority::generate_root(
            &td(),
            Duration::from_secs(3600),
            std::time::SystemTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn bootstrap_bundles_parse_from_jwks_and_pem() {
        let ca = authority();
        let mut b = Bundle::new(td());
        b.x509_authorities = vec![ca.cert_der().to_vec()];
        b.sequence = 7;
        let from_jwks = parse_bootstrap(&td(), &b.to_jwks_json()).unwrap();
        assert_eq!(from_jwks.x509_authorities, b.x509_authorities);
        assert_eq!(from_jwks.sequence, 7);
        let from_pem = parse_bootstrap(&td(), b.x509_pem().as_bytes()).unwrap();
        assert_eq!(from_pem.x509_authorities, b.x509_authorities);

        for (bad, why) in [
            (&b"hello"[..], "neither"),
            (&br#"{"keys":[]}"#[..], "no X.509 authorities"),
            (&br#"{"keys":"x"}"#[..], "keys"),
            (
                &b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"[..],
                "no CERTIFICATE",
            ),
        ] {
            let e = parse_bootstrap(&td(), bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn unknown_issuer_on_https_web_says_which_roots_to_fix() {
        let unknown = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            )
        };
        let expired = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        // (profile, TLS error, whether the --web-ca hint is added)
        for (profile, e, hinted) in [
            (FederationProfile::HttpsWeb, unknown(), true),
            (FederationProfile::HttpsWeb, expired, false),
            (FederationProfile::HttpsSpiffe, unknown(), false),
            (
                FederationProfile::HttpsWeb,
                std::io::Error::other("reset"),
                false,
            ),
        ] {
            let hint = tls_hint(profile, &e);
            assert_eq!(hint.contains("--web-ca"), hinted, "{e}: {hint}");
        }
    }

    #[tokio::test]
    async fn fetch_refuses_plain_http_and_missing_roots() {
        let mut r = FederationRecord {
            trust_domain: td(),
            bundle_endpoint_url: "http://127.0.0.1:1/".into(),
            profile: FederationProfile::HttpsSpiffe,
            endpoint_spiffe_id: "spiffe://partner.example/hallmark/server".into(),
            web_ca_pem: Vec::new(),
            bundle: Vec::new(),
            bundle_sequence: 0,
            created_at: 0,
            last_refresh: 0,
            next_refresh: 0,
            last_error: String::new(),
        };
        let e = fetch(&r).await.unwrap_err().to_string();
        assert!(e.contains("must be https"), "{e}");
        r.bundle_endpoint_url = "https://127.0.0.1:1/".into();
        let e = fetch(&r).await.unwrap_err();
        assert!(matches!(e, FetchError::NoRoots(_)), "{e}");
        assert!(e.to_string().contains("--trust-bundle"), "{e}");
    }
}
