//! Fetching a foreign trust domain's bundle from its SPIFFE bundle
//! endpoint, authenticated as the relationship's profile says
//! (https_spiffe: the endpoint's SVID against the foreign X.509
//! authorities; https_web: WebPKI, plus the relationship's own CA).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hallmark_ca::tls::ServerTrust;
use hallmark_ca::Bundle;
use hallmark_core::{SpiffeId, TrustDomain};
use hallmark_store::{FederationProfile, FederationRecord};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{parse_foreign_bundle, pem_certs};

/// A fetch gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A bundle larger than this is refused.
const MAX_BUNDLE_BYTES: usize = 1 << 20;

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

/// Fetches the relationship's bundle endpoint: the parsed bundle and the
/// JSON as received.
pub(super) async fn fetch(r: &FederationRecord) -> Result<(Bundle, Vec<u8>), FetchError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("partner.example").unwrap()
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
