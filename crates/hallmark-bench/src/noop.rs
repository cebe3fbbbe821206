//! The Workload API baseline: the same `SpiffeWorkloadAPI` service trait
//! served by tonic on a Unix socket, answering every call at once with an
//! empty message. Whatever the real agent costs above this is the agent's
//! own work. Two further variants add the agent's accept path and its
//! per-call attestation, so that work can be split into its parts.

use std::path::Path;
use std::pin::Pin;

use anyhow::{Context, Result};
use futures::Stream;
use hallmark_agent::attestor::{attest_unix, PeerInfo};
use hallmark_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

type OneItem<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn one_item<T: Send + 'static>(item: T) -> OneItem<T> {
    Box::pin(tokio_stream::once(Ok(item)))
}

/// Which baseline: how much of the agent's path runs before the empty answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// tonic on a plain tokio `UnixListener`: the baseline proper.
    Plain,
    /// The agent's own accept path (`hallmark_agent::socket::incoming`):
    /// peer credentials and a pidfd per connection, and the `:authority`
    /// rewriting stream adapter on every byte the client sends.
    AgentAccept,
    /// The agent's accept path plus the agent's per-call attestation
    /// (`attest_unix` on a blocking thread, as the agent runs it).
    AgentAcceptAttest,
}

/// Answers every method with an empty message, after attesting the caller
/// when `attest` is set.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopWorkloadApi {
    attest: bool,
}

impl NoopWorkloadApi {
    async fn prelude<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if !self.attest {
            return Ok(());
        }
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("caller credentials unavailable"))?;
        tokio::task::spawn_blocking(move || attest_unix(&peer))
            .await
            .map_err(|e| Status::internal(format!("attestation task failed: {e}")))?
            .map_err(|e| Status::permission_denied(format!("could not attest caller: {e}")))?;
        Ok(())
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for NoopWorkloadApi {
    type FetchX509SVIDStream = OneItem<X509svidResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.prelude(&req).await?;
        Ok(Response::new(one_item(X509svidResponse::default())))
    }

    type FetchX509BundlesStream = OneItem<X509BundlesResponse>;

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.prelude(&req).await?;
        Ok(Response::new(one_item(X509BundlesResponse::default())))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        self.prelude(&req).await?;
        Ok(Response::new(JwtsvidResponse::default()))
    }

    type FetchJWTBundlesStream = OneItem<JwtBundlesResponse>;

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.prelude(&req).await?;
        Ok(Response::new(one_item(JwtBundlesResponse::default())))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.prelude(&req).await?;
        Ok(Response::new(ValidateJwtsvidResponse::default()))
    }
}

/// A running no-op server; stops when dropped or shut down.
pub struct NoopServer {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl NoopServer {
    pub fn start(socket: &Path, variant: Variant) -> Result<Self> {
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("binding the baseline socket {}", socket.display()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let service = SpiffeWorkloadApiServer::new(NoopWorkloadApi {
            attest: variant == Variant::AgentAcceptAttest,
        });
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = match variant {
            Variant::Plain => tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                    .await;
            }),
            Variant::AgentAccept | Variant::AgentAcceptAttest => tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        hallmark_agent::socket::incoming(listener),
                        shutdown,
                    )
                    .await;
            }),
        };
        Ok(NoopServer {
            stop: Some(stop),
            task,
        })
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for NoopServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{workload_client, workload_request};

    #[tokio::test]
    async fn answers_every_call_with_an_empty_message_in_every_variant() {
        for variant in [
            Variant::Plain,
            Variant::AgentAccept,
            Variant::AgentAcceptAttest,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("noop.sock");
            let server = NoopServer::start(&socket, variant).unwrap();
            let mut client = workload_client(&socket).await.unwrap();
            let mut stream = client
                .fetch_x509svid(workload_request(X509svidRequest {}))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                stream.message().await.unwrap(),
                Some(X509svidResponse::default()),
                "{variant:?}"
            );
            assert_eq!(
                stream.message().await.unwrap(),
                None,
                "{variant:?}: one item only"
            );
            let jwt = client
                .fetch_jwtsvid(workload_request(JwtsvidRequest {
                    audience: vec!["a".into()],
                    spiffe_id: String::new(),
                }))
                .await
                .unwrap()
                .into_inner();
            assert!(jwt.svids.is_empty(), "{variant:?}");
            server.shutdown().await;
        }
    }
}
