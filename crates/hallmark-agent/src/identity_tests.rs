//! Workload identities from real processes in container-like cgroups,
//! compared with what the same process gets as a Workload API caller.
//!
//! Needs root (to move processes between cgroups) and `/usr/bin/python3`
//! (a caller that connects and stays); fails and says why without them.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::RwLock;
use std::time::Instant;

use hallmark_core::{Entry, EntryId, EntrySpec, RawEntrySpec, SpiffeId, TrustDomain};
use hallmark_runtime::EventAction;

use super::*;
use crate::attestor::PeerStream;
use crate::caller::CallerAttestor;
use crate::inventory::scripted::{running, Scripted};
use crate::inventory::{InventoryConfig, RuntimeSetup};
use crate::state::AgentState;

const WAIT: Duration = Duration::from_secs(10);
const PYTHON: &str = "/usr/bin/python3";

/// Connects to the socket, says so, and stays until its stdin closes.
const CALLER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
print("connected", flush=True)
sys.stdin.read()
"#;

fn require_root_and_python() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test moves processes between cgroups: run it as root"
    );
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "this test needs {PYTHON} for a caller process"
    );
}

/// The cgroup2 mount point.
fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .expect("no cgroup2 mount on this host")
}

/// A cgroup named like a Docker container (`<parent>/<64 hex>`), removed
/// (after its processes are killed) when dropped.
struct FakeContainer {
    id: String,
    /// The path as `/proc/<pid>/cgroup` shows it.
    path: String,
    dir: PathBuf,
    parent: PathBuf,
    children: Vec<Child>,
}

impl FakeContainer {
    fn new(tag: &str) -> Self {
        let seed = format!("{tag}{}", std::process::id());
        let id: String = (0..64)
            .map(|i| {
                let b = seed.as_bytes()[i % seed.len()] as usize;
                char::from(b"0123456789abcdef"[(b * 31 + i * 7) % 16])
            })
            .collect();
        let name = format!("hallmark-identity-{tag}-{}", std::process::id());
        let parent = cgroup2_mount().join(&name);
        let dir = parent.join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        FakeContainer {
            path: format!("/{name}/{id}"),
            id,
            dir,
            parent,
            children: Vec::new(),
        }
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    /// The runtime's record of this container with `pid` as its process.
    fn record(&self, pid: u32) -> Workload {
        let mut w = running(&self.id);
        w.name = "web-1".into();
        w.labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        w.pid = Some(pid);
        w.cgroup = self.path.clone();
        w
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_dir(&self.parent);
    }
}

fn entry(td: &TrustDomain, agent: &SpiffeId, id: &str, selectors: &[&str]) -> Entry {
    let spiffe_id = format!("spiffe://{}/{id}", td.name());
    let parent = agent.to_string();
    Entry {
        id: EntryId::new_random(),
        spec: EntrySpec::parse(
            &RawEntrySpec {
                spiffe_id: &spiffe_id,
                parent_id: &parent,
                selectors: selectors.to_vec(),
                ..RawEntrySpec::default()
            },
            td.name(),
        )
        .unwrap(),
        created_at: 0,
        revision: 1,
    }
}

fn snapshot(td: &TrustDomain, entries: Vec<Entry>) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        ready: true,
        agent_id: td.agent_id("n1").unwrap(),
        entries,
        svids: HashMap::new(),
        bundle: Arc::new(hallmark_ca::Bundle::new(td.clone())),
        federated: BTreeMap::new(),
    })
}

