//! From `/proc/<pid>/cgroup` to a container ID and pod UID.
//!
//! The agent attests a caller by its cgroup membership, which the kernel
//! reports and the caller cannot rewrite. It can still choose names where it
//! may create cgroups (a delegated subtree, a container with a writable
//! cgroupfs), so an ID read here is a claim to confirm with the runtime, not
//! proof. Every runtime names the container's cgroup after the container's
//! 64-hex ID, in one of a few shapes:
//!
//! | shape of one path component | who writes it |
//! | --- | --- |
//! | `<id>` (the whole component) | Docker cgroupfs (`/docker/<id>`), containerd (`/<namespace>/<id>`), kubelet cgroupfs (`…/pod<uid>/<id>`), `--cgroup-parent` users |
//! | `<prefix>-<id>.scope` | systemd drivers: `docker-`, `cri-containerd-`, `crio-`, `libpod-`, `nerdctl-` |
//! | `<prefix>-<id>` | cgroupfs managers of CRI-O (`crio-<id>`) and Podman (`libpod_parent/libpod-<id>`) |
//! | `<slice>:<prefix>:<id>` | runc's systemd `cgroupsPath` written literally when systemd does not manage the hierarchy |
//! | `crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope` | the runtime's monitor (conmon): **not** the container |
//!
//! The container is the last component of one of these shapes: sub-cgroups
//! below it (`init.scope`, crun's `container`, kube-proxy's own) belong to
//! it, and a container nested in another (Docker in Docker, kind, Podman
//! running kind) is the innermost one. A 64-hex string that is only part of
//! some other component is never taken: an unknown shape is a host path.
//!
//! The pod UID is read only from the component right above the container
//! (`pod<uid>` for cgroupfs, `kubepods[-<qos>]-pod<uid>.slice` for systemd,
//! where kubelet writes `_` for `-`), so a container nested inside a pod's
//! container is never given that pod.
//!
//! A file has one line per hierarchy: `0::<path>` for the unified (v2)
//! hierarchy, `<n>:<controllers>:<path>` for each v1 hierarchy; hybrid hosts
//! have both. The unified line decides when it names a container (or a
//! monitor); otherwise the v1 lines do, and they must agree with each other.
//! The result always comes from one line: its container, its pod, its path.

pub mod systemd;

use std::collections::HashMap;
use std::fmt;

/// Length of a container ID in hex digits (a SHA-256).
pub const CONTAINER_ID_LEN: usize = 64;

/// What a process's cgroup membership says about its container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// The container ID (64 lowercase hex digits) when the process runs in a
    /// container, `None` for a host process.
    pub container_id: Option<String>,
    /// The Kubernetes pod UID (dashed form, `_` restored to `-`) when the
    /// path names a pod. Only set together with `container_id`. Usually a
    /// UUID; a static pod's UID is the 32-hex hash of its manifest.
    pub pod_uid: Option<String>,
    /// The runtime the path shape points to, when it says.
    pub runtime: Option<RuntimeHint>,
    /// Set when the process is a runtime's monitor for a container (CRI-O's
    /// or Podman's conmon): it names the container watched. Such a process
    /// is not in the container, so `container_id` is `None`.
    pub monitor_of: Option<String>,
    /// The cgroup path the identity was read from (for a host process: the
    /// unified line's path, else the `name=systemd` line's, else the first
    /// line's; empty for empty content).
    pub path: String,
}

/// Which runtime a cgroup path's shape belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeHint {
    /// `/docker/<id>`, `docker-<id>.scope` (also dockershim and cri-dockerd).
    Docker,
    /// `cri-containerd-<id>.scope`, `nerdctl-<id>.scope`, or containerd's
    /// own default `/default/<id>` and `/k8s.io/<id>`.
    Containerd,
    /// `crio-<id>.scope` or `crio-<id>`.
    CriO,
    /// `libpod-<id>.scope` or `libpod-<id>`.
    Podman,
}

