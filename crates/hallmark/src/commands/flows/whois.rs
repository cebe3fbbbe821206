//! `hallmark flows whois` (who held an address at an instant, and the
//! evidence) and `hallmark flows stats` (the server's flow counters).

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Result;
use clap::Args;
use hallmark_flows::api::{FlowStatsAnswer, WhoisAnswer, WhoisRequest, WhoisVerdict};
use hallmark_flows::OwnershipKey;

use super::{client, describe, instant, now_ms, query, Query};
use crate::connect::AdminArgs;
use crate::output::{out, print_json, table, timestamp};

#[derive(Args, Debug)]
pub struct WhoisArgs {
    /// The IP address (IPv4 or IPv6).
    #[arg(value_parser = parse_ip)]
    pub ip: IpAddr,
    /// The instant: a duration ago (`10m`), an RFC 3339 time or unix
    /// seconds [default: now].
    #[arg(long)]
    pub at: Option<String>,
    #[command(flatten)]
    pub conn: AdminArgs,
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address"))
}

fn whois_request(a: &WhoisArgs, now: i64) -> Result<WhoisRequest> {
    let at_ms = match &a.at {
        Some(t) => instant("--at", t, now)?,
        None => now,
    };
    Ok(WhoisRequest { ip: a.ip, at_ms })
}

pub async fn run(a: WhoisArgs) -> Result<()> {
    let req = whois_request(&a, now_ms())?;
    let mut c = client(&a.conn).await?;
    let answer: WhoisAnswer = query(&mut c, Query::Whois, &req).await?;
    if a.conn.json {
        return print_json(&answer);
    }
    out!("{}", render_whois(&answer))
}

fn verdict(v: WhoisVerdict) -> &'static str {
    match v {
        WhoisVerdict::Owned => "owned",
        WhoisVerdict::Ambiguous => "ambiguous",
        WhoisVerdict::NoOwner => "no owner",
        WhoisVerdict::Pending => "pending (evidence not in yet)",
        WhoisVerdict::Unknown => "unknown",
    }
}

fn key(k: &OwnershipKey) -> String {
    match k.port {
        Some(p) if k.ip.is_ipv6() => format!("[{}]:{p}", k.ip),
        Some(p) => format!("{}:{p}", k.ip),
        None => k.ip.to_string(),
    }
}

fn render_whois(a: &WhoisAnswer) -> String {
    let mut out = format!(
        "{} at {}: {}\n",
        a.ip,
        timestamp(a.at_ms),
        verdict(a.verdict)
    );
    for o in &a.owners {
        out.push_str(&format!("  owner: {}\n", describe(o)));
    }
    if let Some(n) = &a.network {
        out.push_str(&format!("  network: {n}\n"));
    }
    out.push_str(&format!("{}\n", a.explanation));
    if !a.ranges.is_empty() {
        out.push_str(&format!("\nRanges ({}):\n", a.ranges.len()));
        let rows = a
            .ranges
            .iter()
            .map(|r| {
                vec![
                    key(&r.key),
                    r.owner.to_string(),
                    format!(
                        "{}{}",
                        timestamp(r.first_ms),
                        if r.started { " (start)" } else { "" }
                    ),
                    format!(
                        "{}{}",
                        timestamp(r.last_ms),
                        if r.stopped { " (stop)" } else { "" }
                    ),
                    r.points.to_string(),
                ]
            })
            .collect();
        indent(
            &mut out,
            &table(&["ADDRESS", "OWNER", "FROM", "TO", "EVIDENCE"], rows),
        );
    }
    if a.evidence.is_empty() {
        out.push_str("\nNo evidence recorded near the instant.\n");
    } else {
        out.push_str(&format!("\nEvidence ({}):\n", a.evidence.len()));
        let rows = a
            .evidence
            .iter()
            .map(|e| {
                vec![
                    timestamp(e.at_ms),
                    serde_json::to_value(e.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    key(&e.key),
                    e.owner.to_string(),
                ]
            })
            .collect();
        indent(
            &mut out,
            &table(&["TIME", "KIND", "ADDRESS", "OWNER"], rows),
        );
    }
    out
}

fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

pub async fn stats(a: AdminArgs) -> Result<()> {
    let mut c = client(&a).await?;
    let answer: FlowStatsAnswer = query(&mut c, Query::Stats, &serde_json::json!({})).await?;
    if a.json {
        return print_json(&answer);
    }
    out!("{}", render_stats(&answer))
}

fn render_stats(s: &FlowStatsAnswer) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let total = |m: &BTreeMap<String, u64>| m.values().fold(0u64, |a, b| a.saturating_add(*b));
    let mut add = |k: &str, v: String| lines.push((k.to_string(), v));
    add("Ingested", total(&s.ingested).to_string());
    for (source, n) in &s.ingested {
        add(&format!("  from {source}"), n.to_string());
    }
    add("Rejected", total(&s.rejected).to_string());
    for (reason, n) in &s.rejected {
        add(&format!("  {reason}"), n.to_string());
    }
    add("Attributed", s.attributed.to_string());
    add("External", s.external.to_string());
    add("Unattributed", s.unattributed.to_string());
    add("Unattributed ends", total(&s.unattributed_ends).to_string());
    for (reason, n) in &s.unattributed_ends {
        add(&format!("  {reason}"), n.to_string());
    }
    add("Held back now", s.held.to_string());
    add("Held back (total)", s.held_total.to_string());
    add("Evidence", total(&s.evidence).to_string());
    for (kind, n) in &s.evidence {
        add(&format!("  {kind}"), n.to_string());
    }
    add(
        "Ownership index",
        format!(
            "{} ranges over {} addresses",
            s.ownership_ranges, s.ownership_addresses
        ),
    );
    add(
        "Stored",
        format!(
            "{} flows, {} graph rows, {} evidence, {} pending",
            s.stored_flows, s.stored_graph_rows, s.stored_evidence, s.stored_pending
        ),
    );
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{k:<width$} : {v}\n"))
        .collect()
}

#[cfg(test)]
#[path = "whois_tests.rs"]
mod tests;
