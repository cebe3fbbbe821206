//! The operator CLI against a running server: entries, agents, bundles and
//! status in their --json forms, and refusals of bad input that name the
//! input and the rule it broke.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_client::AdminClient;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

fn array(v: &Value, what: &str) -> Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not a JSON array: {v}"))
        .clone()
}

fn ids_of(entries: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = entries.iter().map(entry_id).collect();
    ids.sort();
    ids
}

#[test]
fn entry_create_list_show_delete() {
    let server = TestServer::start("entries.test");
    let parent_a = server.agent_id("a");
    let parent_b = server.agent_id("b");

    let web = server.create_entry(
        &server.id("web"),
        &parent_a,
        &["unix:uid:1000", "unix:gid:50"],
        &[
            "--x509-ttl",
            "20s",
            "--jwt-ttl",
            "5m",
            "--dns-name",
            "web.example",
            "--hint",
            "external",
        ],
    );
    assert_eq!(web["parent_id"], parent_a.as_str());
    let mut selectors: Vec<String> = array(&web["selectors"], "selectors")
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("selector is not a string: {web}"))
                .to_string()
        })
        .collect();
    selectors.sort();
    assert_eq!(selectors, ["unix:gid:50", "unix:uid:1000"], "{web}");
    assert_eq!(web["x509_ttl_secs"], 20, "{web}");
    assert_eq!(web["jwt_ttl_secs"], 300, "{web}");
    assert_eq!(
        web["dns_names"],
        serde_json::json!(["web.example"]),
        "{web}"
    );
    assert_eq!(web["hint"], "external", "{web}");
    assert_eq!(web["admin"], false, "{web}");
    let created_at = web["created_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("created_at: {web}"));
    assert!(
        (now_unix() - created_at).abs() < 60,
        "created_at {created_at} is not now"
    );
    assert!(
        web["revision"].is_i64() || web["revision"].is_u64(),
        "revision: {web}"
    );

    // --node is shorthand for the derived agent ID.
    let db = server.json(&[
        "entry",
        "create",
        "--spiffe-id",
        &server.id("db"),
        "--node",
        "b",
        "--selector",
        "unix:uid:2000",
        "--admin",
    ]);
    assert_eq!(db["parent_id"], parent_b.as_str(), "{db}");
    assert_eq!(db["admin"], true, "{db}");
    // Defaults from the contract: 1h X.509, 5m JWT.
    assert_eq!(db["x509_ttl_secs"], 3600, "{db}");
    assert_eq!(db["jwt_ttl_secs"], 300, "{db}");

    let all = array(&server.json(&["entry", "list"]), "entry list");
    assert_eq!(ids_of(&all), ids_of(&[web.clone(), db.clone()]));

    let by_parent = array(
        &server.json(&["entry", "list", "--parent", &parent_a]),
        "list --parent",
    );
    assert_eq!(ids_of(&by_parent), [entry_id(&web)]);
    let by_id = array(
        &server.json(&["entry", "list", "--spiffe-id", &server.id("db")]),
        "list --spiffe-id",
    );
    assert_eq!(ids_of(&by_id), [entry_id(&db)]);
    let by_selector = array(
        &server.json(&["entry", "list", "--selector", "unix:gid:50"]),
        "list --selector",
    );
    assert_eq!(ids_of(&by_selector), [entry_id(&web)]);

    let shown = server.json(&["entry", "show", &entry_id(&web)]);
    assert_eq!(shown, web, "entry show returns what create returned");

    server.delete_entry(&entry_id(&web));
    let all = array(&server.json(&["entry", "list"]), "entry list");
    assert_eq!(ids_of(&all), [entry_id(&db)]);
    server
        .cli(&["entry", "show", &entry_id(&web), "--json"])
        .fails()
        .stderr_has(&[&entry_id(&web)]);
    server.cli(&["entry", "delete", &entry_id(&web)]).fails();
}

