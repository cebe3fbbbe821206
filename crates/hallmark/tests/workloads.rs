//! `hallmark workloads list|show` and the inventory columns of `hallmark
//! agent list`: the real binary against a server whose datastore holds an
//! inventory.
//!
//! The server runs in this process on a datastore the test also holds, and
//! the inventory is written through `Store::apply_inventory`, the call the
//! node API makes for an agent's report (the node API itself, with mTLS and
//! validation, is covered by hallmark-server's tests). That keeps the
//! records, ages and retention exact, so the CLI's output can be checked
//! word for word.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{hallmark_cmd, run, short_tempdir, Output, CLI_TIMEOUT};
use hallmark_core::{
    Compose, Confidence, PodInfo, RuntimeSource, SpiffeId, TrustDomain, Workload, WorkloadState,
};
use hallmark_server::{ServerConfig, ServerHandle};
use hallmark_store::prelude::*;
use hallmark_store::{
    AgentRecord, InventoryReport, RuntimeStatus, SnapshotPage, SqliteStore, WorkloadEvent,
    WorkloadEventKind,
};
use serde_json::Value;
use tempfile::TempDir;

const TD: &str = "cli.test";

fn id(n: char, fill: char) -> String {
    format!("{}{}", n.to_string().repeat(4), fill.to_string().repeat(60))
}

struct Fixture {
    server: Option<ServerHandle>,
    socket: PathBuf,
    web: String,
    pay: String,
    job: String,
    old: String,
    _dir: TempDir,
}

