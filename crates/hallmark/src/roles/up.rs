//! `hallmark up`: a server and an agent in one process, for a laptop, with
//! the invoking user registered for host processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use hallmark_agent::{AgentConfig, ServerTrustSource};
use hallmark_core::HOST_SELECTOR;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use hallmark_server::{AdminService, ServerConfig};
use tracing::info;

use super::{
    agent_status_json, capture_config, enforce_config, inventory_config, shutdown_signal,
    CaptureArgs, EnforceArgs, InventoryArgs, DRAIN_DEADLINE,
};
use crate::config::{self, DEFAULT_TRUST_DOMAIN};
use crate::connect::admin_error;
use crate::health;
use crate::output::outln;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// State directory [default: $HALLMARK_HOME, else ~/.hallmark].
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Trust domain [default: hallmark.local].
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Serve /healthz, /readyz, /metrics and /status over HTTP on this address.
    #[arg(long)]
    pub health_listen: Option<String>,
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub enforce: EnforceArgs,
    #[command(flatten)]
    pub console: super::console::ConsoleArgs,
}

/// What `hallmark up` tells the user once it is ready.
struct Banner<'a> {
    td: String,
    spiffe_id: &'a str,
    selectors: &'a [String],
    socket: &'a Path,
    admin_socket: &'a Path,
    containers: String,
    /// Flow capture: on, or why not.
    flows: String,
    /// Policy enforcement in the kernel: on, or why not.
    policy: String,
    /// The console's login URL, when it runs.
    console: Option<String>,
    home: &'a Path,
}

fn print_banner(b: &Banner<'_>) -> Result<()> {
    let socket = b.socket.display();
    outln!("Hallmark is up.")?;
    outln!()?;
    outln!("  trust domain   {}", b.td)?;
    outln!(
        "  your identity  {}   (selectors {})",
        b.spiffe_id,
        b.selectors.join(", ")
    )?;
    outln!("  workload API   unix://{socket}")?;
    outln!("  admin socket   {}", b.admin_socket.display())?;
    outln!("  containers     {}", b.containers)?;
    outln!("  flows          {}", b.flows)?;
    outln!("  policy         {}", b.policy)?;
    match &b.console {
        Some(url) => outln!("  console        {url}   (logs in once; keep it secret)")?,
        None => outln!("  console        off (--console-listen ADDR)")?,
    }
    outln!()?;
    outln!("Try it in another terminal:")?;
    outln!("  export SPIFFE_ENDPOINT_SOCKET=unix://{socket}")?;
    outln!("  hallmark svid fetch")?;
    outln!("  hallmark flows list")?;
    outln!()?;
    outln!("Ctrl-C stops it; state is kept in {}.", b.home.display())
}

/// One line about flow capture for the banner.
fn capture_summary(s: &hallmark_agent::capture::CaptureStatus) -> String {
    use hallmark_agent::capture::CaptureState;
    match s.state {
        CaptureState::Running => format!(
            "captured with eBPF ({}{}); see them with `hallmark flows list`",
            s.tcp_attach,
            if s.udp { " + UDP" } else { "" }
        ),
        CaptureState::Off => "not captured (--flows off)".into(),
        CaptureState::Unavailable => format!("not captured: {}", s.reason),
    }
}

/// One line about policy enforcement for the banner.
fn enforcement_summary(s: &hallmark_agent::enforce::EnforceStatus) -> String {
    use hallmark_agent::enforce::EnforceState;
    match s.state {
        EnforceState::Running => format!(
            "enforced in this kernel (--enforcement {}); nothing is denied until `hallmark policy apply -f FILE`",
            s.configured.as_str()
        ),
        EnforceState::Starting => "enforcement starting".into(),
        EnforceState::Off => "not enforced (--enforcement off)".into(),
        EnforceState::Unavailable => format!("not enforced: {}", s.reason),
    }
}

/// Registers the invoking user's entry: `selectors` are its uid and the host
/// selector, so that root processes in containers never get the identity
/// of a user running `hallmark up` as root. An entry an older version made
/// with the uid alone is replaced by one that also requires the host
/// selector (same SPIFFE ID and settings).
async fn register_user(
    admin: &AdminService,
    spiffe_id: &str,
    parent_id: &str,
    selectors: &[String; 2],
) -> Result<()> {
    let [user_selector, _] = selectors;
    let existing = admin
        .list_entries(tonic::Request::new(pb::ListEntriesRequest {
            parent_id: parent_id.to_string(),
            spiffe_id: spiffe_id.to_string(),
            selector: String::new(),
        }))
        .await
        .map_err(admin_error)?
        .into_inner()
        .entries;
    let unpinned: Vec<pb::Entry> = existing
        .into_iter()
        .filter(|e| e.selectors == [user_selector.as_str()])
        .collect();
    if unpinned.is_empty() {
        return create_entry(
            admin,
            pb::CreateEntryRequest {
                spiffe_id: spiffe_id.to_string(),
                parent_id: parent_id.to_string(),
                selectors: selectors.to_vec(),
                ..Default::default()
            },
        )
        .await;
    }
    for old in unpinned {
        // The pinned entry first, then the old one goes: the user's host
        // processes keep their identity throughout.
        create_entry(
            admin,
            pb::CreateEntryRequest {
                spiffe_id: old.spiffe_id.clone(),
                parent_id: old.parent_id.clone(),
                selectors: selectors.to_vec(),
                x509_ttl_secs: old.x509_ttl_secs,
                jwt_ttl_secs: old.jwt_ttl_secs,
                dns_names: old.dns_names.clone(),
                hint: old.hint.clone(),
                admin: old.admin,
                federates_with: old.federates_with.clone(),
                oidc_claims: old.oidc_claims.clone(),
            },
        )
        .await?;
        admin
            .delete_entry(tonic::Request::new(pb::DeleteEntryRequest {
                id: old.id.clone(),
            }))
            .await
            .map_err(admin_error)?;
        info!(
            spiffe_id = %old.spiffe_id,
            old_entry = %old.id,
            selectors = %selectors.join(", "),
            "migrated the user's entry from an older `hallmark up`: it now requires {HOST_SELECTOR}, so processes in containers no longer match it"
        );
    }
    Ok(())
}

