//! The admin API over mTLS: the CLI's side. The caller proves itself with
//! an X509-SVID (from the Workload API, or files kept by `hallmark helper`)
//! and trusts the server by its SPIFFE ID under the same trust bundle.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hallmark_ca::tls::ServerTrust;
use hallmark_core::error_chain;
use hallmark_proto::workload::X509svidRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use super::{split_der, workload_client, workload_error, workload_request, WorkloadArgs};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The caller's SVID chain (leaf first), key (PKCS#8 DER) and trust roots.
struct Credentials {
    chain: Vec<Vec<u8>>,
    key: Vec<u8>,
    roots: Vec<Vec<u8>>,
}

/// A channel to the admin API at `addr` over mTLS.
pub(super) async fn channel(addr: &str, credentials: Option<&Path>) -> Result<Channel> {
    let creds = match credentials {
        Some(dir) => from_files(dir)?,
        None => from_workload_api().await?,
    };
    let leaf = creds
        .chain
        .first()
        .ok_or_else(|| anyhow!("the admin SVID has no certificate"))?;
    let me = hallmark_ca::spiffe_id_from_cert(leaf).context("the admin SVID")?;
    let server_id = me.trust_domain().server_id();
    let tls = Arc::new(
        hallmark_ca::tls::client_config(
            ServerTrust::Roots(Arc::new(RwLock::new(creds.roots))),
            server_id,
            Some((creds.chain, creds.key)),
        )
        .context("building the TLS client configuration")?,
    );
    let target = addr.to_string();
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let (target, tls) = (target.clone(), tls.clone());
        async move {
            let tcp = TcpStream::connect(&target).await?;
            let _ = tcp.set_nodelay(true);
            // The verifier checks the SPIFFE ID, not a DNS name, but TLS
            // needs one.
            let name = rustls::pki_types::ServerName::try_from("hallmark-server")
                .map_err(std::io::Error::other)?
                .to_owned();
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Endpoint::from_static("http://hallmark-server")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            anyhow!(
                "connecting to the admin API at {addr} over mTLS: {}: is the server started with --admin-listen {addr}, and does it trust this SVID's trust domain?",
                error_chain(&e)
            )
        })
}

fn read_pem(dir: &Path, name: &str) -> Result<Vec<pem::Pem>> {
    let path = dir.join(name);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "reading {}: --admin-credentials needs svid.pem, svid_key.pem (or svid.key) and bundle.pem (write them with `hallmark svid fetch --out {}`)",
            path.display(),
            dir.display()
        )
    })?;
    let blocks = pem::parse_many(&text).with_context(|| format!("{}: not PEM", path.display()))?;
    if blocks.is_empty() {
        bail!("{}: no PEM block found", path.display());
    }
    Ok(blocks)
}

fn from_files(dir: &Path) -> Result<Credentials> {
    let chain: Vec<Vec<u8>> = read_pem(dir, "svid.pem")?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    // `hallmark helper` names the key svid_key.pem, `hallmark svid fetch
    // --out` svid.key.
    let key_name = if dir.join("svid_key.pem").exists() {
        "svid_key.pem"
    } else {
        "svid.key"
    };
    let key = read_pem(dir, key_name)?
        .into_iter()
        .find(|p| p.tag() == "PRIVATE KEY")
        .map(|p| p.into_contents())
        .ok_or_else(|| {
            anyhow!(
                "{}: no `PRIVATE KEY` (PKCS#8) block",
                dir.join(key_name).display()
            )
        })?;
    let roots = read_pem(dir, "bundle.pem")?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    Ok(Credentials { chain, key, roots })
}

async fn from_workload_api() -> Result<Credentials> {
    let mut client = workload_client(&WorkloadArgs {
        socket: None,
        json: false,
    })
    .await?;
    let mut stream = client
        .fetch_x509svid(workload_request(X509svidRequest {}))
        .await
        .map_err(workload_error)?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(workload_error)?
        .ok_or_else(|| anyhow!("the Workload API closed the stream before sending an SVID"))?;
    let svid = first
        .svids
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the Workload API sent no SVID for this process"))?;
    Ok(Credentials {
        chain: split_der(&svid.x509_svid)?,
        key: svid.x509_svid_key,
        roots: split_der(&svid.bundle)?,
    })
}
