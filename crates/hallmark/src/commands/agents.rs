//! `hallmark agent list|evict|ban`: the attested agents as the server keeps
//! them.

use anyhow::Result;
use hallmark_proto::hallmark as pb;
use serde::Serialize;

use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{or_dash, out, outln, print_json, table};

#[derive(Serialize)]
struct AgentOut {
    spiffe_id: String,
    serial: String,
    expires_at: i64,
    attested_at: i64,
    last_seen: i64,
    banned: bool,
    connected: bool,
    /// Empty until the agent's first inventory report.
    context_name: String,
    /// `null` until the agent reports a runtime status.
    runtime: Option<RuntimeOut>,
}

#[derive(Serialize)]
struct RuntimeOut {
    runtime: String,
    endpoint: String,
    version: String,
    degraded: bool,
    reason: String,
}

pub async fn agent_list(a: AdminArgs) -> Result<()> {
    let mut c = admin_client(&a).await?;
    let agents = c
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(admin_error)?
        .into_inner()
        .agents;
    let out: Vec<AgentOut> = agents
        .into_iter()
        .map(|g| AgentOut {
            spiffe_id: g.spiffe_id,
            serial: g.serial,
            expires_at: g.expires_at,
            attested_at: g.attested_at,
            last_seen: g.last_seen,
            banned: g.banned,
            connected: g.connected,
            context_name: g.context_name,
            runtime: g.runtime.map(|r| RuntimeOut {
                runtime: r.runtime,
                endpoint: r.endpoint,
                version: r.version,
                degraded: r.degraded,
                reason: r.reason,
            }),
        })
        .collect();
    if a.json {
        return print_json(&out);
    }
    if out.is_empty() {
        outln!("No agents. Join one with a token from `hallmark token generate`.")?;
        return Ok(());
    }
    out!("{}", agent_table(&out))?;
    Ok(())
}

fn agent_table(agents: &[AgentOut]) -> String {
    let rows = agents
        .iter()
        .map(|g| {
            let (runtime, degraded) = match &g.runtime {
                Some(r) => (
                    format!("{} {}", r.runtime, r.version).trim().to_string(),
                    if r.degraded {
                        or_dash(&r.reason)
                    } else {
                        "-".into()
                    },
                ),
                None => ("-".into(), "-".into()),
            };
            vec![
                g.spiffe_id.clone(),
                g.connected.to_string(),
                g.banned.to_string(),
                or_dash(&g.context_name),
                runtime,
                degraded,
            ]
        })
        .collect();
    table(
        &[
            "SPIFFE ID",
            "CONNECTED",
            "BANNED",
            "CONTEXT",
            "RUNTIME",
            "DEGRADED",
        ],
        rows,
    )
}

pub async fn agent_evict(a: AdminArgs, id: &str, ban: bool) -> Result<()> {
    let mut c = admin_client(&a).await?;
    let req = pb::AgentRequest {
        spiffe_id: id.into(),
    };
    if ban {
        c.ban_agent(req).await.map_err(admin_error)?;
        outln!("Banned agent {id}")?;
    } else {
        c.evict_agent(req).await.map_err(admin_error)?;
        outln!("Evicted agent {id}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_table_shows_context_runtime_and_degradation() {
        let agent = |id: &str, runtime: Option<RuntimeOut>, ctx: &str| AgentOut {
            spiffe_id: id.into(),
            serial: "01".into(),
            expires_at: 0,
            attested_at: 0,
            last_seen: 0,
            banned: false,
            connected: true,
            context_name: ctx.into(),
            runtime,
        };
        let text = agent_table(&[
            agent(
                "spiffe://td/hallmark/agent/a",
                Some(RuntimeOut {
                    runtime: "docker".into(),
                    endpoint: "/var/run/docker.sock".into(),
                    version: "20.10.24".into(),
                    degraded: false,
                    reason: String::new(),
                }),
                "prod",
            ),
            agent(
                "spiffe://td/hallmark/agent/b",
                Some(RuntimeOut {
                    runtime: "none".into(),
                    endpoint: String::new(),
                    version: String::new(),
                    degraded: true,
                    reason: "no runtime socket found".into(),
                }),
                "lab",
            ),
            agent("spiffe://td/hallmark/agent/c", None, ""),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SPIFFE ID                     CONNECTED  BANNED  CONTEXT  RUNTIME          DEGRADED"
        );
        assert_eq!(
            lines[1],
            "spiffe://td/hallmark/agent/a  true       false   prod     docker 20.10.24  -"
        );
        assert_eq!(
            lines[2],
            "spiffe://td/hallmark/agent/b  true       false   lab      none             no runtime socket found"
        );
        assert_eq!(
            lines[3],
            "spiffe://td/hallmark/agent/c  true       false   -        -                -"
        );
    }
}
