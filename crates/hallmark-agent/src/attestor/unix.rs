//! The unix attestor: `unix:uid`, `unix:gid`, `unix:user`, `unix:group`,
//! `unix:path` and `unix:sha256` of the process at the other end of a socket,
//! and `unix:container:none` when that process runs in no container.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hallmark_core::cgroup::{parse_proc_cgroup, CgroupError, CgroupIdentity};
use hallmark_core::{Selector, SelectorSet};
use nix::unistd::{Gid, Group, Uid, User};

use super::digest::EXECUTABLES;
use super::peer::{pidfd_is_alive, PeerInfo, Proof};

/// Why a caller could not be attested.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The process that connected is gone; its PID may now belong to another
    /// process, so nothing read under that PID can be trusted to be the caller.
    #[error("workload attestation: the connecting process has exited (its PID may now belong to another process)")]
    PeerExited,
    /// The kernel gave no PID for the peer (it lives in a PID namespace this
    /// agent cannot see into).
    #[error("workload attestation: the peer credentials carry no PID (the caller is in a PID namespace the agent cannot see)")]
    NoPid,
    /// Reading the caller's `/proc/<pid>` entries or its executable failed
    /// while the caller was still alive.
    #[error("workload attestation: reading {what} of pid {pid}: {source}")]
    Proc {
        pid: i32,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// `/proc/<pid>/stat` did not have the layout the kernel documents.
    #[error("workload attestation: /proc/{pid}/stat {rule}")]
    BadStat { pid: i32, rule: &'static str },
    /// The pidfd could not tell whether the caller is alive.
    #[error("workload attestation: checking through its pidfd that pid {pid} is alive: {source}")]
    Liveness {
        pid: i32,
        #[source]
        source: io::Error,
    },
    /// `/proc/<pid>/status` did not have the layout the kernel documents.
    #[error("workload attestation: /proc/{pid}/status {rule}")]
    BadStatus { pid: i32, rule: &'static str },
    /// `/proc/<pid>/cgroup` did not have the layout the kernel documents.
    #[error("workload attestation: /proc/{pid}/cgroup {source}")]
    Cgroup {
        pid: i32,
        #[source]
        source: CgroupError,
    },
    /// The user or group database failed (not: had no entry for the id).
    #[error("workload attestation: looking up the name of {kind} id {id}: {source}")]
    NameLookup {
        kind: &'static str,
        id: u32,
        #[source]
        source: nix::errno::Errno,
    },
}

/// The unix attestor.
///
/// Selectors: `unix:uid:<uid>` and `unix:gid:<gid>` from `SO_PEERCRED` (the
/// credentials at connect, never /proc); `unix:user:<name>` and
/// `unix:group:<name>` when the ids have names; `unix:path:<executable>` and
/// `unix:sha256:<hex>` of the executable, read through `/proc/<pid>/exe`,
/// left out when there is none (a zombie's or kernel thread's) or it was
/// deleted (its path now names another file or none); `unix:container:none`
/// only for a caller proven to run outside any container (its cgroup names
/// none, and it is in the agent's PID namespace).
///
/// Blocking (reads /proc, may hash a file): run it in `spawn_blocking`.
///
/// Invariant: whatever is read under `/proc/<pid>` is used only if, after
/// the read, the pidfd shows the connecting process still exists; a PID is
/// not reused while its process exists, so the read was about the caller.
/// Otherwise the answer is [`AttestError::PeerExited`].
pub fn attest_unix(peer: &PeerInfo) -> Result<SelectorSet, AttestError> {
    attest_process(peer).map(|a| a.selectors)
}

/// What attestation learned about the caller from the kernel.
#[derive(Debug, Clone)]
pub struct Attested {
    /// The `unix:*` selectors.
    pub selectors: SelectorSet,
    /// The caller's container, from its cgroup membership (read under the
    /// same liveness guard as everything else, so it is the caller's).
    pub cgroup: CgroupIdentity,
}

/// [`attest_unix`] plus the caller's cgroup identity.
pub fn attest_process(peer: &PeerInfo) -> Result<Attested, AttestError> {
    match attest(peer, true)? {
        Some(attested) => Ok(attested),
        // `attest` only declines when told not to hash.
        None => Err(AttestError::Proc {
            pid: peer.pid,
            what: "the executable's content",
            source: io::Error::other("not hashed"),
        }),
    }
}

/// [`attest_process`] without hashing: `None` when the caller's executable
/// has not been hashed yet (run [`attest_process`] off the async threads
/// then). Reading /proc and an fstat are quick enough to do inline, which
/// saves a thread hop on every Workload API call from a known binary.
pub fn attest_process_cached(peer: &PeerInfo) -> Option<Result<Attested, AttestError>> {
    attest(peer, false).transpose()
}

/// Attests the process holding `pid` as if it had connected to the
/// Workload API socket at boot tick `known_at_ticks`: the same selectors,
/// read under the same guard, as [`attest_process`] gives a caller on a
/// kernel without `SO_PEERPIDFD`. For a workload whose PID the container
/// runtime reported: `known_at_ticks` is a moment after the runtime said
/// so, and a process that started later cannot be the one it meant (its
/// PID was handed on). The uid and gid are the effective ones, as
/// `SO_PEERCRED` would report them, read from `/proc/<pid>/status` after
/// the pidfd was opened, so the liveness check covers them too.
///
/// Blocking (reads /proc, may hash a file).
pub fn attest_pid(pid: i32, known_at_ticks: u64) -> Result<Attested, AttestError> {
    if pid <= 0 {
        return Err(AttestError::NoPid);
    }
    let opened = PeerInfo::opened_at_accept(pid, 0, 0, known_at_ticks).map_err(|source| {
        AttestError::Proc {
            pid,
            what: "a pidfd",
            source,
        }
    })?;
    let proof = opened.proof().clone();
    let pidfd = match &proof {
        Proof::OpenedAtAccept { pidfd, .. } => pidfd.clone(),
        _ => return Err(AttestError::PeerExited),
    };
    let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        Err(source) => {
            return Err(match pidfd_is_alive(pidfd.as_fd()) {
                Ok(false) => AttestError::PeerExited,
                Ok(true) => AttestError::Proc {
                    pid,
                    what: "/proc/<pid>/status",
                    source,
                },
                Err(source) => AttestError::Liveness { pid, source },
            })
        }
    };
    let (uid, gid) =
        parse_status_ids(&status).map_err(|rule| AttestError::BadStatus { pid, rule })?;
    attest_process(&PeerInfo::with_proof(pid, uid, gid, proof))
}

/// The effective uid and gid from `/proc/<pid>/status` (`Uid:` and `Gid:`
/// lines: real, effective, saved, filesystem).
fn parse_status_ids(text: &str) -> Result<(u32, u32), &'static str> {
    let field = |name: &str| -> Option<u32> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let uid = field("Uid:").ok_or("has no `Uid:` line with an effective uid")?;
    let gid = field("Gid:").ok_or("has no `Gid:` line with an effective gid")?;
    Ok((uid, gid))
}

