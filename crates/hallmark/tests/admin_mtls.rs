//! The admin API over mTLS: SVIDs of entries marked admin may call it from
//! anywhere; every other caller is refused, and the local socket keeps
//! working.

mod common;

use std::fs;

use common::*;

fn admin_addr(server: &TestServer) -> String {
    let file = server.data_dir.join("admin.addr");
    wait_until("the server to write admin.addr", WAIT, || {
        fs::read_to_string(&file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
}

fn entries_in(out: Output) -> Vec<String> {
    out.json()
        .as_array()
        .expect("entry list --json prints an array")
        .iter()
        .map(|e| e["spiffe_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn admin_svids_manage_the_server_over_mtls_and_others_are_refused() {
    let server = TestServer::start_with("adm.test", &["--admin-listen", "127.0.0.1:0"]);
    let addr = admin_addr(&server);
    let agent = TestAgent::start(&server, "adm-node");
    let ops = server.id("/ops");
    let ops_entry = server.create_entry(&ops, &agent.spiffe_id, &["unix:uid:0"], &["--admin"]);
    let viewer = server.id("/viewer");
    server.create_entry(
        &viewer,
        &agent.spiffe_id,
        &[&format!("unix:uid:{NOBODY}")],
        &[],
    );
    agent.wait_for_ids(&[&ops], WAIT);

    // The admin identity (root here) lists and creates entries remotely,
    // its SVID taken from the Workload API.
    let listed = entries_in(
        agent
            .cli(&["entry", "list", "--admin-addr", &addr, "--json"])
            .ok(),
    );
    assert!(
        listed.contains(&ops) && listed.contains(&viewer),
        "{listed:?}"
    );
    let remote = server.id("/made-remotely");
    agent
        .cli(&[
            "entry",
            "create",
            "--admin-addr",
            &addr,
            "--spiffe-id",
            &remote,
            "--parent",
            &agent.spiffe_id,
            "--selector",
            "unix:uid:4242",
        ])
        .ok();
    assert!(
        entries_in(server.cli(&["entry", "list", "--json"]).ok()).contains(&remote),
        "the entry created over mTLS is in the registry"
    );

    // The same SVID from files, as `hallmark svid fetch --out` writes them.
    let creds = agent.dir.path().join("admin-creds");
    fs::create_dir_all(&creds).expect("mkdir");
    agent
        .cli(&[
            "svid",
            "fetch",
            "--out",
            creds.to_str().expect("utf-8 path"),
        ])
        .ok();
    let mut cmd = hallmark_cmd(&[
        "status",
        "--admin-addr",
        &addr,
        "--admin-credentials",
        creds.to_str().expect("utf-8 path"),
    ]);
    let out = run(&mut cmd, CLI_TIMEOUT).ok();
    assert!(out.stdout.contains("adm.test"), "{out}");

    // A workload without the admin mark is refused, naming the remedy.
    wait_until("nobody's SVID", WAIT, || {
        agent
            .cli_as(NOBODY, &["svid", "fetch"])
            .success()
            .then_some(())
    });
    agent
        .cli_as(NOBODY, &["entry", "list", "--admin-addr", &addr])
        .fails()
        .stderr_has(&["not an admin identity", "--admin"]);

    // An SVID of another trust domain does not even complete the handshake.
    let other = TestServer::start("other.test");
    let other_agent = TestAgent::start(&other, "other-node");
    let intruder = other.id("/ops");
    other.create_entry(
        &intruder,
        &other_agent.spiffe_id,
        &["unix:uid:0"],
        &["--admin"],
    );
    other_agent.wait_for_ids(&[&intruder], WAIT);
    other_agent
        .cli(&["entry", "list", "--admin-addr", &addr])
        .fails()
        .stderr_has(&["admin API", &addr]);

    // Removing the admin entry takes effect on the next call.
    server.delete_entry(&entry_id(&ops_entry));
    let mut cmd = hallmark_cmd(&[
        "entry",
        "list",
        "--admin-addr",
        &addr,
        "--admin-credentials",
        creds.to_str().expect("utf-8 path"),
    ]);
    run(&mut cmd, CLI_TIMEOUT)
        .fails()
        .stderr_has(&["not an admin identity"]);

    // The local socket is unaffected.
    server.cli(&["entry", "list"]).ok();
}
