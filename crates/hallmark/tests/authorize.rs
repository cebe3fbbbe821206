//! `POST /v1/authorize` on the agent's socket, end to end: a real server
//! and agent, callers of different uids asking with a real `curl` over the
//! Unix socket. The answer is always about the attested caller; naming
//! another workload's SPIFFE ID is refused. With a policy applied by
//! `hallmark policy apply -f FILE`, the agent decides locally (and keeps
//! deciding while the server is away).

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const URL: &str = "http://localhost/v1/authorize";
/// The second caller, with an entry of its own.
const BETA_UID: u32 = 4242;

/// `curl` over the agent socket as `uid` (root when `None`); returns (HTTP
/// status, headers, body).
#[track_caller]
fn curl(socket: &Path, args: &[&str], as_uid: Option<u32>) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "20", "--unix-socket"])
        .arg(socket)
        .args(args);
    if let Some(uid) = as_uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid).current_dir("/");
    }
    let out = run(&mut cmd, CLI_TIMEOUT).ok().stdout;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("curl printed no HTTP response: {out}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    (status, head.to_string(), body.to_string())
}

/// POSTs `body` as `uid`; returns (status, parsed JSON body).
#[track_caller]
fn ask(socket: &Path, body: &Value, as_uid: Option<u32>) -> (u16, Value) {
    let (status, _, text) = curl(socket, &[URL, "-d", &body.to_string()], as_uid);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

struct Setup {
    server: TestServer,
    agent: TestAgent,
    alpha: String,
    beta: String,
}

/// A server, an agent, and entries for root (`alpha`) and uid 4242 (`beta`).
fn setup(td: &str, agent_args: &[&str]) -> Setup {
    let server = TestServer::start(td);
    let mut args = vec!["--runtime", "none"];
    args.extend_from_slice(agent_args);
    let agent = TestAgent::start_with(&server, "n1", &args);
    let alpha = server.id("alpha");
    let beta = server.id("beta");
    server.create_entry(&alpha, &agent.spiffe_id, &["unix:uid:0"], &[]);
    server.create_entry(
        &beta,
        &agent.spiffe_id,
        &[&format!("unix:uid:{BETA_UID}")],
        &[],
    );
    agent.wait_for_ids(&[&alpha], WAIT);
    wait_until("uid 4242 to get its SVID", WAIT, || {
        agent
            .cli_as(BETA_UID, &["svid", "fetch"])
            .success()
            .then_some(())
    });
    Setup {
        server,
        agent,
        alpha,
        beta,
    }
}

#[test]
fn the_answer_is_about_the_attested_caller_only() {
    let Setup {
        server,
        agent,
        alpha,
        beta,
    } = setup("authz.test", &[]);
    let peer = server.id("web/1");
    let q = json!({"peer": peer, "port": 443});

    // No policy applied: the default allows, and each caller is told
    // about itself.
    let (status, root) = ask(&agent.socket, &q, None);
    assert_eq!(status, 200, "{root}");
    assert_eq!(root["allowed"], true, "{root}");
    assert_eq!(root["verdict"], "allowed");
    assert_eq!(root["decided_by"], "default");
    assert_eq!(root["rule"], Value::Null);
    assert_eq!(root["mode"], Value::Null);
    assert_eq!(root["policy_revision"], 0);
    assert_eq!(root["peer"], peer.as_str());
    assert_eq!(
        (root["port"].clone(), root["protocol"].clone()),
        (json!(443), json!("tcp"))
    );
    assert_eq!(root["workload"]["spiffe_ids"], json!([alpha]));
    let (status, other) = ask(&agent.socket, &q, Some(BETA_UID));
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["workload"]["spiffe_ids"], json!([beta]));

    // Choosing one of its own identities is allowed; another workload's
    // is refused, whichever caller tries.
    let (status, v) = ask(
        &agent.socket,
        &json!({"peer": peer, "port": 443, "spiffe_id": alpha}),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["workload"]["spiffe_ids"], json!([alpha]));
    for (uid, other_id) in [(None, &beta), (Some(BETA_UID), &alpha)] {
        let (status, v) = ask(
            &agent.socket,
            &json!({"peer": peer, "port": 443, "spiffe_id": other_id}),
            uid,
        );
        assert_eq!(status, 403, "{v}");
        assert!(
            error(&v).starts_with(&format!(
                "a workload may ask only about itself: {other_id} is not an identity of the caller"
            )),
            "{v}"
        );
    }
    // A caller without an entry is still attested (its selectors decide),
    // and holds no SPIFFE ID to answer as.
    let (status, v) = ask(&agent.socket, &q, Some(NOBODY));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["workload"]["spiffe_ids"], json!([]));
    let (status, v) = ask(
        &agent.socket,
        &json!({"peer": peer, "port": 443, "spiffe_id": beta}),
        Some(NOBODY),
    );
    assert_eq!(status, 403, "{v}");

    // Refusals name the field and the rule.
    for (body, want) in [
        (json!({"port": 443}), "`peer` is missing"),
        (
            json!({"peer": "web", "port": 443}),
            "`peer` `web` is not a workload SPIFFE ID",
        ),
        (json!({"peer": peer}), "`port` is missing"),
        (
            json!({"peer": peer, "port": 70000}),
            "`port` must be a whole number from 1 to 65535",
        ),
        (
            json!({"peer": peer, "port": 53, "protocol": "sctp"}),
            "`protocol` must be \"tcp\" or \"udp\"",
        ),
        (
            json!({"peer": peer, "port": 443, "as": alpha}),
            "unknown field `as`",
        ),
    ] {
        let (status, v) = ask(&agent.socket, &body, None);
        assert_eq!(status, 400, "{body}: {v}");
        assert!(error(&v).contains(want), "{body}: {v}");
    }
    let (status, head, body) = curl(&agent.socket, &[URL], None);
    assert_eq!(status, 405, "{body}");
    assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
    assert!(body.contains("use POST with"), "{body}");

    // The token endpoint still answers on the same socket.
    let (status, _, body) = curl(
        &agent.socket,
        &["-X", "POST", "http://localhost/v1/nope"],
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/v1/authorize"), "{body}");

    // agent status: no policy applied.
    let mut cmd = hallmark_cmd(&["agent", "status", "--data-dir"]);
    cmd.arg(&agent.data_dir);
    let out = run(&mut cmd, CLI_TIMEOUT).ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "policy         none applied"),
        "{out}"
    );
    let mut cmd = hallmark_cmd(&["agent", "status", "--json", "--data-dir"]);
    cmd.arg(&agent.data_dir);
    let status = run(&mut cmd, CLI_TIMEOUT).ok().json();
    assert_eq!(
        status["policy"],
        json!({"revision": 0, "groups": 0, "rules": 0, "identities": 0, "error": null}),
        "{status}"
    );
}

