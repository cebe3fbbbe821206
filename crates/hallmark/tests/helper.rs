//! `hallmark helper` against a real server and agent: the files it keeps,
//! their modes and consistency, rotation with reload command and signal,
//! the JWT-SVID file, readers racing the rewrites, and `--once`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::Value;

const FILES: [&str; 4] = ["svid.pem", "svid_key.pem", "bundle.pem", "jwt_svid.token"];

/// Waits on rotation: the agent renews a 20 s SVID at about half its life.
const ROTATION_WAIT: Duration = Duration::from_secs(40);

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The leaf serial in `dir/svid.pem`.
fn serial(dir: &Path) -> String {
    cert_info(&pem_certs(&read(&dir.join("svid.pem")))[0]).serial
}

/// The public key, as openssl prints it, of a certificate or private key.
fn openssl_pubkey(args: &[&str], file: &Path) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(args).arg("-in").arg(file);
    run(&mut cmd, CLI_TIMEOUT).ok().stdout
}

/// Asserts the files in `dir` form one usable credential: every file 0600,
/// the chain verifies against bundle.pem, and the key belongs to the leaf.
#[track_caller]
fn assert_consistent(dir: &Path, want_id: &str) {
    for name in ["svid.pem", "svid_key.pem", "bundle.pem"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "mode of {name}");
    }
    let chain = pem_certs(&read(&dir.join("svid.pem")));
    let bundle = pem_certs(&read(&dir.join("bundle.pem")));
    assert!(
        !chain.is_empty() && !bundle.is_empty(),
        "empty chain or bundle"
    );
    verify_chain(&chain, &bundle).expect("svid.pem chains to bundle.pem");
    assert_eq!(cert_info(&chain[0]).uri_sans, [want_id]);
    let cert_key = openssl_pubkey(&["x509", "-pubkey", "-noout"], &dir.join("svid.pem"));
    let key_key = openssl_pubkey(&["pkey", "-pubout"], &dir.join("svid_key.pem"));
    assert!(cert_key.contains("PUBLIC KEY"), "openssl x509: {cert_key}");
    assert_eq!(
        cert_key, key_key,
        "svid_key.pem does not belong to svid.pem"
    );
}

