//! `hallmark bundle`: the trust bundle, as PEM roots or a SPIFFE bundle
//! document.

use anyhow::Result;
use clap::Args;
use hallmark_proto::hallmark as pb;

use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{out, outln};

#[derive(Args, Debug)]
pub struct BundleArgs {
    /// pem (X.509 roots) or jwks (the SPIFFE bundle document).
    #[arg(long, default_value = "pem", value_parser = ["pem", "jwks"])]
    pub format: String,
    #[command(flatten)]
    pub conn: AdminArgs,
}

pub async fn bundle_show(a: BundleArgs) -> Result<()> {
    let mut c = admin_client(&a.conn).await?;
    let b = c
        .get_bundle(pb::GetBundleRequest {})
        .await
        .map_err(admin_error)?
        .into_inner();
    if a.format == "jwks" || a.conn.json {
        outln!("{}", String::from_utf8_lossy(&b.jwks))?;
    } else {
        for der in b.x509_authorities {
            out!("{}", pem::encode(&pem::Pem::new("CERTIFICATE", der)))?;
        }
    }
    Ok(())
}
