//! How the CLI reaches the server's admin API and the agent's Workload API:
//! the flags that say where, the clients, and gRPC errors as the operator
//! should read them.

mod admin_mtls;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hallmark_proto::hallmark::admin_client::AdminClient;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::WORKLOAD_HEADER;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::config;

/// How to reach the server's admin API.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// The server's admin socket [default: $HALLMARK_HOME/server/admin.sock].
    #[arg(long, env = "HALLMARK_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// Call a server's admin API over mTLS at HOST:PORT (its `--admin-listen`)
    /// instead of the local socket (it wins over --admin-socket),
    /// authenticated by an admin entry's X509-SVID.
    #[arg(long, env = "HALLMARK_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    /// With --admin-addr: a directory holding svid.pem, svid_key.pem and
    /// bundle.pem (as `hallmark helper` writes them) [default: fetch the
    /// SVID from the Workload API at $SPIFFE_ENDPOINT_SOCKET or the agent's
    /// default socket].
    #[arg(long, env = "HALLMARK_ADMIN_CREDENTIALS", requires = "admin_addr")]
    pub admin_credentials: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How to reach the agent's Workload API.
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// The Workload API socket: a path or unix:///path. Defaults to
    /// $SPIFFE_ENDPOINT_SOCKET, else $HALLMARK_HOME/agent/workload.sock.
    #[arg(long)]
    pub socket: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A channel over a Unix socket (tonic needs a URI; it is not used).
async fn uds_channel(path: &Path) -> Result<Channel> {
    let p = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to {}", path.display()))
}

/// An admin API client: over mTLS with `--admin-addr`, else on the local
/// socket.
pub async fn admin_client(args: &AdminArgs) -> Result<AdminClient<Channel>> {
    if let Some(addr) = &args.admin_addr {
        let ch = admin_mtls::channel(addr, args.admin_credentials.as_deref()).await?;
        return Ok(AdminClient::new(ch));
    }
    let path = args
        .admin_socket
        .clone()
        .unwrap_or_else(config::default_admin_socket);
    let ch = uds_channel(&path)
        .await
        .map_err(|e| anyhow!("{e:#}: is the server running? (start it with `hallmark server run` or `hallmark up`, or pass --admin-socket)"))?;
    Ok(AdminClient::new(ch))
}

/// An admin API error as the operator should read it.
pub fn admin_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{} ({:?})", s.message(), s.code())
}

/// Resolves the Workload API socket: flag, then SPIFFE_ENDPOINT_SOCKET, then
/// the default.
pub fn socket_path(flag: &Option<String>) -> Result<PathBuf> {
    let raw = match flag {
        Some(s) => s.clone(),
        None => match std::env::var("SPIFFE_ENDPOINT_SOCKET") {
            Ok(s) if !s.is_empty() => s,
            _ => return Ok(config::default_workload_socket()),
        },
    };
    if let Some(rest) = raw.strip_prefix("unix://") {
        if !rest.starts_with('/') {
            bail!("socket `{raw}`: a unix URI needs an absolute path (unix:///path/to/socket)");
        }
        return Ok(PathBuf::from(rest));
    }
    if let Some(rest) = raw.strip_prefix("unix:") {
        return Ok(PathBuf::from(rest));
    }
    if raw.starts_with("tcp://") {
        bail!("socket `{raw}`: tcp endpoints are not supported by this client; use a unix socket");
    }
    if raw.starts_with('/') {
        return Ok(PathBuf::from(raw));
    }
    bail!("socket `{raw}`: expected unix:///absolute/path or an absolute path")
}

/// A Workload API client on the socket [`socket_path`] resolves.
pub async fn workload_client(args: &WorkloadArgs) -> Result<SpiffeWorkloadApiClient<Channel>> {
    let path = socket_path(&args.socket)?;
    let ch = uds_channel(&path).await.map_err(|e| {
        anyhow!("{e:#}: is the agent running? (`hallmark up` or `hallmark agent run`)")
    })?;
    Ok(SpiffeWorkloadApiClient::new(ch))
}

/// A Workload API request with the header the SPIFFE spec requires.
pub fn workload_request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        WORKLOAD_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

/// A Workload API error as the user should read it.
pub fn workload_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("Workload API: {} ({:?})", s.message(), s.code())
}

/// Splits concatenated DER certificates, as the Workload API sends chains
/// and bundles.
pub fn split_der(mut data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(data)
            .map_err(|e| anyhow!("the agent sent an unparsable certificate: {e}"))?;
        out.push(data[..data.len() - rest.len()].to_vec());
        data = rest;
    }
    Ok(out)
}

/// DER certificates as concatenated PEM blocks.
pub fn pem_certs(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_forms() {
        assert_eq!(
            socket_path(&Some("unix:///tmp/a.sock".into())).unwrap(),
            PathBuf::from("/tmp/a.sock")
        );
        assert_eq!(
            socket_path(&Some("/tmp/a.sock".into())).unwrap(),
            PathBuf::from("/tmp/a.sock")
        );
        assert!(socket_path(&Some("unix://tmp/a".into())).is_err());
        assert!(socket_path(&Some("tcp://127.0.0.1:1".into())).is_err());
        assert!(socket_path(&Some("relative".into())).is_err());
    }
}
