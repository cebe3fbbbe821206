use super::*;

use std::path::PathBuf;

const ID: &str = "0beeefe70041d3c2cf42791cbc91e9160f9d8085b966787abd78881e94ed9951";
const ID2: &str = "f6dbb0210f1b2e50f1921fc2701d7037bb521cebbb9e4f98acd45303a0ec9d58";
const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";
const UID_: &str = "2c48913c_b29f_11e7_9350_020968147796";

/// What a fixture's `# expect:` line says.
#[derive(Debug, Default, PartialEq)]
struct Expect {
    container: Option<String>,
    monitor: Option<String>,
    pod: Option<String>,
    runtime: Option<RuntimeHint>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup")
}

/// Splits a fixture into its expectation and the file content (the
/// `#` lines removed, everything else byte for byte).
fn read_fixture(text: &str) -> (Expect, String) {
    let mut expect = None;
    let mut body = String::new();
    for line in text.split_inclusive('\n') {
        let Some(comment) = line.strip_prefix('#') else {
            body.push_str(line);
            continue;
        };
        let Some(spec) = comment.trim().strip_prefix("expect:") else {
            continue;
        };
        let mut e = Expect::default();
        for word in spec.split_whitespace() {
            match word.split_once('=') {
                None if word == "host" => {}
                Some(("container", v)) => e.container = Some(v.into()),
                Some(("monitor", v)) => e.monitor = Some(v.into()),
                Some(("pod", v)) => e.pod = Some(v.into()),
                Some(("runtime", v)) => {
                    let hint = [
                        RuntimeHint::Docker,
                        RuntimeHint::Containerd,
                        RuntimeHint::CriO,
                        RuntimeHint::Podman,
                    ]
                    .into_iter()
                    .find(|h| h.as_str() == v);
                    e.runtime = Some(hint.unwrap_or_else(|| panic!("runtime `{v}`")));
                }
                _ => panic!("unknown expectation `{word}`"),
            }
        }
        assert!(expect.replace(e).is_none(), "two `# expect:` lines");
    }
    (expect.expect("a `# expect:` line"), body)
}

