//! The OIDC issuer and the workload token endpoint, end to end: a server
//! serving discovery + JWKS over HTTPS (self-signed), an agent answering
//! `POST /v1/tokens/oidc` on its Workload API socket to a real `curl`, and
//! the tokens checked by PyJWT (PyJWKClient on the discovered `jwks_uri`) and
//! jwcrypto, with the discovery document checked against each cloud's rules.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The issuer must be on port 443 (clouds allow no port in the URL), so
/// each test binds 443 on its own loopback address.
fn loopback_ip() -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    format!(
        "127.{}.{}.{}",
        64 + seed % 128,
        (seed >> 8) % 250 + 1,
        (seed >> 16) % 250 + 2
    )
}

/// `curl` over the agent socket; returns (HTTP status, body).
#[track_caller]
fn curl_uds(socket: &Path, args: &[&str], as_uid: Option<u32>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}",
        "--unix-socket",
    ])
    .arg(socket)
    .args(args);
    if let Some(uid) = as_uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid).current_dir("/");
    }
    split_status(run(&mut cmd, CLI_TIMEOUT).ok().stdout)
}

/// `curl` over HTTPS trusting `cafile`; returns (HTTP status, body).
#[track_caller]
fn curl_https(cafile: &Path, args: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(cafile)
    .args(args);
    split_status(run(&mut cmd, CLI_TIMEOUT).ok().stdout)
}

