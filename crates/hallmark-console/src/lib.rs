//! Hallmark's console: the identity map, flows, workloads, identities and
//! policy in a browser, and the JSON API under `/api/v1/` the pages use
//! (scripts may use it too; `docs/CONSOLE.md` lists it).
//!
//! Every answer comes from the server's admin service, called in process
//! with the same requests the CLI sends, so the console and `hallmark ...
//! --json` never disagree about what the datastore holds.
//!
//! Secure by default: loopback only unless TLS is configured; every API
//! call needs a session (from a login token) or a bearer token; writes with
//! a session need its CSRF token; cross-site requests are refused; the
//! pages run under a strict Content-Security-Policy with every asset
//! embedded in the binary (nothing is fetched from elsewhere).

#![forbid(unsafe_code)]

mod api;
mod assets;
mod auth;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use hallmark_server::console_key::ConsoleKey;
use hallmark_server::metrics::ServerMetrics;
use hallmark_server::AdminService;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use api::parse_flow_query;
pub use tls::{load_tls, TlsError};

/// Where and how the console listens.
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// TLS for the listener; required unless `listen` is a loopback
    /// address.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where logins and refusals are counted (the server's metrics).
    pub metrics: Arc<ServerMetrics>,
}

/// Why the console did not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("--console-listen {0} is not a loopback address: remote access to the console needs TLS; give --console-tls-cert and --console-tls-key, or listen on 127.0.0.1")]
    NeedsTls(SocketAddr),
    #[error("console: listening on {addr}: {source} (is something else on that port? pick another with --console-listen)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running console.
pub struct Console {
    addr: SocketAddr,
    tls: bool,
    start_token: String,
    task: JoinHandle<()>,
}

impl Console {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The console's address, `http://127.0.0.1:8090/`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// A URL that logs a browser in with this process's start token and
    /// then takes the token out of the address bar (a redirect to `/`).
    pub fn login_url(&self) -> String {
        format!("{}login?token={}", self.url(), self.start_token)
    }

    /// The login token made at start, good while this process runs.
    pub fn start_token(&self) -> &str {
        &self.start_token
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Binds the console and serves it until `shutdown` turns true.
pub async fn serve(
    admin: AdminService,
    key: Arc<ConsoleKey>,
    config: ConsoleConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<Console, ConsoleError> {
    if config.tls.is_none() && !config.listen.ip().is_loopback() {
        return Err(ConsoleError::NeedsTls(config.listen));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ConsoleError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ConsoleError::Listen {
            addr: config.listen,
            source,
        })?;
    let start_token = auth::start_token();
    let tls = config.tls.is_some();
    let state = Arc::new(auth::AppState::new(
        admin,
        key,
        start_token.clone(),
        tls,
        config.metrics.clone(),
    ));
    let app = api::router(state);
    let task = match config.tls {
        None => tokio::spawn(async move {
            let mut shutdown = shutdown;
            let stop = async move {
                let _ = shutdown.wait_for(|s| *s).await;
            };
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop)
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "console stopped");
            }
        }),
        Some(tls) => tokio::spawn(tls::serve(listener, tls, app, shutdown)),
    };
    tracing::info!(addr = %addr, tls, "console listening");
    Ok(Console {
        addr,
        tls,
        start_token,
        task,
    })
}
