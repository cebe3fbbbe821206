//! Container-aware attestation and the workload inventory, end to end, with
//! a real Docker Engine and a real containerd (CRI): entries that name
//! container labels, pods and Compose services; py-spiffe running *inside*
//! the containers; the inventory at the server as an operator sees it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use common::containers::*;
use common::*;
use serde_json::Value;

/// Retention of stopped workloads on the test servers: short, so the test
/// can watch a stopped container being forgotten.
const RETENTION: &str = "4s";

fn server() -> TestServer {
    TestServer::start_with("containers.test", &["--workload-retention", RETENTION])
}

/// An agent following the Docker Engine, in context `ctx`. The resync
/// period is long so that only events can explain what the inventory sees.
fn docker_agent(server: &TestServer, node: &str, ctx: &str) -> TestAgent {
    ensure_runtimes();
    TestAgent::start_with(
        server,
        node,
        &[
            "--runtime",
            "docker",
            "--context",
            ctx,
            "--resync-interval",
            "1h",
        ],
    )
}

/// `hallmark workloads list --json FILTERS...`.
fn workloads(server: &TestServer, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["workloads", "list"];
    args.extend_from_slice(filters);
    match server.json(&args) {
        Value::Array(v) => v,
        other => panic!("workloads list --json printed {other}, not an array"),
    }
}

fn find<'a>(list: &'a [Value], container_id: &str) -> Option<&'a Value> {
    list.iter().find(|w| w["container_id"] == container_id)
}