/// One variant per rule a `/proc/<pid>/cgroup` file breaks. Lines are
/// numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgroupError {
    /// A line lacks the two `:` separating hierarchy ID, controllers and path.
    #[error("line {line}: must have the form `<id>:<controllers>:<path>`")]
    BadLine { line: usize },
    /// The hierarchy ID is empty, not decimal, or does not fit in 32 bits.
    #[error("line {line}: hierarchy ID must be a decimal number")]
    BadHierarchyId { line: usize },
    /// Hierarchy 0 is the unified (v2) hierarchy, which has no controller list.
    #[error("line {line}: hierarchy 0 (cgroup v2) must have an empty controller list")]
    UnifiedWithControllers { line: usize },
    /// A v1 hierarchy line has an empty controller list.
    #[error("line {line}: cgroup v1 hierarchy {hierarchy} must name its controllers")]
    MissingControllers { line: usize, hierarchy: u32 },
    /// The kernel prints paths from the root of the reader's cgroup namespace.
    #[error("line {line}: cgroup path must start with `/`")]
    RelativePath { line: usize },
    /// The kernel prints each hierarchy once.
    #[error("line {line}: hierarchy {hierarchy} already appeared on line {first}")]
    DuplicateHierarchy {
        line: usize,
        first: usize,
        hierarchy: u32,
    },
    /// Two v1 lines place the process in different containers, pods or
    /// monitors, and no unified line settles it.
    #[error("line {line}: names a different container or pod than line {first}; cgroup v1 lines must agree")]
    Conflict { line: usize, first: usize },
}

impl RuntimeHint {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeHint::Docker => "docker",
            RuntimeHint::Containerd => "containerd",
            RuntimeHint::CriO => "crio",
            RuntimeHint::Podman => "podman",
        }
    }
}

impl fmt::Display for RuntimeHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses the content of `/proc/<pid>/cgroup`.
///
/// Empty content, and paths of no known container shape, give a host
/// identity (no container, no error). Work is linear in the input.
pub fn parse_proc_cgroup(content: &str) -> Result<CgroupIdentity, CgroupError> {
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let mut unified: Option<&str> = None;
    let mut systemd: Option<&str> = None;
    let mut first_path: Option<&str> = None;
    // The v1 decision so far: the line that first named the place (for error
    // messages), and the path and verdict reported.
    let mut v1: Option<(usize, &str, Verdict<'_>)> = None;

    // `split('\n')`, not `lines()`: a cgroup name may end in `\r`, and the
    // kernel refuses `\n` in names, so newlines are the only separators.
    for (index, raw) in content.split('\n').enumerate() {
        let line = index + 1;
        if raw.is_empty() {
            continue;
        }
        let (hierarchy, controllers, path) = split_line(raw, line)?;
        if let Some(&first) = seen.get(&hierarchy) {
            return Err(CgroupError::DuplicateHierarchy {
                line,
                first,
                hierarchy,
            });
        }
        seen.insert(hierarchy, line);
        first_path.get_or_insert(path);

        if hierarchy == 0 {
            unified = Some(path);
            continue;
        }
        if controllers.split(',').any(|c| c == "name=systemd") {
            systemd = Some(path);
        }
        let verdict = classify(path);
        if verdict == Verdict::Host {
            // Controllers left at the root (rdma, a `name=` hierarchy) say
            // nothing against the others.
            continue;
        }
        match v1 {
            None => v1 = Some((line, path, verdict)),
            Some((first, _, chosen)) => {
                if !chosen.same_place(&verdict) {
                    return Err(CgroupError::Conflict { line, first });
                }
                // Same container: report the line that also names the pod.
                if chosen.pod().is_none() && verdict.pod().is_some() {
                    v1 = Some((first, path, verdict));
                }
            }
        }
    }

    if let Some(path) = unified {
        let verdict = classify(path);
        if verdict != Verdict::Host {
            return Ok(verdict.into_identity(path));
        }
    }
    if let Some((_, path, verdict)) = v1 {
        return Ok(verdict.into_identity(path));
    }
    let path = unified.or(systemd).or(first_path).unwrap_or("");
    Ok(Verdict::Host.into_identity(path))
}

/// Reads one cgroup path (the part after the second `:` of a
/// `/proc/<pid>/cgroup` line). `Some` when the path places the process in a
/// container, or in a runtime's monitor scope for one (then only
/// `monitor_of` is set); `None` for a host path.
pub fn parse_cgroup_path(path: &str) -> Option<CgroupIdentity> {
    match classify(path) {
        Verdict::Host => None,
        verdict => Some(verdict.into_identity(path)),
    }
}

/// Whether `s` is a full container ID: exactly 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == CONTAINER_ID_LEN && is_lower_hex(s)
}

