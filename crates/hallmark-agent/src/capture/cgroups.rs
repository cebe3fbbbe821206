//! From the cgroup ID a socket carries to the local end of a flow: a
//! container of the inventory, or the node (with the systemd unit of the
//! host process).
//!
//! The kernel gives capture only the ID of the socket's cgroup, which is
//! the inode number of its directory in the cgroup2 hierarchy. The
//! directory's path says whose it is, read with the same rules the caller
//! attestation uses (`hallmark_core::cgroup`). IDs are learnt by walking
//! the hierarchy: once at start, then whenever an unknown ID turns up
//! (at most every [`RESCAN_EVERY`], so a flood of sockets from a cgroup
//! that is already gone costs one walk, not one per socket).
//!
//! What a path means can change while the cgroup lives (the runtime tells
//! the inventory about a container a moment after its cgroup exists), so a
//! resolved tag is kept only for [`TAG_TTL`].

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hallmark_core::cgroup::parse_cgroup_path;
use hallmark_core::Workload;

/// Unknown IDs trigger a walk of the hierarchy at most this often.
pub const RESCAN_EVERY: Duration = Duration::from_millis(250);
/// How long a resolved tag is trusted before the inventory is asked again.
pub const TAG_TTL: Duration = Duration::from_secs(5);
/// Directories a walk visits at most (a node has far fewer cgroups).
const MAX_CGROUPS: usize = 200_000;
/// Deepest directory a walk descends to.
const MAX_DEPTH: usize = 24;
/// Paths remembered at most; beyond, the table is rebuilt from scratch.
const MAX_PATHS: usize = 100_000;

/// The local end of a captured flow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalTag {
    /// The container holding the local address; `None` for the node.
    pub container_id: Option<String>,
    /// A host process's systemd unit (`ssh.service`); empty for containers
    /// and for processes outside any unit.
    pub unit: String,
    /// The local workload shares the node's IP (host network) and owns only
    /// its port of it.
    pub by_port: bool,
}

impl LocalTag {
    /// The node itself, as the owner of a host process's socket.
    pub fn node(unit: String) -> Self {
        LocalTag {
            container_id: None,
            unit,
            by_port: false,
        }
    }
}

/// What the inventory says about containers, as the resolver needs it.
pub trait ContainerLookup {
    /// The workload record of a container, when the inventory has it.
    fn workload(&self, container_id: &str) -> Option<Workload>;
    /// The running workloads of one pod (by UID).
    fn pod_workloads(&self, pod_uid: &str) -> Vec<Workload>;
}

impl ContainerLookup for crate::inventory::Inventory {
    fn workload(&self, container_id: &str) -> Option<Workload> {
        self.get(container_id)
    }

    fn pod_workloads(&self, pod_uid: &str) -> Vec<Workload> {
        self.workloads()
            .into_iter()
            .filter(|w| w.pod.as_ref().is_some_and(|p| p.uid == pod_uid))
            .collect()
    }
}

/// What a socket's cgroup ID says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A cgroup of this node, and its local end.
    Tag(LocalTag),
    /// Not found in the hierarchy (gone before it could be read).
    Unknown,
    /// Outside the subtree this agent speaks for.
    Outside,
}

/// Cgroup ID → path, and path → tag.
pub struct CgroupResolver {
    root: PathBuf,
    /// The subtrees whose sockets are this node's, without a trailing `/`;
    /// empty (or holding the root, ``) for all.
    within: Vec<String>,
    paths: HashMap<u64, String>,
    tags: HashMap<u64, (LocalTag, Instant)>,
    last_scan: Option<Instant>,
    scans: u64,
}

impl CgroupResolver {
    /// A resolver over the cgroup2 hierarchy mounted at `root`, for the
    /// sockets of the subtrees `within` (`/`, or none, for all); walks it
    /// once now.
    pub fn new(root: PathBuf, within: &[String]) -> Self {
        let within: Vec<String> = within
            .iter()
            .map(|w| w.trim_end_matches('/').to_string())
            .collect();
        let everything = within.is_empty() || within.iter().any(String::is_empty);
        let mut r = CgroupResolver {
            root,
            within: if everything { Vec::new() } else { within },
            paths: HashMap::new(),
            tags: HashMap::new(),
            last_scan: None,
            scans: 0,
        };
        r.rescan();
        r
    }

