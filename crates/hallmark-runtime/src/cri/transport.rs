//! The CRI runtime's gRPC channel over its Unix socket, and one method per
//! CRI call used, each bounded by [`CALL_TIMEOUT`] and mapping gRPC status
//! to [`RuntimeError`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use futures::stream;
use futures::StreamExt;
use hallmark_core::error_chain;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::pb;
use super::{CALL_TIMEOUT, RUNTIME, STATUS_CONCURRENCY};
use crate::RuntimeError;
use pb::image_service_client::ImageServiceClient;
use pb::runtime_service_client::RuntimeServiceClient;

/// The kubelet's limit for CRI replies.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// One connection to the runtime plus the endpoint it names in errors.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) endpoint: String,
    pub(super) channel: Channel,
}

/// A verbose `ContainerStatus` answer.
pub(super) struct StatusReply {
    pub(super) status: pb::ContainerStatus,
    pub(super) info: HashMap<String, String>,
}

impl Conn {
    pub(super) async fn open(socket: &str) -> Result<Conn, RuntimeError> {
        let path = socket_path(socket)?;
        let endpoint = path.display().to_string();
        let unreachable = |reason: String| RuntimeError::Unreachable {
            runtime: RUNTIME,
            endpoint: endpoint.clone(),
            reason,
        };
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => return Err(unreachable("exists but is not a Unix socket".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(unreachable(
                    "no such socket (is containerd or CRI-O running, and is this its socket?)"
                        .into(),
                ))
            }
            Err(e) => return Err(unreachable(format!("cannot stat the socket: {e}"))),
        }
        // The URI is never dialled (the connector ignores it); it only
        // fills the HTTP/2 `:authority`.
        let endpoint_cfg = Endpoint::from_static("http://localhost").connect_timeout(CALL_TIMEOUT);
        let connecting = endpoint_cfg.connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }));
        let channel = match tokio::time::timeout(CALL_TIMEOUT, connecting).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(unreachable(error_chain(&e))),
            Err(_) => {
                return Err(RuntimeError::Timeout {
                    runtime: RUNTIME,
                    call: "connect",
                    timeout: CALL_TIMEOUT,
                })
            }
        };
        Ok(Conn { endpoint, channel })
    }

    pub(super) fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn image_service(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs one call under [`CALL_TIMEOUT`]; the gRPC status is left to the
    /// caller, which may expect some codes (NotFound).
    async fn timed<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<Result<T, Status>, RuntimeError> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(r) => Ok(r.map(tonic::Response::into_inner)),
            Err(_) => Err(RuntimeError::Timeout {
                runtime: RUNTIME,
                call,
                timeout: CALL_TIMEOUT,
            }),
        }
    }

    async fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, RuntimeError> {
        self.timed(call, fut)
            .await?
            .map_err(|s| self.status_error(call, &s))
    }

    fn status_error(&self, call: &'static str, s: &Status) -> RuntimeError {
        match s.code() {
            // What tonic reports when the socket stopped answering.
            Code::Unavailable => RuntimeError::Unreachable {
                runtime: RUNTIME,
                endpoint: self.endpoint.clone(),
                reason: format!("{call}: {}", status_text(s)),
            },
            Code::Unimplemented => RuntimeError::Api {
                runtime: RUNTIME,
                call,
                reason: format!("the runtime does not implement it ({})", status_text(s)),
            },
            _ => RuntimeError::Api {
                runtime: RUNTIME,
                call,
                reason: status_text(s),
            },
        }
    }

    pub(super) async fn version(&self) -> Result<pb::VersionResponse, RuntimeError> {
        let mut c = self.runtime();
        self.call("Version", c.version(version_request())).await
    }

    /// `Version`, with the errors a socket that is not a CRI v1 runtime
    /// produces explained.
    pub(super) async fn check_cri(&self) -> Result<pb::VersionResponse, RuntimeError> {
        let mut c = self.runtime();
        let status = match self.timed("Version", c.version(version_request())).await? {
            Ok(v) if !v.runtime_name.is_empty() => return Ok(v),
            Ok(_) => {
                return Err(RuntimeError::Api {
                    runtime: RUNTIME,
                    call: "Version",
                    reason: format!(
                        "{} answered with an empty runtime name: not a CRI v1 runtime",
                        self.endpoint
                    ),
                })
            }
            Err(s) => s,
        };
        let reason = if status.code() == Code::Unimplemented {
            format!(
                "{} speaks gRPC but not the CRI v1 RuntimeService ({}); if it is \
                 containerd, its CRI plugin is disabled or failed to load (see \
                 `disabled_plugins` in its config and `ctr plugins ls`)",
                self.endpoint,
                status_text(&status)
            )
        } else {
            format!(
                "{} gave no CRI v1 answer ({}); is it a CRI runtime's socket \
                 (containerd, CRI-O) and not, say, Docker's?",
                self.endpoint,
                status_text(&status)
            )
        };
        Err(RuntimeError::Api {
            runtime: RUNTIME,
            call: "Version",
            reason,
        })
    }

    pub(super) async fn list_sandboxes(&self) -> Result<Vec<pb::PodSandbox>, RuntimeError> {
        let mut c = self.runtime();
        let req = pb::ListPodSandboxRequest::default();
        Ok(self
            .call("ListPodSandbox", c.list_pod_sandbox(req))
            .await?
            .items)
    }

    pub(super) async fn list_containers(
        &self,
        filter: Option<pb::ContainerFilter>,
    ) -> Result<Vec<pb::Container>, RuntimeError> {
        let mut c = self.runtime();
        let req = pb::ListContainersRequest { filter };
        Ok(self
            .call("ListContainers", c.list_containers(req))
            .await?
            .containers)
    }

    /// `None` when the runtime does not know the container.
    pub(super) async fn container_status(
        &self,
        id: &str,
    ) -> Result<Option<StatusReply>, RuntimeError> {
        let mut c = self.runtime();
        let req = pb::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        match self
            .timed("ContainerStatus", c.container_status(req))
            .await?
        {
            Ok(r) => match r.status {
                Some(status) => Ok(Some(StatusReply {
                    status,
                    info: r.info,
                })),
                None => Err(RuntimeError::Api {
                    runtime: RUNTIME,
                    call: "ContainerStatus",
                    reason: format!("container {id}: the reply has no status"),
                }),
            },
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.status_error("ContainerStatus", &s)),
        }
    }

    /// `None` when the runtime does not know the sandbox. Not verbose: the
    /// verbose `info` (the pause process, its OCI spec) is not used.
    pub(super) async fn sandbox_status(
        &self,
        id: &str,
    ) -> Result<Option<pb::PodSandboxStatus>, RuntimeError> {
        let mut c = self.runtime();
        let req = pb::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        match self
            .timed("PodSandboxStatus", c.pod_sandbox_status(req))
            .await?
        {
            Ok(r) => Ok(r.status),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.status_error("PodSandboxStatus", &s)),
        }
    }

    /// `ImageStatus` for each reference. An image the runtime does not know
    /// or a failed call leaves that reference out: the image's ID and
    /// digest are extras, never a reason to fail a listing.
    pub(super) async fn images(&self, refs: BTreeSet<String>) -> HashMap<String, pb::Image> {
        stream::iter(refs)
            .map(|r| async move {
                let mut c = self.image_service();
                let req = pb::ImageStatusRequest {
                    image: Some(pb::ImageSpec {
                        image: r.clone(),
                        ..Default::default()
                    }),
                    verbose: false,
                };
                match self.call("ImageStatus", c.image_status(req)).await {
                    Ok(reply) => reply.image.map(|img| (r, img)),
                    Err(e) => {
                        tracing::debug!(image = %r, error = %e, "CRI ImageStatus failed");
                        None
                    }
                }
            })
            .buffer_unordered(STATUS_CONCURRENCY)
            .filter_map(|x| async move { x })
            .collect()
            .await
    }

    /// Every container's state, for the polling event fallback.
    pub(super) async fn container_states(&self) -> Result<BTreeMap<String, i32>, RuntimeError> {
        Ok(self
            .list_containers(None)
            .await?
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect())
    }
}

