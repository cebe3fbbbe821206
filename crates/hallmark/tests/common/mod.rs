//! Harness for the end-to-end tests: real `hallmark` processes, each in its
//! own short temp dir under /tmp, driven through the CLI contract and the
//! Workload API socket.
//!
//! Every wait is bounded and says what it waited for. Each daemon's stdout and
//! stderr go to a log file in its temp dir; when a test panics, dropping the
//! daemon prints the tail of that log so the failure explains itself.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::X509svidRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// Upper bound for anything a test waits on that should be quick: a daemon
/// becoming ready, a socket appearing, a change propagating.
pub const WAIT: Duration = Duration::from_secs(20);
/// Upper bound for one CLI invocation.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a daemon's log printed when a test fails.
const LOG_TAIL_LINES: usize = 200;
/// The uid of `nobody` on Debian: a caller that has no entry.
pub const NOBODY: u32 = 65534;

pub type WorkloadClient = SpiffeWorkloadApiClient<Channel>;

// ---------------------------------------------------------------------------
// Paths and processes
// ---------------------------------------------------------------------------

pub fn hallmark_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hallmark")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root resolves")
}

/// A fresh temp dir with a short path (Unix socket paths must stay under 108
/// bytes), readable and traversable by other uids so a client running as
/// `nobody` can reach a socket inside it.
pub fn short_tempdir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hm")
        .tempdir_in("/tmp")
        .expect("create temp dir under /tmp");
    fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir
}

