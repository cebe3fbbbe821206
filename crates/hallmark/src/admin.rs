//! Operator commands: talk to the server's admin API on its Unix socket.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hallmark_core::{format_duration, Entry};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_client::AdminClient;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::cli::AdminArgs;
use crate::config;

#[derive(Args, Debug)]
pub struct EntryCreateArgs {
    /// The SPIFFE ID to issue, e.g. spiffe://example.org/web.
    #[arg(long)]
    pub spiffe_id: String,
    /// The agent's SPIFFE ID the entry is for.
    #[arg(long, conflicts_with = "node", required_unless_present = "node")]
    pub parent: Option<String>,
    /// Shorthand for --parent spiffe://<td>/hallmark/agent/<NODE>.
    #[arg(long)]
    pub node: Option<String>,
    /// A selector the workload must have (repeat for several; all must match).
    #[arg(long = "selector", required = true)]
    pub selectors: Vec<String>,
    /// X509-SVID lifetime, e.g. 1h [default: 1h].
    #[arg(long)]
    pub x509_ttl: Option<String>,
    /// JWT-SVID lifetime, e.g. 5m [default: 5m].
    #[arg(long)]
    pub jwt_ttl: Option<String>,
    /// A DNS SAN for the X509-SVID (repeatable).
    #[arg(long = "dns-name")]
    pub dns_names: Vec<String>,
    /// A hint returned with the SVID to tell several identities apart.
    #[arg(long, default_value = "")]
    pub hint: String,
    /// Mark the entry as an admin identity: its SVID may call the admin API
    /// over mTLS.
    #[arg(long)]
    pub admin: bool,
    /// A foreign trust domain whose bundle this entry's workloads receive
    /// (repeatable; needs a federation relationship for it).
    #[arg(long = "federates-with")]
    pub federates_with: Vec<String>,
    /// An extra claim for this entry's OIDC tokens, drawn from the attested
    /// workload (repeatable): context, node, namespace, pod, pod_uid,
    /// container, container_id, image, image_digest, compose_project,
    /// compose_service.
    #[arg(long = "oidc-claim")]
    pub oidc_claims: Vec<String>,
    #[command(flatten)]
    pub conn: AdminArgs,
}

#[derive(Args, Debug)]
pub struct EntryListArgs {
    #[arg(long)]
    pub parent: Option<String>,
    #[arg(long)]
    pub spiffe_id: Option<String>,
    #[arg(long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub conn: AdminArgs,
}

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

#[derive(Args, Debug)]
pub struct BundleArgs {
    /// pem (X.509 roots) or jwks (the SPIFFE bundle document).
    #[arg(long, default_value = "pem", value_parser = ["pem", "jwks"])]
    pub format: String,
    #[command(flatten)]
    pub conn: AdminArgs,
}

/// A channel over a Unix socket (tonic needs a URI; it is not used).
pub async fn uds_channel(path: &Path) -> Result<Channel> {
    let p = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to {}", path.display()))
}

pub(crate) async fn client(args: &AdminArgs) -> Result<AdminClient<Channel>> {
    if let Some(addr) = &args.admin_addr {
        let ch = crate::admin_remote::channel(addr, args.admin_credentials.as_deref()).await?;
        return Ok(AdminClient::new(ch));
    }
    let path = args
        .admin_socket
        .clone()
        .unwrap_or_else(config::default_admin_socket);
    let ch = uds_channel(&path)
        .await
        .map_err(|e| anyhow!("{e:#}: is the server running? (start it with `hallmark server run` or `hallmark up`, or pass --admin-socket)"))?;
    Ok(AdminClient::new(ch))
}

/// A gRPC error as the operator should read it.
pub fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("{} ({:?})", s.message(), s.code())
}

fn entry_from_pb(e: &pb::Entry) -> Result<Entry> {
    Entry::try_from(e).map_err(|e| anyhow!("server sent an invalid entry: {e}"))
}

