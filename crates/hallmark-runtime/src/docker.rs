//! Docker Engine back end: the Engine API over dockerd's Unix socket.
//!
//! Talks to the engine with bollard. Every call is bounded by
//! [`CALL_TIMEOUT`]; a listing inspects containers [`INSPECT_CONCURRENCY`]
//! at a time and inspects each image once.
//!
//! The API version is negotiated on the first call. An engine refuses any
//! request versioned above its maximum ("client version 1.53 is too new.
//! Maximum supported API version is 1.41"), and bollard's own
//! `negotiate_version` asks `/version` with its default (newest) version, so
//! it fails on exactly the engines that need it. Here the first request is
//! an *unversioned* `GET /version`, which every engine answers with its own
//! maximum (as the docker CLI does with `/_ping`), and the client is built
//! with the lower of that and bollard's version. bollard 0.21 itself sends
//! paths without any version (its URL join drops the prefix), which an
//! engine answers at its own maximum, possibly newer than bollard's models;
//! so a request modifier puts the negotiated version on every path.
//!
//! Where a field comes from:
//! - `cgroup`: for a container with a live process, the unified (`0::`) line
//!   of `/proc/<pid>/cgroup`, the kernel's word, kept only when it names the
//!   container's ID (which rules out a PID from another namespace or a reused
//!   PID). Otherwise it is derived from the engine's cgroup driver and
//!   `HostConfig.CgroupParent` the way dockerd names cgroups:
//!   `<parent or /docker>/<id>` for cgroupfs,
//!   `/<parent slice path>/docker-<id>.scope` for systemd. Stopped containers
//!   keep the path they had, which is what late flow attribution needs.
//! - `finished_at_ms` and `exit_code` are set only for stopped containers:
//!   for a restarted container the engine's `FinishedAt` is the previous run's.
//! - `pid` is set while `State.Running` is true (which includes paused and
//!   restarting containers) and the engine gives a PID above zero.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, EventMessage, NetworkSettings,
    SystemInfoCgroupDriverEnum,
};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::{BollardRequest, ClientVersion, Docker, API_DEFAULT_VERSION};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use hallmark_core::{Compose, Confidence, RuntimeSource, Workload, WorkloadState};
use tokio::sync::OnceCell;

use crate::discovery::{check_socket, socket_reason, DOCKERD};
use crate::{now_ms, EventAction, Listing, Runtime, RuntimeError, RuntimeEvent};

/// The longest any single Engine API call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How many container inspects a listing keeps in flight.
pub const INSPECT_CONCURRENCY: usize = 16;

const RUNTIME: &str = "docker";

/// The container events the stream subscribes to. `kill` and `oom` are left
/// out on purpose: neither changes a field of the record by itself, and a
/// process that dies of either is followed by `die`.
const EVENTS: &[&str] = &[
    "create", "start", "die", "destroy", "rename", "update", "pause", "unpause",
];

/// Docker Compose labels.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";

/// Go's zero `time.Time`, which the engine prints for "never".
const GO_ZERO_TIME_PREFIX: &str = "0001-01-01T00:00:00";

/// How dockerd names container cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
    /// The engine did not say, or runs without cgroups.
    Unknown,
}

/// The Docker Engine back end. Cheap to clone: clones share one client.
///
/// [`DockerRuntime::connect`] only checks the socket file; the engine is
/// first asked, and the API version negotiated, by the first call. A failed
/// negotiation is tried again by the next call, so a back end built while
/// dockerd restarts recovers on its own.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: String,
    session: OnceCell<Session>,
}

/// A client that has negotiated with the engine.
#[derive(Debug)]
struct Session {
    docker: Docker,
    endpoint: String,
    api_version: String,
    cgroup_driver: CgroupDriver,
}

/// What became of one listed container.
enum Described {
    Full(Workload),
    /// Removed between the listing and its inspect (or listed without an
    /// ID, which the engine never does).
    Gone,
    /// Listed, but the inspect failed: a partial record with the reason.
    Failed(Workload),
}

/// Image inspects of one listing, keyed by image ID. The cell makes
/// concurrent inspects of containers sharing an image wait for one call.
#[derive(Default)]
struct ImageCache {
    digests: Mutex<HashMap<String, Arc<OnceCell<String>>>>,
}

