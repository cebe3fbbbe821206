//! A caller cannot obtain another process's identity through PID reuse.
//!
//! The attack: a process connects to the Workload API socket, forks an
//! accomplice that inherits the connection, and exits. Its PID is then given
//! to a different program (here forced with `/proc/sys/kernel/ns_last_pid`).
//! Anything that attests "the process with the peer's PID" now describes the
//! other program, and the accomplice would be served its identity. These
//! tests stage exactly that and require `attest_unix` to refuse.
//!
//! Needs root (to write ns_last_pid) and `/usr/bin/python3`; without them
//! the tests fail and say why.

// A failed unwrap is the test's failure report.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hallmark_agent::attestor::{attest_unix, AttestError, PeerInfo, PeerStream};
use hallmark_core::SelectorSet;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

/// The tests race each other (and anything else on the machine) for PIDs;
/// one at a time keeps them from stealing each other's target PID.
static PID_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
const PYTHON: &str = "/usr/bin/python3";

/// Connects, forks an accomplice that keeps the connection, prints the
/// accomplice's PID, then exits; with `wait`, only after the server has
/// written one byte (so the server accepts while the connector lives).
const ATTACKER: &str = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
accomplice = os.fork()
if accomplice == 0:
    time.sleep(120)
    os._exit(0)
print(accomplice, flush=True)
if sys.argv[2] == "wait":
    s.recv(1)
os._exit(0)
"#;

/// A well-behaved workload: connects and stays until told to go.
const WORKLOAD: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
print("connected", flush=True)
s.recv(1)
"#;

/// Kills every process a test started, however the test ends.
#[derive(Default)]
struct Reaper {
    children: Vec<Child>,
    /// Processes that are not our children (the accomplices), by pidfd so a
    /// late kill cannot hit a process that took their PID.
    pidfds: Vec<OwnedFd>,
}

impl Reaper {
    fn adopt(&mut self, child: Child) -> &mut Child {
        self.children.push(child);
        let last = self.children.len() - 1;
        &mut self.children[last]
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for fd in &self.pidfds {
            // SAFETY: SIGKILL through a pidfd we own; null siginfo, no flags.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0 as libc::c_uint,
                );
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn pidfd_open(pid: i32) -> OwnedFd {
    // SAFETY: pidfd_open touches no memory of ours and returns a new fd or -1.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    assert!(
        rc >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just installed this descriptor for us alone.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

/// Fails (never skips) when the machine cannot stage the attack.
fn require_environment() {
    if let Err(e) = fs::OpenOptions::new().write(true).open(NS_LAST_PID) {
        panic!(
            "this test forces PID reuse by writing {NS_LAST_PID} and needs it writable \
             (root with CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE in this PID namespace): {e}"
        );
    }
    assert!(
        Path::new(PYTHON).exists(),
        "this test runs workloads with {PYTHON}: install python3"
    );
}

fn spawn_python(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c")
        .arg(script)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

fn read_line(child: &mut Child) -> String {
    let stdout = child.stdout.as_mut().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "python workload exited before speaking");
    line.trim().to_string()
}

/// Starts the attacker; returns its PID (the connecting process).
fn start_attacker(reaper: &mut Reaper, socket: &Path, mode: &str) -> i32 {
    let child = spawn_python(ATTACKER, &[socket.to_str().unwrap(), mode])
        .spawn()
        .unwrap();
    let child = reaper.adopt(child);
    let pid = child.id() as i32;
    let accomplice: i32 = read_line(child).parse().unwrap();
    reaper.pidfds.push(pidfd_open(accomplice));
    pid
}

fn wait_for_exit(child: &mut Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "attacker failed: {status}");
}

/// Copies /bin/sleep to `dir/victim`, so the victim's executable path is
/// one nothing else on the machine has.
fn victim_binary(dir: &Path) -> PathBuf {
    let path = dir.join("victim");
    fs::copy("/bin/sleep", &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    fs::canonicalize(&path).unwrap()
}

/// Makes the victim program take PID `target`, retrying while other
/// processes on the machine grab PIDs in between.
fn victim_takes_pid(reaper: &mut Reaper, victim: &Path, target: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        fs::write(NS_LAST_PID, (target - 1).to_string()).unwrap();
        let child = match Command::new(victim).arg("120").spawn() {
            Ok(c) => c,
            // The copy's write descriptor may linger in a concurrent fork.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => panic!("spawning {}: {e}", victim.display()),
        };
        let pid = child.id() as i32;
        let child = reaper.adopt(child);
        if pid == target {
            return pid;
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            Instant::now() < deadline,
            "could not give pid {target} to the victim within 20 s \
             (another process holds it or keeps taking it)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn strings(set: &SelectorSet) -> Vec<String> {
    set.iter().map(ToString::to_string).collect()
}

async fn attest(peer: &PeerInfo) -> Result<SelectorSet, AttestError> {
    let peer = peer.clone();
    tokio::task::spawn_blocking(move || attest_unix(&peer))
        .await
        .unwrap()
}

async fn accept(listener: &UnixListener) -> PeerStream {
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("no connection within 10 s")
        .unwrap();
    PeerStream::new(stream).unwrap()
}

fn expected_selectors(uid: u32, gid: u32, exe: &Path) -> Vec<String> {
    let digest = hex::encode(Sha256::digest(fs::read(exe).unwrap()));
    let mut want = vec![
        format!("unix:uid:{uid}"),
        format!("unix:gid:{gid}"),
        format!("unix:path:{}", exe.display()),
        format!("unix:sha256:{digest}"),
    ];
    if let Some(u) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).unwrap() {
        want.push(format!("unix:user:{}", u.name));
    }
    if let Some(g) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)).unwrap() {
        want.push(format!("unix:group:{}", g.name));
    }
    // The peers here are this test's own processes: host processes, unless
    // the suite itself runs inside a container.
    let own =
        hallmark_core::cgroup::parse_proc_cgroup(&fs::read_to_string("/proc/self/cgroup").unwrap())
            .unwrap();
    if own.container_id.is_none() {
        want.push(hallmark_core::HOST_SELECTOR.to_string());
    }
    want.sort();
    want
}

/// After the PID was given to the victim: the hazard is real (a naive read
/// of /proc sees the victim) and the attestor refuses.
async fn assert_reuse_refused(peer: &PeerInfo, victim: &Path, reaper: &mut Reaper) {
    let pid = victim_takes_pid(reaper, victim, peer.pid);
    assert_eq!(pid, peer.pid, "the victim must hold the connector's PID");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        victim,
        "a naive /proc/<pid>/exe read now describes the victim"
    );
    match attest(peer).await {
        Err(AttestError::PeerExited) => {}
        Ok(set) => panic!("attested the connector's reused PID as {:?}", strings(&set)),
        Err(e) => panic!("expected PeerExited, got {e}"),
    }
}

