//! `hallmark up`: server and agent in one process, the invoking user
//! registered, a workload served with no other setup.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use common::*;

#[test]
fn up_issues_the_invoking_user_an_identity() {
    let mut up = TestUp::start();
    let socket = up.socket();
    let socket_text = socket.display().to_string();
    let what = "`hallmark up` to print the workload socket path";
    wait_until(what, WAIT, || {
        up.daemon().assert_alive(what);
        up.printed().contains(&socket_text).then_some(())
    });

    // Tests run as root: uid 0 is `root`.
    let expected = "spiffe://hallmark.local/user/root";
    let what = format!("`svid fetch` on {socket_text} to return {expected}");
    let svid = wait_until(&what, WAIT, || {
        let mut cmd = hallmark_cmd(&["svid", "fetch", "--socket"]);
        cmd.arg(&socket);
        let out = run(&mut cmd, CLI_TIMEOUT);
        let leaf = pem_certs(&out.stdout).first().map(|der| cert_info(der));
        leaf.filter(|l| l.uri_sans == [expected])
    });
    assert!(!svid.is_ca);

    // The operator CLI finds the server through --admin-socket under the home.
    let mut cmd = hallmark_cmd(&["status", "--admin-socket"]);
    cmd.arg(up.admin_socket());
    run(&mut cmd, CLI_TIMEOUT).ok();
    let mut cmd = hallmark_cmd(&["entry", "list", "--json"]);
    cmd.env("HALLMARK_ADMIN_SOCKET", up.admin_socket());
    let entries = run(&mut cmd, CLI_TIMEOUT).ok().json();
    assert!(
        entries
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["spiffe_id"] == expected)),
        "entry list holds the user's entry: {entries}"
    );
    // The same, found through HALLMARK_HOME alone.
    let mut cmd = hallmark_cmd(&["svid", "fetch"]);
    cmd.env("HALLMARK_HOME", &up.home);
    let out = run(&mut cmd, CLI_TIMEOUT).ok();
    assert_eq!(
        cert_info(&pem_certs(&out.stdout)[0]).uri_sans,
        [expected],
        "{out}"
    );
}

/// The user's entries of `hallmark up`'s registry, with their selectors
/// sorted.
fn user_entries(up: &TestUp, spiffe_id: &str) -> Vec<(String, Vec<String>)> {
    let entries = up.cli(&["entry", "list", "--json"]).ok().json();
    let entries = entries
        .as_array()
        .unwrap_or_else(|| panic!("entry list --json is not an array: {entries}"));
    entries
        .iter()
        .filter(|e| e["spiffe_id"] == spiffe_id)
        .map(|e| {
            let mut selectors: Vec<String> = e["selectors"]
                .as_array()
                .unwrap_or_else(|| panic!("entry without selectors: {e}"))
                .iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect();
            selectors.sort();
            (entry_id(e), selectors)
        })
        .collect()
}

fn ca_fingerprint(up: &TestUp) -> String {
    let status = up.cli(&["status", "--json"]).ok().json();
    status["ca_fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("status --json has no ca_fingerprint: {status}"))
        .to_string()
}

#[test]
fn up_pins_the_user_to_host_processes_and_migrates_an_older_entry() {
    let expected = "spiffe://hallmark.local/user/root";
    let pinned = ["unix:container:none", "unix:uid:0"];
    let mut up = TestUp::start();

    // A fresh state directory: the user's uid and the host selector.
    let fresh = user_entries(&up, expected);
    assert_eq!(fresh.len(), 1, "one entry for the user: {fresh:?}");
    assert_eq!(fresh[0].1, pinned, "{fresh:?}");

    // What an older version left behind: the uid alone.
    let ca = ca_fingerprint(&up);
    let bundle = up.cli(&["bundle", "show"]).ok().stdout;
    up.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        expected,
        "--parent",
        "spiffe://hallmark.local/hallmark/agent/local",
        "--selector",
        "unix:uid:0",
    ])
    .ok();
    up.cli(&["entry", "delete", &fresh[0].0]).ok();
    let old = user_entries(&up, expected);
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(old[0].1, ["unix:uid:0"], "{old:?}");

    up.restart();

    let migrated = user_entries(&up, expected);
    assert_eq!(
        migrated.len(),
        1,
        "the uid-only entry was replaced, not kept beside the pinned one: {migrated:?}"
    );
    assert_eq!(migrated[0].1, pinned, "{migrated:?}");
    assert_eq!(ca_fingerprint(&up), ca, "the CA survives the upgrade");
    assert_eq!(up.cli(&["bundle", "show"]).ok().stdout, bundle);
    let log = std::fs::read_to_string(up.log()).unwrap_or_default();
    assert!(
        log.contains("migrated the user's entry") && log.contains(&old[0].0),
        "`hallmark up` logs the migration of entry {}:\n{log}",
        old[0].0
    );

    // A second start finds nothing to migrate.
    up.restart();
    assert_eq!(user_entries(&up, expected), migrated);
}

#[test]
fn up_captures_the_users_own_flows() {
    use std::io::{Read, Write};
    let mut up = TestUp::start();
    let what = "`hallmark up` to say flows are captured";
    wait_until(what, WAIT, || {
        up.daemon().assert_alive(what);
        up.printed()
            .contains("flows          captured with eBPF")
            .then_some(())
    });
    // The user's own connection: 12,345 bytes to a local listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        got.len()
    });
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(&[7u8; 12_345]).unwrap();
    drop(c);
    assert_eq!(server.join().unwrap(), 12_345);
    let port_text = port.to_string();
    let flow = wait_until("the connection in `flows list`", WAIT, || {
        let list = up
            .cli(&["flows", "list", "--json", "--port", &port_text])
            .ok()
            .json();
        list.as_array()?
            .iter()
            .find(|f| f["flow"]["bytes_sent"] == 12_345)
            .cloned()
    });
    assert_eq!(flow["flow"]["initiator"], "source", "{flow}");
    assert_eq!(flow["flow"]["reporter"]["kind"], "agent", "{flow}");
    assert_eq!(flow["src"]["kind"], "node", "{flow}");
    assert_eq!(flow["dst"]["kind"], "node", "{flow}");
}