impl DockerRuntime {
    /// A back end for dockerd at `socket_path` (a path, or `unix://` + path).
    ///
    /// A missing path, or one that is not a socket, is
    /// [`RuntimeError::Unreachable`] at once; a refused or unreadable socket
    /// is the same error from the first call.
    pub fn connect(socket_path: &str) -> Result<Self, RuntimeError> {
        let path = socket_path.strip_prefix("unix://").unwrap_or(socket_path);
        check_socket(Path::new(path), &DOCKERD).map_err(|reason| RuntimeError::Unreachable {
            runtime: RUNTIME,
            endpoint: path.to_string(),
            reason,
        })?;
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                endpoint: path.to_string(),
                session: OnceCell::new(),
            }),
        })
    }

    /// The API version both sides speak (e.g. `1.41`), once negotiated.
    pub fn api_version(&self) -> Option<&str> {
        self.inner.session.get().map(|s| s.api_version.as_str())
    }

    /// The engine's cgroup driver, once negotiated.
    pub fn cgroup_driver(&self) -> Option<CgroupDriver> {
        self.inner.session.get().map(|s| s.cgroup_driver)
    }

    async fn session(&self) -> Result<&Session, RuntimeError> {
        self.inner.session().await
    }
}

impl Inner {
    async fn session(&self) -> Result<&Session, RuntimeError> {
        self.session
            .get_or_try_init(|| negotiate(&self.endpoint))
            .await
    }
}

/// Negotiates the API version with the engine at `endpoint` and reads its
/// cgroup driver.
async fn negotiate(endpoint: &str) -> Result<Session, RuntimeError> {
    let timeout_secs = CALL_TIMEOUT.as_secs();
    let probe = Docker::connect_with_unix(endpoint, timeout_secs, API_DEFAULT_VERSION)
        .map_err(|e| map_error(endpoint, "version", e))?
        .with_request_modifier(|req| with_api_version(req, None));
    let server = call(endpoint, "version", probe.version()).await?;
    let server_api = server.api_version.clone().unwrap_or_default();
    let server_max = parse_api_version(&server_api).ok_or_else(|| RuntimeError::Api {
        runtime: RUNTIME,
        call: "version",
        reason: format!("engine API version `{server_api}`: expected <major>.<minor>"),
    })?;
    if let Some(min) = server
        .min_api_version
        .as_deref()
        .and_then(parse_api_version)
    {
        if api_key(&min) > api_key(API_DEFAULT_VERSION) {
            return Err(RuntimeError::Api {
                runtime: RUNTIME,
                call: "version",
                reason: format!(
                    "engine requires API >= {min}; this client speaks up to {API_DEFAULT_VERSION}"
                ),
            });
        }
    }
    let version = if api_key(&server_max) < api_key(API_DEFAULT_VERSION) {
        server_max
    } else {
        *API_DEFAULT_VERSION
    };
    let prefix = version.to_string();
    let docker = Docker::connect_with_unix(endpoint, timeout_secs, &version)
        .map_err(|e| map_error(endpoint, "version", e))?
        .with_request_modifier(move |req| with_api_version(req, Some(&prefix)));

    // The driver only refines derived cgroup paths; an engine that will
    // not say leaves them to /proc.
    let cgroup_driver = match call(endpoint, "info", docker.info()).await {
        Ok(info) => match info.cgroup_driver {
            Some(SystemInfoCgroupDriverEnum::CGROUPFS) => CgroupDriver::Cgroupfs,
            Some(SystemInfoCgroupDriverEnum::SYSTEMD) => CgroupDriver::Systemd,
            _ => CgroupDriver::Unknown,
        },
        Err(e) => {
            tracing::debug!(error = %e, "docker info failed; cgroup paths come from /proc only");
            CgroupDriver::Unknown
        }
    };

    Ok(Session {
        docker,
        endpoint: endpoint.to_string(),
        api_version: version.to_string(),
        cgroup_driver,
    })
}