/// What one path says, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict<'a> {
    Host,
    Container {
        id: &'a str,
        /// Raw, as in the path (maybe with `_`).
        pod: Option<&'a str>,
        runtime: Option<RuntimeHint>,
    },
    Monitor {
        id: &'a str,
        runtime: RuntimeHint,
    },
}

impl<'a> Verdict<'a> {
    fn pod(&self) -> Option<&'a str> {
        match self {
            Verdict::Container { pod, .. } => *pod,
            _ => None,
        }
    }

    /// Same container (or monitor of the same container), and no two
    /// different pods. A line without the pod does not contradict one with.
    fn same_place(&self, other: &Verdict<'_>) -> bool {
        match (self, other) {
            (
                Verdict::Container { id: a, pod: pa, .. },
                Verdict::Container { id: b, pod: pb, .. },
            ) => {
                a == b
                    && match (pa, pb) {
                        (Some(pa), Some(pb)) => normalize_uid(pa) == normalize_uid(pb),
                        _ => true,
                    }
            }
            (Verdict::Monitor { id: a, .. }, Verdict::Monitor { id: b, .. }) => a == b,
            _ => false,
        }
    }

    fn into_identity(self, path: &str) -> CgroupIdentity {
        let mut identity = CgroupIdentity {
            path: path.to_owned(),
            ..CgroupIdentity::default()
        };
        match self {
            Verdict::Host => {}
            Verdict::Container { id, pod, runtime } => {
                identity.container_id = Some(id.to_owned());
                identity.pod_uid = pod.map(normalize_uid);
                identity.runtime = runtime;
            }
            Verdict::Monitor { id, runtime } => {
                identity.monitor_of = Some(id.to_owned());
                identity.runtime = Some(runtime);
            }
        }
        identity
    }
}

/// Prefixes of `<prefix>-<id>[.scope]` components that hold a container.
const CONTAINER_PREFIXES: &[(&str, RuntimeHint)] = &[
    ("docker", RuntimeHint::Docker),
    ("cri-containerd", RuntimeHint::Containerd),
    ("nerdctl", RuntimeHint::Containerd),
    ("crio", RuntimeHint::CriO),
    ("libpod", RuntimeHint::Podman),
];

/// Prefixes of the runtime monitors' own cgroups (`crio-conmon-<id>.scope`):
/// the monitor runs outside the container it watches.
const MONITOR_PREFIXES: &[(&str, RuntimeHint)] = &[
    ("crio-conmon", RuntimeHint::CriO),
    ("libpod-conmon", RuntimeHint::Podman),
];

/// Parents of a bare-ID component that name the runtime: Docker's
/// cgroupfs parent, and containerd's default `/<namespace>/<id>` for its
/// default and CRI namespaces. Any other parent (a `--cgroup-parent`, a
/// pod) says nothing about the runtime.
const PARENT_HINTS: &[(&str, RuntimeHint)] = &[
    ("docker", RuntimeHint::Docker),
    ("default", RuntimeHint::Containerd),
    ("k8s.io", RuntimeHint::Containerd),
];

/// QoS slices the kubelet's systemd driver nests pods in; kind and k3s put
/// them below `kubelet-` (`kubelet-kubepods-besteffort.slice`).
const POD_SLICE_PARENTS: &[&str] = &["kubepods", "kubepods-besteffort", "kubepods-burstable"];

fn split_line(raw: &str, line: usize) -> Result<(u32, &str, &str), CgroupError> {
    // Only the first two colons separate: a path may contain more.
    let mut parts = raw.splitn(3, ':');
    let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(CgroupError::BadLine { line });
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CgroupError::BadHierarchyId { line });
    }
    let hierarchy: u32 = id
        .parse()
        .map_err(|_| CgroupError::BadHierarchyId { line })?;
    if hierarchy == 0 && !controllers.is_empty() {
        return Err(CgroupError::UnifiedWithControllers { line });
    }
    if hierarchy != 0 && controllers.is_empty() {
        return Err(CgroupError::MissingControllers { line, hierarchy });
    }
    if !path.starts_with('/') {
        return Err(CgroupError::RelativePath { line });
    }
    Ok((hierarchy, controllers, path))
}

