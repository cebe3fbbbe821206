//! Health and metrics over HTTP, for orchestrators and Prometheus:
//! `/healthz` (the process answers), `/readyz` (it can do its job: the
//! server's datastore answers; the agent has synced with a server) and
//! `/metrics` (Prometheus text format).

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
}

impl Probe {
    pub fn new(
        ready: impl Fn() -> BoxFut<bool> + Send + Sync + 'static,
        metrics: impl Fn() -> BoxFut<String> + Send + Sync + 'static,
    ) -> Self {
        Probe {
            ready: Arc::new(ready),
            metrics: Arc::new(metrics),
        }
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

async fn metrics(State(p): State<Probe>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        (p.metrics)().await,
    )
}
