//! The admin API over mTLS on TCP, for operators and automation that are
//! not on the server's host. The server presents its own SVID (as on the
//! node API); a caller must present an X509-SVID of this trust domain whose
//! SPIFFE ID is granted by an entry marked `admin`. Everything else is
//! refused before the call reaches the admin service.
//!
//! The check runs on every call against the datastore, so deleting the
//! admin entry (on any server sharing it) takes effect on the next call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hallmark_core::SpiffeId;
use hallmark_store::EntryFilter;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::Shared;

/// Wraps the admin service with the admin-SVID check.
#[derive(Clone)]
pub(crate) struct RequireAdminLayer {
    pub shared: Arc<Shared>,
}

impl<S> tower::Layer<S> for RequireAdminLayer {
    type Service = RequireAdmin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAdmin {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct RequireAdmin<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for RequireAdmin<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The ready inner service answers this call; a fresh clone waits for
        // the next one (the usual tower pattern for async middleware).
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let shared = self.shared.clone();
        let peer = peer_leaf(&req);
        let method = req.uri().path().to_string();
        Box::pin(async move {
            match authorize(&shared, peer).await {
                Ok(id) => {
                    tracing::info!(caller = %id, method = %method, "admin call over mTLS");
                    inner.call(req).await
                }
                Err(status) => {
                    tracing::warn!(method = %method, reason = %status.message(), "admin call over mTLS refused");
                    shared.metrics.admin_mtls_refused.inc();
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// The client's leaf certificate (DER), as verified by the TLS layer.
fn peer_leaf<B>(req: &http::Request<B>) -> Option<Vec<u8>> {
    let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    certs.first().map(|c| c.as_ref().to_vec())
}

async fn authorize(shared: &Shared, leaf: Option<Vec<u8>>) -> Result<SpiffeId, Status> {
    let leaf = leaf.ok_or_else(|| {
        Status::unauthenticated(
            "the admin API over TCP needs an X509-SVID of an admin entry as TLS client certificate",
        )
    })?;
    let id = hallmark_ca::spiffe_id_from_cert(&leaf)
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    if !id.is_member_of(&shared.trust_domain) {
        return Err(Status::permission_denied(format!(
            "{id} is not in trust domain {}",
            shared.trust_domain
        )));
    }
    let entries = shared
        .store
        .list_entries(&EntryFilter {
            spiffe_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .map_err(crate::node::internal)?;
    if entries.iter().any(|e| e.spec.admin) {
        Ok(id)
    } else {
        Err(Status::permission_denied(format!(
            "{id} is not an admin identity: create its entry with `hallmark entry create --admin ...`"
        )))
    }
}
