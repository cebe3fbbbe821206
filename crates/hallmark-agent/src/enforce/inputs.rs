//! What the kernel tables are built from: the enforced local workloads
//! (cgroup id and attributes), the peer addresses with their groups, and
//! the DNS exemptions. Pure functions over the inventory and the policy,
//! so a change is noticed by comparing two [`Inputs`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hallmark_bpf::{Direction, Exempt, Protocol};
use hallmark_core::{Workload, WorkloadState};
use hallmark_policy::{Attributes, GroupSet, Policy};

use crate::authorize::workload_attributes;
use crate::policy::AgentPolicy;

/// The DNS port, exempt towards the node's resolvers.
pub const DNS_PORT: u16 = 53;

/// One enforced local workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The cgroup2 inode of the workload's cgroup (the id BPF sees).
    pub cgroup_id: u64,
    pub container_id: String,
    /// As policy sees the workload (as `authorize` describes a caller,
    /// with the workload's first IP).
    pub attributes: Attributes,
}

/// Everything one policy image is compiled from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inputs {
    pub locals: Vec<Local>,
    /// Peer addresses and the groups (by name) of the endpoint holding
    /// each: this node's workloads, and what the server sends.
    pub peers: Vec<(IpAddr, Vec<String>)>,
    pub exempt: Vec<Exempt>,
}

/// The cgroup id of a cgroup path (relative to the cgroup2 mount `root`,
/// as the runtime reports it), when the directory exists.
pub fn cgroup_id(root: &Path, cgroup: &str) -> Option<u64> {
    let rel = cgroup.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|p| p == "..") {
        return None;
    }
    std::fs::metadata(root.join(rel)).ok().map(|m| m.ino())
}

/// The enforced workloads: running, with at least one SPIFFE ID, with a
/// cgroup this kernel has, and not the agent's own cgroup. `cgroup_of`
/// maps a cgroup path to its id (the filesystem, or a table in tests).
pub fn locals(
    workloads: &[Workload],
    context: &str,
    node: &str,
    own_cgroup: Option<u64>,
    cgroup_of: &dyn Fn(&str) -> Option<u64>,
) -> Vec<Local> {
    let mut out: Vec<Local> = workloads
        .iter()
        .filter(|w| w.state == WorkloadState::Running && !w.spiffe_ids.is_empty())
        .filter_map(|w| {
            let id = cgroup_of(&w.cgroup)?;
            if Some(id) == own_cgroup {
                return None;
            }
            let mut attributes = workload_attributes(
                context,
                node,
                w.selectors.clone(),
                Some(w),
                w.spiffe_ids.clone(),
            );
            attributes.addr = w.ips.iter().find_map(|ip| ip.parse().ok());
            Some(Local {
                cgroup_id: id,
                container_id: w.container_id.clone(),
                attributes,
            })
        })
        .collect();
    out.sort_by_key(|l| l.cgroup_id);
    out.dedup_by_key(|l| l.cgroup_id);
    out
}

/// Peer entries: every IP of the running local workloads with their
/// groups (this node knows its own workloads first-hand), then the
/// server's entries for the other addresses. An address a local workload
/// gave up a moment ago (`released`) is left out of the server's entries:
/// until the server has heard of the stop, its entry may still describe
/// the previous holder, and a new holder must never inherit that
/// holder's permissions. Left out, the address is "unknown" and the
/// policy's default decides for it.
pub fn peers(
    policy: &Policy,
    workloads: &[Workload],
    context: &str,
    node: &str,
    server: &[(IpAddr, Vec<String>)],
    released: &BTreeSet<IpAddr>,
) -> Vec<(IpAddr, Vec<String>)> {
    let mut out: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for w in workloads
        .iter()
        .filter(|w| w.state == WorkloadState::Running)
    {
        for ip in w.ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
            let mut a = workload_attributes(
                context,
                node,
                w.selectors.clone(),
                Some(w),
                w.spiffe_ids.clone(),
            );
            a.addr = Some(ip);
            let set = policy.groups_of(&a);
            out.insert(ip, policy.names_in(&set).map(str::to_string).collect());
        }
    }
    for (ip, groups) in server {
        if !released.contains(ip) {
            out.entry(*ip).or_insert_with(|| groups.clone());
        }
    }
    out.into_iter().collect()
}

/// The addresses running local workloads hold now.
pub fn held_locally(workloads: &[Workload]) -> BTreeSet<IpAddr> {
    workloads
        .iter()
        .filter(|w| w.state == WorkloadState::Running)
        .flat_map(|w| w.ips.iter().filter_map(|ip| ip.parse().ok()))
        .collect()
}

/// A peer's group set: the groups named for it, and those its address
/// alone matches (`cidr` groups, `any`).
pub fn peer_set(policy: &Policy, ip: IpAddr, groups: &[String]) -> GroupSet {
    let mut set = policy.set_of(groups.iter().map(String::as_str));
    set.union_with(&policy.groups_of(&Attributes::address(ip)));
    set
}

/// The nameservers of a resolv.conf text.
pub fn resolvers(resolv_conf: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // `fe80::1%eth0`: the zone is not part of the address.
        if let Some(ip) = words
            .next()
            .and_then(|w| w.split('%').next())
            .and_then(|w| w.parse().ok())
        {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// Exemptions for DNS (port 53, UDP and TCP, outgoing) to `resolvers`,
/// unless a rule of the policy names port 53 (`names_dns`): then the
/// policy decides.
pub fn dns_exempt(names_dns: bool, resolvers: &[IpAddr]) -> Vec<Exempt> {
    if names_dns {
        return Vec::new();
    }
    let mut out = Vec::new();
    for ip in resolvers {
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            out.push(Exempt {
                addr: *ip,
                port: DNS_PORT,
                protocol,
                direction: Direction::Egress,
            });
        }
    }
    out
}

/// The inputs for `state` over `workloads`; `released`: addresses local
/// workloads gave up a moment ago (see [`peers`]).
#[allow(clippy::too_many_arguments)]
pub fn gather(
    state: &AgentPolicy,
    workloads: &[Workload],
    context: &str,
    node: &str,
    own_cgroup: Option<u64>,
    cgroup_of: &dyn Fn(&str) -> Option<u64>,
    resolv: &[IpAddr],
    released: &BTreeSet<IpAddr>,
) -> Inputs {
    let locals = locals(workloads, context, node, own_cgroup, cgroup_of);
    let peers = peers(
        &state.policy,
        workloads,
        context,
        node,
        &state.peer_addresses,
        released,
    );
    Inputs {
        exempt: dns_exempt(state.names_dns, resolv),
        locals,
        peers,
    }
}