/// A `hallmark` command with none of the caller's hallmark or SPIFFE
/// environment, so only what the test sets applies.
pub fn hallmark_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(hallmark_bin());
    cmd.args(args)
        .env_remove("HALLMARK_ADMIN_SOCKET")
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("HALLMARK_HOME")
        .env_remove("HALLMARK_JOIN_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// `cmd` run inside the network namespace `netns` (`ip netns` name) with
/// `nsenter`, which, unlike `ip netns exec`, leaves `/sys` (and the cgroup2
/// mount) as it is.
pub fn in_netns(netns: &str, cmd: &Command) -> Command {
    let mut wrapped = Command::new("nsenter");
    wrapped
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// What a finished command printed and how it ended.
pub struct Output {
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Asserts the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Asserts the command exited non-zero (and was not killed by a signal).
    #[track_caller]
    pub fn fails(self) -> Self {
        assert!(
            self.status.code().is_some_and(|c| c != 0),
            "expected a non-zero exit:\n{self}"
        );
        self
    }

    /// Asserts stderr contains every one of `needles`.
    #[track_caller]
    pub fn stderr_has(self, needles: &[&str]) -> Self {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "expected stderr to contain {needle:?}:\n{self}"
            );
        }
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmd)?;
        writeln!(f, "exit: {}", self.status)?;
        writeln!(f, "--- stdout\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr\n{}", self.stderr.trim_end())
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, killing it and failing the test if it takes
/// longer than `timeout`.
#[track_caller]
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = describe(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{desc}`: {e}"));
    let out_reader = drain(child.stdout.take());
    let err_reader = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            cmd: desc,
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "`{desc}` did not finish within {timeout:?}; killed it\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        ),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Polls `f` every 50 ms until it yields a value; fails the test after
/// `timeout` naming `what` it was waiting for.
#[track_caller]
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A long-running `hallmark` process. Killed when dropped; if the test is
/// failing at that moment, the tail of its log is printed.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr appended to `log` (or stdout to
    /// `stdout` when given, e.g. to read what `hallmark up` prints).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, stdout: Option<&Path>) -> Self {
        let desc = describe(&cmd);
        let mut log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        writeln!(log_file, "===== {name}: {desc}").expect("write log header");
        let out = match stdout {
            Some(p) => File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display())),
            None => log_file.try_clone().expect("clone log handle"),
        };
        let child = cmd
            .stdout(out)
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} `{desc}`: {e}"));
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Fails the test with the log tail if the process has exited: a daemon
    /// that died while a test waits for it would otherwise look like a hang.
    #[track_caller]
    pub fn assert_alive(&mut self, waiting_for: &str) {
        let child = self.child.as_mut().expect("daemon was started");
        if let Some(status) = child.try_wait().expect("poll daemon") {
            self.child = None;
            panic!(
                "{} exited ({status}) while waiting for {waiting_for}\n{}",
                self.name,
                log_tail(&self.log)
            );
        }
    }

    /// SIGKILL: a crash, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the exit status; fails the test if the process is still
    /// running after 10 s.
    #[track_caller]
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("poll daemon") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} ignored SIGTERM for 10s\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "\n======== log of {} ({}) ========\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
    }
}

pub fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read log: {e}>"));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..].join("\n")
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// A `hallmark server run` in its own temp dir, listening on a port the
/// kernel picked.
pub struct TestServer {
    pub td: String,
    pub data_dir: PathBuf,
    pub admin_socket: PathBuf,
    /// Where the server listens for agents (read from `DATA_DIR/listen.addr`).
    pub addr: SocketAddr,
    extra_args: Vec<String>,
    daemon: Option<Daemon>,
    // Last: the directory must outlive the process using it.
    pub dir: TempDir,
}

impl TestServer {
    #[track_caller]
    pub fn start(td: &str) -> Self {
        Self::start_with(td, &[])
    }

    /// Starts a server with additional `server run` flags.
    #[track_caller]
    pub fn start_with(td: &str, extra_args: &[&str]) -> Self {
        Self::start_on(td, "127.0.0.1:0", extra_args)
    }

    /// Starts a server listening for agents on `listen` (an address agents
    /// in other network namespaces can reach), with additional flags.
    #[track_caller]
    pub fn start_on(td: &str, listen: &str, extra_args: &[&str]) -> Self {
        let dir = short_tempdir();
        let data_dir = dir.path().join("server");
        fs::create_dir_all(&data_dir).expect("create server data dir");
        let mut server = TestServer {
            td: td.to_string(),
            admin_socket: dir.path().join("admin.sock"),
            data_dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            daemon: None,
            dir,
        };
        server.launch(listen);
        server
    }

    fn launch(&mut self, listen: &str) {
        let addr_file = self.data_dir.join("listen.addr");
        // A stale file from the previous run would make the wait below
        // return before the new process listens.
        let _ = fs::remove_file(&addr_file);
        let mut cmd = hallmark_cmd(&["server", "run"]);
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--trust-domain", &self.td, "--listen", listen])
            .arg("--admin-socket")
            .arg(&self.admin_socket)
            .args(&self.extra_args);
        let log = self.dir.path().join("server.log");
        let mut daemon = Daemon::spawn("server", cmd, &log, None);

        let what = format!("the server to write {}", addr_file.display());
        self.addr = wait_until(&what, WAIT, || {
            daemon.assert_alive(&what);
            let text = fs::read_to_string(&addr_file).ok()?;
            text.trim().parse::<SocketAddr>().ok()
        });
        let what = format!(
            "`hallmark status --admin-socket {}` to succeed",
            self.admin_socket.display()
        );
        wait_until(&what, WAIT, || {
            daemon.assert_alive(&what);
            let mut cmd = hallmark_cmd(&["status", "--admin-socket"]);
            cmd.arg(&self.admin_socket);
            run(&mut cmd, CLI_TIMEOUT).success().then_some(())
        });
        self.daemon = Some(daemon);
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// SIGTERMs the server and returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.daemon.take().expect("server is running").terminate()
    }

    /// Kills the server if it runs, then starts it again on the same data
    /// dir and the same address (agents know the server by that address).
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        self.launch(&listen);
    }

    /// `spiffe://TD/PATH`.
    pub fn id(&self, path: &str) -> String {
        format!("spiffe://{}/{}", self.td, path.trim_start_matches('/'))
    }

    /// The agent SPIFFE ID the contract derives from a node name.
    pub fn agent_id(&self, node: &str) -> String {
        self.id(&format!("hallmark/agent/{node}"))
    }

    /// Runs an admin command against this server (socket via
    /// HALLMARK_ADMIN_SOCKET).
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = hallmark_cmd(args);
        cmd.env("HALLMARK_ADMIN_SOCKET", &self.admin_socket);
        run(&mut cmd, CLI_TIMEOUT)
    }

    /// Runs an admin command with `--json` appended and parses its stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.cli(&all).ok().json()
    }

    /// `hallmark token generate --node NODE --json`.
    #[track_caller]
    pub fn join_token(&self, node: &str) -> JoinToken {
        let v = self.json(&["token", "generate", "--node", node]);
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("token generate: no string `{k}` in {v}"))
                .to_string()
        };
        JoinToken {
            token: field("token"),
            agent_spiffe_id: field("agent_spiffe_id"),
            ca_fingerprint: field("ca_fingerprint"),
            expires_at: v["expires_at"]
                .as_i64()
                .unwrap_or_else(|| panic!("token generate: no integer `expires_at` in {v}")),
        }
    }

    /// `hallmark entry create --spiffe-id ID --parent AGENT --selector S... EXTRA --json`;
    /// returns the entry JSON.
    #[track_caller]
    pub fn create_entry(
        &self,
        spiffe_id: &str,
        parent: &str,
        selectors: &[&str],
        extra: &[&str],
    ) -> Value {
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            spiffe_id,
            "--parent",
            parent,
        ];
        for s in selectors {
            args.extend(["--selector", s]);
        }
        args.extend_from_slice(extra);
        let entry = self.json(&args);
        assert_eq!(entry["spiffe_id"], spiffe_id, "entry create echoed {entry}");
        entry
    }

    /// Deletes an entry by id.
    #[track_caller]
    pub fn delete_entry(&self, id: &str) {
        self.cli(&["entry", "delete", id]).ok();
    }

    /// `hallmark bundle show` (PEM).
    #[track_caller]
    pub fn bundle_pem(&self) -> String {
        self.cli(&["bundle", "show"]).ok().stdout
    }
}

