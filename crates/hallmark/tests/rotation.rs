//! Authority rotation end to end: two workloads keep talking mTLS (fresh
//! handshakes, certificates from the `spiffe` crate's X509Source) and a
//! third keeps fetching and validating JWT-SVIDs while the CA rotates three
//! times and the JWT key once; not one handshake or token may fail. Also:
//! tainting an authority makes the agent re-issue what it signed at once,
//! and the CLI's refusals.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use hallmark_proto::workload::{JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::RootCertStore;
use serde_json::Value;
use sha2::Digest;
use spiffe::{X509Source, X509Svid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// SVID lifetime for the rotation test: short, so SVIDs move to a newly
/// activated CA within about 10 s (agents renew at half-life).
const SVID_TTL: &str = "20s";
/// How long SVIDs may take to follow an activation.
const FOLLOW: Duration = Duration::from_secs(30);

/// Picks the SVID with one SPIFFE ID, so two X509Sources in one process
/// act as two workloads.
struct ById(String);

impl spiffe::x509_source::SvidPicker for ById {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        svids
            .iter()
            .position(|s| s.spiffe_id().to_string() == self.0)
    }
}

#[derive(Default)]
struct Counters {
    handshakes: AtomicU64,
    handshake_failures: AtomicU64,
    tokens: AtomicU64,
    token_failures: AtomicU64,
    /// Issuer ID (SHA-256 of the signing CA) of the server leaf the client
    /// saw last, and of the client leaf the server saw last.
    server_leaf_issuer: Mutex<String>,
    client_leaf_issuer: Mutex<String>,
    /// `kid`s of validated JWT-SVIDs, in order of first appearance.
    kids: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(der))
}

/// The ID of the root in `roots` that issued `leaf`.
fn issuer_id(leaf: &[u8], roots: &[Vec<u8>]) -> String {
    let (_, l) = x509_parser::parse_x509_certificate(leaf).expect("leaf parses");
    roots
        .iter()
        .find(|r| {
            x509_parser::parse_x509_certificate(r)
                .is_ok_and(|(_, c)| c.subject().as_raw() == l.issuer().as_raw())
        })
        .map(|r| sha256_hex(r))
        .unwrap_or_else(|| "unknown".into())
}

/// The roots the source currently trusts for its own trust domain.
fn roots_of(source: &X509Source, td: &str) -> Vec<Vec<u8>> {
    let td = spiffe::TrustDomain::new(td).expect("trust domain");
    source
        .bundle_set()
        .ok()
        .and_then(|set| set.get(&td))
        .map(|b| {
            b.authorities()
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect()
        })
        .unwrap_or_default()
}

fn identity(source: &X509Source) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let svid = source.svid().expect("source has an SVID");
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    (chain, key)
}

fn root_store(roots: &[Vec<u8>]) -> RootCertStore {
    let mut store = RootCertStore::empty();
    for r in roots {
        store
            .add(CertificateDer::from(r.clone()))
            .expect("bundle root is a valid trust anchor");
    }
    store
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS server config from the source as it is now: every handshake uses
/// the current SVID and bundle, the way a SPIFFE-aware server does.
fn server_config(source: &X509Source, td: &str) -> Result<rustls::ServerConfig, String> {
    let (chain, key) = identity(source);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(&roots_of(source, td))),
        provider(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())
}

fn client_config(source: &X509Source, td: &str) -> Result<rustls::ClientConfig, String> {
    let (chain, key) = identity(source);
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(root_store(&roots_of(source, td)))
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())
}

async fn serve(listener: TcpListener, source: Arc<X509Source>, td: String, c: Arc<Counters>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let config = match server_config(&source, &td) {
            Ok(cfg) => cfg,
            Err(e) => {
                c.errors
                    .lock()
                    .expect("counters lock")
                    .push(format!("server config: {e}"));
                continue;
            }
        };
        let c = c.clone();
        let td_roots = roots_of(&source, &td);
        tokio::spawn(async move {
            let result = async {
                let mut tls = TlsAcceptor::from(Arc::new(config))
                    .accept(tcp)
                    .await
                    .map_err(|e| format!("server handshake: {e}"))?;
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|p| p.first().map(|c| c.to_vec()))
                    .ok_or("client presented no certificate")?;
                *c.client_leaf_issuer.lock().expect("counters lock") = issuer_id(&peer, &td_roots);
                let mut b = [0u8; 1];
                tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
                tls.write_all(&b).await.map_err(|e| e.to_string())?;
                tls.shutdown().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            }
            .await;
            if let Err(e) = result {
                c.errors.lock().expect("counters lock").push(e);
            }
        });
    }
}

