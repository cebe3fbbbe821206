//! The console over TLS, for access from other machines: the operator's
//! certificate and key, and optionally a client certificate that is the
//! X509-SVID of an admin entry (checked against the trust bundle's X.509
//! authorities at start, and the entry's `admin` mark on every call).

use std::path::Path;
use std::sync::Arc;

use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use hallmark_server::AdminService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::watch;

/// The SPIFFE ID of a TLS client certificate, put in each request of its
/// connection.
#[derive(Debug, Clone)]
pub(crate) struct AdminPeer(pub String);

/// Why the console's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("console TLS: reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("console TLS: {0}")]
    Invalid(String),
}

/// A TLS configuration from a PEM certificate chain and key; with
/// `client_roots` (the trust bundle's X.509 authorities), clients may also
/// present an X509-SVID.
pub fn load_tls(
    cert: &Path,
    key: &Path,
    client_roots: &[Vec<u8>],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{} holds no certificate (PEM)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let builder = if client_roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for der in client_roots {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| TlsError::Invalid(format!("trust bundle: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Invalid(format!("client verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Invalid(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections and serves `app` on each until `shutdown`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "console: accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "console: TLS handshake failed");
                    return;
                }
            };
            let client_id = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| hallmark_ca::spiffe_id_from_cert(leaf.as_ref()).ok());
            let app = match client_id {
                Some(id) => app.layer(axum::Extension(AdminPeer(id.to_string()))),
                None => app,
            };
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(peer = %peer, error = %e, "console: connection ended");
            }
        });
    }
}

/// Whether `id` (a client certificate's SPIFFE ID) is granted by an entry
/// marked admin; the ID when it is.
pub(crate) async fn admin_caller(admin: &AdminService, id: &str) -> Result<String, String> {
    let entries = admin
        .list_entries(tonic::Request::new(pb::ListEntriesRequest {
            spiffe_id: id.to_string(),
            ..Default::default()
        }))
        .await
        .map_err(|s| format!("checking the client certificate's entry: {}", s.message()))?
        .into_inner()
        .entries;
    if entries.iter().any(|e| e.admin) {
        Ok(id.to_string())
    } else {
        Err(format!(
            "the client certificate's SPIFFE ID {id} is not an admin identity (`hallmark entry create --admin ...`)"
        ))
    }
}
