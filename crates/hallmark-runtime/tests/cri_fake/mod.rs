//! A scripted CRI server on a Unix socket, standing in for a runtime this
//! machine does not run: containerd 1.7+ / CRI-O, which implement
//! `GetContainerEvents` (the containerd 1.6 here answers Unimplemented, so
//! only the polling fallback can be tested against it). It answers `Version`
//! and streams the scripted events, then ends the stream; every other call
//! is Unimplemented.

use std::path::Path;
use std::pin::Pin;

use futures::Stream;
use hallmark_runtime::cri::pb;
use pb::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

pub struct FakeCri {
    pub events: Vec<pb::ContainerEventResponse>,
}

/// Serves `fake` on `socket` until the returned task is aborted.
pub fn serve(fake: FakeCri, socket: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(socket).expect("binding the fake CRI socket");
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::new(fake))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await;
    })
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not scripted"))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for FakeCri {
    async fn version(
        &self,
        _: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake-cri".into(),
            runtime_version: "1.7.0".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _: Request<pb::GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let events: Vec<Result<pb::ContainerEventResponse, Status>> =
            self.events.iter().cloned().map(Ok).collect();
        Ok(Response::new(Box::pin(futures::stream::iter(events))))
    }

    async fn run_pod_sandbox(
        &self,
        _: Request<pb::RunPodSandboxRequest>,
    ) -> Result<Response<pb::RunPodSandboxResponse>, Status> {
        unimplemented()
    }
    async fn stop_pod_sandbox(
        &self,
        _: Request<pb::StopPodSandboxRequest>,
    ) -> Result<Response<pb::StopPodSandboxResponse>, Status> {
        unimplemented()
    }
    async fn remove_pod_sandbox(
        &self,
        _: Request<pb::RemovePodSandboxRequest>,
    ) -> Result<Response<pb::RemovePodSandboxResponse>, Status> {
        unimplemented()
    }
    async fn pod_sandbox_status(
        &self,
        _: Request<pb::PodSandboxStatusRequest>,
    ) -> Result<Response<pb::PodSandboxStatusResponse>, Status> {
        unimplemented()
    }
    async fn list_pod_sandbox(
        &self,
        _: Request<pb::ListPodSandboxRequest>,
    ) -> Result<Response<pb::ListPodSandboxResponse>, Status> {
        unimplemented()
    }
    async fn create_container(
        &self,
        _: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        unimplemented()
    }
    async fn start_container(
        &self,
        _: Request<pb::StartContainerRequest>,
    ) -> Result<Response<pb::StartContainerResponse>, Status> {
        unimplemented()
    }
    async fn stop_container(
        &self,
        _: Request<pb::StopContainerRequest>,
    ) -> Result<Response<pb::StopContainerResponse>, Status> {
        unimplemented()
    }
    async fn remove_container(
        &self,
        _: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::RemoveContainerResponse>, Status> {
        unimplemented()
    }
    async fn list_containers(
        &self,
        _: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        unimplemented()
    }
    async fn container_status(
        &self,
        _: Request<pb::ContainerStatusRequest>,
    ) -> Result<Response<pb::ContainerStatusResponse>, Status> {
        unimplemented()
    }
}
