//! The SPIFFE bundle endpoint: this trust domain's bundle over HTTPS, for
//! the servers of federated trust domains to fetch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{EndpointProfile, FederationConfig};
use crate::tls::ServerTls;
use crate::Shared;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
                let _ = crate::startup::http1_server()
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