/// The last component of a known shape decides; each component is looked at
/// once, with a bounded look at its parent, so work is linear in the path.
fn classify(path: &str) -> Verdict<'_> {
    let mut verdict = Verdict::Host;
    let mut parent: Option<&str> = None;
    for component in path.split('/') {
        if let Some(found) = classify_component(component, parent) {
            verdict = found;
        }
        parent = Some(component);
    }
    verdict
}

fn classify_component<'a>(component: &'a str, parent: Option<&'a str>) -> Option<Verdict<'a>> {
    let pod_of_parent = || parent.and_then(pod_uid_in);
    if is_container_id(component) {
        let runtime = parent.and_then(|p| lookup(PARENT_HINTS, p));
        return Some(Verdict::Container {
            id: component,
            pod: pod_of_parent(),
            runtime,
        });
    }
    if component.contains(':') {
        return colon_form(component);
    }
    let name = component.strip_suffix(".scope").unwrap_or(component);
    let (prefix, id) = name.rsplit_once('-')?;
    if !is_container_id(id) {
        return None;
    }
    if let Some(runtime) = lookup(MONITOR_PREFIXES, prefix) {
        return Some(Verdict::Monitor { id, runtime });
    }
    let runtime = lookup(CONTAINER_PREFIXES, prefix)?;
    Some(Verdict::Container {
        id,
        pod: pod_of_parent(),
        runtime: Some(runtime),
    })
}

/// `<slice>.slice:<prefix>:<id>`: runc's systemd `cgroupsPath` used as a
/// plain path. The pod, if any, is in the slice part.
fn colon_form(component: &str) -> Option<Verdict<'_>> {
    let mut parts = component.split(':');
    let (Some(slice), Some(prefix), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if !slice.ends_with(".slice") || !is_container_id(id) {
        return None;
    }
    let runtime = lookup(CONTAINER_PREFIXES, prefix)?;
    Some(Verdict::Container {
        id,
        pod: pod_uid_in(slice),
        runtime: Some(runtime),
    })
}

/// The raw pod UID a pod cgroup component names: `pod<uid>` (cgroupfs) or
/// `[<root>-]kubepods[-<qos>]-pod<uid>.slice` (systemd).
fn pod_uid_in(component: &str) -> Option<&str> {
    if let Some(uid) = component.strip_prefix("pod") {
        return is_pod_uid(uid).then_some(uid);
    }
    let name = component.strip_suffix(".slice")?;
    // Both UID forms have a fixed length, so the split point is known.
    [36, 32].into_iter().find_map(|len| {
        let split = name.len().checked_sub(len)?;
        let uid = name.get(split..)?;
        let head = name.get(..split)?.strip_suffix("-pod")?;
        let parent_ok = POD_SLICE_PARENTS
            .iter()
            .any(|p| head == *p || head.strip_suffix(p).is_some_and(|root| root.ends_with('-')));
        (parent_ok && is_pod_uid(uid)).then_some(uid)
    })
}

/// A Kubernetes pod UID as kubelet writes it in cgroup names: a lowercase
/// UUID with `-` (cgroupfs) or `_` (systemd) separators, the same one
/// throughout, or the 32 hex digits of a static pod's manifest hash.
fn is_pod_uid(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        32 => is_lower_hex(s),
        36 => {
            let sep = b[8];
            (sep == b'-' || sep == b'_')
                && b.iter().enumerate().all(|(i, &c)| match i {
                    8 | 13 | 18 | 23 => c == sep,
                    _ => matches!(c, b'0'..=b'9' | b'a'..=b'f'),
                })
        }
        _ => false,
    }
}

fn normalize_uid(raw: &str) -> String {
    raw.replace('_', "-")
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn lookup(table: &[(&str, RuntimeHint)], key: &str) -> Option<RuntimeHint> {
    table.iter().find(|(k, _)| *k == key).map(|(_, h)| *h)
}

#[cfg(test)]
mod tests;
