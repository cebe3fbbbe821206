//! Ownership heartbeats: every interval, the addresses the node's running
//! workloads hold and the node's own addresses, at agent time.
//!
//! While the container runtime is not followed (missing, or not
//! answering), workload addresses are left out: the inventory may be out
//! of date, and only the node's own addresses are sure.
//!
//! A heartbeat is evidence that an owner held an address *at that moment*;
//! sent late it would prove ownership at the wrong time. So a heartbeat
//! that cannot be delivered is dropped (and counted), never queued; the
//! next one says what holds then.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hallmark_core::time::unix_millis;
use hallmark_core::{Workload, WorkloadState};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_client::NodeClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::{lock, PortClaim, Shared};
use crate::inventory::Inventory;

/// A heartbeat call never waits longer than this (nor than the interval:
/// by then the next heartbeat is due and says more).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The heartbeat task.
pub(super) async fn run(
    shared: Arc<Shared>,
    every: Duration,
    inventory: Inventory,
    interfaces: fn() -> std::io::Result<Vec<IpAddr>>,
    client: watch::Receiver<Option<NodeClient<Channel>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    // A late tick is not made up for: one heartbeat says what holds now.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let result = beat(&shared, every, &inventory, interfaces, &client).await;
        match result {
            Ok(n) => {
                if failing {
                    tracing::info!("ownership heartbeats reach the server again");
                }
                failing = false;
                shared.metrics.heartbeats_sent.inc();
                let mut hb = lock(&shared.heartbeat);
                hb.last_ok_ms = unix_millis(SystemTime::now());
                hb.last_addresses = n;
                hb.last_error.clear();
            }
            Err(e) => {
                shared.metrics.heartbeats_failed.inc();
                if !failing {
                    tracing::warn!(error = %e, "ownership heartbeat not delivered; skipped until the server answers again");
                }
                failing = true;
                lock(&shared.heartbeat).last_error = e;
            }
        }
    }
}

/// Builds and sends one heartbeat; the number of addresses it asserted.
async fn beat(
    shared: &Shared,
    every: Duration,
    inventory: &Inventory,
    interfaces: fn() -> std::io::Result<Vec<IpAddr>>,
    client: &watch::Receiver<Option<NodeClient<Channel>>>,
) -> Result<usize, String> {
    let Some(mut node) = client.borrow().clone() else {
        return Err("no connection to the server".into());
    };
    let node_ips = match interfaces() {
        Ok(ips) => ips,
        Err(e) => {
            // The workloads' addresses are still worth asserting.
            tracing::debug!(error = %e, "reading the node's interface addresses failed");
            Vec::new()
        }
    };
    let at_ms = unix_millis(SystemTime::now());
    // While the runtime is not followed, the records may name containers
    // that have stopped since: asserting their addresses would be false
    // evidence. The node's own addresses are still known.
    let workloads = if inventory.runtime_degraded() {
        Vec::new()
    } else {
        inventory.workloads()
    };
    let mut addresses = heartbeat_addresses(&workloads, &node_ips);
    let claims = lock(&shared.port_claims).clone();
    addresses.extend(port_claim_addresses(&claims, &node_ips));
    let n = addresses.len();
    shared
        .metrics
        .heartbeat_addresses
        .set(i64::try_from(n).unwrap_or(i64::MAX));
    let hb = pb::OwnershipHeartbeat {
        context_name: shared.context_name.clone(),
        at_ms,
        addresses,
    };
    let timeout = every.min(CALL_TIMEOUT);
    match tokio::time::timeout(timeout, node.heartbeat(hb)).await {
        Ok(Ok(_)) => Ok(n),
        Ok(Err(status)) => Err(format!("Heartbeat: {status}")),
        Err(_) => Err(format!("Heartbeat: no answer within {timeout:?}")),
    }
}