impl Session {
    async fn call<T>(
        &self,
        name: &'static str,
        fut: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, RuntimeError> {
        call(&self.endpoint, name, fut).await
    }

    /// Like [`Self::call`], with the engine's 404 as `Ok(None)`.
    async fn call_found<T>(
        &self,
        name: &'static str,
        fut: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<Option<T>, RuntimeError> {
        let found = async {
            match fut.await {
                Ok(v) => Ok(Some(v)),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        call(&self.endpoint, name, found).await
    }

    async fn list_all(&self) -> Result<Listing, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let summaries = self
            .call(
                "list containers",
                self.docker.list_containers(Some(options)),
            )
            .await?;
        let calls = AtomicU32::new(1);
        let images = ImageCache::default();
        let described: Vec<Result<Described, RuntimeError>> = stream::iter(summaries)
            .map(|s| self.describe(s, &images, &calls))
            .buffered(INSPECT_CONCURRENCY)
            .collect()
            .await;

        let mut listing = Listing::default();
        for d in described {
            match d? {
                Described::Full(w) => listing.workloads.push(w),
                Described::Gone => {}
                Described::Failed(w) => {
                    listing.failures += 1;
                    listing.workloads.push(w);
                }
            }
        }
        listing.calls = calls.load(Ordering::Relaxed);
        Ok(listing)
    }

    /// Inspects one listed container. Only a lost engine fails the whole
    /// listing: a half-answered resync would look like mass removal.
    async fn describe(
        &self,
        summary: ContainerSummary,
        images: &ImageCache,
        calls: &AtomicU32,
    ) -> Result<Described, RuntimeError> {
        // The engine always lists IDs; a record keyed by nothing would be
        // worse than none.
        let Some(id) = summary.id.clone().filter(|id| !id.is_empty()) else {
            return Ok(Described::Gone);
        };
        calls.fetch_add(1, Ordering::Relaxed);
        let inspected = self
            .call_found(
                "inspect container",
                self.docker.inspect_container(&id, None),
            )
            .await;
        let c = match inspected {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Described::Gone),
            Err(e @ RuntimeError::Unreachable { .. }) => return Err(e),
            Err(e) => {
                return Ok(Described::Failed(partial_from_summary(
                    &summary,
                    &e.to_string(),
                )))
            }
        };
        match self.workload(c, Some((images, calls))).await {
            Ok(w) => Ok(Described::Full(w)),
            Err(reason) => Ok(Described::Failed(partial_from_summary(
                &summary,
                &format!("docker inspect container: {reason}"),
            ))),
        }
    }

    /// The record for an inspected container, with the image digest (from
    /// `cache` when given) and the cgroup path.
    async fn workload(
        &self,
        c: ContainerInspectResponse,
        cache: Option<(&ImageCache, &AtomicU32)>,
    ) -> Result<Workload, String> {
        let mut w = map_inspect(&c, self.cgroup_driver)?;
        if !w.image_id.is_empty() {
            let image_id = w.image_id.clone();
            w.image_digest = match cache {
                Some((images, calls)) => {
                    let cell = match images.digests.lock() {
                        Ok(mut map) => map.entry(image_id.clone()).or_default().clone(),
                        // A panic elsewhere poisoned the cache: inspect
                        // without it rather than fail the listing.
                        Err(_) => Arc::new(OnceCell::new()),
                    };
                    cell.get_or_init(|| async {
                        calls.fetch_add(1, Ordering::Relaxed);
                        self.image_digest(&image_id).await
                    })
                    .await
                    .clone()
                }
                None => self.image_digest(&image_id).await,
            };
        }
        if let Some(pid) = w.pid {
            let path = format!("/proc/{pid}/cgroup");
            // procfs reads never wait on a disk, so a blocking read is fine.
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Some(cg) = unified_cgroup(&text).filter(|cg| cg.contains(&w.container_id)) {
                    w.cgroup = cg.to_string();
                }
            }
        }
        Ok(w)
    }

    /// `RepoDigests[0]` of an image, or empty: a locally built image has
    /// none, and a failed image inspect costs the digest, not the record.
    async fn image_digest(&self, image_id: &str) -> String {
        match self
            .call("inspect image", self.docker.inspect_image(image_id))
            .await
        {
            Ok(img) => img
                .repo_digests
                .and_then(|d| d.into_iter().next())
                .unwrap_or_default(),
            Err(e) => {
                tracing::debug!(image_id, error = %e, "image inspect failed; digest left empty");
                String::new()
            }
        }
    }

    async fn inspect_one(&self, container_id: &str) -> Result<Option<Workload>, RuntimeError> {
        let Some(c) = self
            .call_found(
                "inspect container",
                self.docker.inspect_container(container_id, None),
            )
            .await?
        else {
            return Ok(None);
        };
        self.workload(c, None)
            .await
            .map(Some)
            .map_err(|reason| RuntimeError::Api {
                runtime: RUNTIME,
                call: "inspect container",
                reason,
            })
    }
}

impl Runtime for DockerRuntime {
    fn source(&self) -> RuntimeSource {
        RuntimeSource::Docker
    }

    fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// `docker <engine version> (API <negotiated version>)`.
    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>> {
        async move {
            let s = self.session().await?;
            let v = s.call("version", s.docker.version()).await?;
            Ok(format!(
                "docker {} (API {})",
                v.version.unwrap_or_default(),
                s.api_version
            ))
        }
        .boxed()
    }

    /// `Listing::calls` counts the listing's own calls: one list, one
    /// inspect per container, one inspect per distinct image (the version
    /// negotiation of a first call is not counted).
    fn list(&self) -> BoxFuture<'_, Result<Listing, RuntimeError>> {
        async move { self.session().await?.list_all().await }.boxed()
    }

