//! Federation between two trust domains, each with its own server and
//! agent: bundles exchanged with `hallmark bundle show`, relationships
//! created with `hallmark federation create` over the https_spiffe bundle
//! endpoints, and workloads of both domains authenticating each other with
//! what the `spiffe` crate reads from their own agents.

mod common;

use std::fs;
use std::sync::{Arc, RwLock};

use common::*;
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn federation_url(server: &TestServer) -> String {
    let file = server.data_dir.join("federation.addr");
    let addr = wait_until("federation.addr", WAIT, || fs::read_to_string(&file).ok());
    format!("https://{}/", addr.trim())
}

fn bundle_file(server: &TestServer, dir: &std::path::Path) -> std::path::PathBuf {
    let out = server.cli(&["bundle", "show", "--format", "jwks"]).ok();
    let path = dir.join(format!("{}.jwks", server.td));
    fs::write(&path, &out.stdout).expect("write bundle");
    path
}

/// `federation create` on `here` for `there`'s bundle endpoint (profile
/// https_spiffe), bootstrapped from `there`'s bundle in `jwks`.
fn create_args(there: &TestServer, jwks: &std::path::Path) -> Vec<String> {
    let url = federation_url(there);
    let jwks = jwks.to_str().expect("utf-8 temp path");
    [
        "federation",
        "create",
        "--trust-domain",
        &there.td,
        "--bundle-endpoint-url",
        &url,
        "--trust-bundle",
        jwks,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Federates `here` with `there` and checks the first fetch succeeded;
/// returns the relationship as `federation create --json` shows it.
fn federate(here: &TestServer, there: &TestServer, dir: &std::path::Path) -> serde_json::Value {
    let args = create_args(there, &bundle_file(there, dir));
    let created = here.json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        created.get("last_error").is_none(),
        "{} fetching {}: {created}",
        here.td,
        there.td
    );
    created
}

async fn x509_bundle_keys(agent: &TestAgent) -> Vec<String> {
    let mut c = agent.client().await;
    let mut s = c
        .fetch_x509_bundles(req(X509BundlesRequest {}))
        .await
        .expect("FetchX509Bundles")
        .into_inner();
    let m = s.message().await.expect("message").expect("a message");
    let mut keys: Vec<String> = m.bundles.keys().cloned().collect();
    keys.sort();
    keys
}

/// An X509-SVID (chain, PKCS#8 key) and the roots of `peer_td` as the
/// `spiffe` crate reads them from the agent.
async fn identity_and_peer_roots(
    agent: &TestAgent,
    peer_td: &str,
) -> (Vec<Vec<u8>>, Vec<u8>, Vec<Vec<u8>>) {
    let source = tokio::time::timeout(
        WAIT,
        spiffe::X509Source::builder()
            .endpoint(agent.endpoint())
            .build(),
    )
    .await
    .expect("X509Source within WAIT")
    .expect("X509Source builds");
    let svid = source.svid().expect("svid");
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let key = svid.private_key().as_bytes().to_vec();
    let td = spiffe::TrustDomain::new(peer_td).expect("td");
    let roots = source
        .bundle_set()
        .expect("bundle set")
        .get(&td)
        .unwrap_or_else(|| panic!("the spiffe crate sees no bundle for {peer_td}"))
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    (chain, key, roots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trust_domains_federate_and_workloads_authenticate_each_other() {
    let alpha = TestServer::start_with("alpha.test", &["--federation-listen", "127.0.0.1:0"]);
    let beta = TestServer::start_with("beta.test", &["--federation-listen", "127.0.0.1:0"]);
    let dir = short_tempdir();
    let alpha_jwks = bundle_file(&alpha, dir.path());
    let beta_jwks = bundle_file(&beta, dir.path());

    // Bad input is refused naming the field and the rule.
    alpha
        .cli(&[
            "federation",
            "create",
            "--trust-domain",
            "beta.test",
            "--bundle-endpoint-url",
            "http://127.0.0.1:1/",
            "--trust-bundle",
            beta_jwks.to_str().unwrap(),
        ])
        .fails()
        .stderr_has(&["bundle_endpoint_url", "https://"]);
    alpha
        .cli(&[
            "federation",
            "create",
            "--trust-domain",
            "alpha.test",
            "--bundle-endpoint-url",
            "https://127.0.0.1:1/",
            "--trust-bundle",
            alpha_jwks.to_str().unwrap(),
        ])
        .fails()
        .stderr_has(&["alpha.test", "own trust domain"]);
    alpha
        .cli(&[
            "federation",
            "create",
            "--trust-domain",
            "beta.test",
            "--bundle-endpoint-url",
            "https://127.0.0.1:1/",
        ])
        .fails()
        .stderr_has(&["bootstrap bundle", "https_spiffe"]);

    let created = federate(&alpha, &beta, dir.path());
    assert!(created["last_refresh"].as_i64().is_some(), "{created}");
    assert!(
        created["jwt_authorities"].as_u64().unwrap() >= 1,
        "{created}"
    );
    federate(&beta, &alpha, dir.path());
    let again = create_args(&beta, &beta_jwks);
    alpha
        .cli(&again.iter().map(String::as_str).collect::<Vec<_>>())
        .fails()
        .stderr_has(&["beta.test", "exists already"]);

    let list = alpha.json(&["federation", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["trust_domain"], "beta.test");
    let table = alpha.cli(&["federation", "list"]).ok();
    assert!(
        table.stdout.contains("TRUST DOMAIN") && table.stdout.contains("ok (sequence"),
        "{table}"
    );
    let shown = alpha.json(&["federation", "show", "beta.test"]);
    assert!(shown["bundle"]["keys"].is_array(), "{shown}");
    alpha
        .cli(&["federation", "show", "gamma.test"])
        .fails()
        .stderr_has(&["no federation with gamma.test", "hallmark federation list"]);

    let (a_agent, b_agent, a_id, b_id) =
        federated_workloads(&alpha, &beta, "svc/server", "svc/client");

    // Both domains' bundles reach each side's workloads.
    let want_a = vec![
        "spiffe://alpha.test".to_string(),
        "spiffe://beta.test".to_string(),
    ];
    assert_eq!(wait_for_bundle_domains(&a_agent, 2), want_a);
    assert_eq!(x509_bundle_keys(&b_agent).await, want_a);
    let mut c = b_agent.client().await;
    let mut s = c
        .fetch_jwt_bundles(req(JwtBundlesRequest {}))
        .await
        .expect("FetchJWTBundles")
        .into_inner();
    let jwt = s.message().await.expect("message").expect("a message");
    assert!(
        jwt.bundles.contains_key("spiffe://alpha.test"),
        "{:?}",
        jwt.bundles.keys()
    );
    assert!(
        jwt.bundles.contains_key("spiffe://beta.test"),
        "{:?}",
        jwt.bundles.keys()
    );

    // ValidateJWTSVID in alpha accepts a beta JWT-SVID.
    let mut bc = b_agent.client().await;
    let token = bc
        .fetch_jwtsvid(req(JwtsvidRequest {
            audience: vec!["alpha-api".into()],
            spiffe_id: String::new(),
        }))
        .await
        .expect("FetchJWTSVID")
        .into_inner()
        .svids
        .remove(0)
        .svid;
    let mut ac = a_agent.client().await;
    let v = ac
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "alpha-api".into(),
            svid: token.clone(),
        }))
        .await
        .expect("alpha validates a beta JWT-SVID")
        .into_inner();
    assert_eq!(v.spiffe_id, b_id);

    // mTLS: server in alpha, client in beta, each trusting what its own
    // agent gave it for the other domain.
    let (a_chain, a_key, beta_roots) = identity_and_peer_roots(&a_agent, "beta.test").await;
    let (b_chain, b_key, alpha_roots) = identity_and_peer_roots(&b_agent, "alpha.test").await;
    let server_cfg =
        hallmark_ca::tls::server_config(a_chain, a_key, Arc::new(RwLock::new(beta_roots)))
            .expect("server config");
    let client_cfg = hallmark_ca::tls::client_config(
        hallmark_ca::tls::ServerTrust::Roots(Arc::new(RwLock::new(alpha_roots))),
        hallmark_core::SpiffeId::new(&a_id).unwrap(),
        Some((b_chain, b_key)),
    )
    .expect("client config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .expect("client presented a certificate")[0]
            .to_vec();
        tls.write_all(b"hello beta").await.unwrap();
        tls.shutdown().await.ok();
        hallmark_ca::spiffe_id_from_cert(&peer).unwrap().to_string()
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
        .connect(
            rustls_pki_types::ServerName::try_from("alpha").unwrap(),
            tcp,
        )
        .await
        .expect("client handshake");
    let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.ok();
    assert_eq!(got, b"hello beta");
    assert_eq!(
        hallmark_ca::spiffe_id_from_cert(&server_cert)
            .unwrap()
            .to_string(),
        a_id,
        "client sees alpha's workload"
    );
    assert_eq!(server.await.unwrap(), b_id, "server sees beta's workload");

    // An entry without federates_with gets no foreign bundle.
    let plain_agent = TestAgent::start(&alpha, "a2");
    let plain = alpha.id("svc/plain");
    alpha.create_entry(&plain, &plain_agent.spiffe_id, &["unix:uid:0"], &[]);
    plain_agent.wait_for_ids(&[&plain], WAIT);
    assert_eq!(
        x509_bundle_keys(&plain_agent).await,
        vec!["spiffe://alpha.test".to_string()]
    );
    let mut pc = plain_agent.client().await;
    let refused = pc
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "alpha-api".into(),
            svid: token,
        }))
        .await
        .expect_err("a caller not federating with beta.test must not validate its tokens");
    assert!(refused.message().contains("beta.test"), "{refused:?}");

    // Refresh: a new JWT key in beta's bundle reaches alpha's workload.
    let before = jwt.bundles["spiffe://beta.test"].clone();
    let mut ac = a_agent.client().await;
    let mut stream = ac
        .fetch_jwt_bundles(req(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.bundles["spiffe://beta.test"], before);
    beta.cli(&["authority", "prepare", "--kind", "jwt"]).ok();
    alpha.cli(&["federation", "refresh", "beta.test"]).ok();
    let next = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a new JWT bundle message within WAIT")
        .unwrap()
        .unwrap();
    assert_ne!(
        next.bundles["spiffe://beta.test"], before,
        "beta's bundle changed after the refresh"
    );

    // Delete: the bundle leaves the workloads.
    alpha.cli(&["federation", "delete", "beta.test"]).ok();
    let after = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an update after delete")
        .unwrap()
        .unwrap();
    assert!(
        !after.bundles.contains_key("spiffe://beta.test"),
        "{:?}",
        after.bundles.keys()
    );
    assert!(alpha
        .json(&["federation", "list"])
        .as_array()
        .unwrap()
        .is_empty());
}