/// Every real-world shape in `tests/fixtures/cgroup/`: each file is a
/// whole `/proc/<pid>/cgroup` with an `# expect:` line.
#[test]
fn fixtures() {
    let mut names: Vec<_> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    assert!(names.len() >= 40, "fixtures missing: {names:?}");
    for name in names {
        let text = std::fs::read_to_string(fixture_dir().join(&name)).unwrap();
        let (expect, body) = read_fixture(&text);
        let got = parse_proc_cgroup(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got_expect = Expect {
            container: got.container_id.clone(),
            monitor: got.monitor_of.clone(),
            pod: got.pod_uid.clone(),
            runtime: got.runtime,
        };
        assert_eq!(got_expect, expect, "{name}");
        assert!(
            body.split('\n')
                .any(|l| l.splitn(3, ':').nth(2) == Some(got.path.as_str())),
            "{name}: path {:?} is not one of the file's paths",
            got.path
        );
        // The chosen line alone says the same.
        if got.container_id.is_some() || got.monitor_of.is_some() {
            assert_eq!(parse_cgroup_path(&got.path).as_ref(), Some(&got), "{name}");
        }
    }
}

#[test]
fn single_paths() {
    use RuntimeHint::*;
    // (path, container, pod, runtime)
    type Case = (
        String,
        Option<&'static str>,
        Option<&'static str>,
        Option<RuntimeHint>,
    );
    let cases: Vec<Case> = vec![
        (format!("/docker/{ID}"), Some(ID), None, Some(Docker)),
        (format!("/{ID}"), Some(ID), None, None),
        (format!("/docker/{ID2}/docker/{ID}"), Some(ID), None, Some(Docker)),
        (format!("/system.slice/docker-{ID}.scope"), Some(ID), None, Some(Docker)),
        (format!("/system.slice/docker-{ID}.scope/init.scope"), Some(ID), None, Some(Docker)),
        (format!("/system.slice/docker-{ID2}.scope/docker/{ID}"), Some(ID), None, Some(Docker)),
        (format!("/kubepods/pod{UID}/{ID}"), Some(ID), Some(UID), None),
        (format!("/kubepods/besteffort/pod{UID}/{ID}"), Some(ID), Some(UID), None),
        (format!("/kubepods/burstable/pod{UID_}/{ID}"), Some(ID), Some(UID), None),
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            Some(ID),
            Some(UID),
            Some(Containerd),
        ),
        (
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"),
            Some(ID),
            Some(UID),
            Some(CriO),
        ),
        (
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID}.slice/docker-{ID}.scope"),
            Some(ID),
            Some(UID),
            Some(Docker),
        ),
        (
            format!("/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}"),
            Some(ID),
            Some(UID),
            Some(Containerd),
        ),
        (format!("/system.slice:docker:{ID}"), Some(ID), None, Some(Docker)),
        (format!("/default/{ID}"), Some(ID), None, Some(Containerd)),
        (format!("/k8s.io/{ID}"), Some(ID), None, Some(Containerd)),
        (format!("/actions_job/{ID}"), Some(ID), None, None),
        (format!("/libpod_parent/libpod-{ID}"), Some(ID), None, Some(Podman)),
        (format!("/machine.slice/libpod-{ID}.scope/container"), Some(ID), None, Some(Podman)),
        (format!("/../crio-{ID}.scope"), Some(ID), None, Some(CriO)),
        // A pod two levels up is not this container's pod.
        (format!("/kubepods/pod{UID}/{ID2}/docker/{ID}"), Some(ID), None, Some(Docker)),
        (format!("/kubepods/pod{UID}/x/{ID}"), Some(ID), None, None),
        // Pod shapes that are not kubelet's.
        (format!("/kubepods/pod{}/{ID}", UID.to_uppercase()), Some(ID), None, None),
        (format!("/kubepods/pod2c48913c-b29f_11e7-9350-020968147796/{ID}"), Some(ID), None, None),
        (format!("/kubepods/pod{UID}x/{ID}"), Some(ID), None, None),
        (format!("/foo-pod{UID_}.slice/docker-{ID}.scope"), Some(ID), None, Some(Docker)),
        (format!("/xkubepods-pod{UID_}.slice/docker-{ID}.scope"), Some(ID), None, Some(Docker)),
        (format!("/kubepods-pod{UID_}.scope/docker-{ID}.scope"), Some(ID), None, Some(Docker)),
    ];
    for (path, container, pod, runtime) in cases {
        let got = parse_cgroup_path(&path).unwrap_or_else(|| panic!("{path}: no container"));
        assert_eq!(got.container_id.as_deref(), container, "{path}");
        assert_eq!(got.pod_uid.as_deref(), pod, "{path}");
        assert_eq!(got.runtime, runtime, "{path}");
        assert_eq!(got.monitor_of, None, "{path}");
        assert_eq!(got.path, path);
    }
}

#[test]
fn monitors_are_not_containers() {
    for (path, runtime) in [
        (
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            RuntimeHint::Podman,
        ),
        (
            format!("/kubepods/besteffort/pod{UID}/crio-conmon-{ID}"),
            RuntimeHint::CriO,
        ),
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"),
            RuntimeHint::CriO,
        ),
    ] {
        let got = parse_cgroup_path(&path).unwrap_or_else(|| panic!("{path}"));
        assert_eq!(got.container_id, None, "{path}");
        assert_eq!(got.pod_uid, None, "{path}");
        assert_eq!(got.monitor_of.as_deref(), Some(ID), "{path}");
        assert_eq!(got.runtime, Some(runtime), "{path}");
    }
}