const POLICY: &str = "\
groups:
  alpha:
    - spiffe_id: spiffe://authz-policy.test/alpha
  beta:
    - selector: unix:uid:4242
  web:
    - spiffe_id: spiffe://authz-policy.test/web/*
rules:
  - name: web-to-alpha
    from: [web]
    to: [alpha]
    protocol: tcp
    ports: [\"443\"]
    action: allow
  - name: web-to-beta
    from: [web]
    to: [beta]
    ports: [\"443\"]
    action: allow
    priority: 200
  - name: web-to-beta-watch
    from: [web]
    to: [beta]
    ports: [\"443\"]
    action: deny
    mode: watch
    priority: 100
default: deny
";

/// Polls the root caller's answer until the agent decides with `revision`.
#[track_caller]
fn wait_for_revision(agent: &TestAgent, q: &Value, revision: i64) -> Value {
    wait_until(
        &format!("the agent to decide with policy revision {revision}"),
        WAIT,
        || {
            let (status, v) = ask(&agent.socket, q, None);
            (status == 200 && v["policy_revision"] == revision).then_some(v)
        },
    )
}

#[test]
fn decisions_follow_the_applied_policy_without_the_server() {
    let health = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let Setup {
        mut server,
        agent,
        alpha,
        beta,
    } = setup("authz-policy.test", &["--health-listen", &health]);
    let file = server.dir.path().join("policy.yaml");
    std::fs::write(&file, POLICY).unwrap();
    server
        .cli(&["policy", "apply", "-f", file.to_str().unwrap()])
        .ok();

    let peer = server.id("web/1");
    let q = json!({"peer": peer, "port": 443});
    let root = wait_for_revision(&agent, &q, 1);
    assert_eq!(
        root,
        json!({
            "allowed": true,
            "verdict": "allowed",
            "rule": "web-to-alpha",
            "mode": "enforce",
            "decided_by": "rule",
            "policy_revision": 1,
            "peer": peer,
            "peer_groups": ["web"],
            "port": 443,
            "protocol": "tcp",
            "workload": {"spiffe_ids": [alpha], "groups": ["alpha"]},
        })
    );
    // The same question from the other caller is about the other caller.
    let (status, v) = ask(&agent.socket, &q, Some(BETA_UID));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["verdict"], "would-deny", "{v}");
    assert_eq!(v["allowed"], true, "a watch rule never blocks: {v}");
    assert_eq!(v["rule"], "web-to-beta-watch");
    assert_eq!(v["mode"], "watch");
    assert_eq!(
        v["workload"],
        json!({"spiffe_ids": [beta], "groups": ["beta"]})
    );
    // Not in `web`: the default denies.
    let (status, v) = ask(
        &agent.socket,
        &json!({"peer": server.id("batch/7"), "port": 443}),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["allowed"].clone(),
            v["verdict"].clone(),
            v["decided_by"].clone()
        ),
        (json!(false), json!("denied"), json!("default")),
        "{v}"
    );
    let (_, v) = ask(&agent.socket, &json!({"peer": peer, "port": 22}), None);
    assert_eq!(v["verdict"], "denied", "{v}");
    let (_, v) = ask(&agent.socket, &q, Some(NOBODY));
    assert_eq!(v["verdict"], "denied", "{v}");

    // agent status and /status tell the revision in force.
    let mut cmd = hallmark_cmd(&["agent", "status", "--data-dir"]);
    cmd.arg(&agent.data_dir);
    let out = run(&mut cmd, CLI_TIMEOUT).ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("policy         revision 1, 3 groups, 3 rules, ")),
        "{out}"
    );
    let status = http_get(&health, "/status");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["policy"]["revision"], 1, "{status}");
    assert_eq!(status["policy"]["rules"], 3, "{status}");
    assert_eq!(status["policy"]["error"], Value::Null, "{status}");
    let metrics = http_get(&health, "/metrics");
    for line in [
        "hallmark_agent_policy_revision 1",
        "hallmark_agent_authorize_decisions_total{verdict=\"would-deny\"} 1",
        "hallmark_agent_policy_errors_total 0",
    ] {
        assert!(metrics.contains(line), "missing `{line}`:\n{metrics}");
    }

    // The server goes away: the agent keeps deciding with what it holds.
    server.kill();
    let (status, v) = ask(&agent.socket, &q, None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["policy_revision"].clone(), v["rule"].clone()),
        (json!(1), json!("web-to-alpha"))
    );

    // Back, with a new revision: it reaches the agent.
    server.restart();
    let next = POLICY.replace(
        "ports: [\"443\"]\n    action: allow\n  - name: web-to-beta\n",
        "ports: [\"8443\"]\n    action: allow\n  - name: web-to-beta\n",
    );
    assert_ne!(next, POLICY);
    std::fs::write(&file, next).unwrap();
    server
        .cli(&["policy", "apply", "-f", file.to_str().unwrap()])
        .ok();
    let v = wait_for_revision(&agent, &q, 2);
    assert_eq!(
        (v["verdict"].clone(), v["decided_by"].clone()),
        (json!("denied"), json!("default")),
        "{v}"
    );
}

/// A plain HTTP GET on the health endpoint; returns the body.
#[track_caller]
fn http_get(addr: &str, path: &str) -> String {
    let out = run(
        Command::new("curl").args(["-sS", "--max-time", "10", &format!("http://{addr}{path}")]),
        CLI_TIMEOUT,
    )
    .ok();
    out.stdout
}
