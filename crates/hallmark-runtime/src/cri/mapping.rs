//! CRI records to [`Workload`]s: a container's verbose status, its pod
//! sandbox's status and `ImageStatus` combined into one record, or the
//! listing's partial word when the status call failed. Pure functions, no
//! I/O.

use std::collections::{BTreeMap, HashMap};

use hallmark_core::cgroup::systemd;
use hallmark_core::{Confidence, PodInfo, RuntimeSource, Workload, WorkloadState};

use super::pb;

/// What a pod sandbox contributes to its containers' records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodFacts {
    info: PodInfo,
    network_mode: String,
}

impl PodFacts {
    pub(super) fn from_status(s: &pb::PodSandboxStatus) -> Self {
        let meta = s.metadata.clone().unwrap_or_default();
        let mut ips = Vec::new();
        if let Some(net) = &s.network {
            if !net.ip.is_empty() {
                ips.push(net.ip.clone());
            }
            ips.extend(
                net.additional_ips
                    .iter()
                    .filter(|ip| !ip.ip.is_empty())
                    .map(|ip| ip.ip.clone()),
            );
        }
        let network_mode = s
            .linux
            .as_ref()
            .and_then(|l| l.namespaces.as_ref())
            .and_then(|n| n.options.as_ref())
            .map(|o| namespace_mode(o.network))
            .unwrap_or_default();
        PodFacts {
            info: PodInfo {
                uid: meta.uid,
                name: meta.name,
                namespace: meta.namespace,
                sandbox_id: s.id.clone(),
                labels: sorted(&s.labels),
                annotations: sorted(&s.annotations),
                ips,
            },
            network_mode: network_mode.to_string(),
        }
    }

    /// From the sandbox listing alone, when its status is unavailable: the
    /// pod's identity, but no network.
    pub(super) fn from_listed(s: &pb::PodSandbox) -> Self {
        let meta = s.metadata.clone().unwrap_or_default();
        PodFacts {
            info: PodInfo {
                uid: meta.uid,
                name: meta.name,
                namespace: meta.namespace,
                sandbox_id: s.id.clone(),
                labels: sorted(&s.labels),
                annotations: sorted(&s.annotations),
                ips: Vec::new(),
            },
            network_mode: String::new(),
        }
    }
}

fn namespace_mode(mode: i32) -> &'static str {
    match pb::NamespaceMode::try_from(mode) {
        Ok(pb::NamespaceMode::Pod) => "pod",
        Ok(pb::NamespaceMode::Node) => "node",
        Ok(pb::NamespaceMode::Container) => "container",
        Ok(pb::NamespaceMode::Target) => "target",
        Err(_) => "",
    }
}

fn sorted(m: &HashMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn container_state(state: i32) -> WorkloadState {
    match pb::ContainerState::try_from(state) {
        Ok(pb::ContainerState::ContainerCreated) => WorkloadState::Created,
        Ok(pb::ContainerState::ContainerRunning) => WorkloadState::Running,
        Ok(pb::ContainerState::ContainerExited) => WorkloadState::Stopped,
        Ok(pb::ContainerState::ContainerUnknown) | Err(_) => WorkloadState::Unknown,
    }
}

/// CRI timestamps are Unix nanoseconds; 0 means "not set" and stays 0.
pub(super) fn ns_to_ms(ns: i64) -> i64 {
    if ns > 0 {
        ns / 1_000_000
    } else {
        0
    }
}

pub(super) fn spec_image(spec: &pb::ImageSpec) -> String {
    if spec.user_specified_image.is_empty() {
        spec.image.clone()
    } else {
        spec.user_specified_image.clone()
    }
}

/// What the verbose `info` map says about a container.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct RuntimeInfo {
    pub(super) pid: Option<u32>,
    pub(super) cgroup: String,
    pub(super) sandbox_id: String,
    /// The image spec the container was created with.
    pub(super) config_image: String,
}