pub(crate) fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_entry(e: &Entry) {
    println!("Entry ID      : {}", e.id);
    println!("SPIFFE ID     : {}", e.spec.spiffe_id);
    println!("Parent ID     : {}", e.spec.parent_id);
    for s in &e.spec.selectors {
        println!("Selector      : {s}");
    }
    println!(
        "X509-SVID TTL : {}",
        format_duration(std::time::Duration::from_secs(e.spec.x509_ttl_secs))
    );
    println!(
        "JWT-SVID TTL  : {}",
        format_duration(std::time::Duration::from_secs(e.spec.jwt_ttl_secs))
    );
    for d in &e.spec.dns_names {
        println!("DNS name      : {d}");
    }
    if !e.spec.hint.is_empty() {
        println!("Hint          : {}", e.spec.hint);
    }
    if e.spec.admin {
        println!("Admin         : true");
    }
    if !e.spec.federates_with.is_empty() {
        let tds: Vec<&str> = e.spec.federates_with.iter().map(|t| t.name()).collect();
        println!("Federates with: {}", tds.join(", "));
    }
    if !e.spec.oidc_claims.is_empty() {
        println!("OIDC claims   : {}", e.spec.oidc_claims.join(", "));
    }
}

fn ttl_secs(key: &str, v: &Option<String>) -> Result<u64> {
    v.as_deref()
        .map(|s| config::duration(key, s).map(|d| d.as_secs()))
        .transpose()
        .map(|o| o.unwrap_or(0))
}

pub async fn entry_create(a: EntryCreateArgs) -> Result<()> {
    let mut c = client(&a.conn).await?;
    let parent = match (&a.parent, &a.node) {
        (Some(p), _) => p.clone(),
        (None, Some(node)) => {
            let status = c
                .status(pb::StatusRequest {})
                .await
                .map_err(status_err)?
                .into_inner();
            format!("spiffe://{}/hallmark/agent/{node}", status.trust_domain)
        }
        (None, None) => bail!("--parent or --node is required"),
    };
    let req = pb::CreateEntryRequest {
        spiffe_id: a.spiffe_id,
        parent_id: parent,
        selectors: a.selectors,
        x509_ttl_secs: ttl_secs("--x509-ttl", &a.x509_ttl)?,
        jwt_ttl_secs: ttl_secs("--jwt-ttl", &a.jwt_ttl)?,
        dns_names: a.dns_names,
        hint: a.hint,
        admin: a.admin,
        federates_with: a.federates_with,
        oidc_claims: a.oidc_claims,
    };
    let e = entry_from_pb(&c.create_entry(req).await.map_err(status_err)?.into_inner())?;
    if a.conn.json {
        print_json(&e)
    } else {
        print_entry(&e);
        Ok(())
    }
}

