//! `hallmark status`: the server's trust domain, counts and datastore.

use anyhow::Result;
use hallmark_proto::hallmark as pb;

use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{outln, print_json};

pub async fn status(a: AdminArgs) -> Result<()> {
    let mut c = admin_client(&a).await?;
    let s = c
        .status(pb::StatusRequest {})
        .await
        .map_err(admin_error)?
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
    outln!("Trust domain     : {}", s.trust_domain)?;
    outln!("Version          : {}", s.version)?;
    outln!("Entries          : {}", s.entries)?;
    outln!(
        "Agents           : {} ({} connected)",
        s.agents,
        s.connected_agents
    )?;
    outln!("CA fingerprint   : {}", s.ca_fingerprint)?;
    outln!("Datastore        : {}", s.datastore)?;
    if !s.oidc_issuer.is_empty() {
        outln!("OIDC issuer      : {}", s.oidc_issuer)?;
    }
    outln!("Federations      : {}", s.federations)?;
    Ok(())
}
