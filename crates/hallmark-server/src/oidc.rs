//! The OIDC issuer profile: tokens cloud providers accept through OIDC
//! discovery, and the discovery document and JWKS they fetch.
//!
//! AWS IAM, GCP Workload Identity Federation and Azure federated credentials
//! all trust an external issuer the same way: they fetch
//! `<issuer>/.well-known/openid-configuration` over HTTPS, follow its
//! `jwks_uri`, and check a token's `iss` against the configured issuer URL
//! byte for byte. What they have in common decides the shape here: RS256 by
//! default (the one algorithm all three accept), `kid`/`iat`/`exp` always
//! set, `exp` at most 24 h after `iat` (GCP refuses 48 h or more), an issuer
//! URL with no port, query or fragment, and at most 100 keys per type in the
//! JWKS (AWS).

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hallmark_ca::HttpsIdentity;
use hallmark_core::time::unix_secs;
use hallmark_core::Entry;
use hallmark_proto::hallmark as pb;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::Shared;

/// Default lifetime of an OIDC-profile token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Longest token lifetime accepted: GCP refuses tokens whose `exp` is 48 h
/// or more after `iat`; a day leaves a wide margin.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default address of the discovery/JWKS listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Path of the JWKS under the issuer URL.
const JWKS_PATH: &str = "/keys";
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// AWS accepts at most 100 keys of each type in an issuer's JWKS.
const MAX_KEYS_PER_TYPE: usize = 100;
/// How long a JWKS read from the datastore is served before reading again:
/// short, so a key another server prepared on the same datastore appears
/// within seconds, yet a crawler cannot turn into datastore load.
const JWKS_CACHE: Duration = Duration::from_secs(5);
/// `Cache-Control: max-age` of both documents. Clouds cache the JWKS
/// themselves; a short age lets a rotation's new key be seen within minutes.
const MAX_AGE_SECS: u64 = 300;
/// Lifetime of the self-signed HTTPS certificate made when none is given.
const SELF_SIGNED_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// File (in the data directory) holding the self-signed certificate, for
/// clients to trust.
pub const SELF_SIGNED_CERT_FILE: &str = "oidc-tls.pem";
/// File (in the data directory) with the bound listener address, written
/// after bind so `--oidc-listen 127.0.0.1:0` is usable by scripts.
pub const LISTEN_ADDR_FILE: &str = "oidc.addr";

/// Where and as whom the OIDC issuer is served.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The public issuer URL: the tokens' `iss` and the base of the
    /// discovery document and JWKS.
    pub issuer: IssuerUrl,
    /// Address of the HTTPS (or plain HTTP) listener.
    pub listen: SocketAddr,
    pub tls: OidcTls,
    /// Extra claims every token carries when the agent attested the
    /// attribute (names from [`hallmark_core::OIDC_CLAIM_NAMES`]), on top of
    /// each entry's own `oidc_claims`.
    pub claims: Vec<String>,
    /// Token lifetime, at most [`MAX_TOKEN_TTL`].
    pub token_ttl: Duration,
}

/// How the discovery listener does transport security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcTls {
    /// A certificate chain and key (PEM files) from the operator.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate for the issuer's host, made at start and
    /// written to `<data_dir>/oidc-tls.pem`.
    SelfSigned,
    /// Plain HTTP, for serving behind a TLS-terminating proxy or CDN: the
    /// issuer URL itself must still be https.
    InsecureHttp,
}

/// An issuer URL: `https://host[:port][/path]`, with no user info, query,
/// fragment or trailing slash. Kept exactly as written, since providers
/// compare `iss` as a string. Every cloud accepts it without a port; AWS IAM
/// refuses one with a port (see [`IssuerUrl::cloud_warning`]), which still
/// suits tests, GCP and Azure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerUrl {
    raw: String,
    host: String,
    /// The port written in the URL, if any (`:443` included).
    port: Option<u16>,
    path: String,
}

/// One variant per rule an issuer URL must follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    /// Not a URL at all.
    #[error("OIDC issuer `{url}` is not a URL ({reason}); use https://host[/path]")]
    NotUrl { url: String, reason: String },
    /// The scheme is not https.
    #[error("OIDC issuer `{0}` must use https:// (clouds fetch discovery over HTTPS only; use --oidc-insecure-http to serve plain HTTP behind a TLS proxy, the issuer stays https)")]
    NotHttps(String),
    /// A query string.
    #[error("OIDC issuer `{0}` must not have a query (`?...`)")]
    Query(String),
    /// A fragment.
    #[error("OIDC issuer `{0}` must not have a fragment (`#...`)")]
    Fragment(String),
    /// User name or password.
    #[error("OIDC issuer `{0}` must not contain user info (`user@`)")]
    UserInfo(String),
    /// A trailing slash, which makes `iss` differ from what most operators
    /// paste into a cloud console.
    #[error("OIDC issuer `{0}` must not end with `/`; drop the trailing slash")]
    TrailingSlash(String),
}