struct Agent {
    inventory: Inventory,
    shared: Arc<AgentState>,
    metrics: Arc<AgentMetrics>,
    rt: Arc<Scripted>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Agent {
    async fn start(records: Vec<Workload>, entries: Vec<Entry>, refresh: Duration) -> Self {
        let td: TrustDomain = "example.org".parse().unwrap();
        let metrics = Arc::new(AgentMetrics::default());
        let shared = Arc::new(AgentState {
            trust_domain: td.clone(),
            snapshots: watch::channel(snapshot(&td, entries)).0,
            client: watch::channel(None).0,
            metrics: metrics.clone(),
            tainted_jwt_keys: RwLock::new(Vec::new()),
            policy: Default::default(),
        });
        let dir = tempfile::tempdir().unwrap();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let rt = Scripted::new(records);
        let (inventory, mut tasks) = Inventory::start(
            InventoryConfig {
                context_name: "lab".into(),
                resync_interval: Duration::from_secs(3600),
                ..InventoryConfig::default()
            },
            dir.path(),
            RuntimeSetup::Given(rt.clone()),
            watch::channel(None).1,
            metrics.clone(),
            shutdown_rx.clone(),
        )
        .await;
        tasks.push(tokio::spawn(run(
            inventory.clone(),
            shared.snapshots.subscribe(),
            metrics.clone(),
            refresh,
            shutdown_rx,
        )));
        Agent {
            inventory,
            shared,
            metrics,
            rt,
            shutdown,
            tasks,
            _dir: dir,
        }
    }

    fn agent_id(&self) -> SpiffeId {
        self.shared.snapshots.borrow().agent_id.clone()
    }

    fn set_entries(&self, entries: Vec<Entry>) {
        let td = self.shared.trust_domain.clone();
        self.shared.snapshots.send_replace(snapshot(&td, entries));
    }

    async fn wait_for(&self, id: &str, what: &str, f: impl Fn(&Workload) -> bool) -> Workload {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(w) = self.inventory.get(id).filter(|w| f(w)) {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: record is {:?}",
                self.inventory.get(id)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        for t in self.tasks {
            tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
        }
    }
}

/// Spawns the python caller against `socket` and waits until it is
/// connected; returns it and the accepted connection.
async fn connect_caller(listener: &tokio::net::UnixListener, socket: &str) -> (Child, PeerStream) {
    let mut child = Command::new(PYTHON)
        .args(["-c", CALLER, socket])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the caller did not connect")
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "connected");
    (child, PeerStream::new(stream).unwrap())
}

#[tokio::test]
async fn a_container_process_gets_what_it_would_get_as_a_caller_and_no_more() {
    require_root_and_python();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let (child, peer) = connect_caller(&listener, sock.to_str().unwrap()).await;
    let pid = child.id();
    let mut c = FakeContainer::new("caller");
    c.children.push(child);
    c.enter(pid);

    let td: TrustDomain = "example.org".parse().unwrap();
    let agent_id = td.agent_id("n1").unwrap();
    let other_agent = td.agent_id("n2").unwrap();
    let entries = vec![
        entry(
            &td,
            &agent_id,
            "web",
            &["docker:label:app:web", "unix:uid:0"],
        ),
        entry(&td, &agent_id, "everyone-in-lab", &["hallmark:context:lab"]),
        entry(&td, &agent_id, "db", &["docker:label:app:db"]),
        entry(&td, &agent_id, "host-only", &["unix:container:none"]),
        entry(
            &td,
            &other_agent,
            "web-elsewhere",
            &["docker:label:app:web"],
        ),
    ];
    let agent = Agent::start(vec![], entries.clone(), Duration::from_secs(3600)).await;
    assert_eq!(agent.agent_id(), agent_id);
    let mut events = agent.inventory.subscribe();
    agent.rt.set(c.record(pid));
    agent.rt.emit(&c.id, EventAction::Started);

    let w = agent
        .wait_for(&c.id, "an identity", |w| !w.spiffe_ids.is_empty())
        .await;
    assert_eq!(
        w.spiffe_ids,
        vec![
            "spiffe://example.org/everyone-in-lab".to_string(),
            "spiffe://example.org/web".to_string()
        ]
    );

    // The same process as a caller on the socket.
    let callers = CallerAttestor::new(agent.shared.clone(), agent.inventory.clone());
    let caller = callers.attest(peer.peer().clone()).await.unwrap();
    let mut caller_selectors: Vec<String> =
        caller.selectors.iter().map(ToString::to_string).collect();
    caller_selectors.sort();
    assert_eq!(w.selectors, caller_selectors, "the caller path's selectors");
    assert!(w.selectors.contains(&"docker:label:app:web".to_string()));
    assert!(w.selectors.contains(&"hallmark:context:lab".to_string()));
    assert!(!w.selectors.contains(&"unix:container:none".to_string()));
    let caller_ids = spiffe_ids(&caller.snapshot, &caller.selectors);
    assert_eq!(w.spiffe_ids, caller_ids, "the caller path's SPIFFE IDs");

    // The server heard of it as an `updated` event of the container.
    let deadline = Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), events.recv())
            .await
            .expect("no event with the identity")
            .unwrap();
        if ev.workload.container_id == c.id && !ev.workload.spiffe_ids.is_empty() {
            assert_eq!(ev.kind, EventKind::Updated);
            assert_eq!(ev.workload.spiffe_ids, w.spiffe_ids);
            break;
        }
    }

    // New entries reach the record without re-attesting.
    let mut more = entries.clone();
    more.push(entry(&td, &agent_id, "web-v2", &["docker:name:web-1"]));
    agent.set_entries(more);
    let w = agent
        .wait_for(&c.id, "the new entry", |w| w.spiffe_ids.len() == 3)
        .await;
    assert_eq!(w.spiffe_ids[2], "spiffe://example.org/web-v2");
    // A record the runtime reports again unchanged keeps its identity.
    agent.rt.emit(&c.id, EventAction::Updated);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(agent.inventory.get(&c.id).unwrap().spiffe_ids.len(), 3);
    assert!(agent
        .metrics
        .render()
        .contains("hallmark_agent_workload_identities 1"));
    drop(c);
    agent.stop().await;
}

