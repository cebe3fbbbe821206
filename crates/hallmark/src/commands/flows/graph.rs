//! `hallmark flows graph`: the identity graph, who talks to whom, as a
//! table, the API's JSON, or a Graphviz digraph.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use hallmark_flows::api::{GraphAnswer, GraphRequest};
use hallmark_flows::verdict::outcome_word;
use hallmark_flows::{GraphBy, GraphEdge};
use hallmark_policy::Outcome;

use super::{client, instant, now_ms, query, window, Query};
use crate::connect::AdminArgs;
use crate::output::{out, outln, print_json, table, timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Table,
    Json,
    Dot,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// Traffic since this instant: a duration ago (`24h`), an RFC 3339 time
    /// or unix seconds.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Traffic before this instant (the forms of --since) [default: now].
    #[arg(long)]
    pub until: Option<String>,
    /// What a node of the graph is: `spiffe-id`, `workload`, `namespace`,
    /// `service` (Compose service or `app` label) or `context`.
    #[arg(long, default_value = "spiffe-id", value_parser = parse_by)]
    pub by: GraphBy,
    /// `table`, `json` (the API's answer) or `dot` (Graphviz: `| dot -Tsvg`).
    #[arg(long, value_enum, default_value_t = GraphFormat::Table)]
    pub format: GraphFormat,
    #[command(flatten)]
    pub conn: AdminArgs,
}

fn parse_by(s: &str) -> Result<GraphBy, String> {
    GraphBy::parse(s)
        .ok_or_else(|| format!("`{s}` is not spiffe-id, workload, namespace, service or context"))
}

/// The format asked for: `--json` is `--format json`.
fn format_of(a: &GraphArgs) -> Result<GraphFormat> {
    match (a.conn.json, a.format) {
        (false, f) => Ok(f),
        (true, GraphFormat::Table | GraphFormat::Json) => Ok(GraphFormat::Json),
        (true, GraphFormat::Dot) => bail!("--json and --format dot disagree: give one of them"),
    }
}

fn graph_request(a: &GraphArgs, now: i64) -> Result<GraphRequest> {
    let since_ms = instant("--since", &a.since, now)?;
    let until_ms = a
        .until
        .as_deref()
        .map(|u| instant("--until", u, now))
        .transpose()?;
    window(since_ms, until_ms)?;
    Ok(GraphRequest {
        since_ms,
        until_ms,
        by: a.by,
    })
}

pub async fn run(a: GraphArgs) -> Result<()> {
    let format = format_of(&a)?;
    let req = graph_request(&a, now_ms())?;
    let mut c = client(&a.conn).await?;
    let answer: GraphAnswer = query(&mut c, Query::Graph, &req).await?;
    match format {
        GraphFormat::Json => print_json(&answer),
        GraphFormat::Dot => out!("{}", dot(&answer)),
        GraphFormat::Table => {
            if answer.edges.is_empty() {
                return outln!("No flows in the window.");
            }
            let rows = answer.edges.iter().map(row).collect();
            out!(
                "{}",
                table(
                    &[
                        "SOURCE",
                        "DESTINATION",
                        "PORT",
                        "FLOWS",
                        "BYTES",
                        "FIRST SEEN",
                        "LAST SEEN",
                        "VERDICT",
                        "VERDICTS"
                    ],
                    rows
                )
            )
        }
    }
}

fn port(e: &GraphEdge) -> String {
    if e.protocol.has_ports() {
        format!("{}/{}", e.dst_port, e.protocol)
    } else {
        e.protocol.to_string()
    }
}

fn row(e: &GraphEdge) -> Vec<String> {
    vec![
        e.src.clone(),
        e.dst.clone(),
        port(e),
        e.flows.to_string(),
        e.bytes.to_string(),
        timestamp(e.first_ms),
        timestamp(e.last_ms),
        verdict(e).to_string(),
        e.verdicts.to_string(),
    ]
}

/// The worst verdict of an edge's flows; `-` when none has one (stored
/// before verdicts existed).
fn verdict(e: &GraphEdge) -> &'static str {
    e.verdict.map_or("-", outcome_word)
}

/// A Graphviz digraph: one node per group, one edge per (source,
/// destination, port, protocol) labelled with the port and the counts,
/// coloured by its worst verdict.
/// Nodes get generated IDs (`n0`, `n1`, …) and carry their names as
/// labels, so no name can break the syntax.
fn dot(a: &GraphAnswer) -> String {
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &a.edges {
        for name in [e.src.as_str(), e.dst.as_str()] {
            let next = ids.len();
            ids.entry(name).or_insert(next);
        }
    }
    let mut out = String::from("digraph flows {\n  rankdir=LR;\n  node [shape=box];\n");
    let mut nodes: Vec<(&str, usize)> = ids.iter().map(|(n, i)| (*n, *i)).collect();
    nodes.sort_by_key(|(_, i)| *i);
    for (name, i) in nodes {
        out.push_str(&format!("  n{i} [label=\"{}\"];\n", dot_escape(name)));
    }
    for e in &a.edges {
        let mut label = format!("{}\\n{} flows, {}", port(e), e.flows, bytes(e.bytes));
        if e.refused > 0 {
            label.push_str(&format!("\\n{} refused", e.refused));
        }
        if e.reset > 0 {
            label.push_str(&format!("\\n{} reset", e.reset));
        }
        if !e.verdicts.is_empty() {
            label.push_str(&format!("\\n{}", e.verdicts));
        }
        // Denied traffic red, traffic a watch rule would deny orange.
        let color = match e.verdict {
            Some(Outcome::Denied) => ", color=red, fontcolor=red",
            Some(Outcome::WouldDeny) => ", color=orange, fontcolor=orange",
            _ => "",
        };
        out.push_str(&format!(
            "  n{} -> n{} [label=\"{label}\"{color}];\n",
            ids.get(e.src.as_str()).copied().unwrap_or_default(),
            ids.get(e.dst.as_str()).copied().unwrap_or_default(),
        ));
    }
    out.push_str("}\n");
    out
}

/// A name inside a DOT double-quoted string: `"` and `\` escaped (Graphviz
/// reads `\\` in a label as one backslash), line breaks as `\n`.
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Bytes in binary units, for labels.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
