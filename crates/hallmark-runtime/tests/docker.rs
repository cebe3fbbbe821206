//! The Docker back end against the dockerd running on this machine, and
//! against a fake engine for replies a real one will not give on cue.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{dk, docker, require_docker, FakeEngine, Names, Reply, IMAGE, SOCKET};
use futures::StreamExt;
use hallmark_core::{Compose, Confidence, RuntimeSource, Workload, WorkloadState};
use hallmark_runtime::discovery::{discover, DiscoveryConfig, RuntimeChoice};
use hallmark_runtime::docker::{DockerRuntime, CALL_TIMEOUT};
use hallmark_runtime::{now_ms, EventAction, Runtime, RuntimeError, RuntimeEvent};
use tokio::sync::mpsc;

fn connect() -> DockerRuntime {
    require_docker();
    match DockerRuntime::connect(SOCKET) {
        Ok(rt) => rt,
        Err(e) => panic!("connecting to {SOCKET}: {e}"),
    }
}

fn inspect_field(name: &str, template: &str) -> String {
    docker(&["inspect", "-f", template, name])
}

/// The `0::` line of a process's cgroup file: the kernel's own word.
fn proc_unified_cgroup(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no unified line in /proc/{pid}/cgroup: {text}"))
        .to_string()
}

fn find<'a>(ws: &'a [Workload], id: &str) -> &'a Workload {
    ws.iter()
        .find(|w| w.container_id == id)
        .unwrap_or_else(|| panic!("{id} missing from the listing"))
}

#[tokio::test]
async fn version_names_engine_and_negotiated_api() {
    let rt = connect();
    let engine = docker(&["version", "-f", "{{.Server.Version}}"]);
    let api = docker(&["version", "-f", "{{.Server.APIVersion}}"]);
    assert_eq!(rt.api_version(), None, "negotiated before the first call");
    assert_eq!(
        rt.version().await.unwrap(),
        format!("docker {engine} (API {api})")
    );
    // The engine here speaks at most 1.41; bollard's own default is newer,
    // so this only holds if the client negotiated down.
    assert_eq!(rt.api_version(), Some(api.as_str()));
    assert_eq!(rt.source(), RuntimeSource::Docker);
    assert_eq!(rt.endpoint(), SOCKET);

    let prefixed = DockerRuntime::connect(&format!("unix://{SOCKET}")).unwrap();
    assert_eq!(prefixed.endpoint(), SOCKET);
}