// ------------------------------------------------------------- https_web

/// A self-signed CA of the test's own private WebPKI.
fn web_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (cert, key)
}

/// A TLS server certificate (PEM chain, PEM key) for DNS name `localhost`
/// only: no IP SAN, so `https://127.0.0.1/` must not match it.
fn web_server_cert(ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, ca, ca_key)
        .expect("sign the server certificate");
    (format!("{}{}", cert.pem(), ca.pem()), key.serialize_pem())
}

fn write_file(path: &std::path::Path, text: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_str().expect("utf-8 temp path").to_string()
}

/// The trust domains whose X.509 bundles `agent`'s Workload API hands to
/// a root caller, waited for until there are `want`.
fn wait_for_bundle_domains(agent: &TestAgent, want: usize) -> Vec<String> {
    wait_until(
        &format!("{want} X.509 bundles from {}", agent.socket.display()),
        WAIT,
        || {
            let socket = agent.socket.clone();
            let keys = block_on(async move {
                let mut c = connect(&socket).await.ok()?;
                let mut s = c
                    .fetch_x509_bundles(req(X509BundlesRequest {}))
                    .await
                    .ok()?
                    .into_inner();
                let m = s.message().await.ok()??;
                let mut k: Vec<String> = m.bundles.keys().cloned().collect();
                k.sort();
                Some(k)
            })?;
            (keys.len() == want).then_some(keys)
        },
    )
}