pub(super) fn parse_info(info: &HashMap<String, String>) -> RuntimeInfo {
    let mut out = RuntimeInfo::default();
    if let Some(v) = info
        .get("info")
        .and_then(|blob| serde_json::from_str::<serde_json::Value>(blob).ok())
    {
        out.pid = v
            .get("pid")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        out.sandbox_id = json_str(&v, "/sandboxID");
        out.cgroup = cgroup_from_spec(&json_str(&v, "/runtimeSpec/linux/cgroupsPath"));
        out.config_image = json_str(&v, "/config/image/image");
    }
    // Older CRI-O releases put these keys at the top level of the map.
    if out.pid.is_none() {
        out.pid = info
            .get("pid")
            .and_then(|p| p.trim().parse::<u32>().ok())
            .filter(|p| *p > 0);
    }
    if out.sandbox_id.is_empty() {
        if let Some(id) = info.get("sandboxID").or_else(|| info.get("sandboxId")) {
            out.sandbox_id = id.trim_matches('"').to_string();
        }
    }
    out
}

fn json_str(v: &serde_json::Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The cgroup path for an OCI `linux.cgroupsPath`: a cgroupfs path is the
/// path; the systemd driver's `slice:prefix:name` names the unit runc
/// creates, `<prefix>-<name>.scope` under the expanded slice. Anything else
/// yields "" rather than a guess.
fn cgroup_from_spec(cgroups_path: &str) -> String {
    if cgroups_path.starts_with('/') {
        return cgroups_path.to_string();
    }
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let [slice, prefix, name] = parts.as_slice() else {
        return String::new();
    };
    if name.is_empty() || name.contains('/') || prefix.contains('/') {
        return String::new();
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let unit = if name.ends_with(".slice") {
        (*name).to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    systemd::unit_path(slice, &unit).unwrap_or_default()
}

/// The reference to ask `ImageStatus` about when the container status
/// leaves the image ID or repository digest unknown.
pub(super) fn image_lookup_key(status: &pb::ContainerStatus) -> Option<String> {
    let (id, digest) = image_identity(status, None);
    if !id.is_empty() && !digest.is_empty() {
        return None;
    }
    let key = if status.image_ref.is_empty() {
        status
            .image
            .as_ref()
            .map(|s| s.image.clone())
            .unwrap_or_default()
    } else {
        status.image_ref.clone()
    };
    (!key.is_empty()).then_some(key)
}

/// `(image_id, image_digest)` from the status, completed by `ImageStatus`.
/// containerd puts a repository digest in `image_ref` when it has one and
/// the image ID otherwise; newer runtimes also fill `image_id`.
fn image_identity(status: &pb::ContainerStatus, image: Option<&pb::Image>) -> (String, String) {
    let mut id = normalize_image_id(&status.image_id);
    if id.is_empty() {
        id = normalize_image_id(&status.image_ref);
    }
    if id.is_empty() {
        if let Some(img) = image {
            id = normalize_image_id(&img.id);
        }
    }
    let digest = if status.image_ref.contains('@') {
        status.image_ref.clone()
    } else {
        image
            .and_then(|img| img.repo_digests.first().cloned())
            .unwrap_or_default()
    };
    (id, digest)
}

/// `sha256:<hex>` for an image ID; CRI-O reports the bare hex. Anything
/// else (a name, a digest reference) is not an ID.
fn normalize_image_id(s: &str) -> String {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("sha256:{}", hex.to_ascii_lowercase())
    } else {
        String::new()
    }
}

pub(super) fn workload_from_status(
    status: &pb::ContainerStatus,
    info: &RuntimeInfo,
    pod: Option<&PodFacts>,
    image: Option<&pb::Image>,
) -> Workload {
    let state = container_state(status.state);
    let (image_id, image_digest) = image_identity(status, image);
    let mut image_name = status.image.as_ref().map(spec_image).unwrap_or_default();
    if image_name.is_empty() {
        image_name.clone_from(&info.config_image);
    }
    let stopped = state == WorkloadState::Stopped;
    Workload {
        container_id: status.id.clone(),
        source: RuntimeSource::Cri,
        name: status
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        image: image_name,
        image_id,
        image_digest,
        labels: sorted(&status.labels),
        compose: None,
        pod: pod.map(|p| p.info.clone()),
        pid: if state == WorkloadState::Running {
            info.pid
        } else {
            None
        },
        cgroup: info.cgroup.clone(),
        network_mode: pod.map(|p| p.network_mode.clone()).unwrap_or_default(),
        ips: pod.map(|p| p.info.ips.clone()).unwrap_or_default(),
        state,
        created_at_ms: ns_to_ms(status.created_at),
        started_at_ms: ns_to_ms(status.started_at),
        finished_at_ms: if stopped {
            ns_to_ms(status.finished_at)
        } else {
            0
        },
        exit_code: stopped.then_some(i64::from(status.exit_code)),
        confidence: Confidence::Full,
        degraded_reason: String::new(),
        selectors: Vec::new(),
        spiffe_ids: Vec::new(),
    }
}

/// A container whose pod cannot be described is not vouched for: its
/// `k8s:*` selectors would lack the namespace and pod.
pub(super) fn mark_pod_unknown(w: &mut Workload, sandbox_id: &str) {
    w.confidence = Confidence::Partial;
    w.degraded_reason = if sandbox_id.is_empty() {
        "CRI: the runtime names no pod sandbox for this container".into()
    } else {
        format!("CRI: pod sandbox {sandbox_id} of this container is unknown to the runtime")
    };
}

/// The listing's word about a container whose status call failed.
pub(super) fn partial_from_listed(
    c: &pb::Container,
    pod: Option<&PodFacts>,
    reason: &str,
) -> Workload {
    let mut w = Workload::partial(
        &c.id,
        RuntimeSource::Cri,
        &format!("CRI ContainerStatus failed: {reason}"),
    );
    w.name = c
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    w.image = c.image.as_ref().map(spec_image).unwrap_or_default();
    w.image_id = normalize_image_id(&c.image_id);
    if w.image_id.is_empty() {
        w.image_id = normalize_image_id(&c.image_ref);
    }
    if c.image_ref.contains('@') {
        w.image_digest.clone_from(&c.image_ref);
    }
    w.labels = sorted(&c.labels);
    w.state = container_state(c.state);
    w.created_at_ms = ns_to_ms(c.created_at);
    if let Some(p) = pod {
        w.pod = Some(p.info.clone());
        w.network_mode.clone_from(&p.network_mode);
        w.ips.clone_from(&p.info.ips);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_map(blob: &str) -> HashMap<String, String> {
        HashMap::from([("info".to_string(), blob.to_string())])
    }

    #[test]
    fn parses_runtime_info() {
        let id = "a".repeat(64);
        let containerd = format!(
            r#"{{"sandboxID":"s1","pid":4242,"removing":false,"config":{{"image":{{"image":"docker.io/x/y:1"}}}},
               "runtimeSpec":{{"linux":{{"cgroupsPath":"/kubepods/besteffort/pod1/{id}"}}}}}}"#
        );
        let cases: Vec<(&str, HashMap<String, String>, RuntimeInfo)> = vec![
            (
                "containerd cgroupfs",
                info_map(&containerd),
                RuntimeInfo {
                    pid: Some(4242),
                    cgroup: format!("/kubepods/besteffort/pod1/{id}"),
                    sandbox_id: "s1".into(),
                    config_image: "docker.io/x/y:1".into(),
                },
            ),
            (
                "containerd systemd",
                info_map(&format!(
                    r#"{{"pid":7,"runtimeSpec":{{"linux":{{"cgroupsPath":"kubepods-besteffort-pod1_2.slice:cri-containerd:{id}"}}}}}}"#
                )),
                RuntimeInfo {
                    pid: Some(7),
                    cgroup: format!(
                        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice/cri-containerd-{id}.scope"
                    ),
                    ..RuntimeInfo::default()
                },
            ),
            (
                "CRI-O",
                info_map(&format!(
                    r#"{{"sandboxID":"s2","pid":99,"privileged":false,"runtimeSpec":{{"linux":{{"cgroupsPath":"kubepods-pod9.slice:crio:{id}"}}}}}}"#
                )),
                RuntimeInfo {
                    pid: Some(99),
                    cgroup: format!("/kubepods.slice/kubepods-pod9.slice/crio-{id}.scope"),
                    sandbox_id: "s2".into(),
                    ..RuntimeInfo::default()
                },
            ),
            (
                "older CRI-O, top-level keys",
                HashMap::from([
                    ("pid".to_string(), "12".to_string()),
                    ("sandboxId".to_string(), "\"s3\"".to_string()),
                ]),
                RuntimeInfo {
                    pid: Some(12),
                    sandbox_id: "s3".into(),
                    ..RuntimeInfo::default()
                },
            ),
            (
                "exited: pid 0 is no pid",
                info_map(r#"{"pid":0}"#),
                RuntimeInfo::default(),
            ),
            (
                "pid out of range",
                info_map(r#"{"pid":99999999999}"#),
                RuntimeInfo::default(),
            ),
            ("not JSON", info_map("{pid: 3"), RuntimeInfo::default()),
            (
                "wrong types",
                info_map(r#"{"pid":"3","sandboxID":5,"runtimeSpec":{"linux":{"cgroupsPath":7}}}"#),
                RuntimeInfo::default(),
            ),
            ("not verbose", HashMap::new(), RuntimeInfo::default()),
        ];
        for (name, input, want) in cases {
            assert_eq!(parse_info(&input), want, "case {name}");
        }
    }

    #[test]
    fn cgroup_paths_from_spec() {
        let cases = [
            ("/hallmark-test/podX/abc", "/hallmark-test/podX/abc"),
            (
                "kubepods-burstable-podU.slice:cri-containerd:abc",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podU.slice/cri-containerd-abc.scope",
            ),
            (":docker:abc", "/system.slice/docker-abc.scope"),
            ("-.slice:crio:abc", "/crio-abc.scope"),
            ("machine.slice::abc", "/machine.slice/abc.scope"),
            ("a-b.slice:p:c.slice", "/a.slice/a-b.slice/c.slice"),
            ("", ""),
            ("relative/path", ""),
            ("a.slice:p", ""),
            ("a.slice:p:n:extra", ""),
            ("notaslice:p:n", ""),
            ("a--b.slice:p:n", ""),
            ("-a.slice:p:n", ""),
            ("a.slice:p:", ""),
            ("a.slice:p:n/../x", ""),
        ];
        for (input, want) in cases {
            assert_eq!(cgroup_from_spec(input), want, "input {input:?}");
        }
    }

    #[test]
    fn image_identity_sources() {
        let hex = "c".repeat(64);
        let id = format!("sha256:{hex}");
        let digest = format!("docker.io/library/busybox@sha256:{}", "d".repeat(64));
        let status = |image_ref: &str, image_id: &str| pb::ContainerStatus {
            image_ref: image_ref.into(),
            image_id: image_id.into(),
            image: Some(pb::ImageSpec {
                image: "docker.io/library/busybox:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let looked_up = pb::Image {
            id: id.clone(),
            repo_digests: vec![digest.clone()],
            ..Default::default()
        };
        // (name, status, ImageStatus answer, (image_id, image_digest), lookup key)
        type Case<'a> = (
            &'a str,
            pb::ContainerStatus,
            Option<&'a pb::Image>,
            (String, String),
            Option<String>,
        );
        let cases: Vec<Case> = vec![
            // containerd without a repo digest: the ref is the ID.
            (
                "id ref",
                status(&id, ""),
                None,
                (id.clone(), String::new()),
                Some(id.clone()),
            ),
            (
                "id ref + lookup",
                status(&id, ""),
                Some(&looked_up),
                (id.clone(), digest.clone()),
                Some(id.clone()),
            ),
            (
                "digest ref",
                status(&digest, ""),
                None,
                (String::new(), digest.clone()),
                Some(digest.clone()),
            ),
            (
                "digest ref + lookup",
                status(&digest, ""),
                Some(&looked_up),
                (id.clone(), digest.clone()),
                Some(digest.clone()),
            ),
            (
                "newer runtime: both in the status",
                status(&digest, &id),
                None,
                (id.clone(), digest.clone()),
                None,
            ),
            (
                "CRI-O bare hex id",
                status(&digest, &hex),
                None,
                (id.clone(), digest.clone()),
                None,
            ),
            (
                "no ref: look up by name",
                status("", ""),
                None,
                (String::new(), String::new()),
                Some("docker.io/library/busybox:1".into()),
            ),
        ];
        for (name, st, img, want, key) in cases {
            assert_eq!(image_identity(&st, img), want, "case {name}");
            assert_eq!(image_lookup_key(&st), key, "case {name}");
        }
        assert_eq!(
            normalize_image_id(&format!("sha256:{}", "A".repeat(64))),
            format!("sha256:{}", "a".repeat(64))
        );
        assert_eq!(normalize_image_id("sha256:abc"), "");
        assert_eq!(normalize_image_id("busybox:1"), "");
    }

    fn sandbox_status(network: pb::NamespaceMode) -> pb::PodSandboxStatus {
        pb::PodSandboxStatus {
            id: "sb1".into(),
            metadata: Some(pb::PodSandboxMetadata {
                name: "pay-0".into(),
                uid: "0f2c5e1a-1b2c-4d5e-8f90-123456789abc".into(),
                namespace: "payments".into(),
                attempt: 0,
            }),
            network: Some(pb::PodSandboxNetworkStatus {
                ip: "10.0.0.5".into(),
                additional_ips: vec![
                    pb::PodIp {
                        ip: "fd00::5".into(),
                    },
                    pb::PodIp { ip: String::new() },
                ],
            }),
            linux: Some(pb::LinuxPodSandboxStatus {
                namespaces: Some(pb::Namespace {
                    options: Some(pb::NamespaceOption {
                        network: network as i32,
                        ..Default::default()
                    }),
                }),
            }),
            labels: HashMap::from([("team".into(), "money".into())]),
            annotations: HashMap::from([("a".into(), "b".into())]),
            ..Default::default()
        }
    }

    fn container_status(state: pb::ContainerState) -> pb::ContainerStatus {
        pb::ContainerStatus {
            id: "f".repeat(64),
            metadata: Some(pb::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            state: state as i32,
            created_at: 1_700_000_000_123_456_789,
            started_at: 1_700_000_001_000_000_000,
            finished_at: 1_700_000_002_999_999_999,
            exit_code: 137,
            image: Some(pb::ImageSpec {
                image: "docker.io/hallmark-test/busybox:1".into(),
                ..Default::default()
            }),
            image_ref: format!("sha256:{}", "c".repeat(64)),
            labels: HashMap::from([("app".into(), "pay".into())]),
            ..Default::default()
        }
    }

    #[test]
    fn record_from_running_container() {
        let pod = PodFacts::from_status(&sandbox_status(pb::NamespaceMode::Pod));
        let info = RuntimeInfo {
            pid: Some(4242),
            cgroup: "/hallmark-test/podU/fff".into(),
            ..RuntimeInfo::default()
        };
        let w = workload_from_status(
            &container_status(pb::ContainerState::ContainerRunning),
            &info,
            Some(&pod),
            None,
        );
        assert_eq!(w.container_id, "f".repeat(64));
        assert_eq!(w.source, RuntimeSource::Cri);
        assert_eq!(w.name, "app");
        assert_eq!(w.image, "docker.io/hallmark-test/busybox:1");
        assert_eq!(w.image_id, format!("sha256:{}", "c".repeat(64)));
        assert_eq!(w.image_digest, "");
        assert_eq!(w.labels.get("app").map(String::as_str), Some("pay"));
        assert_eq!(w.state, WorkloadState::Running);
        assert_eq!(w.pid, Some(4242));
        assert_eq!(w.cgroup, "/hallmark-test/podU/fff");
        assert_eq!(w.network_mode, "pod");
        assert_eq!(w.ips, vec!["10.0.0.5", "fd00::5"]);
        assert_eq!(w.created_at_ms, 1_700_000_000_123);
        assert_eq!(w.started_at_ms, 1_700_000_001_000);
        assert_eq!(w.finished_at_ms, 0, "a running container has not finished");
        assert_eq!(w.exit_code, None);
        assert_eq!(w.confidence, Confidence::Full);
        let p = w.pod.as_ref().expect("pod");
        assert_eq!(
            (
                p.uid.as_str(),
                p.name.as_str(),
                p.namespace.as_str(),
                p.sandbox_id.as_str()
            ),
            (
                "0f2c5e1a-1b2c-4d5e-8f90-123456789abc",
                "pay-0",
                "payments",
                "sb1"
            )
        );
        assert_eq!(p.labels.get("team").map(String::as_str), Some("money"));
        assert_eq!(p.annotations.get("a").map(String::as_str), Some("b"));
        let sel: Vec<String> = w.selectors().iter().map(ToString::to_string).collect();
        assert!(sel.contains(&"k8s:ns:payments".to_string()), "{sel:?}");
    }

    #[test]
    fn record_states() {
        let info = RuntimeInfo {
            pid: Some(9),
            config_image: "from-config:1".into(),
            ..RuntimeInfo::default()
        };
        let cases = [
            (
                pb::ContainerState::ContainerCreated,
                WorkloadState::Created,
                None,
                None,
                0,
            ),
            (
                pb::ContainerState::ContainerRunning,
                WorkloadState::Running,
                Some(9),
                None,
                0,
            ),
            (
                pb::ContainerState::ContainerExited,
                WorkloadState::Stopped,
                None,
                Some(137),
                1_700_000_002_999,
            ),
            (
                pb::ContainerState::ContainerUnknown,
                WorkloadState::Unknown,
                None,
                None,
                0,
            ),
        ];
        for (cri, want, pid, exit, finished) in cases {
            let mut st = container_status(cri);
            st.image = None;
            let w = workload_from_status(&st, &info, None, None);
            assert_eq!(w.state, want, "{cri:?}");
            assert_eq!(w.pid, pid, "{cri:?}");
            assert_eq!(w.exit_code, exit, "{cri:?}");
            assert_eq!(w.finished_at_ms, finished, "{cri:?}");
            assert_eq!(
                w.image, "from-config:1",
                "{cri:?}: falls back to the config image"
            );
        }
        assert_eq!(container_state(42), WorkloadState::Unknown);
    }

    #[test]
    fn pod_network_modes() {
        for (mode, want) in [
            (pb::NamespaceMode::Pod, "pod"),
            (pb::NamespaceMode::Node, "node"),
            (pb::NamespaceMode::Container, "container"),
            (pb::NamespaceMode::Target, "target"),
        ] {
            assert_eq!(
                PodFacts::from_status(&sandbox_status(mode)).network_mode,
                want
            );
        }
        let mut s = sandbox_status(pb::NamespaceMode::Node);
        s.linux = None;
        assert_eq!(
            PodFacts::from_status(&s).network_mode,
            "",
            "not said: left empty"
        );
    }

    #[test]
    fn partial_records() {
        let listed = pb::Container {
            id: "e".repeat(64),
            pod_sandbox_id: "sb1".into(),
            metadata: Some(pb::ContainerMetadata {
                name: "app".into(),
                attempt: 1,
            }),
            image: Some(pb::ImageSpec {
                image: "busybox:1".into(),
                ..Default::default()
            }),
            image_ref: format!("busybox@sha256:{}", "d".repeat(64)),
            state: pb::ContainerState::ContainerExited as i32,
            created_at: 5_000_000,
            labels: HashMap::from([("k".into(), "v".into())]),
            ..Default::default()
        };
        let pod = PodFacts::from_status(&sandbox_status(pb::NamespaceMode::Node));
        let w = partial_from_listed(&listed, Some(&pod), "Timeout");
        assert_eq!(w.confidence, Confidence::Partial);
        assert!(
            w.degraded_reason
                .contains("ContainerStatus failed: Timeout"),
            "{}",
            w.degraded_reason
        );
        assert_eq!(w.name, "app");
        assert_eq!(w.image, "busybox:1");
        assert_eq!(w.image_digest, listed.image_ref);
        assert_eq!(w.state, WorkloadState::Stopped);
        assert_eq!(w.created_at_ms, 5);
        assert_eq!(w.network_mode, "node");
        assert!(
            w.selectors().is_empty(),
            "partial records yield no selectors"
        );

        let mut full = workload_from_status(
            &container_status(pb::ContainerState::ContainerRunning),
            &RuntimeInfo::default(),
            None,
            None,
        );
        mark_pod_unknown(&mut full, "sb9");
        assert_eq!(full.confidence, Confidence::Partial);
        assert!(full.degraded_reason.contains("sb9"));
    }
}
