//! `hallmark policy check|audit|dry-run|suggest`: the policy in force held
//! against endpoints and recorded flows, on the server.
//!
//! Each is one admin RPC with a JSON request and answer (the documents of
//! `hallmark_server::policy::api_queries`); `--json` prints the answer as
//! the API gives it. Arguments are checked before any connection.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use hallmark_core::time::unix_millis;
use hallmark_flows::StoredFlow;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_client::AdminClient;
use hallmark_server::policy::api_queries::{
    AuditRequest, CheckAnswer, CheckEnd, CheckRequest, DryRunAnswer, DryRunRequest, Member,
    SuggestAnswer, SuggestRequest,
};
use serde_json::Value;
use tonic::transport::Channel;

use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{out, outln, table, timestamp};
use hallmark_core::timearg::parse_instant;

/// The policy admin RPCs this module and `hallmark group` call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PolicyRpc {
    Check,
    Audit,
    DryRun,
    Suggest,
    ListGroups,
    GroupMembers,
}

impl PolicyRpc {
    fn name(self) -> &'static str {
        match self {
            PolicyRpc::Check => "CheckPolicy",
            PolicyRpc::Audit => "AuditPolicy",
            PolicyRpc::DryRun => "DryRunPolicy",
            PolicyRpc::Suggest => "SuggestPolicy",
            PolicyRpc::ListGroups => "ListGroups",
            PolicyRpc::GroupMembers => "GroupMembers",
        }
    }
}