/// The X.509 authorities `agent` hands out for trust domain `td`.
async fn x509_bundle_of(agent: &TestAgent, td: &str) -> Vec<Vec<u8>> {
    let mut c = agent.client().await;
    let mut s = c
        .fetch_x509_bundles(req(X509BundlesRequest {}))
        .await
        .expect("FetchX509Bundles")
        .into_inner();
    let m = s.message().await.expect("message").expect("a message");
    let der = m
        .bundles
        .get(&format!("spiffe://{td}"))
        .unwrap_or_else(|| panic!("no bundle for {td} in {:?}", m.bundles.keys()));
    split_der_certs(der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_web_endpoint_is_fetched_with_a_private_ca_and_no_bootstrap_bundle() {
    let dir = short_tempdir();
    let (ca, ca_key) = web_ca("hallmark federation test CA");
    let (other_ca, _) = web_ca("some other CA");
    let (chain_pem, key_pem) = web_server_cert(&ca, &ca_key);
    let cert_file = write_file(&dir.path().join("endpoint.pem"), &chain_pem, 0o644);
    let key_file = write_file(&dir.path().join("endpoint.key"), &key_pem, 0o600);
    let ca_file = write_file(&dir.path().join("ca.pem"), &ca.pem(), 0o644);
    let other_ca_file = write_file(&dir.path().join("other-ca.pem"), &other_ca.pem(), 0o644);

    let beta = TestServer::start_with(
        "beta.test",
        &[
            "--federation-listen",
            "127.0.0.1:0",
            "--federation-profile",
            "https_web",
            "--federation-tls-cert",
            &cert_file,
            "--federation-tls-key",
            &key_file,
        ],
    );
    let alpha = TestServer::start("alpha.test");
    let port = federation_url(&beta)
        .trim_start_matches("https://127.0.0.1:")
        .trim_end_matches('/')
        .parse::<u16>()
        .expect("federation.addr is 127.0.0.1:PORT");
    let url = format!("https://localhost:{port}/");
    let create = |url: &str, ca_file: &str| {
        alpha.json(&[
            "federation",
            "create",
            "--trust-domain",
            "beta.test",
            "--bundle-endpoint-url",
            url,
            "--profile",
            "https_web",
            "--web-ca",
            ca_file,
        ])
    };

    // The first fetch authenticates beta's endpoint with the private CA
    // alone: no bundle of beta.test was given.
    let created = create(&url, &ca_file);
    assert!(
        created.get("last_error").is_none(),
        "first fetch failed: {created}"
    );
    assert_eq!(created["profile"], "https_web", "{created}");
    assert!(created["last_refresh"].as_i64().is_some(), "{created}");
    let shown = alpha.json(&["federation", "show", "beta.test"]);
    assert!(shown.get("last_error").is_none(), "{shown}");
    assert!(shown["last_refresh"].as_i64().is_some(), "{shown}");
    let beta_jwks: serde_json::Value = serde_json::from_str(
        &beta
            .cli(&["bundle", "show", "--format", "jwks"])
            .ok()
            .stdout,
    )
    .expect("beta's bundle is JSON");
    assert_eq!(
        shown["bundle"]["keys"], beta_jwks["keys"],
        "alpha holds beta's bundle as beta serves it"
    );

    // An alpha workload federating with beta.test receives beta's roots.
    let agent = TestAgent::start(&alpha, "a1");
    let id = alpha.id("svc/web-federated");
    alpha.create_entry(
        &id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--federates-with", "beta.test"],
    );
    agent.wait_for_ids(&[&id], WAIT);
    assert_eq!(
        wait_for_bundle_domains(&agent, 2),
        vec!["spiffe://alpha.test", "spiffe://beta.test"]
    );
    assert_eq!(
        x509_bundle_of(&agent, "beta.test").await,
        pem_certs(&beta.bundle_pem()),
        "the workload's beta.test bundle is beta's X.509 authorities"
    );
    alpha.cli(&["federation", "delete", "beta.test"]).ok();

    // A CA that did not sign the endpoint's certificate: refused, and
    // the error says it is the certificate's issuer.
    let wrong = create(&url, &other_ca_file);
    let error = wrong["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("invalid peer certificate")
            && error.contains("UnknownIssuer")
            && error.contains("--web-ca"),
        "{wrong}"
    );
    assert!(wrong["last_refresh"].is_null(), "{wrong}");
    alpha
        .cli(&["federation", "refresh", "beta.test"])
        .fails()
        .stderr_has(&[
            "beta.test",
            "invalid peer certificate",
            "UnknownIssuer",
            "--web-ca",
        ]);
    alpha.cli(&["federation", "delete", "beta.test"]).ok();

    // The right CA, but the URL's host is not a name on the certificate.
    let by_ip = create(&format!("https://127.0.0.1:{port}/"), &ca_file);
    let error = by_ip["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not valid for name") && error.contains("127.0.0.1"),
        "{by_ip}"
    );
    alpha
        .cli(&["federation", "refresh", "beta.test"])
        .fails()
        .stderr_has(&["not valid for name", "127.0.0.1", "localhost"]);
}

// ---------------------------------------------------- Python, spiffe-tls

/// Two trust domains federated both ways over https_spiffe, each with an
/// agent and a root workload entry that federates with the other domain.
struct FederatedPair {
    // The servers only need to keep running.
    _alpha: TestServer,
    _beta: TestServer,
    a_agent: TestAgent,
    b_agent: TestAgent,
    a_id: String,
    b_id: String,
}

/// An agent on each server and a root workload entry on each that
/// federates with the other domain, synced: (alpha agent, beta agent,
/// alpha ID, beta ID).
fn federated_workloads(
    alpha: &TestServer,
    beta: &TestServer,
    a_path: &str,
    b_path: &str,
) -> (TestAgent, TestAgent, String, String) {
    let a_agent = TestAgent::start(alpha, "a1");
    let b_agent = TestAgent::start(beta, "b1");
    let a_id = alpha.id(a_path);
    let b_id = beta.id(b_path);
    for (server, agent, id, other) in [
        (alpha, &a_agent, &a_id, &beta.td),
        (beta, &b_agent, &b_id, &alpha.td),
    ] {
        server.create_entry(
            id,
            &agent.spiffe_id,
            &["unix:uid:0"],
            &["--federates-with", other],
        );
        agent.wait_for_ids(&[id], WAIT);
    }
    (a_agent, b_agent, a_id, b_id)
}

fn federated_pair() -> FederatedPair {
    let alpha = TestServer::start_with("alpha.test", &["--federation-listen", "127.0.0.1:0"]);
    let beta = TestServer::start_with("beta.test", &["--federation-listen", "127.0.0.1:0"]);
    let dir = short_tempdir();
    for (here, there) in [(&alpha, &beta), (&beta, &alpha)] {
        federate(here, there, dir.path());
    }
    let (a_agent, b_agent, a_id, b_id) =
        federated_workloads(&alpha, &beta, "svc/listener", "svc/dialer");
    FederatedPair {
        _alpha: alpha,
        _beta: beta,
        a_agent,
        b_agent,
        a_id,
        b_id,
    }
}

#[test]
fn python_workloads_of_two_trust_domains_talk_mtls_with_spiffe_tls() {
    let pair = federated_pair();
    let both = vec!["spiffe://alpha.test", "spiffe://beta.test"];
    assert_eq!(wait_for_bundle_domains(&pair.a_agent, 2), both);
    assert_eq!(wait_for_bundle_domains(&pair.b_agent, 2), both);

    // The listener runs against alpha's agent, the dialer against beta's:
    // each process's SPIFFE_ENDPOINT_SOCKET names its own agent only.
    let dir = short_tempdir();
    let port_file = dir.path().join("listener.port");
    let message = "hello from alpha.test";
    let mut listener_cmd = std::process::Command::new(python());
    listener_cmd
        .arg(repo_root().join("tests/interop/federated_mtls.py"))
        .args(["listen", "--expect-peer", &pair.b_id, "--message", message])
        .arg("--port-file")
        .arg(&port_file)
        .env("SPIFFE_ENDPOINT_SOCKET", pair.a_agent.endpoint())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null());
    let listener = std::thread::spawn(move || run(&mut listener_cmd, CLI_TIMEOUT));
    let port = wait_until(
        "the Python listener to write its port",
        WAIT,
        || match fs::read_to_string(&port_file) {
            Ok(port) => Some(Some(port)),
            Err(_) => listener.is_finished().then_some(None),
        },
    );
    let Some(port) = port else {
        let out = listener.join().expect("listener thread");
        panic!("the Python listener exited before listening:\n{out}");
    };
    let dialer = run_python(
        &pair.b_agent,
        "federated_mtls.py",
        &[
            "dial",
            "--address",
            &format!("127.0.0.1:{}", port.trim()),
            "--expect-peer",
            &pair.a_id,
            "--message",
            message,
        ],
        CLI_TIMEOUT,
    );
    let listener = listener.join().unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "the listener thread panicked".into());
        panic!("{why}\n--- dialer:\n{dialer}")
    });
    assert!(
        dialer.success(),
        "dialer failed:\n{dialer}\nlistener:\n{listener}"
    );
    assert!(
        listener.success(),
        "listener failed:\n{listener}\ndialer:\n{dialer}"
    );
    assert!(
        listener.stdout.contains(&format!("peer: {}\n", pair.b_id)),
        "the alpha listener saw the beta dialer:\n{listener}"
    );
    assert!(
        dialer.stdout.contains(&format!("peer: {}\n", pair.a_id)),
        "the beta dialer saw the alpha listener:\n{dialer}"
    );
    for (out, own, peer_td) in [
        (&listener, &pair.a_id, "beta.test"),
        (&dialer, &pair.b_id, "alpha.test"),
    ] {
        assert!(
            out.stdout.contains(&format!("ok: own SVID {own};"))
                && out.stdout.contains(peer_td)
                && out.stdout.contains(&format!("ok: exchanged '{message}'")),
            "{out}"
        );
    }
}