/// What one heartbeat asserts, sorted: each running workload's IPs (whole
/// IP, with its container ID), then the node's own usable addresses
/// (container ID empty) that no workload holds.
///
/// Left out: workloads on the host network (Docker `host`, CRI `node`):
/// they talk from the node's IPs, and only their ports are theirs, which
/// capture reports; workloads in another container's network namespace
/// (Docker `container:<id>`): the addresses are that container's.
///
/// The containers of one CRI pod share its network namespace and each
/// report the pod's IP: the pod holds it, so one of them speaks for the pod
/// (the lowest container ID, stable while the pod runs), and its flows name
/// that container with the pod's name, namespace and labels. Containers of
/// different pods (or a pod and a container) claiming one IP are all
/// asserted: the server sees several owners at once and leaves the flows
/// `ambiguous`, which is true, where naming one would be a guess.
pub fn heartbeat_addresses(workloads: &[Workload], node_ips: &[IpAddr]) -> Vec<pb::OwnedAddress> {
    let mut held: BTreeSet<(IpAddr, &str)> = BTreeSet::new();
    // Per (IP, pod UID): the container speaking for the pod.
    let mut pod_speaker: BTreeMap<(IpAddr, &str), &str> = BTreeMap::new();
    for w in workloads {
        if !matches!(w.state, WorkloadState::Running | WorkloadState::Paused) {
            continue;
        }
        let mode = w.network_mode.as_str();
        if mode == "host" || mode == "node" || mode.starts_with("container:") {
            continue;
        }
        for ip in &w.ips {
            // The runtime's word; an address that does not parse is no
            // evidence of anything.
            let Ok(ip) = ip.parse::<IpAddr>() else {
                continue;
            };
            match w.pod.as_ref().filter(|p| !p.uid.is_empty()) {
                Some(pod) => {
                    let speaker = pod_speaker
                        .entry((ip, pod.uid.as_str()))
                        .or_insert(w.container_id.as_str());
                    if w.container_id.as_str() < *speaker {
                        *speaker = w.container_id.as_str();
                    }
                }
                None => {
                    held.insert((ip, w.container_id.as_str()));
                }
            }
        }
    }
    for ((ip, _), id) in pod_speaker {
        held.insert((ip, id));
    }
    let workload_ips: BTreeSet<IpAddr> = held.iter().map(|(ip, _)| *ip).collect();
    let node: BTreeSet<IpAddr> = node_ips
        .iter()
        .copied()
        .filter(|ip| usable_node_ip(*ip) && !workload_ips.contains(ip))
        .collect();
    held.iter()
        .map(|(ip, id)| pb::OwnedAddress {
            ip: ip.to_string(),
            port: 0,
            container_id: (*id).to_string(),
        })
        .chain(node.into_iter().map(|ip| pb::OwnedAddress {
            ip: ip.to_string(),
            port: 0,
            container_id: String::new(),
        }))
        .collect()
}

/// Host-network workloads' listening ports as `(IP, port)` assertions: a
/// wildcard bind claims the port on each usable node address of its
/// family (a `::` bind also takes IPv4 connections).
pub fn port_claim_addresses(claims: &[PortClaim], node_ips: &[IpAddr]) -> Vec<pb::OwnedAddress> {
    let mut out = BTreeSet::new();
    for c in claims {
        if c.ip.is_unspecified() {
            for ip in node_ips.iter().filter(|ip| usable_node_ip(**ip)) {
                if ip.is_ipv4() == c.ip.is_ipv4() || c.ip.is_ipv6() {
                    out.insert((*ip, c.port, c.container_id.as_str()));
                }
            }
        } else if usable_node_ip(c.ip) {
            out.insert((c.ip, c.port, c.container_id.as_str()));
        }
    }
    out.into_iter()
        .map(|(ip, port, id)| pb::OwnedAddress {
            ip: ip.to_string(),
            port: u32::from(port),
            container_id: id.to_string(),
        })
        .collect()
}

/// Whether a node interface address identifies the node to its peers:
/// not loopback, link-local, unspecified or multicast.
pub fn usable_node_ip(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local(),
        // fe80::/10
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The addresses of the node's network interfaces (every family the
/// kernel lists; filtering is [`heartbeat_addresses`]'s).
pub fn node_addresses() -> std::io::Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addrs
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}
