#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

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
    let own = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap()).unwrap();
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
    // (what, caller's cgroup, caller's PID namespace, agent's, host?)
    type Case<'a> = (
        &'a str,
        &'a CgroupIdentity,
        Option<&'a Path>,
        Option<&'a Path>,
        bool,
    );
    let cases: &[Case] = &[
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
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
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
    let peer = PeerInfo::opened_at_accept(child.id() as i32, 0, 0, boot_ticks().unwrap()).unwrap();
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
