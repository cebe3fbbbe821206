//! Group membership that follows workloads: every current workload and
//! every agent node, with the attributes policy sees of them, in a
//! [`Membership`] under the policy in force.
//!
//! Endpoints are described exactly as flow ends are (one
//! `workload_endpoint` and one [`hallmark_flows::policy::attributes`]), so
//! a workload is in the same groups whether policy asks about it by name or
//! about one of its flows.
//!
//! One task keeps the server's index current. It re-reads the inventory
//! right after this server stores an inventory report (so a started
//! container is a member, and a stopped one gone, as soon as its agent
//! says so), when the policy or the entries change, and every
//! [`REBUILD_PERIOD`] (so reports stored by other servers sharing the
//! datastore are seen too). After each pass it publishes the identity ->
//! groups map of workload identities for agents and the peer map (see
//! [`super::peers`]), each when it changed, and the member counts. It also
//! wakes when the peer map would change by the passing of time alone (a
//! stopped owner's address leaves the clock skew).
//!
//! The admin queries (`group list`, `group members`, `policy check`) do not
//! read that index: they build a [`Listing`] from the datastore as it is
//! when asked, so every server answers alike.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hallmark_core::time::unix_millis;
use hallmark_flows::{Endpoint, WorkloadEndpoint};
use hallmark_policy::{Attributes, Membership, Policy};
use hallmark_store::{StateFilter, StoreError, WorkloadFilter};
use serde::Serialize;
use tokio::sync::{watch, Notify};

use super::peers::MAX_PEER_ADDRESSES;
use super::IdentityGroups;
use crate::flows::describe::workload_endpoint;
use crate::Shared;

/// How often the index is rebuilt from the datastore even when nothing
/// on this server said it changed.
pub const REBUILD_PERIOD: Duration = Duration::from_secs(2);

/// Which endpoint: a workload as one agent reports it, or a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberKey {
    Workload {
        context: String,
        node: String,
        container_id: String,
    },
    Node {
        context: String,
        node: String,
    },
}

/// An endpoint as `group members` and `policy check` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Member {
    Workload {
        context: String,
        node: String,
        container_id: String,
        name: String,
        image: String,
        namespace: String,
        labels: BTreeMap<String, String>,
        spiffe_ids: Vec<String>,
        selectors: Vec<String>,
        ips: Vec<String>,
    },
    Node {
        context: String,
        node: String,
        spiffe_id: String,
    },
}

impl Member {
    /// A workload flow end (as the flow pipeline describes it), with its
    /// addresses.
    pub fn workload(w: &WorkloadEndpoint, ips: Vec<String>) -> Self {
        Member::Workload {
            context: w.context.clone(),
            node: w.node.clone(),
            container_id: w.container_id.clone(),
            name: w.name.clone(),
            image: w.image.clone(),
            namespace: w.namespace.clone(),
            labels: w.labels.clone(),
            spiffe_ids: w.spiffe_ids.clone(),
            selectors: w.selectors.clone(),
            ips,
        }
    }
}

/// A member in a few words: `web (3f2a1b0c9d8e on prod/n1)`.
pub fn describe(m: &Member) -> String {
    match m {
        Member::Workload {
            context,
            node,
            container_id,
            name,
            ..
        } => {
            let short = container_id.get(..12).unwrap_or(container_id);
            if name.is_empty() {
                format!("{short} on {context}/{node}")
            } else {
                format!("{name} ({short} on {context}/{node})")
            }
        }
        Member::Node { context, node, .. } => format!("node {context}/{node}"),
    }
}

/// Every endpoint policy knows now, as read from the datastore.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub members: BTreeMap<MemberKey, (Member, Attributes)>,
}

