//! The console in a real headless Chromium, against a real server whose
//! flows were captured by a real agent (eBPF) between real Docker
//! containers:
//!
//! - without a token the API answers 401 and the page shows the login
//!   form; the printed kind of login URL logs in and leaves the address
//!   bar without the token; the session cookie is HttpOnly and
//!   SameSite=Strict;
//! - the map shows the containers' identities and the edges between them,
//!   coloured by verdict; search and the verdict filter narrow it;
//!   clicking an edge lists its flows;
//! - a dry-run of a candidate that denies one edge turns exactly that edge
//!   red;
//! - the other pages render what the CLI shows;
//! - a cross-site POST is refused and changes nothing;
//! - no JavaScript error or CSP violation is logged at any point.
//!
//! Screenshots are saved under `target/console-screenshots/`.
//!
//! A second test loads a map of 2,000 identities and 10,000 edges and
//! reports how long it takes to become interactive.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::containers::*;
use common::flows::*;
use common::*;
use serde_json::Value;

const TD: &str = "console.test";

/// Chromium from the setup script (as the PostgreSQL tests do theirs).
fn ensure_chromium() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let script = repo_root().join("scripts/setup.d/50-chromium.sh");
        let out = run(
            std::process::Command::new("bash").arg(&script),
            Duration::from_secs(600),
        );
        assert!(out.success(), "{} failed:\n{out}", script.display());
    });
}

fn screenshots() -> PathBuf {
    repo_root().join("target/console-screenshots")
}

fn shot(b: &mut Browser, name: &str) {
    let path = screenshots().join(format!("{name}.png"));
    b.screenshot(&path).unwrap();
}