    fn inspect<'a>(
        &'a self,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Workload>, RuntimeError>> {
        async move { self.session().await?.inspect_one(container_id).await }.boxed()
    }

    fn events(&self) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                EVENTS.iter().map(|e| e.to_string()).collect(),
            ),
        ]);
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let inner = self.inner.clone();
        // The subscription starts when the stream is first polled; the state
        // is `Done` once the stream has reported its end: one error, then
        // nothing.
        stream::unfold(EventsState::Start(inner, options), |state| async move {
            let (mut events, endpoint) = match state {
                EventsState::Done => return None,
                EventsState::Reading(events, endpoint) => (events, endpoint),
                EventsState::Start(inner, options) => match inner.session().await {
                    Ok(s) => (
                        s.docker.events(Some(options)).boxed(),
                        inner.endpoint.clone(),
                    ),
                    Err(e) => {
                        let reason = format!("{}: {e}", inner.endpoint);
                        return Some((
                            Err(RuntimeError::Events {
                                runtime: RUNTIME,
                                reason,
                            }),
                            EventsState::Done,
                        ));
                    }
                },
            };
            loop {
                let reason = match events.next().await {
                    Some(Ok(msg)) => match map_event(&msg) {
                        Some(ev) => return Some((Ok(ev), EventsState::Reading(events, endpoint))),
                        None => continue,
                    },
                    Some(Err(e)) => match map_error(&endpoint, "events", e) {
                        RuntimeError::Unreachable { reason, .. } => {
                            format!("{endpoint}: {reason}")
                        }
                        other => format!("{endpoint}: {other}"),
                    },
                    None => format!("{endpoint}: dockerd closed the stream"),
                };
                return Some((
                    Err(RuntimeError::Events {
                        runtime: RUNTIME,
                        reason,
                    }),
                    EventsState::Done,
                ));
            }
        })
        .boxed()
    }
}

/// Where an event stream is.
enum EventsState {
    /// Not yet subscribed.
    Start(Arc<Inner>, EventsOptions),
    Reading(
        BoxStream<'static, Result<EventMessage, BollardError>>,
        String,
    ),
    Done,
}

/// Runs one Engine API call under [`CALL_TIMEOUT`].
async fn call<T>(
    endpoint: &str,
    name: &'static str,
    fut: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_error(endpoint, name, e)),
        Err(_) => Err(RuntimeError::Timeout {
            runtime: RUNTIME,
            call: name,
            timeout: CALL_TIMEOUT,
        }),
    }
}

/// Sets the request path's API version prefix: `/v<version>/…`, or none
/// at all, which an engine answers at its own maximum.
fn with_api_version(mut req: BollardRequest, version: Option<&str>) -> BollardRequest {
    let uri = req.uri().clone();
    let Some(pq) = uri.path_and_query() else {
        return req;
    };
    let bare = strip_version_prefix(pq.as_str());
    let wanted = match version {
        Some(v) => format!("/v{v}{bare}"),
        None => bare.to_string(),
    };
    if wanted == pq.as_str() {
        return req;
    }
    let mut parts = uri.into_parts();
    // Both halves were a valid URI a moment ago and only the version digits
    // changed, so these parses do not fail; if one did, the request would go
    // out as bollard built it.
    if let Ok(new_pq) = wanted.parse() {
        parts.path_and_query = Some(new_pq);
        if let Ok(new_uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = new_uri;
        }
    }
    req
}

/// `/v1.53/version?x` → `/version?x`; anything else unchanged.
fn strip_version_prefix(path_and_query: &str) -> &str {
    let Some(rest) = path_and_query.strip_prefix("/v") else {
        return path_and_query;
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (version, tail) = rest.split_at(end);
    if parse_api_version(version).is_some() && tail.starts_with('/') {
        tail
    } else {
        path_and_query
    }
}

fn parse_api_version(s: &str) -> Option<ClientVersion> {
    let (major, minor) = s.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

fn api_key(v: &ClientVersion) -> (usize, usize) {
    (v.major_version, v.minor_version)
}

/// Turns a bollard error into the crate's error, naming the call.
fn map_error(endpoint: &str, name: &'static str, e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Api {
            runtime: RUNTIME,
            call: name,
            reason: format!("{status_code}: {message}"),
        },
        BollardError::RequestTimeoutError => RuntimeError::Timeout {
            runtime: RUNTIME,
            call: name,
            timeout: CALL_TIMEOUT,
        },
        BollardError::SocketNotFoundError(_) => RuntimeError::Unreachable {
            runtime: RUNTIME,
            endpoint: endpoint.to_string(),
            reason: socket_reason(std::io::ErrorKind::NotFound, &DOCKERD),
        },
        other => {
            let io_kind = io_error_kind(&other);
            match io_kind.filter(|k| is_connection_failure(*k)) {
                Some(kind) => RuntimeError::Unreachable {
                    runtime: RUNTIME,
                    endpoint: endpoint.to_string(),
                    reason: socket_reason(kind, &DOCKERD),
                },
                None => RuntimeError::Api {
                    runtime: RUNTIME,
                    call: name,
                    reason: error_chain(&other),
                },
            }
        }
    }
}