#[test]
fn bundle_token_and_status() {
    let server = TestServer::start("bundle.test");

    let pem = server.bundle_pem();
    let roots = pem_certs(&pem);
    assert!(
        !roots.is_empty(),
        "bundle show prints PEM certificates:\n{pem}"
    );
    let root = cert_info(&roots[0]);
    assert!(root.is_ca, "bundle root is a CA: {root:?}");
    assert_eq!(
        root.uri_sans,
        [format!("spiffe://{}", server.td)],
        "{root:?}"
    );

    let jwks = server
        .cli(&["bundle", "show", "--format", "jwks"])
        .ok()
        .json();
    let keys = array(&jwks["keys"], "jwks keys");
    assert!(
        keys.iter()
            .any(|k| k["use"] == "x509-svid" && k["x5c"].is_array()),
        "JWKS has an x509-svid key with x5c: {jwks}"
    );
    assert!(
        keys.iter()
            .any(|k| k["use"] == "jwt-svid" && k["kid"].is_string()),
        "JWKS has a jwt-svid key with kid: {jwks}"
    );
    assert!(jwks.get("spiffe_sequence").is_some(), "{jwks}");

    let token = server.join_token("node-x");
    assert_eq!(token.agent_spiffe_id, server.agent_id("node-x"));
    assert_eq!(
        token.ca_fingerprint.len(),
        64,
        "SHA-256 hex: {}",
        token.ca_fingerprint
    );
    let ttl = token.expires_at - now_unix();
    assert!(
        (540..=600).contains(&ttl),
        "default token TTL is 10m, got {ttl}s"
    );
    let short = server.json(&["token", "generate", "--node", "node-y", "--ttl", "1m"]);
    let ttl = short["expires_at"].as_i64().unwrap_or(0) - now_unix();
    assert!((0..=60).contains(&ttl), "--ttl 1m gave {ttl}s: {short}");

    let status = server.cli(&["status", "--json"]).ok().json();
    assert!(status.is_object(), "status --json: {status}");
    server.cli(&["status"]).ok();
}

#[test]
fn agent_list_evict_and_ban() {
    let server = TestServer::start("agents.test");
    let mut first = TestAgent::start(&server, "n1");
    let second = TestAgent::start(&server, "n2");

    let listed = array(&server.json(&["agent", "list"]), "agent list");
    let find = |list: &[Value], id: &str| list.iter().find(|a| a["spiffe_id"] == id).cloned();
    for agent in [&first, &second] {
        let a = find(&listed, &agent.spiffe_id)
            .unwrap_or_else(|| panic!("agent list lacks {}: {listed:?}", agent.spiffe_id));
        for key in ["serial", "expires_at", "attested_at", "last_seen"] {
            assert!(!a[key].is_null(), "agent record lacks {key}: {a}");
        }
        assert_eq!(a["banned"], false, "{a}");
        assert_eq!(a["connected"], true, "{a}");
        assert!(a["expires_at"].as_i64().unwrap_or(0) > now_unix(), "{a}");
    }

    server.cli(&["agent", "evict", &first.spiffe_id]).ok();
    let listed = array(&server.json(&["agent", "list"]), "agent list");
    assert!(
        find(&listed, &first.spiffe_id).is_none(),
        "an evicted agent is removed from the registry: {listed:?}"
    );
    // Evicted, it may re-join with a new token.
    first.kill();
    let rejoined = TestAgent::start(&server, "n1");
    let listed = array(&server.json(&["agent", "list"]), "agent list");
    assert!(find(&listed, &rejoined.spiffe_id).is_some(), "{listed:?}");

    server.cli(&["agent", "ban", &second.spiffe_id]).ok();
    let listed = array(&server.json(&["agent", "list"]), "agent list");
    let banned = find(&listed, &second.spiffe_id)
        .unwrap_or_else(|| panic!("a banned agent stays listed: {listed:?}"));
    assert_eq!(banned["banned"], true, "{banned}");
    let what = format!("{} to show as disconnected after the ban", second.spiffe_id);
    wait_until(&what, WAIT, || {
        let listed = array(&server.json(&["agent", "list"]), "agent list");
        (find(&listed, &second.spiffe_id)?["connected"] == false).then_some(())
    });

    server
        .cli(&["agent", "evict", &server.agent_id("never-was")])
        .fails();
}

