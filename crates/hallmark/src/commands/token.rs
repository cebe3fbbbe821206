//! `hallmark token`: single-use join tokens for new agents.

use anyhow::Result;
use clap::Args;
use hallmark_core::SpiffeId;
use hallmark_proto::hallmark as pb;
use serde::Serialize;

use crate::config::ttl_secs;
use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{outln, print_json};

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Node name; the agent becomes spiffe://<td>/hallmark/agent/<NODE>.
    #[arg(long, default_value = "")]
    pub node: String,
    /// How long the token stays usable [default: 10m].
    #[arg(long)]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub conn: AdminArgs,
}

#[derive(Serialize)]
struct TokenOut {
    token: String,
    agent_spiffe_id: String,
    expires_at: i64,
    ca_fingerprint: String,
}

pub async fn token_generate(a: TokenArgs) -> Result<()> {
    let mut c = admin_client(&a.conn).await?;
    let t = c
        .generate_token(pb::GenerateTokenRequest {
            node: a.node,
            ttl_secs: ttl_secs("--ttl", &a.ttl)?,
        })
        .await
        .map_err(admin_error)?
        .into_inner();
    if a.conn.json {
        return print_json(&TokenOut {
            token: t.token,
            agent_spiffe_id: t.agent_spiffe_id,
            expires_at: t.expires_at,
            ca_fingerprint: t.ca_fingerprint,
        });
    }
    let td = SpiffeId::new(&t.agent_spiffe_id)
        .map(|id| id.trust_domain_name().to_string())
        .unwrap_or_default();
    outln!("Token          : {}", t.token)?;
    outln!("Agent ID       : {}", t.agent_spiffe_id)?;
    outln!("CA fingerprint : {}", t.ca_fingerprint)?;
    outln!()?;
    outln!("Start the agent on that node with:")?;
    outln!(
        "  hallmark agent run --server <SERVER:PORT> --trust-domain {} --join-token {} --ca-fingerprint {}",
        td,
        t.token,
        t.ca_fingerprint
    )?;
    Ok(())
}
