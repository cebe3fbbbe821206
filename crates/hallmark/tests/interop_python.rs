//! py-spiffe and PyJWT, clients nobody here wrote, against a real server and
//! agent. The checks themselves live in tests/interop/*.py; these tests set
//! the stage and fail with the script's own account of what went wrong.

mod common;

use std::time::Duration;

use common::*;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn python_clients_fetch_verify_and_validate() {
    let server = TestServer::start("py.test");
    let agent = TestAgent::start(&server, "n1");
    // Before any entry, the caller is refused the way py-spiffe expects.
    // (It runs as root: the venv interpreter may live where other uids
    // cannot execute it, e.g. under a pyenv in /root.)
    run_python(
        &agent,
        "py_spiffe_check.py",
        &["no-identity"],
        SCRIPT_TIMEOUT,
    )
    .ok();

    let id = server.id("py/svc");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    wait_until("the entry to reach the agent", WAIT, || {
        agent.try_fetch_svid().ok().filter(|s| s.spiffe_id() == id)
    });

    run_python(
        &agent,
        "py_spiffe_check.py",
        &["x509", "--expect-id", &id],
        SCRIPT_TIMEOUT,
    )
    .ok();
    run_python(
        &agent,
        "py_spiffe_check.py",
        &["jwt", "--expect-id", &id, "--audience", "py-aud"],
        SCRIPT_TIMEOUT,
    )
    .ok();

    // PyJWT on a token minted through FetchJWTSVID...
    run_python(
        &agent,
        "pyjwt_check.py",
        &["--expect-id", &id, "--audience", "pyjwt-aud"],
        SCRIPT_TIMEOUT,
    )
    .ok();
    // ...and on one the hallmark CLI fetched.
    let token = agent
        .cli(&["jwt", "fetch", "--audience", "cli-aud"])
        .ok()
        .stdout;
    run_python(
        &agent,
        "pyjwt_check.py",
        &[
            "--expect-id",
            &id,
            "--audience",
            "cli-aud",
            "--token",
            token.trim(),
        ],
        SCRIPT_TIMEOUT,
    )
    .ok();
}

#[test]
fn py_spiffe_sees_the_svid_rotate_before_it_expires() {
    let server = TestServer::start("pyrot.test");
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("py/rotating");
    server.create_entry(
        &id,
        &agent.spiffe_id,
        &["unix:uid:0"],
        &["--x509-ttl", "20s"],
    );
    wait_until("the entry to reach the agent", WAIT, || {
        agent.try_fetch_svid().ok().filter(|s| s.spiffe_id() == id)
    });
    // The script itself fails unless the new SVID arrives before the first
    // one's notAfter; 25 s covers a full 20 s lifetime plus start-up.
    let out = run_python(
        &agent,
        "py_spiffe_check.py",
        &["rotation", "--expect-id", &id, "--timeout", "25"],
        SCRIPT_TIMEOUT,
    )
    .ok();
    assert!(out.stdout.contains("rotated to serial"), "{out}");
}