#[test]
fn bad_entry_input_is_refused_naming_input_and_rule() {
    let server = TestServer::start("badinput.test");
    let parent = server.agent_id("n1");
    let good_id = server.id("ok");
    let create = |spiffe_id: &str, selector: &str, extra: &[&str]| {
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            spiffe_id,
            "--parent",
            &parent,
            "--selector",
            selector,
        ];
        args.extend_from_slice(extra);
        server.cli(&args).fails()
    };

    create("spiffe://Bad/x", "unix:uid:0", &[]).stderr_has(&["spiffe://Bad/x", "lowercase"]);
    create("spiffe://badinput.test", "unix:uid:0", &[])
        .stderr_has(&["spiffe://badinput.test", "path"]);
    create(&server.id("x"), "unix:uid:abc", &[]).stderr_has(&["unix:uid:abc", "decimal"]);
    create(&server.id("x"), "unix:uid", &[]).stderr_has(&["unix:uid", "<type>:<key>:<value>"]);
    create(&server.id("x"), "nope:uid:1", &[]).stderr_has(&["nope:uid:1", "unknown type"]);
    create(&good_id, "unix:uid:0", &["--x509-ttl", "0s"]).stderr_has(&["0s"]);
    create(&good_id, "unix:uid:0", &["--x509-ttl", "5x"]).stderr_has(&["5x", "unit"]);
    create(&good_id, "unix:uid:0", &["--jwt-ttl", "5x"]).stderr_has(&["5x", "unit"]);
    create(&good_id, "unix:uid:0", &["--x509-ttl", "1s"]).stderr_has(&["TTL"]);
    create("spiffe://other.test/x", "unix:uid:0", &[])
        .stderr_has(&["spiffe://other.test/x", "badinput.test"]);
    create(&good_id, "unix:uid:0", &["--dns-name", "bad_name!"]).stderr_has(&["bad_name!"]);

    let out = server
        .cli(&["token", "generate", "--node", "n1", "--ttl", "5x"])
        .fails();
    assert!(out.stderr.contains("5x"), "{out}");

    // Nothing above reached the registry.
    assert_eq!(
        array(&server.json(&["entry", "list"]), "entry list").len(),
        0
    );
}

#[test]
fn bad_server_flags_and_config_files_are_refused() {
    let dir = short_tempdir();
    let config = dir.path().join("hallmark.toml");
    let data_dir = dir.path().join("data");
    let admin_socket = dir.path().join("admin.sock");
    let server_run = |extra: &[&str]| {
        let mut cmd = hallmark_cmd(&["server", "run", "--data-dir"]);
        cmd.arg(&data_dir)
            .args(["--listen", "127.0.0.1:0", "--admin-socket"])
            .arg(&admin_socket)
            .args(extra);
        // A server that accepted its input would keep running: the bound
        // turns that into a failure instead of a hang.
        run(&mut cmd, Duration::from_secs(15)).fails()
    };
    let config_str = config.to_str().expect("utf-8 path").to_string();

    server_run(&["--trust-domain", "Bad.Domain"]).stderr_has(&["Bad.Domain"]);
    server_run(&["--trust-domain", "td.test", "--jwt-key-type", "dsa-512"])
        .stderr_has(&["dsa-512"]);

    fs::write(&config, "[server]\nbogus_key = 1\n").expect("write config");
    server_run(&["--trust-domain", "td.test", "--config", &config_str])
        .stderr_has(&["bogus_key", &config_str]);

    fs::write(&config, "[server]\nca_ttl = \"5x\"\n").expect("write config");
    server_run(&["--trust-domain", "td.test", "--config", &config_str])
        .stderr_has(&["ca_ttl", "5x"]);

    fs::write(&config, "[server]\njwt_key_type = \"dsa-512\"\n").expect("write config");
    server_run(&["--trust-domain", "td.test", "--config", &config_str])
        .stderr_has(&["jwt_key_type", "dsa-512"]);

    fs::write(&config, "[server]\nlisten = 5\n").expect("write config");
    server_run(&["--trust-domain", "td.test", "--config", &config_str]).stderr_has(&["listen"]);

    server_run(&[
        "--trust-domain",
        "td.test",
        "--config",
        "/nonexistent/hallmark.toml",
    ])
    .stderr_has(&["/nonexistent/hallmark.toml"]);

    // A config file that is fine starts the server (flags fill the rest).
    fs::write(&config, "[server]\njwt_key_type = \"rsa-2048\"\n").expect("write config");
    let server = TestServer::start_with("cfg.test", &["--config", &config_str]);
    let jwks = server
        .cli(&["bundle", "show", "--format", "jwks"])
        .ok()
        .json();
    assert!(
        array(&jwks["keys"], "jwks keys")
            .iter()
            .any(|k| k["use"] == "jwt-svid" && k["kty"] == "RSA"),
        "jwt_key_type = rsa-2048 gives an RSA JWT key: {jwks}"
    );
}

