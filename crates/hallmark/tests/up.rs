//! `hallmark up`: server and agent in one process, the invoking user
//! registered, a workload served with no other setup.

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
