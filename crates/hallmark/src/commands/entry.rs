//! `hallmark entry`: registration entries, which say which workloads get
//! which SPIFFE ID.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use hallmark_core::{format_duration, Entry, Selector, TrustDomain, HOST_SELECTOR};
use hallmark_proto::hallmark as pb;

use crate::config::ttl_secs;
use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{outln, print_json};

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

fn entry_from_pb(e: &pb::Entry) -> Result<Entry> {
    Entry::try_from(e).map_err(|e| anyhow!("server sent an invalid entry: {e}"))
}

fn print_entry(e: &Entry) -> Result<()> {
    outln!("Entry ID      : {}", e.id)?;
    outln!("SPIFFE ID     : {}", e.spec.spiffe_id)?;
    outln!("Parent ID     : {}", e.spec.parent_id)?;
    for s in &e.spec.selectors {
        outln!("Selector      : {s}")?;
    }
    outln!(
        "X509-SVID TTL : {}",
        format_duration(std::time::Duration::from_secs(e.spec.x509_ttl_secs))
    )?;
    outln!(
        "JWT-SVID TTL  : {}",
        format_duration(std::time::Duration::from_secs(e.spec.jwt_ttl_secs))
    )?;
    for d in &e.spec.dns_names {
        outln!("DNS name      : {d}")?;
    }
    if !e.spec.hint.is_empty() {
        outln!("Hint          : {}", e.spec.hint)?;
    }
    if e.spec.admin {
        outln!("Admin         : true")?;
    }
    if !e.spec.federates_with.is_empty() {
        let tds: Vec<&str> = e.spec.federates_with.iter().map(|t| t.name()).collect();
        outln!("Federates with: {}", tds.join(", "))?;
    }
    if !e.spec.oidc_claims.is_empty() {
        outln!("OIDC claims   : {}", e.spec.oidc_claims.join(", "))?;
    }
    Ok(())
}

pub async fn entry_create(a: EntryCreateArgs) -> Result<()> {
    let mut c = admin_client(&a.conn).await?;
    let parent = match (&a.parent, &a.node) {
        (Some(p), _) => p.clone(),
        (None, Some(node)) => {
            let status = c
                .status(pb::StatusRequest {})
                .await
                .map_err(admin_error)?
                .into_inner();
            let td = TrustDomain::new(&status.trust_domain)
                .map_err(|e| anyhow!("server sent an invalid trust domain: {e}"))?;
            td.agent_id(node)
                .map_err(|e| anyhow!("--node `{node}`: {e}"))?
                .to_string()
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
    let e = entry_from_pb(&c.create_entry(req).await.map_err(admin_error)?.into_inner())?;
    // On stderr, so that `--json` output stays one JSON document.
    if let Some(warning) = user_only_warning(&e.spec.selectors) {
        eprintln!("{warning}");
    }
    if a.conn.json {
        print_json(&e)
    } else {
        print_entry(&e)
    }
}

/// The warning for an entry whose selectors name only a unix user or group:
/// a process in a container running under the same ids has them too.
fn user_only_warning(selectors: &[Selector]) -> Option<String> {
    if selectors.is_empty() || !selectors.iter().all(Selector::is_user_only) {
        return None;
    }
    let list: Vec<String> = selectors.iter().map(Selector::to_string).collect();
    Some(format!(
        "warning: this entry's selectors ({}) name only a unix user or group, so processes in containers running as that user match it too. \
         To pin it, add `--selector {HOST_SELECTOR}` (host processes only), `--selector unix:path:<exe>` or `--selector unix:sha256:<hex>` (one executable), \
         or container selectors such as `docker:label:<k>:<v>` or `k8s:ns:<ns>` (one workload).",
        list.join(", ")
    ))
}

pub async fn entry_list(a: EntryListArgs) -> Result<()> {
    let mut c = admin_client(&a.conn).await?;
    let resp = c
        .list_entries(pb::ListEntriesRequest {
            parent_id: a.parent.unwrap_or_default(),
            spiffe_id: a.spiffe_id.unwrap_or_default(),
            selector: a.selector.unwrap_or_default(),
        })
        .await
        .map_err(admin_error)?
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
        outln!("No entries. Create one with `hallmark entry create`.")?;
        return Ok(());
    }
    outln!(
        "{} entr{}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    )?;
    for e in &entries {
        outln!()?;
        print_entry(e)?;
    }
    Ok(())
}

pub async fn entry_show(a: AdminArgs, id: &str) -> Result<()> {
    let mut c = admin_client(&a).await?;
    let e = entry_from_pb(
        &c.get_entry(pb::GetEntryRequest { id: id.into() })
            .await
            .map_err(admin_error)?
            .into_inner(),
    )?;
    if a.json {
        print_json(&e)
    } else {
        print_entry(&e)
    }
}

pub async fn entry_delete(a: AdminArgs, id: &str) -> Result<()> {
    let mut c = admin_client(&a).await?;
    c.delete_entry(pb::DeleteEntryRequest { id: id.into() })
        .await
        .map_err(admin_error)?;
    if a.json {
        print_json(&serde_json::json!({ "deleted": id }))
    } else {
        outln!("Deleted entry {id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selectors(list: &[&str]) -> Vec<Selector> {
        list.iter()
            .map(|s| Selector::new(s).expect("valid selector"))
            .collect()
    }

    #[test]
    fn only_user_selectors_draw_the_container_warning() {
        for warned in [
            &["unix:uid:0"][..],
            &["unix:gid:50"],
            &["unix:user:root", "unix:group:wheel"],
            &["unix:uid:1000", "unix:gid:1000"],
        ] {
            let w = user_only_warning(&selectors(warned))
                .unwrap_or_else(|| panic!("{warned:?} draws no warning"));
            for needle in [
                warned[0],
                "containers",
                HOST_SELECTOR,
                "unix:path",
                "unix:sha256",
                "docker:label",
                "k8s:ns",
            ] {
                assert!(w.contains(needle), "want `{needle}` in: {w}");
            }
        }
        for pinned in [
            &["unix:uid:0", HOST_SELECTOR][..],
            &["unix:uid:0", "unix:path:/usr/bin/nginx"],
            &["unix:uid:0", "docker:label:app:web"],
            &["k8s:ns:payments"],
            &[],
        ] {
            assert_eq!(user_only_warning(&selectors(pinned)), None, "{pinned:?}");
        }
    }
}