#[tokio::test]
async fn list_and_inspect_describe_every_field() {
    let rt = connect();
    let names = Names::new("list");
    let t0 = now_ms();

    let running = names.container("running");
    dk(&format!(
        "run -d --name {running} --network none --label app=web --label tier=front:end \
         --label com.docker.compose.project=shop --label com.docker.compose.service=web \
         --label com.docker.compose.oneoff=True {IMAGE} sleep 300"
    ));
    let created = names.container("created");
    dk(&format!(
        "create --name {created} --network none {IMAGE} sleep 300"
    ));
    let exited = names.container("exited");
    docker(&[
        "run",
        "-d",
        "--name",
        &exited,
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(dk(&format!("wait {exited}")), "3");
    let paused = names.container("paused");
    dk(&format!(
        "run -d --name {paused} --network none {IMAGE} sleep 300"
    ));
    dk(&format!("pause {paused}"));
    // An internal network: addresses get assigned, nothing is routed.
    let net = names.network("net");
    let subnet = format!("10.213.{}.0/28", 20 + std::process::id() % 200);
    dk(&format!(
        "network create --internal --subnet {subnet} {net}"
    ));
    let networked = names.container("networked");
    dk(&format!(
        "run -d --name {networked} --network {net} {IMAGE} sleep 300"
    ));
    let t1 = now_ms();

    let image_id = docker(&["image", "inspect", "-f", "{{.Id}}", IMAGE]);
    let digests = docker(&[
        "image",
        "inspect",
        "-f",
        "{{join .RepoDigests \",\"}}",
        IMAGE,
    ]);
    let want_digest = digests.split(',').next().unwrap_or_default().to_string();
    let driver = docker(&["info", "-f", "{{.CgroupDriver}}"]);

    let listing = rt.list().await.unwrap();
    assert_eq!(listing.failures, 0, "{:?}", listing.workloads);
    // One list, one inspect per container, one inspect per distinct image.
    let images: HashSet<&str> = listing
        .workloads
        .iter()
        .filter(|w| w.confidence == Confidence::Full && !w.image_id.is_empty())
        .map(|w| w.image_id.as_str())
        .collect();
    assert_eq!(
        listing.calls as usize,
        1 + listing.workloads.len() + images.len(),
        "calls"
    );

    // The running container: every field.
    let id = inspect_field(&running, "{{.Id}}");
    let w = find(&listing.workloads, &id);
    let pid: u32 = inspect_field(&running, "{{.State.Pid}}").parse().unwrap();
    let labels: BTreeMap<String, String> = [
        ("app", "web"),
        ("tier", "front:end"),
        ("com.docker.compose.project", "shop"),
        ("com.docker.compose.service", "web"),
        ("com.docker.compose.oneoff", "True"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(w.container_id.len(), 64);
    assert_eq!(w.source, RuntimeSource::Docker);
    assert_eq!(w.name, running);
    assert_eq!(w.image, IMAGE);
    assert_eq!(w.image_id, image_id);
    assert!(w.image_id.starts_with("sha256:"));
    assert_eq!(w.image_digest, want_digest);
    assert_eq!(w.labels, labels);
    assert_eq!(
        w.compose,
        Some(Compose {
            project: "shop".into(),
            service: "web".into(),
            oneoff: true,
        })
    );
    assert_eq!(w.pod, None);
    assert_eq!(w.pid, Some(pid));
    assert_eq!(w.cgroup, proc_unified_cgroup(pid));
    assert!(w.cgroup.ends_with(&id), "{}", w.cgroup);
    assert_eq!(w.network_mode, "none");
    assert!(w.ips.is_empty(), "{:?}", w.ips);
    assert_eq!(w.state, WorkloadState::Running);
    assert!(
        (t0 - 1000..=t1 + 1000).contains(&w.created_at_ms),
        "created {}",
        w.created_at_ms
    );
    assert!(w.started_at_ms >= w.created_at_ms && w.started_at_ms <= t1 + 1000);
    assert_eq!(w.finished_at_ms, 0);
    assert_eq!(w.exit_code, None);
    assert_eq!(w.confidence, Confidence::Full);
    assert_eq!(w.degraded_reason, "");
    let selectors: Vec<String> = w.selectors().iter().map(|s| s.to_string()).collect();
    for s in [
        "docker:label:app:web",
        "docker:compose-service:web",
        &format!("docker:name:{running}"),
    ] {
        assert!(selectors.iter().any(|x| x == s), "{s} not in {selectors:?}");
    }

    // Created, never started: no process, no times after creation.
    let cid = inspect_field(&created, "{{.Id}}");
    let c = find(&listing.workloads, &cid);
    assert_eq!(c.state, WorkloadState::Created);
    assert_eq!(c.pid, None);
    assert!(c.created_at_ms >= t0 - 1000);
    assert_eq!(
        (c.started_at_ms, c.finished_at_ms, c.exit_code),
        (0, 0, None)
    );
    assert!(c.labels.is_empty() && c.compose.is_none());
    if driver == "cgroupfs" {
        assert_eq!(c.cgroup, format!("/docker/{cid}"));
    }

    // Exited with 3.
    let eid = inspect_field(&exited, "{{.Id}}");
    let e = find(&listing.workloads, &eid);
    assert_eq!(e.state, WorkloadState::Stopped);
    assert_eq!(e.exit_code, Some(3));
    assert_eq!(e.pid, None);
    assert!(e.started_at_ms >= e.created_at_ms && e.started_at_ms > 0);
    // Not `finished >= started`: dockerd stamps StartedAt after the start
    // returns, and a process this quick can have exited a moment before.
    assert!(
        e.finished_at_ms >= e.created_at_ms && e.finished_at_ms <= now_ms() + 1000,
        "{e:?}"
    );
    if driver == "cgroupfs" {
        assert_eq!(e.cgroup, format!("/docker/{eid}"));
    }

    // Paused: frozen, but its process is still there.
    let pid_p: u32 = inspect_field(&paused, "{{.State.Pid}}").parse().unwrap();
    let p = find(&listing.workloads, &inspect_field(&paused, "{{.Id}}"));
    assert_eq!(p.state, WorkloadState::Paused);
    assert_eq!(p.pid, Some(pid_p));

    // On a network: its address.
    let nid = inspect_field(&networked, "{{.Id}}");
    let n = find(&listing.workloads, &nid);
    let ip = inspect_field(
        &networked,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    assert!(!ip.is_empty());
    assert_eq!(n.ips, vec![ip]);
    assert_eq!(n.network_mode, net);

    // inspect() gives the same record as the listing.
    for id in [&id, &cid, &eid, &nid] {
        let one = rt.inspect(id).await.unwrap();
        assert_eq!(
            one.as_ref(),
            Some(find(&listing.workloads, id)),
            "inspect {id}"
        );
    }
    let unknown = "0".repeat(64);
    assert_eq!(rt.inspect(&unknown).await.unwrap(), None);
}

/// Forwards a runtime's events into a channel, stamped with when they
/// arrived, so a test can wait for them while running the CLI.
fn collect_events(rt: &DockerRuntime) -> mpsc::UnboundedReceiver<(Instant, RuntimeEvent)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut stream = rt.events();
    tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send((Instant::now(), ev)).is_err() {
                        return;
                    }
                }
                Err(e) => panic!("event stream failed: {e}"),
            }
        }
    });
    rx
}

