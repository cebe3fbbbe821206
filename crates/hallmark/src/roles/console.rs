//! The console beside a server (`server run --console-listen`, `hallmark
//! up`): its flags and how it starts.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use hallmark_console::{Console, ConsoleConfig};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use hallmark_server::ServerHandle;
use tokio::sync::watch;

use crate::config;

/// The console's address under `hallmark up`.
pub const UP_CONSOLE_LISTEN: &str = "127.0.0.1:8090";

/// The console's flags (server and `up`).
#[derive(Args, Debug, Default)]
pub struct ConsoleArgs {
    /// Serve the console (browser UI and /api/v1/) on this address, or
    /// `off`. Anything but a loopback address needs --console-tls-cert
    /// [default: off for `server run`, 127.0.0.1:8090 for `up`].
    #[arg(long, value_name = "ADDR")]
    pub console_listen: Option<String>,
    /// TLS certificate chain (PEM, leaf first) for the console; clients may
    /// then also log in with an admin X509-SVID.
    #[arg(long, requires = "console_tls_key")]
    pub console_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --console-tls-cert.
    #[arg(long, requires = "console_tls_cert")]
    pub console_tls_key: Option<PathBuf>,
}

/// A running console and what stops it.
pub struct RunningConsole {
    pub console: Console,
    stop: watch::Sender<bool>,
}

impl RunningConsole {
    pub fn stop(self) {
        let _ = self.stop.send(true);
        self.console.stop();
    }
}

/// Starts the console when asked (`default` is the address used when the
/// flag is absent; `None` means off), and writes its bound address to
/// `<data_dir>/console.addr` (like `listen.addr`: port 0 works).
pub async fn start(
    a: &ConsoleArgs,
    default: Option<&str>,
    server: &ServerHandle,
    data_dir: &std::path::Path,
) -> Result<Option<RunningConsole>> {
    let listen = match a.console_listen.as_deref().or(default) {
        None | Some("off") => {
            if a.console_tls_cert.is_some() {
                bail!(
                    "--console-tls-cert is set but the console is off: give --console-listen ADDR"
                );
            }
            return Ok(None);
        }
        Some(addr) => config::socket_addr("--console-listen", addr)?,
    };
    let admin = server.admin();
    let tls = match (&a.console_tls_cert, &a.console_tls_key) {
        (Some(cert), Some(key)) => {
            let bundle = admin
                .get_bundle(tonic::Request::new(pb::GetBundleRequest {}))
                .await
                .map_err(crate::connect::admin_error)?
                .into_inner();
            Some(hallmark_console::load_tls(
                cert,
                key,
                &bundle.x509_authorities,
            )?)
        }
        _ => None,
    };
    let (stop, stopped) = watch::channel(false);
    let key = server.console_key();
    let first = hallmark_console::serve(
        admin.clone(),
        Arc::clone(&key),
        ConsoleConfig {
            listen,
            tls: tls.clone(),
            metrics: server.metrics(),
        },
        stopped.clone(),
    )
    .await;
    let console = match first {
        // The default address is taken (another `hallmark up`): any free
        // port will do, and the banner shows which.
        Err(hallmark_console::ConsoleError::Listen { source, .. })
            if a.console_listen.is_none()
                && source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            tracing::warn!(addr = %listen, "console: the default address is in use; listening on another port");
            let any = std::net::SocketAddr::new(listen.ip(), 0);
            hallmark_console::serve(admin, key, ConsoleConfig {
                    listen: any,
                    tls,
                    metrics: server.metrics(),
                }, stopped).await
        }
        other => other,
    }
    .context("starting the console")?;
    let _ = std::fs::write(
        data_dir.join("console.addr"),
        format!("{}\n", console.addr()),
    );
    Ok(Some(RunningConsole { console, stop }))
}