impl Listing {
    /// Reads the current workloads and the agents' nodes.
    pub(crate) async fn load(shared: &Shared) -> Result<Listing, StoreError> {
        let now = unix_millis(SystemTime::now());
        let filter = WorkloadFilter {
            state: Some(StateFilter::Current),
            ..WorkloadFilter::default()
        };
        let workloads = shared
            .store
            .list_workloads(&filter, now, shared.workload_retention)
            .await?;
        let mut members = BTreeMap::new();
        for w in &workloads {
            let Some(node) = w.agent_id.agent_node() else {
                continue;
            };
            let we = workload_endpoint(&w.context_name, node, &w.workload);
            let addr = w
                .workload
                .ips
                .iter()
                .find_map(|ip| ip.parse::<IpAddr>().ok());
            let Some(mut attributes) = hallmark_flows::policy::attributes(
                &Endpoint::Workload(we.clone()),
                addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ) else {
                continue;
            };
            attributes.addr = addr;
            let key = MemberKey::Workload {
                context: we.context.clone(),
                node: we.node.clone(),
                container_id: we.container_id.clone(),
            };
            let member = Member::workload(&we, w.workload.ips.clone());
            members.insert(key, (member, attributes));
        }

        let contexts: BTreeMap<_, _> = shared
            .store
            .list_agent_inventories()
            .await?
            .into_iter()
            .map(|i| (i.agent_id, i.context_name))
            .collect();
        for agent in shared.store.list_agents().await? {
            let Some(node) = agent.spiffe_id.agent_node() else {
                continue;
            };
            if agent.banned {
                continue;
            }
            let context = contexts.get(&agent.spiffe_id).cloned().unwrap_or_default();
            let end = Endpoint::Node {
                context: context.clone(),
                node: node.to_string(),
                spiffe_id: agent.spiffe_id.to_string(),
                unit: String::new(),
            };
            let Some(mut attributes) =
                hallmark_flows::policy::attributes(&end, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            else {
                continue;
            };
            // A node has many addresses; none of them is the node's.
            attributes.addr = None;
            let key = MemberKey::Node {
                context: context.clone(),
                node: node.to_string(),
            };
            let member = Member::Node {
                context,
                node: node.to_string(),
                spiffe_id: agent.spiffe_id.to_string(),
            };
            members.insert(key, (member, attributes));
        }
        Ok(Listing { members })
    }

    /// The listing's endpoints in a membership index under `policy`.
    pub fn index(&self, policy: Arc<Policy>) -> Membership<MemberKey> {
        let mut m = Membership::new(policy);
        for (key, (_, a)) in &self.members {
            m.upsert(key.clone(), a.clone());
        }
        m
    }
}

/// Wakes the membership task.
#[derive(Debug, Default)]
pub struct MembershipTracker {
    refresh: Notify,
}

impl MembershipTracker {
    /// Something the groups depend on was stored: re-read it now.
    pub fn changed(&self) {
        self.refresh.notify_one();
    }
}

/// Keeps the server's membership index, the identity groups agents get and
/// the member gauges current, until shutdown.
pub(crate) async fn membership_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut policy_rx = shared.policy.subscribe();
    let mut entries_rx = shared.entries_changed.subscribe();
    let mut tick = tokio::time::interval(REBUILD_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let current = shared.policy.current();
    let mut revision = current.revision;
    let mut index: Membership<MemberKey> = Membership::new(Arc::new(current.policy.clone()));
    let mut gauged: Vec<String> = Vec::new();
    // The channel starts with no identities: nothing to publish until some
    // identity is in a group.
    let mut published: Option<BTreeMap<String, Vec<String>>> = Some(BTreeMap::new());
    let mut peers_published = PeersPublished::default();
    let mut wake_at: Option<tokio::time::Instant> = None;
    loop {
        let wake = async move {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            () = shared.membership.refresh.notified() => {}
            r = policy_rx.changed() => if r.is_err() { return },
            r = entries_rx.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
            () = wake => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let current = shared.policy.current();
        if current.revision != revision {
            revision = current.revision;
            index.set_policy(Arc::new(current.policy.clone()));
        }
        let listing = match Listing::load(&shared).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "reading the inventory for group membership failed; keeping the last membership");
                continue;
            }
        };
        apply(&mut index, &listing);
        publish(&shared, &index, revision, &mut published);
        gauged = gauge(&shared, &index, gauged);
        wake_at = publish_peers(&shared, &listing, &current, &mut peers_published);
    }
}