pub struct JoinToken {
    pub token: String,
    pub agent_spiffe_id: String,
    pub ca_fingerprint: String,
    pub expires_at: i64,
}

pub fn entry_id(entry: &Value) -> String {
    entry["id"]
        .as_str()
        .unwrap_or_else(|| panic!("entry has no string `id`: {entry}"))
        .to_string()
}

// ---------------------------------------------------------------------------
// Agent
// ---------------------------------------------------------------------------

/// A `hallmark agent run` attested to a [`TestServer`], serving the Workload
/// API on a socket in its own temp dir.
pub struct TestAgent {
    pub node: String,
    pub spiffe_id: String,
    pub td: String,
    pub server_addr: SocketAddr,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    /// Extra `agent run` flags, kept across restarts.
    extra_args: Vec<String>,
    /// Runs the agent as this uid (gid the same) instead of root.
    run_as: Option<u32>,
    /// Runs the agent in this network namespace (`ip netns` name).
    netns: Option<String>,
    daemon: Option<Daemon>,
    pub dir: TempDir,
}

impl TestAgent {
    /// [`TestAgent::start_with`] with no container runtime (`--runtime
    /// none`): the identity-plane tests attest by uid only.
    #[track_caller]
    pub fn start(server: &TestServer, node: &str) -> Self {
        Self::start_with(server, node, &["--runtime", "none"])
    }