fn split_status(out: String) -> (u16, String) {
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed no status: {out}"));
    (code, body.to_string())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

const TOKEN_URL: &str = "http://localhost/v1/tokens/oidc";

#[test]
fn token_endpoint_tokens_validate_against_the_discovered_issuer() {
    let ip = loopback_ip();
    let issuer = format!("https://{ip}/tenant-a");
    let listen = format!("{ip}:443");
    let server = TestServer::start_with(
        "oidc.test",
        &[
            "--oidc-issuer",
            &issuer,
            "--oidc-listen",
            &listen,
            "--oidc-token-ttl",
            "10m",
        ],
    );
    let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("{issuer}/.well-known/openid-configuration")),
        "`server run` logs the discovery URL:\n{log}"
    );
    let status = server.json(&["status"]);
    assert_eq!(status["oidc_issuer"], issuer.as_str(), "{status}");
    assert_eq!(status["datastore"], "sqlite", "{status}");
    let cafile = server.data_dir.join("oidc-tls.pem");
    assert!(
        cafile.exists(),
        "the self-signed certificate is written for clients"
    );
    let agent = TestAgent::start_with(
        &server,
        "n1",
        &["--runtime", "none", "--context", "prod-eu"],
    );
    let id = server.id("billing");
    server.create_entry(
        &id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &[
            "--oidc-claim",
            "node",
            "--oidc-claim",
            "context",
            "--oidc-claim",
            "pod",
        ],
    );
    agent.wait_for_ids(&[&id], WAIT);

    // A real curl, no special header.
    let (status, body) = curl_uds(
        &agent.socket,
        &[
            "-X",
            "POST",
            TOKEN_URL,
            "-d",
            r#"{"aud":"sts.amazonaws.com"}"#,
        ],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let answer = json(&body);
    assert_eq!(answer["spiffe_id"], id.as_str());
    let token = answer["token"]
        .as_str()
        .expect("token is a string")
        .to_string();
    let (iat, exp) = (
        answer["issued_at"].as_i64().expect("issued_at"),
        answer["expires_at"].as_i64().expect("expires_at"),
    );
    assert_eq!(exp - iat, 600, "{answer}");
    assert!((iat - now_unix()).abs() < 60, "{answer}");

    // PyJWT (PyJWKClient on the discovered jwks_uri) and jwcrypto; the
    // discovery document against AWS/GCP/Azure; header and claims.
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/interop/oidc_check.py"))
        .args(["--issuer", &issuer, "--audience", "sts.amazonaws.com"])
        .args(["--expect-sub", &id, "--ttl", "600", "--token", &token])
        .args(["--claim", "node=n1", "--claim", "context=prod-eu"])
        // Asked for, but a host process has no pod: left out, not guessed.
        .args(["--absent", "pod", "--absent", "namespace"])
        .arg("--cafile")
        .arg(&cafile)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run(&mut cmd, Duration::from_secs(60));
    assert!(out.success(), "oidc_check.py:\n{out}");
    for line in [
        "ok: AWS IAM discovery requirements",
        "ok: GCP Workload Identity Federation",
        "ok: Azure federated credential",
        "ok: PyJWT PyJWKClient validated",
        "ok: jwcrypto validated",
    ] {
        assert!(out.stdout.contains(line), "missing `{line}`:\n{out}");
    }

    // The bare token, for AWS_WEB_IDENTITY_TOKEN_FILE; within half its
    // lifetime the same token is served from the agent's cache.
    let (status, raw) = curl_uds(
        &agent.socket,
        &[
            "-H",
            "Accept: text/plain",
            TOKEN_URL,
            "-d",
            r#"{"aud":"sts.amazonaws.com"}"#,
        ],
        None,
    );
    assert_eq!((status, raw.as_str()), (200, token.as_str()));
    let (status, raw) = curl_uds(
        &agent.socket,
        &[
            &format!("{TOKEN_URL}?format=raw"),
            "-d",
            r#"{"aud":"sts.amazonaws.com"}"#,
        ],
        None,
    );
    assert_eq!((status, raw.as_str()), (200, token.as_str()));

    // Several audiences become an array, and a different token.
    let (status, body) = curl_uds(
        &agent.socket,
        &[
            TOKEN_URL,
            "-d",
            r#"{"aud":["b","a"],"spiffe_id":"spiffe://oidc.test/billing"}"#,
        ],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let multi = json(&body)["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let claims = jwt_payload(&multi);
    assert_eq!(claims["aud"], serde_json::json!(["a", "b"]));
    assert_eq!(claims["iss"], issuer.as_str());

    // `hallmark helper --oidc` keeps the same kind of token in a file, for
    // AWS_WEB_IDENTITY_TOKEN_FILE and the other clouds' file sources.
    let out_dir = agent.dir.path().join("aws");
    agent
        .cli(&[
            "helper",
            "--once",
            "--out-dir",
            out_dir.to_str().unwrap_or_default(),
            "--audience",
            "sts.amazonaws.com",
            "--oidc",
            "--jwt-file",
            "web-identity.token",
            "--spiffe-id",
            "spiffe://oidc.test/billing",
        ])
        .ok();
    let file = out_dir.join("web-identity.token");
    let helper_token = std::fs::read_to_string(&file).unwrap_or_default();

    // Rotating the OIDC key and tainting the old one: the cached token (and
    // any other signed with the old key) is not served again.
    let old_kid = jwt_header(&helper_token)["kid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    server.cli(&["authority", "prepare", "--kind", "oidc"]).ok();
    server
        .cli(&["authority", "activate", "--kind", "oidc"])
        .ok();
    server
        .cli(&["authority", "taint", "--kind", "oidc", "--id", &old_kid])
        .ok();
    let fresh = wait_until("a token signed with the new OIDC key", WAIT, || {
        let (status, body) = curl_uds(
            &agent.socket,
            &[
                TOKEN_URL,
                "-d",
                r#"{"aud":"sts.amazonaws.com","spiffe_id":"spiffe://oidc.test/billing"}"#,
            ],
            None,
        );
        let token = json(&body)["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (status == 200 && jwt_header(&token)["kid"] != old_kid.as_str()).then_some(token)
    });
    assert_eq!(jwt_payload(&fresh)["iss"], issuer.as_str());
    let (status, keys) = curl_https(&cafile, &[&format!("{issuer}/keys")]);
    assert_eq!(status, 200);
    let kid = jwt_header(&fresh)["kid"].clone();
    assert!(
        json(&keys)["keys"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k["kid"] == kid)),
        "the new key is in the JWKS: {keys}"
    );
    let token = std::fs::read_to_string(&file).unwrap_or_default();
    let claims = jwt_payload(&token);
    assert_eq!(claims["iss"], issuer.as_str(), "{claims}");
    assert_eq!(claims["aud"], "sts.amazonaws.com");
    assert_eq!(claims["sub"], "spiffe://oidc.test/billing");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode.ok(), Some(0o600));

    // Refusals, each as JSON saying what to do.
    let (status, body) = curl_uds(&agent.socket, &[TOKEN_URL], None);
    assert_eq!(status, 405, "GET: {body}");
    assert!(json(&body)["error"]
        .as_str()
        .unwrap_or_default()
        .contains("POST"));
    let (status, body) = curl_uds(&agent.socket, &[TOKEN_URL, "-d", "{\"aud\":"], None);
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("aud"),
        "{body}"
    );
    let (status, body) = curl_uds(&agent.socket, &[TOKEN_URL, "-d", "{}"], None);
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("`aud` is missing"),
        "{body}"
    );
    let (status, body) = curl_uds(
        &agent.socket,
        &[
            TOKEN_URL,
            "-d",
            r#"{"aud":"x","spiffe_id":"spiffe://oidc.test/other"}"#,
        ],
        None,
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = curl_uds(
        &agent.socket,
        &["-X", "POST", "http://localhost/v1/nope"],
        None,
    );
    assert_eq!(status, 404, "{body}");
    let big = format!(r#"{{"aud":"{}"}}"#, "a".repeat(70 * 1024));
    let (status, body) = curl_uds(&agent.socket, &[TOKEN_URL, "-d", &big], None);
    assert_eq!(status, 413, "{body}");
    let (status, body) = curl_uds(
        &agent.socket,
        &[TOKEN_URL, "-d", r#"{"aud":"sts.amazonaws.com"}"#],
        Some(NOBODY),
    );
    assert_eq!(status, 403, "uid {NOBODY} has no entry: {body}");
    assert!(json(&body)["error"]
        .as_str()
        .unwrap_or_default()
        .contains("no identity issued"));

    // The Workload API (gRPC) still answers on the same socket.
    let out = agent
        .cli(&["jwt", "fetch", "--audience", "grpc-still-works"])
        .ok();
    assert!(
        out.stdout.contains('.'),
        "jwt fetch printed no token:\n{out}"
    );

    // The issuer's own refusals.
    let (status, _) = curl_https(&cafile, &["-X", "POST", &format!("{issuer}/keys")]);
    assert_eq!(status, 405);
    let (status, body) = curl_https(
        &cafile,
        &[&format!("https://{ip}/.well-known/openid-configuration")],
    );
    assert_eq!(
        status, 404,
        "discovery lives under the issuer path only: {body}"
    );
    let (status, body) = curl_https(&cafile, &[&format!("{issuer}/keys")]);
    assert_eq!(status, 200);
    assert!(json(&body)["keys"]
        .as_array()
        .is_some_and(|k| !k.is_empty()));
}

fn jwt_header(token: &str) -> Value {
    jwt_part(token, 0)
}

fn jwt_payload(token: &str) -> Value {
    jwt_part(token, 1)
}

fn jwt_part(token: &str, n: usize) -> Value {
    use base64::Engine as _;
    let part = token
        .split('.')
        .nth(n)
        .unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("payload not base64url ({e}): {token}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("payload not JSON ({e})"))
}

#[test]
fn without_an_issuer_the_endpoint_says_how_to_enable_it() {
    let server = TestServer::start("no-oidc.test");
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("w");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&id], WAIT);
    let (status, body) = curl_uds(&agent.socket, &[TOKEN_URL, "-d", r#"{"aud":"x"}"#], None);
    assert_eq!(status, 503, "{body}");
    let msg = json(&body)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("no OIDC issuer configured") && msg.contains("--oidc-issuer https://"),
        "{msg}"
    );

    // A caller that starts a request and never finishes its headers is
    // disconnected; the socket keeps serving others.
    use std::io::{Read as _, Write as _};
    let mut slow = std::os::unix::net::UnixStream::connect(&agent.socket).expect("connect");
    slow.write_all(b"POST /v1/tokens/oidc HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(25),
        "the half-sent request held the connection for {waited:?}"
    );
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "closed (or 408) after the header timeout: {answer}"
    );
    let (status, _) = curl_uds(&agent.socket, &[TOKEN_URL, "-d", r#"{"aud":"x"}"#], None);
    assert_eq!(status, 503, "the endpoint still answers");
}

#[test]
fn an_issuer_with_a_port_is_served_there_with_a_warning_for_aws() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let issuer = format!("https://127.0.0.1:{port}");
    // No --oidc-listen: the issuer's port is where it listens.
    let server = TestServer::start_with("port.test", &["--oidc-issuer", &issuer]);
    let cafile = server.data_dir.join("oidc-tls.pem");
    let (status, body) = curl_https(
        &cafile,
        &[&format!("{issuer}/.well-known/openid-configuration")],
    );
    assert_eq!(status, 200, "{body}");
    let doc = json(&body);
    assert_eq!(doc["issuer"], issuer.as_str());
    assert_eq!(doc["jwks_uri"], format!("{issuer}/keys").as_str());
    let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
    assert!(
        log.contains("AWS IAM refuses issuer URLs with a port"),
        "the operator is told which cloud will refuse it:\n{log}"
    );
}

#[test]
fn bad_oidc_flags_are_refused_naming_the_rule() {
    let dir = short_tempdir();
    let data = dir.path().join("s");
    let data = data.to_str().expect("utf-8 temp path");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--oidc-issuer", "http://x?y"],
            &["oidc_issuer", "https://"],
        ),
        (
            &["--oidc-issuer", "https://x.example:http"],
            &["oidc_issuer", "port"],
        ),
        (
            &["--oidc-issuer", "https://x.example/a?b=c"],
            &["oidc_issuer", "query"],
        ),
        (
            &["--oidc-issuer", "https://x.example/"],
            &["oidc_issuer", "trailing slash"],
        ),
        (
            &[
                "--oidc-issuer",
                "https://x.example",
                "--oidc-token-ttl",
                "72h",
            ],
            &["oidc_token_ttl", "24h"],
        ),
        (
            &[
                "--oidc-issuer",
                "https://x.example",
                "--oidc-claims",
                "node,password",
            ],
            &["oidc_claims", "password"],
        ),
        (
            &[
                "--oidc-issuer",
                "https://x.example",
                "--oidc-key-type",
                "rsa-1024",
            ],
            &["oidc_key_type", "rsa-2048"],
        ),
        (
            &["--oidc-listen", "127.0.0.1:0"],
            &["oidc_listen", "--oidc-issuer"],
        ),
    ];
    // The same keys in the config file's [server] section.
    let file = dir.path().join("hallmark.toml");
    std::fs::write(
        &file,
        "[server]\noidc_issuer = \"https://x.example\"\noidc_token_ttl = \"48h\"\n",
    )
    .expect("write config file");
    let mut cmd = hallmark_cmd(&["server", "run", "--data-dir", data, "--config"]);
    cmd.arg(&file);
    run(&mut cmd, CLI_TIMEOUT)
        .fails()
        .stderr_has(&["oidc_token_ttl", "between 1s and 24h"]);
    for (flags, needles) in cases {
        let mut cmd = hallmark_cmd(&[
            "server",
            "run",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
        ]);
        cmd.args(*flags);
        run(&mut cmd, CLI_TIMEOUT).fails().stderr_has(needles);
    }
}
