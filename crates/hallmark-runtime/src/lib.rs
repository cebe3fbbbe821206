//! Container runtime back ends for the agent's inventory and attestation.
//!
//! A [`Runtime`] answers three questions about the containers on this node:
//! what runs now ([`Runtime::list`], a full resync), what one container is
//! ([`Runtime::inspect`]), and what changed ([`Runtime::events`]). Two back
//! ends: [`docker::DockerRuntime`] (Docker Engine API over its Unix socket)
//! and [`cri::CriRuntime`] (Kubernetes CRI v1 gRPC: containerd, CRI-O).
//! [`discovery`] picks one from the configuration and the sockets present.
//!
//! Every record is a [`hallmark_core::Workload`]; this crate never invents a
//! field: what the runtime did not say stays empty.

#![forbid(unsafe_code)]

pub mod combined;
pub mod cri;
pub mod discovery;
pub mod docker;
mod socket;

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hallmark_core::{RuntimeSource, Workload};

/// What happened to a container, as the runtime's event stream says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventAction {
    Created,
    Started,
    /// The container's process exited (Docker `die`, CRI stopped).
    Died,
    /// The container was removed from the runtime.
    Destroyed,
    Renamed,
    /// Anything else that may change the record (Docker `update`, pause…).
    Updated,
}

/// One change notification. The back end does not inspect on its own: the
/// consumer decides whether to call [`Runtime::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub container_id: String,
    pub action: EventAction,
    /// Unix milliseconds, from the runtime when it says, else when received.
    pub at_ms: i64,
}

/// The result of a full resync.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Every container the runtime knows, running or not.
    pub workloads: Vec<Workload>,
    /// How many runtime API calls the listing took.
    pub calls: u32,
    /// Containers that were listed but could not be inspected: they appear
    /// in `workloads` as partial records with the reason.
    pub failures: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The socket is missing, refused, or not readable by this process.
    #[error("{runtime} socket {endpoint}: {reason}")]
    Unreachable {
        runtime: &'static str,
        endpoint: String,
        reason: String,
    },
    /// The runtime answered with an error or a malformed reply.
    #[error("{runtime} {call}: {reason}")]
    Api {
        runtime: &'static str,
        call: &'static str,
        reason: String,
    },
    /// A call took longer than the back end allows.
    #[error("{runtime} {call}: no answer within {timeout:?}")]
    Timeout {
        runtime: &'static str,
        call: &'static str,
        timeout: Duration,
    },
    /// The event stream ended or failed; the consumer should resync and
    /// subscribe again.
    #[error("{runtime} event stream: {reason}")]
    Events {
        runtime: &'static str,
        reason: String,
    },
}

/// A container runtime back end. Implementations are cheap to share
/// (`Arc<dyn Runtime>`) and safe to call concurrently.
pub trait Runtime: Send + Sync + 'static {
    fn source(&self) -> RuntimeSource;

    /// The socket path this back end talks to.
    fn endpoint(&self) -> &str;

    /// Checks the runtime answers; returns its name and version
    /// (e.g. `docker 20.10.24`, `containerd 1.6.20`).
    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>>;

    /// Every container the runtime knows, fully described.
    fn list(&self) -> BoxFuture<'_, Result<Listing, RuntimeError>>;

    /// One container by its full ID; `Ok(None)` when the runtime does not
    /// know it.
    fn inspect<'a>(
        &'a self,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Workload>, RuntimeError>>;

    /// Container lifecycle events from now on. The stream ends (or yields an
    /// error) when the runtime's stream breaks; the consumer resyncs and
    /// subscribes again.
    fn events(&self) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>>;
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    hallmark_core::time::unix_millis(SystemTime::now())
}
