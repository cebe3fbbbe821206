//! The server on a real PostgreSQL datastore: the identity plane works the
//! same as on SQLite and survives a restart with its CA and entries.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::process::Command;
use std::time::Duration;

use common::postgres::*;
use common::*;

#[test]
fn the_server_runs_on_postgresql_and_keeps_its_state_there() {
    let db = Database::create("hm_server");
    let url = db.url();
    let mut server = TestServer::start_with("pg.test", &["--datastore", &url]);
    assert!(
        !server.data_dir.join("datastore.sqlite3").exists(),
        "with --datastore postgres://… no SQLite file may be created"
    );
    let agent = TestAgent::start(&server, "pg-node");
    let first = server.id("/first");
    server.create_entry(&first, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&first], WAIT);
    let bundle = server.bundle_pem();

    // The CA, the entries and the agent's registration live in PostgreSQL.
    server.restart();
    assert_eq!(
        server.bundle_pem(),
        bundle,
        "the CA changed across a restart"
    );
    let second = server.id("/second");
    server.create_entry(&second, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&first, &second], Duration::from_secs(30));
    let entries = server.json(&["entry", "list"]);
    assert_eq!(
        entries.as_array().map(Vec::len),
        Some(2),
        "entries after restart: {entries}"
    );
}

#[test]
fn a_bad_datastore_is_refused_with_the_rule_and_no_password() {
    let mut cmd = hallmark_cmd(&[
        "server",
        "run",
        "--datastore",
        "mysql://root:s3cret@db/hallmark",
    ]);
    let out = run(&mut cmd, CLI_TIMEOUT).fails();
    assert!(out.stderr.contains("postgres://"), "{out}");
    assert!(!out.stderr.contains("s3cret"), "the password leaked: {out}");

    // Nothing listening: a clear error, quickly, without the password.
    let dir = short_tempdir();
    let mut cmd = hallmark_cmd(&[
        "server",
        "run",
        "--datastore",
        "postgres://hallmark:s3cret@127.0.0.1:1/hallmark",
        "--data-dir",
    ]);
    cmd.arg(dir.path());
    let started = std::time::Instant::now();
    let out = run(&mut cmd, CLI_TIMEOUT).fails();
    assert!(started.elapsed() < Duration::from_secs(15), "{out}");
    assert!(out.stderr.contains("PostgreSQL"), "{out}");
    assert!(!out.stderr.contains("s3cret"), "the password leaked: {out}");
}

/// The admin socket of a second server on the same datastore, started with
/// the same trust domain and its own data directory.
fn second_server(td: &str, url: &str) -> TestServer {
    TestServer::start_with(td, &["--datastore", url])
}

#[test]
fn two_servers_on_one_postgresql_survive_the_loss_of_either() {
    let db = Database::create("hm_server");
    let url = db.url();
    let mut a = TestServer::start_with("ha.test", &["--datastore", &url]);
    let mut b = second_server("ha.test", &url);
    assert_eq!(
        a.bundle_pem(),
        b.bundle_pem(),
        "servers on one datastore must share the CA"
    );
    assert_eq!(a.json(&["status"])["datastore"], "postgres");

    // The agent knows both servers and starts on the first.
    let b_addr = b.addr.to_string();
    let agent = TestAgent::start_with(&a, "ha-node", &["--runtime", "none", "--server", &b_addr]);

    // An entry made through B reaches the agent connected to A.
    let first = a.id("/first");
    b.create_entry(&first, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&first], WAIT);

    // A CA prepared through A is published by B as well.
    a.cli(&["authority", "prepare", "--kind", "x509"]).ok();
    let bundle = a.bundle_pem();
    assert_ne!(
        bundle,
        b.bundle_pem(),
        "A publishes the prepared CA at once"
    );
    wait_until(
        "B to publish the CA prepared through A",
        Duration::from_secs(10),
        || (b.bundle_pem() == bundle).then_some(()),
    );

    // A dies: the agent fails over to B, keeps issuing (a JWT-SVID needs the
    // server) and receives entry changes made through B.
    a.kill();
    let second = a.id("/second");
    b.create_entry(&second, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&first, &second], Duration::from_secs(60));
    let jwt = wait_until(
        "a JWT-SVID minted through B",
        Duration::from_secs(30),
        || {
            let out = agent.cli(&[
                "jwt",
                "fetch",
                "--audience",
                "ha-check",
                "--spiffe-id",
                &second,
            ]);
            out.success().then(|| out.stdout.trim().to_string())
        },
    );
    assert!(jwt.split('.').count() == 3, "not a JWT: {jwt}");

    // A comes back with no manual step; then B dies and A carries on.
    a.restart();
    b.kill();
    let third = a.id("/third");
    a.create_entry(&third, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&first, &second, &third], Duration::from_secs(60));

    // B rejoins too, and a change made there reaches the agent on A.
    b.restart();
    let fourth = a.id("/fourth");
    b.create_entry(&fourth, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&first, &second, &third, &fourth], Duration::from_secs(30));

    // Evicting the agent through B ends its stream on A as well.
    let connected = |s: &TestServer| s.json(&["status"])["connected_agents"].as_u64();
    assert_eq!(connected(&a), Some(1), "the agent streams from A");
    b.cli(&["agent", "evict", &agent.spiffe_id]).ok();
    wait_until(
        "A to end the evicted agent's stream",
        Duration::from_secs(15),
        || (connected(&a) == Some(0)).then_some(()),
    );
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// An IPv4 address of this machine that an agent reports as its node's.
fn node_ip() -> String {
    let out = run(Command::new("hostname").arg("-I"), CLI_TIMEOUT).ok();
    out.stdout
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback() && !ip.is_link_local())
        })
        .unwrap_or_else(|| panic!("no IPv4 address in `hostname -I`: {out}"))
        .to_string()
}