/// How long a uid/gid → name lookup is reused: /etc/passwd rarely changes,
/// and reading it on every call costs more than the rest of attestation.
const NAME_TTL: std::time::Duration = std::time::Duration::from_secs(5);

type NameCache = std::collections::HashMap<(bool, u32), (std::time::Instant, Option<String>)>;
static NAMES: std::sync::Mutex<Option<NameCache>> = std::sync::Mutex::new(None);

/// A user (`is_user`) or group name, from a short-lived cache.
fn name_of(is_user: bool, id: u32) -> Result<Option<String>, AttestError> {
    let key = (is_user, id);
    let now = std::time::Instant::now();
    {
        let guard = NAMES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, name)) = guard.as_ref().and_then(|m| m.get(&key)) {
            if now.duration_since(*at) < NAME_TTL {
                return Ok(name.clone());
            }
        }
    }
    let name = if is_user {
        User::from_uid(Uid::from_raw(id))
            .map_err(|source| AttestError::NameLookup {
                kind: "user",
                id,
                source,
            })?
            .map(|u| u.name)
    } else {
        Group::from_gid(Gid::from_raw(id))
            .map_err(|source| AttestError::NameLookup {
                kind: "group",
                id,
                source,
            })?
            .map(|g| g.name)
    };
    let mut guard = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = guard.get_or_insert_with(Default::default);
    // Bounded: stale entries go first, and a map full of fresh ones is reset.
    if map.len() >= 4096 {
        map.retain(|_, (at, _)| now.duration_since(*at) < NAME_TTL);
        if map.len() >= 4096 {
            map.clear();
        }
    }
    map.insert(key, (now, name.clone()));
    Ok(name)
}