fn version_request() -> pb::VersionRequest {
    pb::VersionRequest {
        version: "v1".into(),
    }
}

/// Accepts `/path`, `relative/path` or `unix:///path`; any other scheme is
/// refused by name.
fn socket_path(socket: &str) -> Result<PathBuf, RuntimeError> {
    let refuse = |reason: &str| RuntimeError::Unreachable {
        runtime: RUNTIME,
        endpoint: socket.to_string(),
        reason: reason.to_string(),
    };
    let path = match socket.strip_prefix("unix://") {
        Some(p) => p,
        None if socket.contains("://") => {
            return Err(refuse(
                "only Unix sockets are supported (a path or a unix:// URL)",
            ))
        }
        None => socket,
    };
    if path.is_empty() {
        return Err(refuse("empty socket path"));
    }
    Ok(PathBuf::from(path))
}

pub(super) fn status_text(s: &Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {}", s.code(), s.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths() {
        let ok = [
            (
                "/run/containerd/containerd.sock",
                "/run/containerd/containerd.sock",
            ),
            ("unix:///run/crio/crio.sock", "/run/crio/crio.sock"),
            ("relative.sock", "relative.sock"),
        ];
        for (input, want) in ok {
            assert_eq!(
                socket_path(input).ok(),
                Some(PathBuf::from(want)),
                "{input}"
            );
        }
        for bad in ["", "unix://", "tcp://127.0.0.1:1234", "npipe:////./pipe/x"] {
            match socket_path(bad) {
                Err(RuntimeError::Unreachable { endpoint, .. }) => assert_eq!(endpoint, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