/// Why the issuer's listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The listen address is taken or not allowed.
    #[error(
        "OIDC issuer: listening on {addr}: {source} (pick another address with --oidc-listen)"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The certificate or key file is unreadable or unusable (the message
    /// names the file).
    #[error("OIDC issuer: HTTPS certificate: {0}")]
    Tls(#[from] hallmark_ca::CaError),
    /// The self-signed certificate could not be written for clients.
    #[error("OIDC issuer: writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl IssuerUrl {
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The host, for the self-signed certificate.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path part (`""` or `/tenant-a`), under which the documents are served.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The URL of the discovery document.
    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.raw)
    }

    /// The URL of the JWKS.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.raw)
    }

    /// The port written in the URL, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Why a cloud provider would refuse this issuer, when one would.
    pub fn cloud_warning(&self) -> Option<String> {
        self.port.map(|p| {
            format!(
                "OIDC issuer `{}` names port {p}: AWS IAM refuses issuer URLs with a port (GCP and Azure accept them); for AWS publish the issuer on the default HTTPS port",
                self.raw
            )
        })
    }
}

impl FromStr for IssuerUrl {
    type Err = IssuerError;

    fn from_str(raw: &str) -> Result<Self, IssuerError> {
        let url = url::Url::parse(raw).map_err(|e| IssuerError::NotUrl {
            url: raw.to_string(),
            reason: e.to_string(),
        })?;
        let owned = || raw.to_string();
        if url.scheme() != "https" {
            return Err(IssuerError::NotHttps(owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(IssuerError::UserInfo(owned()));
        }
        // `Url::port` hides the default port; an explicit `:443` still breaks
        // the exact string match clouds do, so look at what was written.
        let authority = raw
            .strip_prefix("https://")
            .or_else(|| raw.get(8..))
            .unwrap_or_default();
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        let after_host = authority.rsplit_once(']').map_or(authority, |(_, p)| p);
        let port = match after_host.rsplit_once(':') {
            Some((_, p)) => Some(p.parse::<u16>().map_err(|_| IssuerError::NotUrl {
                url: owned(),
                reason: format!("port `{p}` is not a number from 0 to 65535"),
            })?),
            None => None,
        };
        if raw.contains('?') {
            return Err(IssuerError::Query(owned()));
        }
        if raw.contains('#') {
            return Err(IssuerError::Fragment(owned()));
        }
        if raw.ends_with('/') {
            return Err(IssuerError::TrailingSlash(owned()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| IssuerError::NotUrl {
                url: owned(),
                reason: "no host".into(),
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let path = url.path().trim_end_matches('/').to_string();
        Ok(IssuerUrl {
            raw: raw.to_string(),
            host,
            port,
            path,
        })
    }
}

impl fmt::Display for IssuerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Mints an OIDC-profile token for `entry`'s SPIFFE ID: `iss`, `sub`,
/// `aud`, `iat`, `exp`, `jti`, plus every configured extra claim whose
/// attribute the agent attested (a missing attribute leaves its claim out).
pub(crate) fn mint_for_entry(
    shared: &Shared,
    entry: &Entry,
    audience: &[String],
    attributes: &HashMap<String, String>,
) -> Result<pb::NewJwtSvidResponse, Status> {
    let config = shared.oidc.as_ref().ok_or_else(|| {
        Status::failed_precondition(
            "the server has no OIDC issuer configured; start it with --oidc-issuer https://...",
        )
    })?;
    let now = SystemTime::now();
    let claims = token_claims(config, entry, attributes)?;
    let ttl = config.token_ttl.min(MAX_TOKEN_TTL);
    let token = shared
        .ca
        .current()
        .oidc
        .mint(&entry.spec.spiffe_id, audience, ttl, now, Some(&claims))
        .map_err(|e| Status::internal(format!("minting an OIDC token: {e}")))?;
    let issued_at = unix_secs(now);
    shared.metrics.oidc_tokens_minted.inc();
    Ok(pb::NewJwtSvidResponse {
        token,
        issued_at,
        expires_at: issued_at.saturating_add(ttl.as_secs() as i64),
    })
}

/// `iss`, a random `jti`, and the extra claims (entry's and global).
fn token_claims(
    config: &OidcConfig,
    entry: &Entry,
    attributes: &HashMap<String, String>,
) -> Result<Map<String, Value>, Status> {
    let jti: [u8; 16] = rand::random();
    let mut claims = Map::new();
    claims.insert("iss".into(), config.issuer.as_str().into());
    claims.insert("jti".into(), URL_SAFE_NO_PAD.encode(jti).into());
    let names: BTreeSet<&str> = entry
        .spec
        .oidc_claims
        .iter()
        .chain(&config.claims)
        .map(String::as_str)
        // The allow-list keeps an agent from setting `iss`, `sub` or any
        // other claim through an attribute name.
        .filter(|n| hallmark_core::OIDC_CLAIM_NAMES.contains(n))
        .collect();
    for name in names {
        if let Some(v) = attributes.get(name).filter(|v| !v.is_empty()) {
            claims.insert(name.to_string(), v.clone().into());
        }
    }
    Ok(claims)
}

/// Binds the discovery listener and serves it until `shutdown`. Returns the
/// bound address.
pub(crate) async fn start(
    shared: Arc<Shared>,
    config: &OidcConfig,
    data_dir: &Path,
    shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), OidcError> {
    let tls = match &config.tls {
        OidcTls::InsecureHttp => None,
        // Re-read when the files change: public certificates are renewed
        // every few months and the issuer must not need a restart for it.
        OidcTls::Files { cert, key } => Some(
            hallmark_ca::ReloadingIdentity::open(cert, key, hallmark_ca::RELOAD_CHECK)?
                .server_config()?,
        ),
        OidcTls::SelfSigned => {
            let id = HttpsIdentity::self_signed(
                config.issuer.host(),
                SELF_SIGNED_TTL,
                SystemTime::now(),
            )?;
            let path = data_dir.join(SELF_SIGNED_CERT_FILE);
            // Only the certificate: the key stays in memory.
            std::fs::write(&path, id.leaf_pem())
                .map_err(|source| OidcError::Write { path, source })?;
            Some(id.server_config()?)
        }
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| OidcError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| OidcError::Listen {
        addr: config.listen,
        source,
    })?;
    let _ = std::fs::write(data_dir.join(LISTEN_ADDR_FILE), format!("{addr}\n"));
    let site = Arc::new(Site {
        shared,
        issuer: config.issuer.clone(),
        jwks: Mutex::new(None),
    });
    let task = tokio::spawn(accept_loop(
        listener,
        tls.map(tokio_rustls::TlsAcceptor::from),
        site,
        shutdown,
    ));
    Ok((addr, task))
}

/// What the listener serves, with the briefly cached JWKS.
struct Site {
    shared: Arc<Shared>,
    issuer: IssuerUrl,
    jwks: Mutex<Option<CachedJwks>>,
}

/// The JWKS as last read.
#[derive(Clone)]
struct CachedJwks {
    read_at: Instant,
    /// The key that was signing when it was read.
    signing_kid: String,
    body: Bytes,
    algs: Vec<String>,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    site: Arc<Site>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = crate::startup::wait_for(shutdown);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "OIDC issuer: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let site = site.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let site = site.clone();
                async move { Ok::<_, Infallible>(site.handle(req).await) }
            });
            let http = crate::startup::http1_server();
            let served = match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "OIDC issuer: TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => http.serve_connection(TokioIo::new(tcp), service).await,
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "OIDC issuer: connection ended with an error");
            }
        });
    }
}

