//! `hallmark flows list`: stored flows with the identities on both ends,
//! filtered as `hallmark_flows::FlowQuery` defines, and `--follow` to keep
//! printing new ones.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use hallmark_flows::verdict::{outcome_word, parse_verdict_filter};
use hallmark_flows::{Endpoint, EndpointFilter, FlowQuery, FlowStatus, Protocol, StoredFlow};
use hallmark_policy::Outcome;

use super::{call, client, decode, encode, instant, now_ms, query, window, Query};
use crate::connect::{admin_error, AdminArgs};
use crate::output::{out, outln, table, timestamp};

/// How often `--follow` asks for new flows.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// Flows asked for per `--follow` request; a full page is followed by
/// another request at once.
const FOLLOW_PAGE: usize = 1000;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Flows that started at or after this instant: a duration ago (`1h`,
    /// `30m`), an RFC 3339 time or unix seconds.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Flows that started before this instant (the forms of --since).
    #[arg(long)]
    pub until: Option<String>,
    /// The source end matches F (repeat: all must match). F is a SPIFFE ID
    /// or prefix (`spiffe://td/ns/payments/*`), `ns:NAME`, `label:K=V`,
    /// `image:NAME`, `context:NAME`, `node:NAME`, `ip:ADDR` or a CIDR.
    #[arg(long = "from", value_name = "F", value_parser = parse_filter)]
    pub from: Vec<EndpointFilter>,
    /// The destination end matches F (repeat: all must match); the forms
    /// of --from.
    #[arg(long = "to", value_name = "F", value_parser = parse_filter)]
    pub to: Vec<EndpointFilter>,
    /// Destination port.
    #[arg(long)]
    pub port: Option<u16>,
    /// `tcp` or `udp` (also `icmp`, `icmpv6` or an IP protocol number).
    #[arg(long, value_parser = parse_protocol)]
    pub protocol: Option<Protocol>,
    /// `attributed` (both ends have an owner), `unattributed` (an end has
    /// neither owner nor network) or `external` (an end is in an
    /// operator-named network).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<FlowStatus>,
    /// Only flows the policy in force when they were stored said this
    /// about: `allowed`, `denied` (or `deny`), `would-deny` (a watch-mode
    /// rule would deny it) or `no-decision` (an end unattributed, the
    /// initiator unknown, or neither TCP nor UDP).
    #[arg(long, value_name = "VERDICT", value_parser = parse_verdict_filter)]
    pub verdict: Option<Outcome>,
    /// At most this many flows (the newest).
    #[arg(long, default_value = "100", value_parser = parse_limit)]
    pub limit: usize,
    /// Keep printing new flows as the server stores them, until Ctrl-C (with
    /// --json: one JSON object a line).
    #[arg(long, conflicts_with = "until")]
    pub follow: bool,
    #[command(flatten)]
    pub conn: AdminArgs,
}

fn parse_filter(s: &str) -> Result<EndpointFilter, String> {
    s.parse()
        .map_err(|e: hallmark_flows::FilterError| e.to_string())
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
        .map_err(|e: hallmark_flows::FlowError| e.to_string())
}

fn parse_status(s: &str) -> Result<FlowStatus, String> {
    FlowStatus::parse(s).ok_or_else(|| format!("`{s}` is not attributed, unattributed or external"))
}

fn parse_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// The query `list` sends, with its times checked.
fn list_query(a: &ListArgs, now: i64) -> Result<FlowQuery> {
    let since_ms = instant("--since", &a.since, now)?;
    let until_ms = a
        .until
        .as_deref()
        .map(|u| instant("--until", u, now))
        .transpose()?;
    window(since_ms, until_ms)?;
    Ok(FlowQuery {
        since_ms,
        until_ms,
        from: a.from.clone(),
        to: a.to.clone(),
        port: a.port,
        protocol: a.protocol,
        status: a.status,
        verdict: a.verdict,
        after_id: None,
        limit: a.limit,
    })
}

