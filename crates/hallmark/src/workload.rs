//! Workload commands: fetch and validate SVIDs through the SPIFFE Workload
//! API, like any SPIFFE client would.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest};
use hallmark_proto::WORKLOAD_HEADER;
use serde::Serialize;
use tonic::transport::Channel;

use crate::admin::uds_channel;
use crate::cli::WorkloadArgs;
use crate::config;

#[derive(Args, Debug)]
pub struct SvidFetchArgs {
    /// Write svid.pem, svid.key (0600) and bundle.pem into this directory
    /// instead of printing PEM to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub conn: WorkloadArgs,
}

#[derive(Args, Debug)]
pub struct JwtFetchArgs {
    /// The audience (repeatable).
    #[arg(long = "audience", required = true)]
    pub audience: Vec<String>,
    /// Which of the caller's identities (default: all).
    #[arg(long)]
    pub spiffe_id: Option<String>,
    #[command(flatten)]
    pub conn: WorkloadArgs,
}

#[derive(Args, Debug)]
pub struct JwtValidateArgs {
    #[arg(long)]
    pub audience: String,
    /// The JWT-SVID to validate.
    pub token: String,
    #[command(flatten)]
    pub conn: WorkloadArgs,
}

/// Resolves the socket: flag, then SPIFFE_ENDPOINT_SOCKET, then the default.
pub(crate) fn socket_path(flag: &Option<String>) -> Result<PathBuf> {
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

pub(crate) async fn client(args: &WorkloadArgs) -> Result<SpiffeWorkloadApiClient<Channel>> {
    let path = socket_path(&args.socket)?;
    let ch = uds_channel(&path).await.map_err(|e| {
        anyhow!("{e:#}: is the agent running? (`hallmark up` or `hallmark agent run`)")
    })?;
    Ok(SpiffeWorkloadApiClient::new(ch))
}

pub(crate) fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        WORKLOAD_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

pub(crate) fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("Workload API: {} ({:?})", s.message(), s.code())
}

/// Splits concatenated DER certificates.
pub(crate) fn split_der(mut data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(data)
            .map_err(|e| anyhow!("the agent sent an unparsable certificate: {e}"))?;
        out.push(data[..data.len() - rest.len()].to_vec());
        data = rest;
    }
    Ok(out)
}

pub(crate) fn pem_certs(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
        .collect()
}

fn write_private(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[derive(Serialize)]
struct SvidOut {
    spiffe_id: String,
    hint: String,
    expires_at: i64,
    cert_pem: String,
}

pub async fn svid_fetch(a: SvidFetchArgs) -> Result<()> {
    let mut c = client(&a.conn).await?;
    let mut stream = c
        .fetch_x509svid(request(X509svidRequest {}))
        .await
        .map_err(status_err)?
        .into_inner();
    let resp = stream
        .message()
        .await
        .map_err(status_err)?
        .ok_or_else(|| anyhow!("Workload API closed the stream without an SVID"))?;
    let first = resp
        .svids
        .first()
        .ok_or_else(|| anyhow!("Workload API returned no SVID"))?;
    let chain = split_der(&first.x509_svid)?;
    let bundle = split_der(&first.bundle)?;
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", first.x509_svid_key.clone()));
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_private(&dir.join("svid.pem"), pem_certs(&chain).as_bytes(), 0o644)?;
        write_private(&dir.join("svid.key"), key_pem.as_bytes(), 0o600)?;
        write_private(
            &dir.join("bundle.pem"),
            pem_certs(&bundle).as_bytes(),
            0o644,
        )?;
    }
    if a.conn.json {
        let out: Vec<SvidOut> = resp
            .svids
            .iter()
            .map(|s| {
                let chain = split_der(&s.x509_svid).unwrap_or_default();
                let expires_at = chain
                    .first()
                    .and_then(|d| x509_parser::parse_x509_certificate(d).ok())
                    .map(|(_, c)| c.validity().not_after.timestamp())
                    .unwrap_or(0);
                SvidOut {
                    spiffe_id: s.spiffe_id.clone(),
                    hint: s.hint.clone(),
                    expires_at,
                    cert_pem: pem_certs(&chain),
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if let Some(dir) = &a.out {
        println!("SPIFFE ID : {}", first.spiffe_id);
        println!(
            "Wrote {0}/svid.pem, {0}/svid.key and {0}/bundle.pem",
            dir.display()
        );
    } else {
        eprintln!("SPIFFE ID: {}", first.spiffe_id);
        print!("{}{}", pem_certs(&chain), key_pem);
    }
    Ok(())
}

#[derive(Serialize)]
struct JwtOut {
    spiffe_id: String,
    token: String,
}

pub async fn jwt_fetch(a: JwtFetchArgs) -> Result<()> {
    let mut c = client(&a.conn).await?;
    let resp = c
        .fetch_jwtsvid(request(JwtsvidRequest {
            audience: a.audience,
            spiffe_id: a.spiffe_id.unwrap_or_default(),
        }))
        .await
        .map_err(status_err)?
        .into_inner();
    if a.conn.json {
        let out: Vec<JwtOut> = resp
            .svids
            .into_iter()
            .map(|s| JwtOut {
                spiffe_id: s.spiffe_id,
                token: s.svid,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for s in resp.svids {
            println!("{}", s.svid);
        }
    }
    Ok(())
}

pub async fn jwt_validate(a: JwtValidateArgs) -> Result<()> {
    let mut c = client(&a.conn).await?;
    let resp = c
        .validate_jwtsvid(request(ValidateJwtsvidRequest {
            audience: a.audience,
            svid: a.token,
        }))
        .await
        .map_err(status_err)?
        .into_inner();
    if a.conn.json {
        let claims = resp
            .claims
            .map(|s| prost_struct_to_json(&s))
            .unwrap_or_default();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "spiffe_id": resp.spiffe_id, "claims": claims })
            )?
        );
    } else {
        println!("{}", resp.spiffe_id);
    }
    Ok(())
}

fn prost_struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), prost_to_json(v)))
            .collect(),
    )
}

fn prost_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(prost_to_json).collect())
        }
        Some(Kind::StructValue(s)) => prost_struct_to_json(s),
        Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
    }
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