#[test]
fn entries_with_only_user_selectors_draw_a_container_warning() {
    let server = TestServer::start("warn.test");
    let parent = server.agent_id("n1");
    let create = |path: &str, selectors: &[&str], json: bool| {
        let id = server.id(path);
        let mut args = vec!["entry", "create", "--spiffe-id", &id, "--parent", &parent];
        for s in selectors {
            args.extend(["--selector", s]);
        }
        if json {
            args.push("--json");
        }
        server.cli(&args).ok()
    };
    let warned = |out: &Output| {
        out.stderr.contains("warning:")
            && out.stderr.contains("containers")
            && out.stderr.contains("unix:container:none")
    };

    let out = create("root", &["unix:uid:0"], true);
    assert!(warned(&out), "uid alone warns on stderr: {out}");
    assert_eq!(
        out.json()["spiffe_id"],
        server.id("root"),
        "stdout stays JSON: {out}"
    );
    let out = create("admins", &["unix:gid:0"], false);
    assert!(warned(&out), "gid alone warns in text mode too: {out}");

    for (path, selectors) in [
        ("host-root", &["unix:uid:0", "unix:container:none"][..]),
        ("nginx", &["unix:uid:0", "unix:path:/usr/sbin/nginx"]),
        ("web", &["unix:uid:0", "docker:label:app:web"]),
    ] {
        let out = create(path, selectors, true);
        assert!(
            !out.stderr.contains("warning"),
            "{selectors:?} is pinned: no warning: {out}"
        );
    }
}

/// An admin API client on the server's socket.
async fn admin_client(socket: &Path) -> AdminClient<Channel> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to the admin socket");
    AdminClient::new(channel)
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let server = TestServer::start("pipe.test");
    let parent = server.agent_id("n1");
    let socket = server.admin_socket.clone();
    // Far more than a pipe holds (64 KiB): `head` leaves after the first
    // line while hallmark still has most of the list to write.
    block_on(async move {
        let mut admin = admin_client(&socket).await;
        for i in 0..300 {
            admin
                .create_entry(pb::CreateEntryRequest {
                    spiffe_id: format!("spiffe://pipe.test/workload-{i}"),
                    parent_id: parent.clone(),
                    selectors: vec![format!("unix:uid:{i}"), "unix:container:none".into()],
                    dns_names: (0..10)
                        .map(|j| format!("host-{i}-{j}.pipe.example"))
                        .collect(),
                    ..Default::default()
                })
                .await
                .expect("create entry");
        }
    });

    for args in ["entry list", "entry list --json"] {
        let script = format!(r#"{{ "$0" {args}; echo "hallmark exited $?" >&2; }} | head -1"#);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&script)
            .arg(hallmark_bin())
            .env("HALLMARK_ADMIN_SOCKET", &server.admin_socket)
            .stdin(Stdio::null());
        let out = run(&mut cmd, CLI_TIMEOUT).ok();
        assert!(
            out.stderr.contains("hallmark exited 0"),
            "`hallmark {args} | head -1` exits 0: {out}"
        );
        for bad in ["panicked", "Broken pipe", "error"] {
            assert!(
                !out.stderr.contains(bad),
                "`hallmark {args}` printed `{bad}`: {out}"
            );
        }
        assert_eq!(out.stdout.lines().count(), 1, "{out}");
    }
}
