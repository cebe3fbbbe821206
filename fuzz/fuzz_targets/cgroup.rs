//! `parse_proc_cgroup` and `parse_cgroup_path` on arbitrary text, and on
//! host paths built from a vocabulary of near misses.
//!
//! The container ID decides which runtime record (and so which selectors) a
//! caller gets, so whatever the parser returns must be spelled in the input
//! and have the exact shape of an ID, and a path of no container shape must
//! never yield one.

#![no_main]

use std::sync::OnceLock;

use hallmark_core::cgroup::{
    is_container_id, parse_cgroup_path, parse_proc_cgroup, CgroupIdentity, CONTAINER_ID_LEN,
};
use libfuzzer_sys::fuzz_target;

const ID: &str = "0beeefe70041d3c2cf42791cbc91e9160f9d8085b966787abd78881e94ed9951";

/// Components a host path may hold: none is a container by itself. The
/// ID-bearing ones differ from a known shape by one detail (length, case,
/// prefix, suffix, separator) or are a runtime's monitor (not a container).
fn host_components() -> Vec<String> {
    let upper = ID.to_uppercase();
    let short = &ID[..CONTAINER_ID_LEN - 1];
    let mut v: Vec<String> = [
        "",
        "..",
        "user.slice",
        "user-0.slice",
        "session-1.scope",
        "system.slice",
        "sshd.service",
        "init.scope",
        "docker",
        "kubepods",
        "besteffort",
        "kubepods.slice",
        "kubepods-burstable.slice",
        "pod2c48913c-b29f-11e7-9350-020968147796",
        "kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice",
        "machine.slice",
        "container",
        "k8s.io",
        "libpod_parent",
        "process_api",
        "1655172e84acb6f350936f05f2d00a8e",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    v.extend([
        short.to_string(),
        format!("{ID}0"),
        upper.clone(),
        format!("docker-{upper}.scope"),
        format!("x{ID}"),
        format!("{ID}.scope"),
        format!("docker-{ID}.service"),
        format!("docker_{ID}.scope"),
        format!("docker-{short}.scope"),
        format!("unknown-{ID}.scope"),
        format!("-{ID}.scope"),
        format!("docker-{ID}-x.scope"),
        format!("system.slice:unknown:{ID}"),
        format!("system:docker:{ID}"),
        format!("kubepods.slice:cri-containerd:{ID}:x"),
        format!("crio-conmon-{ID}.scope"),
        format!("libpod-conmon-{ID}.scope"),
        format!("crio-conmon-{ID}"),
    ]);
    v
}

fn is_pod_uid_shape(uid: &str) -> bool {
    let b = uid.as_bytes();
    let hex = |c: &u8| matches!(c, b'0'..=b'9' | b'a'..=b'f');
    match b.len() {
        32 => b.iter().all(hex),
        36 => b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => hex(c),
        }),
        _ => false,
    }
}

fn has_hex_run(input: &str) -> bool {
    let mut run = 0;
    for c in input.bytes() {
        run = if matches!(c, b'0'..=b'9' | b'a'..=b'f') {
            run + 1
        } else {
            0
        };
        if run >= CONTAINER_ID_LEN {
            return true;
        }
    }
    false
}

/// Properties every identity must have, whichever way it was parsed.
fn check(input: &str, id: &CgroupIdentity) {
    if let Some(c) = &id.container_id {
        assert!(is_container_id(c), "container ID {c:?} from {input:?}");
        assert!(
            input.contains(c.as_str()),
            "container ID {c:?} not in {input:?}"
        );
        assert!(
            id.path.contains(c.as_str()),
            "container ID {c:?} not in its path"
        );
        assert_eq!(id.monitor_of, None, "container and monitor from {input:?}");
    }
    if let Some(m) = &id.monitor_of {
        assert!(is_container_id(m), "monitored ID {m:?} from {input:?}");
        assert!(
            id.path.contains(m.as_str()),
            "monitored ID {m:?} not in its path"
        );
        assert!(
            id.runtime.is_some(),
            "monitor without runtime from {input:?}"
        );
    }
    if let Some(p) = &id.pod_uid {
        assert!(
            id.container_id.is_some(),
            "pod without container from {input:?}"
        );
        assert!(is_pod_uid_shape(p), "pod UID {p:?} from {input:?}");
        let raw = p.replace('-', "_");
        assert!(
            id.path.contains(p.as_str()) || id.path.contains(&raw),
            "pod UID {p:?} not in path {:?}",
            id.path
        );
    }
    if id.container_id.is_none() && id.monitor_of.is_none() {
        assert_eq!(id.runtime, None, "runtime for a host from {input:?}");
    }
    assert!(
        input.contains(id.path.as_str()),
        "path {:?} not in input",
        id.path
    );
}

fuzz_target!(|data: &[u8]| {
    // A host path from the bytes: every byte picks a component.
    static VOCABULARY: OnceLock<Vec<String>> = OnceLock::new();
    let vocabulary = VOCABULARY.get_or_init(host_components);
    let host: String = data
        .iter()
        .take(64)
        .map(|b| format!("/{}", vocabulary[usize::from(*b) % vocabulary.len()]))
        .collect();
    let host = if host.is_empty() {
        "/".to_string()
    } else {
        host
    };
    if let Some(id) = parse_cgroup_path(&host) {
        assert_eq!(id.container_id, None, "container in host path {host:?}");
        assert!(
            id.monitor_of.is_some(),
            "Some without a finding for {host:?}"
        );
        check(&host, &id);
    }
    let content = format!("1:name=systemd:{host}\n0::{host}\n");
    let id = parse_proc_cgroup(&content).unwrap_or_else(|e| panic!("{content:?}: {e}"));
    assert_eq!(id.container_id, None, "container in host file {content:?}");
    check(&content, &id);

    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    let parsed = parse_proc_cgroup(input);
    assert_eq!(
        parse_proc_cgroup(input),
        parsed,
        "determinism for {input:?}"
    );
    if let Ok(id) = &parsed {
        check(input, id);
        if id.container_id.is_some() || id.monitor_of.is_some() {
            // The reported line alone says the same thing.
            assert_eq!(parse_cgroup_path(&id.path).as_ref(), Some(id), "{input:?}");
        }
        if !has_hex_run(input) {
            assert_eq!(id.container_id, None, "ID from no 64-hex run in {input:?}");
            assert_eq!(id.monitor_of, None, "ID from no 64-hex run in {input:?}");
        }
    }

    let single = parse_cgroup_path(input);
    assert_eq!(
        parse_cgroup_path(input),
        single,
        "determinism for {input:?}"
    );
    if !has_hex_run(input) {
        assert_eq!(single, None, "finding without a 64-hex run in {input:?}");
    }
    if let Some(id) = &single {
        check(input, id);
        assert_eq!(id.path, input);
        assert!(id.container_id.is_some() || id.monitor_of.is_some());
        // As the unified line of a file, the path says the same.
        if input.starts_with('/') && !input.contains('\n') {
            let content = format!("0::{input}\n");
            assert_eq!(parse_proc_cgroup(&content).as_ref(), Ok(id), "{content:?}");
        }
    }
});