impl Fixture {
    /// Runs `hallmark ARGS` against this server's admin socket, off the
    /// async workers so the in-process server keeps answering.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = hallmark_cmd(args);
        cmd.env("HALLMARK_ADMIN_SOCKET", &self.socket);
        tokio::task::spawn_blocking(move || run(&mut cmd, CLI_TIMEOUT))
            .await
            .unwrap()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.cli(&all).await.ok().json()
    }

    /// The container IDs `workloads list --json FILTERS` prints, sorted.
    async fn listed(&self, filters: &[&str]) -> Vec<String> {
        let mut args = vec!["workloads", "list"];
        args.extend_from_slice(filters);
        let v = self.json(&args).await;
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|w| w["container_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn record(id: &str, name: &str, image: &str, source: RuntimeSource) -> Workload {
    let mut w = Workload::partial(id, source, "");
    w.confidence = Confidence::Full;
    w.name = name.into();
    w.image = image.into();
    w.state = WorkloadState::Running;
    w
}

/// Two agents' inventories: n1 (context prod, Docker) lists a Compose web
/// container and a pod; n2 (context lab, no runtime) reported a job that
/// started and one that stopped three minutes ago.
async fn fixture() -> Fixture {
    let dir = short_tempdir();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("datastore.sqlite3"))
            .await
            .unwrap(),
    );
    let socket = dir.path().join("admin.sock");
    let server = hallmark_server::start_with_store(
        ServerConfig {
            admin_socket: socket.clone(),
            ..ServerConfig::new(TrustDomain::new(TD).unwrap(), dir.path().to_path_buf())
        },
        store.clone(),
    )
    .await
    .unwrap();

    let now = now_ms();
    let agent =
        |node: &str| SpiffeId::new(&format!("spiffe://{TD}/hallmark/agent/{node}")).unwrap();
    for node in ["n1", "n2"] {
        store
            .upsert_agent(&AgentRecord {
                spiffe_id: agent(node),
                serial: "01".into(),
                expires_at: now / 1000 + 3600,
                attested_at: now / 1000,
                last_seen: now / 1000,
                banned: false,
            })
            .await
            .unwrap();
    }

    let (web_id, pay_id, job_id, old_id) = (id('a', '1'), id('a', '2'), id('b', '3'), id('c', '4'));
    let mut web = record(&web_id, "web-1", "shop/web:1.2", RuntimeSource::Docker);
    web.labels.insert("app".into(), "web".into());
    web.compose = Some(Compose {
        project: "shop".into(),
        service: "web".into(),
        oneoff: false,
    });
    web.started_at_ms = now - 5 * 60_000 - 5_000;
    web.pid = Some(4242);
    web.cgroup = format!("/docker/{web_id}");
    web.network_mode = "bridge".into();
    web.ips = vec!["172.17.0.5".into()];
    web.image_id = format!("sha256:{}", "e".repeat(64));
    let mut pay = record(
        &pay_id,
        "pay",
        "docker.io/library/busybox:1",
        RuntimeSource::Cri,
    );
    pay.pod = Some(PodInfo {
        uid: "0f2c5e1a-0000-4000-8000-000000000001".into(),
        name: "pay-0".into(),
        namespace: "payments".into(),
        sandbox_id: "sb1".into(),
        labels: [("team".to_string(), "money".to_string())].into(),
        annotations: [("owner".to_string(), "finance".to_string())].into(),
        ips: vec!["10.88.0.4".into()],
    });
    pay.network_mode = "pod".into();
    let job = record(&job_id, "job", "busybox:1", RuntimeSource::Docker);
    let mut old = record(&old_id, "old", "shop/old:3", RuntimeSource::Docker);
    old.started_at_ms = now - 3_600_000;
    let mut old_stopped = old.clone();
    old_stopped.state = WorkloadState::Stopped;
    old_stopped.exit_code = Some(1);
    old_stopped.finished_at_ms = now - 3 * 60_000 - 5_000;

    store
        .apply_inventory(
            &InventoryReport {
                agent_id: agent("n1"),
                context_name: "prod".into(),
                snapshot: Some(SnapshotPage {
                    snapshot_id: 1,
                    page: 0,
                    last_page: true,
                    workloads: vec![web, pay],
                }),
                events: vec![],
                runtime: Some(RuntimeStatus {
                    runtime: "docker".into(),
                    endpoint: "/var/run/docker.sock".into(),
                    version: "20.10.24".into(),
                    degraded: false,
                    reason: String::new(),
                }),
                dropped_events: 0,
            },
            now - 6 * 60_000,
        )
        .await
        .unwrap();
    store
        .apply_inventory(
            &InventoryReport {
                agent_id: agent("n2"),
                context_name: "lab".into(),
                snapshot: None,
                events: vec![
                    WorkloadEvent {
                        kind: WorkloadEventKind::Started,
                        at_ms: now - 3_600_000,
                        workload: old,
                    },
                    WorkloadEvent {
                        kind: WorkloadEventKind::Started,
                        at_ms: now - 120_000,
                        workload: job,
                    },
                    WorkloadEvent {
                        kind: WorkloadEventKind::Stopped,
                        at_ms: now - 3 * 60_000 - 5_000,
                        workload: old_stopped,
                    },
                ],
                runtime: Some(RuntimeStatus {
                    runtime: "none".into(),
                    endpoint: String::new(),
                    version: String::new(),
                    degraded: true,
                    reason: "no container runtime socket found at /var/run/docker.sock".into(),
                }),
                dropped_events: 0,
            },
            now - 60_000,
        )
        .await
        .unwrap();
    Fixture {
        server: Some(server),
        socket,
        web: web_id,
        pay: pay_id,
        job: job_id,
        old: old_id,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_a_table_and_full_json() {
    let mut f = fixture().await;
    let out = f.cli(&["workloads", "list"]).await.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "CONTEXT",
            "NODE",
            "CONTAINER",
            "NAME",
            "IMAGE",
            "POD",
            "STATE",
            "SINCE"
        ],
        "{out}"
    );
    let row = |id: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.contains(&id[..12]))
            .unwrap_or_else(|| panic!("no row for {id}:\n{out}"));
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        row(&f.web),
        [
            "prod",
            "n1",
            &f.web[..12],
            "web-1",
            "shop/web:1.2",
            "shop/web",
            "running",
            "5m"
        ],
        "{out}"
    );
    assert_eq!(
        row(&f.pay)[..7],
        [
            "prod",
            "n1",
            &f.pay[..12],
            "pay",
            "docker.io/library/busybox:1",
            "payments/pay-0",
            "running"
        ],
        "{out}"
    );
    assert_eq!(
        row(&f.old),
        [
            "lab",
            "n2",
            &f.old[..12],
            "old",
            "shop/old:3",
            "-",
            "stopped",
            "stopped 3m ago"
        ],
        "{out}"
    );
    // Rows come in (context, node, container) order.
    assert!(
        lines[1].starts_with("lab") && lines[4].starts_with("prod"),
        "{out}"
    );

    let v = f.json(&["workloads", "list"]).await;
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 4, "{v}");
    let web = all
        .iter()
        .find(|w| w["container_id"] == f.web.as_str())
        .unwrap();
    assert_eq!(web["context_name"], "prod");
    assert_eq!(web["agent_id"], format!("spiffe://{TD}/hallmark/agent/n1"));
    assert_eq!(web["source"], "docker");
    assert_eq!(web["name"], "web-1");
    assert_eq!(web["labels"]["app"], "web");
    assert_eq!(web["compose"]["project"], "shop");
    assert_eq!(web["compose"]["service"], "web");
    assert_eq!(web["pid"], 4242);
    assert_eq!(web["ips"][0], "172.17.0.5");
    assert_eq!(web["network_mode"], "bridge");
    assert_eq!(web["confidence"], "full");
    assert_eq!(web["state"], "running");
    assert!(web["stopped_at_ms"].is_null(), "{web}");
    assert!(web["first_seen_ms"].as_i64().unwrap() > 0, "{web}");
    let pay = all
        .iter()
        .find(|w| w["container_id"] == f.pay.as_str())
        .unwrap();
    assert_eq!(pay["pod"]["namespace"], "payments");
    assert_eq!(pay["pod"]["labels"]["team"], "money");
    assert_eq!(pay["pod"]["annotations"]["owner"], "finance");
    let old = all
        .iter()
        .find(|w| w["container_id"] == f.old.as_str())
        .unwrap();
    assert_eq!(old["state"], "stopped");
    assert_eq!(old["exit_code"], 1);
    assert!(old["stopped_at_ms"].as_i64().unwrap() > 0, "{old}");

    if let Some(s) = f.server.take() {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_refusals() {
    let mut f = fixture().await;
    let n2 = format!("spiffe://{TD}/hallmark/agent/n2");
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<String>>()
    };
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (vec!["--context", "lab"], sorted(vec![&f.job, &f.old])),
        (vec!["--node", "n1"], sorted(vec![&f.web, &f.pay])),
        (vec!["--node", &n2], sorted(vec![&f.job, &f.old])),
        (vec!["--namespace", "payments"], vec![f.pay.clone()]),
        (vec!["--image", "busybox"], sorted(vec![&f.pay, &f.job])),
        (vec!["--image", "shop/web:1.2"], vec![f.web.clone()]),
        (vec!["--label", "app=web"], vec![f.web.clone()]),
        (vec!["--label", "team"], vec![f.pay.clone()]),
        (vec!["--label", "team", "--label", "app"], vec![]),
        (
            vec!["--state", "current"],
            sorted(vec![&f.web, &f.pay, &f.job]),
        ),
        (vec!["--state", "stopped"], vec![f.old.clone()]),
        (
            vec![
                "--context",
                "prod",
                "--state",
                "running",
                "--image",
                "busybox:1",
            ],
            vec![f.pay.clone()],
        ),
    ];
    for (filters, want) in cases {
        assert_eq!(f.listed(&filters).await, want, "filters {filters:?}");
    }
    let out = f
        .cli(&["workloads", "list", "--context", "nowhere"])
        .await
        .ok();
    assert!(out.stdout.contains("No workloads match."), "{out}");

    for (args, needles) in [
        (
            vec!["workloads", "list", "--state", "gone"],
            vec!["--state", "`gone`", "current, created, running"],
        ),
        (
            vec!["workloads", "list", "--label", "=x"],
            vec!["--label", "`=x`", "empty key"],
        ),
        (
            vec!["workloads", "list", "--context", "a/b"],
            vec!["--context", "1 to 63 characters"],
        ),
        (
            vec!["workloads", "list", "--node", "a/b"],
            vec!["node `a/b`", "InvalidArgument"],
        ),
    ] {
        f.cli(&args).await.fails().stderr_has(&needles);
    }
    if let Some(s) = f.server.take() {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_every_field_and_the_history() {
    let mut f = fixture().await;
    let out = f.cli(&["workloads", "show", &f.web[..12]]).await.ok();
    for needle in [
        format!("Container ID : {}", f.web),
        "Context      : prod".into(),
        format!("Node         : n1 (spiffe://{TD}/hallmark/agent/n1)"),
        "Source       : docker".into(),
        "Name         : web-1".into(),
        "Image        : shop/web:1.2".into(),
        format!("Image ID     : sha256:{}", "e".repeat(64)),
        "State        : running".into(),
        "Confidence   : full".into(),
        "PID          : 4242".into(),
        format!("Cgroup       : /docker/{}", f.web),
        "Network mode : bridge".into(),
        "IPs          : 172.17.0.5".into(),
        "Label        : app=web".into(),
        "Compose      : shop/web".into(),
        "Stopped at   : - (current)".into(),
        "No recorded events".into(),
    ] {
        assert!(out.stdout.contains(&needle), "want `{needle}` in:\n{out}");
    }

    let out = f.cli(&["workloads", "show", &f.pay]).await.ok();
    for needle in [
        "Pod            : payments/pay-0",
        "Pod UID        : 0f2c5e1a-0000-4000-8000-000000000001",
        "Pod sandbox    : sb1",
        "Pod IPs        : 10.88.0.4",
        "Pod label      : team=money",
        "Pod annotation : owner=finance",
        "Network mode   : pod",
    ] {
        assert!(out.stdout.contains(needle), "want `{needle}` in:\n{out}");
    }

    let out = f.cli(&["workloads", "show", &f.old[..8]]).await.ok();
    for needle in [
        "State        : stopped 3m ago, exit code 1",
        "Events (2):",
        "TIME",
        "started  running",
        "stopped  stopped (1)",
    ] {
        assert!(out.stdout.contains(needle), "want `{needle}` in:\n{out}");
    }
    let started = out.stdout.find("started  running").unwrap();
    let stopped = out.stdout.find("stopped  stopped (1)").unwrap();
    assert!(started < stopped, "events oldest first:\n{out}");

    let v = f.json(&["workloads", "show", &f.old[..8]]).await;
    assert_eq!(v["container_id"], f.old.as_str(), "{v}");
    assert_eq!(v["context_name"], "lab");
    assert_eq!(v["state"], "stopped");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{v}");
    assert_eq!(events[0]["kind"], "started");
    assert_eq!(events[1]["kind"], "stopped");
    assert_eq!(events[1]["record"]["exit_code"], 1);
    assert!(events[0]["at_ms"].as_i64().unwrap() < events[1]["at_ms"].as_i64().unwrap());
    assert_eq!(v["also_reported_by"], Value::Array(vec![]));

    f.cli(&["workloads", "show", "aaaa"])
        .await
        .fails()
        .stderr_has(&["ambiguous", &f.web, &f.pay, "InvalidArgument"]);
    f.cli(&["workloads", "show", "dddd"])
        .await
        .fails()
        .stderr_has(&["no workload with container ID dddd", "NotFound"]);
    f.cli(&["workloads", "show", "abc"])
        .await
        .fails()
        .stderr_has(&["at least 4 characters"]);
    if let Some(s) = f.server.take() {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_list_shows_context_runtime_and_degradation() {
    let mut f = fixture().await;
    let out = f.cli(&["agent", "list"]).await.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SPIFFE",
            "ID",
            "CONNECTED",
            "BANNED",
            "CONTEXT",
            "RUNTIME",
            "DEGRADED"
        ],
        "{out}"
    );
    let n1 = lines.iter().find(|l| l.contains("/agent/n1")).unwrap();
    let n2 = lines.iter().find(|l| l.contains("/agent/n2")).unwrap();
    assert!(
        n1.contains("prod") && n1.contains("docker 20.10.24"),
        "{out}"
    );
    assert!(n1.trim_end().ends_with('-'), "n1 is not degraded:\n{out}");
    assert!(
        n2.contains("lab")
            && n2.contains("none")
            && n2.ends_with("no container runtime socket found at /var/run/docker.sock"),
        "{out}"
    );

    let v = f.json(&["agent", "list"]).await;
    let n2 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["spiffe_id"] == format!("spiffe://{TD}/hallmark/agent/n2"))
        .unwrap();
    assert_eq!(n2["context_name"], "lab", "{n2}");
    assert_eq!(n2["runtime"]["runtime"], "none", "{n2}");
    assert_eq!(n2["runtime"]["degraded"], true, "{n2}");
    assert!(n2["runtime"]["reason"]
        .as_str()
        .unwrap()
        .contains("/var/run/docker.sock"));
    if let Some(s) = f.server.take() {
        s.shutdown().await;
    }
}