#[test]
fn a_foreign_bundle_is_fetched_again_on_its_refresh_hint() {
    let alpha = TestServer::start_with("alpha.test", &["--federation-listen", "127.0.0.1:0"]);
    let beta = TestServer::start_with(
        "beta.test",
        &[
            "--federation-listen",
            "127.0.0.1:0",
            "--bundle-refresh-hint",
            "10s",
        ],
    );
    let beta_jwks = beta.json(&["bundle", "show", "--format", "jwks"]);
    assert_eq!(beta_jwks["spiffe_refresh_hint"], 10, "{beta_jwks}");

    let dir = short_tempdir();
    let created = federate(&alpha, &beta, dir.path());
    let key_count = |v: &serde_json::Value| v["bundle"]["keys"].as_array().map_or(0, Vec::len);
    let before = key_count(&created);
    assert!(before > 0, "{created}");

    // Beta publishes a new key; alpha fetches it by itself at the hint,
    // without `federation refresh`.
    beta.cli(&["authority", "prepare", "--kind", "jwt"]).ok();
    let started = std::time::Instant::now();
    let after = wait_until(
        "alpha to fetch beta's new bundle on its refresh hint",
        std::time::Duration::from_secs(30),
        || {
            let shown = alpha.json(&["federation", "show", "beta.test"]);
            let n = key_count(&shown);
            (n > before).then_some(n)
        },
    );
    assert_eq!(after, before + 1);
    assert!(
        started.elapsed() <= std::time::Duration::from_secs(25),
        "fetched after {:?}",
        started.elapsed()
    );

    // A hint outside 10s..1d is refused at start, naming the key.
    let mut cmd = hallmark_cmd(&["server", "run", "--bundle-refresh-hint", "1s"]);
    run(&mut cmd, CLI_TIMEOUT)
        .fails()
        .stderr_has(&["bundle_refresh_hint", "10s"]);
}
