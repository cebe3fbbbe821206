//! Workload records: what a container runtime says about one container on a
//! node. The agent's inventory holds them, attestation turns them into
//! `docker:*` / `k8s:*` selectors, and the server keeps them (current and
//! recently stopped) for the operator, flow attribution and policy.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::selector::Selector;

/// Which runtime back end a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeSource {
    /// Docker Engine API.
    Docker,
    /// Kubernetes CRI v1 (containerd, CRI-O).
    Cri,
}

impl RuntimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeSource::Docker => "docker",
            RuntimeSource::Cri => "cri",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "docker" => Some(RuntimeSource::Docker),
            "cri" => Some(RuntimeSource::Cri),
            _ => None,
        }
    }
}

impl fmt::Display for RuntimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container's lifecycle state as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadState {
    Created,
    Running,
    Paused,
    /// Exited, dead, or removed from the runtime.
    Stopped,
    Unknown,
}

impl WorkloadState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadState::Created => "created",
            WorkloadState::Running => "running",
            WorkloadState::Paused => "paused",
            WorkloadState::Stopped => "stopped",
            WorkloadState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => WorkloadState::Created,
            "running" => WorkloadState::Running,
            "paused" => WorkloadState::Paused,
            "stopped" => WorkloadState::Stopped,
            "unknown" => WorkloadState::Unknown,
            _ => return None,
        })
    }
}

impl fmt::Display for WorkloadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much of a record the runtime vouched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Inspected through the runtime API: every field is the runtime's word.
    Full,
    /// Known only in part (e.g. listed but the inspect failed, or seen in a
    /// cgroup path with no runtime to ask); `degraded_reason` says why.
    Partial,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Full => "full",
            Confidence::Partial => "partial",
        }
    }
}

/// Docker Compose markers (`com.docker.compose.*` labels).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compose {
    pub project: String,
    pub service: String,
    /// `com.docker.compose.oneoff=True`: a `compose run` container.
    pub oneoff: bool,
}

/// The pod a CRI container belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// The pod sandbox's ID in the runtime.
    pub sandbox_id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub ips: Vec<String>,
}

/// Which container runtime an agent found, and why it is degraded if it is:
/// what the agent reports to the server and writes to its spool file, and
/// what the server keeps per agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStatus {
    /// `docker`, `cri` or `none`.
    pub runtime: String,
    /// The socket the agent talks to.
    pub endpoint: String,
    /// The runtime's own name and version, e.g. `containerd 1.6.20`.
    pub version: String,
    pub degraded: bool,
    /// Why it is degraded (or a note on how it was chosen); empty if neither.
    pub reason: String,
}

/// One container as a runtime describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// The runtime's full container ID (64 hex digits for Docker/containerd).
    pub container_id: String,
    pub source: RuntimeSource,
    /// Docker: the name without its leading `/`. CRI: the container's
    /// metadata name.
    pub name: String,
    /// The image as the container was created from it (`name:tag`, or a
    /// digest reference).
    pub image: String,
    /// The local image ID (`sha256:…`), when known.
    #[serde(default)]
    pub image_id: String,
    /// A repository digest (`repo@sha256:…`) or CRI image ref, when known.
    #[serde(default)]
    pub image_digest: String,
    /// Container labels (Docker) or container labels (CRI).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub compose: Option<Compose>,
    #[serde(default)]
    pub pod: Option<PodInfo>,
    /// The container's init process in the host PID namespace, while running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The container's cgroup path, when the runtime says.
    #[serde(default)]
    pub cgroup: String,
    /// Docker network mode (`bridge`, `host`, `none`, `container:<id>`…);
    /// for CRI pods `pod` or `node`.
    #[serde(default)]
    pub network_mode: String,
    #[serde(default)]
    pub ips: Vec<String>,
    pub state: WorkloadState,
    /// Unix milliseconds.
    #[serde(default)]
    pub created_at_ms: i64,
    #[serde(default)]
    pub started_at_ms: i64,
    #[serde(default)]
    pub finished_at_ms: i64,
    #[serde(default)]
    pub exit_code: Option<i64>,
    pub confidence: Confidence,
    /// Why the record is partial, when it is.
    #[serde(default)]
    pub degraded_reason: String,
    /// The selectors the agent's attestors derive for the workload, as for
    /// a caller of the Workload API, sorted; empty until the agent has
    /// attested it (or when it has no running process).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<String>,
    /// The SPIFFE IDs of the entries on its node whose selectors it holds,
    /// sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spiffe_ids: Vec<String>,
}

impl Workload {
    /// A record that only the cgroup path vouches for: no runtime knew the
    /// container. Used so that a container is never silently absent.
    pub fn partial(container_id: &str, source: RuntimeSource, reason: &str) -> Self {
        Workload {
            container_id: container_id.to_string(),
            source,
            name: String::new(),
            image: String::new(),
            image_id: String::new(),
            image_digest: String::new(),
            labels: BTreeMap::new(),
            compose: None,
            pod: None,
            pid: None,
            cgroup: String::new(),
            network_mode: String::new(),
            ips: Vec::new(),
            state: WorkloadState::Unknown,
            created_at_ms: 0,
            started_at_ms: 0,
            finished_at_ms: 0,
            exit_code: None,
            confidence: Confidence::Partial,
            degraded_reason: reason.to_string(),
            selectors: Vec::new(),
            spiffe_ids: Vec::new(),
        }
    }