pub async fn run(a: ListArgs) -> Result<()> {
    let mut q = list_query(&a, now_ms())?;
    let mut c = client(&a.conn).await?;
    let mut flows: Vec<StoredFlow> = query(&mut c, Query::List, &q).await?;
    if !a.follow {
        if a.conn.json {
            return crate::output::print_json(&flows);
        }
        if flows.is_empty() {
            outln!("No flows match.")?;
            return Ok(());
        }
        // The answer is newest first; a terminal reads oldest first, the
        // newest just above the prompt.
        flows.reverse();
        // The RULE column only when a rule decided one of them.
        let rules = flows.iter().any(|f| f.verdict_rule.is_some());
        let rows = flows.iter().map(|f| row(f, rules)).collect();
        return out!("{}", table(&headers(rules), rows));
    }

    flows.reverse();
    if !a.conn.json {
        // Flows not seen yet may have a rule: the column is always there.
        outln!("{}", headers(true).join("  "))?;
    }
    let mut last_id = 0;
    for f in &flows {
        print_followed(f, a.conn.json)?;
        last_id = last_id.max(f.id);
    }
    q.limit = FOLLOW_PAGE;
    let mut outage = false;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        if stdout_closed() {
            return Ok(());
        }
        loop {
            q.after_id = Some(last_id);
            let json = match call(&mut c, Query::List, encode(Query::List, &q)?).await {
                Ok(json) => json,
                // A server restarting (or failing over) is waited for:
                // following resumes after the last flow printed.
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    if !outage {
                        eprintln!("warning: {}; retrying every second", admin_error(s));
                        outage = true;
                    }
                    break;
                }
                Err(s) => return Err(admin_error(s)),
            };
            if outage {
                eprintln!("reconnected");
                outage = false;
            }
            let page: Vec<StoredFlow> = decode(Query::List, &json)?;
            for f in &page {
                print_followed(f, a.conn.json)?;
                last_id = last_id.max(f.id);
            }
            if page.len() < FOLLOW_PAGE {
                break;
            }
        }
    }
}

const HEADERS: [&str; 10] = [
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
];

/// The columns, with RULE (the rule that decided) when `rules`.
fn headers(rules: bool) -> Vec<&'static str> {
    let mut h = HEADERS.to_vec();
    if rules {
        h.push("RULE");
    }
    h
}

/// One flow as a `--follow` line: a row without column alignment (the
/// widths of flows not yet seen are unknown), or compact JSON.
fn print_followed(f: &StoredFlow, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string(f)?)
    } else {
        outln!("{}", row(f, true).join("  "))
    }
}

/// Whether stdout's reader has gone. `--follow` may write nothing for a
/// long time; without this it would poll the server on behalf of a closed
/// pipe until the next flow arrived.
fn stdout_closed() -> bool {
    use std::os::fd::AsFd;

    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        _ => false,
    }
}

/// A flow's cells; with `rules`, the deciding rule's name last (`-` when
/// the default or nothing decided).
fn row(f: &StoredFlow, rules: bool) -> Vec<String> {
    let proto = f.flow.protocol;
    let status = match f.flow.outcome {
        Some(o) => format!(
            "{} ({})",
            f.status.as_str(),
            serde_json::to_value(o)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        None => f.status.as_str().to_string(),
    };
    let mut cells = vec![
        timestamp(f.flow.start_ms),
        proto.to_string(),
        end(&f.src, f.flow.src, proto),
        "→".to_string(),
        end(&f.dst, f.flow.dst, proto),
        if proto.has_ports() {
            f.flow.dst.port().to_string()
        } else {
            "-".to_string()
        },
        f.flow
            .bytes_sent
            .saturating_add(f.flow.bytes_received)
            .to_string(),
        f.flow
            .packets_sent
            .saturating_add(f.flow.packets_received)
            .to_string(),
        status,
        // `-`: stored before verdicts existed.
        f.verdict.map_or("-", outcome_word).to_string(),
    ];
    if rules {
        cells.push(f.verdict_rule.clone().unwrap_or_else(|| "-".into()));
    }
    cells
}

/// An end: its identity (SPIFFE ID, else workload or node name, external
/// network, or why it is unattributed), then its address.
fn end(e: &Endpoint, addr: SocketAddr, proto: Protocol) -> String {
    if proto.has_ports() {
        format!("{e} {addr}")
    } else {
        format!("{e} {}", addr.ip())
    }
}

#[cfg(test)]
#[path = "list_tests.rs"]
mod tests;