pub async fn entry_list(a: EntryListArgs) -> Result<()> {
    let mut c = client(&a.conn).await?;
    let resp = c
        .list_entries(pb::ListEntriesRequest {
            parent_id: a.parent.unwrap_or_default(),
            spiffe_id: a.spiffe_id.unwrap_or_default(),
            selector: a.selector.unwrap_or_default(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let entries = resp
        .entries
        .iter()
        .map(entry_from_pb)
        .collect::<Result<Vec<_>>>()?;
    if a.conn.json {
        return print_json(&entries);
    }
    if entries.is_empty() {
        println!("No entries. Create one with `hallmark entry create`.");
        return Ok(());
    }
    println!(
        "{} entr{}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    );
    for e in &entries {
        println!();
        print_entry(e);
    }
    Ok(())
}

pub async fn entry_show(a: AdminArgs, id: &str) -> Result<()> {
    let mut c = client(&a).await?;
    let e = entry_from_pb(
        &c.get_entry(pb::GetEntryRequest { id: id.into() })
            .await
            .map_err(status_err)?
            .into_inner(),
    )?;
    if a.json {
        print_json(&e)
    } else {
        print_entry(&e);
        Ok(())
    }
}

pub async fn entry_delete(a: AdminArgs, id: &str) -> Result<()> {
    let mut c = client(&a).await?;
    c.delete_entry(pb::DeleteEntryRequest { id: id.into() })
        .await
        .map_err(status_err)?;
    if a.json {
        print_json(&serde_json::json!({ "deleted": id }))
    } else {
        println!("Deleted entry {id}");
        Ok(())
    }
}

#[derive(Serialize)]
struct TokenOut {
    token: String,
    agent_spiffe_id: String,
    expires_at: i64,
    ca_fingerprint: String,
}

pub async fn token_generate(a: TokenArgs) -> Result<()> {
    let mut c = client(&a.conn).await?;
    let t = c
        .generate_token(pb::GenerateTokenRequest {
            node: a.node,
            ttl_secs: ttl_secs("--ttl", &a.ttl)?,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    if a.conn.json {
        return print_json(&TokenOut {
            token: t.token,
            agent_spiffe_id: t.agent_spiffe_id,
            expires_at: t.expires_at,
            ca_fingerprint: t.ca_fingerprint,
        });
    }
    println!("Token          : {}", t.token);
    println!("Agent ID       : {}", t.agent_spiffe_id);
    println!("CA fingerprint : {}", t.ca_fingerprint);
    println!();
    println!("Start the agent on that node with:");
    println!(
        "  hallmark agent run --server <SERVER:PORT> --trust-domain {} --join-token {} --ca-fingerprint {}",
        t.agent_spiffe_id
            .strip_prefix("spiffe://")
            .and_then(|s| s.split('/').next())
            .unwrap_or(""),
        t.token,
        t.ca_fingerprint
    );
    Ok(())
}

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
    let mut c = client(&a).await?;
    let agents = c
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(status_err)?
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
        println!("No agents. Join one with a token from `hallmark token generate`.");
        return Ok(());
    }
    print!("{}", agent_table(&out));
    Ok(())
}

fn agent_table(agents: &[AgentOut]) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut rows = vec![[
        "SPIFFE ID".to_string(),
        "CONNECTED".into(),
        "BANNED".into(),
        "CONTEXT".into(),
        "RUNTIME".into(),
        "DEGRADED".into(),
    ]];
    for g in agents {
        let (runtime, degraded) = match &g.runtime {
            Some(r) => (
                format!("{} {}", r.runtime, r.version).trim().to_string(),
                if r.degraded {
                    dash(&r.reason)
                } else {
                    "-".into()
                },
            ),
            None => ("-".into(), "-".into()),
        };
        rows.push([
            g.spiffe_id.clone(),
            g.connected.to_string(),
            g.banned.to_string(),
            dash(&g.context_name),
            runtime,
            degraded,
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}  "));
            } else {
                line.push_str(cell);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

pub async fn agent_evict(a: AdminArgs, id: &str, ban: bool) -> Result<()> {
    let mut c = client(&a).await?;
    let req = pb::AgentRequest {
        spiffe_id: id.into(),
    };
    if ban {
        c.ban_agent(req).await.map_err(status_err)?;
        println!("Banned agent {id}");
    } else {
        c.evict_agent(req).await.map_err(status_err)?;
        println!("Evicted agent {id}");
    }
    Ok(())
}

pub async fn bundle_show(a: BundleArgs) -> Result<()> {
    let mut c = client(&a.conn).await?;
    let b = c
        .get_bundle(pb::GetBundleRequest {})
        .await
        .map_err(status_err)?
        .into_inner();
    if a.format == "jwks" || a.conn.json {
        println!("{}", String::from_utf8_lossy(&b.jwks));
    } else {
        for der in b.x509_authorities {
            print!("{}", pem::encode(&pem::Pem::new("CERTIFICATE", der)));
        }
    }
    Ok(())
}

pub async fn status(a: AdminArgs) -> Result<()> {
    let mut c = client(&a).await?;
    let s = c
        .status(pb::StatusRequest {})
        .await
        .map_err(status_err)?
        .into_inner();
    if a.json {
        return print_json(&serde_json::json!({
            "trust_domain": s.trust_domain,
            "version": s.version,
            "started_at": s.started_at,
            "entries": s.entries,
            "agents": s.agents,
            "connected_agents": s.connected_agents,
            "ca_fingerprint": s.ca_fingerprint,
            "datastore": s.datastore,
            "oidc_issuer": (!s.oidc_issuer.is_empty()).then_some(&s.oidc_issuer),
            "federations": s.federations,
        }));
    }
    println!("Trust domain     : {}", s.trust_domain);
    println!("Version          : {}", s.version);
    println!("Entries          : {}", s.entries);
    println!(
        "Agents           : {} ({} connected)",
        s.agents, s.connected_agents
    );
    println!("CA fingerprint   : {}", s.ca_fingerprint);
    println!("Datastore        : {}", s.datastore);
    if !s.oidc_issuer.is_empty() {
        println!("OIDC issuer      : {}", s.oidc_issuer);
    }
    println!("Federations      : {}", s.federations);
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
