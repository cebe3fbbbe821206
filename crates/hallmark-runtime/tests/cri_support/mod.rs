//! The CRI test environment: the real containerd on this machine, set up by
//! `scripts/setup.d/10-containers.sh`, and pods that clean up after
//! themselves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use hallmark_runtime::cri::{self, pb};
use pb::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub const CONTAINERD_SOCK: &str = "/run/containerd/containerd.sock";
pub const BUSYBOX: &str = "hallmark-test/busybox:1";
pub const NAMESPACE: &str = "payments";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the setup script once per test binary; panics with its output when
/// it fails, since every test here needs containerd with CRI.
pub fn setup() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        let script = repo_root().join("scripts/setup.d/10-containers.sh");
        let out = Command::new("bash")
            .arg(&script)
            .current_dir(repo_root())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("container test environment unavailable: {e}");
    }
}

/// A fresh UUID v4, from the kernel.
pub fn uuid_v4() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("reading /proc/sys/kernel/random/uuid")
        .trim()
        .to_string()
}

pub async fn client() -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(cri::channel(CONTAINERD_SOCK).await.expect("CRI channel"))
}

/// A host-network pod sandbox in namespace `payments`, removed (with its
/// containers and its cgroup directories) on drop.
pub struct TestPod {
    pub id: String,
    pub uid: String,
    pub name: String,
    pub config: pb::PodSandboxConfig,
}

impl TestPod {
    pub async fn run(prefix: &str) -> TestPod {
        let uid = uuid_v4();
        let name = format!("{prefix}-{}", &uid[..8]);
        let node = pb::NamespaceOption {
            network: pb::NamespaceMode::Node as i32,
            pid: pb::NamespaceMode::Container as i32,
            ipc: pb::NamespaceMode::Pod as i32,
            target_id: String::new(),
        };
        let config = pb::PodSandboxConfig {
            metadata: Some(pb::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: NAMESPACE.into(),
                attempt: 0,
            }),
            // A host-network pod must not set a hostname.
            hostname: String::new(),
            labels: HashMap::from([("team".into(), "money".into())]),
            annotations: HashMap::from([("hallmark.test/suite".into(), "cri".into())]),
            linux: Some(pb::LinuxPodSandboxConfig {
                cgroup_parent: format!("/hallmark-test/pod{uid}"),
                security_context: Some(pb::LinuxSandboxSecurityContext {
                    namespace_options: Some(node),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = client()
            .await
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("RunPodSandbox {name}: {s:?}"))
            .into_inner()
            .pod_sandbox_id;
        TestPod {
            id,
            uid,
            name,
            config,
        }
    }

    /// Creates (not starts) a busybox container running `args`.
    pub async fn create(&self, name: &str, args: &[&str], labels: &[(&str, &str)]) -> String {
        let ns = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let config = pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(pb::ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            args: args.iter().map(|s| s.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            linux: Some(pb::LinuxContainerConfig {
                security_context: Some(pb::LinuxContainerSecurityContext {
                    namespace_options: ns,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        client()
            .await
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: self.id.clone(),
                config: Some(config),
                sandbox_config: Some(self.config.clone()),
            })
            .await
            .unwrap_or_else(|s| panic!("CreateContainer {name} in {}: {s:?}", self.name))
            .into_inner()
            .container_id
    }

    pub async fn start(&self, container_id: &str) {
        client()
            .await
            .start_container(pb::StartContainerRequest {
                container_id: container_id.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("StartContainer {container_id}: {s:?}"));
    }

    /// Creates and starts a container; returns its ID.
    pub async fn spawn(&self, name: &str, args: &[&str], labels: &[(&str, &str)]) -> String {
        let id = self.create(name, args, labels).await;
        self.start(&id).await;
        id
    }

    pub fn cgroup_parent(&self) -> String {
        format!("/hallmark-test/pod{}", self.uid)
    }
}

pub async fn stop_container(container_id: &str) {
    client()
        .await
        .stop_container(pb::StopContainerRequest {
            container_id: container_id.into(),
            timeout: 0,
        })
        .await
        .unwrap_or_else(|s| panic!("StopContainer {container_id}: {s:?}"));
}

pub async fn remove_container(container_id: &str) {
    client()
        .await
        .remove_container(pb::RemoveContainerRequest {
            container_id: container_id.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("RemoveContainer {container_id}: {s:?}"));
}

impl Drop for TestPod {
    fn drop(&mut self) {
        let id = self.id.clone();
        let parent = self.cgroup_parent();
        // Drop may run inside the test's runtime, which must not block on
        // another future: clean up from a thread with its own runtime.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                let mut c = client().await;
                // Removing a sandbox removes its containers too.
                let _ = c
                    .stop_pod_sandbox(pb::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await;
                if let Err(s) = c
                    .remove_pod_sandbox(pb::RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await
                {
                    eprintln!("cleanup: RemovePodSandbox {id}: {s:?}");
                }
            });
            // runc removes the containers' cgroups but not the parent it
            // created for them, in every hierarchy of this hybrid host.
            if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
                for e in entries.flatten() {
                    let dir = e.path().join(parent.trim_start_matches('/'));
                    if dir.is_dir() {
                        let _ = std::fs::remove_dir(&dir);
                    }
                }
            }
        });
        let _ = cleanup.join();
    }
}

/// Waits up to `within` for `f` to return `Some`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A containerd without its CRI plugin, on its own socket and state, for
/// the "speaks gRPC but not CRI" case. Killed (by PID) and removed on drop.
pub struct PlainContainerd {
    pub socket: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PlainContainerd {
    pub fn start() -> PlainContainerd {
        let dir = tempfile::Builder::new()
            .prefix("hallmark-plain-containerd")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            opt = d.join("opt").display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("writing config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawning containerd");
        let plain = PlainContainerd {
            socket,
            child,
            _dir: dir,
        };
        for _ in 0..100 {
            if plain.socket.exists() {
                return plain;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "plain containerd did not create {} within 5 s",
            plain.socket.display()
        );
    }
}

impl Drop for PlainContainerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