fn attest(peer: &PeerInfo, may_hash: bool) -> Result<Option<Attested>, AttestError> {
    let pid = peer.pid;
    if pid <= 0 {
        return Err(AttestError::NoPid);
    }
    let (pidfd, accepted_at_ticks) = match peer.proof() {
        Proof::PeerPidfd(fd) => (fd, None),
        Proof::OpenedAtAccept {
            pidfd,
            accepted_at_ticks,
        } => (pidfd, Some(*accepted_at_ticks)),
        Proof::Gone => return Err(AttestError::PeerExited),
    };
    let alive =
        || pidfd_is_alive(pidfd.as_fd()).map_err(|source| AttestError::Liveness { pid, source });
    // A read that fails because the caller exited mid-way is reported as the
    // exit, not as a /proc problem.
    let proc_err = |what: &'static str, source: io::Error| match alive() {
        Ok(false) => AttestError::PeerExited,
        Ok(true) => AttestError::Proc { pid, what, source },
        Err(e) => e,
    };

    // --- Reads under /proc/<pid>: not to be trusted until the check below.
    let stat_text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| proc_err("/proc/<pid>/stat", e))?;
    let stat = parse_stat(&stat_text).map_err(|rule| AttestError::BadStat { pid, rule })?;
    // A zombie has exited: whoever is calling holds a socket it left behind.
    // (A process whose main thread exited while other threads run also shows
    // as a zombie here; it has no executable link either, and is refused.)
    if matches!(stat.state, 'Z' | 'X' | 'x') {
        return Err(AttestError::PeerExited);
    }
    // Without SO_PEERPIDFD the pidfd was opened by PID at accept, so it names
    // whoever held the PID then. A process that started after the accept
    // cannot have connected. What this leaves open: the connecting process
    // exits and its PID is taken by a new process between `connect` and the
    // accept time taken in `PeerInfo::from_socket` (or within the same clock
    // tick, 10 ms at the usual 100 Hz); that process would be attested in
    // the connector's place. Only SO_PEERPIDFD closes this window.
    if let Some(accepted) = accepted_at_ticks {
        if stat.start_ticks > accepted {
            return Err(AttestError::PeerExited);
        }
    }
    let exe = open_executable(pid).map_err(|e| proc_err("/proc/<pid>/exe", e))?;
    let cgroup_text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| proc_err("/proc/<pid>/cgroup", e))?;
    // Unreadable (another user's process while the agent is not root) is
    // not an error: it only means the caller cannot be shown to be a host
    // process.
    let pid_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();

    // --- The check: the caller still exists, so it still owns `pid`, so
    // everything above described it.
    if !alive()? {
        return Err(AttestError::PeerExited);
    }

    // Nothing below reads /proc/<pid>; the executable is the open file.
    // A cgroup file the parser cannot read is refused rather than taken as
    // "not in a container": a container's process must never pass for a
    // host process.
    let cgroup =
        parse_proc_cgroup(&cgroup_text).map_err(|source| AttestError::Cgroup { pid, source })?;
    let mut facts = UnixFacts {
        uid: peer.uid,
        gid: peer.gid,
        user: None,
        group: None,
        exe: None,
        host: is_host(&cgroup, pid_ns.as_deref(), own_pid_namespace()),
    };
    if let Some(exe) = exe {
        let digest = if may_hash {
            EXECUTABLES.sha256(&exe.file).map(Some)
        } else {
            EXECUTABLES.cached(&exe.file)
        };
        let digest = digest.map_err(|source| AttestError::Proc {
            pid,
            what: "the executable's content",
            source,
        })?;
        let Some(sha256) = digest else {
            return Ok(None);
        };
        facts.exe = Some(ExeFacts {
            path: exe.path,
            sha256,
        });
    }
    facts.user = name_of(true, peer.uid)?;
    facts.group = name_of(false, peer.gid)?;
    Ok(Some(Attested {
        selectors: facts.selectors(),
        cgroup,
    }))
}

/// Whether a caller runs outside any container, and so may hold the host
/// selector `unix:container:none`. Every condition must be shown; anything
/// unknown answers no:
/// - its cgroup was read and parsed (an unreadable or malformed cgroup file
///   refuses the caller before this point) and names no container, not even
///   one the runtime has not reported yet (the ID comes from the path, not
///   from the runtime), and it is not a runtime's container monitor;
/// - it is in the agent's own PID namespace. Container runtimes give each
///   container a PID namespace of its own, so this also keeps out
///   containers whose cgroup path shape the parser does not know (LXC,
///   systemd-nspawn), at the price of sandboxed host programs
///   (`unshare --pid`, bubblewrap) not counting as host processes.
fn is_host(cgroup: &CgroupIdentity, pid_ns: Option<&Path>, own_pid_ns: Option<&Path>) -> bool {
    let no_container =
        cgroup.container_id.is_none() && cgroup.monitor_of.is_none() && !cgroup.path.is_empty();
    let same_pid_ns = matches!((pid_ns, own_pid_ns), (Some(a), Some(b)) if a == b);
    no_container && same_pid_ns
}