/// Creates probe containers until one's `create` comes through: the engine
/// only sends events that happen after the subscription reached it, and
/// the subscription starts when the stream is first polled.
async fn wait_until_subscribed(
    rx: &mut mpsc::UnboundedReceiver<(Instant, RuntimeEvent)>,
    names: &Names,
) {
    for _ in 0..20 {
        let probe = names.container("probe");
        let id = dk(&format!(
            "create --name {probe} --network none {IMAGE} true"
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some((_, ev))) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if ev.container_id == id && ev.action == EventAction::Created {
                return;
            }
        }
    }
    panic!("the event stream delivered no probe's create within 10 s");
}

/// Waits for `action` on container `id`, skipping other events; returns
/// when it arrived.
async fn expect_event(
    rx: &mut mpsc::UnboundedReceiver<(Instant, RuntimeEvent)>,
    id: &str,
    action: EventAction,
) -> (Instant, RuntimeEvent) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((at, ev))) if ev.container_id == id && ev.action == action => return (at, ev),
            Ok(Some(_)) => {}
            Ok(None) => panic!("event stream ended waiting for {action:?} of {id}"),
            Err(_) => panic!("no {action:?} event for {id} within 5 s"),
        }
    }
}

// Several threads: the CLI calls block, and the stream must keep reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_lifecycle() {
    let rt = connect();
    let names = Names::new("events");
    let mut rx = collect_events(&rt);
    wait_until_subscribed(&mut rx, &names).await;

    let before = now_ms();
    let name = names.container("life");
    let id = dk(&format!(
        "run -d --name {name} --network none {IMAGE} sleep 300"
    ));
    let ran = Instant::now();
    let (created_at, created) = expect_event(&mut rx, &id, EventAction::Created).await;
    let (started_at, _) = expect_event(&mut rx, &id, EventAction::Started).await;
    for at in [created_at, started_at] {
        let late = at.saturating_duration_since(ran);
        assert!(
            late < Duration::from_secs(1),
            "event came {late:?} after docker run returned"
        );
    }
    assert!(
        (before - 1000..=now_ms()).contains(&created.at_ms),
        "{created:?}"
    );

    dk(&format!("pause {name}"));
    expect_event(&mut rx, &id, EventAction::Updated).await;
    dk(&format!("unpause {name}"));
    expect_event(&mut rx, &id, EventAction::Updated).await;

    dk(&format!("stop -t 0 {name}"));
    expect_event(&mut rx, &id, EventAction::Died).await;

    let renamed = format!("{name}-renamed");
    names.also(&renamed);
    dk(&format!("rename {name} {renamed}"));
    expect_event(&mut rx, &id, EventAction::Renamed).await;
    let after_rename = rt.inspect(&id).await.unwrap().unwrap();
    assert_eq!(after_rename.name, renamed);

    dk(&format!("rm {renamed}"));
    expect_event(&mut rx, &id, EventAction::Destroyed).await;
    assert_eq!(rt.inspect(&id).await.unwrap(), None);

    // A container that is gone before anyone could inspect it still shows
    // its whole life in the stream.
    let quick = names.container("quick");
    dk(&format!("run --name {quick} --network none {IMAGE} true"));
    let qid = inspect_field(&quick, "{{.Id}}");
    dk(&format!("rm {quick}"));
    for action in [
        EventAction::Created,
        EventAction::Started,
        EventAction::Died,
        EventAction::Destroyed,
    ] {
        expect_event(&mut rx, &qid, action).await;
    }
}