#[tokio::test]
async fn a_pid_that_is_not_the_containers_process_gives_no_identity() {
    require_root_and_python();
    let td: TrustDomain = "example.org".parse().unwrap();
    let agent_id = td.agent_id("n1").unwrap();
    let entries = vec![entry(&td, &agent_id, "web", &["docker:label:app:web"])];

    // Case 1: the runtime's PID names a process outside the container.
    let c = FakeContainer::new("impostor");
    let mut outsider = Command::new("sleep").arg("30").spawn().unwrap();
    let record = c.record(outsider.id());
    // Case 2: the container's process exits; its record still names it.
    let mut d = FakeContainer::new("exits");
    let inside = Command::new("sleep").arg("30").spawn().unwrap();
    let inside_pid = inside.id();
    d.enter(inside_pid);
    d.children.push(inside);
    let exiting = d.record(inside_pid);

    let agent = Agent::start(vec![record, exiting], entries, Duration::from_millis(200)).await;
    let w = agent
        .wait_for(&d.id, "the identity of the live one", |w| {
            !w.spiffe_ids.is_empty()
        })
        .await;
    assert_eq!(w.spiffe_ids, vec!["spiffe://example.org/web".to_string()]);
    // The outsider never gets one, however often it is tried.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w = agent.inventory.get(&c.id).unwrap();
    assert!(w.selectors.is_empty() && w.spiffe_ids.is_empty(), "{w:?}");
    let failures = agent
        .metrics
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix("hallmark_agent_workload_identity_failures_total ")
                .map(str::to_owned)
        })
        .unwrap();
    assert!(failures.parse::<u64>().unwrap() >= 2, "{failures}");

    // The process exits and is reaped; the runtime has not said so yet.
    for ch in &mut d.children {
        ch.kill().unwrap();
        ch.wait().unwrap();
    }
    let w = agent
        .wait_for(&d.id, "the identity to go with the process", |w| {
            w.selectors.is_empty()
        })
        .await;
    assert!(w.spiffe_ids.is_empty());
    outsider.kill().unwrap();
    outsider.wait().unwrap();
    drop((c, d));
    agent.stop().await;
}

#[test]
fn a_process_younger_than_the_runtimes_word_is_refused() {
    require_root_and_python();
    let mut c = FakeContainer::new("young");
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    c.enter(pid);
    c.children.push(child);
    let w = c.record(pid);
    // Known at tick 0, i.e. before the process started: it cannot be the
    // one the runtime meant.
    assert!(matches!(
        process_selectors(&w, 0, None),
        Err(NoIdentity::Attest(AttestError::PeerExited))
    ));
    let now = boot_ticks().unwrap();
    let got = process_selectors(&w, now, None).unwrap();
    let got: Vec<String> = got.iter().map(ToString::to_string).collect();
    assert!(got.contains(&"docker:label:app:web".to_string()), "{got:?}");
    assert!(got.contains(&"unix:uid:0".to_string()), "{got:?}");
    assert!(
        got.contains(&"unix:path:/usr/bin/sleep".to_string()),
        "{got:?}"
    );
}