    /// Generates a join token for `node`, starts the agent with it and waits
    /// until the Workload API answers (i.e. the agent synced once).
    #[track_caller]
    pub fn start_with(server: &TestServer, node: &str, extra_args: &[&str]) -> Self {
        let token = server.join_token(node);
        assert_eq!(
            token.agent_spiffe_id,
            server.agent_id(node),
            "token generate names the agent ID the contract derives from the node"
        );
        let dir = short_tempdir();
        let mut agent = TestAgent {
            node: node.to_string(),
            spiffe_id: token.agent_spiffe_id.clone(),
            td: server.td.clone(),
            server_addr: server.addr,
            socket: dir.path().join("w.sock"),
            data_dir: dir.path().join("agent"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            run_as: None,
            netns: None,
            daemon: None,
            dir,
        };
        fs::create_dir_all(&agent.data_dir).expect("create agent data dir");
        agent.bootstrap(&token);
        agent
    }

    /// [`TestAgent::start_with`] with the agent in the network namespace
    /// `netns` (a node of its own: its interfaces are the namespace's).
    #[track_caller]
    pub fn start_in_netns(
        server: &TestServer,
        node: &str,
        extra_args: &[&str],
        netns: &str,
    ) -> Self {
        let token = server.join_token(node);
        let dir = short_tempdir();
        let mut agent = TestAgent {
            node: node.to_string(),
            spiffe_id: token.agent_spiffe_id.clone(),
            td: server.td.clone(),
            server_addr: server.addr,
            socket: dir.path().join("w.sock"),
            data_dir: dir.path().join("agent"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            run_as: None,
            netns: Some(netns.to_string()),
            daemon: None,
            dir,
        };
        fs::create_dir_all(&agent.data_dir).expect("create agent data dir");
        agent.bootstrap(&token);
        agent
    }

    /// [`TestAgent::start_with`] with the agent running as `uid` (its data
    /// directory, which then also holds the socket, owned by that uid).
    #[track_caller]
    pub fn start_as(server: &TestServer, node: &str, extra_args: &[&str], uid: u32) -> Self {
        let token = server.join_token(node);
        let dir = short_tempdir();
        let data_dir = dir.path().join("agent");
        fs::create_dir_all(&data_dir).expect("create agent data dir");
        nix::unistd::chown(
            &data_dir,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(uid)),
        )
        .expect("chown agent data dir");
        let mut agent = TestAgent {
            node: node.to_string(),
            spiffe_id: token.agent_spiffe_id.clone(),
            td: server.td.clone(),
            server_addr: server.addr,
            socket: data_dir.join("w.sock"),
            data_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            run_as: Some(uid),
            netns: None,
            daemon: None,
            dir,
        };
        agent.bootstrap(&token);
        agent
    }

    fn bootstrap(&mut self, token: &JoinToken) {
        let agent = self;
        agent.launch(&[
            "--join-token",
            &token.token,
            "--ca-fingerprint",
            &token.ca_fingerprint,
        ]);
    }

    fn launch(&mut self, bootstrap: &[&str]) {
        let mut cmd = hallmark_cmd(&["agent", "run"]);
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--server", &self.server_addr.to_string()])
            .arg("--socket")
            .arg(&self.socket)
            .args(["--trust-domain", &self.td]);
        // eBPF capture sees every socket of the machine: only the tests
        // about it turn it on, so parallel agents do not all report the
        // whole test run's traffic.
        if !self.extra_args.iter().any(|a| a == "--flows") {
            cmd.args(["--flows", "off"]);
        }
        // Kernel enforcement acts on every container of the machine the
        // policy names: only the tests about it turn it on.
        if !self.extra_args.iter().any(|a| a == "--enforcement") {
            cmd.args(["--enforcement", "off"]);
        }
        cmd.args(&self.extra_args).args(bootstrap);
        if let Some(ns) = &self.netns {
            cmd = in_netns(ns, &cmd);
        }
        if let Some(uid) = self.run_as {
            cmd.uid(uid).gid(uid).current_dir("/");
        }
        let log = self.dir.path().join("agent.log");
        let mut daemon = Daemon::spawn(&format!("agent {}", self.node), cmd, &log, None);
        let what = format!("agent socket {} to exist", self.socket.display());
        wait_until(&what, WAIT, || {
            daemon.assert_alive(&what);
            self.socket.exists().then_some(())
        });
        let what = format!(
            "the Workload API on {} to answer other than Unavailable",
            self.socket.display()
        );
        wait_until(&what, WAIT, || {
            daemon.assert_alive(&what);
            match probe_workload_api(&self.socket) {
                Ok(()) => Some(()),
                Err(_) => None,
            }
        });
        self.daemon = Some(daemon);
    }

    /// SIGKILLs the agent.
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// SIGTERMs the agent and returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.daemon.take().expect("agent is running").terminate()
    }

