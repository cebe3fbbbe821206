//! Health and metrics over HTTP, for orchestrators and Prometheus:
//! `/healthz` (the process answers), `/readyz` (it can do its job: the
//! server's datastore answers; the agent has synced with a server),
//! `/metrics` (Prometheus text format) and, on the agent, `/status` (JSON:
//! its identity, container runtime and why any source is degraded).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the endpoints report on.
#[derive(Clone)]
pub struct Probe {
    pub ready: Arc<dyn Fn() -> BoxFut<bool> + Send + Sync>,
    pub metrics: Arc<dyn Fn() -> BoxFut<String> + Send + Sync>,
    /// `/status`: a JSON document of the component's state, when it has one.
    pub status: Option<Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
}

impl Probe {
    pub fn new(
        ready: impl Fn() -> BoxFut<bool> + Send + Sync + 'static,
        metrics: impl Fn() -> BoxFut<String> + Send + Sync + 'static,
    ) -> Self {
        Probe {
            ready: Arc::new(ready),
            metrics: Arc::new(metrics),
            status: None,
        }
    }

    /// Adds a `/status` JSON document.
    pub fn with_status(
        mut self,
        status: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.status = Some(Arc::new(status));
        self
    }
}

/// Binds `addr` and serves until the process ends.
pub async fn serve(addr: SocketAddr, probe: Probe) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the health endpoint on {addr}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(probe);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "health endpoint listening (/healthz, /readyz, /metrics)");
    Ok(bound)
}

async fn ready(State(p): State<Probe>) -> impl IntoResponse {
    if (p.ready)().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn status(State(p): State<Probe>) -> axum::response::Response {
    match &p.status {
        Some(f) => axum::Json(f()).into_response(),
        None => (StatusCode::NOT_FOUND, "no status document here\n").into_response(),
    }
}

async fn metrics(State(p): State<Probe>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        (p.metrics)().await,
    )
}
