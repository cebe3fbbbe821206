//! Following the other servers on a shared datastore (PostgreSQL): their
//! entry changes, policy revisions, the enforcement switch, authority
//! rotations and agent evictions take effect here too.

use std::sync::Arc;
use std::time::Duration;

use hallmark_core::SpiffeId;
use tokio::sync::watch;

use crate::Shared;

/// How often a server on a shared datastore looks for entry changes made
/// by the other servers when the datastore cannot announce them: the floor
/// of cross-server propagation latency, for one tiny query per period.
const DATASTORE_POLL: Duration = Duration::from_millis(50);
/// The same when changes are announced (PostgreSQL NOTIFY): the poll only
/// covers notifications lost while the listening connection was down.
const DATASTORE_POLL_NOTIFIED: Duration = Duration::from_secs(1);
/// How often it reloads the signing authorities others may have rotated.
const AUTHORITY_POLL: Duration = Duration::from_secs(1);
/// How often it checks its connected agents against evictions and bans
/// made through other servers (its own close streams at once).
const AGENT_POLL: Duration = Duration::from_secs(5);

/// Follows changes other servers sharing the datastore make: entry changes
/// wake this server's agent streams (they re-read their entries), authority
/// changes swap the signing keys and bundle, and agents evicted elsewhere
/// lose their streams here too.
pub(crate) async fn follow_datastore(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut notes = shared.store.change_notifications();
    let mut last = shared.store.revision().await.ok();
    // A revision applied elsewhere between loading the policy at start and
    // reading `last` would otherwise wait for the next change.
    crate::policy::versions::follow_latest(&shared).await;
    crate::policy::enforcement::follow(&shared).await;
    let mut failing = false;
    let mut next_authorities = tokio::time::Instant::now() + AUTHORITY_POLL;
    let mut next_agents = tokio::time::Instant::now() + AGENT_POLL;
    loop {
        let period = if notes.is_some() {
            DATASTORE_POLL_NOTIFIED
        } else {
            DATASTORE_POLL
        };
        let deadline = (tokio::time::Instant::now() + period)
            .min(next_authorities)
            .min(next_agents);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            r = async {
                match notes.as_mut() {
                    Some(n) => n.changed().await,
                    None => std::future::pending().await,
                }
            } => if r.is_err() { notes = None },
            _ = shutdown.changed() => return,
        }
        match shared.store.revision().await {
            Ok(rev) => {
                if failing {
                    tracing::info!("datastore reachable again");
                    failing = false;
                }
                if last != Some(rev) {
                    last = Some(rev);
                    shared.entries_changed.send_modify(|v| *v += 1);
                    // Policy applies and the enforcement switch move the
                    // datastore revision too.
                    crate::policy::versions::follow_latest(&shared).await;
                    crate::policy::enforcement::follow(&shared).await;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "reading the datastore revision failed; retrying");
                    failing = true;
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= next_authorities {
            next_authorities = now + AUTHORITY_POLL;
            reload_authorities(&shared).await;
        }
        if now >= next_agents {
            next_agents = now + AGENT_POLL;
            end_revoked_streams(&shared).await;
        }
    }
}

/// Picks up authorities another server prepared, activated, retired or
/// tainted; agents' streams follow through the bundle watch.
async fn reload_authorities(shared: &Shared) {
    match shared.ca.reload().await {
        Ok(true) => tracing::info!("signing authorities changed in the datastore; reloaded"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "reloading the signing authorities failed; keeping the current ones")
        }
    }
}

/// Ends the streams of connected agents that another server evicted or
/// banned.
async fn end_revoked_streams(shared: &Shared) {
    let connected = shared.connected.ids();
    if connected.is_empty() {
        return;
    }
    let Ok(agents) = shared.store.list_agents().await else {
        return;
    };
    let allowed: std::collections::HashSet<&SpiffeId> = agents
        .iter()
        .filter(|a| !a.banned)
        .map(|a| &a.spiffe_id)
        .collect();
    for id in connected {
        if !allowed.contains(&id) {
            tracing::info!(agent = %id, "agent evicted or banned through another server; ending its stream");
            let _ = shared.revoked.send(id);
        }
    }
}
