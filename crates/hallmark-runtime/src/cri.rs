//! Kubernetes CRI v1 back end: the kubelet's gRPC API to containerd or CRI-O,
//! spoken over the runtime's Unix socket.
//!
//! The protocol is our own subset of `k8s.io/cri-api` `runtime.v1`
//! (`proto/cri.proto`, wire-identical field numbers), exported as [`pb`].
//! Every call is bounded by [`CALL_TIMEOUT`]; replies may be up to 16 MiB, as
//! the kubelet allows, since a busy node's `ListContainers` outgrows gRPC's
//! 4 MiB default.
//!
//! A listing is `ListPodSandbox` + `ListContainers`, then `ContainerStatus`
//! (verbose) per container and `PodSandboxStatus` once per sandbox that has
//! containers, [`STATUS_CONCURRENCY`] in flight, then `ImageStatus` once per
//! distinct image whose ID or repository digest the container status left
//! out (containerd reports only one of the two in `image_ref`).
//!
//! Where a field comes from:
//! - `pid`, `cgroup`: the verbose status's `info["info"]` JSON. containerd
//!   (checked against 1.6) and CRI-O both put `pid` and the OCI
//!   `runtimeSpec` there; `cgroup` is `runtimeSpec.linux.cgroupsPath`:
//!   as is for the cgroupfs driver, and the systemd driver's
//!   `slice:prefix:name` notation expanded to the path systemd creates
//!   (`/kubepods.slice/…/cri-containerd-<id>.scope`). CRI-O is supported on
//!   a best-effort basis: a shape that does not parse leaves the fields empty
//!   rather than guessed. `pid` is kept only while the container runs.
//! - `image`: the status's image spec (`user_specified_image` when the
//!   runtime has it), else the image spec the container was created with.
//! - `pod`, `network_mode` (`pod`, `node`…), `ips`: the sandbox status. A
//!   host-network pod has no pod IPs in CRI, so `ips` stays empty for it.
//!
//! Pod sandboxes (the `pause` containers) are not workloads: CRI does not
//! list them as containers and neither does this back end. A process in a
//! sandbox's own cgroup is therefore unknown to the inventory.
//!
//! Events: `GetContainerEvents` where the runtime implements it (containerd
//! 1.7+, CRI-O 1.26+). containerd 1.6 answers Unimplemented; then the stream
//! polls `ListContainers` every [`POLL_INTERVAL`] (one call per poll) and
//! diffs each container's state against the previous poll to synthesize
//! Created / Started / Died / Destroyed. An exited container stays listed
//! until it is removed, so one that starts and exits between two polls is
//! still reported (Created, Started, Died); one created *and removed* within
//! a single interval is missed, and a container that failed to start is
//! reported as started and died. Either way the consumer's periodic resync
//! remains the source of truth.
//!
//! Inside: `transport` holds the channel and one method per CRI call,
//! `mapping` turns the replies into records, `events` produces the event
//! stream.

mod events;
mod mapping;
pub mod pods;
mod transport;

/// The CRI v1 subset Hallmark speaks (`runtime.v1`). Public as a small
/// convenience for tests and benches that create pods and containers.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
}

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use hallmark_core::{RuntimeSource, Workload};
use tonic::transport::Channel;

use crate::{Listing, Runtime, RuntimeError, RuntimeEvent};
use mapping::{
    image_lookup_key, mark_pod_unknown, parse_info, partial_from_listed, spec_image,
    workload_from_status, PodFacts,
};
use transport::{Conn, StatusReply};

/// The longest any single CRI call (and the initial connect) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How many status calls a listing keeps in flight.
pub const STATUS_CONCURRENCY: usize = 16;

/// How often the event fallback polls `ListContainers`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

const RUNTIME: &str = "cri";

/// A Kubernetes CRI v1 runtime (containerd, CRI-O) on a Unix socket.
///
/// The underlying channel reconnects on its own, so a runtime restart costs
/// failed calls (and a broken event stream), not a new `CriRuntime`.
#[derive(Clone)]
pub struct CriRuntime {
    conn: Conn,
}

impl std::fmt::Debug for CriRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriRuntime")
            .field("endpoint", &self.conn.endpoint)
            .finish_non_exhaustive()
    }
}

impl CriRuntime {
    /// Connects to `socket` (a path or a `unix://` URL) and checks with
    /// `Version` that it serves CRI v1.
    ///
    /// Fails with [`RuntimeError::Unreachable`] when the socket is missing,
    /// not a socket, or refuses the connection, and with
    /// [`RuntimeError::Api`] when something answers but not as a CRI v1
    /// runtime (for example containerd without its CRI plugin).
    pub async fn connect(socket: &str) -> Result<CriRuntime, RuntimeError> {
        let conn = Conn::open(socket).await?;
        conn.check_cri().await?;
        Ok(CriRuntime { conn })
    }

