//! `hallmark flows`: send flow logs to the server for attribution and ask it
//! who talked to whom.
//!
//! Every query is the admin API's (`ListFlows`, `FlowGraph`, `Whois`,
//! `FlowStats`), whose requests and answers are the JSON documents of
//! `hallmark_flows::api`; `--json` prints the answer as the API gives it,
//! so a script and the console read the same thing. Arguments are parsed
//! and checked before any connection, so a bad filter or time fails with
//! the flag and the rule, whether or not a server runs.

mod graph;
mod ingest;
mod list;
mod whois;

use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use hallmark_core::time::unix_millis;
use hallmark_flows::Endpoint;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_client::AdminClient;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use crate::connect::{admin_client, admin_error, AdminArgs};
use hallmark_core::timearg::parse_instant;

#[derive(Subcommand, Debug)]
pub enum FlowsCommand {
    /// Read a flow log and send its flows to the server, which attributes
    /// both ends of each by IP ownership.
    #[command(long_about = ingest::LONG_ABOUT)]
    Ingest(ingest::IngestArgs),
    /// List stored flows, newest last, with the identities on both ends.
    List(list::ListArgs),
    /// Who talks to whom: flows and bytes between identities, per
    /// destination port.
    Graph(graph::GraphArgs),
    /// Who held an IP address at an instant, and the evidence: ranges,
    /// lifecycle events, heartbeats.
    Whois(whois::WhoisArgs),
    /// The server's flow counters: ingested, attributed, unattributed by
    /// reason, external, per source, waiting for evidence.
    Stats(AdminArgs),
}

pub async fn run(cmd: FlowsCommand) -> Result<()> {
    match cmd {
        FlowsCommand::Ingest(a) => ingest::run(a).await,
        FlowsCommand::List(a) => list::run(a).await,
        FlowsCommand::Graph(a) => graph::run(a).await,
        FlowsCommand::Whois(a) => whois::run(a).await,
        FlowsCommand::Stats(a) => whois::stats(a).await,
    }
}

/// The admin API's JSON flow queries.
#[derive(Debug, Clone, Copy)]
enum Query {
    List,
    Graph,
    Whois,
    Stats,
}

impl Query {
    fn rpc(self) -> &'static str {
        match self {
            Query::List => "ListFlows",
            Query::Graph => "FlowGraph",
            Query::Whois => "Whois",
            Query::Stats => "FlowStats",
        }
    }
}

/// Sends one JSON query and decodes its answer.
async fn query<Req: Serialize, Ans: DeserializeOwned>(
    client: &mut AdminClient<Channel>,
    q: Query,
    req: &Req,
) -> Result<Ans> {
    let msg = encode(q, req)?;
    let json = call(client, q, msg).await.map_err(admin_error)?;
    decode(q, &json)
}

fn encode<Req: Serialize>(q: Query, req: &Req) -> Result<pb::FlowQueryRequest> {
    let json = serde_json::to_string(req).with_context(|| format!("encoding {}", q.rpc()))?;
    Ok(pb::FlowQueryRequest { json })
}

/// One call, its status kept so a caller can tell an outage from a refusal.
async fn call(
    client: &mut AdminClient<Channel>,
    q: Query,
    msg: pb::FlowQueryRequest,
) -> Result<String, tonic::Status> {
    let resp = match q {
        Query::List => client.list_flows(msg).await,
        Query::Graph => client.flow_graph(msg).await,
        Query::Whois => client.whois(msg).await,
        Query::Stats => client.flow_stats(msg).await,
    }?;
    Ok(resp.into_inner().json)
}

fn decode<Ans: DeserializeOwned>(q: Query, json: &str) -> Result<Ans> {
    serde_json::from_str(json).map_err(|e| {
        anyhow!(
            "the server's {} answer is not what this client reads: {e}",
            q.rpc()
        )
    })
}

/// Connects after the arguments were checked.
async fn client(conn: &AdminArgs) -> Result<AdminClient<Channel>> {
    admin_client(conn).await
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// A time flag's value, in unix ms; the error names the flag.
fn instant(flag: &str, text: &str, now: i64) -> Result<i64> {
    parse_instant(text, now).map_err(|e| anyhow!("{flag}: {e}"))
}

/// Checks that a window is not empty.
fn window(since_ms: i64, until_ms: Option<i64>) -> Result<()> {
    match until_ms {
        Some(u) if u <= since_ms => Err(anyhow!(
            "--until ({}) is not after --since ({}): the window is empty",
            crate::output::timestamp(u),
            crate::output::timestamp(since_ms)
        )),
        _ => Ok(()),
    }
}

/// An endpoint in full, for whois: its identity, then where it ran.
fn describe(e: &Endpoint) -> String {
    match e {
        Endpoint::Workload(w) => {
            let mut parts = vec![format!("context {}", w.context), format!("node {}", w.node)];
            let short = w.container_id.get(..12).unwrap_or(&w.container_id);
            parts.push(format!("container {short}"));
            if !w.name.is_empty() {
                parts.push(format!("name {}", w.name));
            }
            if !w.image.is_empty() {
                parts.push(format!("image {}", w.image));
            }
            if !w.pod.is_empty() {
                parts.push(format!("pod {}/{}", w.namespace, w.pod));
            }
            if !w.compose_service.is_empty() {
                parts.push(format!(
                    "compose {}/{}",
                    w.compose_project, w.compose_service
                ));
            }
            let ids = if w.spiffe_ids.is_empty() {
                "workload (no SPIFFE ID)".to_string()
            } else {
                w.spiffe_ids.join(", ")
            };
            format!("{ids} [{}]", parts.join(", "))
        }
        Endpoint::Node {
            context,
            node,
            spiffe_id,
            unit,
        } => {
            let unit = if unit.is_empty() {
                String::new()
            } else {
                format!(", unit {unit}")
            };
            if spiffe_id.is_empty() {
                format!("node {context}/{node}{unit}")
            } else {
                format!("{spiffe_id} [node {context}/{node}{unit}]")
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use hallmark_flows::WorkloadEndpoint;

    use super::*;

    #[test]
    fn endpoints_in_full() {
        let w = Endpoint::Workload(WorkloadEndpoint {
            context: "prod".into(),
            node: "n1".into(),
            container_id: "ab".repeat(32),
            name: "ledger-0".into(),
            image: "ledger:1".into(),
            namespace: "payments".into(),
            pod: "ledger-0".into(),
            spiffe_ids: vec!["spiffe://td/ns/payments/sa/ledger".into()],
            ..WorkloadEndpoint::default()
        });
        assert_eq!(
            describe(&w),
            "spiffe://td/ns/payments/sa/ledger [context prod, node n1, container abababababab, \
             name ledger-0, image ledger:1, pod payments/ledger-0]"
        );
        let n = Endpoint::Node {
            context: "prod".into(),
            node: "n1".into(),
            spiffe_id: String::new(),
            unit: String::new(),
        };
        assert_eq!(describe(&n), "node prod/n1");
        let n = Endpoint::Node {
            context: "prod".into(),
            node: "n1".into(),
            spiffe_id: "spiffe://td/hallmark/agent/n1".into(),
            unit: "ssh.service".into(),
        };
        assert_eq!(
            describe(&n),
            "spiffe://td/hallmark/agent/n1 [node prod/n1, unit ssh.service]"
        );
    }

    #[test]
    fn empty_windows_are_refused() {
        assert!(window(10, None).is_ok());
        assert!(window(10, Some(11)).is_ok());
        let e = window(10, Some(10)).unwrap_err().to_string();
        assert!(e.contains("not after --since"), "{e}");
    }
}
