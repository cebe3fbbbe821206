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
//!
//! Inside: `client` negotiates and runs the calls, `mapping` turns inspects
//! into records, `events` follows the engine's event stream; the listing
//! itself (inspects in flight, one image inspect per image) is here.

mod client;
mod events;
mod mapping;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::ListContainersOptions;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use hallmark_core::{RuntimeSource, Workload};
use tokio::sync::OnceCell;

use crate::socket::{check_socket, DOCKERD};
use crate::{Listing, Runtime, RuntimeError, RuntimeEvent};
use client::{negotiate, Session};
use mapping::{map_inspect, partial_from_summary, unified_cgroup};

/// The longest any single Engine API call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How many container inspects a listing keeps in flight.
pub const INSPECT_CONCURRENCY: usize = 16;

const RUNTIME: &str = "docker";

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

impl Session {
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
        events::subscribe(self.inner.clone())
    }
}
