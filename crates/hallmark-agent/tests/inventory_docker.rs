//! The workload inventory against the real Docker Engine on this machine
//! (`/var/run/docker.sock`), found through discovery as the agent finds it.
//! No server: reports stay queued, which is not what is tested here.
//!
//! Needs a running dockerd and the image `hallmark-test/busybox:1`
//! (`FROM scratch`, busybox-static as `/busybox`, `ENTRYPOINT ["/busybox"]`);
//! fails with instructions when either is missing.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hallmark_agent::inventory::{
    EventKind, Inventory, InventoryConfig, InventoryEvent, RuntimeSetup, SpoolDocument, SPOOL_FILE,
};
use hallmark_agent::metrics::AgentMetrics;
use hallmark_core::{Confidence, RuntimeSource, WorkloadState};
use hallmark_runtime::discovery::{DiscoveryConfig, RuntimeChoice};
use tokio::sync::{broadcast, watch};

const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const IMAGE: &str = "hallmark-test/busybox:1";
const WAIT: Duration = Duration::from_secs(10);

/// Runs the docker CLI; panics with its output when it fails.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `docker {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn require_docker() {
    assert!(
        Path::new(DOCKER_SOCKET).exists(),
        "this test needs a Docker Engine at {DOCKER_SOCKET}: install docker.io and start \
         `dockerd --iptables=false --ip6tables=false --bridge=none &`"
    );
    let images = docker(&["images", "-q", IMAGE]);
    assert!(
        !images.is_empty(),
        "this test needs the image {IMAGE}: build it FROM scratch with busybox-static \
         copied to /busybox and ENTRYPOINT [\"/busybox\"]"
    );
}

