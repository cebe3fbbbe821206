//! Test scaffolding: the docker CLI against the real engine, and a fake
//! engine on a Unix socket for the replies a real one will not give on cue
//! (a failed inspect, a broken event stream, silence).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub const SOCKET: &str = "/var/run/docker.sock";
pub const IMAGE: &str = "hallmark-test/busybox:1";

/// Fails the test (never skips) when dockerd is not here.
pub fn require_docker() {
    assert!(
        Path::new(SOCKET).exists(),
        "{SOCKET} is missing: these tests need a running dockerd; \
         run `bash scripts/setup.d/10-docker.sh` first"
    );
}

/// Runs the docker CLI; panics with its stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs a docker command line split on whitespace (no quoting: for
/// arguments with spaces use [`docker`]).
pub fn dk(line: &str) -> String {
    docker(&line.split_whitespace().collect::<Vec<_>>())
}

/// Container (and network) names unique to this process and test, removed
/// when the guard drops, whatever the test's outcome.
pub struct Names {
    prefix: String,
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl Names {
    pub fn new(test: &str) -> Self {
        Names {
            prefix: format!("hm-rt-{}-{test}", std::process::id()),
            containers: Mutex::new(Vec::new()),
            networks: Mutex::new(Vec::new()),
        }
    }

    /// A fresh container name, registered for removal.
    pub fn container(&self, what: &str) -> String {
        let n = format!(
            "{}-{what}-{}",
            self.prefix,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.containers.lock().unwrap().push(n.clone());
        n
    }

    /// Registers another name (e.g. after `docker rename`) for removal.
    pub fn also(&self, name: &str) {
        self.containers.lock().unwrap().push(name.to_string());
    }

    pub fn network(&self, what: &str) -> String {
        let n = format!("{}-{what}", self.prefix);
        self.networks.lock().unwrap().push(n.clone());
        n
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let containers = self
            .containers
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        for c in containers {
            let _ = Command::new("docker").args(["rm", "-f", &c]).output();
        }
        let networks = self.networks.lock().map(|n| n.clone()).unwrap_or_default();
        for n in networks {
            let _ = Command::new("docker").args(["network", "rm", &n]).output();
        }
    }
}

/// How the fake engine answers one request.
pub enum Reply {
    /// A complete JSON reply.
    Json(u16, String),
    /// A chunked stream: these lines, then the connection is cut without
    /// the final chunk (`abort`) or closed cleanly.
    Stream { lines: Vec<String>, abort: bool },
    /// Accept and never answer.
    Silence,
}

type Handler = dyn Fn(&str) -> Reply + Send + Sync;

/// A minimal HTTP/1.1 server on a Unix socket that answers GET requests
/// through `handler(path_and_query)` and records every request path.
pub struct FakeEngine {
    pub path: PathBuf,
    pub requests: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl FakeEngine {
    pub fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, handler.clone(), reqs.clone()));
            }
        });
        FakeEngine {
            path,
            requests,
            _dir: dir,
            task,
        }
    }

    pub fn socket(&self) -> &str {
        self.path.to_str().unwrap()
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: UnixStream, handler: Arc<Handler>, requests: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        // Read one request head (GETs only: no body).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        requests.lock().unwrap().push(path.clone());
        match handler(&path) {
            Reply::Json(status, body) => {
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Stream { lines, abort } => {
                let mut resp = String::from(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Transfer-Encoding: chunked\r\n\r\n",
                );
                for l in lines {
                    let l = format!("{l}\n");
                    resp.push_str(&format!("{:x}\r\n{l}\r\n", l.len()));
                }
                if !abort {
                    resp.push_str("0\r\n\r\n");
                }
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.flush().await;
                // Give the client time to read before the cut.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                return;
            }
            Reply::Silence => {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                return;
            }
        }
    }
}
