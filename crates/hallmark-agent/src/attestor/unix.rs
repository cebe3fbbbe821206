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
/// only for a caller proven to run outside any container (see [`is_host`]).
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
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream as StdUnixStream;
    use std::process::Command;

    use crate::attestor::peer::boot_ticks;
    use hallmark_core::HOST_SELECTOR;
    use sha2::{Digest, Sha256};

    #[test]
    fn parse_stat_table() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        let cases: &[(String, Result<ProcStat, &str>)] = &[
            (
                format!("42 (sleep) {tail}"),
                Ok(ProcStat {
                    state: 'S',
                    start_ticks: 987654,
                }),
            ),
            (
                // A command name chosen to confuse a naive split.
                format!("42 (a) Z 1 (b) {tail}"),
                Ok(ProcStat {
                    state: 'S',
                    start_ticks: 987654,
                }),
            ),
            (
                "7 (kworker/0:1-events) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0 35 0 0"
                    .to_string(),
                Ok(ProcStat {
                    state: 'I',
                    start_ticks: 35,
                }),
            ),
            (
                "42 sleep S 1".to_string(),
                Err("has no `)` closing the command name"),
            ),
            (
                "42 (sleep)".to_string(),
                Err("field 3 (state) is not a single character"),
            ),
            (
                format!("42 (sleep) SS {tail}"),
                Err("field 3 (state) is not a single character"),
            ),
            (
                "42 (sleep) S 1 2 3".to_string(),
                Err("ends before field 22 (starttime)"),
            ),
            (
                "42 (sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -5".to_string(),
                Err("field 22 (starttime) is not a decimal number"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_stat(input), want, "input {input:?}");
        }
    }

    #[test]
    fn deleted_executable_table() {
        let cases: &[(&str, u64, bool)] = &[
            ("/usr/bin/app", 1, false),
            ("/usr/bin/app", 2, false),
            ("/usr/bin/app", 0, true),
            ("/usr/bin/app (deleted)", 1, true),
            ("/usr/bin/app (deleted)", 0, true),
            ("/usr/bin/app (deleted) ", 1, false),
        ];
        for (target, nlink, want) in cases {
            assert_eq!(
                is_deleted(Path::new(target), *nlink),
                *want,
                "{target:?} nlink {nlink}"
            );
        }
        // Not UTF-8, still recognised.
        let raw = std::ffi::OsStr::from_bytes(b"/opt/\xff (deleted)");
        assert!(is_deleted(Path::new(raw), 1));
    }

    fn strings(set: &SelectorSet) -> Vec<String> {
        set.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn selectors_from_facts() {
        let sha = [0xab; 32];
        let full = UnixFacts {
            uid: 1000,
            gid: 100,
            user: Some("alice".into()),
            group: Some("users".into()),
            exe: Some(ExeFacts {
                path: Some("/usr/bin/app".into()),
                sha256: sha,
            }),
            host: false,
        };
        let mut want = vec![
            "unix:gid:100".to_string(),
            "unix:group:users".into(),
            format!("unix:sha256:{}", "ab".repeat(32)),
            "unix:path:/usr/bin/app".into(),
            "unix:uid:1000".into(),
            "unix:user:alice".into(),
        ];
        want.sort();
        assert_eq!(strings(&full.selectors()), want);

        // No names, no executable: only the ids.
        let bare = UnixFacts {
            uid: 0,
            gid: 0,
            ..Default::default()
        };
        assert_eq!(strings(&bare.selectors()), ["unix:gid:0", "unix:uid:0"]);

        // Facts no selector can hold are dropped one by one, not the set.
        let odd = UnixFacts {
            uid: 5,
            gid: 6,
            user: Some("bad\nname".into()),
            group: Some("ok".into()),
            exe: Some(ExeFacts {
                path: Some("/tmp/evil\n/usr/bin/app".into()),
                sha256: sha,
            }),
            host: true,
        };
        let mut want = vec![
            "unix:container:none".to_string(),
            "unix:gid:6".into(),
            "unix:group:ok".into(),
            format!("unix:sha256:{}", "ab".repeat(32)),
            "unix:uid:5".into(),
        ];
        want.sort();
        assert_eq!(strings(&odd.selectors()), want);

        let non_utf8 = UnixFacts {
            uid: 1,
            gid: 1,
            exe: Some(ExeFacts {
                path: None,
                sha256: sha,
            }),
            ..Default::default()
        };
        assert_eq!(
            strings(&non_utf8.selectors()),
            [
                "unix:gid:1".to_string(),
                format!("unix:sha256:{}", "ab".repeat(32)),
                "unix:uid:1".into()
            ]
        );
    }

    fn expected_self_selectors() -> Vec<String> {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let digest = hex::encode(Sha256::digest(std::fs::read(&exe).unwrap()));
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let mut want = vec![
            format!("unix:uid:{uid}"),
            format!("unix:gid:{gid}"),
            format!("unix:path:{}", exe.to_str().unwrap()),
            format!("unix:sha256:{digest}"),
        ];
        if let Some(u) = User::from_uid(Uid::from_raw(uid)).unwrap() {
            want.push(format!("unix:user:{}", u.name));
        }
        if let Some(g) = Group::from_gid(Gid::from_raw(gid)).unwrap() {
            want.push(format!("unix:group:{}", g.name));
        }
        if test_runs_on_host() {
            want.push(HOST_SELECTOR.to_string());
        }
        want.sort();
        want
    }

    /// Whether this test process itself runs outside any container (the
    /// test suite may be run inside one, where no caller is a host caller).
    fn test_runs_on_host() -> bool {
        let own =
            parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap()).unwrap();
        own.container_id.is_none()
    }

    fn host_cgroup(path: &str) -> CgroupIdentity {
        CgroupIdentity {
            path: path.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn host_needs_no_container_and_the_agents_pid_namespace() {
        let ns = Path::new("pid:[4026531836]");
        let other = Path::new("pid:[4026532999]");
        let id = "a".repeat(64);
        let in_container = CgroupIdentity {
            container_id: Some(id.clone()),
            path: format!("/docker/{id}"),
            ..Default::default()
        };
        let monitor = CgroupIdentity {
            monitor_of: Some(id.clone()),
            path: format!("/machine.slice/crio-conmon-{id}.scope"),
            ..Default::default()
        };
        let host = host_cgroup("/user.slice/user-0.slice/session-1.scope");
        let cases: &[(&str, &CgroupIdentity, Option<&Path>, Option<&Path>, bool)] = &[
            ("host process", &host, Some(ns), Some(ns), true),
            ("root cgroup", &host_cgroup("/"), Some(ns), Some(ns), true),
            // The ID comes from the caller's path: a container the runtime
            // has not reported yet is still a container.
            ("container", &in_container, Some(ns), Some(ns), false),
            ("container monitor", &monitor, Some(ns), Some(ns), false),
            (
                "empty cgroup file",
                &host_cgroup(""),
                Some(ns),
                Some(ns),
                false,
            ),
            ("own PID namespace", &host, Some(other), Some(ns), false),
            (
                "caller's namespace unreadable",
                &host,
                None,
                Some(ns),
                false,
            ),
            ("agent's namespace unknown", &host, Some(ns), None, false),
        ];
        for (what, cgroup, caller_ns, agent_ns, want) in cases {
            assert_eq!(is_host(cgroup, *caller_ns, *agent_ns), *want, "{what}");
        }
    }

    fn spawn(cmd: &mut Command) -> std::process::Child {
        cmd.stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
    }

    fn attest_pid(pid: i32) -> Vec<String> {
        let peer = PeerInfo::opened_at_accept(pid, 0, 0, boot_ticks().unwrap()).unwrap();
        strings(&attest_unix(&peer).unwrap())
    }

    #[test]
    fn a_host_child_holds_the_host_selector() {
        let mut child = spawn(Command::new("sleep").arg("30"));
        let got = attest_pid(child.id() as i32);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            got.contains(&HOST_SELECTOR.to_string()),
            test_runs_on_host(),
            "{got:?}"
        );
    }

    #[test]
    fn a_process_in_its_own_pid_namespace_is_not_host() {
        // `unshare --fork` stays in this namespace; its child is the one in
        // the new PID namespace (a user namespace too, so no root is needed
        // where unprivileged user namespaces are allowed).
        let mut unshare = spawn(Command::new("unshare").args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "sleep",
            "30",
        ]));
        let parent = unshare.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let child: i32 = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "unshare started no child (is `unshare --user --pid` allowed here?)"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let got = attest_pid(child);
        let parent_got = attest_pid(parent as i32);
        unshare.kill().unwrap();
        unshare.wait().unwrap();
        assert!(got.contains(&"unix:uid:0".to_string()), "{got:?}");
        assert!(!got.contains(&HOST_SELECTOR.to_string()), "{got:?}");
        assert_eq!(
            parent_got.contains(&HOST_SELECTOR.to_string()),
            test_runs_on_host(),
            "{parent_got:?}"
        );
    }

    /// The cgroup2 mount point (`/sys/fs/cgroup` on unified hosts,
    /// `/sys/fs/cgroup/unified` on hybrid ones).
    fn cgroup2_mount() -> PathBuf {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts
            .lines()
            .find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                right
                    .starts_with("cgroup2 ")
                    .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                    .flatten()
            })
            .expect("no cgroup2 mount on this host")
    }

    #[test]
    fn a_process_in_an_unreported_container_cgroup_is_not_host() {
        // A cgroup named like a container that no runtime knows: what a
        // container looks like in the instant before its runtime reports it.
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test moves a process between cgroups: run it as root"
        );
        let id: String = (0..64)
            .map(|i| char::from(b"0123456789abcdef"[(i * 7 + std::process::id() as usize) % 16]))
            .collect();
        let parent = cgroup2_mount().join(format!("hallmark-attest-test-{}", std::process::id()));
        let dir = parent.join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = spawn(Command::new("sleep").arg("30"));
        let pid = child.id() as i32;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        let cgroup =
            parse_proc_cgroup(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap())
                .unwrap();
        let got = attest_pid(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir(&dir).unwrap();
        std::fs::remove_dir(&parent).unwrap();
        assert_eq!(
            cgroup.container_id.as_deref(),
            Some(id.as_str()),
            "{cgroup:?}"
        );
        assert!(got.contains(&"unix:uid:0".to_string()), "{got:?}");
        assert!(!got.contains(&HOST_SELECTOR.to_string()), "{got:?}");
    }

    #[test]
    fn attests_this_process_through_a_socketpair() {
        let (a, _b) = StdUnixStream::pair().unwrap();
        let peer = PeerInfo::from_socket(&a).unwrap();
        let got = attest_unix(&peer).unwrap();
        assert_eq!(strings(&got), expected_self_selectors());
    }

    #[test]
    fn fallback_attests_a_process_older_than_the_accept() {
        let peer = PeerInfo::opened_at_accept(
            std::process::id() as i32,
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
            boot_ticks().unwrap(),
        )
        .unwrap();
        assert!(matches!(peer.proof(), Proof::OpenedAtAccept { .. }));
        assert_eq!(
            strings(&attest_unix(&peer).unwrap()),
            expected_self_selectors()
        );
    }

    #[test]
    fn fallback_refuses_a_process_younger_than_the_accept() {
        // Accepted at tick 0, i.e. before this process started: the process
        // now holding the PID cannot be the one that connected.
        let peer = PeerInfo::opened_at_accept(std::process::id() as i32, 0, 0, 0).unwrap();
        assert!(matches!(attest_unix(&peer), Err(AttestError::PeerExited)));
    }

    #[test]
    fn zombie_peer_is_exited() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let peer = PeerInfo::opened_at_accept(pid, 0, 0, boot_ticks().unwrap()).unwrap();
        assert!(attest_unix(&peer).is_ok());
        child.kill().unwrap();
        // Wait for the kernel to finish the exit; the child stays unreaped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if parse_stat(&stat).unwrap().state == 'Z' {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(matches!(attest_unix(&peer), Err(AttestError::PeerExited)));
        child.wait().unwrap();
        assert!(matches!(attest_unix(&peer), Err(AttestError::PeerExited)));
    }

    #[test]
    fn deleted_executable_gives_no_path_or_digest() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("short-lived");
        std::fs::copy("/bin/sleep", &bin).unwrap();
        let mut child = loop {
            match Command::new(&bin).arg("30").spawn() {
                Ok(c) => break c,
                // Another test's fork may briefly hold the copy open for writing.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("spawning {}: {e}", bin.display()),
            }
        };
        let peer =
            PeerInfo::opened_at_accept(child.id() as i32, 0, 0, boot_ticks().unwrap()).unwrap();
        let before = strings(&attest_unix(&peer).unwrap());
        assert!(
            before
                .iter()
                .any(|s| s.starts_with("unix:path:") && s.ends_with("/short-lived")),
            "{before:?}"
        );
        std::fs::remove_file(&bin).unwrap();
        let after = strings(&attest_unix(&peer).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !after
                .iter()
                .any(|s| s.starts_with("unix:path:") || s.starts_with("unix:sha256:")),
            "{after:?}"
        );
        assert!(after.contains(&"unix:uid:0".to_string()), "{after:?}");
    }

    #[test]
    fn no_pid_and_gone_are_refused() {
        let (a, _b) = StdUnixStream::pair().unwrap();
        let mut peer = PeerInfo::from_socket(&a).unwrap();
        peer.pid = 0;
        assert!(matches!(attest_unix(&peer), Err(AttestError::NoPid)));

        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Still unreaped, so the fallback's pidfd_open finds it.
        let peer = PeerInfo::opened_at_accept(pid, 0, 0, boot_ticks().unwrap()).unwrap();
        assert!(matches!(peer.proof(), Proof::OpenedAtAccept { .. }));
        child.wait().unwrap();
        assert!(matches!(attest_unix(&peer), Err(AttestError::PeerExited)));

        // Reaped: the fallback finds no process, or (had the PID been taken
        // meanwhile) one younger than this accept at tick 0.
        let gone = PeerInfo::opened_at_accept(pid, 0, 0, 0).unwrap();
        assert!(matches!(attest_unix(&gone), Err(AttestError::PeerExited)));
    }
}