/// Near misses: a 64-hex string inside a component of no known shape, an
/// ID of the wrong length or case, a pod without a container.
#[test]
fn host_paths() {
    let upper = ID.to_uppercase();
    let cases = [
        "/".to_string(),
        String::new(),
        "/init.scope".into(),
        "/user.slice/user-0.slice/session-1.scope".into(),
        "/system.slice/sshd.service".into(),
        "/process_api/1655172e84acb6f350936f05f2d00a8e".into(),
        format!("/docker/{}", &ID[..63]),
        format!("/docker/{ID}0"),
        format!("/docker/{upper}"),
        format!("/docker/x{ID}"),
        format!("/docker/{ID}.scope"),
        format!("/system.slice/docker-{ID}.service"),
        format!("/system.slice/docker-{ID}.scopes"),
        format!("/system.slice/docker_{ID}.scope"),
        format!("/system.slice/docker-{ID}-x.scope"),
        format!("/system.slice/podman-{ID}.scope"),
        format!("/system.slice/-{ID}.scope"),
        format!("/system.slice/{ID}-docker.scope"),
        format!("/system.slice/crio-conmon-{ID}.scope.d"),
        format!("/system.slice:unknown:{ID}"),
        format!("/system:docker:{ID}"),
        format!("/system.slice:docker:{ID}:x"),
        format!("/kubepods/pod{UID}"),
        format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"),
    ];
    for path in cases {
        assert_eq!(parse_cgroup_path(&path), None, "{path:?}");
        let line = format!("0::/{}\n", path.trim_start_matches('/'));
        let got = parse_proc_cgroup(&line).unwrap();
        assert_eq!(got.container_id, None, "{path:?}");
        assert_eq!(got.monitor_of, None, "{path:?}");
    }
}