    /// The first 12 characters of the ID, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        let end = self
            .container_id
            .char_indices()
            .nth(12)
            .map_or(self.container_id.len(), |(i, _)| i);
        &self.container_id[..end]
    }

    /// The attestation selectors this record yields.
    ///
    /// Docker: `docker:label:<k>:<v>` per label, `docker:image_id`,
    /// `docker:image`, `docker:name`, `docker:compose-project`,
    /// `docker:compose-service`. CRI: `k8s:ns`, `k8s:pod-name`,
    /// `k8s:pod-uid`, `k8s:container-name`, `k8s:container-image`,
    /// `k8s:pod-label:<k>:<v>` per pod label. A partial record yields none:
    /// selectors are only ever the runtime's word. Values that cannot form a
    /// valid selector (empty, control characters, too long) are left out.
    pub fn selectors(&self) -> Vec<Selector> {
        let mut out = Vec::new();
        if self.confidence != Confidence::Full {
            return out;
        }
        let mut push = |ty: &str, key: &str, value: &str| {
            if value.is_empty() {
                return;
            }
            if let Ok(s) = Selector::new(&format!("{ty}:{key}:{value}")) {
                out.push(s);
            }
        };
        match self.source {
            RuntimeSource::Docker => {
                for (k, v) in &self.labels {
                    if !k.is_empty() {
                        push("docker", "label", &format!("{k}:{v}"));
                    }
                }
                push("docker", "image_id", &self.image_id);
                push("docker", "image", &self.image);
                push("docker", "name", &self.name);
                if let Some(c) = &self.compose {
                    push("docker", "compose-project", &c.project);
                    push("docker", "compose-service", &c.service);
                }
            }
            RuntimeSource::Cri => {
                if let Some(pod) = &self.pod {
                    push("k8s", "ns", &pod.namespace);
                    push("k8s", "pod-name", &pod.name);
                    push("k8s", "pod-uid", &pod.uid);
                    for (k, v) in &pod.labels {
                        if !k.is_empty() {
                            push("k8s", "pod-label", &format!("{k}:{v}"));
                        }
                    }
                }
                push("k8s", "container-name", &self.name);
                push("k8s", "container-image", &self.image);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker() -> Workload {
        let mut w = Workload::partial(&"a".repeat(64), RuntimeSource::Docker, "");
        w.confidence = Confidence::Full;
        w.degraded_reason.clear();
        w.name = "web-1".into();
        w.image = "shop/web:1.2".into();
        w.image_id = format!("sha256:{}", "b".repeat(64));
        w.labels.insert("app".into(), "web".into());
        w.labels.insert("tier".into(), "a:b".into());
        w.compose = Some(Compose {
            project: "shop".into(),
            service: "web".into(),
            oneoff: false,
        });
        w
    }

    fn texts(w: &Workload) -> Vec<String> {
        let mut v: Vec<String> = w.selectors().iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn docker_selectors() {
        let w = docker();
        assert_eq!(
            texts(&w),
            vec![
                "docker:compose-project:shop".to_string(),
                "docker:compose-service:web".to_string(),
                "docker:image:shop/web:1.2".to_string(),
                format!("docker:image_id:sha256:{}", "b".repeat(64)),
                "docker:label:app:web".to_string(),
                "docker:label:tier:a:b".to_string(),
                "docker:name:web-1".to_string(),
            ]
        );
    }

    #[test]
    fn cri_selectors() {
        let mut w = docker();
        w.source = RuntimeSource::Cri;
        w.compose = None;
        w.name = "app".into();
        w.image = "busybox:1".into();
        let mut pod = PodInfo {
            uid: "0f2c5e1a-1b2c-4d5e-8f90-123456789abc".into(),
            name: "pay-0".into(),
            namespace: "payments".into(),
            ..PodInfo::default()
        };
        pod.labels.insert("team".into(), "money".into());
        w.pod = Some(pod);
        assert_eq!(
            texts(&w),
            vec![
                "k8s:container-image:busybox:1",
                "k8s:container-name:app",
                "k8s:ns:payments",
                "k8s:pod-label:team:money",
                "k8s:pod-name:pay-0",
                "k8s:pod-uid:0f2c5e1a-1b2c-4d5e-8f90-123456789abc",
            ]
        );
    }

    #[test]
    fn partial_records_yield_no_selectors() {
        let mut w = docker();
        w.confidence = Confidence::Partial;
        assert!(w.selectors().is_empty());
    }

    #[test]
    fn unusable_values_are_left_out() {
        let mut w = docker();
        w.labels.clear();
        w.labels.insert("bad".into(), "x\ny".into());
        w.labels.insert(String::new(), "v".into());
        w.name.clear();
        let t = texts(&w);
        assert!(!t.iter().any(|s| s.contains("label")), "{t:?}");
        assert!(!t.iter().any(|s| s.starts_with("docker:name")), "{t:?}");
    }

    #[test]
    fn json_round_trip() {
        let w = docker();
        let j = serde_json::to_string(&w).unwrap();
        let back: Workload = serde_json::from_str(&j).unwrap();
        assert_eq!(w, back);
        assert_eq!(w.short_id(), "aaaaaaaaaaaa");
    }
}
