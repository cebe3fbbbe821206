//! The `spiffe` crate's X509Source and JwtSource, a client nobody here
//! wrote, against a real server and agent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use spiffe::{JwtSource, TrustDomain, X509Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_crate_sources_fetch_verify_and_follow_rotation() {
    let server = TestServer::start("rs.test");
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("rs/svc");
    server.create_entry(
        &id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--x509-ttl", "20s"],
    );
    wait_until("the entry to reach the agent", WAIT, || {
        agent.try_fetch_svid().ok().filter(|s| s.spiffe_id() == id)
    });
    let td = TrustDomain::new(&server.td).expect("trust domain");

    let source = tokio::time::timeout(
        WAIT,
        X509Source::builder().endpoint(agent.endpoint()).build(),
    )
    .await
    .expect("X509Source synced within WAIT")
    .expect("X509Source builds");
    let svid = source.svid().expect("X509Source has an SVID");
    assert_eq!(svid.spiffe_id().to_string(), id);
    let chain: Vec<Vec<u8>> = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let bundle = source
        .bundle_set()
        .expect("X509Source has bundles")
        .get(&td)
        .unwrap_or_else(|| panic!("no X.509 bundle for {td}"));
    let roots: Vec<Vec<u8>> = bundle
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    verify_chain(&chain, &roots).expect("SVID from X509Source chains to its bundle");
    let first = cert_info(&chain[0]);
    assert_eq!(first.uri_sans, [id.as_str()]);

    // Rotation: a new serial must show up on the source before the first
    // SVID's notAfter (its lifetime is 20 s; agents renew at about half).
    let mut updates = source.updated();
    let deadline = Instant::now() + Duration::from_secs(25);
    let rotated = loop {
        let current = cert_info(source.svid().expect("svid").cert_chain()[0].as_bytes());
        if current.serial != first.serial {
            break current;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "X509Source still holds serial {} 25s later (notAfter {})",
            first.serial,
            first.not_after
        );
        let _ = tokio::time::timeout(remaining, updates.changed()).await;
    };
    assert!(
        now_unix() < first.not_after,
        "rotated SVID (serial {}) arrived after the first one expired at {}",
        rotated.serial,
        first.not_after
    );
    assert_eq!(rotated.uri_sans, [id.as_str()]);
    let chain: Vec<Vec<u8>> = source
        .svid()
        .expect("svid")
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    verify_chain(&chain, &roots).expect("rotated SVID chains to the bundle");
    source.shutdown().await;

    let jwt_source = tokio::time::timeout(
        WAIT,
        JwtSource::builder().endpoint(agent.endpoint()).build(),
    )
    .await
    .expect("JwtSource synced within WAIT")
    .expect("JwtSource builds");
    let jwt = jwt_source
        .fetch_jwt_svid(["rs-aud"])
        .await
        .expect("JwtSource fetches a JWT-SVID");
    assert_eq!(jwt.spiffe_id().to_string(), id);
    assert_eq!(jwt.audience(), ["rs-aud".to_string()]);
    let jwt_bundle = jwt_source
        .bundle_set()
        .expect("JwtSource has bundles")
        .get(&td)
        .unwrap_or_else(|| panic!("no JWT bundle for {td}"));
    assert!(
        jwt_bundle.find_jwt_authority(jwt.key_id()).is_some(),
        "the JWT bundle holds no key with the token's kid {}",
        jwt.key_id()
    );
    jwt_source.shutdown().await;
}