    /// Kills the agent if it runs and starts it again on the same data dir
    /// and socket, without a join token: it must come back on its own SVID.
    pub fn restart(&mut self) {
        self.kill();
        self.launch(&[]);
    }

    /// The `SPIFFE_ENDPOINT_SOCKET` value for this agent.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs a workload command (socket via SPIFFE_ENDPOINT_SOCKET) as root.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = hallmark_cmd(args);
        cmd.env("SPIFFE_ENDPOINT_SOCKET", self.endpoint());
        run(&mut cmd, CLI_TIMEOUT)
    }

    /// Runs a workload command as `uid` (gid the same), from `/` so the
    /// child never depends on the test's working directory.
    #[track_caller]
    pub fn cli_as(&self, uid: u32, args: &[&str]) -> Output {
        let mut cmd = hallmark_cmd(args);
        cmd.env("SPIFFE_ENDPOINT_SOCKET", self.endpoint())
            .current_dir("/")
            .uid(uid)
            .gid(uid);
        run(&mut cmd, CLI_TIMEOUT)
    }

    /// `hallmark svid fetch --out DIR` as root, parsed.
    #[track_caller]
    pub fn fetch_svid(&self) -> FetchedSvid {
        let out = tempfile::Builder::new()
            .prefix("svid")
            .tempdir_in(self.dir.path())
            .expect("create svid out dir");
        let mut cmd = hallmark_cmd(&["svid", "fetch", "--out"]);
        cmd.arg(out.path())
            .env("SPIFFE_ENDPOINT_SOCKET", self.endpoint());
        run(&mut cmd, CLI_TIMEOUT).ok();
        FetchedSvid::read(out.path())
    }

    /// `hallmark svid fetch` as root; `Err` carries the failed output.
    pub fn try_fetch_svid(&self) -> Result<FetchedSvid, Output> {
        let out = tempfile::Builder::new()
            .prefix("svid")
            .tempdir_in(self.dir.path())
            .expect("create svid out dir");
        let mut cmd = hallmark_cmd(&["svid", "fetch", "--out"]);
        cmd.arg(out.path())
            .env("SPIFFE_ENDPOINT_SOCKET", self.endpoint());
        let output = run(&mut cmd, CLI_TIMEOUT);
        if output.success() {
            Ok(FetchedSvid::read(out.path()))
        } else {
            Err(output)
        }
    }

    /// Waits until FetchX509SVID (as root) holds every one of `want`; fails
    /// after `within` with the last answer.
    #[track_caller]
    pub fn wait_for_ids(&self, want: &[&str], within: Duration) -> Vec<String> {
        let what = format!(
            "FetchX509SVID on {} to hold {want:?}",
            self.socket.display()
        );
        let deadline = Instant::now() + within;
        loop {
            let last = match x509_ids(&self.socket) {
                Ok(ids) if want.iter().all(|w| ids.iter().any(|i| i == w)) => return ids,
                Ok(ids) => format!("SVIDs {ids:?}"),
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; last answer: {last}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A raw Workload API client on this agent's socket.
    pub async fn client(&self) -> WorkloadClient {
        connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.socket.display()))
    }
}

/// Runs `fut` to completion on a private runtime in a thread of its own, so
/// synchronous helpers work both in plain tests and inside async ones (a
/// runtime cannot block inside another).
pub fn block_on<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a private tokio runtime")
            .block_on(fut)
    })
    .join()
    .expect("private runtime thread panicked")
}