/// One fresh mTLS connection: handshake, one byte each way.
async fn dial(
    addr: std::net::SocketAddr,
    source: &X509Source,
    td: &str,
    c: &Counters,
) -> Result<(), String> {
    let config = client_config(source, td)?;
    let roots = roots_of(source, td);
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("client handshake: {e}"))?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|p| p.first().map(|c| c.to_vec()))
        .ok_or("server presented no certificate")?;
    *c.server_leaf_issuer.lock().expect("counters lock") = issuer_id(&peer, &roots);
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    Ok(())
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("JWT header is base64url");
    let v: Value = serde_json::from_slice(&json).expect("JWT header is JSON");
    v["kid"].as_str().unwrap_or_default().to_string()
}

/// Fetches a JWT-SVID for the client identity and has the agent validate
/// it; `keep` also re-validates a token minted before the rotations.
async fn jwt_round(
    client: &mut WorkloadClient,
    id: &str,
    old_token: &Option<String>,
) -> Result<String, String> {
    let svids = client
        .fetch_jwtsvid(req(JwtsvidRequest {
            audience: vec!["rotation-test".into()],
            spiffe_id: id.into(),
        }))
        .await
        .map_err(|s| format!("FetchJWTSVID: {s}"))?
        .into_inner()
        .svids;
    let token = svids
        .first()
        .ok_or("FetchJWTSVID returned nothing")?
        .svid
        .clone();
    for t in std::iter::once(&token).chain(old_token.iter()) {
        client
            .validate_jwtsvid(req(ValidateJwtsvidRequest {
                audience: "rotation-test".into(),
                svid: t.clone(),
            }))
            .await
            .map_err(|s| format!("ValidateJWTSVID (kid {}): {s}", kid_of(t)))?;
    }
    Ok(token)
}

/// Whether the agent's JWT bundle (FetchJWTBundles) holds key `kid`.
async fn jwt_bundle_has(socket: &std::path::Path, kid: &str) -> bool {
    let Ok(mut client) = connect(socket).await else {
        return false;
    };
    let Ok(stream) = client.fetch_jwt_bundles(req(JwtBundlesRequest {})).await else {
        return false;
    };
    match stream.into_inner().message().await {
        Ok(Some(msg)) => msg
            .bundles
            .values()
            .any(|jwks| String::from_utf8_lossy(jwks).contains(kid)),
        _ => false,
    }
}

fn authorities(server: &TestServer, kind: &str) -> Vec<Value> {
    server
        .json(&["authority", "show", "--kind", kind])
        .as_array()
        .expect("authority show --json prints an array")
        .clone()
}