/// Waits until the server lists `container_id` and `accept` holds for it.
#[track_caller]
fn wait_for_workload(
    server: &TestServer,
    container_id: &str,
    within: Duration,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + within;
    loop {
        let list = workloads(server, &[]);
        if let Some(w) = find(&list, container_id) {
            if accept(w) {
                return w.clone();
            }
            last = w.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for workload {container_id} to be {what}; last record: {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn labels(w: &Value) -> BTreeMap<String, String> {
    w["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs py-spiffe inside a fresh Docker container with `labels`, the agent
/// socket mounted in; returns what it printed and how it ended.
fn py_spiffe_in_docker(agent: &TestAgent, labels: &[&str], check: &[&str]) -> Output {
    let name = unique_name("hm-py");
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--name".into(),
        name,
        "--network".into(),
        "none".into(),
    ];
    for l in labels {
        args.push("-l".into());
        args.push((*l).to_string());
    }
    args.extend(docker_python_flags(&agent.socket));
    args.push("--entrypoint".into());
    args.push(python_in_container());
    args.push(BUSYBOX_IMAGE.into());
    args.push(format!("{INTEROP_IN_CONTAINER}/py_spiffe_check.py"));
    args.extend(check.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&refs)
}

#[test]
fn py_spiffe_inside_docker_gets_the_identity_its_labels_select() {
    let server = server();
    let agent = docker_agent(&server, "docker-node", "lab");
    let web = server.id("/shop/web");
    server.create_entry(
        &web,
        &agent.spiffe_id,
        &["docker:label:app:web", "hallmark:context:lab"],
        &[],
    );
    // An entry for another context must not match here.
    server.create_entry(
        &server.id("/elsewhere"),
        &agent.spiffe_id,
        &["docker:label:app:web", "hallmark:context:other"],
        &[],
    );

    let out = py_spiffe_in_docker(&agent, &["app=web"], &["x509", "--expect-id", &web]);
    assert!(out.success(), "py-spiffe in an app=web container:\n{out}");
    assert!(out.stdout.contains(&web), "{out}");
    assert!(
        !out.stdout.contains("/elsewhere"),
        "the entry of context `other` leaked into context `lab`:\n{out}"
    );

    // A sibling with other labels, same image, same uid: refused.
    let out = py_spiffe_in_docker(&agent, &["app=db"], &["no-identity"]);
    assert!(
        out.success(),
        "py-spiffe in an app=db container must get PermissionDenied:\n{out}"
    );
}

#[test]
fn compose_and_image_selectors_match_inside_docker() {
    let server = server();
    let agent = docker_agent(&server, "compose-node", "lab");
    let api = server.id("/shop/api");
    server.create_entry(
        &api,
        &agent.spiffe_id,
        &[
            "docker:compose-project:shop",
            "docker:compose-service:api",
            &format!("docker:image:{BUSYBOX_IMAGE}"),
        ],
        &[],
    );
    let compose = [
        "com.docker.compose.project=shop",
        "com.docker.compose.service=api",
        "com.docker.compose.oneoff=False",
    ];
    let out = py_spiffe_in_docker(&agent, &compose, &["x509", "--expect-id", &api]);
    assert!(
        out.success(),
        "py-spiffe in compose service shop/api:\n{out}"
    );

    let other = [
        "com.docker.compose.project=shop",
        "com.docker.compose.service=worker",
    ];
    let out = py_spiffe_in_docker(&agent, &other, &["no-identity"]);
    assert!(out.success(), "service shop/worker must be refused:\n{out}");
}

#[test]
fn inventory_follows_docker_containers_from_start_to_forgotten() {
    let server = server();
    let agent = docker_agent(&server, "inv-node", "inv-ctx");
    let name = unique_name("hm-inv");
    let c = DockerContainer::run_detached(
        &name,
        &[
            "--network",
            "none",
            "-l",
            "app=inv",
            "-l",
            "com.docker.compose.project=shop",
            "-l",
            "com.docker.compose.service=cart",
            BUSYBOX_IMAGE,
            "sleep",
            "300",
        ],
    );
    // `docker run -d` returns once the container runs.
    let started = Instant::now();
    let w = wait_for_workload(&server, &c.id, Duration::from_secs(5), "running", |w| {
        w["state"] == "running"
    });
    let seen_after = started.elapsed();
    assert!(
        seen_after < Duration::from_secs(1),
        "the server listed a started container only after {seen_after:?}"
    );
    assert_eq!(w["name"], name.as_str());
    assert_eq!(w["image"], BUSYBOX_IMAGE);
    assert!(
        w["image_id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sha256:"),
        "{w}"
    );
    assert_eq!(w["source"], "docker");
    assert_eq!(w["context_name"], "inv-ctx");
    assert_eq!(w["agent_id"], agent.spiffe_id.as_str());
    assert_eq!(w["confidence"], "full");
    assert_eq!(w["network_mode"], "none");
    assert!(w["pid"].as_u64().unwrap_or(0) > 0, "{w}");
    assert_eq!(labels(&w).get("app").map(String::as_str), Some("inv"));
    assert_eq!(w["compose"]["project"], "shop");
    assert_eq!(w["compose"]["service"], "cart");

    // Filters an operator would use.
    let by_label = workloads(&server, &["--label", "app=inv"]);
    assert!(
        find(&by_label, &c.id).is_some(),
        "--label app=inv: {by_label:?}"
    );
    let by_other = workloads(&server, &["--label", "app=nope"]);
    assert!(find(&by_other, &c.id).is_none(), "--label app=nope matched");
    let by_ctx = workloads(&server, &["--context", "inv-ctx", "--state", "running"]);
    assert!(
        find(&by_ctx, &c.id).is_some(),
        "--context inv-ctx: {by_ctx:?}"
    );
    let by_node = workloads(&server, &["--node", "inv-node", "--image", BUSYBOX_IMAGE]);
    assert!(
        find(&by_node, &c.id).is_some(),
        "--node/--image: {by_node:?}"
    );
    let shown = server.json(&["workloads", "show", &c.id[..12]]);
    assert_eq!(shown["container_id"], c.id.as_str(), "{shown}");

    // Exit: marked stopped, with its exit code; then forgotten after the
    // retention window.
    docker(&["kill", &name]).ok();
    let w = wait_for_workload(&server, &c.id, Duration::from_secs(5), "stopped", |w| {
        w["state"] == "stopped"
    });
    assert!(w["stopped_at_ms"].as_i64().unwrap_or(0) > 0, "{w}");
    let what = format!(
        "stopped workload {} to be forgotten after {RETENTION}",
        c.id
    );
    wait_until(&what, Duration::from_secs(20), || {
        find(&workloads(&server, &[]), &c.id)
            .is_none()
            .then_some(())
    });
}

#[test]
fn a_container_that_lives_between_resyncs_is_still_recorded() {
    let server = server();
    let _agent = docker_agent(&server, "blink-node", "lab");
    // Starts and exits in milliseconds; the agent resyncs hourly, so only
    // the event stream can tell the server about it.
    let name = unique_name("hm-blink");
    let out = docker(&[
        "run",
        "--name",
        &name,
        "--network",
        "none",
        "-l",
        "app=blink",
        BUSYBOX_IMAGE,
        "true",
    ])
    .ok();
    drop(out);
    let id = docker(&["inspect", "-f", "{{.Id}}", &name]).ok().stdout;
    let id = id.trim().to_string();
    let _cleanup = DockerContainer {
        id: id.clone(),
        name: name.clone(),
    };
    let w = wait_for_workload(&server, &id, Duration::from_secs(5), "stopped", |w| {
        w["state"] == "stopped"
    });
    assert_eq!(labels(&w).get("app").map(String::as_str), Some("blink"));
    assert_eq!(w["exit_code"], 0, "{w}");
}

#[test]
fn without_a_runtime_the_agent_serves_unix_identities_and_says_why() {
    let server = server();
    let dir = short_tempdir();
    let missing = dir.path().join("no-docker.sock");
    let missing_s = missing.display().to_string();
    let agent = TestAgent::start_with(
        &server,
        "degraded-node",
        &["--runtime", "docker", "--docker-socket", &missing_s],
    );
    let me = server.id("/root-user");
    server.create_entry(&me, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&me], WAIT);

    // The server's agent list carries the agent's runtime status.
    let what = "agent list to show the degraded runtime";
    let a = wait_until(what, WAIT, || {
        let list = server.json(&["agent", "list"]);
        let a = list
            .as_array()?
            .iter()
            .find(|a| a["spiffe_id"] == agent.spiffe_id.as_str())?
            .clone();
        (a["runtime"]["degraded"] == true).then_some(a)
    });
    let reason = a["runtime"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&missing_s),
        "the reason must name the socket: {a}"
    );

    // So does the spool file the agent writes.
    let spool = agent.data_dir.join("inventory.json");
    let doc: Value = wait_until("the inventory spool file to say degraded", WAIT, || {
        let doc: Value = serde_json::from_str(&fs::read_to_string(&spool).ok()?).ok()?;
        (doc["runtime"]["degraded"] == true).then_some(doc)
    });
    let reason = doc["runtime"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&missing_s), "{doc}");

    // And `hallmark agent status`, which reads it.
    let mut cmd = hallmark_cmd(&["agent", "status", "--data-dir"]);
    cmd.arg(&agent.data_dir);
    let out = run(&mut cmd, CLI_TIMEOUT).ok();
    assert!(out.stdout.contains("DEGRADED"), "{out}");
    assert!(out.stdout.contains(&missing_s), "{out}");
}

// ---------------------------------------------------------------------------
// Kubernetes CRI (containerd)
// ---------------------------------------------------------------------------

const CRI_SOCKET: &str = "/run/containerd/containerd.sock";

/// An agent with `runtime = auto`: on this node both containerd's CRI and
/// Docker answer; auto picks CRI first and follows Docker beside it.
fn cri_agent(server: &TestServer, node: &str) -> TestAgent {
    ensure_runtimes();
    TestAgent::start_with(
        server,
        node,
        &[
            "--runtime",
            "auto",
            "--context",
            "k8s-lab",
            "--resync-interval",
            "1h",
        ],
    )
}

/// A host-network pod in `namespace` with `labels`, removed on drop.
struct Pod {
    pod: Option<hallmark_runtime::cri::pods::HostPod>,
    rt: tokio::runtime::Runtime,
}

impl Pod {
    fn run(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
        use hallmark_runtime::cri::pods::{HostPod, PodSpec};
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let uid = uuid::Uuid::new_v4().to_string();
        let spec = PodSpec {
            name: format!("{name}-{}", &uid[..8]),
            namespace: namespace.into(),
            uid: uid.clone(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Default::default(),
            cgroup_parent: format!("/hallmark-test/pod{uid}"),
        };
        let pod = rt
            .block_on(HostPod::run(CRI_SOCKET, spec))
            .unwrap_or_else(|e| panic!("RunPodSandbox {name} in {namespace}: {e}"));
        Pod { pod: Some(pod), rt }
    }

    fn uid(&self) -> String {
        self.pod.as_ref().expect("pod").spec.uid.clone()
    }

    /// Runs py-spiffe in a new container of this pod (agent socket and the
    /// interop clients mounted in) and waits for it to exit.
    fn py_spiffe(&mut self, agent: &TestAgent, container: &str, check: &[&str]) -> (i32, String) {
        use hallmark_runtime::cri::pb::ContainerState;
        use hallmark_runtime::cri::pods::{ContainerSpec, Mount};
        let out = tempfile::tempdir().expect("output dir");
        let mut mounts: Vec<Mount> = python_mounts()
            .into_iter()
            .map(|(h, c)| Mount {
                host_path: h.display().to_string(),
                container_path: c.display().to_string(),
                readonly: true,
            })
            .collect();
        mounts.push(Mount {
            host_path: agent.socket.display().to_string(),
            container_path: SOCKET_IN_CONTAINER.into(),
            readonly: false,
        });
        mounts.push(Mount {
            host_path: out.path().display().to_string(),
            container_path: "/out".into(),
            readonly: false,
        });
        let script = format!(
            "{} {INTEROP_IN_CONTAINER}/py_spiffe_check.py {} > /out/log 2>&1",
            python_in_container(),
            check.join(" ")
        );
        let pod = self.pod.as_mut().expect("pod");
        let id = self
            .rt
            .block_on(pod.spawn(ContainerSpec {
                name: container.into(),
                image: BUSYBOX_IMAGE.into(),
                command: vec!["/busybox".into(), "sh".into(), "-c".into(), script],
                envs: vec![(
                    "SPIFFE_ENDPOINT_SOCKET".into(),
                    format!("unix://{SOCKET_IN_CONTAINER}"),
                )],
                mounts,
                ..Default::default()
            }))
            .unwrap_or_else(|e| panic!("starting container {container}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            let (state, code) = self
                .rt
                .block_on(pod.container_state(&id))
                .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"));
            if state == ContainerState::ContainerExited {
                break code;
            }
            assert!(
                Instant::now() < deadline,
                "container {container} still {state:?} after 60s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = fs::read_to_string(out.path().join("log")).unwrap_or_default();
        (code, log)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(pod) = self.pod.take() {
            if let Err(e) = self.rt.block_on(pod.remove()) {
                eprintln!("removing pod: {e}");
            }
        }
    }
}

#[test]
fn py_spiffe_inside_a_cri_pod_gets_the_identity_its_pod_selects() {
    let server = server();
    let agent = cri_agent(&server, "k8s-node");
    let pay = server.id("/ns/payments/sa/ledger");
    server.create_entry(
        &pay,
        &agent.spiffe_id,
        &[
            "k8s:ns:payments",
            "k8s:pod-label:team:money",
            "hallmark:context:k8s-lab",
        ],
        &[],
    );

    let mut pod = Pod::run("payments", "ledger", &[("team", "money")]);
    let (code, log) = pod.py_spiffe(&agent, "app", &["x509", "--expect-id", &pay]);
    assert_eq!(
        code, 0,
        "py-spiffe in pod payments/ledger (team=money):\n{log}"
    );
    assert!(log.contains(&pay), "{log}");

    // The inventory at the server shows the pod's container.
    let list = workloads(
        &server,
        &["--namespace", "payments", "--context", "k8s-lab"],
    );
    let w = list
        .iter()
        .find(|w| w["pod"]["uid"] == pod.uid().as_str())
        .unwrap_or_else(|| panic!("no workload of pod {} in {list:?}", pod.uid()));
    assert_eq!(w["source"], "cri");
    assert_eq!(w["name"], "app");
    assert_eq!(w["pod"]["labels"]["team"], "money");
    assert_eq!(w["agent_id"], agent.spiffe_id.as_str());

    // Another pod in the same namespace with other labels: refused.
    let mut other = Pod::run("payments", "intruder", &[("team", "other")]);
    let (code, log) = other.py_spiffe(&agent, "app", &["no-identity"]);
    assert_eq!(
        code, 0,
        "a team=other pod must get PermissionDenied:\n{log}"
    );

    // The agent reports that it chose CRI.
    let agents = server.json(&["agent", "list"]);
    let a = agents
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|a| a["spiffe_id"] == agent.spiffe_id.as_str())
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(a["runtime"]["runtime"], "cri", "{a}");
    assert_eq!(a["context_name"], "k8s-lab", "{a}");

    // Docker runs beside containerd here: auto follows it too, so a plain
    // Docker container on this node is attested by its labels as well.
    let tool = server.id("/tools/backup");
    server.create_entry(&tool, &agent.spiffe_id, &["docker:label:app:backup"], &[]);
    let out = py_spiffe_in_docker(&agent, &["app=backup"], &["x509", "--expect-id", &tool]);
    assert!(
        out.success(),
        "py-spiffe in a Docker container beside CRI:\n{out}"
    );
}

#[test]
fn an_unreadable_runtime_socket_is_reported_with_what_to_do() {
    ensure_runtimes();
    // Docker's socket is root:docker 0660; `nobody` may not connect.
    let server = server();
    let agent = TestAgent::start_as(
        &server,
        "unprivileged-node",
        &["--runtime", "docker", "--context", "lab"],
        NOBODY,
    );
    let what = "agent list to show the permission problem";
    let a = wait_until(what, WAIT, || {
        let list = server.json(&["agent", "list"]);
        let a = list
            .as_array()?
            .iter()
            .find(|a| a["spiffe_id"] == agent.spiffe_id.as_str())?
            .clone();
        (a["runtime"]["degraded"] == true).then_some(a)
    });
    let reason = a["runtime"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(reason.contains("permission denied"), "{a}");
    assert!(
        reason.contains("docker.sock"),
        "the reason names the socket: {a}"
    );
    assert!(
        reason.contains("docker group") || reason.contains("root"),
        "the reason says what to do: {a}"
    );
}