/// Creates an entry; one that already exists is fine.
async fn create_entry(admin: &AdminService, req: pb::CreateEntryRequest) -> Result<()> {
    match admin.create_entry(tonic::Request::new(req)).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(admin_error(s)),
    }
}

/// The user who ran `hallmark up` (through sudo: the user behind it).
fn invoking_user() -> (u32, String) {
    let uid = std::env::var("SUDO_UID")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| nix::unistd::getuid().as_raw());
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
        .unwrap_or_else(|| format!("uid-{uid}"));
    (uid, name)
}

pub async fn up(a: UpArgs) -> Result<()> {
    // SIGTERM and Ctrl-C are ours from the start: one that arrives while
    // the server and agent start up still shuts them down in order.
    let shutdown = tokio::spawn(shutdown_signal());
    let inventory = inventory_config(a.inventory, &config::AgentFile::default())?;
    let capture = capture_config(a.capture, &config::AgentFile::default())?;
    let enforcement = enforce_config(a.enforce, &config::AgentFile::default())?;
    let home = a.home.unwrap_or_else(config::default_home);
    let td_name = a
        .trust_domain
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.into());
    let td = config::trust_domain("--trust-domain", &td_name)?;
    let server_dir = home.join("server");
    let server = hallmark_server::start(ServerConfig::new(td.clone(), server_dir.clone()))
        .await
        .context("starting the server")?;
    let admin = server.admin();

    // A token every time: the agent ignores it while it holds a valid SVID
    // from an earlier run, and uses it after a long pause.
    let token = admin
        .generate_token(tonic::Request::new(pb::GenerateTokenRequest {
            node: "local".into(),
            ttl_secs: 600,
        }))
        .await
        .map_err(admin_error)?
        .into_inner();

    let (uid, user) = invoking_user();
    let spiffe_id = format!("spiffe://{td}/user/{user}");
    let selectors = [format!("unix:uid:{uid}"), HOST_SELECTOR.to_string()];
    register_user(&admin, &spiffe_id, &token.agent_spiffe_id, &selectors).await?;

    let agent_dir = home.join("agent");
    let socket = agent_dir.join("workload.sock");
    let mut agent = hallmark_agent::start(AgentConfig {
        trust_domain: td.clone(),
        data_dir: agent_dir,
        servers: vec![server.listen_addr.to_string()],
        socket_path: socket.clone(),
        join_token: Some(token.token),
        trust: ServerTrustSource::Fingerprint(token.ca_fingerprint),
        inventory,
        flows: Default::default(),
        capture,
        enforcement,
    })
    .await
    .context("starting the agent")?;
    tokio::time::timeout(Duration::from_secs(30), agent.ready())
        .await
        .map_err(|_| anyhow!("the agent did not sync with the server within 30s"))?;

    if let Some(addr) = a.health_listen {
        let (srv, ag) = (server.status(), agent.status());
        let (srv2, ag2) = (srv.clone(), ag.clone());
        let ag3 = ag.clone();
        let probe = health::Probe::new(
            move || {
                let (srv, ag) = (srv.clone(), ag.clone());
                Box::pin(async move { ag.ready() && srv.ready().await })
            },
            move || {
                let (srv, ag) = (srv2.clone(), ag2.clone());
                Box::pin(async move {
                    // One exposition: drop the first part's end marker.
                    let server = srv.metrics().await;
                    format!("{}{}", server.trim_end_matches("# EOF\n"), ag.metrics())
                })
            },
        )
        .with_status(move || agent_status_json(&ag3));
        health::serve(config::socket_addr("--health-listen", &addr)?, probe).await?;
    }

    let console = super::console::start(
        &a.console,
        Some(super::console::UP_CONSOLE_LISTEN),
        &server,
        &server_dir,
    )
    .await?;

    // Enforcement starts once the agent has synced: a moment to settle.
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while agent.enforcement.status().state == hallmark_agent::enforce::EnforceState::Starting
        && std::time::Instant::now() < settle
        && !shutdown.is_finished()
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let banner = print_banner(&Banner {
        td: td.to_string(),
        spiffe_id: &spiffe_id,
        selectors: &selectors,
        socket: &socket,
        admin_socket: &server.admin_socket,
        containers: agent.inventory.status().summary(),
        flows: capture_summary(&agent.capture.status()),
        policy: enforcement_summary(&agent.enforcement.status()),
        console: console.as_ref().map(|c| c.console.login_url()),
        home: &home,
    });
    // With stdout gone there is no one to tell that it is up: stop.
    if banner.is_ok() {
        let _ = shutdown.await;
    }
    tracing::info!("shutting down");
    if let Some(c) = console {
        c.stop();
    }
    let _ = tokio::time::timeout(DRAIN_DEADLINE, async {
        agent.shutdown().await;
        server.shutdown().await;
    })
    .await;
    banner
}
