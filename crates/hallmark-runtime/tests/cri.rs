//! The CRI back end against the real containerd on this machine (CRI plugin
//! enabled by `scripts/setup.d/10-containers.sh`, which every test runs once
//! per binary), plus a scripted server for the event stream of runtimes
//! newer than the containerd 1.6 installed here.

mod cri_fake;
mod cri_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use hallmark_core::{Confidence, RuntimeSource, WorkloadState};
use hallmark_runtime::cri::{pb, CriRuntime, POLL_INTERVAL};
use hallmark_runtime::{now_ms, EventAction, Runtime, RuntimeError, RuntimeEvent};

use cri_support::{
    eventually, remove_container, setup, stop_container, PlainContainerd, TestPod, CONTAINERD_SOCK,
    NAMESPACE,
};

async fn runtime() -> CriRuntime {
    setup();
    CriRuntime::connect(CONTAINERD_SOCK)
        .await
        .unwrap_or_else(|e| panic!("connecting to containerd CRI: {e}"))
}

fn docker_image_id(image: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .expect("running docker image inspect");
    assert!(out.status.success(), "docker image inspect {image} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_containerd() {
    let rt = runtime().await;
    assert_eq!(rt.source(), RuntimeSource::Cri);
    assert_eq!(rt.endpoint(), CONTAINERD_SOCK);
    let v = rt.version().await.expect("version");
    assert!(v.starts_with("containerd "), "{v}");
    assert!(v.contains("1.6."), "{v}");
    // The unix:// form names the same socket.
    let by_url = CriRuntime::connect(&format!("unix://{CONTAINERD_SOCK}"))
        .await
        .expect("connect by unix:// URL");
    assert_eq!(by_url.endpoint(), CONTAINERD_SOCK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_inspect_describe_a_pod_container() {
    let rt = runtime().await;
    let before_ms = now_ms();
    let pod = TestPod::run("pay").await;
    let id = pod
        .spawn(
            "app",
            &["sleep", "300"],
            &[("app", "pay"), ("tier", "backend")],
        )
        .await;

    let listing = rt.list().await.expect("list");
    let w = listing
        .workloads
        .iter()
        .find(|w| w.container_id == id)
        .unwrap_or_else(|| panic!("container {id} not in the listing"))
        .clone();
    // ListPodSandbox + ListContainers + at least one status per container.
    assert!(listing.calls >= 4, "calls {}", listing.calls);
    assert!(
        !listing.workloads.iter().any(|w| w.container_id == pod.id),
        "the pod sandbox itself must not be listed as a workload"
    );

    assert_eq!(w.source, RuntimeSource::Cri);
    assert_eq!(w.name, "app");
    assert_eq!(w.image, "docker.io/hallmark-test/busybox:1");
    assert_eq!(w.image_id, docker_image_id(cri_support::BUSYBOX));
    // Imported from `docker save`: containerd has no repository digest.
    assert_eq!(w.image_digest, "");
    assert_eq!(w.labels, labels(&[("app", "pay"), ("tier", "backend")]));
    assert_eq!(w.compose, None);
    assert_eq!(w.state, WorkloadState::Running);
    assert_eq!(w.confidence, Confidence::Full);
    assert_eq!(w.degraded_reason, "");
    assert_eq!(w.network_mode, "node");
    assert!(
        w.ips.is_empty(),
        "host-network pods have no pod IPs: {:?}",
        w.ips
    );
    assert!(
        w.created_at_ms >= before_ms - 1000 && w.created_at_ms <= now_ms(),
        "created_at_ms {} not in [{before_ms}, now]",
        w.created_at_ms
    );
    assert!(w.started_at_ms >= w.created_at_ms, "{w:?}");
    assert_eq!(w.finished_at_ms, 0);
    assert_eq!(w.exit_code, None);

    let p = w.pod.as_ref().expect("pod info");
    assert_eq!(p.uid, pod.uid);
    assert_eq!(p.name, pod.name);
    assert_eq!(p.namespace, NAMESPACE);
    assert_eq!(p.sandbox_id, pod.id);
    assert_eq!(p.labels, labels(&[("team", "money")]));
    assert_eq!(p.annotations, labels(&[("hallmark.test/suite", "cri")]));
    assert!(p.ips.is_empty());

    // The PID is the container's process in the host PID namespace, and the
    // cgroup the one the kernel has it in.
    let pid = w.pid.expect("a running container has a pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("reading cmdline");
    assert_eq!(
        cmdline.split(|b| *b == 0).collect::<Vec<_>>(),
        [&b"/busybox"[..], b"sleep", b"300", b""],
        "pid {pid}"
    );
    assert_eq!(w.cgroup, format!("{}/{id}", pod.cgroup_parent()));
    let proc_cgroup =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("reading /proc/pid/cgroup");
    assert!(
        proc_cgroup
            .lines()
            .any(|l| l.split(':').nth(2) == Some(w.cgroup.as_str())),
        "{} not in:\n{proc_cgroup}",
        w.cgroup
    );

    let sel: Vec<String> = w.selectors().iter().map(ToString::to_string).collect();
    for want in [
        "k8s:ns:payments".to_string(),
        format!("k8s:pod-name:{}", pod.name),
        format!("k8s:pod-uid:{}", pod.uid),
        "k8s:pod-label:team:money".to_string(),
        "k8s:container-name:app".to_string(),
        "k8s:container-image:docker.io/hallmark-test/busybox:1".to_string(),
    ] {
        assert!(sel.contains(&want), "{want} missing from {sel:?}");
    }

    // inspect() tells the same story as the listing.
    let inspected = rt.inspect(&id).await.expect("inspect").expect("known");
    assert_eq!(inspected, w);
    assert_eq!(
        rt.inspect(&"0".repeat(64)).await.expect("inspect unknown"),
        None
    );

    // Stopped: exit code, finish time, no PID.
    stop_container(&id).await;
    let stopped = rt.inspect(&id).await.expect("inspect").expect("known");
    assert_eq!(stopped.state, WorkloadState::Stopped);
    assert_eq!(stopped.exit_code, Some(137), "SIGKILL");
    assert_eq!(stopped.pid, None);
    assert!(
        stopped.finished_at_ms >= stopped.started_at_ms,
        "{stopped:?}"
    );
    assert_eq!(stopped.cgroup, w.cgroup);
    assert_eq!(stopped.pod, w.pod);

    remove_container(&id).await;
    assert_eq!(rt.inspect(&id).await.expect("inspect removed"), None);
}

/// Waits for `action` on `id`, skipping other containers' and earlier
/// events; fails after `within`.
async fn expect_event(
    events: &mut futures::stream::BoxStream<'static, Result<RuntimeEvent, RuntimeError>>,
    id: &str,
    action: EventAction,
    within: Duration,
    seen: &mut Vec<EventAction>,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {action:?} for {id} within {within:?}; saw {seen:?}"));
        match next {
            Some(Ok(e)) if e.container_id == id => {
                seen.push(e.action);
                if e.action == action {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("event stream failed: {e}"),
            None => panic!("event stream ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_lifecycle() {
    let rt = runtime().await;
    let pod = TestPod::run("events").await;
    let mut events = rt.events();
    // The subscription's baseline poll must come before the container.
    tokio::time::sleep(POLL_INTERVAL * 2).await;

    let second = Duration::from_secs(1);
    let mut seen = Vec::new();
    let id = pod.create("app", &["sleep", "300"], &[]).await;
    expect_event(&mut events, &id, EventAction::Created, second, &mut seen).await;
    pod.start(&id).await;
    expect_event(&mut events, &id, EventAction::Started, second, &mut seen).await;
    stop_container(&id).await;
    expect_event(&mut events, &id, EventAction::Died, second, &mut seen).await;
    remove_container(&id).await;
    expect_event(&mut events, &id, EventAction::Destroyed, second, &mut seen).await;
    assert_eq!(
        seen,
        vec![
            EventAction::Created,
            EventAction::Started,
            EventAction::Died,
            EventAction::Destroyed
        ]
    );

    // A container that exits at once is still seen starting and dying.
    let mut seen = Vec::new();
    let quick = pod.spawn("quick", &["true"], &[]).await;
    expect_event(&mut events, &quick, EventAction::Died, second, &mut seen).await;
    assert_eq!(
        seen,
        vec![
            EventAction::Created,
            EventAction::Started,
            EventAction::Died
        ]
    );
    let w = eventually(second, || {
        let rt = &rt;
        let quick = quick.clone();
        async move {
            rt.inspect(&quick)
                .await
                .ok()
                .flatten()
                .filter(|w| w.state == WorkloadState::Stopped)
        }
    })
    .await
    .expect("the quick container shows as stopped");
    assert_eq!(w.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_socket_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nothing-here.sock");
    let path_s = path.display().to_string();
    match CriRuntime::connect(&path_s).await {
        Err(e @ RuntimeError::Unreachable { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path_s), "{msg}");
            assert!(msg.contains("no such socket"), "{msg}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }

    // A path that exists but is a directory or a regular file.
    let file = dir.path().join("regular");
    std::fs::write(&file, b"x").expect("write");
    for p in [dir.path().to_path_buf(), file] {
        let p = p.display().to_string();
        match CriRuntime::connect(&p).await {
            Err(e @ RuntimeError::Unreachable { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&p) && msg.contains("not a Unix socket"),
                    "{msg}"
                );
            }
            other => panic!("{p}: expected Unreachable, got {other:?}"),
        }
    }

    // A socket nobody listens on any more.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let stale_s = stale.display().to_string();
    match CriRuntime::connect(&stale_s).await {
        Err(e @ RuntimeError::Unreachable { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&stale_s) && msg.contains("refused"), "{msg}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }

    match CriRuntime::connect("tcp://127.0.0.1:10010").await {
        Err(e @ RuntimeError::Unreachable { .. }) => {
            assert!(e.to_string().contains("only Unix sockets"), "{e}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_is_not_cri_is_named() {
    setup();
    // Docker Engine: HTTP/1.1, no gRPC at all.
    match CriRuntime::connect("/var/run/docker.sock").await {
        Err(
            e @ RuntimeError::Api {
                call: "Version", ..
            },
        ) => {
            let msg = e.to_string();
            assert!(
                msg.contains("/var/run/docker.sock") && msg.contains("no CRI v1 answer"),
                "{msg}"
            );
        }
        other => panic!("docker.sock: expected an Api error, got {other:?}"),
    }

    // A socket that accepts and hangs up at once.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mute.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let server = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let path_s = path.display().to_string();
    match CriRuntime::connect(&path_s).await {
        Err(e @ (RuntimeError::Api { .. } | RuntimeError::Unreachable { .. })) => {
            assert!(e.to_string().contains(&path_s), "{e}");
        }
        other => panic!("mute socket: expected Api or Unreachable, got {other:?}"),
    }
    server.abort();

    // containerd without its CRI plugin: gRPC, but Unimplemented.
    let plain = PlainContainerd::start();
    let plain_s = plain.socket.display().to_string();
    match CriRuntime::connect(&plain_s).await {
        Err(
            e @ RuntimeError::Api {
                call: "Version", ..
            },
        ) => {
            let msg = e.to_string();
            assert!(msg.contains(&plain_s), "{msg}");
            assert!(msg.contains("Unimplemented"), "{msg}");
            assert!(msg.contains("CRI plugin"), "{msg}");
        }
        other => panic!("plain containerd: expected an Api error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_of_newer_runtimes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("cri.sock");
    let sandbox = pb::PodSandboxStatus {
        id: "sb1".into(),
        ..Default::default()
    };
    let event = |id: &str, ty: pb::ContainerEventType, at_ns: i64| pb::ContainerEventResponse {
        container_id: id.into(),
        container_event_type: ty as i32,
        created_at: at_ns,
        pod_sandbox_status: Some(sandbox.clone()),
        containers_statuses: vec![],
    };
    use pb::ContainerEventType as T;
    let server = cri_fake::serve(
        cri_fake::FakeCri {
            events: vec![
                // The sandbox's own start: not a workload event.
                event("sb1", T::ContainerStartedEvent, 1_000_000_000),
                event("c1", T::ContainerCreatedEvent, 2_000_000_000),
                event("c1", T::ContainerStartedEvent, 3_000_000_000),
                event("c1", T::ContainerStoppedEvent, 4_000_000_000),
                event("c1", T::ContainerDeletedEvent, 5_000_000_000),
            ],
        },
        &socket,
    );
    let rt = CriRuntime::connect(&socket.display().to_string())
        .await
        .expect("connect to the fake");
    assert_eq!(rt.version().await.expect("version"), "fake-cri 1.7.0");

    let got: Vec<Result<RuntimeEvent, RuntimeError>> =
        tokio::time::timeout(Duration::from_secs(5), rt.events().collect())
            .await
            .expect("the stream ends when the runtime closes it");
    let (ok, err): (Vec<_>, Vec<_>) = got.into_iter().partition(Result::is_ok);
    let ok: Vec<(String, EventAction, i64)> = ok
        .into_iter()
        .flatten()
        .map(|e| (e.container_id, e.action, e.at_ms))
        .collect();
    assert_eq!(
        ok,
        vec![
            ("c1".to_string(), EventAction::Created, 2000),
            ("c1".to_string(), EventAction::Started, 3000),
            ("c1".to_string(), EventAction::Died, 4000),
            ("c1".to_string(), EventAction::Destroyed, 5000),
        ]
    );
    assert_eq!(err.len(), 1, "one final error: {err:?}");
    match &err[0] {
        Err(RuntimeError::Events { reason, .. }) => {
            assert!(reason.contains("closed GetContainerEvents"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A listing needs calls the fake does not script: a clean Api error.
    match rt.list().await {
        Err(RuntimeError::Api {
            call: "ListPodSandbox",
            reason,
            ..
        }) => assert!(reason.contains("Unimplemented"), "{reason}"),
        other => panic!("{other:?}"),
    }
    server.abort();
}
