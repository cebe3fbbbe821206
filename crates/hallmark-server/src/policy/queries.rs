//! `ListGroups`, `GroupMembers` and `CheckPolicy`: the groups and live
//! decisions of the policy in force, over the inventory as the datastore
//! holds it when asked (see [`Listing`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use hallmark_core::time::unix_millis;
use hallmark_core::SpiffeId;
use hallmark_flows::{Endpoint, Lookup};
use hallmark_policy::{Attributes, DecidedBy, GroupSet, Outcome, Policy, PolicyDocument, Protocol};
use tonic::Status;

use super::api_queries::{
    CheckAnswer, CheckEnd, CheckRequest, GroupMembersRequest, GroupSummary, Member,
};
use super::membership::{Listing, MemberKey};
use super::CurrentPolicy;
use crate::flows::describe::workload_endpoint;
use crate::inventory::{pick_workload, validate_container_prefix};
use crate::Shared;

pub(crate) fn parse<T: serde::de::DeserializeOwned>(rpc: &str, json: &str) -> Result<T, Status> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| Status::invalid_argument(format!("{rpc} request: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string(v).map_err(|e| Status::internal(format!("encoding the answer: {e}")))
}

pub(crate) fn store_status(e: hallmark_store::StoreError) -> Status {
    tracing::error!(error = %e, "datastore error");
    Status::internal(format!("datastore: {e}"))
}

/// The document of the policy in force (revision 0: the empty one).
pub(crate) fn document_of(current: &CurrentPolicy) -> Result<PolicyDocument, Status> {
    if current.document.trim().is_empty() {
        return Ok(PolicyDocument::default());
    }
    hallmark_policy::parse("policy", &current.document)
        .map(|p| p.document)
        .map_err(|e| {
            Status::internal(format!(
                "the policy in force (revision {}) no longer parses: {}",
                current.revision,
                e.errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ))
        })
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// `ListGroups`.
pub(crate) async fn list_groups(shared: &Shared, json: &str) -> Result<String, Status> {
    let _: serde_json::Value = parse("ListGroups", json)?;
    let current = shared.policy.current();
    let doc = document_of(&current)?;
    let listing = Listing::load(shared).await.map_err(store_status)?;
    let index = listing.index(Arc::new(current.policy.clone()));
    let out: Vec<GroupSummary> = index
        .counts()
        .into_iter()
        .map(|(name, members)| {
            let blocks = doc
                .groups
                .iter()
                .find(|g| g.name == name)
                .map(|g| GroupSummary::blocks_of(&g.blocks))
                .unwrap_or_default();
            let rules = doc
                .rules
                .iter()
                .filter(|r| r.from.contains(&name) || r.to.contains(&name))
                .map(|r| r.name.clone())
                .collect();
            GroupSummary {
                name,
                members,
                blocks,
                rules,
            }
        })
        .collect();
    to_json(&out)
}

/// `GroupMembers`.
pub(crate) async fn group_members(shared: &Shared, json: &str) -> Result<String, Status> {
    let r: GroupMembersRequest = parse("GroupMembers", json)?;
    let current = shared.policy.current();
    if current.policy.group_id(&r.group).is_none() {
        return Err(Status::not_found(format!(
            "group `{}` is not defined in policy revision {}; `hallmark group list` shows the groups",
            r.group, current.revision
        )));
    }
    let listing = Listing::load(shared).await.map_err(store_status)?;
    let index = listing.index(Arc::new(current.policy.clone()));
    let out: Vec<&Member> = index
        .members(&r.group)
        .into_iter()
        .filter_map(|(k, _)| listing.members.get(k).map(|(m, _)| m))
        .collect();
    to_json(&out)
}

/// One end of a check: the endpoints it stands for.
struct Resolved {
    end: CheckEnd,
    /// Each distinct group set among the endpoints considered.
    sets: Vec<GroupSet>,
}

/// `CheckPolicy`.
pub(crate) async fn check_policy(shared: &Shared, json: &str) -> Result<String, Status> {
    let r: CheckRequest = parse("CheckPolicy", json)?;
    let port = match u16::try_from(r.port) {
        Ok(p) if p != 0 => p,
        _ => {
            return Err(Status::invalid_argument(format!(
                "port {}: must be 1 to 65535 (the accepting side's port)",
                r.port
            )))
        }
    };
    let protocol = match r.protocol.as_deref().unwrap_or("tcp") {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(Status::invalid_argument(format!(
                "protocol `{other}`: must be tcp or udp"
            )))
        }
    };
    let at_ms = r.at_ms.unwrap_or_else(now_ms);
    let current = shared.policy.current();
    let policy = &current.policy;
    let listing = Listing::load(shared).await.map_err(store_status)?;
    // "Now" may be past what the agents' evidence has reached yet; the
    // inventory then says who holds an address.
    let now = r.at_ms.is_none();
    let from = resolve(shared, &listing, policy, ("from", &r.from), at_ms, now).await?;
    let to = resolve(shared, &listing, policy, ("to", &r.to), at_ms, now).await?;

    // The most restrictive verdict over every pair of group sets.
    let mut verdict = None;
    for f in &from.sets {
        for t in &to.sets {
            let v = policy.decide(f, t, protocol, port);
            if verdict.as_ref().is_none_or(|w: &hallmark_policy::Verdict| {
                severity(v.outcome) > severity(w.outcome)
            }) {
                verdict = Some(v);
            }
        }
    }
    let verdict = verdict.unwrap_or_else(hallmark_policy::Verdict::no_decision);
    let (decided_by, mode, action) = match &verdict.decided_by {
        DecidedBy::Rule { mode, action, .. } => ("rule", Some(*mode), Some(*action)),
        DecidedBy::Default { action } => ("default", None, Some(*action)),
        DecidedBy::Nothing => ("nothing", None, None),
    };
    to_json(&CheckAnswer {
        allowed: verdict.outcome != Outcome::Denied,
        verdict: verdict.outcome,
        rule: verdict.rule().map(str::to_string),
        mode,
        action,
        decided_by: decided_by.into(),
        policy_revision: current.revision,
        protocol: match protocol {
            Protocol::Tcp => "tcp".into(),
            Protocol::Udp => "udp".into(),
        },
        port,
        at_ms,
        from: from.end,
        to: to.end,
    })
}

/// Denied > would-deny > allowed.
fn severity(o: Outcome) -> u8 {
    match o {
        Outcome::Denied => 3,
        Outcome::WouldDeny => 2,
        Outcome::Allowed => 1,
        Outcome::NoDecision => 0,
    }
}

async fn resolve(
    shared: &Shared,
    listing: &Listing,
    policy: &Policy,
    (field, input): (&str, &str),
    at_ms: i64,
    now: bool,
) -> Result<Resolved, Status> {
    let input = input.trim();
    let mut endpoints: Vec<(Member, Attributes)> = Vec::new();
    let (kind, resolution, bare);
    if input.starts_with("spiffe://") {
        let id = SpiffeId::new(input).map_err(|e| {
            Status::invalid_argument(format!(
                "{field} `{input}` is not a SPIFFE ID: {e}; give a SPIFFE ID (spiffe://trust-domain/path), a workload ID or an IP address"
            ))
        })?;
        let id = id.to_string();
        for (m, a) in listing.members.values() {
            if a.spiffe_ids.contains(&id) {
                endpoints.push((m.clone(), a.clone()));
            }
        }
        kind = "spiffe-id";
        resolution = None;
        // Held by no running workload: a design checked before deploying
        // it, so only what a bare ID can satisfy matches.
        bare = endpoints.is_empty().then(|| Attributes::spiffe_id(&id));
    } else if let Ok(ip) = input.parse::<IpAddr>() {
        let (mut found, mut how) = by_address(shared, ip, at_ms).await?;
        if found.is_none() && now {
            if let Some((m, a)) = held_now(listing, ip) {
                how = format!("held now by {} (the inventory; the ownership evidence does not reach this instant yet)", super::membership::describe(&m));
                found = Some((m, a));
            }
        }
        match found {
            Some((m, a)) => {
                kind = match m {
                    Member::Workload { .. } => "workload",
                    Member::Node { .. } => "node",
                };
                endpoints.push((m, a));
                bare = None;
            }
            None => {
                kind = "address";
                bare = Some(Attributes::address(ip));
            }
        }
        resolution = Some(how);
    } else {
        validate_container_prefix(input).map_err(|e| {
            Status::invalid_argument(format!(
                "{field}: {e}; give a SPIFFE ID (spiffe://…), a workload ID or an IP address"
            ))
        })?;
        let found = shared
            .store
            .find_workloads_by_prefix(input, now_ms(), shared.workload_retention)
            .await
            .map_err(store_status)?;
        // Only running workloads are decided for: a stopped one takes part
        // in no flow.
        let found: Vec<_> = found
            .into_iter()
            .filter(|w| w.stopped_at_ms.is_none())
            .collect();
        let (chosen, _) = pick_workload(input, found).map_err(|e| {
            Status::invalid_argument(format!(
                "{field}: {e} (among running workloads; `hallmark workloads list` shows them)"
            ))
        })?;
        let key = MemberKey::Workload {
            context: chosen.context_name.clone(),
            node: chosen.agent_id.agent_node().unwrap_or_default().to_string(),
            container_id: chosen.workload.container_id.clone(),
        };
        // Every agent reporting that container: the same workload.
        for (k, (m, a)) in &listing.members {
            let same = matches!((k, &key),
                (MemberKey::Workload { container_id: c, .. }, MemberKey::Workload { container_id: want, .. }) if c == want);
            if same {
                endpoints.push((m.clone(), a.clone()));
            }
        }
        if endpoints.is_empty() {
            let node = chosen.agent_id.agent_node().unwrap_or_default();
            let we = workload_endpoint(&chosen.context_name, node, &chosen.workload);
            let mut a = hallmark_flows::policy::attributes(
                &Endpoint::Workload(we.clone()),
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            )
            .unwrap_or_default();
            a.addr = chosen.workload.ips.iter().find_map(|ip| ip.parse().ok());
            endpoints.push((Member::workload(&we, chosen.workload.ips.clone()), a));
        }
        kind = "workload";
        resolution = None;
        bare = None;
    }

    let mut sets: Vec<GroupSet> = Vec::new();
    let mut spiffe_ids = BTreeSet::new();
    let all: Vec<&Attributes> = endpoints
        .iter()
        .map(|(_, a)| a)
        .chain(bare.as_ref())
        .collect();
    for a in all {
        spiffe_ids.extend(a.spiffe_ids.iter().cloned());
        let set = policy.groups_of(a);
        if !sets.contains(&set) {
            sets.push(set);
        }
    }
    let mut union = GroupSet::default();
    for s in &sets {
        union.union_with(s);
    }
    Ok(Resolved {
        end: CheckEnd {
            input: input.to_string(),
            kind: kind.into(),
            spiffe_ids: spiffe_ids.into_iter().collect(),
            groups: policy.names_in(&union).map(str::to_string).collect(),
            workloads: endpoints.into_iter().map(|(m, _)| m).collect(),
            resolution,
        },
        sets,
    })
}

/// The one running workload the inventory lists with `ip`, if exactly one
/// does (host-network workloads share their node's address: none then).
fn held_now(listing: &Listing, ip: IpAddr) -> Option<(Member, Attributes)> {
    let text = ip.to_string();
    let mut holders = listing
        .members
        .values()
        .filter(|(m, _)| matches!(m, Member::Workload { ips, .. } if ips.contains(&text)));
    let first = holders.next()?;
    if holders.next().is_some() {
        return None;
    }
    let (m, mut a) = first.clone();
    a.addr = Some(ip);
    Some((m, a))
}

/// Who held `ip` at `at_ms` by the ownership index, as flows are
/// attributed; `None` (an address alone) when nobody is proven to.
async fn by_address(
    shared: &Shared,
    ip: IpAddr,
    at_ms: i64,
) -> Result<(Option<(Member, Attributes)>, String), Status> {
    let (lookup, owner) = {
        let a = shared
            .flows
            .attributor
            .lock()
            .map_err(|_| Status::unavailable("the flow engine is unavailable"))?;
        let index = a.index();
        let lookup = index.lookup(ip, None, at_ms);
        let owner = match &lookup {
            Lookup::Owned(p) => index.owners().get(p.owner).cloned(),
            _ => None,
        };
        (lookup, owner)
    };
    let how = match &lookup {
        Lookup::Owned(_) => "owned",
        Lookup::Ambiguous(..) => {
            "ambiguous: two owners are proven near that instant; decided as the address alone"
        }
        Lookup::NoOwner => "no owner at that instant; decided as the address alone",
        Lookup::Pending => {
            "the evidence does not reach that instant yet; decided as the address alone"
        }
        Lookup::Unknown => "no agent reported this address; decided as the address alone",
    };
    let Some(owner) = owner else {
        return Ok((None, how.to_string()));
    };
    let end = shared.flow_queries.describer.owner(&owner, now_ms()).await;
    let Some(a) = hallmark_flows::policy::attributes(&end, ip) else {
        return Ok((None, how.to_string()));
    };
    let member = match &end {
        Endpoint::Workload(w) => {
            let ips = if a.addr.is_some() {
                vec![ip.to_string()]
            } else {
                Vec::new()
            };
            Member::workload(w, ips)
        }
        Endpoint::Node {
            context,
            node,
            spiffe_id,
            ..
        } => Member::Node {
            context: context.clone(),
            node: node.clone(),
            spiffe_id: spiffe_id.clone(),
        },
        _ => return Ok((None, how.to_string())),
    };
    Ok((Some((member, a)), format!("owned at that instant by {end}")))
}

#[cfg(test)]
#[path = "queries_tests.rs"]
mod tests;