/// Sends one request; the answer's JSON text.
pub(crate) async fn call(
    conn: &AdminArgs,
    rpc: PolicyRpc,
    req: &impl serde::Serialize,
) -> Result<String> {
    let json = serde_json::to_string(req).with_context(|| format!("encoding {}", rpc.name()))?;
    let mut c: AdminClient<Channel> = admin_client(conn).await?;
    let msg = pb::PolicyRequest { json };
    let resp = match rpc {
        PolicyRpc::Check => c.check_policy(msg).await,
        PolicyRpc::Audit => c.audit_policy(msg).await,
        PolicyRpc::DryRun => c.dry_run_policy(msg).await,
        PolicyRpc::Suggest => c.suggest_policy(msg).await,
        PolicyRpc::ListGroups => c.list_groups(msg).await,
        PolicyRpc::GroupMembers => c.group_members(msg).await,
    }
    .map_err(admin_error)?;
    Ok(resp.into_inner().json)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(rpc: PolicyRpc, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| {
        anyhow!(
            "the server's {} answer is not what this client reads: {e}",
            rpc.name()
        )
    })
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

fn instant(flag: &str, text: &str) -> Result<i64> {
    parse_instant(text, now_ms()).map_err(|e| anyhow!("{flag}: {e}"))
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The initiator: a SPIFFE ID (need not be running yet), a workload
    /// (container) ID or unique prefix, or an IP address.
    #[arg(long, value_name = "F")]
    pub from: String,
    /// The acceptor, in the forms of --from.
    #[arg(long, value_name = "F")]
    pub to: String,
    /// The acceptor's port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// `tcp` or `udp`.
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"])]
    pub protocol: String,
    /// Resolve IP addresses as of this instant (a duration ago, RFC 3339
    /// or unix seconds) [default: now].
    #[arg(long)]
    pub at: Option<String>,
    #[command(flatten)]
    pub conn: AdminArgs,
}

pub async fn check(a: CheckArgs) -> Result<()> {
    let at_ms = a.at.as_deref().map(|t| instant("--at", t)).transpose()?;
    let req = CheckRequest {
        from: a.from.clone(),
        to: a.to.clone(),
        port: u32::from(a.port),
        protocol: Some(a.protocol.clone()),
        at_ms,
    };
    let json = call(&a.conn, PolicyRpc::Check, &req).await?;
    if a.conn.json {
        return outln!("{json}");
    }
    let ans: CheckAnswer = decode(PolicyRpc::Check, &json)?;
    outln!("{}", check_summary(&ans))?;
    outln!("from: {}", check_end(&ans.from))?;
    outln!("to:   {}", check_end(&ans.to))
}

fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `allowed by rule web-to-db (enforce), policy revision 3`.
fn check_summary(a: &CheckAnswer) -> String {
    let by = match (a.decided_by.as_str(), &a.rule, &a.mode) {
        ("rule", Some(rule), Some(mode)) => format!("by rule {rule} ({})", word(mode)),
        ("default", ..) => format!(
            "by the default ({})",
            a.action.as_ref().map(word).unwrap_or_default()
        ),
        _ => "by nothing".to_string(),
    };
    format!(
        "{} {by}, policy revision {} ({} port {})",
        word(&a.verdict),
        a.policy_revision,
        a.protocol,
        a.port
    )
}

fn check_end(e: &CheckEnd) -> String {
    let mut s = format!("{} ({})", e.input, e.kind);
    if !e.spiffe_ids.is_empty() && e.kind != "spiffe-id" {
        s.push_str(&format!(" {}", e.spiffe_ids.join(", ")));
    }
    s.push_str(&format!(", groups: {}", e.groups.join(", ")));
    if !e.workloads.is_empty() {
        let names: Vec<String> = e.workloads.iter().map(member_name).collect();
        s.push_str(&format!("; considered: {}", names.join(", ")));
    } else if e.kind == "spiffe-id" {
        s.push_str("; no running workload holds it: decided as the bare ID");
    }
    if let Some(r) = &e.resolution {
        s.push_str(&format!("; {r}"));
    }
    s
}

/// A member in a few words: `web (3f2a1b0c9d8e on prod/n1)`.
pub(crate) fn member_name(m: &Member) -> String {
    hallmark_server::policy::membership::describe(m)
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Flows that started at or after this instant: a duration ago (`24h`),
    /// an RFC 3339 time or unix seconds.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Only flows with this verdict: `deny` (also `denied`) or `would-deny`
    /// [default: both].
    #[arg(long, value_parser = parse_verdict)]
    pub verdict: Option<String>,
    /// At most this many flows (the newest).
    #[arg(long, default_value = "1000")]
    pub limit: usize,
    #[command(flatten)]
    pub conn: AdminArgs,
}

fn parse_verdict(s: &str) -> Result<String, String> {
    match s {
        "deny" | "denied" => Ok("denied".into()),
        "would-deny" => Ok("would-deny".into()),
        _ => Err(format!("`{s}` is not deny, denied or would-deny")),
    }
}

pub async fn audit(a: AuditArgs) -> Result<()> {
    let req = AuditRequest {
        since_ms: Some(instant("--since", &a.since)?),
        until_ms: None,
        verdict: a.verdict.clone(),
        limit: Some(a.limit),
    };
    let json = call(&a.conn, PolicyRpc::Audit, &req).await?;
    if a.conn.json {
        return outln!("{json}");
    }
    let mut rows: Vec<Value> = decode(PolicyRpc::Audit, &json)?;
    if rows.is_empty() {
        return outln!(
            "No recorded flow since {} is denied or would be denied.",
            a.since
        );
    }
    rows.reverse();
    out!(
        "{}",
        table(&FLOW_HEADERS, rows.iter().filter_map(flow_row).collect())
    )
}

const FLOW_HEADERS: [&str; 11] = [
    "TIME",
    "PROTO",
    "SOURCE",
    "",
    "DESTINATION",
    "PORT",
    "BYTES",
    "PACKETS",
    "STATUS",
    "VERDICT",
    "RULE",
];

/// A flow row with its verdict, as a table row.
fn flow_row(v: &Value) -> Option<Vec<String>> {
    let f: StoredFlow = serde_json::from_value(v.clone()).ok()?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let rule = match (
        v.get("verdict_rule").and_then(Value::as_str),
        v.get("verdict_mode").and_then(Value::as_str),
    ) {
        (Some(r), Some(m)) => format!("{r} ({m})"),
        _ => "(default)".to_string(),
    };
    Some(vec![
        timestamp(f.flow.start_ms),
        f.flow.protocol.to_string(),
        format!("{} {}", f.src, f.flow.src),
        "→".to_string(),
        format!("{} {}", f.dst, f.flow.dst),
        f.flow.dst.port().to_string(),
        f.flow
            .bytes_sent
            .saturating_add(f.flow.bytes_received)
            .to_string(),
        f.flow
            .packets_sent
            .saturating_add(f.flow.packets_received)
            .to_string(),
        f.status.as_str().to_string(),
        text("verdict"),
        rule,
    ])
}

#[derive(Args, Debug)]
pub struct DryRunArgs {
    /// The candidate policy document (YAML); `-` reads standard input.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Decide the flows that started at or after this instant.
    #[arg(long, default_value = "7d")]
    pub since: String,
    #[command(flatten)]
    pub conn: AdminArgs,
}

pub async fn dry_run(a: DryRunArgs) -> Result<()> {
    let (name, document) = super::policy::read(&a.file)?;
    let req = DryRunRequest {
        file: name,
        document,
        since_ms: Some(instant("--since", &a.since)?),
        edges_by: None,
    };
    let json = call(&a.conn, PolicyRpc::DryRun, &req).await?;
    if a.conn.json {
        return outln!("{json}");
    }
    let d: DryRunAnswer = decode(PolicyRpc::DryRun, &json)?;
    outln!(
        "{} of {} recorded flows since {} would change verdict (current policy revision {}).",
        d.changed,
        d.flows_considered,
        a.since,
        d.current_revision
    )?;
    if !d.by_rule.is_empty() {
        let rows = d
            .by_rule
            .iter()
            .map(|c| {
                vec![
                    c.rule.clone().unwrap_or_else(|| "(default)".into()),
                    c.mode.as_ref().map(word).unwrap_or_else(|| "-".into()),
                    word(&c.from_verdict),
                    word(&c.to_verdict),
                    c.flows.to_string(),
                ]
            })
            .collect();
        out!(
            "{}",
            table(&["CANDIDATE RULE", "MODE", "FROM", "TO", "FLOWS"], rows)
        )?;
    }
    outln!(
        "{} flows match no candidate rule (its default decides them).",
        d.unmatched.flows
    )
}

#[derive(Args, Debug)]
pub struct SuggestArgs {
    /// Learn from the flows that started at or after this instant.
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// What a group stands for: one SPIFFE ID, one service (Compose
    /// service, `app` label or image) or one namespace.
    #[arg(long, default_value = "spiffe-id", value_parser = ["spiffe-id", "service", "namespace"])]
    pub by: String,
    /// Allow a (pair, port) only when seen in at least N flows.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u64).range(1..))]
    pub min_flows: u64,
    #[command(flatten)]
    pub conn: AdminArgs,
}

pub async fn suggest(a: SuggestArgs) -> Result<()> {
    let req = SuggestRequest {
        since_ms: Some(instant("--since", &a.since)?),
        by: Some(a.by.clone()),
        min_flows: Some(a.min_flows),
    };
    let json = call(&a.conn, PolicyRpc::Suggest, &req).await?;
    if a.conn.json {
        return outln!("{json}");
    }
    let s: SuggestAnswer = decode(PolicyRpc::Suggest, &json)?;
    // The document alone on stdout, so `suggest > p.yaml` is applicable.
    out!("{}", s.document)?;
    eprintln!(
        "suggested {} groups and {} rules (watch mode) from {} flows since {}; review, then `hallmark policy apply -f FILE`",
        s.groups, s.rules, s.flows_considered, a.since
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    fn answer(decided_by: &str, rule: Option<&str>) -> CheckAnswer {
        serde_json::from_value(serde_json::json!({
            "verdict": if rule.is_some() { "allowed" } else { "denied" },
            "allowed": rule.is_some(),
            "rule": rule,
            "mode": rule.map(|_| "enforce"),
            "action": if rule.is_some() { "allow" } else { "deny" },
            "decided_by": decided_by,
            "policy_revision": 3,
            "protocol": "tcp",
            "port": 5432,
            "at_ms": 0,
            "from": {"input": "spiffe://td/web", "kind": "spiffe-id", "spiffe_ids": ["spiffe://td/web"], "groups": ["any", "web"], "workloads": []},
            "to": {"input": "10.0.0.6", "kind": "address", "spiffe_ids": [], "groups": ["any"], "workloads": [], "resolution": "no owner"},
        }))
        .unwrap()
    }

    #[test]
    fn check_says_who_decided() {
        assert_eq!(
            check_summary(&answer("rule", Some("web-to-db"))),
            "allowed by rule web-to-db (enforce), policy revision 3 (tcp port 5432)"
        );
        assert_eq!(
            check_summary(&answer("default", None)),
            "denied by the default (deny), policy revision 3 (tcp port 5432)"
        );
        let a = answer("default", None);
        assert_eq!(
            check_end(&a.from),
            "spiffe://td/web (spiffe-id), groups: any, web; no running workload holds it: decided as the bare ID"
        );
        assert_eq!(
            check_end(&a.to),
            "10.0.0.6 (address), groups: any; no owner"
        );
    }

    #[test]
    fn verdict_flag_takes_both_spellings() {
        assert_eq!(parse_verdict("deny").unwrap(), "denied");
        assert_eq!(parse_verdict("denied").unwrap(), "denied");
        assert_eq!(parse_verdict("would-deny").unwrap(), "would-deny");
        assert!(parse_verdict("allowed").is_err());
    }
}