#[test]
fn malformed_lines() {
    use CgroupError::*;
    let cases: &[(&str, CgroupError)] = &[
        ("0:/", BadLine { line: 1 }),
        ("garbage", BadLine { line: 1 }),
        ("0::/\n\n5:memory/docker", BadLine { line: 3 }),
        ("x::/", BadHierarchyId { line: 1 }),
        (":memory:/", BadHierarchyId { line: 1 }),
        ("-1:memory:/", BadHierarchyId { line: 1 }),
        ("+1:memory:/", BadHierarchyId { line: 1 }),
        (" 1:memory:/", BadHierarchyId { line: 1 }),
        ("99999999999:memory:/", BadHierarchyId { line: 1 }),
        ("0:memory:/", UnifiedWithControllers { line: 1 }),
        (
            "4::/",
            MissingControllers {
                line: 1,
                hierarchy: 4,
            },
        ),
        ("0::", RelativePath { line: 1 }),
        ("0::docker/x", RelativePath { line: 1 }),
        (
            "0::/\n1:cpu:/\n0::/docker/x",
            DuplicateHierarchy {
                line: 3,
                first: 1,
                hierarchy: 0,
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse_proc_cgroup(input).as_ref(), Err(want), "{input:?}");
    }
    // The message names the line and the rule.
    assert_eq!(
        parse_proc_cgroup("0::/\nbroken").unwrap_err().to_string(),
        "line 2: must have the form `<id>:<controllers>:<path>`"
    );
}

#[test]
fn empty_content_is_a_host() {
    for input in ["", "\n", "\n\n"] {
        assert_eq!(parse_proc_cgroup(input), Ok(CgroupIdentity::default()));
    }
}

#[test]
fn host_path_choice() {
    let got = parse_proc_cgroup("2:cpu:/a\n1:name=systemd:/b\n0::/c\n").unwrap();
    assert_eq!(got.path, "/c");
    let got = parse_proc_cgroup("2:cpu:/a\n1:name=systemd:/b\n").unwrap();
    assert_eq!(got.path, "/b");
    let got = parse_proc_cgroup("2:cpu:/a\n1:memory:/b\n").unwrap();
    assert_eq!(got.path, "/a");
}

#[test]
fn colons_and_carriage_returns_stay_in_the_path() {
    let path = format!("/kubepods-pod{UID_}.slice:crio:{ID}");
    let got = parse_proc_cgroup(&format!("0::{path}\n")).unwrap();
    assert_eq!(got.path, path);
    assert_eq!(got.container_id.as_deref(), Some(ID));
    // A `\r` is part of a cgroup name, so the component is not an ID.
    let got = parse_proc_cgroup(&format!("0::/docker/{ID}\r\n")).unwrap();
    assert_eq!(got.container_id, None);
    assert_eq!(got.path, format!("/docker/{ID}\r"));
}

#[test]
fn unified_line_decides_when_it_names_a_container() {
    // Unified names ID, v1 names ID2: the unified line wins, whole.
    let input = format!("1:name=systemd:/kubepods/pod{UID}/{ID2}\n0::/docker/{ID}\n");
    let got = parse_proc_cgroup(&input).unwrap();
    assert_eq!(got.container_id.as_deref(), Some(ID));
    assert_eq!(
        got.pod_uid, None,
        "the pod of another line is never borrowed"
    );
    assert_eq!(got.path, format!("/docker/{ID}"));

    // A monitor on the unified line is decisive too.
    let input =
        format!("1:name=systemd:/docker/{ID}\n0::/machine.slice/libpod-conmon-{ID}.scope\n");
    let got = parse_proc_cgroup(&input).unwrap();
    assert_eq!(got.container_id, None);
    assert_eq!(got.monitor_of.as_deref(), Some(ID));

    // A host unified line leaves it to the v1 lines.
    let input = format!("1:name=systemd:/docker/{ID}\n0::/system.slice/containerd.service\n");
    let got = parse_proc_cgroup(&input).unwrap();
    assert_eq!(got.container_id.as_deref(), Some(ID));
    assert_eq!(got.path, format!("/docker/{ID}"));
}

#[test]
fn v1_lines_must_agree() {
    // Two containers.
    let input = format!("3:pids:/\n2:memory:/docker/{ID}\n1:name=systemd:/docker/{ID2}\n");
    assert_eq!(
        parse_proc_cgroup(&input),
        Err(CgroupError::Conflict { line: 3, first: 2 })
    );
    // Same container, two pods.
    let other = "11111111-b29f-11e7-9350-020968147796";
    let input =
        format!("2:memory:/kubepods/pod{UID}/{ID}\n1:name=systemd:/kubepods/pod{other}/{ID}\n");
    assert_eq!(
        parse_proc_cgroup(&input),
        Err(CgroupError::Conflict { line: 2, first: 1 })
    );
    // A container and a monitor of it.
    let input = format!("2:memory:/libpod_parent/libpod-{ID}\n1:name=systemd:/machine.slice/libpod-conmon-{ID}.scope\n");
    assert_eq!(
        parse_proc_cgroup(&input),
        Err(CgroupError::Conflict { line: 2, first: 1 })
    );
    // The same pod written both ways agrees.
    let input = format!(
        "2:memory:/kubepods/pod{UID}/{ID}\n1:name=systemd:/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope\n"
    );
    assert_eq!(
        parse_proc_cgroup(&input).unwrap().pod_uid.as_deref(),
        Some(UID)
    );
    // The line that names the pod is the one reported, even if later.
    let input =
        format!("3:memory:/docker/{ID}\n2:pids:/\n1:name=systemd:/kubepods/pod{UID}/{ID}\n");
    let got = parse_proc_cgroup(&input).unwrap();
    assert_eq!(got.pod_uid.as_deref(), Some(UID));
    assert_eq!(got.runtime, None);
    assert_eq!(got.path, format!("/kubepods/pod{UID}/{ID}"));
}

#[test]
fn static_pod_uid() {
    let hash = "487a0dc6dccaeefbcfedba7a7ce1ca18";
    let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/crio-{ID}.scope");
    assert_eq!(
        parse_cgroup_path(&path).unwrap().pod_uid.as_deref(),
        Some(hash)
    );
    let path = format!("/kubepods/pod{hash}/{ID}");
    assert_eq!(
        parse_cgroup_path(&path).unwrap().pod_uid.as_deref(),
        Some(hash)
    );
}

#[test]
fn pathological_input_is_linear() {
    // A long path of near-miss components and many lines: must finish fast
    // (quadratic work here would take minutes).
    let component = format!("kubepods-pod{UID_}.slice:docker-{}", &ID[..63]);
    let path = format!("/{}", vec![component.as_str(); 20_000].join("/"));
    assert_eq!(parse_cgroup_path(&path), None);
    let content: String = (1..=50_000).map(|i| format!("{i}:c:/a/b\n")).collect();
    assert_eq!(parse_proc_cgroup(&content).unwrap().container_id, None);
}

#[test]
fn is_container_id_rule() {
    assert!(is_container_id(ID));
    assert!(!is_container_id(&ID[..63]));
    assert!(!is_container_id(&ID.to_uppercase()));
    assert!(!is_container_id(&format!("{}g", &ID[..63])));
    assert!(!is_container_id(""));
}