/// The agent's own PID namespace (`pid:[<inode>]`), read once: a process
/// cannot change its own PID namespace.
fn own_pid_namespace() -> Option<&'static Path> {
    static OWN: OnceLock<Option<PathBuf>> = OnceLock::new();
    OWN.get_or_init(|| std::fs::read_link("/proc/self/ns/pid").ok())
        .as_deref()
}

/// What the attestor learned, before it becomes selectors.
#[derive(Debug, Default)]
struct UnixFacts {
    uid: u32,
    gid: u32,
    user: Option<String>,
    group: Option<String>,
    exe: Option<ExeFacts>,
    /// Runs outside any container ([`is_host`]).
    host: bool,
}

#[derive(Debug)]
struct ExeFacts {
    /// None when the path is not UTF-8.
    path: Option<String>,
    sha256: [u8; 32],
}

impl UnixFacts {
    /// A fact that is not a valid selector (a path or name with a control
    /// character, a path over the length limit) is left out: entries hold
    /// only valid selectors, so no entry could have named it anyway.
    fn selectors(&self) -> SelectorSet {
        let mut set = SelectorSet::new();
        let mut add = |key: &str, value: &str| {
            if let Ok(s) = Selector::from_parts("unix", key, value) {
                set.insert(s);
            }
        };
        add("uid", &self.uid.to_string());
        add("gid", &self.gid.to_string());
        if let Some(user) = &self.user {
            add("user", user);
        }
        if let Some(group) = &self.group {
            add("group", group);
        }
        if let Some(exe) = &self.exe {
            if let Some(path) = &exe.path {
                add("path", path);
            }
            add("sha256", &hex::encode(exe.sha256));
        }
        if self.host {
            set.insert(Selector::host());
        }
        set
    }
}

/// The fields of `/proc/<pid>/stat` the attestor uses.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    /// Field 3: R, S, D, Z, X, ...
    state: char,
    /// Field 22: start time in clock ticks since boot.
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. Field 2 is the command name in parentheses and
/// may itself contain spaces and `)`, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Result<ProcStat, &'static str> {
    let (_, rest) = text
        .rsplit_once(')')
        .ok_or("has no `)` closing the command name")?;
    let mut fields = rest.split_whitespace();
    let state = fields
        .next()
        .and_then(|s| {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => None,
            }
        })
        .ok_or("field 3 (state) is not a single character")?;
    // Field 22 is the 20th after the command name (state is the 1st).
    let start_ticks = fields
        .nth(18)
        .ok_or("ends before field 22 (starttime)")?
        .parse()
        .map_err(|_| "field 22 (starttime) is not a decimal number")?;
    Ok(ProcStat { state, start_ticks })
}

/// The caller's executable, opened once so its path, version and content
/// all describe the same file even if the caller execs meanwhile.
struct Executable {
    file: File,
    /// None when the path is not UTF-8.
    path: Option<String>,
}

/// Opens `/proc/<pid>/exe`. `Ok(None)` when the process has no executable
/// (kernel thread, zombie, or exited: the liveness check tells which) or the
/// executable was deleted.
fn open_executable(pid: i32) -> io::Result<Option<Executable>> {
    let file = match File::open(format!("/proc/{pid}/exe")) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The path of the file actually opened, not a second readlink of the
    // magic link, which could land on another executable after an exec.
    let target = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let meta = file.metadata()?;
    if is_deleted(&target, meta.nlink()) {
        // Its old path names another file or none, and a digest of a file
        // no one can look at again identifies nothing an operator could
        // register.
        return Ok(None);
    }
    Ok(Some(Executable {
        file,
        path: target.to_str().map(str::to_owned),
    }))
}

/// A deleted executable: no links left, or the kernel's " (deleted)" mark
/// on the link (a file really named so is also left out, which only costs
/// that workload its path and digest).
fn is_deleted(target: &Path, nlink: u64) -> bool {
    nlink == 0 || target.as_os_str().as_bytes().ends_with(b" (deleted)")
}

#[cfg(test)]
#[path = "unix_tests.rs"]
mod tests;
