//! `hallmark console`: tokens for the console's login form and API.

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use hallmark_core::duration::parse_duration;
use hallmark_proto::hallmark as pb;

use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{outln, print_json, timestamp};

#[derive(Subcommand, Debug)]
pub enum ConsoleCommand {
    /// Mint a console login token (for the login form, or `Authorization:
    /// Bearer` on /api/v1/). It works on the server that minted it, until
    /// it expires. Prints only the token on stdout.
    Token(TokenArgs),
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// How long the token is good, up to 30d [default: 12h].
    #[arg(long, default_value = "12h")]
    pub ttl: String,
    #[command(flatten)]
    pub conn: AdminArgs,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Minted {
    token: String,
    expires_ms: i64,
}

pub async fn run(c: ConsoleCommand) -> Result<()> {
    match c {
        ConsoleCommand::Token(a) => token(a).await,
    }
}

async fn token(a: TokenArgs) -> Result<()> {
    let ttl = parse_duration(&a.ttl).map_err(|e| anyhow!("--ttl `{}`: {e}", a.ttl))?;
    let mut c = admin_client(&a.conn).await?;
    let json = serde_json::json!({ "ttl_secs": ttl.as_secs() }).to_string();
    let answer = c
        .mint_console_token(pb::PolicyRequest { json })
        .await
        .map_err(admin_error)?
        .into_inner()
        .json;
    let m: Minted = serde_json::from_str(&answer)
        .map_err(|e| anyhow!("the server's MintConsoleToken answer: {e}"))?;
    if a.conn.json {
        return print_json(&m);
    }
    outln!("{}", m.token)?;
    eprintln!(
        "Console token, good until {}: paste it in the console's login form, or send `Authorization: Bearer <token>` to /api/v1/.",
        timestamp(m.expires_ms)
    );
    Ok(())
}
