//! The node API's TLS: the server presents an SVID for
//! `spiffe://<td>/hallmark/server` (renewed at half its lifetime) and
//! verifies agents' client certificates against the trust bundle. Client
//! certificates are optional at the TLS layer because the join-token call
//! comes before the agent has one; every other call checks for it.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures::Stream;
use hallmark_core::TrustDomain;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::authority::{AuthorityError, CaManager};

const SERVER_SVID_TTL: Duration = Duration::from_secs(24 * 3600);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct ServerTls {
    ca: Arc<CaManager>,
    td: TrustDomain,
    config: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    client_roots: Arc<RwLock<Vec<Vec<u8>>>>,
}

impl ServerTls {
    pub fn new(ca: Arc<CaManager>, td: &TrustDomain) -> Result<Self, AuthorityError> {
        let client_roots = Arc::new(RwLock::new(ca.bundle().x509_authorities.clone()));
        let config = build_config(&ca, td, client_roots.clone())?;
        Ok(ServerTls {
            ca,
            td: td.clone(),
            config: Arc::new(RwLock::new(Arc::new(config))),
            client_roots,
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.config
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// The current configuration (same SVID, renewed by [`ServerTls::rotate`])
    /// offering `alpn` instead of gRPC's `h2`, for the SPIFFE bundle
    /// endpoint, which speaks HTTP/1.1.
    pub(crate) fn config_with_alpn(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = (*self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
        .clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Renews the server certificate at half its lifetime and follows
    /// bundle changes, until shutdown.
    pub async fn rotate(self, mut shutdown: watch::Receiver<bool>) {
        let mut bundles = self.ca.subscribe_bundle();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SERVER_SVID_TTL / 2) => {}
                r = bundles.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            *self.client_roots.write().unwrap_or_else(|p| p.into_inner()) =
                self.ca.bundle().x509_authorities.clone();
            match build_config(&self.ca, &self.td, self.client_roots.clone()) {
                Ok(c) => *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c),
                Err(e) => {
                    tracing::error!(error = %e, "renewing the server certificate failed; keeping the current one")
                }
            }
        }
    }
}

fn build_config(
    ca: &CaManager,
    td: &TrustDomain,
    client_roots: Arc<RwLock<Vec<Vec<u8>>>>,
) -> Result<rustls::ServerConfig, AuthorityError> {
    let id = td.server_id();
    let (key, csr) = hallmark_ca::generate_key_and_csr(&id)?;
    let auth = ca.current();
    let mut chain = auth.x509.sign_x509_svid(
        &csr,
        &id,
        &["localhost".to_string()],
        SERVER_SVID_TTL,
        SystemTime::now(),
    )?;
    // The root goes last so an agent pinning its fingerprint can find it.
    chain.push(auth.x509.trust_anchor_der().to_vec());
    Ok(hallmark_ca::tls::server_config(chain, key, client_roots)?)
}

/// Accepts TCP connections and completes TLS handshakes off the accept
/// loop, so one slow or hostile client cannot stall the others.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    mut shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an agent connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