/// The console's address, from `<data-dir>/console.addr`.
fn console_url(server: &TestServer) -> String {
    let addr = wait_until("the console to listen", WAIT, || {
        std::fs::read_to_string(server.data_dir.join("console.addr")).ok()
    });
    format!("http://{}/", addr.trim())
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Asserts that the page logged no error since the first `skip` errors.
#[track_caller]
fn no_errors_after(b: &Browser, skip: usize, when: &str) {
    let errors: Vec<String> = b.errors().into_iter().skip(skip).collect();
    assert!(
        errors.is_empty(),
        "JavaScript errors {when}:\n{}\n--- console ---\n{}",
        errors.join("\n"),
        b.console().join("\n")
    );
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Asserts that the page logged no error so far.
#[track_caller]
fn no_errors(b: &Browser, when: &str) {
    no_errors_after(b, 0, when);
}

/// The map's edges as `[source, target, colour as drawn, verdict, changed]`.
fn map_edges(b: &mut Browser) -> Vec<Value> {
    b.eval(
        "window.hallmark.cy.edges().map(e => [e.data('source'), e.data('target'), '#' + e.pstyle('line-color').value.map(x => x.toString(16).padStart(2, '0')).join(''), e.data('verdict'), e.hasClass('changed')])",
    )
    .unwrap()
    .as_array()
    .cloned()
    .unwrap_or_default()
}

fn policy(extra: &str) -> String {
    format!(
        "groups:
  web:
    - selector: docker:label:app:web
  db:
    - selector: docker:label:app:db
  cache:
    - selector: docker:label:app:cache
  other:
    - selector: docker:label:app:other
rules:
{extra}  - name: web-to-db
    from: [web]
    to: [db]
    protocol: tcp
    ports: [\"5432\"]
    action: allow
  - name: web-to-cache
    from: [web]
    to: [cache]
    protocol: tcp
    ports: [\"6379\"]
    action: allow
  - name: others-to-db
    from: [other]
    to: [db]
    protocol: tcp
    ports: [\"5432\"]
    action: deny
    mode: watch
default: allow
"
    )
}

/// The candidate of the dry-run: web may no longer reach the cache.
const DENY_CACHE: &str = "  - name: no-cache
    from: [web]
    to: [cache]
    protocol: tcp
    action: deny
    priority: 10
";

#[test]
fn the_console_shows_the_map_flows_and_policy_in_a_real_browser() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test captures flows with eBPF and runs containers: run it as root"
    );
    ensure_chromium();
    ensure_runtimes();
    let health = free_port();
    let server = TestServer::start_with(
        TD,
        &[
            "--console-listen",
            &free_port(),
            "--health-listen",
            &health,
            "--ownership-heartbeat",
            "1s",
            "--attribution-holdback",
            "5s",
        ],
    );
    let node = format!("console-{}", std::process::id());
    let agent = TestAgent::start_with(
        &server,
        &node,
        &[
            "--runtime",
            "docker",
            "--flows",
            "on",
            "--enforcement",
            "off",
            "--ownership-heartbeat",
            "1s",
            "--flow-report-interval",
            "2s",
        ],
    );
    let run_label = unique_name("run");
    let mut ids = std::collections::BTreeMap::new();
    for app in ["web", "db", "cache", "other"] {
        let id = server.id(app);
        server.create_entry(
            &id,
            &agent.spiffe_id,
            &[
                &format!("docker:label:app:{app}"),
                &format!("docker:label:hm-run:{run_label}"),
            ],
            &[],
        );
        ids.insert(app, id);
    }
    let file = server.dir.path().join("policy.yaml");
    std::fs::write(&file, policy("")).unwrap();
    server
        .cli(&["policy", "apply", "-f", file.to_str().unwrap()])
        .ok();

    let (subnet, prefix) = subnet(170);
    let net = Network::create(&subnet);
    let run_tag = format!("hm-run={run_label}");
    let start = |name: &str, ip: &str, app: &str, cmd: &str| {
        net.busybox(name, ip, &[&format!("app={app}"), &run_tag], cmd)
    };
    let (ip_db, ip_cache) = (format!("{prefix}.20"), format!("{prefix}.30"));
    let web = start("hm-con-web", &format!("{prefix}.10"), "web", "sleep 3600");
    let _db = start(
        "hm-con-db",
        &ip_db,
        "db",
        "nc -ll -p 5432 -e /busybox cat & sleep 3600",
    );
    let _cache = start(
        "hm-con-cache",
        &ip_cache,
        "cache",
        "nc -ll -p 6379 -e /busybox cat & sleep 3600",
    );
    let other = start(
        "hm-con-other",
        &format!("{prefix}.40"),
        "other",
        "sleep 3600",
    );
    let connect = |c: &DockerContainer, to: &str| {
        docker(&[
            "exec",
            &c.name,
            "/busybox",
            "sh",
            "-c",
            &format!("echo hi | nc -w 2 {to}"),
        ])
    };
    // Each container's identity must be known to the agent before its
    // flows are attributed to it: retry until the graph has all three.
    let (web_id, db_id, cache_id, other_id) =
        (&ids["web"], &ids["db"], &ids["cache"], &ids["other"]);
    let edge = |g: &Value, s: &str, d: &str| {
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["src"] == s && e["dst"] == d)
    };
    wait_until(
        "three attributed edges in the graph",
        Duration::from_secs(90),
        || {
            let _ = connect(&web, &format!("{ip_db} 5432"));
            let _ = connect(&web, &format!("{ip_cache} 6379"));
            let _ = connect(&other, &format!("{ip_db} 5432"));
            std::thread::sleep(Duration::from_secs(2));
            let g = server.json(&["flows", "graph", "--since", "1h"]);
            (edge(&g, web_id, db_id) && edge(&g, web_id, cache_id) && edge(&g, other_id, db_id))
                .then_some(())
        },
    );

    let url = console_url(&server);
    let mut b = Browser::launch().unwrap();

    // Without a token: 401 from the API, the login form on the page.
    b.goto(&url).unwrap();
    b.wait_for(
        "the login form",
        "!document.getElementById('login').hidden && document.getElementById('nav').hidden",
        WAIT,
    )
    .unwrap();
    no_errors(&b, "showing the login form");
    let status = b
        .eval("fetch('/api/v1/graph').then(r => r.status)")
        .unwrap();
    assert_eq!(status, 401);
    shot(&mut b, "01-login");
    // A wrong token is refused with a reason.
    b.eval("document.getElementById('login-token').value = 'hmc1.1.00.00'; document.getElementById('login-form').requestSubmit(); true")
        .unwrap();
    let why = b
        .wait_for(
            "the refusal",
            "document.getElementById('login-error').textContent",
            WAIT,
        )
        .unwrap();
    assert!(why.as_str().unwrap().contains("refused"), "{why}");
    // Those two 401s are the browser's errors so far; none may follow.
    let expected_errors = b.errors().len();

    // The login URL (a minted token here; `hallmark up` prints its own).
    let token = server.cli(&["console", "token", "--ttl", "1h"]).ok();
    let token = token.stdout.trim().to_string();
    b.goto(&format!("{url}login?token={token}")).unwrap();
    let here = b.url().unwrap();
    assert_eq!(here, url, "the token left the address bar");
    let cookies = b.cookies().unwrap();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "hallmark_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert_eq!(
        b.eval("document.cookie").unwrap(),
        "",
        "scripts cannot read the session"
    );

    // The map: the four identities and three edges, coloured by verdict.
    b.wait_for(
        "the map to draw",
        "window.hallmark && window.hallmark.ready && window.hallmark.cy.nodes().length >= 4",
        WAIT,
    )
    .unwrap();
    no_errors_after(&b, expected_errors, "loading the map");
    shot(&mut b, "02-map");
    let nodes = b
        .eval("window.hallmark.cy.nodes().map(n => n.id())")
        .unwrap();
    for id in [web_id, db_id, cache_id, other_id] {
        assert!(
            nodes.as_array().unwrap().iter().any(|n| n == id.as_str()),
            "{id} on the map: {nodes}"
        );
    }
    let edges = map_edges(&mut b);
    let find = |edges: &[Value], s: &str, d: &str| -> Value {
        edges
            .iter()
            .find(|e| e[0] == s && e[1] == d)
            .cloned()
            .unwrap_or_else(|| panic!("no edge {s} → {d} on the map: {edges:?}"))
    };
    assert_eq!(find(&edges, web_id, db_id)[3], "allowed");
    assert_eq!(find(&edges, web_id, cache_id)[3], "allowed");
    let watched = find(&edges, other_id, db_id);
    assert_eq!(watched[3], "would-deny", "{watched}");
    assert_eq!(watched[2], "#dd6b20", "would-deny is orange: {watched}");
    assert!(
        b.eval("document.getElementById('map-summary').textContent")
            .unwrap()
            .as_str()
            .unwrap()
            .contains("unattributed"),
        "the unattributed share is shown"
    );

    // Search narrows the map to the cache's edges.
    b.eval("{ const s = document.getElementById('map-search'); s.value = '/cache'; s.dispatchEvent(new Event('input')); true }")
        .unwrap();
    let narrowed = map_edges(&mut b);
    assert!(
        narrowed
            .iter()
            .all(|e| e[0] == cache_id.as_str() || e[1] == cache_id.as_str())
            && !narrowed.is_empty(),
        "{narrowed:?}"
    );
    b.eval("{ const s = document.getElementById('map-search'); s.value = ''; s.dispatchEvent(new Event('input')); const v = document.getElementById('map-verdict'); v.value = 'would-deny'; v.dispatchEvent(new Event('change')); true }")
        .unwrap();
    let narrowed = map_edges(&mut b);
    assert!(
        narrowed.iter().all(|e| e[3] == "would-deny") && narrowed.len() == 1,
        "{narrowed:?}"
    );
    shot(&mut b, "03-map-would-deny");
    b.eval("{ const v = document.getElementById('map-verdict'); v.value = ''; v.dispatchEvent(new Event('change')); true }")
        .unwrap();

    // Grouped by policy group: the groups' edges.
    b.eval("{ const by = document.getElementById('map-by'); by.value = 'group'; by.dispatchEvent(new Event('change')); true }")
        .unwrap();
    b.wait_for(
        "the map by policy group",
        "window.hallmark.ready && window.hallmark.cy.getElementById('group:web').length === 1",
        WAIT,
    )
    .unwrap();
    let grouped = map_edges(&mut b);
    assert_eq!(
        find(&grouped, "group:web", "group:db")[3],
        "allowed",
        "{grouped:?}"
    );
    assert_eq!(
        find(&grouped, "group:other", "group:db")[3],
        "would-deny",
        "{grouped:?}"
    );
    shot(&mut b, "03-map-by-group");
    b.eval("{ const by = document.getElementById('map-by'); by.value = 'spiffe-id'; by.dispatchEvent(new Event('change')); true }")
        .unwrap();
    b.wait_for(
        "the map by SPIFFE ID again",
        &format!(
            "window.hallmark.ready && window.hallmark.cy.getElementById({}).length === 1",
            js_str(web_id)
        ),
        WAIT,
    )
    .unwrap();

    // Clicking the web → db edge lists its flows.
    b.eval(&format!(
        "{{ const e = window.hallmark.cy.edges().filter(e => e.data('source') === {} && e.data('target') === {}); e.emit('tap'); e.length }}",
        js_str(web_id),
        js_str(db_id)
    ))
    .unwrap();
    let rows = b
        .wait_for(
            "the edge's flows",
            "document.querySelectorAll('#map-detail table tbody tr').length",
            WAIT,
        )
        .unwrap();
    assert!(rows.as_u64().unwrap() >= 1, "{rows}");
    let detail = b
        .eval("document.getElementById('map-detail').textContent")
        .unwrap();
    let detail = detail.as_str().unwrap();
    assert!(detail.contains("tcp/5432"), "{detail}");
    assert!(
        !detail.contains("tcp/6379"),
        "only the edge's flows: {detail}"
    );
    shot(&mut b, "04-edge-flows");

    // A node's panel: its workload, entry and groups.
    b.eval(&format!(
        "window.hallmark.cy.getElementById({}).emit('tap'); true",
        js_str(db_id)
    ))
    .unwrap();
    b.wait_for(
        "the node's groups",
        "document.getElementById('map-detail').textContent.includes('Groups')",
        WAIT,
    )
    .unwrap();
    let detail = b
        .eval("document.getElementById('map-detail').textContent")
        .unwrap();
    assert!(detail.as_str().unwrap().contains("db"), "{detail}");
    no_errors_after(&b, expected_errors, "clicking the map");

    // Dry-run: a candidate that denies web → cache turns exactly that edge
    // red.
    b.eval("location.hash = '#/policy'; true").unwrap();
    b.wait_for(
        "the policy page",
        "document.querySelectorAll('#groups-table tbody tr').length >= 4",
        WAIT,
    )
    .unwrap();
    let rules = b
        .wait_for(
            "the rules with their verdict counts",
            "document.querySelectorAll('#rules-table tbody tr').length >= 4 && document.getElementById('rules-table').textContent",
            WAIT,
        )
        .unwrap();
    let rules = rules.as_str().unwrap();
    for name in ["web-to-db", "web-to-cache", "others-to-db", "(default)"] {
        assert!(rules.contains(name), "{name} in {rules}");
    }
    shot(&mut b, "05-policy");
    b.eval(&format!(
        "document.getElementById('candidate').value = {}; document.getElementById('dry-run').click(); true",
        js_str(&policy(DENY_CACHE))
    ))
    .unwrap();
    b.wait_for(
        "the dry-run on the map",
        "location.hash === '#/map' && window.hallmark.state.dryRun && window.hallmark.ready && window.hallmark.cy.edges('.changed').length > 0",
        WAIT,
    )
    .unwrap();
    let edges = map_edges(&mut b);
    let changed: Vec<&Value> = edges.iter().filter(|e| e[4] == true).collect();
    assert_eq!(changed.len(), 1, "one edge changes: {edges:?}");
    assert_eq!(changed[0][0], web_id.as_str(), "{edges:?}");
    assert_eq!(changed[0][1], cache_id.as_str(), "{edges:?}");
    assert_eq!(
        changed[0][2], "#c53030",
        "the changed edge is red: {edges:?}"
    );
    assert_eq!(find(&edges, web_id, db_id)[2], "#2f855a", "{edges:?}");
    assert_eq!(find(&edges, other_id, db_id)[2], "#dd6b20", "{edges:?}");
    shot(&mut b, "06-dry-run");
    let revisions_before = server.json(&["policy", "history"]);

    // The other pages.
    b.eval("location.hash = '#/flows'; true").unwrap();
    b.wait_for(
        "the flows table",
        "document.querySelectorAll('#flows-table tbody tr').length >= 3",
        WAIT,
    )
    .unwrap();
    shot(&mut b, "07-flows");
    b.eval("location.hash = '#/workloads'; true").unwrap();
    let wl = b
        .wait_for(
            "the workloads",
            "document.querySelectorAll('#workloads-table tbody tr').length >= 4 && document.getElementById('workloads-table').textContent",
            WAIT,
        )
        .unwrap();
    assert!(wl.as_str().unwrap().contains(web_id), "{wl}");
    let agents = b
        .eval("document.getElementById('agents-table').textContent")
        .unwrap();
    assert!(agents.as_str().unwrap().contains(&node), "{agents}");
    shot(&mut b, "08-workloads");
    b.eval("location.hash = '#/identities'; true").unwrap();
    let ident = b
        .wait_for(
            "the identities",
            "document.querySelectorAll('#authorities-table tbody tr').length >= 1 && document.getElementById('page-identities').textContent",
            WAIT,
        )
        .unwrap();
    let ident = ident.as_str().unwrap();
    assert!(
        ident.contains(cache_id) && ident.contains("active"),
        "{ident}"
    );
    shot(&mut b, "09-identities");
    no_errors_after(&b, expected_errors, "visiting every page");

    // A write without the CSRF token is refused, with it accepted; a
    // cross-site form post is refused and changes nothing.
    let no_csrf = b
        .eval("fetch('/api/v1/policy', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({document: 'rules: []\\n'})}).then(r => r.status)")
        .unwrap();
    assert_eq!(no_csrf, 403);
    let evil = b
        .eval(&format!(
            "new Promise(done => {{ const w = document.createElement('iframe'); w.srcdoc = '<form method=post action={url}api/v1/policy enctype=text/plain><input name=x value=y></form><script>document.forms[0].submit()</scr' + 'ipt>'; document.body.append(w); setTimeout(() => done(true), 1500); }})"
        ))
        .unwrap();
    assert_eq!(evil, true);
    let direct = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "Origin: http://evil.example",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-d",
            "{\"document\": \"rules: []\"}",
            &format!("{url}api/v1/policy"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "403");
    // A login link followed from another site makes no session.
    let followed = std::process::Command::new("curl")
        .args([
            "-s",
            "-i",
            "-H",
            "Sec-Fetch-Site: cross-site",
            &format!("{url}login?token={token}"),
        ])
        .output()
        .unwrap();
    let followed = String::from_utf8_lossy(&followed.stdout);
    assert!(
        followed.starts_with("HTTP/1.1 403")
            && !followed.to_ascii_lowercase().contains("set-cookie"),
        "{followed}"
    );
    assert_eq!(
        server.json(&["policy", "history"]),
        revisions_before,
        "no write got through"
    );
    // Logins and refusals are counted.
    let metrics = std::process::Command::new("curl")
        .args(["-s", &format!("http://{health}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for line in [
        "hallmark_server_console_logins_total{result=\"ok\"}",
        "hallmark_server_console_logins_total{result=\"refused\"}",
        "hallmark_server_console_refused_total{reason=\"cross-site\"}",
        "hallmark_server_console_refused_total{reason=\"csrf\"}",
        "hallmark_server_console_refused_total{reason=\"unauthenticated\"}",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    drop(b);
    drop(agent);
}

/// A graph of 2,000 identities and 10,000 edges, written straight into a
/// server's datastore (one flow per edge), loaded by the console.
#[test]
fn a_map_of_2000_identities_and_10000_edges_becomes_interactive() {
    use hallmark_flows::{
        Endpoint, Flow, Initiator, Protocol, Reporter, StoredFlow, TcpOutcome, WorkloadEndpoint,
    };
    use hallmark_store::{FlowWrite, SqliteStore};
    ensure_chromium();
    const IDENTITIES: u64 = 2_000;
    const EDGES: u64 = 10_000;
    let dir = short_tempdir();
    let data_dir = dir.path().join("server");
    std::fs::create_dir_all(&data_dir).unwrap();
    let now = now_ms();
    let endpoint = |i: u64| {
        Endpoint::Workload(WorkloadEndpoint {
            context: "big".into(),
            node: format!("node-{}", i % 20),
            container_id: format!("{i:064x}"),
            name: format!("svc-{i}"),
            image: "registry.example/svc:1".into(),
            namespace: format!("ns-{}", i % 40),
            pod: String::new(),
            compose_project: String::new(),
            compose_service: String::new(),
            labels: Default::default(),
            spiffe_ids: vec![format!("spiffe://{TD}/ns/ns-{}/sa/svc-{i}", i % 40)],
            selectors: vec![],
        })
    };
    let flows: Vec<StoredFlow> = (0..EDGES)
        .map(|k| {
            let a = k % IDENTITIES;
            let b = (a + 1 + (k / IDENTITIES) * 37 + k % 7) % IDENTITIES;
            let start = now - 3_600_000 + (k as i64 * 300);
            let f = Flow {
                start_ms: start,
                end_ms: start + 10,
                protocol: Protocol::Tcp,
                src: format!("10.9.{}.{}:40000", a / 250, a % 250 + 1)
                    .parse()
                    .unwrap(),
                dst: format!("10.9.{}.{}:8080", b / 250, b % 250 + 1)
                    .parse()
                    .unwrap(),
                initiator: Initiator::Source,
                bytes_sent: 100,
                packets_sent: 2,
                bytes_received: 100,
                packets_received: 2,
                outcome: Some(TcpOutcome::Established),
                retransmits: 0,
                rtt_us: None,
                reporter: Reporter::File("big.jsonl".into()),
                local: None,
                enforced: None,
            };
            StoredFlow::new(f, endpoint(a), endpoint(b), start + 1_000)
        })
        .collect();
    let db = data_dir.join("datastore.sqlite3");
    block_on(async move {
        let store = SqliteStore::open(&db).await.unwrap();
        use hallmark_store::FlowStore;
        store
            .write_flows(&FlowWrite {
                server_id: "seed".into(),
                now_ms: now,
                flows,
                ..FlowWrite::default()
            })
            .await
            .unwrap();
        store.close().await;
    });
    let mut cmd = hallmark_cmd(&["server", "run", "--data-dir"]);
    cmd.arg(&data_dir).args([
        "--trust-domain",
        TD,
        "--listen",
        "127.0.0.1:0",
        "--console-listen",
        "127.0.0.1:0",
        "--admin-socket",
    ]);
    let admin = dir.path().join("admin.sock");
    cmd.arg(&admin);
    let _daemon = Daemon::spawn("server", cmd, &dir.path().join("server.log"), None);
    let addr = wait_until("the console to listen", WAIT, || {
        std::fs::read_to_string(data_dir.join("console.addr")).ok()
    });
    let url = format!("http://{}/", addr.trim());
    let token = wait_until("a console token", WAIT, || {
        let mut c = hallmark_cmd(&["console", "token", "--admin-socket"]);
        c.arg(&admin);
        let out = run(&mut c, CLI_TIMEOUT);
        out.success().then(|| out.stdout.trim().to_string())
    });
    let mut b = Browser::launch().unwrap();
    b.goto(&format!("{url}login?token={token}")).unwrap();
    // Three loads each way, alternating: the map as the console draws it
    // (edges on the underlay) and, as the baseline, every edge a
    // graph-library element. The figure is the page's own clock at the
    // first frame painted with the whole map.
    let mut painted = Vec::new();
    let mut baseline = Vec::new();
    for round in 0..3 {
        for (way, suffix, into) in [
            ("lines", "", &mut painted),
            ("elements", "?render=elements", &mut baseline),
        ] {
            // A query of its own: a full load, not a move within the page.
            b.goto(&format!("{url}?round={round}-{way}#/map{suffix}"))
                .unwrap();
            let at = b
                .wait_for(
                    "the big map to be painted",
                    "window.hallmark && window.hallmark.paintedMs",
                    Duration::from_secs(120),
                )
                .unwrap()
                .as_f64()
                .unwrap();
            let nodes = b.eval("window.hallmark.cy.nodes().length").unwrap();
            assert_eq!(nodes.as_u64().unwrap(), IDENTITIES, "every identity drawn");
            into.push(at);
        }
    }
    // The console's way once more, then what is on it and how it answers.
    b.goto(&format!("{url}?round=last#/map")).unwrap();
    b.wait_for(
        "the big map to be painted",
        "window.hallmark && window.hallmark.paintedMs",
        Duration::from_secs(120),
    )
    .unwrap();
    let edges = b
        .eval("window.hallmark.underlayDrawn")
        .unwrap()
        .as_u64()
        .unwrap();
    assert_eq!(edges, EDGES, "every edge drawn");
    // A tapped identity's edges come forward, clickable.
    let focused = b
        .eval("{ const n = window.hallmark.cy.nodes()[0]; n.emit('tap'); [window.hallmark.cy.edges('.focus').length, n.connectedEdges().length] }")
        .unwrap();
    assert!(focused[0].as_u64().unwrap() > 0, "{focused}");
    assert_eq!(focused[0], focused[1], "{focused}");
    // Interactive: a zoom and the frame after it.
    let t = Instant::now();
    b.eval("new Promise(done => { window.hallmark.cy.zoom({level: 2, renderedPosition: {x: 300, y: 300}}); requestAnimationFrame(() => requestAnimationFrame(() => done(true))); })")
        .unwrap();
    let zoom = t.elapsed();
    let parts = b
        .eval("[window.hallmark.startedMs, window.hallmark.apiMs, window.hallmark.cyMs, window.hallmark.paintedMs]")
        .unwrap();
    shot(&mut b, "10-big-map");
    no_errors(&b, "drawing the big map");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ours, theirs) = (median(&mut painted), median(&mut baseline));
    eprintln!(
        "console map of {IDENTITIES} identities / {EDGES} edges, navigation to first paint (median of 3): {ours:.0} ms {painted:?}; baseline, every edge an element: {theirs:.0} ms {baseline:?}; last load [asked at, API, graph library, painted] {parts} ms; a zoom and its frame {:.0} ms",
        zoom.as_secs_f64() * 1000.0
    );
    // The bound the issue sets is for a quiet machine (docs/PERFORMANCE.md);
    // here only a draw gone quadratic fails.
    assert!(ours < 30_000.0, "{ours} ms");
}

/// `curl` against the console over HTTPS: the status code and the body.
fn curl_tls(url: &str, ca: &std::path::Path, extra: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

#[test]
fn remote_access_needs_tls_and_lets_in_admin_svids_and_tokens() {
    // Not on loopback without TLS: the server refuses to start and says why.
    let dir = short_tempdir();
    let mut cmd = hallmark_cmd(&["server", "run", "--data-dir"]);
    cmd.arg(dir.path().join("server")).args([
        "--trust-domain",
        TD,
        "--listen",
        "127.0.0.1:0",
        "--console-listen",
        "0.0.0.0:0",
        "--admin-socket",
    ]);
    cmd.arg(dir.path().join("admin.sock"));
    let out = run(&mut cmd, Duration::from_secs(60));
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("not a loopback address") && out.stderr.contains("--console-tls-cert"),
        "{out}"
    );

    // With TLS: a certificate for 127.0.0.1 made here.
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let (cert, key) = (tls.join("console.pem"), tls.join("console.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = TestServer::start_with(
        TD,
        &[
            "--console-listen",
            &free_port(),
            "--console-tls-cert",
            cert.to_str().unwrap(),
            "--console-tls-key",
            key.to_str().unwrap(),
        ],
    );
    let addr = wait_until("the console to listen", WAIT, || {
        std::fs::read_to_string(server.data_dir.join("console.addr")).ok()
    });
    let base = format!("https://{}/api/v1/", addr.trim());
    let session = format!("{base}session");
    // Nobody: not logged in; plain HTTP is not spoken.
    let (code, body) = curl_tls(&format!("{base}status"), &cert, &[]);
    assert_eq!(code, "401", "{body}");
    // A token.
    let token = server
        .cli(&["console", "token"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let (code, body) = curl_tls(&format!("{base}status"), &cert, &["-H", &bearer]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains(TD), "{body}");
    // A session cookie over TLS is Secure.
    let (code, body) = curl_tls(
        &session,
        &cert,
        &[
            "-i",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!("{{\"token\": \"{token}\"}}"),
        ],
    );
    assert_eq!(code, "200", "{body}");
    let cookie = body
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Secure"),
        "{cookie}"
    );

    // An admin SVID as client certificate, no token.
    let agent = TestAgent::start(&server, "console-tls");
    let ops = server.id("/ops");
    let entry = server.create_entry(&ops, &agent.spiffe_id, &["unix:uid:0"], &["--admin"]);
    agent.wait_for_ids(&[&ops], WAIT);
    let creds = agent.dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    agent
        .cli(&["svid", "fetch", "--out", creds.to_str().unwrap()])
        .ok();
    let svid = creds.join("svid.pem");
    let svid_key = creds.join("svid.key");
    let with_svid = [
        "--cert",
        svid.to_str().unwrap(),
        "--key",
        svid_key.to_str().unwrap(),
    ];
    let (code, body) = curl_tls(&session, &cert, &with_svid);
    assert_eq!(code, "200", "{body}");
    let who: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(who["via"], "client-certificate", "{who}");
    assert_eq!(who["spiffe_id"], ops.as_str(), "{who}");
    let (code, body) = curl_tls(&format!("{base}entries"), &cert, &with_svid);
    assert_eq!(code, "200", "{body}");
    // The admin mark is checked on every call: without it the same
    // certificate is refused.
    server.delete_entry(&entry_id(&entry));
    let (code, body) = curl_tls(&format!("{base}entries"), &cert, &with_svid);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("not an admin identity"), "{body}");
}

#[test]
fn hallmark_up_prints_a_url_that_logs_in_once_and_leaves_the_address_bar() {
    ensure_chromium();
    let up = TestUp::start();
    let line = wait_until("the banner's console line", WAIT, || {
        up.printed()
            .lines()
            .find(|l| l.starts_with("  console "))
            .map(str::to_string)
    });
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line}"))
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/login?token="),
        "{line}"
    );
    let root = url.split("login?").next().unwrap().to_string();
    let mut b = Browser::launch().unwrap();
    b.goto(&url).unwrap();
    assert_eq!(b.url().unwrap(), root, "the token left the address bar");
    b.wait_for(
        "the map after login",
        "window.hallmark && window.hallmark.ready",
        WAIT,
    )
    .unwrap();
    let who = b
        .eval("fetch('/api/v1/session').then(r => r.json())")
        .unwrap();
    assert_eq!(who["authenticated"], true, "{who}");
    assert_eq!(who["via"], "session", "{who}");
    no_errors(&b, "logging in with the printed URL");
    // The browser's history holds no entry with the token.
    let history = b
        .call("Page.getNavigationHistory", serde_json::json!({}))
        .unwrap();
    let urls: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["url"].as_str())
        .collect();
    assert!(
        urls.iter().all(|u| !u.contains("token=")),
        "history: {urls:?}"
    );
}