fn is_connection_failure(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        NotFound | PermissionDenied | ConnectionRefused | ConnectionReset | BrokenPipe
    )
}

/// The first I/O error in an error's source chain.
fn io_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// `outer: inner: innermost`, since hyper's own messages alone say little.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
}

/// The record for an inspected container, except the image digest and the
/// `/proc` cgroup, which take further I/O.
fn map_inspect(c: &ContainerInspectResponse, driver: CgroupDriver) -> Result<Workload, String> {
    let id =
        c.id.clone()
            .filter(|id| !id.is_empty())
            .ok_or("inspect: container without an Id")?;
    let mut w = Workload::partial(&id, RuntimeSource::Docker, "");
    w.confidence = Confidence::Full;
    w.name = c
        .name
        .as_deref()
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .unwrap_or_default();
    w.image_id = c.image.clone().unwrap_or_default();
    if let Some(config) = &c.config {
        w.image = config.image.clone().unwrap_or_default();
        w.labels = config
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
    }
    w.compose = compose_from_labels(&w.labels);
    if let Some(hc) = &c.host_config {
        w.network_mode = hc.network_mode.clone().unwrap_or_default();
        w.cgroup = derive_cgroup(driver, hc.cgroup_parent.as_deref().unwrap_or(""), &id);
    } else {
        w.cgroup = derive_cgroup(driver, "", &id);
    }
    if let Some(ns) = &c.network_settings {
        w.ips = collect_ips(ns);
    }
    w.created_at_ms = parse_docker_time("Created", c.created.as_deref().unwrap_or(""))?;
    if let Some(st) = &c.state {
        w.state = map_state(st.status.as_ref().map_or("", |s| s.as_ref()));
        if st.running == Some(true) {
            w.pid = st
                .pid
                .filter(|p| *p > 0)
                .and_then(|p| u32::try_from(p).ok());
        }
        w.started_at_ms =
            parse_docker_time("State.StartedAt", st.started_at.as_deref().unwrap_or(""))?;
        if w.state == WorkloadState::Stopped {
            w.finished_at_ms =
                parse_docker_time("State.FinishedAt", st.finished_at.as_deref().unwrap_or(""))?;
            w.exit_code = st.exit_code;
        }
    }
    Ok(w)
}

/// What the listing alone says about a container whose inspect failed.
fn partial_from_summary(s: &ContainerSummary, reason: &str) -> Workload {
    let id = s.id.clone().unwrap_or_default();
    let mut w = Workload::partial(&id, RuntimeSource::Docker, reason);
    w.name = s
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .unwrap_or_default();
    w.image = s.image.clone().unwrap_or_default();
    w.image_id = s.image_id.clone().unwrap_or_default();
    w.labels = s
        .labels
        .as_ref()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    w.compose = compose_from_labels(&w.labels);
    w.state = map_state(s.state.as_ref().map_or("", |st| st.as_ref()));
    w
}

/// Engine state → record state. `stopping` still has a process.
fn map_state(status: &str) -> WorkloadState {
    match status {
        "created" => WorkloadState::Created,
        "running" | "restarting" | "stopping" => WorkloadState::Running,
        "paused" => WorkloadState::Paused,
        "exited" | "dead" | "removing" => WorkloadState::Stopped,
        _ => WorkloadState::Unknown,
    }
}

/// An engine timestamp (RFC 3339, nanoseconds) in unix milliseconds; empty
/// or Go's zero time means "never" and gives 0.
fn parse_docker_time(field: &str, value: &str) -> Result<i64, String> {
    if value.is_empty() || value.starts_with(GO_ZERO_TIME_PREFIX) {
        return Ok(0);
    }
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{field} `{value}`: not an RFC 3339 time ({e})"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{field} `{value}`: out of range"))
}

/// Compose markers, when either the project or the service label is set.
fn compose_from_labels(labels: &BTreeMap<String, String>) -> Option<Compose> {
    let project = labels.get(COMPOSE_PROJECT);
    let service = labels.get(COMPOSE_SERVICE);
    if project.is_none() && service.is_none() {
        return None;
    }
    Some(Compose {
        project: project.cloned().unwrap_or_default(),
        service: service.cloned().unwrap_or_default(),
        oneoff: labels
            .get(COMPOSE_ONEOFF)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    })
}

/// Every network's IPv4 and global IPv6 address, networks in name order
/// (the engine's map has none), without duplicates.
fn collect_ips(ns: &NetworkSettings) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(networks) = &ns.networks else {
        return out;
    };
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    for name in names {
        let ep = &networks[name];
        for ip in [&ep.ip_address, &ep.global_ipv6_address]
            .into_iter()
            .flatten()
        {
            if !ip.is_empty() && !out.contains(ip) {
                out.push(ip.clone());
            }
        }
    }
    out
}