#[tokio::test]
async fn pid_reused_after_accept_is_refused() {
    let _serial = PID_LOCK.lock().await;
    require_environment();
    let mut reaper = Reaper::default();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("workload.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let victim = victim_binary(dir.path());

    let attacker_pid = start_attacker(&mut reaper, &socket, "wait");
    let mut stream = accept(&listener).await;
    let peer = stream.peer().clone();
    assert_eq!(peer.pid, attacker_pid);

    // While the connector lives, it is attested as what it is.
    let python = fs::canonicalize(PYTHON).unwrap();
    let live = attest(&peer).await.unwrap();
    assert!(
        strings(&live).contains(&format!("unix:path:{}", python.display())),
        "{:?}",
        strings(&live)
    );

    // Release the connector and let it exit (and be reaped).
    stream.write_all(b"x").await.unwrap();
    wait_for_exit(&mut reaper.children[0]);

    // The connection itself is still open: the accomplice holds it.
    stream.write_all(b"still there").await.unwrap();

    assert_reuse_refused(&peer, &victim, &mut reaper).await;
}

#[tokio::test]
async fn pid_reused_after_exit_before_accept_is_refused() {
    let _serial = PID_LOCK.lock().await;
    require_environment();
    let mut reaper = Reaper::default();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("workload.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let victim = victim_binary(dir.path());

    let attacker_pid = start_attacker(&mut reaper, &socket, "exit");
    // The connector is gone and reaped before the agent even accepts.
    wait_for_exit(&mut reaper.children[0]);
    let mut stream = accept(&listener).await;
    let peer = stream.peer().clone();
    assert_eq!(peer.pid, attacker_pid);
    stream.write_all(b"still there").await.unwrap();

    assert_reuse_refused(&peer, &victim, &mut reaper).await;
}

#[tokio::test]
async fn live_peers_are_attested_from_their_own_credentials() {
    let _serial = PID_LOCK.lock().await;
    require_environment();
    let mut reaper = Reaper::default();
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("workload.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();

    // This test process itself.
    let _client = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let stream = accept(&listener).await;
    assert_eq!(stream.peer().pid, std::process::id() as i32);
    let own_exe = fs::read_link("/proc/self/exe").unwrap();
    let got = attest(stream.peer()).await.unwrap();
    assert_eq!(
        strings(&got),
        expected_selectors(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
            &own_exe
        )
    );

    // A workload running as another user: uid and gid must be the peer's,
    // not the agent's.
    let (uid, gid) = (65534, 65534);
    let child = spawn_python(WORKLOAD, &[socket.to_str().unwrap()])
        .uid(uid)
        .gid(gid)
        .spawn()
        .unwrap();
    let child = reaper.adopt(child);
    let workload_pid = child.id() as i32;
    assert_eq!(read_line(child), "connected");
    let stream = accept(&listener).await;
    assert_eq!(stream.peer().pid, workload_pid);
    assert_eq!((stream.peer().uid, stream.peer().gid), (uid, gid));
    let got = attest(stream.peer()).await.unwrap();
    assert_eq!(
        strings(&got),
        expected_selectors(uid, gid, &fs::canonicalize(PYTHON).unwrap())
    );
}