    async fn list_all(&self) -> Result<Listing, RuntimeError> {
        let conn = &self.conn;
        let sandboxes = conn.list_sandboxes().await?;
        let containers = conn.list_containers(None).await?;
        let mut calls: u32 = 2;
        let mut failures: u32 = 0;

        // Sandboxes are looked up by the containers that name them, not
        // from the sandbox listing: a pod created between the two listings
        // is still described.
        let listed_pods: HashMap<&str, &pb::PodSandbox> =
            sandboxes.iter().map(|s| (s.id.as_str(), s)).collect();
        let wanted: BTreeSet<String> = containers
            .iter()
            .filter(|c| !c.pod_sandbox_id.is_empty())
            .map(|c| c.pod_sandbox_id.clone())
            .collect();
        let statuses: Vec<(String, Result<Option<pb::PodSandboxStatus>, RuntimeError>)> =
            stream::iter(wanted)
                .map(|id| async move {
                    let r = conn.sandbox_status(&id).await;
                    (id, r)
                })
                .buffer_unordered(STATUS_CONCURRENCY)
                .collect()
                .await;
        calls += count(statuses.len());
        let mut pods: HashMap<String, PodFacts> = HashMap::new();
        for (id, result) in statuses {
            let facts = match result {
                Ok(Some(status)) => Some(PodFacts::from_status(&status)),
                Ok(None) => listed_pods
                    .get(id.as_str())
                    .map(|s| PodFacts::from_listed(s)),
                Err(e) => {
                    // The listing's copy has the pod's identity; only its
                    // network is lost.
                    tracing::warn!(sandbox = %id, error = %e, "CRI PodSandboxStatus failed");
                    listed_pods
                        .get(id.as_str())
                        .map(|s| PodFacts::from_listed(s))
                }
            };
            if let Some(facts) = facts {
                pods.insert(id, facts);
            }
        }

        let statuses: Vec<(pb::Container, Result<Option<StatusReply>, RuntimeError>)> =
            stream::iter(containers)
                .map(|c| async move {
                    let r = conn.container_status(&c.id).await;
                    (c, r)
                })
                .buffered(STATUS_CONCURRENCY)
                .collect()
                .await;
        calls += count(statuses.len());

        let keys: BTreeSet<String> = statuses
            .iter()
            .filter_map(|(_, r)| match r {
                Ok(Some(reply)) => image_lookup_key(&reply.status),
                _ => None,
            })
            .collect();
        calls += count(keys.len());
        let images = conn.images(keys).await;

        let mut workloads = Vec::with_capacity(statuses.len());
        for (listed, result) in statuses {
            let pod = pods.get(&listed.pod_sandbox_id);
            match result {
                Ok(Some(reply)) => {
                    let info = parse_info(&reply.info);
                    let image = image_lookup_key(&reply.status).and_then(|k| images.get(&k));
                    let mut w = workload_from_status(&reply.status, &info, pod, image);
                    if pod.is_none() {
                        mark_pod_unknown(&mut w, &listed.pod_sandbox_id);
                        failures += 1;
                    }
                    if w.image.is_empty() {
                        w.image = listed.image.as_ref().map(spec_image).unwrap_or_default();
                    }
                    workloads.push(w);
                }
                // Removed between the listing and the status call: gone.
                Ok(None) => {}
                Err(e) => {
                    failures += 1;
                    workloads.push(partial_from_listed(&listed, pod, &e.to_string()));
                }
            }
        }
        Ok(Listing {
            workloads,
            calls,
            failures,
        })
    }

    async fn inspect_one(&self, container_id: &str) -> Result<Option<Workload>, RuntimeError> {
        let conn = &self.conn;
        let Some(reply) = conn.container_status(container_id).await? else {
            return Ok(None);
        };
        let info = parse_info(&reply.info);
        let mut sandbox_id = info.sandbox_id.clone();
        let mut listed_image = String::new();
        if sandbox_id.is_empty() {
            // The status has no sandbox ID; the listing does.
            let filter = pb::ContainerFilter {
                id: reply.status.id.clone(),
                ..Default::default()
            };
            if let Some(c) = conn.list_containers(Some(filter)).await?.first() {
                sandbox_id.clone_from(&c.pod_sandbox_id);
                listed_image = c.image.as_ref().map(spec_image).unwrap_or_default();
            }
        }
        let pod = if sandbox_id.is_empty() {
            None
        } else {
            conn.sandbox_status(&sandbox_id)
                .await?
                .map(|s| PodFacts::from_status(&s))
        };
        let image = match image_lookup_key(&reply.status) {
            Some(key) => conn
                .images(BTreeSet::from([key.clone()]))
                .await
                .remove(&key),
            None => None,
        };
        let mut w = workload_from_status(&reply.status, &info, pod.as_ref(), image.as_ref());
        if pod.is_none() {
            mark_pod_unknown(&mut w, &sandbox_id);
        }
        if w.image.is_empty() {
            w.image = listed_image;
        }
        Ok(Some(w))
    }
}

impl Runtime for CriRuntime {
    fn source(&self) -> RuntimeSource {
        RuntimeSource::Cri
    }

    fn endpoint(&self) -> &str {
        &self.conn.endpoint
    }

    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>> {
        async move {
            let v = self.conn.version().await?;
            Ok(format!("{} {}", v.runtime_name, v.runtime_version))
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RuntimeError>> {
        self.list_all().boxed()
    }

    fn inspect<'a>(
        &'a self,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Workload>, RuntimeError>> {
        self.inspect_one(container_id).boxed()
    }

    /// The subscription starts at once (on a task of the current Tokio
    /// runtime), not when the stream is first polled, so a consumer may
    /// subscribe, resync, and only then read events without a gap. The task
    /// ends when the stream is dropped.
    fn events(&self) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
        events::subscribe(self.conn.clone())
    }
}

/// A gRPC channel to the CRI runtime at `socket` (a path or a `unix://`
/// URL), without the `Version` check. A small convenience for tests and
/// benches that create pods and containers through [`pb`].
pub async fn channel(socket: &str) -> Result<Channel, RuntimeError> {
    Ok(Conn::open(socket).await?.channel)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