impl Site {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let rest = path.strip_prefix(self.issuer.path()).unwrap_or_default();
        let known = rest == DISCOVERY_PATH || rest == JWKS_PATH;
        if !known {
            return error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no document at {path}; the discovery document is at {}",
                    self.issuer.discovery_url()
                ),
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{} is not allowed here; use GET", req.method()),
            );
            r.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("GET, HEAD"),
            );
            return r;
        }
        let doc = if rest == JWKS_PATH {
            self.jwks().await.map(|(body, _)| body)
        } else {
            self.discovery().await
        };
        match doc {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(e) => {
                tracing::error!(error = %e, "OIDC issuer: reading the published keys failed");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the signing keys cannot be read right now; retry shortly",
                )
            }
        }
    }

    async fn discovery(&self) -> Result<Bytes, crate::AuthorityError> {
        let (_, algs) = self.jwks().await?;
        Ok(Bytes::from(
            discovery_document(&self.issuer, &algs).to_string(),
        ))
    }

    /// The JWKS and the algorithms of its keys, from cache when fresh and
    /// read while the key that signs now was already signing (a token must
    /// never name a key the JWKS lacks).
    async fn jwks(&self) -> Result<(Bytes, Vec<String>), crate::AuthorityError> {
        let signing = self.shared.ca.current().oidc.kid().to_string();
        let cached = self.jwks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(c) = cached {
            if c.read_at.elapsed() < JWKS_CACHE && c.signing_kid == signing {
                return Ok((c.body, c.algs));
            }
        }
        let keys =
            crate::authority::oidc_public_keys(&self.shared.store, SystemTime::now()).await?;
        let (doc, mut algs) = jwks_document(keys.into_iter().map(|k| k.jwk));
        if algs.is_empty() {
            algs.push(self.shared.ca.current().oidc.alg().jws_alg().to_string());
        }
        let body = Bytes::from(doc.to_string());
        *self.jwks.lock().unwrap_or_else(|p| p.into_inner()) = Some(CachedJwks {
            read_at: Instant::now(),
            signing_kid: signing,
            body: body.clone(),
            algs: algs.clone(),
        });
        Ok((body, algs))
    }
}

