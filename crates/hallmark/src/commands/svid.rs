//! Workload commands: fetch and validate SVIDs through the SPIFFE Workload
//! API, like any SPIFFE client would.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use hallmark_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest};
use serde::Serialize;

use crate::connect::{
    pem_certs, split_der, workload_client, workload_error, workload_request, WorkloadArgs,
};
use crate::files::write_atomic;
use crate::output::{out, outln, print_json};

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

#[derive(Serialize)]
struct SvidOut {
    spiffe_id: String,
    hint: String,
    expires_at: i64,
    cert_pem: String,
}

pub async fn svid_fetch(a: SvidFetchArgs) -> Result<()> {
    let mut c = workload_client(&a.conn).await?;
    let mut stream = c
        .fetch_x509svid(workload_request(X509svidRequest {}))
        .await
        .map_err(workload_error)?
        .into_inner();
    let resp = stream
        .message()
        .await
        .map_err(workload_error)?
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
        write_atomic(&dir.join("svid.pem"), pem_certs(&chain).as_bytes(), 0o644)?;
        write_atomic(&dir.join("svid.key"), key_pem.as_bytes(), 0o600)?;
        write_atomic(
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
        print_json(&out)?;
    } else if let Some(dir) = &a.out {
        outln!("SPIFFE ID : {}", first.spiffe_id)?;
        outln!(
            "Wrote {0}/svid.pem, {0}/svid.key and {0}/bundle.pem",
            dir.display()
        )?;
    } else {
        eprintln!("SPIFFE ID: {}", first.spiffe_id);
        out!("{}{}", pem_certs(&chain), key_pem)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct JwtOut {
    spiffe_id: String,
    token: String,
}

pub async fn jwt_fetch(a: JwtFetchArgs) -> Result<()> {
    let mut c = workload_client(&a.conn).await?;
    let resp = c
        .fetch_jwtsvid(workload_request(JwtsvidRequest {
            audience: a.audience,
            spiffe_id: a.spiffe_id.unwrap_or_default(),
        }))
        .await
        .map_err(workload_error)?
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
        print_json(&out)?;
    } else {
        for s in resp.svids {
            outln!("{}", s.svid)?;
        }
    }
    Ok(())
}

pub async fn jwt_validate(a: JwtValidateArgs) -> Result<()> {
    let mut c = workload_client(&a.conn).await?;
    let resp = c
        .validate_jwtsvid(workload_request(ValidateJwtsvidRequest {
            audience: a.audience,
            svid: a.token,
        }))
        .await
        .map_err(workload_error)?
        .into_inner();
    if a.conn.json {
        let claims = resp
            .claims
            .map(|s| prost_struct_to_json(&s))
            .unwrap_or_default();
        print_json(&serde_json::json!({ "spiffe_id": resp.spiffe_id, "claims": claims }))?;
    } else {
        outln!("{}", resp.spiffe_id)?;
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
