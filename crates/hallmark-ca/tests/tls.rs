//! Real TLS handshakes over an in-memory stream between `client_config` and
//! `server_config`, the way the agent and server connect.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hallmark_ca::tls::{client_config, server_config, ServerTrust};
use hallmark_ca::{generate_key_and_csr, spiffe_id_from_cert, X509Authority};
use hallmark_core::{SpiffeId, TrustDomain};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const HOUR: Duration = Duration::from_secs(3600);

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn server_id() -> SpiffeId {
    td().id_with_path("/hallmark/server").unwrap()
}

/// rustls checks certificates against the real clock, so these are issued
/// at the current time.
fn root() -> X509Authority {
    X509Authority::generate_root(&td(), Duration::from_secs(86_400), SystemTime::now()).unwrap()
}

/// An SVID (chain, PKCS#8 key) for `id`.
fn svid(ca: &X509Authority, id: &SpiffeId, dns: &[&str]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let (key, csr) = generate_key_and_csr(id).unwrap();
    let dns: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
    let chain = ca
        .sign_x509_svid(&csr, id, &dns, HOUR, SystemTime::now())
        .unwrap();
    (chain, key)
}

/// The server's configuration as the server builds it: its SVID with the
/// root appended for fingerprint-pinning agents.
fn server(
    ca: &X509Authority,
    id: &SpiffeId,
    client_roots: Arc<RwLock<Vec<Vec<u8>>>>,
) -> rustls::ServerConfig {
    let (mut chain, key) = svid(ca, id, &["localhost"]);
    chain.push(ca.trust_anchor_der().to_vec());
    server_config(chain, key, client_roots).unwrap()
}

fn roots_of(ca: &X509Authority) -> Arc<RwLock<Vec<Vec<u8>>>> {
    Arc::new(RwLock::new(vec![ca.trust_anchor_der().to_vec()]))
}

struct Outcome {
    /// What the server saw: the client's SPIFFE ID, if it sent a cert.
    server: Result<Option<SpiffeId>, String>,
    client: Result<(), String>,
}

async fn handshake(client: rustls::ClientConfig, server: rustls::ServerConfig) -> Outcome {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));
    let server = async move {
        let mut tls = acceptor
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
        let peer = conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|leaf| spiffe_id_from_cert(leaf).unwrap());
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok(peer)
    };
    let client = async move {
        // Any name will do: the verifier authenticates by SPIFFE ID.
        let name = ServerName::try_from("not-the-server.invalid").unwrap();
        let mut tls = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"hello");
        Ok(())
    };
    let (server, client) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(server, client)
    })
    .await
    .expect("handshake timed out");
    Outcome { server, client }
}

#[tokio::test]
async fn roots_trust_without_client_identity() {
    let ca = root();
    let client = client_config(ServerTrust::Roots(roots_of(&ca)), server_id(), None).unwrap();
    let out = handshake(client, server(&ca, &server_id(), roots_of(&ca))).await;
    assert_eq!(out.client, Ok(()));
    assert_eq!(out.server, Ok(None));
}

#[tokio::test]
async fn fingerprint_trust_with_client_identity() {
    let ca = root();
    let agent = td().id_with_path("/hallmark/agent/node1").unwrap();
    let identity = svid(&ca, &agent, &[]);
    let fingerprint = ca.fingerprint().to_uppercase();
    let client = client_config(
        ServerTrust::Fingerprint(fingerprint),
        server_id(),
        Some(identity),
    )
    .unwrap();
    let out = handshake(client, server(&ca, &server_id(), roots_of(&ca))).await;
    assert_eq!(out.client, Ok(()));
    assert_eq!(out.server, Ok(Some(agent)));
}

#[tokio::test]
async fn server_with_the_wrong_spiffe_id_is_refused() {
    let ca = root();
    let impostor = td().id_with_path("/some/workload").unwrap();
    let client = client_config(ServerTrust::Roots(roots_of(&ca)), server_id(), None).unwrap();
    let out = handshake(client, server(&ca, &impostor, roots_of(&ca))).await;
    let err = out.client.unwrap_err();
    assert!(err.contains("spiffe://example.org/some/workload"), "{err}");
    assert!(out.server.is_err());
}

#[tokio::test]
async fn wrong_fingerprint_is_refused() {
    let ca = root();
    let other = root();
    let client = client_config(
        ServerTrust::Fingerprint(other.fingerprint()),
        server_id(),
        None,
    )
    .unwrap();
    let out = handshake(client, server(&ca, &server_id(), roots_of(&ca))).await;
    let err = out.client.unwrap_err();
    assert!(err.contains("trusted fingerprint"), "{err}");
    assert!(out.server.is_err());
}

#[tokio::test]
async fn server_from_another_root_is_refused() {
    let ca = root();
    let other = root();
    let client = client_config(ServerTrust::Roots(roots_of(&other)), server_id(), None).unwrap();
    let out = handshake(client, server(&ca, &server_id(), roots_of(&ca))).await;
    assert!(out.client.unwrap_err().contains("UnknownIssuer"));
}

#[tokio::test]
async fn client_roots_are_read_at_handshake_time() {
    let ca = root();
    let agent_ca = root();
    let agent = td().id_with_path("/hallmark/agent/node1").unwrap();
    let identity = svid(&agent_ca, &agent, &[]);
    let client_roots = roots_of(&ca);
    let server_cfg = Arc::new(server(&ca, &server_id(), client_roots.clone()));
    let client = || {
        client_config(
            ServerTrust::Roots(roots_of(&ca)),
            server_id(),
            Some(identity.clone()),
        )
        .unwrap()
    };

    // The agent's CA is not trusted yet: the server refuses its certificate.
    let out = handshake(client(), (*server_cfg).clone()).await;
    assert!(out.server.is_err(), "untrusted client certificate accepted");
    assert!(out.client.is_err());

    // Trusting it afterwards needs no new configuration.
    client_roots
        .write()
        .unwrap()
        .push(agent_ca.trust_anchor_der().to_vec());
    let out = handshake(client(), (*server_cfg).clone()).await;
    assert_eq!(out.client, Ok(()));
    assert_eq!(out.server, Ok(Some(agent)));
}