/// The cgroup path dockerd gives a container, from its driver and the
/// container's `CgroupParent`.
fn derive_cgroup(driver: CgroupDriver, parent: &str, id: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => {
            let parent = parent.trim_end_matches('/');
            let parent = if parent.is_empty() { "/docker" } else { parent };
            if parent.starts_with('/') {
                format!("{parent}/{id}")
            } else {
                format!("/{parent}/{id}")
            }
        }
        CgroupDriver::Systemd => {
            let slice = if parent.is_empty() {
                "system.slice"
            } else {
                parent
            };
            format!("{}/docker-{id}.scope", expand_slice(slice))
        }
        CgroupDriver::Unknown => String::new(),
    }
}

/// systemd's slice nesting: `a-b.slice` lives at `/a.slice/a-b.slice`.
fn expand_slice(slice: &str) -> String {
    let Some(stem) = slice.strip_suffix(".slice") else {
        // Not a slice name: the engine would refuse it with the systemd
        // driver, so this path is only ever a best guess.
        return format!("/{}", slice.trim_start_matches('/'));
    };
    if stem == "-" || stem.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    out
}

/// The cgroup v2 path in `/proc/<pid>/cgroup` (the `0::` line).
fn unified_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|p| p.starts_with('/') && *p != "/")
}

/// Engine event action → record change. Docker suffixes some actions
/// (`exec_start: sh`, `health_status: healthy`); those are not subscribed.
fn event_action(action: &str) -> Option<EventAction> {
    Some(match action {
        "create" => EventAction::Created,
        "start" => EventAction::Started,
        "die" => EventAction::Died,
        "destroy" => EventAction::Destroyed,
        "rename" => EventAction::Renamed,
        "update" | "pause" | "unpause" => EventAction::Updated,
        _ => return None,
    })
}