/// The discovery document. Fields are the ones all three clouds read; the
/// `response_types`/`subject_types`/`scopes` members are fixed by what an
/// issuer of ID-token-like JWTs for machines is.
fn discovery_document(issuer: &IssuerUrl, algs: &[String]) -> Value {
    json!({
        "issuer": issuer.as_str(),
        "jwks_uri": issuer.jwks_url(),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "scopes_supported": ["openid"],
        "claims_supported": claims_supported(),
    })
}

fn claims_supported() -> Vec<&'static str> {
    let mut v = vec!["sub", "aud", "exp", "iat", "iss", "jti"];
    v.extend(hallmark_core::OIDC_CLAIM_NAMES);
    v
}

/// JWKS from published keys (newest first): `use` becomes `sig` (the
/// standard value; `jwt-svid` is for SPIFFE bundles), at most
/// [`MAX_KEYS_PER_TYPE`] per `kty`. Also returns the distinct `alg`s.
fn jwks_document(keys: impl Iterator<Item = Value>) -> (Value, Vec<String>) {
    let mut per_type: HashMap<String, usize> = HashMap::new();
    let mut algs = Vec::new();
    let mut out = Vec::new();
    for mut jwk in keys {
        let Some(obj) = jwk.as_object_mut() else {
            continue;
        };
        let kty = obj.get("kty").and_then(Value::as_str).unwrap_or_default();
        let n = per_type.entry(kty.to_string()).or_default();
        if *n >= MAX_KEYS_PER_TYPE {
            continue;
        }
        *n += 1;
        obj.insert("use".into(), "sig".into());
        if let Some(alg) = obj.get("alg").and_then(Value::as_str) {
            if !algs.iter().any(|a| a == alg) {
                algs.push(alg.to_string());
            }
        }
        out.push(jwk);
    }
    (json!({ "keys": out }), algs)
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::OK {
        if let Ok(v) =
            hyper::header::HeaderValue::from_str(&format!("public, max-age={MAX_AGE_SECS}"))
        {
            h.insert(hyper::header::CACHE_CONTROL, v);
        }
    }
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, Bytes::from(json!({ "error": message }).to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn issuer_urls() {
        type Want = Result<(&'static str, &'static str), fn(String) -> IssuerError>;
        let cases: &[(&str, Want)] = &[
            ("https://oidc.example.org", Ok(("oidc.example.org", ""))),
            (
                "https://bucket.s3.amazonaws.com/tenant-a",
                Ok(("bucket.s3.amazonaws.com", "/tenant-a")),
            ),
            ("https://127.0.0.1", Ok(("127.0.0.1", ""))),
            ("http://oidc.example.org", Err(IssuerError::NotHttps)),
            (
                "https://oidc.example.org:8443/t",
                Ok(("oidc.example.org", "/t")),
            ),
            ("https://oidc.example.org:443", Ok(("oidc.example.org", ""))),
            ("https://oidc.example.org/a?b=c", Err(IssuerError::Query)),
            ("https://oidc.example.org/#x", Err(IssuerError::Fragment)),
            ("https://oidc.example.org/x#y", Err(IssuerError::Fragment)),
            ("https://u:p@oidc.example.org", Err(IssuerError::UserInfo)),
            ("https://oidc.example.org/", Err(IssuerError::TrailingSlash)),
            (
                "https://oidc.example.org/a/",
                Err(IssuerError::TrailingSlash),
            ),
        ];
        for (raw, want) in cases {
            let got = raw.parse::<IssuerUrl>();
            match want {
                Ok((host, path)) => {
                    let u = got.unwrap();
                    assert_eq!((u.host(), u.path(), u.as_str()), (*host, *path, *raw));
                }
                Err(variant) => assert_eq!(got.unwrap_err(), variant(raw.to_string()), "{raw}"),
            }
        }
        let u: IssuerUrl = "https://oidc.example.org:8443/t".parse().unwrap();
        assert_eq!(u.port(), Some(8443));
        assert!(u.cloud_warning().unwrap().contains("AWS IAM"));
        let u: IssuerUrl = "https://oidc.example.org:443".parse().unwrap();
        assert_eq!(u.port(), Some(443), "an explicit :443 is part of `iss` too");
        let u: IssuerUrl = "https://oidc.example.org/t".parse().unwrap();
        assert_eq!((u.port(), u.cloud_warning()), (None, None));
        for raw in ["", "oidc.example.org", "https://"] {
            assert!(
                matches!(raw.parse::<IssuerUrl>(), Err(IssuerError::NotUrl { .. })),
                "{raw}"
            );
        }
        let err = "http://x?y".parse::<IssuerUrl>().unwrap_err().to_string();
        assert!(err.contains("https://"), "{err}");
    }

    #[test]
    fn document_urls_hang_off_the_issuer() {
        let u: IssuerUrl = "https://b.example/t".parse().unwrap();
        assert_eq!(
            u.discovery_url(),
            "https://b.example/t/.well-known/openid-configuration"
        );
        assert_eq!(u.jwks_url(), "https://b.example/t/keys");
        let d = discovery_document(&u, &["RS256".to_string()]);
        assert_eq!(d["issuer"], "https://b.example/t");
        assert_eq!(d["jwks_uri"], "https://b.example/t/keys");
        assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
        assert_eq!(d["response_types_supported"], json!(["id_token"]));
        assert_eq!(d["subject_types_supported"], json!(["public"]));
    }

    #[test]
    fn extra_claims_are_the_union_of_entry_and_global_when_attested() {
        let spec = hallmark_core::EntrySpec::parse(
            &hallmark_core::RawEntrySpec {
                spiffe_id: "spiffe://example.org/billing",
                parent_id: "spiffe://example.org/hallmark/agent/n1",
                selectors: vec!["unix:uid:0"],
                oidc_claims: vec!["namespace", "pod"],
                ..Default::default()
            },
            "example.org",
        )
        .unwrap();
        let entry = Entry {
            id: hallmark_core::EntryId::new_random(),
            spec,
            created_at: 0,
            revision: 1,
        };
        let config = OidcConfig {
            issuer: "https://oidc.example.org".parse().unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: OidcTls::InsecureHttp,
            claims: vec!["node".into()],
            token_ttl: DEFAULT_TOKEN_TTL,
        };
        let attributes: HashMap<String, String> = [
            ("namespace", "shop"),
            ("node", "n1"),
            ("pod", ""),
            ("image", "not-asked-for"),
            ("iss", "https://evil.example"),
            ("sub", "spiffe://evil.example/x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let claims = token_claims(&config, &entry, &attributes).unwrap();
        assert_eq!(claims["iss"], "https://oidc.example.org");
        assert_eq!(claims["namespace"], "shop");
        assert_eq!(claims["node"], "n1");
        assert!(
            !claims.contains_key("pod"),
            "an empty attribute is left out"
        );
        assert!(!claims.contains_key("image"), "only configured claims");
        assert!(!claims.contains_key("sub"));
        let jti = claims["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 22);
        let again = token_claims(&config, &entry, &attributes).unwrap();
        assert_ne!(again["jti"], claims["jti"], "jti is random per token");
    }

    #[test]
    fn jwks_uses_sig_and_caps_keys_per_type() {
        let key = |kty: &str, alg: &str, i: usize| json!({"kty": kty, "alg": alg, "kid": format!("k{i}"), "use": "jwt-svid"});
        let keys = (0..150)
            .map(|i| key("RSA", "RS256", i))
            .chain((0..3).map(|i| key("EC", "ES256", 1000 + i)));
        let (doc, algs) = jwks_document(keys);
        let list = doc["keys"].as_array().unwrap();
        assert_eq!(list.len(), 103);
        assert_eq!(list[0]["kid"], "k0", "newest keys are kept");
        assert!(list.iter().all(|k| k["use"] == "sig"));
        assert_eq!(algs, ["RS256", "ES256"]);
    }
}