fn id_in_state(server: &TestServer, kind: &str, state: &str) -> Vec<String> {
    authorities(server, kind)
        .iter()
        .filter(|a| a["state"] == state)
        .map(|a| a["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn mtls_and_jwt_traffic_survive_three_ca_and_one_jwt_rotation() {
    let server = TestServer::start_with("rot.test", &["--no-auto-rotation"]);
    let agent = TestAgent::start(&server, "n1");
    let server_id = server.id("echo/server");
    let client_id = server.id("echo/client");
    server.create_entry(
        &server_id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--x509-ttl", SVID_TTL, "--dns-name", "localhost"],
    );
    server.create_entry(
        &client_id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--x509-ttl", SVID_TTL, "--jwt-ttl", "5m"],
    );
    agent.wait_for_ids(&[&server_id, &client_id], WAIT);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let td = server.td.clone();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (server_src, client_src) = rt.block_on(async {
        let build = |id: &str| {
            X509Source::builder()
                .endpoint(agent.endpoint())
                .picker(ById(id.to_string()))
                .build()
        };
        let s = tokio::time::timeout(WAIT, build(&server_id)).await;
        let c = tokio::time::timeout(WAIT, build(&client_id)).await;
        (
            Arc::new(s.expect("server source in time").expect("server source")),
            Arc::new(c.expect("client source in time").expect("client source")),
        )
    });
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind echo server");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(serve(
        listener,
        server_src.clone(),
        td.clone(),
        counters.clone(),
    ));
    {
        let (c, src, td, stop) = (
            counters.clone(),
            client_src.clone(),
            td.clone(),
            stop.clone(),
        );
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match dial(addr, &src, &td, &c).await {
                    Ok(()) => c.handshakes.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        c.errors.lock().expect("counters lock").push(e);
                        c.handshake_failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
    }
    {
        let (c, stop, socket, id) = (
            counters.clone(),
            stop.clone(),
            agent.socket.clone(),
            client_id.clone(),
        );
        rt.spawn(async move {
            let mut client = connect(&socket).await.expect("Workload API client");
            let mut first: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                match jwt_round(&mut client, &id, &first).await {
                    Ok(token) => {
                        c.tokens.fetch_add(1, Ordering::Relaxed);
                        let kid = kid_of(&token);
                        let mut kids = c.kids.lock().expect("counters lock");
                        if !kids.contains(&kid) {
                            kids.push(kid);
                        }
                        first.get_or_insert(token);
                    }
                    Err(e) => {
                        c.errors.lock().expect("counters lock").push(e);
                        c.token_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    let started = Instant::now();
    wait_until("traffic to flow", WAIT, || {
        (counters.handshakes.load(Ordering::Relaxed) > 5
            && counters.tokens.load(Ordering::Relaxed) > 2)
            .then_some(())
    });

    for round in 1..=3 {
        let before = counters.handshakes.load(Ordering::Relaxed);
        let out = server.cli(&["authority", "prepare", "--kind", "x509"]).ok();
        assert!(
            out.stdout.contains("signs nothing"),
            "prepare explains: {}",
            out.stdout
        );
        let new_id = id_in_state(&server, "x509", "prepared")
            .pop()
            .expect("a prepared x509 authority");
        // Activate only once both workloads trust the new root.
        wait_until(
            &format!("round {round}: workloads to trust {new_id}"),
            WAIT,
            || {
                [&server_src, &client_src]
                    .iter()
                    .all(|s| roots_of(s, &td).iter().any(|r| sha256_hex(r) == new_id))
                    .then_some(())
            },
        );
        server
            .cli(&["authority", "activate", "--kind", "x509"])
            .ok();
        assert_eq!(
            id_in_state(&server, "x509", "active"),
            std::slice::from_ref(&new_id)
        );
        wait_until(
            &format!("round {round}: both peers to present SVIDs from {new_id}"),
            FOLLOW,
            || {
                let s = counters
                    .server_leaf_issuer
                    .lock()
                    .expect("counters lock")
                    .clone();
                let c = counters
                    .client_leaf_issuer
                    .lock()
                    .expect("counters lock")
                    .clone();
                (s == new_id && c == new_id).then_some(())
            },
        );
        let after = counters.handshakes.load(Ordering::Relaxed);
        assert!(
            after > before + 20,
            "round {round}: traffic kept flowing ({before} -> {after})"
        );
    }
    assert_eq!(id_in_state(&server, "x509", "retired").len(), 3);

    // One JWT key rotation: new tokens carry the new kid; the first token
    // (old kid) keeps validating in every round of the loop.
    let old_kid = id_in_state(&server, "jwt", "active")
        .pop()
        .expect("active jwt key");
    server.cli(&["authority", "prepare", "--kind", "jwt"]).ok();
    let new_kid = id_in_state(&server, "jwt", "prepared")
        .pop()
        .expect("prepared jwt key");
    // The agent validates with its bundle; activate once it has the key.
    wait_until("the agent to publish the new JWT key", WAIT, || {
        rt.block_on(jwt_bundle_has(&agent.socket, &new_kid))
            .then_some(())
    });
    server.cli(&["authority", "activate", "--kind", "jwt"]).ok();
    // The agent caches JWT-SVIDs while most of their lifetime is left, so
    // a fresh identity shows the new kid right away; the loop's identity
    // shows it when its cache entry ages out. Mint with a new audience.
    rt.block_on(async {
        let mut client = connect(&agent.socket).await.expect("client");
        let token = tokio::time::timeout(WAIT, async {
            loop {
                let r = client
                    .fetch_jwtsvid(req(JwtsvidRequest {
                        audience: vec![format!("after-{new_kid}")],
                        spiffe_id: client_id.clone(),
                    }))
                    .await;
                if let Ok(r) = r {
                    if let Some(s) = r.into_inner().svids.first() {
                        if kid_of(&s.svid) == new_kid {
                            return s.svid.clone();
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("a JWT-SVID signed with the new key");
        client
            .validate_jwtsvid(req(ValidateJwtsvidRequest {
                audience: format!("after-{new_kid}"),
                svid: token,
            }))
            .await
            .expect("the new kid validates");
    });
    let tokens_before = counters.tokens.load(Ordering::Relaxed);
    wait_until("more JWT rounds after the key rotation", WAIT, || {
        (counters.tokens.load(Ordering::Relaxed) > tokens_before + 20).then_some(())
    });
    assert!(id_in_state(&server, "jwt", "retired").contains(&old_kid));

    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    let handshakes = counters.handshakes.load(Ordering::Relaxed);
    let failures = counters.handshake_failures.load(Ordering::Relaxed);
    let tokens = counters.tokens.load(Ordering::Relaxed);
    let rejected = counters.token_failures.load(Ordering::Relaxed);
    let errors = counters.errors.lock().expect("counters lock").clone();
    eprintln!(
        "rotation: {handshakes} handshakes, {failures} failed; {tokens} JWT rounds, {rejected} rejected; {:?}",
        started.elapsed()
    );
    assert_eq!(failures, 0, "failed handshakes: {errors:?}");
    assert_eq!(rejected, 0, "rejected tokens: {errors:?}");
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert!(handshakes > 300, "only {handshakes} handshakes");
    assert!(tokens > 50, "only {tokens} JWT rounds");
    drop(rt);
}

#[test]
fn tainting_the_old_ca_reissues_every_svid_at_once() {
    let server = TestServer::start_with("taint.test", &["--no-auto-rotation"]);
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("svc");
    // A long lifetime: only the taint can explain a re-issue.
    server.create_entry(
        &id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--x509-ttl", "1h"],
    );
    agent.wait_for_ids(&[&id], WAIT);
    let old = id_in_state(&server, "x509", "active")
        .pop()
        .expect("active CA");
    // X.509 is the default kind.
    server.cli(&["authority", "prepare"]).ok();
    let new = id_in_state(&server, "x509", "prepared")
        .pop()
        .expect("prepared CA");
    server.cli(&["authority", "activate", "--id", &new]).ok();
    // Activation alone re-issues nothing: the SVID is far from half-life.
    std::thread::sleep(Duration::from_secs(2));
    let before = agent.fetch_svid();
    let before_info = cert_info(&before.chain[0]);
    let roots = pem_certs(&server.bundle_pem());
    assert_eq!(issuer_id(&before.chain[0], &roots), old);
    let agent_svid_before =
        std::fs::read(agent.data_dir.join("agent-svid.pem")).expect("agent SVID file");

    let out = server
        .cli(&["authority", "taint", "--kind", "x509", "--id", &old])
        .ok();
    assert!(out.stdout.contains("re-issue"), "{}", out.stdout);
    let tainted_at = Instant::now();
    let after = wait_until(
        "the workload SVID to be re-issued",
        Duration::from_secs(5),
        || {
            let s = agent.try_fetch_svid().ok()?;
            (cert_info(&s.chain[0]).serial != before_info.serial).then_some(s)
        },
    );
    eprintln!("re-issued {:?} after the taint", tainted_at.elapsed());
    assert_eq!(
        issuer_id(&after.chain[0], &roots),
        new,
        "signed by the new CA"
    );
    wait_until(
        "the agent SVID to be re-issued",
        Duration::from_secs(10),
        || {
            let now = std::fs::read(agent.data_dir.join("agent-svid.pem")).ok()?;
            (now != agent_svid_before).then_some(())
        },
    );

    // JWT: a cached token of a tainted key is not served again.
    let fetch = |aud: &str| {
        let aud = aud.to_string();
        let socket = agent.socket.clone();
        let id = id.clone();
        block_on(async move {
            let mut client = connect(&socket).await.expect("Workload API client");
            client
                .fetch_jwtsvid(req(JwtsvidRequest {
                    audience: vec![aud],
                    spiffe_id: id,
                }))
                .await
                .expect("FetchJWTSVID")
                .into_inner()
                .svids[0]
                .svid
                .clone()
        })
    };
    let old_kid = id_in_state(&server, "jwt", "active")
        .pop()
        .expect("JWT key");
    let t1 = fetch("taint-aud");
    assert_eq!(
        fetch("taint-aud"),
        t1,
        "the agent serves JWT-SVIDs from cache"
    );
    server.cli(&["authority", "prepare", "--kind", "jwt"]).ok();
    server.cli(&["authority", "activate", "--kind", "jwt"]).ok();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        fetch("taint-aud"),
        t1,
        "activation alone keeps the cached token"
    );
    // The kind follows from the ID; the ID may be the argument (key IDs
    // can start with `-`).
    server.cli(&["authority", "taint", &old_kid]).ok();
    let t2 = wait_until(
        "a fresh JWT-SVID after the taint",
        Duration::from_secs(5),
        || {
            let t = fetch("taint-aud");
            (t != t1).then_some(t)
        },
    );
    assert_ne!(kid_of(&t2), old_kid);

    // Still in the bundle until revoked; then gone.
    assert!(roots.iter().any(|r| sha256_hex(r) == old));
    let out = server
        .cli(&["authority", "revoke", "--kind", "x509", "--id", &old])
        .ok();
    assert!(out.stdout.contains("left the bundle"), "{}", out.stdout);
    let roots = pem_certs(&server.bundle_pem());
    assert!(
        !roots.iter().any(|r| sha256_hex(r) == old),
        "revoked root left the bundle"
    );
    assert_eq!(roots.len(), 1);
}

#[test]
fn cli_refuses_what_the_state_does_not_allow() {
    let server = TestServer::start_with("refuse.test", &["--no-auto-rotation"]);
    let active = id_in_state(&server, "x509", "active")
        .pop()
        .expect("active CA");
    server
        .cli(&["authority", "activate", "--kind", "x509"])
        .fails()
        .stderr_has(&[
            "no prepared authority",
            "hallmark authority prepare --kind x509",
        ]);
    server
        .cli(&["authority", "taint", "--kind", "x509", "--id", &active])
        .fails()
        .stderr_has(&[
            &active,
            "it is active",
            "only a retired authority can be tainted",
        ]);
    server
        .cli(&["authority", "revoke", "--kind", "x509", "--id", &active])
        .fails()
        .stderr_has(&["only a tainted authority can be revoked"]);
    server
        .cli(&["authority", "taint", "--kind", "x509", "--id", "nope"])
        .fails()
        .stderr_has(&["no X.509 authority `nope`"]);
    server
        .cli(&["authority", "prepare", "--kind", "rsa"])
        .fails()
        .stderr_has(&["`rsa`", "x509, jwt, oidc"]);
    let table = server.cli(&["authority", "show"]).ok().stdout;
    assert!(table.starts_with("KIND"), "{table}");
    for kind in ["x509", "jwt", "oidc"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(kind) && l.contains("active")),
            "{table}"
        );
    }
}

#[test]
fn bundle_sequence_never_goes_back_across_a_restart() {
    let mut server = TestServer::start_with("seq.test", &["--no-auto-rotation"]);
    let seq = |s: &TestServer| {
        let jwks: Value =
            serde_json::from_str(&s.cli(&["bundle", "show", "--format", "jwks"]).ok().stdout)
                .expect("bundle JSON");
        jwks["spiffe_sequence"].as_u64().expect("spiffe_sequence")
    };
    let s0 = seq(&server);
    server.cli(&["authority", "prepare", "--kind", "x509"]).ok();
    let s1 = seq(&server);
    server
        .cli(&["authority", "activate", "--kind", "x509"])
        .ok();
    let s2 = seq(&server);
    assert!(s0 < s1 && s1 < s2, "{s0} {s1} {s2}");
    server.restart();
    let s3 = seq(&server);
    assert_eq!(s3, s2, "the same records give the same sequence");
    server.cli(&["authority", "prepare", "--kind", "jwt"]).ok();
    assert!(seq(&server) > s3);
}

#[test]
fn the_schedule_prepares_activates_and_drops_the_expired_root() {
    // A 20 s CA: successor prepared at 10 s, activated at about 17 s; the
    // old root leaves the bundle when it expires at 20 s.
    let server = TestServer::start_with(
        "sched.test",
        &["--ca-ttl", "20s", "--rotation-check-interval", "1s"],
    );
    let first = id_in_state(&server, "x509", "active")
        .pop()
        .expect("active CA");
    let prepared = wait_until("a scheduled prepare", Duration::from_secs(20), || {
        id_in_state(&server, "x509", "prepared").pop()
    });
    assert_eq!(
        id_in_state(&server, "x509", "active"),
        std::slice::from_ref(&first)
    );
    let roots = pem_certs(&server.bundle_pem());
    assert!(
        roots.iter().any(|r| sha256_hex(r) == prepared),
        "prepared root published"
    );
    wait_until("a scheduled activation", Duration::from_secs(15), || {
        (id_in_state(&server, "x509", "active") == std::slice::from_ref(&prepared)).then_some(())
    });
    assert_eq!(
        id_in_state(&server, "x509", "retired"),
        std::slice::from_ref(&first)
    );
    wait_until(
        "the expired root to leave the bundle",
        Duration::from_secs(15),
        || {
            let roots = pem_certs(&server.bundle_pem());
            (!roots.iter().any(|r| sha256_hex(r) == first)).then_some(())
        },
    );
}