fn unreachable(e: RuntimeError) -> (String, String) {
    let text = e.to_string();
    match e {
        RuntimeError::Unreachable {
            runtime,
            endpoint,
            reason,
        } => {
            assert_eq!(runtime, "docker");
            assert!(text.contains(&endpoint), "{text}");
            (endpoint, reason)
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn unusable_sockets_say_why() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("no-such-dockerd.sock");
    let missing_s = missing.to_str().unwrap();
    let (endpoint, reason) = unreachable(DockerRuntime::connect(missing_s).unwrap_err());
    assert_eq!(endpoint, missing_s);
    assert_eq!(reason, "no such file: is dockerd running?");

    let file = dir.path().join("regular");
    std::fs::write(&file, b"").unwrap();
    let (_, reason) = unreachable(DockerRuntime::connect(file.to_str().unwrap()).unwrap_err());
    assert!(
        reason.starts_with("not a socket but a regular file"),
        "{reason}"
    );

    let (_, reason) =
        unreachable(DockerRuntime::connect(dir.path().to_str().unwrap()).unwrap_err());
    assert!(
        reason.starts_with("not a socket but a directory"),
        "{reason}"
    );

    // A socket file nobody listens on any more: every call says so, and
    // the event stream ends with it.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let rt = DockerRuntime::connect(stale.to_str().unwrap()).unwrap();
    let (endpoint, reason) = unreachable(rt.version().await.unwrap_err());
    assert_eq!(endpoint, stale.to_str().unwrap());
    assert!(reason.starts_with("connection refused"), "{reason}");
    let (_, reason) = unreachable(rt.list().await.unwrap_err());
    assert!(reason.starts_with("connection refused"), "{reason}");
    let events: Vec<_> = rt.events().collect().await;
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0] {
        Err(RuntimeError::Events { reason, .. }) => {
            assert!(reason.contains("connection refused"), "{reason}")
        }
        other => panic!("expected an Events error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_engine_times_out() {
    let fake = FakeEngine::start(|_| Reply::Silence);
    let started = Instant::now();
    let rt = DockerRuntime::connect(fake.socket()).unwrap();
    let e = rt.version().await.unwrap_err();
    assert!(
        matches!(e, RuntimeError::Timeout { call: "version", timeout, .. } if timeout == CALL_TIMEOUT),
        "{e:?}"
    );
    assert!(started.elapsed() < CALL_TIMEOUT + Duration::from_secs(2));
    assert!(e.to_string().contains("version"), "{e}");
}

const ID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_GONE: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const ID_BROKEN: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const ID_B: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

/// `/v1.41/info` → `/info`.
fn unversioned(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some((v, tail)) = rest.split_once('/') {
            if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return format!("/{tail}");
            }
        }
    }
    path.to_string()
}

/// An engine with four containers: two fine (sharing an image), one removed
/// before its inspect, one whose inspect fails.
fn fake_engine(api: &'static str) -> FakeEngine {
    FakeEngine::start(move |path| {
        let p = unversioned(path.split('?').next().unwrap_or_default());
        match p.as_str() {
            "/version" => Reply::Json(
                200,
                format!(r#"{{"Version":"99.0.0-fake","ApiVersion":"{api}","MinAPIVersion":"1.12"}}"#),
            ),
            "/info" => Reply::Json(200, r#"{"CgroupDriver":"cgroupfs"}"#.into()),
            "/containers/json" => Reply::Json(
                200,
                format!(
                    r#"[{{"Id":"{ID_A}","Names":["/a"],"Image":"shop/web:1","State":"running"}},
                        {{"Id":"{ID_GONE}","Names":["/gone"],"State":"exited"}},
                        {{"Id":"{ID_BROKEN}","Names":["/broken"],"Image":"shop/db:2","ImageID":"sha256:d","State":"exited",
                          "Labels":{{"com.docker.compose.project":"shop"}}}},
                        {{"Id":"{ID_B}","Names":["/b"],"Image":"shop/web:1","State":"created"}}]"#
                ),
            ),
            p if p == format!("/containers/{ID_A}/json") || p == format!("/containers/{ID_B}/json") => {
                let id = if p.contains(ID_A) { ID_A } else { ID_B };
                Reply::Json(
                    200,
                    format!(
                        r#"{{"Id":"{id}","Name":"/x","Image":"sha256:web","Created":"2026-01-02T03:04:05.5Z",
                            "State":{{"Status":"created","Running":false,"Pid":0,"ExitCode":0,
                                      "StartedAt":"0001-01-01T00:00:00Z","FinishedAt":"0001-01-01T00:00:00Z"}},
                            "Config":{{"Image":"shop/web:1","Labels":{{}}}},
                            "HostConfig":{{"NetworkMode":"bridge","CgroupParent":""}},
                            "NetworkSettings":{{"Networks":{{"bridge":{{"IPAddress":"172.17.0.9","GlobalIPv6Address":""}}}}}}}}"#
                    ),
                )
            }
            p if p == format!("/containers/{ID_GONE}/json") => {
                Reply::Json(404, r#"{"message":"No such container"}"#.into())
            }
            p if p == format!("/containers/{ID_BROKEN}/json") => {
                Reply::Json(500, r#"{"message":"storage driver exploded"}"#.into())
            }
            "/images/sha256:web/json" => Reply::Json(
                200,
                r#"{"Id":"sha256:web","RepoDigests":["shop/web@sha256:0123","shop/web@sha256:4567"]}"#.into(),
            ),
            "/events" => Reply::Stream {
                lines: vec![
                    format!(r#"{{"Type":"container","Action":"start","Actor":{{"ID":"{ID_A}"}},"time":1700000000,"timeNano":1700000000250000000}}"#),
                    format!(r#"{{"Type":"container","Action":"exec_start: sh","Actor":{{"ID":"{ID_A}"}},"time":1700000001}}"#),
                    format!(r#"{{"Type":"container","Action":"die","Actor":{{"ID":"{ID_A}"}},"time":1700000002}}"#),
                ],
                abort: api == "1.41",
            },
            _ => Reply::Json(404, format!(r#"{{"message":"fake engine: no route {path}"}}"#)),
        }
    })
}

#[tokio::test]
async fn negotiation_starts_unversioned_then_speaks_the_engines_version() {
    let fake = fake_engine("1.41");
    let rt = DockerRuntime::connect(fake.socket()).unwrap();
    assert!(fake.requests().is_empty(), "connect only checks the socket");
    assert_eq!(rt.version().await.unwrap(), "docker 99.0.0-fake (API 1.41)");
    assert_eq!(rt.api_version(), Some("1.41"));
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[0], "/version", "{reqs:?}");
    // Then everything speaks the engine's version, not bollard's newer one.
    assert!(
        reqs[1..].iter().all(|r| r.starts_with("/v1.41/")),
        "{reqs:?}"
    );

    // A newer engine than the client: the client keeps its own version.
    let newer = fake_engine("1.99");
    let rt = DockerRuntime::connect(newer.socket()).unwrap();
    rt.version().await.unwrap();
    let api = rt.api_version().unwrap().to_string();
    assert_ne!(api, "1.99");
    assert!(api.starts_with("1."), "{api}");
    let last = newer.requests().pop().unwrap();
    assert!(last.starts_with(&format!("/v{api}/")), "{last}");
}

#[tokio::test]
async fn listing_skips_the_removed_and_keeps_the_broken_as_partial() {
    let fake = fake_engine("1.41");
    let rt = DockerRuntime::connect(fake.socket()).unwrap();
    // Negotiate first: that happens once per back end, not per listing.
    rt.version().await.unwrap();
    let before = fake.requests().len();
    let listing = rt.list().await.unwrap();

    let ids: Vec<&str> = listing
        .workloads
        .iter()
        .map(|w| w.container_id.as_str())
        .collect();
    assert_eq!(ids, vec![ID_A, ID_BROKEN, ID_B]);
    assert_eq!(listing.failures, 1);
    // list + 4 inspects + 1 image inspect shared by A and B.
    assert_eq!(listing.calls, 6);
    assert_eq!(fake.requests().len() - before, 6);

    let a = &listing.workloads[0];
    assert_eq!(a.confidence, Confidence::Full);
    assert_eq!(a.image_digest, "shop/web@sha256:0123");
    assert_eq!(a.ips, vec!["172.17.0.9"]);
    assert_eq!(a.cgroup, format!("/docker/{ID_A}"));
    assert_eq!(a.created_at_ms, 1_767_323_045_500);
    assert_eq!(a.started_at_ms, 0);

    let broken = &listing.workloads[1];
    assert_eq!(broken.confidence, Confidence::Partial);
    assert!(
        broken.degraded_reason.contains("inspect container")
            && broken.degraded_reason.contains("500")
            && broken.degraded_reason.contains("storage driver exploded"),
        "{}",
        broken.degraded_reason
    );
    assert_eq!(broken.name, "broken");
    assert_eq!(broken.state, WorkloadState::Stopped);
    assert_eq!(
        broken.compose.as_ref().map(|c| c.project.as_str()),
        Some("shop")
    );
    assert!(broken.selectors().is_empty());

    // inspect: 404 is "unknown", other errors are errors.
    assert_eq!(rt.inspect(ID_GONE).await.unwrap(), None);
    let e = rt.inspect(ID_BROKEN).await.unwrap_err();
    assert!(
        matches!(&e, RuntimeError::Api { call: "inspect container", reason, .. } if reason.contains("storage driver exploded")),
        "{e:?}"
    );
}

#[tokio::test]
async fn event_stream_reports_its_end() {
    for (api, what) in [("1.41", "cut mid-stream"), ("1.40", "closed cleanly")] {
        let fake = fake_engine(api);
        let rt = DockerRuntime::connect(fake.socket()).unwrap();
        let items: Vec<_> =
            tokio::time::timeout(Duration::from_secs(5), rt.events().collect::<Vec<_>>())
                .await
                .unwrap_or_else(|_| panic!("{what}: the stream did not end"));
        assert_eq!(items.len(), 3, "{what}: {items:?}");
        assert_eq!(
            items[0].as_ref().unwrap(),
            &RuntimeEvent {
                container_id: ID_A.into(),
                action: EventAction::Started,
                at_ms: 1_700_000_000_250,
            }
        );
        assert_eq!(items[1].as_ref().unwrap().action, EventAction::Died);
        assert_eq!(items[1].as_ref().unwrap().at_ms, 1_700_000_002_000);
        match &items[2] {
            Err(RuntimeError::Events {
                runtime: "docker",
                reason,
            }) => {
                assert!(reason.contains(fake.socket()), "{what}: {reason}")
            }
            other => panic!("{what}: expected an Events error, got {other:?}"),
        }
        let events_req = fake
            .requests()
            .into_iter()
            .find(|r| r.contains("/events"))
            .unwrap();
        assert!(events_req.contains("filters="), "{events_req}");
    }
}

#[tokio::test]
async fn discovery_finds_dockerd() {
    require_docker();
    let d = discover(&DiscoveryConfig {
        choice: RuntimeChoice::Docker,
        docker_socket: Some(PathBuf::from(SOCKET)),
        ..DiscoveryConfig::default()
    })
    .await;
    let rt = d.runtime.as_ref().expect("docker chosen");
    assert_eq!(rt.source(), RuntimeSource::Docker);
    assert!(d.version.starts_with("docker "), "{}", d.version);
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].outcome, Ok(d.version.clone()));
    assert_eq!(d.degraded_reason(), None);
}

#[tokio::test]
async fn auto_falls_back_to_docker_when_cri_does_not_answer() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    // A socket that refuses, and one that answers but not CRI (a Docker
    // engine speaks HTTP/1, like containerd's socket without its CRI
    // plugin fails the CRI Version call).
    let refused = dir.path().join("containerd.sock");
    drop(std::os::unix::net::UnixListener::bind(&refused).unwrap());
    let not_cri = fake_engine("1.41");
    for cri in [refused.clone(), not_cri.path.clone()] {
        let started = Instant::now();
        let d = discover(&DiscoveryConfig {
            choice: RuntimeChoice::Auto,
            cri_socket: Some(cri.clone()),
            docker_socket: Some(PathBuf::from(SOCKET)),
            crictl_config: None,
        })
        .await;
        let rt = d.runtime.as_ref().expect("docker chosen");
        assert_eq!(rt.source(), RuntimeSource::Docker);
        assert_eq!(d.attempts.len(), 2, "{:?}", d.attempts);
        assert_eq!(d.attempts[0].runtime, "cri");
        assert_eq!(d.attempts[0].endpoint, cri.display().to_string());
        let why = d.attempts[0].outcome.as_ref().unwrap_err();
        assert!(!why.is_empty());
        assert_eq!(d.attempts[1].runtime, "docker");
        let reason = d.degraded_reason().expect("a fallback is worth saying");
        assert!(
            reason.starts_with(&format!(
                "using docker at {SOCKET} after: cri {}: {why}",
                cri.display()
            )),
            "{reason}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}

/// The machine as it is: containerd's socket exists, and serves CRI only
/// when its CRI plugin is configured. Either way `auto` ends with a runtime
/// and says what it tried.
#[tokio::test]
async fn auto_on_this_machine() {
    require_docker();
    let d = discover(&DiscoveryConfig {
        choice: RuntimeChoice::Auto,
        crictl_config: Some(PathBuf::from("/nonexistent/crictl.yaml")),
        ..DiscoveryConfig::default()
    })
    .await;
    let rt = d.runtime.as_ref().expect("a runtime is chosen");
    if rt.source() == RuntimeSource::Cri {
        // CRI answered and Docker runs beside it: both are followed.
        let ok: Vec<_> = d.attempts.iter().filter(|a| a.outcome.is_ok()).collect();
        assert_eq!(ok.len(), 2, "{d:?}");
        assert_eq!(ok[0].runtime, "cri", "{d:?}");
        assert_eq!(ok[1].runtime, "docker", "{d:?}");
        assert_eq!(
            rt.endpoint(),
            format!("{} + {}", ok[0].endpoint, ok[1].endpoint)
        );
        let versions = [&ok[0].outcome, &ok[1].outcome].map(|o| o.clone().unwrap_or_default());
        assert_eq!(d.version, format!("{} + {}", versions[0], versions[1]));
    } else {
        let chosen = d.attempts.last().unwrap();
        assert_eq!(chosen.runtime, rt.source().as_str(), "{d:?}");
        assert_eq!(chosen.endpoint, rt.endpoint());
        assert_eq!(chosen.outcome, Ok(d.version.clone()));
    }
    // The named-but-missing crictl config is reported, first.
    assert!(d.attempts[0]
        .outcome
        .as_ref()
        .is_err_and(|r| r.contains("reading crictl config")));
    if rt.source() == RuntimeSource::Docker {
        // Every CRI socket tried before the fallback carries its reason.
        let cri: Vec<_> = d.attempts[1..]
            .iter()
            .filter(|a| a.runtime == "cri")
            .collect();
        assert!(!cri.is_empty(), "{d:?}");
        assert!(cri
            .iter()
            .all(|a| a.outcome.as_ref().is_err_and(|r| !r.is_empty())));
        let reason = d.degraded_reason().unwrap();
        assert!(reason.starts_with("using docker at"), "{reason}");
    }
    eprintln!("{d:?}\n{:?}", d.degraded_reason());
}
