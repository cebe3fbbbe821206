//! The agent's connection to the server's node API: gRPC over mTLS with
//! SPIFFE-aware verification (the server must present
//! `spiffe://<td>/hallmark/server` chaining to the trusted roots).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hallmark_ca::tls::ServerTrust;
use hallmark_core::{error_chain, TrustDomain};
use hallmark_proto::hallmark::node_client::NodeClient;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the agent's first trust in the server comes from. Never silent
/// trust-on-first-use: the operator supplies one of these.
#[derive(Debug, Clone, Default)]
pub enum ServerTrustSource {
    /// SHA-256 (hex) of the server's X.509 root, as `hallmark token generate` prints it.
    Fingerprint(String),
    /// A PEM file with the trust bundle's X.509 roots.
    BundleFile(PathBuf),
    /// Only valid when the agent already holds a bundle from an earlier run.
    #[default]
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] hallmark_ca::CaError),
    #[error("connecting to the server at {servers}: {reason}")]
    Connect { servers: String, reason: String },
    /// The server's certificate does not verify against the configured
    /// trust; retrying cannot help.
    #[error("the server at {servers} is not trusted: {reason} (check --ca-fingerprint / --trust-bundle, or the trust domain)")]
    Untrusted { servers: String, reason: String },
}

impl ClientError {
    /// Whether retrying the same connection can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

/// True when a TLS certificate check failed somewhere in the chain.
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(rustls::Error::InvalidCertificate(_)) = c.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if is_certificate_error(inner) {
                    return true;
                }
            }
        }
        cur = c.source();
    }
    false
}

/// Builds the TLS client config: trust as given, client identity optional
/// (absent only for the join-token call).
pub fn tls_config(
    td: &TrustDomain,
    trust: ServerTrust,
    identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    Ok(Arc::new(hallmark_ca::tls::client_config(
        trust,
        td.server_id(),
        identity,
    )?))
}

pub fn roots_trust(roots: Vec<Vec<u8>>) -> ServerTrust {
    ServerTrust::Roots(Arc::new(RwLock::new(roots)))
}

/// Opens a channel to the first server that answers. The channel
/// reconnects by itself through the same connector, trying every server in
/// order, so a lost server fails over to the next.
pub async fn connect(
    servers: &[String],
    tls: Arc<rustls::ClientConfig>,
) -> Result<NodeClient<Channel>, ClientError> {
    let servers: Arc<Vec<String>> = Arc::new(servers.to_vec());
    let list = servers.join(", ");
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let servers = servers.clone();
        let tls = tls.clone();
        async move {
            let mut last_err = std::io::Error::other("no server address configured");
            for addr in servers.iter() {
                match tokio::time::timeout(CONNECT_TIMEOUT, dial(addr, tls.clone())).await {
                    Ok(Ok(s)) => return Ok(TokioIo::new(s)),
                    Ok(Err(e)) => last_err = e,
                    Err(_) => {
                        last_err = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("{addr}: timed out"),
                        )
                    }
                }
                tracing::debug!(server = %addr, error = %last_err, "server unreachable, trying the next");
            }
            Err(last_err)
        }
    });
    let channel = Endpoint::from_static("http://hallmark-server")
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            let reason = error_chain(&e);
            if is_certificate_error(&e) {
                ClientError::Untrusted {
                    servers: list,
                    reason,
                }
            } else {
                ClientError::Connect {
                    servers: list,
                    reason,
                }
            }
        })?;
    Ok(NodeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

async fn dial(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    // The name is not checked (the verifier checks the SPIFFE ID instead)
    // but TLS needs one.
    let name = rustls::pki_types::ServerName::try_from("hallmark-server")
        .map_err(std::io::Error::other)?
        .to_owned();
    TlsConnector::from(tls).connect(name, tcp).await
}