fn map_event(msg: &EventMessage) -> Option<RuntimeEvent> {
    let action = event_action(msg.action.as_deref()?)?;
    let container_id = msg.actor.as_ref()?.id.clone().filter(|id| !id.is_empty())?;
    let at_ms = match (msg.time_nano, msg.time) {
        (Some(ns), _) if ns > 0 => ns / 1_000_000,
        (_, Some(s)) if s > 0 => s.saturating_mul(1000),
        _ => now_ms(),
    };
    Some(RuntimeEvent {
        container_id,
        action,
        at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerState, ContainerStateStatusEnum, EndpointSettings, EventActor,
        HostConfig,
    };

    const ID: &str = "8b448499c04181d4d612cb5389fbc5d09a1249b3b59a4967771033c7d2ec5314";

    #[test]
    fn state_mapping() {
        let cases = [
            ("created", WorkloadState::Created),
            ("running", WorkloadState::Running),
            ("restarting", WorkloadState::Running),
            ("stopping", WorkloadState::Running),
            ("paused", WorkloadState::Paused),
            ("exited", WorkloadState::Stopped),
            ("dead", WorkloadState::Stopped),
            ("removing", WorkloadState::Stopped),
            ("", WorkloadState::Unknown),
            ("Running", WorkloadState::Unknown),
        ];
        for (input, want) in cases {
            assert_eq!(map_state(input), want, "{input:?}");
        }
        // The bollard enums print the engine's words.
        assert_eq!(
            map_state(ContainerStateStatusEnum::RESTARTING.as_ref()),
            WorkloadState::Running
        );
    }

    #[test]
    fn timestamps() {
        let cases: [(&str, Result<i64, ()>); 8] = [
            ("", Ok(0)),
            ("0001-01-01T00:00:00Z", Ok(0)),
            ("1970-01-01T00:00:01Z", Ok(1000)),
            ("2026-11-23T22:03:40.34473771Z", Ok(1_795_471_420_344)),
            ("2026-11-23T22:03:40.572864319Z", Ok(1_795_471_420_572)),
            ("2026-11-23T23:03:40.5+01:00", Ok(1_795_471_420_500)),
            ("yesterday", Err(())),
            ("2026-11-23 22:03:40", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_docker_time("Created", input);
            match want {
                Ok(ms) => assert_eq!(got, Ok(ms), "{input:?}"),
                Err(()) => {
                    let e = got.expect_err(input);
                    assert!(e.contains("Created") && e.contains(input), "{e}");
                }
            }
        }
    }

    #[test]
    fn compose_labels() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let compose = |p: &str, s: &str, o: bool| {
            Some(Compose {
                project: p.into(),
                service: s.into(),
                oneoff: o,
            })
        };
        let cases = [
            (labels(&[("app", "web")]), None),
            (
                labels(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "web")]),
                compose("shop", "web", false),
            ),
            (
                labels(&[
                    (COMPOSE_PROJECT, "shop"),
                    (COMPOSE_SERVICE, "web"),
                    (COMPOSE_ONEOFF, "True"),
                ]),
                compose("shop", "web", true),
            ),
            (
                labels(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_ONEOFF, "False")]),
                compose("shop", "", false),
            ),
            (labels(&[(COMPOSE_SERVICE, "db")]), compose("", "db", false)),
            (labels(&[(COMPOSE_ONEOFF, "True")]), None),
        ];
        for (input, want) in cases {
            assert_eq!(compose_from_labels(&input), want, "{input:?}");
        }
    }

    fn endpoint(v4: &str, v6: &str) -> EndpointSettings {
        EndpointSettings {
            ip_address: Some(v4.into()),
            global_ipv6_address: Some(v6.into()),
            ..Default::default()
        }
    }

    #[test]
    fn ip_collection() {
        let ns = NetworkSettings {
            networks: Some(HashMap::from([
                ("zeta".to_string(), endpoint("10.0.2.5", "")),
                ("alpha".to_string(), endpoint("10.0.1.5", "fd00::5")),
                ("none".to_string(), endpoint("", "")),
                ("dup".to_string(), endpoint("10.0.1.5", "")),
                (
                    "unset".to_string(),
                    EndpointSettings {
                        ip_address: None,
                        ..Default::default()
                    },
                ),
            ])),
            ..Default::default()
        };
        assert_eq!(collect_ips(&ns), vec!["10.0.1.5", "fd00::5", "10.0.2.5"]);
        assert!(collect_ips(&NetworkSettings::default()).is_empty());
    }

    #[test]
    fn cgroup_derivation() {
        let cases = [
            (CgroupDriver::Cgroupfs, "", format!("/docker/{ID}")),
            (CgroupDriver::Cgroupfs, "/custom/", format!("/custom/{ID}")),
            (CgroupDriver::Cgroupfs, "custom", format!("/custom/{ID}")),
            (
                CgroupDriver::Systemd,
                "",
                format!("/system.slice/docker-{ID}.scope"),
            ),
            (
                CgroupDriver::Systemd,
                "shop-web.slice",
                format!("/shop.slice/shop-web.slice/docker-{ID}.scope"),
            ),
            (CgroupDriver::Unknown, "/docker", String::new()),
        ];
        for (driver, parent, want) in cases {
            assert_eq!(
                derive_cgroup(driver, parent, ID),
                want,
                "{driver:?} {parent:?}"
            );
        }
    }

    #[test]
    fn unified_cgroup_line() {
        let hybrid = format!("9:name=systemd:/docker/{ID}\n1:cpu:/docker/{ID}\n0::/docker/{ID}\n");
        assert_eq!(
            unified_cgroup(&hybrid),
            Some(format!("/docker/{ID}").as_str())
        );
        assert_eq!(unified_cgroup("0::/\n"), None);
        assert_eq!(unified_cgroup("4:memory:/x\n"), None);
        assert_eq!(unified_cgroup(""), None);
    }

    #[test]
    fn version_prefix() {
        let cases = [
            ("/v1.53/version", "/version"),
            (
                "/v1.41/containers/json?all=true",
                "/containers/json?all=true",
            ),
            ("/version", "/version"),
            ("/vx.y/version", "/vx.y/version"),
            ("/v1.53", "/v1.53"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_version_prefix(input), want, "{input}");
        }
        let v = parse_api_version("1.41").map(|v| api_key(&v));
        assert_eq!(v, Some((1, 41)));
        assert!(parse_api_version("1").is_none());
        assert!(parse_api_version("1.x").is_none());
    }

    #[test]
    fn event_actions() {
        let cases = [
            ("create", Some(EventAction::Created)),
            ("start", Some(EventAction::Started)),
            ("die", Some(EventAction::Died)),
            ("destroy", Some(EventAction::Destroyed)),
            ("rename", Some(EventAction::Renamed)),
            ("update", Some(EventAction::Updated)),
            ("pause", Some(EventAction::Updated)),
            ("unpause", Some(EventAction::Updated)),
            ("kill", None),
            ("oom", None),
            ("exec_start: sh -c true", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(event_action(input), want, "{input:?}");
        }
    }

    #[test]
    fn event_mapping() {
        let msg =
            |action: &str, id: Option<&str>, time: Option<i64>, nano: Option<i64>| EventMessage {
                action: Some(action.into()),
                actor: Some(EventActor {
                    id: id.map(Into::into),
                    attributes: None,
                }),
                time,
                time_nano: nano,
                ..Default::default()
            };
        let ev = map_event(&msg(
            "start",
            Some(ID),
            Some(1_700_000_000),
            Some(1_700_000_000_123_456_789),
        ));
        assert_eq!(
            ev,
            Some(RuntimeEvent {
                container_id: ID.into(),
                action: EventAction::Started,
                at_ms: 1_700_000_000_123,
            })
        );
        let ev = map_event(&msg("die", Some(ID), Some(1_700_000_000), None));
        assert_eq!(ev.map(|e| e.at_ms), Some(1_700_000_000_000));
        let before = now_ms();
        let ev = map_event(&msg("destroy", Some(ID), None, None));
        assert!(ev.is_some_and(|e| e.at_ms >= before));
        assert_eq!(map_event(&msg("start", None, None, None)), None);
        assert_eq!(map_event(&msg("start", Some(""), None, None)), None);
        assert_eq!(map_event(&msg("kill", Some(ID), None, None)), None);
    }

    fn inspected(status: ContainerStateStatusEnum, running: bool) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some(ID.into()),
            name: Some("/web-1".into()),
            image: Some("sha256:c8ad".into()),
            created: Some("2026-11-23T22:03:40.34473771Z".into()),
            config: Some(ContainerConfig {
                image: Some("shop/web:1".into()),
                labels: Some(HashMap::from([
                    (COMPOSE_PROJECT.to_string(), "shop".to_string()),
                    (COMPOSE_SERVICE.to_string(), "web".to_string()),
                    ("app".to_string(), "web".to_string()),
                ])),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            state: Some(ContainerState {
                status: Some(status),
                running: Some(running),
                pid: Some(if running { 880 } else { 0 }),
                exit_code: Some(3),
                started_at: Some("2026-11-23T22:03:40.572864319Z".into()),
                finished_at: Some("2026-11-23T22:04:00Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn inspect_mapping_running() {
        let w = map_inspect(
            &inspected(ContainerStateStatusEnum::RUNNING, true),
            CgroupDriver::Cgroupfs,
        )
        .unwrap();
        assert_eq!(w.container_id, ID);
        assert_eq!(w.name, "web-1");
        assert_eq!(w.image, "shop/web:1");
        assert_eq!(w.image_id, "sha256:c8ad");
        assert_eq!(w.labels.len(), 3);
        assert_eq!(w.compose.as_ref().map(|c| c.service.as_str()), Some("web"));
        assert_eq!(w.pid, Some(880));
        assert_eq!(w.cgroup, format!("/docker/{ID}"));
        assert_eq!(w.network_mode, "none");
        assert_eq!(w.state, WorkloadState::Running);
        assert_eq!(w.created_at_ms, 1_795_471_420_344);
        assert_eq!(w.started_at_ms, 1_795_471_420_572);
        // A running container's FinishedAt is a previous run's.
        assert_eq!(w.finished_at_ms, 0);
        assert_eq!(w.exit_code, None);
        assert_eq!(w.confidence, Confidence::Full);
        assert!(w.degraded_reason.is_empty());
    }

    #[test]
    fn inspect_mapping_stopped_and_malformed() {
        let w = map_inspect(
            &inspected(ContainerStateStatusEnum::EXITED, false),
            CgroupDriver::Unknown,
        )
        .unwrap();
        assert_eq!(w.state, WorkloadState::Stopped);
        assert_eq!(w.pid, None);
        assert_eq!(w.exit_code, Some(3));
        assert_eq!(w.finished_at_ms, 1_795_471_440_000);
        assert_eq!(w.cgroup, "");

        let mut bad = inspected(ContainerStateStatusEnum::EXITED, false);
        bad.created = Some("not a time".into());
        let e = map_inspect(&bad, CgroupDriver::Cgroupfs).unwrap_err();
        assert!(e.contains("Created `not a time`"), "{e}");

        let mut no_id = inspected(ContainerStateStatusEnum::EXITED, false);
        no_id.id = None;
        assert!(map_inspect(&no_id, CgroupDriver::Cgroupfs).is_err());
    }

    #[test]
    fn partial_from_listing() {
        let s = ContainerSummary {
            id: Some(ID.into()),
            names: Some(vec!["/web-1".into()]),
            image: Some("shop/web:1".into()),
            labels: Some(HashMap::from([(
                COMPOSE_PROJECT.to_string(),
                "shop".to_string(),
            )])),
            state: Some(bollard::models::ContainerSummaryStateEnum::EXITED),
            ..Default::default()
        };
        let w = partial_from_summary(&s, "docker inspect container: 500: boom");
        assert_eq!(w.confidence, Confidence::Partial);
        assert_eq!(w.degraded_reason, "docker inspect container: 500: boom");
        assert_eq!(w.name, "web-1");
        assert_eq!(w.state, WorkloadState::Stopped);
        assert_eq!(w.compose.as_ref().map(|c| c.project.as_str()), Some("shop"));
        assert!(w.selectors().is_empty());
    }
}
