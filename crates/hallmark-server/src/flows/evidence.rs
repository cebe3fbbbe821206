//! Ownership evidence from what agents report: a workload's start and stop
//! events claim or release its IPs at agent time; a heartbeat re-asserts
//! every address the node and its running workloads hold.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use hallmark_core::{Workload, WorkloadState};
use hallmark_flows::{Evidence, EvidenceKind, Owner, OwnershipKey};
use hallmark_proto::hallmark as pb;
use hallmark_store::inventory::{InventoryReport, WorkloadEventKind};

/// How far a heartbeat's time may be from the server's clock. Farther means
/// the node's clock is wrong, and its evidence would mislead.
pub(crate) const MAX_HEARTBEAT_OFFSET_MS: i64 = 5 * 60_000;
/// Most addresses one heartbeat may carry.
const MAX_HEARTBEAT_ADDRESSES: usize = 100_000;

/// Why a heartbeat is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeartbeatError {
    #[error("heartbeat time {at_ms} is {offset_ms} ms from the server's clock (more than {MAX_HEARTBEAT_OFFSET_MS}); fix the node's clock (NTP)")]
    Clock { at_ms: i64, offset_ms: i64 },
    #[error("address `{0}` is not an IP address")]
    BadIp(String),
    #[error("port {0} is out of range 1-65535 (0 means the whole IP)")]
    BadPort(u32),
    #[error("container ID `{0}` must be at most 128 characters of a-z, A-Z, 0-9, `-`, `_` or `.`")]
    BadContainer(String),
    #[error("{0} addresses in one heartbeat (at most {MAX_HEARTBEAT_ADDRESSES})")]
    TooMany(usize),
    #[error("context name: {0}")]
    Context(String),
}

impl HeartbeatError {
    pub fn reason(&self) -> &'static str {
        match self {
            HeartbeatError::Clock { .. } => "clock",
            HeartbeatError::BadIp(_) => "bad-ip",
            HeartbeatError::BadPort(_) => "bad-port",
            HeartbeatError::BadContainer(_) => "bad-container",
            HeartbeatError::TooMany(_) => "too-many",
            HeartbeatError::Context(_) => "bad-context",
        }
    }
}

/// The evidence in one heartbeat of agent `node`, received at server time
/// `now_ms`.
pub(crate) fn evidence_from_heartbeat(
    node: &str,
    hb: &pb::OwnershipHeartbeat,
    now_ms: i64,
) -> Result<Vec<Evidence>, HeartbeatError> {
    crate::inventory::validate_context_name(&hb.context_name)
        .map_err(|e| HeartbeatError::Context(e.to_string()))?;
    let offset_ms = hb.at_ms.saturating_sub(now_ms);
    if offset_ms.saturating_abs() > MAX_HEARTBEAT_OFFSET_MS {
        return Err(HeartbeatError::Clock {
            at_ms: hb.at_ms,
            offset_ms,
        });
    }
    if hb.addresses.len() > MAX_HEARTBEAT_ADDRESSES {
        return Err(HeartbeatError::TooMany(hb.addresses.len()));
    }
    let mut out = Vec::with_capacity(hb.addresses.len());
    for a in &hb.addresses {
        let ip: IpAddr =
            a.ip.parse()
                .map_err(|_| HeartbeatError::BadIp(a.ip.clone()))?;
        let key = match a.port {
            0 => OwnershipKey::ip(ip),
            p => OwnershipKey::port(
                ip,
                u16::try_from(p).map_err(|_| HeartbeatError::BadPort(p))?,
            ),
        };
        let owner = if a.container_id.is_empty() {
            Owner::Node {
                context: hb.context_name.clone(),
                node: node.to_string(),
            }
        } else {
            if !hallmark_proto::convert::valid_container_id(&a.container_id) {
                return Err(HeartbeatError::BadContainer(a.container_id.clone()));
            }
            Owner::Workload {
                context: hb.context_name.clone(),
                node: node.to_string(),
                container_id: a.container_id.clone(),
            }
        };
        out.push(Evidence {
            key,
            owner,
            at_ms: hb.at_ms,
            kind: EvidenceKind::Heartbeat,
        });
    }
    Ok(out)
}

/// The IPs a workload's lifecycle events claim: its own, not its node's.
/// A pod's containers claim nothing here: they share the pod's IP, and the
/// agent's heartbeats name the one container that speaks for the pod.
fn own_ips(w: &Workload) -> Vec<IpAddr> {
    if matches!(w.network_mode.as_str(), "host" | "node")
        || w.network_mode.starts_with("container:")
        || w.pod.is_some()
    {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = w.ips.iter().filter_map(|s| s.parse().ok()).collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The IPs each workload was last reported with, so a stop event (whose
/// record no longer lists them) still releases them.
#[derive(Default)]
pub(crate) struct InventoryIps {
    known: Mutex<HashMap<(String, String, String), Vec<IpAddr>>>,
}

impl InventoryIps {
    /// The evidence in one accepted inventory report of agent `node`.
    /// Lifecycle events carry agent time; snapshot records carry none and
    /// only refresh the remembered addresses.
    pub fn evidence(&self, node: &str, report: &InventoryReport) -> Vec<Evidence> {
        let Ok(mut known) = self.known.lock() else {
            return Vec::new();
        };
        let context = &report.context_name;
        let key_of = |w: &Workload| (context.clone(), node.to_string(), w.container_id.clone());
        if let Some(page) = &report.snapshot {
            for w in &page.workloads {
                let ips = own_ips(w);
                if w.state == WorkloadState::Running && !ips.is_empty() {
                    known.insert(key_of(w), ips);
                }
            }
        }
        let mut out = Vec::new();
        for ev in &report.events {
            let w = &ev.workload;
            let owner = Owner::Workload {
                context: context.clone(),
                node: node.to_string(),
                container_id: w.container_id.clone(),
            };
            let (kind, ips) = match ev.kind {
                WorkloadEventKind::Started | WorkloadEventKind::Updated
                    if w.state == WorkloadState::Running =>
                {
                    let ips = own_ips(w);
                    if ips.is_empty() {
                        continue;
                    }
                    known.insert(key_of(w), ips.clone());
                    let kind = if ev.kind == WorkloadEventKind::Started {
                        EvidenceKind::Started
                    } else {
                        EvidenceKind::Heartbeat
                    };
                    (kind, ips)
                }
                WorkloadEventKind::Stopped => {
                    let mut ips = own_ips(w);
                    if let Some(old) = known.remove(&key_of(w)) {
                        ips.extend(old);
                    }
                    ips.sort();
                    ips.dedup();
                    (EvidenceKind::Stopped, ips)
                }
                _ => continue,
            };
            out.extend(ips.into_iter().map(|ip| Evidence {
                key: OwnershipKey::ip(ip),
                owner: owner.clone(),
                at_ms: ev.at_ms,
                kind,
            }));
        }
        out
    }
}