/// The claims of a compact JWS, failing on anything that is not one.
fn jwt_claims(token: &str) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(format!("{} parts", parts.len()));
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .map_err(|e| format!("payload base64: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("payload JSON: {e}"))
}

#[track_caller]
fn assert_jwt(dir: &Path, audience: &str, want_id: &str) -> Value {
    let path = dir.join("jwt_svid.token");
    assert_eq!(mode(&path), 0o600, "mode of jwt_svid.token");
    let token = read(&path);
    assert_eq!(token.trim_end(), token, "token file ends in whitespace");
    let claims = jwt_claims(&token).unwrap_or_else(|e| panic!("jwt_svid.token: {e}: {token}"));
    assert_eq!(claims["sub"], want_id, "{claims}");
    let aud_ok = match &claims["aud"] {
        Value::String(s) => s == audience,
        Value::Array(a) => a.iter().any(|v| v == audience),
        _ => false,
    };
    assert!(aud_ok, "aud lacks {audience}: {claims}");
    claims
}

/// A child process that appends a line to `marker` on every SIGHUP; killed
/// on drop.
struct HupRecorder {
    child: Child,
}

impl HupRecorder {
    fn start(marker: &Path) -> Self {
        let script = format!(
            "trap 'echo hup >> {}' HUP; while :; do sleep 0.1; done",
            marker.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the SIGHUP recorder");
        // Let sh install the trap before anything may signal it.
        thread::sleep(Duration::from_millis(300));
        HupRecorder { child }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for HupRecorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(path: &Path) -> usize {
    fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Re-reads and parses every file until stopped; returns how many full
/// rounds it made and the first file it could not parse.
fn spawn_reader(dir: PathBuf, stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, Vec<String>)> {
    thread::spawn(move || {
        let mut rounds = 0u64;
        let mut errors = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for name in FILES {
                let text = match fs::read_to_string(dir.join(name)) {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push(format!("{name}: read: {e}"));
                        continue;
                    }
                };
                let problem = match name {
                    "jwt_svid.token" => jwt_claims(&text).err(),
                    _ => match pem::parse_many(&text) {
                        Err(e) => Some(format!("PEM: {e}")),
                        Ok(blocks) if blocks.is_empty() => Some("no PEM block".to_string()),
                        Ok(blocks) => blocks.iter().find_map(|b| {
                            let der = b.contents();
                            let parsed = if b.tag() == "CERTIFICATE" {
                                x509_parser::parse_x509_certificate(der).is_ok()
                            } else {
                                b.tag() == "PRIVATE KEY" && !der.is_empty()
                            };
                            (!parsed).then(|| format!("unparsable {} block", b.tag()))
                        }),
                    },
                };
                if let Some(p) = problem {
                    errors.push(format!("{name}: {p}"));
                }
            }
            rounds += 1;
        }
        (rounds, errors)
    })
}

#[test]
fn once_refuses_without_identity_then_writes_every_file() {
    let server = TestServer::start("helper-once.test");
    let agent = TestAgent::start(&server, "n1");
    let out = agent.dir.path().join("creds");
    let out_s = out.to_str().expect("utf-8 path");

    // No entry for uid 0 yet: the Workload API refuses, and so must --once.
    agent
        .cli(&["helper", "--once", "--out-dir", out_s, "--audience", "aws"])
        .fails()
        .stderr_has(&["FetchX509SVID", "PermissionDenied", "no identity"]);
    assert!(
        !out.join("svid.pem").exists(),
        "a refused --once wrote svid.pem"
    );

    let id = server.id("web");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&id], WAIT);

    let missing = server.id("missing");
    agent
        .cli(&[
            "helper",
            "--once",
            "--out-dir",
            out_s,
            "--spiffe-id",
            &missing,
        ])
        .fails()
        .stderr_has(&[&missing, &id]);

    agent
        .cli(&["helper", "--once", "--out-dir", out_s, "--audience", "aws"])
        .ok();
    assert_consistent(&out, &id);
    let claims = assert_jwt(&out, "aws", &id);
    assert!(claims["exp"].as_i64().is_some(), "no exp: {claims}");
    let leftovers: Vec<String> = fs::read_dir(&out)
        .expect("list out dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| !FILES.contains(&n.as_str()))
        .collect();
    assert!(
        leftovers.is_empty(),
        "files besides the four: {leftovers:?}"
    );
}

#[test]
fn rotation_rewrites_files_runs_the_command_and_signals() {
    let server = TestServer::start("helper-rotate.test");
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("web");
    server.create_entry(
        &id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--x509-ttl", "20s", "--jwt-ttl", "10s"],
    );
    agent.wait_for_ids(&[&id], WAIT);

    let work = agent.dir.path();
    let out = work.join("creds");
    let reload_marker = work.join("reloads");
    let hup_marker = work.join("hups");
    let recorder = HupRecorder::start(&hup_marker);

    let mut cmd = hallmark_cmd(&["helper", "--out-dir"]);
    cmd.arg(&out)
        .args(["--audience", "aws", "--cmd"])
        .arg(format!("echo reload >> {}", reload_marker.display()))
        .args(["--signal", "SIGHUP", "--pid", &recorder.pid()])
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint());
    let mut helper = Daemon::spawn("helper", cmd, &work.join("helper.log"), None);

    wait_until("the helper to write all four files", WAIT, || {
        helper.assert_alive("the first write");
        FILES.iter().all(|f| out.join(f).exists()).then_some(())
    });
    // The first write is not a change: nothing was reloaded or signalled.
    assert_eq!(lines(&reload_marker), 0, "reload ran for the first write");
    assert_eq!(lines(&hup_marker), 0, "signal sent for the first write");
    assert_consistent(&out, &id);
    let first_jwt = assert_jwt(&out, "aws", &id);
    let first_serial = serial(&out);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(out.clone(), Arc::clone(&stop));

    // The 10 s JWT-SVID is refreshed at half its life, before it expires.
    wait_until("the JWT-SVID to be refreshed", WAIT, || {
        helper.assert_alive("the JWT refresh");
        let claims = jwt_claims(&fs::read_to_string(out.join("jwt_svid.token")).ok()?).ok()?;
        (claims != first_jwt).then_some(())
    });
    let refreshed = assert_jwt(&out, "aws", &id);
    assert!(
        refreshed["exp"].as_i64() > first_jwt["exp"].as_i64(),
        "refreshed token does not live longer: {first_jwt} then {refreshed}"
    );

    let rotated = wait_until("the X509-SVID to rotate", ROTATION_WAIT, || {
        helper.assert_alive("rotation");
        let now = cert_info(&pem_certs(&fs::read_to_string(out.join("svid.pem")).ok()?)[0]);
        (now.serial != first_serial).then_some(now.serial)
    });
    wait_until(
        "the reload command and the signal after rotation",
        WAIT,
        || (lines(&reload_marker) >= 2 && lines(&hup_marker) >= 2).then_some(()),
    );
    assert!(read(&reload_marker).lines().all(|l| l == "reload"));

    // Keep the reader going through one more rotation.
    wait_until("a second X509 rotation", ROTATION_WAIT, || {
        helper.assert_alive("the second rotation");
        let now = cert_info(&pem_certs(&fs::read_to_string(out.join("svid.pem")).ok()?)[0]);
        (now.serial != rotated).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let (rounds, errors) = reader.join().expect("reader thread");
    assert!(errors.is_empty(), "a reader saw a broken file: {errors:?}");
    assert!(rounds > 100, "the reader made only {rounds} rounds");

    // Settle: the key is written before the certificate, so once writes
    // stop the pair must match.
    thread::sleep(Duration::from_millis(300));
    assert_consistent(&out, &id);
    assert_jwt(&out, "aws", &id);
    let log = log_tail(&work.join("helper.log"));
    assert!(log.contains("wrote X509-SVID"), "{log}");
    assert!(
        !log.contains("BEGIN PRIVATE KEY"),
        "key material in the log"
    );

    let status = helper.terminate();
    assert!(status.success(), "helper exit on SIGTERM: {status}");
}

#[test]
fn keeps_files_while_the_agent_is_away_and_resumes() {
    let server = TestServer::start("helper-restart.test");
    let mut agent = TestAgent::start(&server, "n1");
    let id = server.id("db");
    server.create_entry(
        &id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--x509-ttl", "20s"],
    );
    agent.wait_for_ids(&[&id], WAIT);

    let work = agent.dir.path().to_path_buf();
    let out = work.join("creds");
    let pid_file = work.join("recorder.pid");
    let hup_marker = work.join("hups");
    let recorder = HupRecorder::start(&hup_marker);
    fs::write(&pid_file, format!("{}\n", recorder.pid())).expect("write pid file");

    let mut cmd = hallmark_cmd(&["helper", "--out-dir"]);
    cmd.arg(&out)
        .args(["--signal", "HUP", "--pid-file"])
        .arg(&pid_file)
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint());
    let mut helper = Daemon::spawn("helper", cmd, &work.join("helper.log"), None);
    wait_until("the helper to write svid.pem", WAIT, || {
        helper.assert_alive("the first write");
        out.join("svid.pem").exists().then_some(())
    });
    let before = read(&out.join("svid.pem"));
    let first_serial = serial(&out);

    agent.kill();
    thread::sleep(Duration::from_secs(2));
    helper.assert_alive("the agent to be away");
    assert_eq!(
        read(&out.join("svid.pem")),
        before,
        "files changed with no agent"
    );
    assert_consistent(&out, &id);

    agent.restart();
    wait_until(
        "a rotation after the agent came back",
        ROTATION_WAIT,
        || {
            helper.assert_alive("rotation after restart");
            let now = cert_info(&pem_certs(&fs::read_to_string(out.join("svid.pem")).ok()?)[0]);
            (now.serial != first_serial).then_some(())
        },
    );
    wait_until("SIGHUP through --pid-file", WAIT, || {
        (lines(&hup_marker) >= 1).then_some(())
    });
    assert_consistent(&out, &id);
    assert!(
        !out.join("jwt_svid.token").exists(),
        "no --audience, yet a token file"
    );
    assert!(helper.terminate().success());
}
