//! Identity policy end to end with a real server, a real agent following a
//! real Docker Engine, and the CLI an operator types:
//!
//! - a container started with `app=web` is listed by `hallmark group
//!   members web` within 1 s, and the rules already in force apply to it
//!   (`policy check` by SPIFFE ID, workload ID and IP); stopped, it leaves
//!   within 1 s;
//! - flows between the containers, ingested as a JSONL flow log and
//!   attributed by the server, are audited against the policy in force and
//!   against a candidate (dry-run);
//! - `policy suggest` → `policy apply` → `policy audit` shows none of the
//!   observed traffic, and a new kind of flow is would-deny.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::time::{Duration, Instant};

use common::containers::*;
use common::flows::*;
use common::postgres::*;
use common::*;
use serde_json::Value;

const TD: &str = "policy.test";

const POLICY: &str = "
groups:
  web:
    - labels: {app: web}
  db:
    - labels: {app: db}
  cache:
    - labels: {app: cache}
rules:
  - name: web-to-db
    from: [web]
    to: [db]
    protocol: tcp
    ports: [\"5432\"]
    action: allow
    priority: 100
  - name: web-not-to-cache
    from: [web]
    to: [cache]
    action: deny
    priority: 100
  - name: others-to-db
    from: [any]
    to: [db]
    action: deny
    mode: watch
    priority: 200
default: allow
";

const CANDIDATE: &str = "
groups:
  db:
    - labels: {app: db}
rules:
  - name: all-to-db
    from: [any]
    to: [db]
    protocol: tcp
    ports: [\"5432\"]
    action: allow
default: allow
";

/// [`POLICY`] with its groups narrowed to the containers of one test run
/// (label `hm-run=RUN`): the agents see every container on the host, and
/// other tests run `app=web` containers too.
fn policy(run: &str) -> String {
    let mut doc = POLICY.to_string();
    for app in ["web", "db", "cache"] {
        doc = doc.replace(
            &format!("labels: {{app: {app}}}"),
            &format!("labels: {{app: {app}, hm-run: {run}}}"),
        );
    }
    doc
}

/// The container IDs in `hallmark group members GROUP --json`.
fn members(server: &TestServer, group: &str) -> Vec<String> {
    let v = server.json(&["group", "members", group]);
    v.as_array()
        .unwrap_or_else(|| panic!("group members printed {v}"))
        .iter()
        .filter_map(|m| m["container_id"].as_str().map(str::to_string))
        .collect()
}

/// How long until `holds` is true, polling the CLI; fails after `within`.
#[track_caller]
fn time_until(what: &str, within: Duration, mut holds: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if holds() {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn apply(server: &TestServer, name: &str, yaml: &str) {
    let path = server.dir.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    let p = path.to_str().unwrap();
    server.cli(&["policy", "validate", "-f", p]).ok();
    server.cli(&["policy", "apply", "-f", p]).ok();
}

fn check(server: &TestServer, from: &str, to: &str, port: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "policy", "check", "--from", from, "--to", to, "--port", port,
    ];
    args.extend_from_slice(extra);
    server.json(&args)
}

fn jsonl(from: &str, to: &str, at_ms: i64) -> String {
    format!(
        r#"{{"start_ms":{at_ms},"end_ms":{},"protocol":"tcp","src":"{from}","dst":"{to}","initiator":"source","bytes_sent":300,"packets_sent":3,"outcome":"established"}}"#,
        at_ms + 20
    )
}

fn ingest(server: &TestServer, name: &str, lines: &[String]) {
    let path = server.dir.path().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    server
        .cli(&[
            "flows",
            "ingest",
            "--format",
            "jsonl",
            path.to_str().unwrap(),
        ])
        .ok();
}

fn audit(server: &TestServer, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["policy", "audit", "--since", "1h"];
    args.extend_from_slice(extra);
    let v = server.json(&args);
    v.as_array()
        .unwrap_or_else(|| panic!("audit printed {v}"))
        .clone()
}

#[test]
fn groups_follow_containers_and_policy_is_held_against_recorded_flows() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs Docker containers: run it as root (scripts/test.sh does)"
    );
    ensure_runtimes();
    let server = TestServer::start_with(
        TD,
        &[
            "--ownership-heartbeat",
            "1s",
            "--attribution-holdback",
            "5s",
        ],
    );
    let agent = TestAgent::start_with(
        &server,
        "n1",
        &["--runtime", "docker", "--ownership-heartbeat", "1s"],
    );
    let web_id = server.id("web");
    let db_id = server.id("db");
    // Entries and groups are narrowed to this run's containers: another
    // test's `app=web` container on the same Docker must not share the ID.
    let run_label = unique_name("groups");
    let run_selector = format!("docker:label:hm-run:{run_label}");
    for (id, app) in [(&web_id, "web"), (&db_id, "db")] {
        server.create_entry(
            id,
            &agent.spiffe_id,
            &[&format!("docker:label:app:{app}"), &run_selector],
            &[],
        );
    }
    apply(&server, "policy.yaml", &policy(&run_label));

    let (subnet, prefix) = subnet(7);
    let net = Network::create(&subnet);
    let ip_web = format!("{prefix}.10");
    let ip_db = format!("{prefix}.20");
    let ip_cache = format!("{prefix}.30");
    let run_tag = format!("hm-run={run_label}");
    let run = |name: &str, ip: &str, app: &str| {
        net.busybox(name, ip, &[&format!("app={app}"), &run_tag], "sleep 3600")
    };
    let db = run("hm-pol-db", &ip_db, "db");
    let cache = run("hm-pol-cache", &ip_cache, "cache");
    time_until("db to be a member of db", WAIT, || {
        members(&server, "db").contains(&db.id)
    });
    assert!(members(&server, "web").is_empty());

    // A web container starts: a member within 1 s, with no policy change.
    let web = run("hm-pol-web", &ip_web, "web");
    let web_started_ms = now_ms();
    let joined = time_until("web to be a member of web", Duration::from_secs(5), || {
        members(&server, "web").contains(&web.id)
    });
    println!("a started container was a member of its group after {joined:?}");
    assert!(joined < Duration::from_secs(1), "joined after {joined:?}");
    assert!(!members(&server, "db").contains(&web.id));
    let listed = server.json(&["group", "list"]);
    let web_group = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "web")
        .unwrap();
    assert_eq!(web_group["members"], 1, "{listed}");
    assert_eq!(
        web_group["rules"],
        serde_json::json!(["web-to-db", "web-not-to-cache"])
    );

    // The rules in force apply to it: by SPIFFE ID (once the agent has
    // attested it)...
    wait_until("web to carry its SPIFFE ID", WAIT, || {
        let v = server.json(&["group", "members", "web"]);
        (v[0]["spiffe_ids"][0] == web_id.as_str()).then_some(())
    });
    let a = check(&server, &web_id, &db_id, "5432", &[]);
    assert_eq!(a["verdict"], "allowed", "{a}");
    assert_eq!(a["rule"], "web-to-db");
    assert_eq!(a["from"]["workloads"][0]["container_id"], web.id.as_str());
    let human = server
        .cli(&[
            "policy", "check", "--from", &web_id, "--to", &db_id, "--port", "5432",
        ])
        .ok();
    assert!(
        human
            .stdout
            .starts_with("allowed by rule web-to-db (enforce), policy revision 1"),
        "{human}"
    );
    // ... by workload ID (a prefix) ...
    let a = check(&server, &web.id[..12], &cache.id, "6379", &[]);
    assert_eq!(
        (&a["verdict"], &a["allowed"]),
        (&"denied".into(), &false.into()),
        "{a}"
    );
    assert_eq!(a["rule"], "web-not-to-cache");
    // ... and by IP, through the ownership index at an instant the agent's
    // heartbeats have proven.
    let at_ms = web_started_ms + 1500;
    wait_until("heartbeats past the instant", WAIT, || {
        (now_ms() > at_ms + 3000).then_some(())
    });
    let at = format!("{}", at_ms as f64 / 1000.0);
    let a = check(&server, &ip_cache, &ip_db, "5432", &["--at", &at]);
    assert_eq!(a["verdict"], "would-deny", "{a}");
    assert_eq!(a["rule"], "others-to-db");
    assert_eq!(a["from"]["kind"], "workload");
    assert_eq!(a["from"]["workloads"][0]["container_id"], cache.id.as_str());
    assert_eq!(a["to"]["groups"], serde_json::json!(["any", "db"]));
    // Now (no --at): the same answer for the web container's address.
    let a = check(&server, &ip_web, &ip_db, "5432", &[]);
    assert_eq!(
        (&a["verdict"], &a["rule"]),
        (&"allowed".into(), &"web-to-db".into()),
        "{a}"
    );
    let table = server.cli(&["group", "list"]).ok();
    assert!(
        table.stdout.contains("GROUP")
            && table
                .stdout
                .contains(&format!("labels: {{app: web, hm-run: {run_label}}}")),
        "{table}"
    );

    // Stopped, it leaves within 1 s.
    docker(&["stop", "-t", "0", &web.name]).ok();
    let left = time_until("web to leave web", Duration::from_secs(5), || {
        !members(&server, "web").contains(&web.id)
    });
    println!("a stopped container left its group after {left:?}");
    assert!(left < Duration::from_secs(1), "left after {left:?}");
    let err = server.cli(&["group", "members", "nope"]).fails();
    assert!(err.stderr.contains("group `nope` is not defined"), "{err}");

    // Flows while all three ran, as a flow log: attributed by the server,
    // then audited.
    let t = at_ms;
    ingest(
        &server,
        "flows.jsonl",
        &[
            jsonl(&format!("{ip_web}:40000"), &format!("{ip_db}:5432"), t),
            jsonl(
                &format!("{ip_web}:40001"),
                &format!("{ip_db}:5432"),
                t + 100,
            ),
            jsonl(
                &format!("{ip_cache}:40002"),
                &format!("{ip_db}:5432"),
                t + 200,
            ),
            jsonl(
                &format!("{ip_web}:40003"),
                &format!("{ip_cache}:6379"),
                t + 300,
            ),
        ],
    );
    wait_until("4 attributed flows", WAIT, || {
        (flows(&server, &["--status", "attributed"]).len() == 4).then_some(())
    });
    let rows = audit(&server, &[]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["verdict"], "denied");
    assert_eq!(rows[0]["verdict_rule"], "web-not-to-cache");
    assert_eq!(rows[0]["policy_revision"], 1);
    assert_eq!(rows[1]["verdict"], "would-deny");
    assert_eq!(rows[1]["verdict_mode"], "watch");
    assert_eq!(audit(&server, &["--verdict", "deny"]).len(), 1);
    assert_eq!(audit(&server, &["--verdict", "would-deny"]).len(), 1);
    let table = server.cli(&["policy", "audit", "--since", "1h"]).ok();
    assert!(
        table.stdout.contains("VERDICT") && table.stdout.contains("web-not-to-cache (enforce)"),
        "{table}"
    );

    let cand = server.dir.path().join("candidate.yaml");
    std::fs::write(&cand, CANDIDATE).unwrap();
    let d = server.json(&[
        "policy",
        "dry-run",
        "-f",
        cand.to_str().unwrap(),
        "--since",
        "1h",
    ]);
    assert_eq!(
        (&d["flows_considered"], &d["changed"]),
        (&4.into(), &2.into()),
        "{d}"
    );
    let by_rule = d["by_rule"].as_array().unwrap();
    assert!(by_rule.iter().any(|l| l["rule"] == "all-to-db"
        && l["from_verdict"] == "would-deny"
        && l["to_verdict"] == "allowed"
        && l["flows"] == 1));
    assert!(by_rule.iter().any(|l| l["rule"].is_null()
        && l["from_verdict"] == "denied"
        && l["to_verdict"] == "allowed"));
    assert_eq!(d["unmatched"]["flows"], 1);
    let plain = server
        .cli(&[
            "policy",
            "dry-run",
            "-f",
            cand.to_str().unwrap(),
            "--since",
            "1h",
        ])
        .ok();
    assert!(
        plain.stdout.contains("2 of 4 recorded flows") && plain.stdout.contains("all-to-db"),
        "{plain}"
    );

    // Suggest from what was seen, apply it: the seen traffic is allowed; a
    // new kind of flow would be denied.
    let suggested = server.cli(&["policy", "suggest", "--since", "1h"]).ok();
    assert!(suggested.stderr.contains("suggested"), "{suggested}");
    apply(&server, "suggested.yaml", &suggested.stdout);
    let rows = audit(&server, &[]);
    assert!(rows.is_empty(), "{rows:?}\n{}", suggested.stdout);
    ingest(
        &server,
        "new.jsonl",
        &[jsonl(
            &format!("{ip_db}:40010"),
            &format!("{ip_web}:22"),
            t + 400,
        )],
    );
    wait_until("5 attributed flows", WAIT, || {
        (flows(&server, &["--status", "attributed"]).len() == 5).then_some(())
    });
    let rows = audit(&server, &[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["verdict"], "would-deny");
    assert_eq!(rows[0]["verdict_rule"], "unobserved-traffic");
    assert_eq!(rows[0]["policy_revision"], 2);

    drop(agent);
}

/// Two servers on one PostgreSQL: the agent reports to A, and B answers
/// `group members` and `policy check` with what A stored, at once.
#[test]
fn every_server_on_a_shared_datastore_answers_with_the_same_members() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs Docker containers: run it as root (scripts/test.sh does)"
    );
    ensure_runtimes();
    let db = Database::create("hm_groups");
    let url = db.url();
    let a = TestServer::start_with(TD, &["--datastore", &url]);
    let b = TestServer::start_with(TD, &["--datastore", &url]);
    let agent = TestAgent::start_with(&a, "n1", &["--runtime", "docker"]);
    let web_id = a.id("web");
    let run_label = unique_name("groups-ha");
    a.create_entry(
        &web_id,
        &agent.spiffe_id,
        &[
            "docker:label:app:web",
            &format!("docker:label:hm-run:{run_label}"),
        ],
        &[],
    );
    apply(&a, "policy.yaml", &policy(&run_label));
    // B follows the revision A applied.
    wait_until("server B to have the policy", WAIT, || {
        b.cli(&["group", "members", "web", "--json"])
            .success()
            .then_some(())
    });

    let web = DockerContainer::run_detached(
        &unique_name("hm-pol-ha"),
        &[
            "--network",
            "none",
            "-l",
            "app=web",
            "-l",
            &format!("hm-run={run_label}"),
            BUSYBOX_IMAGE,
            "sleep",
            "3600",
        ],
    );
    let joined = time_until(
        "web to be a member on server B",
        Duration::from_secs(5),
        || members(&b, "web").contains(&web.id),
    );
    println!("on the other server, a started container was a member after {joined:?}");
    assert!(joined < Duration::from_secs(1), "joined after {joined:?}");
    wait_until("web to carry its SPIFFE ID on B", WAIT, || {
        let v = b.json(&["group", "members", "web"]);
        (v[0]["spiffe_ids"][0] == web_id.as_str()).then_some(())
    });
    let on_a = check(&a, &web_id, &web.id, "80", &[]);
    let on_b = check(&b, &web_id, &web.id, "80", &[]);
    assert_eq!(
        on_a["from"]["groups"], on_b["from"]["groups"],
        "{on_a}\n{on_b}"
    );
    assert_eq!(on_b["from"]["groups"], serde_json::json!(["any", "web"]));
    assert_eq!(on_a["verdict"], on_b["verdict"]);

    docker(&["stop", "-t", "0", &web.name]).ok();
    let left = time_until("web to leave on server B", Duration::from_secs(5), || {
        !members(&b, "web").contains(&web.id)
    });
    println!("on the other server, a stopped container left after {left:?}");
    assert!(left < Duration::from_secs(1), "left after {left:?}");
    drop(agent);
}
