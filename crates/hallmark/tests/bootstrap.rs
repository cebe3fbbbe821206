//! The agent's first contact with the server: trust is explicit (a pinned
//! CA fingerprint or a bundle file) and a server that does not match it is
//! refused at once, without spending the join token.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `hallmark agent run` with the given bootstrap flags, in `dir`.
fn agent_cmd(server: &TestServer, dir: &Path, bootstrap: &[&str]) -> Command {
    let mut cmd = hallmark_cmd(&["agent", "run"]);
    // Kernel enforcement (on by default) would leave pinned programs
    // behind these killed agents: only the tests about it turn it on.
    cmd.args(["--enforcement", "off"]);
    cmd.arg("--data-dir")
        .arg(dir.join("agent"))
        .args(["--server", &server.addr.to_string()])
        .arg("--socket")
        .arg(dir.join("w.sock"))
        .args(["--trust-domain", &server.td])
        .args(bootstrap);
    cmd
}

/// A refusal must be quick: retrying cannot make an untrusted server trusted.
#[track_caller]
fn refused_quickly(mut cmd: Command, needles: &[&str]) {
    let started = Instant::now();
    run(&mut cmd, Duration::from_secs(20))
        .fails()
        .stderr_has(needles);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal took {:?}",
        started.elapsed()
    );
}

#[test]
fn trust_bundle_file_bootstraps_an_agent() {
    let server = TestServer::start("bootstrap.test");
    let dir = short_tempdir();
    let roots = dir.path().join("roots.pem");
    fs::write(&roots, server.bundle_pem()).unwrap();
    let token = server.join_token("tb");
    server.create_entry(
        &server.id("/w"),
        &server.agent_id("tb"),
        &["unix:uid:0"],
        &[],
    );

    let log = dir.path().join("agent.log");
    let mut agent = Daemon::spawn(
        "agent tb",
        agent_cmd(
            &server,
            dir.path(),
            &[
                "--join-token",
                &token.token,
                "--trust-bundle",
                roots.to_str().unwrap(),
            ],
        ),
        &log,
        None,
    );
    let socket = dir.path().join("w.sock");
    let ids = wait_until(
        "the agent to serve the entry",
        Duration::from_secs(20),
        || {
            agent.assert_alive("the agent to serve the entry");
            x509_ids(&socket).ok()
        },
    );
    assert_eq!(ids, vec![server.id("/w")]);
}

#[test]
fn untrusted_server_is_refused_without_spending_the_token() {
    let server = TestServer::start("bootstrap.test");
    let other = TestServer::start("other.test");
    let dir = short_tempdir();
    let token = server.join_token("n1");

    // A bundle file holding another CA's root.
    let wrong_roots = dir.path().join("wrong.pem");
    fs::write(&wrong_roots, other.bundle_pem()).unwrap();
    refused_quickly(
        agent_cmd(
            &server,
            dir.path(),
            &[
                "--join-token",
                &token.token,
                "--trust-bundle",
                wrong_roots.to_str().unwrap(),
            ],
        ),
        &["not trusted", "UnknownIssuer"],
    );

    // A fingerprint of another CA.
    let other_fp = other.join_token("x").ca_fingerprint;
    assert_ne!(other_fp, token.ca_fingerprint);
    refused_quickly(
        agent_cmd(
            &server,
            dir.path(),
            &["--join-token", &token.token, "--ca-fingerprint", &other_fp],
        ),
        &["not trusted"],
    );

    // No trust at all: the operator is told what to pass.
    refused_quickly(
        agent_cmd(&server, dir.path(), &["--join-token", &token.token]),
        &["--ca-fingerprint", "--trust-bundle"],
    );

    // The token was never presented, so it still works with the right trust.
    let log = dir.path().join("agent.log");
    let mut agent = Daemon::spawn(
        "agent n1",
        agent_cmd(
            &server,
            dir.path(),
            &[
                "--join-token",
                &token.token,
                "--ca-fingerprint",
                &token.ca_fingerprint,
            ],
        ),
        &log,
        None,
    );
    let agents = wait_until("the agent to be attested", Duration::from_secs(20), || {
        agent.assert_alive("the agent to be attested");
        let v = server.json(&["agent", "list"]);
        let list = v.as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(agents[0]["spiffe_id"], server.agent_id("n1"));
    agent.kill();

    // Single use: a second agent with the same token is refused by the server.
    let dir2 = short_tempdir();
    refused_quickly(
        agent_cmd(
            &server,
            dir2.path(),
            &[
                "--join-token",
                &token.token,
                "--ca-fingerprint",
                &token.ca_fingerprint,
            ],
        ),
        &["join token", "used"],
    );
}