    /// Walks of the hierarchy so far.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// The path (relative to the hierarchy's root, starting with `/`) of a
    /// cgroup ID, walking the hierarchy again if it is unknown and the last
    /// walk is old enough.
    pub fn path(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id) {
            let due = self.last_scan.is_none_or(|at| at.elapsed() >= RESCAN_EVERY);
            if !due {
                return None;
            }
            self.rescan();
        }
        self.paths.get(&id).map(String::as_str)
    }

    /// The local end for a socket in cgroup `id`; `None` when the cgroup
    /// is unknown (gone before it could be read) or outside the subtree.
    pub fn tag(&mut self, id: u64, inventory: &dyn ContainerLookup) -> Option<LocalTag> {
        match self.resolve(id, inventory) {
            Resolved::Tag(t) => Some(t),
            Resolved::Unknown | Resolved::Outside => None,
        }
    }

    /// What cgroup `id` is to this node.
    pub fn resolve(&mut self, id: u64, inventory: &dyn ContainerLookup) -> Resolved {
        if let Some((tag, at)) = self.tags.get(&id) {
            if at.elapsed() < TAG_TTL {
                return Resolved::Tag(tag.clone());
            }
        }
        let Some(path) = self.path(id).map(str::to_string) else {
            return if self.within.is_empty() {
                Resolved::Unknown
            } else {
                // Whose it was cannot be told: not claimed.
                Resolved::Outside
            };
        };
        let inside = |w: &String| {
            path == *w
                || path
                    .strip_prefix(w.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        if !self.within.is_empty() && !self.within.iter().any(inside) {
            return Resolved::Outside;
        }
        let tag = tag_of_path(&path, inventory);
        if self.tags.len() >= MAX_PATHS {
            self.tags.clear();
        }
        self.tags.insert(id, (tag.clone(), Instant::now()));
        Resolved::Tag(tag)
    }

    /// Reads the whole hierarchy again.
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.scans += 1;
        let mut paths = HashMap::new();
        walk(&self.root, "", 0, &mut paths);
        self.paths = paths;
        // A cgroup ID whose directory is gone may be reused by a new one.
        self.tags.retain(|id, _| self.paths.contains_key(id));
    }
}

fn walk(dir: &Path, rel: &str, depth: usize, out: &mut HashMap<u64, String>) {
    if out.len() >= MAX_CGROUPS || depth > MAX_DEPTH {
        return;
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    out.insert(
        meta.ino(),
        if rel.is_empty() {
            "/".to_string()
        } else {
            rel.to_string()
        },
    );
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        walk(&entry.path(), &format!("{rel}/{name}"), depth + 1, out);
    }
}

/// What a cgroup path says about the local end.
///
/// - A container's cgroup: that container, unless it shares another's
///   network: Docker `container:<id>` → the container holding the
///   namespace; a pod's containers → the one speaking for the pod's IP
///   (the lowest running container ID, as the ownership heartbeat has it),
///   so one owner holds each address. On the host network (`host`,
///   `node`) the container owns its ports of the node's IP.
/// - Anything else is a host process: the node, with the innermost
///   systemd unit (`*.service`, `*.scope`) on the path.
pub fn tag_of_path(path: &str, inventory: &dyn ContainerLookup) -> LocalTag {
    let Some(id) = parse_cgroup_path(path).and_then(|c| c.container_id) else {
        return LocalTag::node(unit_of_path(path));
    };
    let Some(w) = inventory.workload(&id) else {
        // The cgroup is the container's even if the runtime has not told
        // the inventory yet; the server describes what it knows later.
        return LocalTag {
            container_id: Some(id),
            ..LocalTag::default()
        };
    };
    let mode = w.network_mode.as_str();
    if mode == "host" || mode == "node" {
        return LocalTag {
            container_id: Some(id),
            unit: String::new(),
            by_port: true,
        };
    }
    if let Some(other) = mode.strip_prefix("container:") {
        // Docker names the other container by ID or by name.
        let holder = inventory
            .workload(other)
            .map(|o| o.container_id)
            .unwrap_or_else(|| other.to_string());
        return LocalTag {
            container_id: Some(holder),
            ..LocalTag::default()
        };
    }
    if let Some(pod) = w.pod.as_ref().filter(|p| !p.uid.is_empty()) {
        let speaker = inventory
            .pod_workloads(&pod.uid)
            .into_iter()
            .filter(|m| {
                matches!(
                    m.state,
                    hallmark_core::WorkloadState::Running | hallmark_core::WorkloadState::Paused
                ) && !m.ips.is_empty()
            })
            .map(|m| m.container_id)
            .min()
            .unwrap_or(id);
        return LocalTag {
            container_id: Some(speaker),
            ..LocalTag::default()
        };
    }
    LocalTag {
        container_id: Some(id),
        ..LocalTag::default()
    }
}

/// The innermost systemd unit a host cgroup path names: the last component
/// ending in `.service` or `.scope`; empty when there is none (the root,
/// or a slice).
pub fn unit_of_path(path: &str) -> String {
    path.rsplit('/')
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .unwrap_or_default()
        .to_string()
}
