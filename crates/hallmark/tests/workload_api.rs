//! The SPIFFE Workload API as a raw gRPC client sees it: the status codes the
//! spec demands for each refusal, and how fast registry changes reach an
//! open stream or a new call.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
    X509svidResponse,
};
use tonic::{Code, Status};

/// First message of FetchX509SVID; a status either at call time
/// (trailers-only answer) or as the first stream item is returned as `Err`.
async fn first_x509(client: &mut WorkloadClient, header: bool) -> Result<X509svidResponse, Status> {
    let request = if header {
        req(X509svidRequest {})
    } else {
        tonic::Request::new(X509svidRequest {})
    };
    let mut stream = client.fetch_x509svid(request).await?.into_inner();
    match tokio::time::timeout(WAIT, stream.message()).await {
        Err(_) => panic!("FetchX509SVID sent nothing within {WAIT:?}"),
        Ok(Ok(Some(msg))) => Ok(msg),
        Ok(Ok(None)) => Err(Status::unknown(
            "FetchX509SVID stream ended without a message",
        )),
        Ok(Err(status)) => Err(status),
    }
}

fn ids(resp: &X509svidResponse) -> Vec<String> {
    resp.svids.iter().map(|s| s.spiffe_id.clone()).collect()
}

async fn fetch_jwt(
    client: &mut WorkloadClient,
    audience: &str,
    spiffe_id: &str,
) -> Result<String, Status> {
    let resp = client
        .fetch_jwtsvid(req(JwtsvidRequest {
            audience: vec![audience.to_string()],
            spiffe_id: spiffe_id.to_string(),
        }))
        .await?
        .into_inner();
    let svid = resp
        .svids
        .first()
        .unwrap_or_else(|| panic!("FetchJWTSVID for {audience} returned no SVIDs"));
    Ok(svid.svid.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_without_the_workload_header_is_invalid_argument() {
    let server = TestServer::start("header.test");
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("svc");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    // With the header the same caller is served: the refusals below are
    // about the header alone.
    agent.wait_for_ids(&[&id], WAIT);
    let mut client = agent.client().await;

    // With the header: a DER chain (leaf first) that verifies against the
    // DER bundle sent with it, and a PKCS#8 key.
    let served = first_x509(&mut client, true)
        .await
        .expect("FetchX509SVID with header");
    let svid = &served.svids[0];
    let chain = split_der_certs(&svid.x509_svid);
    let bundle = split_der_certs(&svid.bundle);
    verify_chain(&chain, &bundle).expect("served chain verifies against served bundle");
    assert_eq!(cert_info(&chain[0]).uri_sans, [id.as_str()]);
    assert!(!svid.x509_svid_key.is_empty(), "X509SVID carries no key");

    let status = first_x509(&mut client, false)
        .await
        .expect_err("FetchX509SVID without header");
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "FetchX509SVID: {status:?}"
    );

    let bundles = match client
        .fetch_x509_bundles(tonic::Request::new(X509BundlesRequest {}))
        .await
    {
        Err(s) => s,
        Ok(resp) => match resp.into_inner().message().await {
            Err(s) => s,
            Ok(m) => panic!("FetchX509Bundles without header answered {m:?}"),
        },
    };
    assert_eq!(
        bundles.code(),
        Code::InvalidArgument,
        "FetchX509Bundles: {bundles:?}"
    );

    let jwt_bundles = match client
        .fetch_jwt_bundles(tonic::Request::new(JwtBundlesRequest {}))
        .await
    {
        Err(s) => s,
        Ok(resp) => match resp.into_inner().message().await {
            Err(s) => s,
            Ok(m) => panic!("FetchJWTBundles without header answered {m:?}"),
        },
    };
    assert_eq!(
        jwt_bundles.code(),
        Code::InvalidArgument,
        "FetchJWTBundles: {jwt_bundles:?}"
    );

    let jwt = client
        .fetch_jwtsvid(tonic::Request::new(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .expect_err("FetchJWTSVID without header");
    assert_eq!(jwt.code(), Code::InvalidArgument, "FetchJWTSVID: {jwt:?}");

    let token = fetch_jwt(&mut client, "a", "")
        .await
        .expect("FetchJWTSVID with header");
    let validate = client
        .validate_jwtsvid(tonic::Request::new(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: token,
        }))
        .await
        .expect_err("ValidateJWTSVID without header");
    assert_eq!(
        validate.code(),
        Code::InvalidArgument,
        "ValidateJWTSVID: {validate:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_without_entry_is_permission_denied_no_identity_issued() {
    let server = TestServer::start("noid.test");
    let agent = TestAgent::start(&server, "n1");
    // Root holds an entry; nobody does not.
    let id = server.id("root-only");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&id], WAIT);

    let out = agent.cli_as(NOBODY, &["svid", "fetch"]).fails();
    assert!(
        out.stderr.contains("no identity issued"),
        "`svid fetch` as uid {NOBODY} should fail with the agent's `no identity issued`:\n{out}"
    );
    let out = agent
        .cli_as(NOBODY, &["jwt", "fetch", "--audience", "a"])
        .fails();
    assert!(
        out.stderr.contains("no identity issued"),
        "`jwt fetch` as uid {NOBODY}:\n{out}"
    );

    // And the exact code, on a raw client, for a root caller once its only
    // entry is gone.
    let entries = server.json(&["entry", "list", "--spiffe-id", &id]);
    let entry = entries
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or_else(|| panic!("entry list --spiffe-id {id} is empty: {entries}"))
        .clone();
    server.delete_entry(&entry_id(&entry));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let mut client = agent.client().await;
        match first_x509(&mut client, true).await {
            Err(s) if s.code() != Code::Unavailable => break s,
            other => assert!(
                Instant::now() < deadline,
                "root still answered {other:?} {WAIT:?} after its only entry was deleted"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("no identity issued"),
        "PermissionDenied message must contain `no identity issued`: {status:?}"
    );
    let mut client = agent.client().await;
    let jwt = fetch_jwt(&mut client, "a", "")
        .await
        .expect_err("FetchJWTSVID with no identity");
    assert_eq!(jwt.code(), Code::PermissionDenied, "FetchJWTSVID: {jwt:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_for_a_spiffe_id_the_caller_does_not_hold_is_permission_denied() {
    let server = TestServer::start("jwtid.test");
    let agent = TestAgent::start(&server, "n1");
    let mine = server.id("mine");
    let theirs = server.id("theirs");
    server.create_entry(&mine, &agent.spiffe_id, &["unix:uid:0"], &[]);
    server.create_entry(&theirs, &agent.spiffe_id, &["unix:uid:4242"], &[]);
    agent.wait_for_ids(&[&mine], WAIT);
    let mut client = agent.client().await;

    let token = fetch_jwt(&mut client, "aud", &mine)
        .await
        .expect("FetchJWTSVID for an ID the caller holds");
    assert!(!token.is_empty());

    let status = fetch_jwt(&mut client, "aud", &theirs)
        .await
        .expect_err("FetchJWTSVID for another workload's ID");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = fetch_jwt(&mut client, "aud", &server.id("nobody-has-this"))
        .await
        .expect_err("FetchJWTSVID for an ID no entry names");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_jwt_svid_checks_audience_and_expiry() {
    let server = TestServer::start("validate.test");
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("short-jwt");
    server.create_entry(
        &id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--jwt-ttl", "10s"],
    );
    agent.wait_for_ids(&[&id], WAIT);
    let mut client = agent.client().await;
    let token = fetch_jwt(&mut client, "svc-a", "")
        .await
        .expect("FetchJWTSVID");

    let ok = client
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "svc-a".into(),
            svid: token.clone(),
        }))
        .await
        .expect("ValidateJWTSVID with the minted audience")
        .into_inner();
    assert_eq!(ok.spiffe_id, id);
    let claims = ok.claims.expect("ValidateJWTSVID returns the claims");
    let sub = claims.fields.get("sub").and_then(|v| match &v.kind {
        Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    });
    assert_eq!(sub.as_deref(), Some(id.as_str()), "claims: {claims:?}");
    assert!(
        claims.fields.contains_key("exp"),
        "claims lack exp: {claims:?}"
    );
    assert!(
        claims.fields.contains_key("aud"),
        "claims lack aud: {claims:?}"
    );

    let wrong = client
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "svc-b".into(),
            svid: token.clone(),
        }))
        .await
        .expect_err("ValidateJWTSVID with another audience");
    assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");

    let garbage = client
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "svc-a".into(),
            svid: "not.a.jwt".into(),
        }))
        .await
        .expect_err("ValidateJWTSVID with a malformed token");
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");

    // The CLI says the same before expiry...
    let out = agent
        .cli(&["jwt", "validate", "--audience", "svc-a", &token])
        .ok();
    assert_eq!(
        out.stdout.trim(),
        id,
        "jwt validate prints the SPIFFE ID:\n{out}"
    );

    // ...and refuses after it: the entry's JWT TTL is 10 s.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let expired = client
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "svc-a".into(),
            svid: token.clone(),
        }))
        .await
        .expect_err("ValidateJWTSVID with an expired token");
    assert_eq!(expired.code(), Code::InvalidArgument, "{expired:?}");
    agent
        .cli(&["jwt", "validate", "--audience", "svc-a", &token])
        .fails();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_entry_leaves_an_open_x509_stream_within_2s() {
    let server = TestServer::start("delete.test");
    let agent = TestAgent::start(&server, "n1");
    let keep = server.id("keep");
    let drop_ = server.id("drop");
    let keep_entry = server.create_entry(
        &keep,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--hint", "keep"],
    );
    let drop_entry = server.create_entry(
        &drop_,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--hint", "drop"],
    );
    agent.wait_for_ids(&[&keep, &drop_], WAIT);

    let mut client = agent.client().await;
    let mut stream = client
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .expect("open FetchX509SVID")
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("first stream message within WAIT")
        .expect("first stream message")
        .expect("stream open");
    let mut hints: Vec<&str> = first.svids.iter().map(|s| s.hint.as_str()).collect();
    hints.sort();
    assert_eq!(
        hints,
        ["drop", "keep"],
        "hints are carried per SVID: {first:?}"
    );

    server.delete_entry(&entry_id(&drop_entry));
    let deleted_at = Instant::now();
    loop {
        let remaining = Duration::from_secs(2).saturating_sub(deleted_at.elapsed());
        let msg = tokio::time::timeout(remaining, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!("{drop_} still on the stream 2s after its entry was deleted")
            })
            .expect("stream stays healthy while the caller keeps an identity")
            .expect("stream stays open while the caller keeps an identity");
        if !ids(&msg).contains(&drop_) {
            assert_eq!(ids(&msg), [keep.as_str()], "only the deleted entry goes");
            break;
        }
    }

    // Deleting the last identity ends the stream with PermissionDenied.
    server.delete_entry(&entry_id(&keep_entry));
    let deleted_at = Instant::now();
    loop {
        let remaining = Duration::from_secs(2).saturating_sub(deleted_at.elapsed());
        let item = tokio::time::timeout(remaining, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!("stream still open 2s after the caller's last entry was deleted")
            });
        match item {
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                break;
            }
            Ok(None) => panic!("stream ended without PermissionDenied after the last entry went"),
            Ok(Some(msg)) => assert!(
                msg.svids.iter().any(|s| s.spiffe_id == keep),
                "after the last entry went the stream must end PermissionDenied, not send {:?}",
                ids(&msg)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_entry_reaches_a_workload_within_1s() {
    let server = TestServer::start("prop.test");
    let agent = TestAgent::start(&server, "n1");

    for (uid, path) in [(0u32, "root-svc"), (NOBODY, "nobody-svc")] {
        let id = server.id(path);
        let selector = format!("unix:uid:{uid}");
        server.create_entry(&id, &agent.spiffe_id, &[&selector], &[]);
        let created = Instant::now();
        let mut last = None;
        let fetched = loop {
            let out = agent.cli_as(uid, &["svid", "fetch"]);
            if out.success() {
                let certs = pem_certs(&out.stdout);
                assert!(
                    !certs.is_empty(),
                    "svid fetch printed no certificate:\n{out}"
                );
                break cert_info(&certs[0]);
            }
            assert!(
                created.elapsed() < Duration::from_secs(1),
                "uid {uid}: no SVID 1s after `entry create`; last attempt:\n{}",
                last.map(|o: Output| o.to_string()).unwrap_or_default()
            );
            last = Some(out);
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(fetched.uri_sans, [id.as_str()], "uid {uid} got {fetched:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_cli_writes_verifiable_svid_files_and_round_trips_jwts() {
    let server = TestServer::start("cli.test");
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("files");
    server.create_entry(
        &id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--dns-name", "files.example"],
    );
    agent.wait_for_ids(&[&id], WAIT);

    let svid = agent.fetch_svid();
    assert_eq!(
        svid.leaf.uri_sans,
        [id.as_str()],
        "leaf has exactly the one URI SAN"
    );
    assert!(!svid.leaf.is_ca, "leaf must not be a CA");
    assert_eq!(svid.key_mode, 0o600, "svid.key mode is {:o}", svid.key_mode);
    assert!(svid.leaf.not_before <= now_unix() && now_unix() < svid.leaf.not_after);
    verify_chain(&svid.chain, &svid.bundle).expect("svid.pem chains to bundle.pem");
    assert_eq!(
        svid.bundle,
        pem_certs(&server.bundle_pem()),
        "bundle.pem equals the server's `bundle show`"
    );

    // Explicit --socket instead of the environment.
    let mut cmd = hallmark_cmd(&["svid", "fetch", "--socket"]);
    cmd.arg(&agent.socket);
    let out = run(&mut cmd, CLI_TIMEOUT).ok();
    let certs = pem_certs(&out.stdout);
    assert_eq!(
        cert_info(&certs[0]).uri_sans,
        [id.as_str()],
        "svid fetch --socket:\n{out}"
    );

    let token = agent.cli(&["jwt", "fetch", "--audience", "db"]).ok().stdout;
    let token = token.trim();
    assert_eq!(
        token.split('.').count(),
        3,
        "jwt fetch prints a compact JWS: {token:?}"
    );
    let listed = agent
        .cli(&["jwt", "fetch", "--audience", "db", "--json"])
        .ok()
        .json();
    assert_eq!(
        listed[0]["spiffe_id"],
        id.as_str(),
        "jwt fetch --json: {listed}"
    );
    assert!(listed[0]["token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));

    let v = agent
        .cli(&["jwt", "validate", "--audience", "db", token, "--json"])
        .ok()
        .json();
    assert_eq!(v["spiffe_id"], id.as_str(), "jwt validate --json: {v}");
    assert_eq!(
        v["claims"]["sub"],
        id.as_str(),
        "jwt validate --json claims: {v}"
    );
    agent
        .cli(&["jwt", "validate", "--audience", "other", token])
        .fails();
    let by_id = agent
        .cli(&["jwt", "fetch", "--audience", "db", "--spiffe-id", &id])
        .ok();
    assert_eq!(by_id.stdout.trim().split('.').count(), 3, "{by_id}");
    agent
        .cli(&[
            "jwt",
            "fetch",
            "--audience",
            "db",
            "--spiffe-id",
            &server.id("not-mine"),
        ])
        .fails();
}