/// The SPIFFE IDs of the first FetchX509SVID answer on `socket`, as the
/// test process's own uid (root); `Err` names the status or transport error.
pub fn x509_ids(socket: &Path) -> Result<Vec<String>, String> {
    let socket = socket.to_path_buf();
    block_on(async move {
        let fut = async {
            let mut client = connect(&socket)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let first = match client.fetch_x509svid(req(X509svidRequest {})).await {
                Ok(resp) => resp.into_inner().message().await,
                Err(status) => Err(status),
            };
            match first {
                Ok(Some(msg)) => Ok(msg.svids.into_iter().map(|s| s.spiffe_id).collect()),
                Ok(None) => Err("stream ended without a message".to_string()),
                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
            }
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .map_err(|_| "no answer within 5s".to_string())?
    })
}

/// One Workload API round trip: `Ok` once the agent answers FetchX509SVID
/// with anything but Unavailable or a transport error (SVIDs, or
/// PermissionDenied for a caller without entries).
fn probe_workload_api(socket: &Path) -> Result<(), String> {
    match x509_ids(socket) {
        Ok(_) => Ok(()),
        Err(e) if e.starts_with(&format!("{:?}:", Code::PermissionDenied)) => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------
// `hallmark up`
// ---------------------------------------------------------------------------

/// `hallmark up --home DIR`: server and agent in one process.
pub struct TestUp {
    pub home: PathBuf,
    pub stdout: PathBuf,
    daemon: Daemon,
    pub dir: TempDir,
    args: Vec<String>,
}

impl TestUp {
    #[track_caller]
    pub fn start() -> Self {
        // Kernel enforcement would pin programs for node `local` that
        // outlive the test: only the tests about it turn it on.
        Self::start_with(&["--enforcement", "off"])
    }

    /// `hallmark up` with `args` (which stay for restarts).
    #[track_caller]
    pub fn start_with(args: &[&str]) -> Self {
        let dir = short_tempdir();
        let home = dir.path().join("home");
        let stdout = dir.path().join("up.out");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let daemon = Self::launch(&home, &stdout, &dir.path().join("up.log"), &args);
        TestUp {
            home,
            stdout,
            daemon,
            dir,
            args,
        }
    }

    #[track_caller]
    fn launch(home: &Path, stdout: &Path, log: &Path, args: &[String]) -> Daemon {
        let socket = home.join("agent/workload.sock");
        // A socket left by the previous run would make the wait below
        // return before the new process is up.
        let _ = fs::remove_file(&socket);
        let mut cmd = hallmark_cmd(&["up", "--home"]);
        cmd.arg(home);
        cmd.args(args);
        let mut daemon = Daemon::spawn("up", cmd, log, Some(stdout));
        let what = format!("`hallmark up` to create {}", socket.display());
        wait_until(&what, WAIT, || {
            daemon.assert_alive(&what);
            socket.exists().then_some(())
        });
        daemon
    }

    /// SIGTERMs `hallmark up` and starts it again on the same home.
    #[track_caller]
    pub fn restart(&mut self) {
        let status = self.daemon.terminate();
        assert!(
            status.success(),
            "`hallmark up` exited with {status} on SIGTERM"
        );
        self.daemon = Self::launch(&self.home, &self.stdout, &self.log(), &self.args);
    }

    /// Where `hallmark up` logs (stderr, across restarts).
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("up.log")
    }

    /// Runs an admin command against this `up`'s server.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = hallmark_cmd(args);
        cmd.env("HALLMARK_ADMIN_SOCKET", self.admin_socket());
        run(&mut cmd, CLI_TIMEOUT)
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("agent/workload.sock")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.home.join("server/admin.sock")
    }

    pub fn printed(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn daemon(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

// ---------------------------------------------------------------------------
// Workload API (raw tonic client)
// ---------------------------------------------------------------------------

/// Connects a raw Workload API client to a Unix socket.
pub async fn connect(socket: &Path) -> Result<WorkloadClient, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    // The URI is required by the builder but never dialled: the connector
    // below ignores it and opens the Unix socket instead.
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

/// A request carrying the `workload.spiffe.io: true` header every Workload
/// API call needs.
pub fn req<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        hallmark_proto::WORKLOAD_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// What the tests look at in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub uri_sans: Vec<String>,
    pub is_ca: bool,
    pub subject: String,
    pub issuer: String,
}

#[track_caller]
pub fn cert_info(der: &[u8]) -> CertInfo {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).expect("parse certificate DER");
    let mut uri_sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(u) = name {
                uri_sans.push(u.to_string());
            }
        }
    }
    CertInfo {
        serial: cert.raw_serial_as_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        uri_sans,
        is_ca: cert.is_ca(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
    }
}

/// Splits concatenated DER certificates (the Workload API's chain and
/// bundle encoding).
#[track_caller]
pub fn split_der_certs(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    use x509_parser::prelude::*;
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (rest, _) = X509Certificate::from_der(bytes).unwrap_or_else(|e| {
            panic!(
                "certificate {} of a concatenated DER list does not parse: {e}",
                out.len()
            )
        });
        out.push(bytes[..bytes.len() - rest.len()].to_vec());
        bytes = rest;
    }
    out
}