/// Removes the container when the test ends, however it ends.
struct Container {
    id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

struct Running {
    inv: Inventory,
    events: broadcast::Receiver<InventoryEvent>,
    held: Vec<InventoryEvent>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    data_dir: tempfile::TempDir,
    _client: watch::Sender<
        Option<hallmark_proto::hallmark::node_client::NodeClient<tonic::transport::Channel>>,
    >,
}

async fn start(socket: &str) -> Running {
    let data_dir = tempfile::tempdir().unwrap();
    let config = InventoryConfig {
        context_name: "inv-test".into(),
        discovery: DiscoveryConfig {
            choice: RuntimeChoice::Docker,
            docker_socket: Some(PathBuf::from(socket)),
            ..DiscoveryConfig::default()
        },
        // Long: only the event stream can explain what the inventory sees.
        resync_interval: Duration::from_secs(3600),
        ..InventoryConfig::default()
    };
    let (client, client_rx) = watch::channel(None);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (inv, tasks) = Inventory::start(
        config,
        data_dir.path(),
        RuntimeSetup::Discover,
        client_rx,
        Arc::new(AgentMetrics::default()),
        shutdown_rx,
    )
    .await;
    let events = inv.subscribe();
    Running {
        inv,
        events,
        held: Vec::new(),
        shutdown,
        tasks,
        data_dir,
        _client: client,
    }
}

impl Running {
    /// The next event about `id`; others are kept for later calls.
    async fn next(&mut self, id: &str) -> InventoryEvent {
        if let Some(i) = self.held.iter().position(|e| e.workload.container_id == id) {
            return self.held.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(ev)) => ev,
                Ok(Err(e)) => panic!("event subscription: {e}"),
                Err(_) => panic!(
                    "no event about {id} within {WAIT:?}; status: {:?}",
                    self.inv.status()
                ),
            };
            if ev.workload.container_id == id {
                return ev;
            }
            self.held.push(ev);
        }
    }

    /// The next lifecycle change of `id`, skipping the `updated` event a
    /// container gets when it is created (before it starts).
    async fn next_change(&mut self, id: &str) -> InventoryEvent {
        loop {
            let ev = self.next(id).await;
            if ev.kind == EventKind::Updated && ev.workload.state == WorkloadState::Created {
                continue;
            }
            return ev;
        }
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        for t in self.tasks {
            tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_real_docker_containers() {
    require_docker();
    let mut r = start(DOCKER_SOCKET).await;
    let st = r.inv.status();
    assert!(!st.runtime.degraded, "{st:?}");
    assert_eq!(st.runtime.runtime, "docker");
    assert_eq!(st.runtime.endpoint, DOCKER_SOCKET);
    assert!(st.runtime.version.contains("20.10"), "{st:?}");

    // A long-running, labelled container: in the inventory within 1 s.
    let name = unique("hm-inv");
    let _inv_guard = Container { id: name.clone() };
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "-l",
        "app=inv",
        IMAGE,
        "sleep",
        "300",
    ]);
    let c = Container { id };
    let ran = Instant::now();
    let w = loop {
        if let Some(w) = r
            .inv
            .get(&c.id)
            .filter(|w| w.state == WorkloadState::Running)
        {
            break w;
        }
        assert!(
            ran.elapsed() < Duration::from_secs(1),
            "container {} not in the inventory as running 1 s after `docker run` returned; \
             status: {:?}",
            c.id,
            r.inv.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(w.source, RuntimeSource::Docker);
    assert_eq!(w.confidence, Confidence::Full);
    assert_eq!(w.name, name);
    assert_eq!(w.image, IMAGE);
    assert!(w.image_id.starts_with("sha256:"), "{w:?}");
    assert_eq!(w.labels.get("app").map(String::as_str), Some("inv"));
    assert_eq!(w.network_mode, "none");
    assert!(w.pid.unwrap_or(0) > 0, "{w:?}");
    assert!(w.cgroup.contains(&c.id), "{w:?}");
    assert!(w.started_at_ms > 0, "{w:?}");
    let ev = r.next_change(&c.id).await;
    assert_eq!(ev.kind, EventKind::Started);
    assert!(r.inv.workloads().iter().any(|x| x.container_id == c.id));
    // Attestation's path finds it too, and only it.
    let resolved = r.inv.resolve(&c.id).await.unwrap();
    assert_eq!(resolved.container_id, c.id);
    let selectors: Vec<String> = resolved.selectors().iter().map(|s| s.to_string()).collect();
    assert!(
        selectors.contains(&"docker:label:app:inv".to_string()),
        "{selectors:?}"
    );

    // A container that exits at once is still told as started, then
    // stopped with its exit code.
    let blink_name = unique("hm-blink");
    // Removed by name whatever happens below.
    let _blink_guard = Container {
        id: blink_name.clone(),
    };
    // `docker run` in the foreground exits with the container's code.
    let status = Command::new("docker")
        .args([
            "run",
            "--name",
            &blink_name,
            "--network",
            "none",
            "-l",
            "app=blink",
            IMAGE,
            "sh",
            "-c",
            "exit 3",
        ])
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "docker run of the short-lived container"
    );
    let blink = Container {
        id: docker(&["inspect", "-f", "{{.Id}}", &blink_name]),
    };
    let ev = r.next_change(&blink.id).await;
    assert_eq!(ev.kind, EventKind::Started, "{ev:?}");
    assert_eq!(
        ev.workload.labels.get("app").map(String::as_str),
        Some("blink")
    );
    let ev = r.next_change(&blink.id).await;
    assert_eq!(ev.kind, EventKind::Stopped, "{ev:?}");
    assert_eq!(ev.workload.exit_code, Some(3));
    assert_eq!(
        r.inv.get(&blink.id).map(|w| w.state),
        Some(WorkloadState::Stopped),
        "an exited container stays known while the runtime has it"
    );

    // Removing a running container: stopped, then gone.
    docker(&["rm", "-f", &c.id]);
    let ev = r.next_change(&c.id).await;
    assert_eq!(ev.kind, EventKind::Stopped, "{ev:?}");
    assert_eq!(ev.workload.state, WorkloadState::Stopped);
    let removed = Instant::now();
    while r.inv.get(&c.id).is_some() {
        assert!(
            removed.elapsed() < WAIT,
            "removed container still in the inventory"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Removing an exited one: gone without a second `stopped`.
    docker(&["rm", "-f", &blink.id]);
    let removed = Instant::now();
    while r.inv.get(&blink.id).is_some() {
        assert!(
            removed.elapsed() < WAIT,
            "removed container still in the inventory"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !r.held.iter().any(|e| e.workload.container_id == blink.id),
        "{:?}",
        r.held
    );

    // The spool file reflects the runtime.
    let spool = r.data_dir.path().join(SPOOL_FILE);
    let doc: SpoolDocument = serde_json::from_slice(&std::fs::read(&spool).unwrap()).unwrap();
    assert_eq!(doc.context_name, "inv-test");
    assert_eq!(doc.runtime.runtime, "docker");
    r.stop().await;
}

#[tokio::test]
async fn a_missing_socket_is_degraded_with_a_reason_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-docker.sock");
    let missing_s = missing.display().to_string();
    let r = start(&missing_s).await;
    let st = r.inv.status();
    assert!(st.runtime.degraded, "{st:?}");
    assert_eq!(st.runtime.runtime, "none");
    assert!(
        st.runtime.reason.contains(&missing_s),
        "the reason must name the socket: {}",
        st.runtime.reason
    );
    assert!(!st.attempts.is_empty() && !st.attempts[0].ok, "{st:?}");
    assert_eq!(r.inv.resolve(&"a".repeat(64)).await, None);
    assert!(st.summary().starts_with("degraded:"), "{}", st.summary());
    // The spool says so too.
    let spool = r.data_dir.path().join(SPOOL_FILE);
    let deadline = Instant::now() + WAIT;
    let doc = loop {
        if let Some(doc) = std::fs::read(&spool)
            .ok()
            .and_then(|b| serde_json::from_slice::<SpoolDocument>(&b).ok())
        {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "no spool file at {}",
            spool.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(doc.runtime.degraded);
    r.stop().await;
}