/// What the last peer map publication held, to publish only changes and
/// log a cut once.
#[derive(Default)]
struct PeersPublished {
    addresses: BTreeMap<IpAddr, Vec<String>>,
    cut: usize,
}

/// Computes the peer map and publishes it when it changed. Returns when
/// to look again without news (before the next tick), if ever.
fn publish_peers(
    shared: &Shared,
    listing: &Listing,
    current: &super::CurrentPolicy,
    published: &mut PeersPublished,
) -> Option<tokio::time::Instant> {
    let now = unix_millis(SystemTime::now());
    let pass = super::peers::compute(shared, listing, &current.policy, current.revision, now);
    if pass.cut != published.cut {
        if pass.cut > 0 {
            tracing::warn!(
                cut = pass.cut,
                "the peer map holds at most {MAX_PEER_ADDRESSES} addresses; {} addresses held by one owner are left out (the highest), and agents decide for them as addresses alone",
                pass.cut
            );
        }
        published.cut = pass.cut;
    }
    shared
        .metrics
        .policy_peer_addresses_cut
        .set(i64::try_from(pass.cut).unwrap_or(i64::MAX));
    if pass.peers.addresses != published.addresses {
        published.addresses = pass.peers.addresses.clone();
        shared
            .metrics
            .policy_peer_addresses
            .set(i64::try_from(pass.peers.addresses.len()).unwrap_or(i64::MAX));
        shared.peer_addresses.send_replace(Arc::new(pass.peers));
    }
    let wait_ms = pass.next_change_ms?.saturating_sub(now).max(1);
    let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(u64::MAX));
    (wait < REBUILD_PERIOD).then(|| tokio::time::Instant::now() + wait)
}

/// Brings `index` to what `listing` holds: one upsert per endpoint (free
/// when unchanged), one removal per endpoint gone.
pub(crate) fn apply(index: &mut Membership<MemberKey>, listing: &Listing) {
    let gone: Vec<MemberKey> = index
        .keys()
        .filter(|k| !listing.members.contains_key(*k))
        .cloned()
        .collect();
    for k in &gone {
        index.remove(k);
    }
    for (key, (_, a)) in &listing.members {
        index.upsert(key.clone(), a.clone());
    }
}

/// Publishes what each workload identity is, when that changed since the
/// last publication. Agents' own IDs are left out: they authenticate an
/// agent to the server and are never a workload's peer identity, and
/// listing every agent to every agent would make each attestation an
/// update for the whole fleet. A revision that leaves every identity in
/// the same groups is not news to agents either.
fn publish(
    shared: &Shared,
    index: &Membership<MemberKey>,
    revision: i64,
    published: &mut Option<BTreeMap<String, Vec<String>>>,
) {
    let mut groups = index.identities();
    groups.retain(|id, _| {
        hallmark_core::SpiffeId::new(id).map_or(true, |id| id.agent_node().is_none())
    });
    if published.as_ref() == Some(&groups) {
        return;
    }
    *published = Some(groups.clone());
    shared
        .identity_groups
        .send_replace(Arc::new(IdentityGroups { revision, groups }));
}

/// Sets the member gauge of every group; groups that were gauged before
/// and are no longer defined read 0. Returns the groups gauged now.
fn gauge(shared: &Shared, index: &Membership<MemberKey>, before: Vec<String>) -> Vec<String> {
    let counts = index.counts();
    for name in before {
        if !counts.iter().any(|(n, _)| *n == name) {
            shared.metrics.set_policy_group_members(&name, 0);
        }
    }
    for (name, n) in &counts {
        shared.metrics.set_policy_group_members(name, *n);
    }
    counts.into_iter().map(|(n, _)| n).collect()
}
