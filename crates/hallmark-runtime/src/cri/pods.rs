//! Host-network pods over CRI, without a kubelet: what Hallmark's end-to-end
//! tests and benchmarks use to put real pods on a node that runs only a CRI
//! runtime (no CNI, hence host networking and no hostname).

use std::collections::HashMap;

use tonic::transport::Channel;

use super::pb;
use super::pb::runtime_service_client::RuntimeServiceClient;
use crate::RuntimeError;

/// One pod to create.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    /// cgroupfs parent, e.g. `/hallmark-test/pod<uid>`.
    pub cgroup_parent: String,
}

/// A bind mount into a container.
#[derive(Debug, Clone)]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    pub readonly: bool,
}

/// One container to create in a pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub labels: HashMap<String, String>,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
}

/// A running pod sandbox. [`HostPod::remove`] stops and removes it with its
/// containers and the cgroup parent directories runc leaves behind.
pub struct HostPod {
    client: RuntimeServiceClient<Channel>,
    pub id: String,
    pub spec: PodSpec,
    config: pb::PodSandboxConfig,
}

fn api(call: &'static str, s: tonic::Status) -> RuntimeError {
    RuntimeError::Api {
        runtime: "cri",
        call,
        reason: format!("{:?}: {}", s.code(), s.message()),
    }
}

impl HostPod {
    pub async fn run(socket: &str, spec: PodSpec) -> Result<HostPod, RuntimeError> {
        let mut client = RuntimeServiceClient::new(super::channel(socket).await?);
        let config = pb::PodSandboxConfig {
            metadata: Some(pb::PodSandboxMetadata {
                name: spec.name.clone(),
                uid: spec.uid.clone(),
                namespace: spec.namespace.clone(),
                attempt: 0,
            }),
            // Host networking: a hostname may not be set.
            hostname: String::new(),
            labels: spec.labels.clone(),
            annotations: spec.annotations.clone(),
            linux: Some(pb::LinuxPodSandboxConfig {
                cgroup_parent: spec.cgroup_parent.clone(),
                security_context: Some(pb::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = client
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| api("RunPodSandbox", s))?
            .into_inner()
            .pod_sandbox_id;
        Ok(HostPod {
            client,
            id,
            spec,
            config,
        })
    }

    /// Creates and starts a container; returns its ID.
    pub async fn spawn(&mut self, c: ContainerSpec) -> Result<String, RuntimeError> {
        let config = pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: c.name.clone(),
                attempt: 0,
            }),
            image: Some(pb::ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            command: c.command,
            args: c.args,
            labels: c.labels,
            envs: c
                .envs
                .into_iter()
                .map(|(key, value)| pb::KeyValue { key, value })
                .collect(),
            mounts: c
                .mounts
                .into_iter()
                .map(|m| pb::Mount {
                    host_path: m.host_path,
                    container_path: m.container_path,
                    readonly: m.readonly,
                    ..Default::default()
                })
                .collect(),
            linux: Some(pb::LinuxContainerConfig {
                security_context: Some(pb::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let id = self
            .client
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: self.id.clone(),
                config: Some(config),
                sandbox_config: Some(self.config.clone()),
            })
            .await
            .map_err(|s| api("CreateContainer", s))?
            .into_inner()
            .container_id;
        self.client
            .start_container(pb::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|s| api("StartContainer", s))?;
        Ok(id)
    }

    /// The container's state and exit code.
    pub async fn container_state(
        &mut self,
        container_id: &str,
    ) -> Result<(pb::ContainerState, i32), RuntimeError> {
        let status = self
            .client
            .container_status(pb::ContainerStatusRequest {
                container_id: container_id.into(),
                verbose: false,
            })
            .await
            .map_err(|s| api("ContainerStatus", s))?
            .into_inner()
            .status
            .unwrap_or_default();
        Ok((status.state(), status.exit_code))
    }

    /// Stops and removes the pod and its containers.
    pub async fn remove(mut self) -> Result<(), RuntimeError> {
        let _ = self
            .client
            .stop_pod_sandbox(pb::StopPodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            })
            .await;
        self.client
            .remove_pod_sandbox(pb::RemovePodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            })
            .await
            .map_err(|s| api("RemovePodSandbox", s))?;
        // runc removes the containers' cgroups but not the parent it made
        // for them, in every hierarchy of a hybrid host.
        if !self.spec.cgroup_parent.is_empty() {
            if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
                for e in entries.flatten() {
                    let dir = e
                        .path()
                        .join(self.spec.cgroup_parent.trim_start_matches('/'));
                    if dir.is_dir() {
                        let _ = std::fs::remove_dir(&dir);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Node network, own PID namespace, pod IPC.
fn namespaces() -> pb::NamespaceOption {
    pb::NamespaceOption {
        network: pb::NamespaceMode::Node as i32,
        pid: pb::NamespaceMode::Container as i32,
        ipc: pb::NamespaceMode::Pod as i32,
        target_id: String::new(),
    }
}
