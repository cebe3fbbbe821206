//! Real container runtimes for the end-to-end tests: a Docker Engine and a
//! containerd with its CRI plugin, set up by `scripts/setup.d/10-containers.sh`
//! (run once per test binary; it is idempotent and quick when all is up).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::{repo_root, run, Output};

/// The image every test container runs: FROM scratch with busybox-static.
pub const BUSYBOX_IMAGE: &str = "hallmark-test/busybox:1";
/// Where containers find the agent's Workload API socket.
pub const SOCKET_IN_CONTAINER: &str = "/run/hallmark/workload.sock";
/// Where containers find the interop client scripts.
pub const INTEROP_IN_CONTAINER: &str = "/interop";

const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts (or confirms) the Docker Engine and containerd CRI, once per
/// test binary. Fails the test, naming the script's output, if that fails.
pub fn ensure_runtimes() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = repo_root().join("scripts/setup.d/10-containers.sh");
        let out = run(Command::new("bash").arg(&script), Duration::from_secs(600));
        assert!(
            out.success(),
            "setting up Docker and containerd with {} failed:\n{out}",
            script.display()
        );
    });
}

/// Runs the docker CLI.
#[track_caller]
pub fn docker(args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run(&mut cmd, DOCKER_TIMEOUT)
}

/// A container removed (with force) when dropped.
pub struct DockerContainer {
    pub id: String,
    pub name: String,
}

impl DockerContainer {
    /// `docker run -d --name NAME ARGS...`; returns once the container runs.
    #[track_caller]
    pub fn run_detached(name: &str, args: &[&str]) -> Self {
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        let out = docker(&all).ok();
        DockerContainer {
            id: out.stdout.trim().to_string(),
            name: name.to_string(),
        }
    }
}

impl Drop for DockerContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Host paths a container needs to run the repository's Python interop
/// clients (the venv with py-spiffe and the interpreter behind it), as
/// `(host, container)` read-only bind mounts at the same paths, plus the
/// interop scripts at [`INTEROP_IN_CONTAINER`]. The image itself holds only
/// busybox; the interpreter and its shared libraries come from the host.
pub fn python_mounts() -> Vec<(PathBuf, PathBuf)> {
    let root = repo_root();
    let venv = root.join(".venv");
    assert!(
        venv.join("bin/python").exists(),
        "{} is missing: run `bash scripts/venv.sh` (scripts/test.sh does)",
        venv.display()
    );
    let python = fs::canonicalize(venv.join("bin/python"))
        .unwrap_or_else(|e| panic!("resolving the venv's python: {e}"));
    // <prefix>/bin/python3.x → <prefix>
    let prefix = python
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("python at {} has no prefix", python.display()))
        .to_path_buf();
    let mut mounts = vec![
        (PathBuf::from("/usr"), PathBuf::from("/usr")),
        (
            fs::canonicalize("/lib").unwrap_or_else(|_| "/lib".into()),
            PathBuf::from("/lib"),
        ),
        (
            fs::canonicalize("/lib64").unwrap_or_else(|_| "/lib64".into()),
            PathBuf::from("/lib64"),
        ),
        (venv.clone(), venv),
        (
            root.join("tests/interop"),
            PathBuf::from(INTEROP_IN_CONTAINER),
        ),
    ];
    if !prefix.starts_with("/usr") {
        mounts.push((prefix.clone(), prefix));
    }
    mounts
}

/// The venv's python, as a container (with [`python_mounts`]) sees it.
pub fn python_in_container() -> String {
    repo_root().join(".venv/bin/python").display().to_string()
}

/// `docker run` flags mounting the Python interop clients and the agent
/// socket, with SPIFFE_ENDPOINT_SOCKET set.
pub fn docker_python_flags(agent_socket: &Path) -> Vec<String> {
    let mut flags = Vec::new();
    for (host, inside) in python_mounts() {
        flags.push("-v".to_string());
        flags.push(format!("{}:{}:ro", host.display(), inside.display()));
    }
    flags.push("-v".to_string());
    flags.push(format!("{}:{SOCKET_IN_CONTAINER}", agent_socket.display()));
    flags.push("-e".to_string());
    flags.push(format!(
        "SPIFFE_ENDPOINT_SOCKET=unix://{SOCKET_IN_CONTAINER}"
    ));
    flags
}
