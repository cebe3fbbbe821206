//! A container never wins a host identity. `hallmark up`, run as root with a
//! Docker Engine beside it, registers `user/root` for host processes only
//! (`unix:uid:0` + `unix:container:none`): py-spiffe on the host gets it,
//! py-spiffe in a root container with no entry of its own is refused, and a
//! container whose label has an entry gets that entry's identity alone.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::containers::*;
use common::*;

const USER_ROOT: &str = "spiffe://hallmark.local/user/root";

/// py-spiffe's check script on the host, against `up`'s socket.
fn py_spiffe_on_host(up: &TestUp, args: &[&str]) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/interop/py_spiffe_check.py"))
        .args(args)
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", up.socket().display()),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    run(&mut cmd, Duration::from_secs(60))
}

/// py-spiffe's check script inside a fresh root container with `labels`.
fn py_spiffe_in_container(up: &TestUp, labels: &[&str], args: &[&str]) -> Output {
    let name = unique_name("hm-host-sel");
    let mut all: Vec<String> = ["run", "--rm", "--name", &name, "--network", "none"]
        .map(String::from)
        .to_vec();
    for l in labels {
        all.push("-l".into());
        all.push((*l).to_string());
    }
    all.extend(docker_python_flags(&up.socket()));
    all.push("--entrypoint".into());
    all.push(python_in_container());
    all.push(BUSYBOX_IMAGE.into());
    all.push(format!("{INTEROP_IN_CONTAINER}/py_spiffe_check.py"));
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    docker(&refs)
}

fn admin(up: &TestUp, args: &[&str]) -> Output {
    let mut cmd = hallmark_cmd(args);
    cmd.env("HALLMARK_ADMIN_SOCKET", up.admin_socket());
    run(&mut cmd, CLI_TIMEOUT)
}

#[test]
fn root_containers_never_get_the_operators_host_identity() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs `hallmark up` as root beside Docker: run it as root"
    );
    ensure_runtimes();
    let mut up = TestUp::start();

    // The host process gets user/root.
    let what = format!("py-spiffe on the host to get {USER_ROOT}");
    wait_until(&what, WAIT, || {
        up.daemon().assert_alive(&what);
        let out = py_spiffe_on_host(&up, &["x509", "--expect-id", USER_ROOT, "--only"]);
        out.success().then_some(())
    });

    // `up` registered the user for host processes only.
    let entries = admin(&up, &["entry", "list", "--json"]).ok().json();
    let user = entries
        .as_array()
        .and_then(|a| a.iter().find(|e| e["spiffe_id"] == USER_ROOT))
        .unwrap_or_else(|| panic!("no {USER_ROOT} entry in {entries}"))
        .clone();
    let selectors: Vec<&str> = user["selectors"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    assert!(
        selectors.contains(&"unix:uid:0") && selectors.contains(&"unix:container:none"),
        "user entry selectors: {selectors:?}"
    );

    // A root container with a label no entry names: refused, not user/root.
    let out = py_spiffe_in_container(&up, &["app=stray"], &["no-identity"]);
    assert!(
        out.success(),
        "py-spiffe in a root container with no entry:\n{out}"
    );

    // A root container whose label has an entry: that identity, and only it.
    let web = "spiffe://hallmark.local/containers/web";
    admin(
        &up,
        &[
            "entry",
            "create",
            "--node",
            "local",
            "--spiffe-id",
            web,
            "--selector",
            "docker:label:app:host-sel-web",
        ],
    )
    .ok();
    let what = format!("py-spiffe in an app=host-sel-web container to get {web} alone");
    wait_until(&what, WAIT, || {
        up.daemon().assert_alive(&what);
        let out = py_spiffe_in_container(
            &up,
            &["app=host-sel-web"],
            &["x509", "--expect-id", web, "--only"],
        );
        out.success().then_some(())
    });

    // The host still gets user/root and not the container's identity.
    let out = py_spiffe_on_host(&up, &["x509", "--expect-id", USER_ROOT, "--only"]);
    assert!(
        out.success(),
        "py-spiffe on the host after the change:\n{out}"
    );
}
