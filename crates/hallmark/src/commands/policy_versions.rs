//! `hallmark policy apply|show|history|rollback`: the server's versioned
//! policy.
//!
//! Every call is an admin API policy RPC whose request and answer are the
//! JSON documents of `hallmark_server::policy::api`; `--json` prints the
//! answer as the API gives it. `apply` parses the document here first, as
//! `validate` does, so a bad document is refused with every finding before
//! any connection. `show` prints the document exactly as applied, so
//! `hallmark policy show > p.yaml && hallmark policy apply -f p.yaml`
//! round-trips (and is unchanged).

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_client::AdminClient;
use hallmark_server::policy::api::{
    ApplyAnswer, ApplyRequest, GetRequest, HistoryRequest, RevisionJson, RollbackRequest,
};
use serde::Serialize;
use tonic::transport::Channel;

use super::policy::read;
use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{outln, print_json, table, timestamp, write_stdout};

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The policy document (YAML); `-` reads standard input.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    #[command(flatten)]
    pub conn: AdminArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Show this revision instead of the one in force.
    #[arg(long)]
    pub revision: Option<i64>,
    #[command(flatten)]
    pub conn: AdminArgs,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub conn: AdminArgs,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The revision whose document to apply again (as a new revision).
    pub revision: i64,
    #[command(flatten)]
    pub conn: AdminArgs,
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    Apply,
    Get,
    History,
    Rollback,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::Apply => "ApplyPolicy",
            Rpc::Get => "GetPolicy",
            Rpc::History => "PolicyHistory",
            Rpc::Rollback => "RollbackPolicy",
        }
    }
}

/// Sends one request and returns the answer's JSON text.
async fn call<Req: Serialize>(
    client: &mut AdminClient<Channel>,
    rpc: Rpc,
    req: &Req,
) -> Result<String> {
    let json = serde_json::to_string(req).with_context(|| format!("encoding {}", rpc.name()))?;
    let msg = pb::PolicyRequest { json };
    let resp = match rpc {
        Rpc::Apply => client.apply_policy(msg).await,
        Rpc::Get => client.get_policy(msg).await,
        Rpc::History => client.policy_history(msg).await,
        Rpc::Rollback => client.rollback_policy(msg).await,
    }
    .map_err(admin_error)?;
    Ok(resp.into_inner().json)
}

fn decode<T: serde::de::DeserializeOwned>(rpc: Rpc, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| {
        anyhow!(
            "the server's {} answer is not what this client reads: {e}",
            rpc.name()
        )
    })
}

/// Prints an answer's JSON as `--json` does everywhere (pretty).
fn print_answer(rpc: Rpc, json: &str) -> Result<()> {
    let v: serde_json::Value = decode(rpc, json)?;
    print_json(&v)
}

pub async fn apply(a: ApplyArgs) -> Result<()> {
    let (name, text) = read(&a.file)?;
    // Refused here with every finding, as `validate` prints them, before
    // any connection.
    let parsed = match hallmark_policy::parse(&name, &text) {
        Ok(p) => p,
        Err(e) => {
            if a.conn.json {
                // The shape `validate --json` prints for a refused document.
                print_json(&serde_json::json!({
                    "file": name,
                    "valid": false,
                    "groups": 0,
                    "rules": 0,
                    "default": "allow",
                    "errors": e.errors,
                    "warnings": e.warnings,
                }))?;
            } else {
                for d in e.errors.iter().chain(&e.warnings) {
                    eprintln!("{d}");
                }
            }
            let n = e.errors.len();
            return Err(anyhow!(
                "{name}: policy refused: {n} error{}; fix them and validate again (nothing was applied)",
                if n == 1 { "" } else { "s" }
            ));
        }
    };
    if !a.conn.json {
        for w in &parsed.warnings {
            eprintln!("{w}");
        }
    }
    let mut client = admin_client(&a.conn).await?;
    let req = ApplyRequest {
        file: name.clone(),
        document: text,
        source: Some(format!("cli:{name}")),
    };
    let json = call(&mut client, Rpc::Apply, &req).await?;
    if a.conn.json {
        return print_answer(Rpc::Apply, &json);
    }
    let answer: ApplyAnswer = decode(Rpc::Apply, &json)?;
    print_applied(&answer, None)
}

pub async fn rollback(a: RollbackArgs) -> Result<()> {
    let mut client = admin_client(&a.conn).await?;
    let req = RollbackRequest {
        revision: a.revision,
    };
    let json = call(&mut client, Rpc::Rollback, &req).await?;
    if a.conn.json {
        return print_answer(Rpc::Rollback, &json);
    }
    let answer: ApplyAnswer = decode(Rpc::Rollback, &json)?;
    print_applied(&answer, Some(a.revision))
}

fn print_applied(a: &ApplyAnswer, rollback_to: Option<i64>) -> Result<()> {
    if a.unchanged {
        return outln!("unchanged: revision {} is already in force", a.revision);
    }
    let from = rollback_to.map_or(String::new(), |n| {
        format!(" (the document of revision {n})")
    });
    outln!(
        "applied policy revision {}{from}: {}, {}, default {}",
        a.revision,
        count(a.groups, "group"),
        count(a.rules, "rule"),
        a.default
    )
}

fn count(n: i64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

pub async fn show(a: ShowArgs) -> Result<()> {
    let mut client = admin_client(&a.conn).await?;
    let req = GetRequest {
        revision: a.revision,
    };
    let json = call(&mut client, Rpc::Get, &req).await?;
    if a.conn.json {
        return print_answer(Rpc::Get, &json);
    }
    let r: RevisionJson = decode(Rpc::Get, &json)?;
    if r.revision == 0 {
        eprintln!(
            "no policy applied yet (every flow is allowed); apply one with `hallmark policy apply -f FILE`"
        );
        return Ok(());
    }
    // Exactly the text applied: nothing before it, nothing added.
    write_stdout(format_args!("{}", r.document.unwrap_or_default()))
}

pub async fn history(a: HistoryArgs) -> Result<()> {
    let mut client = admin_client(&a.conn).await?;
    let json = call(&mut client, Rpc::History, &HistoryRequest::default()).await?;
    if a.conn.json {
        return print_answer(Rpc::History, &json);
    }
    let rows: Vec<RevisionJson> = decode(Rpc::History, &json)?;
    if rows.is_empty() {
        eprintln!("no policy applied yet; apply one with `hallmark policy apply -f FILE`");
        return Ok(());
    }
    let rows = rows
        .into_iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                timestamp(r.applied_at_ms),
                r.source,
                r.groups.to_string(),
                r.rules.to_string(),
                r.default,
            ]
        })
        .collect();
    write_stdout(format_args!(
        "{}",
        table(
            &["REVISION", "APPLIED", "SOURCE", "GROUPS", "RULES", "DEFAULT"],
            rows
        )
    ))
}