/// The DER of every CERTIFICATE block in a PEM text.
#[track_caller]
pub fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(text)
        .expect("parse PEM")
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect()
}

/// Verifies `chain` (leaf first) up to one of `roots` with webpki, at the
/// current time, for client-auth use.
pub fn verify_chain(chain: &[Vec<u8>], roots: &[Vec<u8>]) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, UnixTime};
    let (leaf, intermediates) = chain.split_first().ok_or("empty chain")?;
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let anchors = root_ders
        .iter()
        .map(|d| webpki::anchor_from_trusted_cert(d).map_err(|e| format!("bundle root: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| format!("leaf: {e}"))?;
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("chain does not verify: {e}"))
}

/// What `hallmark svid fetch --out DIR` wrote.
pub struct FetchedSvid {
    pub chain: Vec<Vec<u8>>,
    pub bundle: Vec<Vec<u8>>,
    pub key_mode: u32,
    pub leaf: CertInfo,
}

impl FetchedSvid {
    #[track_caller]
    pub fn read(dir: &Path) -> Self {
        let read = |name: &str| {
            fs::read_to_string(dir.join(name))
                .unwrap_or_else(|e| panic!("svid fetch --out wrote no readable {name}: {e}"))
        };
        let chain = pem_certs(&read("svid.pem"));
        assert!(!chain.is_empty(), "svid.pem holds no certificate");
        let bundle = pem_certs(&read("bundle.pem"));
        assert!(!bundle.is_empty(), "bundle.pem holds no certificate");
        let key = read("svid.key");
        assert!(key.contains("PRIVATE KEY"), "svid.key holds no private key");
        let key_mode = fs::metadata(dir.join("svid.key"))
            .expect("stat svid.key")
            .permissions()
            .mode()
            & 0o777;
        let leaf = cert_info(&chain[0]);
        FetchedSvid {
            chain,
            bundle,
            key_mode,
            leaf,
        }
    }

    pub fn spiffe_id(&self) -> &str {
        self.leaf.uri_sans.first().map(String::as_str).unwrap_or("")
    }
}

// ---------------------------------------------------------------------------
// Python interop clients
// ---------------------------------------------------------------------------

/// The interpreter of the repository's `.venv`, created (once per test
/// process, under a file lock shared with other processes) by
/// `scripts/venv.sh` if missing or stale.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let root = repo_root();
            let mut cmd = Command::new("bash");
            cmd.arg(root.join("scripts/venv.sh"));
            run(&mut cmd, Duration::from_secs(900)).ok();
            root.join(".venv/bin/python")
        })
        .clone()
}

/// Runs `tests/interop/SCRIPT ARGS` with the venv interpreter against
/// `agent`'s socket.
#[track_caller]
pub fn run_python(agent: &TestAgent, script: &str, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/interop").join(script))
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    run(&mut cmd, timeout)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
pub mod browser;
pub mod containers;
pub mod flows;
pub mod pcap;
pub mod postgres;