#[test]
fn two_servers_on_one_database_attribute_flows_alike() {
    let db = Database::create("hm_server");
    let url = db.url();
    let flags = [
        "--datastore",
        url.as_str(),
        "--ownership-heartbeat",
        "1s",
        "--attribution-holdback",
        "20s",
    ];
    let s1 = TestServer::start_with("pgflows.test", &flags);
    let s2 = TestServer::start_with("pgflows.test", &flags);
    // The agent reports to the first server only.
    let _agent = TestAgent::start_with(
        &s1,
        "n1",
        &["--runtime", "none", "--ownership-heartbeat", "1s"],
    );
    let ip = node_ip();
    let whois = |s: &TestServer, at: &str| s.json(&["flows", "whois", &ip, "--at", at]);
    // An instant the first server has proven on both sides...
    let (at, o1) = wait_until("the first server to see n1 hold its IP", WAIT, || {
        let at = format!("{:.3}", (now_ms() - 1_500) as f64 / 1000.0);
        let w = whois(&s1, &at);
        (w["verdict"] == "owned").then(|| (at, w["owners"][0].clone()))
    });
    // ...is proven alike on the second, which heard from no agent.
    let o2 = wait_until("the second server to see the same", WAIT, || {
        let w = whois(&s2, &at);
        (w["verdict"] == "owned").then(|| w["owners"][0].clone())
    });
    assert_eq!(o1, o2, "both servers name the same owner");
    assert_eq!(o1["kind"], "node");
    assert_eq!(o1["node"], "n1");

    // A flow ingested through the second server names the node the first
    // server heard from.
    let dir = short_tempdir();
    let file = dir.path().join("f.jsonl");
    let start = now_ms() - 1_000;
    std::fs::write(
        &file,
        format!(
            "{{\"start_ms\":{start},\"end_ms\":{},\"protocol\":\"tcp\",\"src\":\"{ip}:40000\",\"dst\":\"203.0.113.9:443\",\"bytes_sent\":10,\"packets_sent\":1}}\n",
            start + 5
        ),
    )
    .unwrap();
    s2.cli(&[
        "flows",
        "ingest",
        "--format",
        "jsonl",
        file.to_str().unwrap(),
    ])
    .ok();
    for s in [&s2, &s1] {
        let list = wait_until("the flow to be stored", Duration::from_secs(40), || {
            let v = s.json(&[
                "flows",
                "list",
                "--since",
                "10m",
                "--from",
                &format!("ip:{ip}"),
            ]);
            let list = v.as_array().cloned().unwrap_or_default();
            (!list.is_empty()).then_some(list)
        });
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0]["src"]["kind"], "node", "{}", list[0]);
        assert_eq!(list[0]["src"]["node"], "n1", "{}", list[0]);
        // Stored with what policy said: nothing, since an end (an address
        // no workload or network holds) is unattributed.
        assert_eq!(list[0]["verdict"], "no-decision", "{}", list[0]);
        assert_eq!(list[0]["policy_revision"], 0, "{}", list[0]);
        let by_verdict = |v: &str| {
            s.json(&[
                "flows",
                "list",
                "--since",
                "10m",
                "--from",
                &format!("ip:{ip}"),
                "--verdict",
                v,
            ])
            .as_array()
            .map_or(0, Vec::len)
        };
        assert_eq!((by_verdict("no-decision"), by_verdict("allowed")), (1, 0));
    }
}
