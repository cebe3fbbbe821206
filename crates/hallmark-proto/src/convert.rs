//! Conversions between wire messages and domain types. Wire-to-domain
//! conversions validate: an entry arriving over the network passes through
//! the same constructors as one typed by an operator.

use hallmark_ca::{Bundle, BundleError};
use hallmark_core::{
    Compose, Confidence, Entry, EntryId, EntrySpec, PodInfo, RuntimeSource, RuntimeStatus,
    Selector, SpiffeId, TrustDomain, Workload, WorkloadState,
};

use std::net::{IpAddr, SocketAddr};

use hallmark_flows::{
    EnforcedVerdict, Flow, FlowError, Initiator, LocalSide, Owner, Protocol, Reporter, Side,
    TcpOutcome,
};

use crate::hallmark as pb;

/// A wire entry that does not hold a valid domain entry.
#[derive(Debug, thiserror::Error)]
#[error("entry `{id}`: field `{field}`: {reason}")]
pub struct EntryConvertError {
    pub id: String,
    pub field: &'static str,
    pub reason: String,
}

impl From<&Entry> for pb::Entry {
    fn from(e: &Entry) -> Self {
        pb::Entry {
            id: e.id.to_string(),
            spiffe_id: e.spec.spiffe_id.to_string(),
            parent_id: e.spec.parent_id.to_string(),
            selectors: e.spec.selectors.iter().map(ToString::to_string).collect(),
            x509_ttl_secs: e.spec.x509_ttl_secs,
            jwt_ttl_secs: e.spec.jwt_ttl_secs,
            dns_names: e.spec.dns_names.clone(),
            hint: e.spec.hint.clone(),
            admin: e.spec.admin,
            federates_with: e
                .spec
                .federates_with
                .iter()
                .map(|t| t.name().to_string())
                .collect(),
            oidc_claims: e.spec.oidc_claims.clone(),
            created_at: e.created_at,
            revision: e.revision,
        }
    }
}

impl TryFrom<&pb::Entry> for Entry {
    type Error = EntryConvertError;

    fn try_from(p: &pb::Entry) -> Result<Self, Self::Error> {
        let err = |field: &'static str, reason: String| EntryConvertError {
            id: p.id.clone(),
            field,
            reason,
        };
        let id = EntryId::parse(&p.id).map_err(|e| err("id", e.to_string()))?;
        let spiffe_id = SpiffeId::new_workload(&p.spiffe_id)
            .map_err(|e| err("spiffe_id", format!("`{}` {e}", p.spiffe_id)))?;
        let parent_id = SpiffeId::new(&p.parent_id)
            .map_err(|e| err("parent_id", format!("`{}` {e}", p.parent_id)))?;
        let selectors = p
            .selectors
            .iter()
            .map(|s| Selector::new(s).map_err(|e| err("selectors", format!("`{s}` {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let federates_with = p
            .federates_with
            .iter()
            .map(|t| {
                hallmark_core::TrustDomain::new(t)
                    .map_err(|e| err("federates_with", format!("`{t}` {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let oidc_claims = hallmark_core::entry::parse_oidc_claims(
            &p.oidc_claims.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .map_err(|e| err("oidc_claims", e.to_string()))?;
        Ok(Entry {
            id,
            spec: EntrySpec {
                spiffe_id,
                parent_id,
                selectors,
                x509_ttl_secs: p.x509_ttl_secs,
                jwt_ttl_secs: p.jwt_ttl_secs,
                dns_names: p.dns_names.clone(),
                hint: p.hint.clone(),
                admin: p.admin,
                federates_with,
                oidc_claims,
            },
            created_at: p.created_at,
            revision: p.revision,
        })
    }
}

/// The wire form of a trust bundle. The JWKS document is the whole bundle
/// (X.509 and JWT authorities, sequence, refresh hint); the other fields
/// repeat parts of it for readers that do not parse JSON.
impl From<&Bundle> for pb::Bundle {
    fn from(b: &Bundle) -> Self {
        pb::Bundle {
            trust_domain: b.trust_domain.to_string(),
            x509_authorities: b.x509_authorities.clone(),
            jwks: b.to_jwks_json(),
            sequence: b.sequence,
        }
    }
}

/// Decodes a wire bundle as trust domain `td`'s, from its JWKS document
/// (the authoritative field, see `From<&Bundle> for pb::Bundle`). The
/// message's `trust_domain` is not consulted: the caller knows whose bundle
/// it asked for.
pub fn bundle_from_pb(td: &TrustDomain, b: &pb::Bundle) -> Result<Bundle, BundleError> {
    Bundle::from_jwks_json(td, &b.jwks)
}

/// A wire workload record that does not hold a valid [`Workload`].
#[derive(Debug, thiserror::Error)]
#[error("workload record `{container_id}`: field `{field}`: {reason}")]
pub struct WorkloadConvertError {
    pub container_id: String,
    pub field: &'static str,
    pub reason: String,
}

/// Longest container ID accepted from the wire (Docker/containerd use 64).
pub const MAX_CONTAINER_ID_LEN: usize = 128;

impl From<&Workload> for pb::WorkloadRecord {
    fn from(w: &Workload) -> Self {
        let compose = w.compose.clone().unwrap_or_default();
        pb::WorkloadRecord {
            container_id: w.container_id.clone(),
            source: w.source.as_str().to_string(),
            name: w.name.clone(),
            image: w.image.clone(),
            image_id: w.image_id.clone(),
            image_digest: w.image_digest.clone(),
            labels: w.labels.clone().into_iter().collect(),
            compose_project: compose.project,
            compose_service: compose.service,
            compose_oneoff: compose.oneoff,
            pod: w.pod.as_ref().map(|p| pb::PodRecord {
                uid: p.uid.clone(),
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                sandbox_id: p.sandbox_id.clone(),
                labels: p.labels.clone().into_iter().collect(),
                annotations: p.annotations.clone().into_iter().collect(),
                ips: p.ips.clone(),
            }),
            pid: w.pid.unwrap_or(0),
            cgroup: w.cgroup.clone(),
            network_mode: w.network_mode.clone(),
            ips: w.ips.clone(),
            state: w.state.as_str().to_string(),
            created_at_ms: w.created_at_ms,
            started_at_ms: w.started_at_ms,
            finished_at_ms: w.finished_at_ms,
            exit_code: w.exit_code,
            confidence: w.confidence.as_str().to_string(),
            degraded_reason: w.degraded_reason.clone(),
            selectors: w.selectors.clone(),
            spiffe_ids: w.spiffe_ids.clone(),
        }
    }
}

impl TryFrom<&pb::WorkloadRecord> for Workload {
    type Error = WorkloadConvertError;

    fn try_from(p: &pb::WorkloadRecord) -> Result<Self, Self::Error> {
        let err = |field: &'static str, reason: String| WorkloadConvertError {
            container_id: p.container_id.chars().take(MAX_CONTAINER_ID_LEN).collect(),
            field,
            reason,
        };
        if p.container_id.is_empty() {
            return Err(err("container_id", "is empty".into()));
        }
        if p.container_id.len() > MAX_CONTAINER_ID_LEN
            || !p
                .container_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(err(
                "container_id",
                format!("must be at most {MAX_CONTAINER_ID_LEN} characters of [A-Za-z0-9._-]"),
            ));
        }
        let source = RuntimeSource::parse(&p.source)
            .ok_or_else(|| err("source", format!("`{}` is not docker or cri", p.source)))?;
        let state = WorkloadState::parse(&p.state).ok_or_else(|| {
            err(
                "state",
                format!(
                    "`{}` is not one of created, running, paused, stopped, unknown",
                    p.state
                ),
            )
        })?;
        let confidence = match p.confidence.as_str() {
            "full" => Confidence::Full,
            "partial" => Confidence::Partial,
            other => {
                return Err(err(
                    "confidence",
                    format!("`{other}` is not full or partial"),
                ))
            }
        };
        let compose = (!p.compose_project.is_empty()).then(|| Compose {
            project: p.compose_project.clone(),
            service: p.compose_service.clone(),
            oneoff: p.compose_oneoff,
        });
        Ok(Workload {
            container_id: p.container_id.clone(),
            source,
            name: p.name.clone(),
            image: p.image.clone(),
            image_id: p.image_id.clone(),
            image_digest: p.image_digest.clone(),
            labels: p.labels.clone().into_iter().collect(),
            compose,
            pod: p.pod.as_ref().map(|pod| PodInfo {
                uid: pod.uid.clone(),
                name: pod.name.clone(),
                namespace: pod.namespace.clone(),
                sandbox_id: pod.sandbox_id.clone(),
                labels: pod.labels.clone().into_iter().collect(),
                annotations: pod.annotations.clone().into_iter().collect(),
                ips: pod.ips.clone(),
            }),
            pid: (p.pid != 0).then_some(p.pid),
            cgroup: p.cgroup.clone(),
            network_mode: p.network_mode.clone(),
            ips: p.ips.clone(),
            state,
            created_at_ms: p.created_at_ms,
            started_at_ms: p.started_at_ms,
            finished_at_ms: p.finished_at_ms,
            exit_code: p.exit_code,
            confidence,
            degraded_reason: p.degraded_reason.clone(),
            selectors: p.selectors.clone(),
            spiffe_ids: p.spiffe_ids.clone(),
        })
    }
}

impl From<&RuntimeStatus> for pb::RuntimeStatus {
    fn from(s: &RuntimeStatus) -> Self {
        pb::RuntimeStatus {
            runtime: s.runtime.clone(),
            endpoint: s.endpoint.clone(),
            version: s.version.clone(),
            degraded: s.degraded,
            reason: s.reason.clone(),
        }
    }
}

/// A wire flow record that does not hold a valid [`Flow`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flow record: field `{field}`: {reason}")]
pub struct FlowRecordError {
    pub field: &'static str,
    pub reason: String,
}

/// The wire form of a flow. The reporter is not carried per record (the
/// batch or request names it), and the local side is carried as its
/// container ID only: the receiver knows the reporter's context and node.
impl From<&Flow> for pb::FlowRecord {
    fn from(f: &Flow) -> Self {
        let (local_side, local_container_id, local_by_port, local_unit) = match &f.local {
            Some(l) => (
                side_name(l.side),
                match &l.owner {
                    Owner::Workload { container_id, .. } => container_id.clone(),
                    Owner::Node { .. } => String::new(),
                },
                l.by_port,
                l.unit.clone(),
            ),
            None => ("", String::new(), false, String::new()),
        };
        pb::FlowRecord {
            start_ms: f.start_ms,
            end_ms: f.end_ms,
            protocol: u32::from(f.protocol.number()),
            src_ip: f.src.ip().to_string(),
            src_port: u32::from(f.src.port()),
            dst_ip: f.dst.ip().to_string(),
            dst_port: u32::from(f.dst.port()),
            initiator: match f.initiator {
                Initiator::Source => "source",
                Initiator::Destination => "destination",
                Initiator::Unknown => "unknown",
            }
            .to_string(),
            bytes_sent: f.bytes_sent,
            packets_sent: f.packets_sent,
            bytes_received: f.bytes_received,
            packets_received: f.packets_received,
            outcome: f.outcome.map_or("", outcome_name).to_string(),
            local_side: local_side.to_string(),
            local_container_id,
            local_by_port,
            retransmits: f.retransmits,
            rtt_us: f.rtt_us.unwrap_or(0),
            local_unit,
            verdict: f
                .enforced
                .as_ref()
                .map_or("", |e| enforced_word(e.verdict))
                .to_string(),
            verdict_rule: f
                .enforced
                .as_ref()
                .and_then(|e| e.rule.clone())
                .unwrap_or_default(),
            verdict_mode: f
                .enforced
                .as_ref()
                .and_then(|e| e.mode)
                .map_or("", |m| m.as_str())
                .to_string(),
            policy_revision: f.enforced.as_ref().map_or(0, |e| e.policy_revision),
        }
    }
}

fn enforced_word(o: hallmark_policy::Outcome) -> &'static str {
    match o {
        hallmark_policy::Outcome::Denied => "denied",
        hallmark_policy::Outcome::WouldDeny => "would-deny",
        hallmark_policy::Outcome::Allowed => "allowed",
        hallmark_policy::Outcome::NoDecision => "no-decision",
    }
}

/// An agent's enforced verdict from a record; `None` when it carries
/// none. Only `denied` and `would-deny` are kernel events.
fn enforced_of(rec: &pb::FlowRecord) -> Result<Option<EnforcedVerdict>, String> {
    let verdict = match rec.verdict.as_str() {
        "" => return Ok(None),
        "denied" => hallmark_policy::Outcome::Denied,
        "would-deny" => hallmark_policy::Outcome::WouldDeny,
        other => {
            return Err(format!(
                "`{other}`: must be denied or would-deny (or empty)"
            ))
        }
    };
    let mode = match rec.verdict_mode.as_str() {
        "" => None,
        "enforce" => Some(hallmark_policy::Mode::Enforce),
        "watch" => Some(hallmark_policy::Mode::Watch),
        other => {
            return Err(format!(
                "mode `{other}`: must be enforce or watch (or empty)"
            ))
        }
    };
    Ok(Some(EnforcedVerdict {
        verdict,
        rule: (!rec.verdict_rule.is_empty()).then(|| rec.verdict_rule.clone()),
        mode,
        policy_revision: rec.policy_revision,
    }))
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Source => "source",
        Side::Destination => "destination",
    }
}

fn outcome_name(o: TcpOutcome) -> &'static str {
    match o {
        TcpOutcome::Established => "established",
        TcpOutcome::Refused => "refused",
        TcpOutcome::Reset => "reset",
        TcpOutcome::TimedOut => "timed-out",
    }
}

/// Decodes and validates a wire flow record reported by `reporter`.
///
/// `local_owner` turns the record's local container ID (empty: the node
/// itself) into its owner; it is called only when the record names a local
/// side. The node API passes one that builds the owner from the agent's
/// context and node; a source that cannot know its local side (a flow log
/// file through `IngestFlows`) passes one that answers `None`, and a record
/// claiming a local side is then refused.
pub fn flow_from_pb(
    rec: &pb::FlowRecord,
    reporter: Reporter,
    local_owner: impl FnOnce(&str) -> Option<Owner>,
) -> Result<Flow, FlowRecordError> {
    let err = |field: &'static str, reason: String| FlowRecordError { field, reason };
    let protocol = u8::try_from(rec.protocol)
        .map(Protocol::from_number)
        .map_err(|_| {
            err(
                "protocol",
                format!("{} is not an IP protocol number (0-255)", rec.protocol),
            )
        })?;
    let ip = |field: &'static str, text: &str| -> Result<IpAddr, FlowRecordError> {
        text.parse()
            .map_err(|_| err(field, format!("`{}` is not an IP address", clip(text))))
    };
    let port = |field: &'static str, n: u32| -> Result<u16, FlowRecordError> {
        u16::try_from(n).map_err(|_| err(field, format!("{n} is not a port number (0-65535)")))
    };
    let src = SocketAddr::new(ip("src_ip", &rec.src_ip)?, port("src_port", rec.src_port)?);
    let dst = SocketAddr::new(ip("dst_ip", &rec.dst_ip)?, port("dst_port", rec.dst_port)?);
    let initiator = match rec.initiator.as_str() {
        "" | "unknown" => Initiator::Unknown,
        "source" => Initiator::Source,
        "destination" => Initiator::Destination,
        other => {
            return Err(err(
                "initiator",
                format!("`{}` is not source, destination or unknown", clip(other)),
            ))
        }
    };
    let outcome = match rec.outcome.as_str() {
        "" => None,
        "established" => Some(TcpOutcome::Established),
        "refused" => Some(TcpOutcome::Refused),
        "reset" => Some(TcpOutcome::Reset),
        "timed-out" => Some(TcpOutcome::TimedOut),
        other => {
            return Err(err(
                "outcome",
                format!(
                    "`{}` is not established, refused, reset or timed-out",
                    clip(other)
                ),
            ))
        }
    };
    let side = match rec.local_side.as_str() {
        "" => None,
        "source" => Some(Side::Source),
        "destination" => Some(Side::Destination),
        other => {
            return Err(err(
                "local_side",
                format!("`{}` is not source or destination", clip(other)),
            ))
        }
    };
    let local = match side {
        None if !rec.local_container_id.is_empty() => {
            return Err(err(
                "local_container_id",
                "is set but local_side is empty: say which end is local".into(),
            ))
        }
        None if rec.local_by_port => {
            return Err(err(
                "local_by_port",
                "is set but local_side is empty: say which end is local".into(),
            ))
        }
        None if !rec.local_unit.is_empty() => {
            return Err(err(
                "local_unit",
                "is set but local_side is empty: say which end is local".into(),
            ))
        }
        None => None,
        Some(side) => {
            let id = &rec.local_container_id;
            if !id.is_empty() && !valid_container_id(id) {
                return Err(err(
                    "local_container_id",
                    format!(
                        "`{}` must be at most {MAX_CONTAINER_ID_LEN} characters of [A-Za-z0-9._-]",
                        clip(id)
                    ),
                ));
            }
            let owner = local_owner(id).ok_or_else(|| {
                err(
                    "local_side",
                    format!("reporter {reporter} cannot know a flow's local end: both ends of its flows are attributed by ownership"),
                )
            })?;
            Some(LocalSide {
                side,
                owner,
                by_port: rec.local_by_port,
                unit: rec.local_unit.clone(),
            })
        }
    };
    let flow = Flow {
        start_ms: rec.start_ms,
        end_ms: rec.end_ms,
        protocol,
        src,
        dst,
        initiator,
        bytes_sent: rec.bytes_sent,
        packets_sent: rec.packets_sent,
        bytes_received: rec.bytes_received,
        packets_received: rec.packets_received,
        outcome,
        retransmits: rec.retransmits,
        rtt_us: (rec.rtt_us != 0).then_some(rec.rtt_us),
        reporter,
        local,
        enforced: enforced_of(rec).map_err(|e| err("verdict", e))?,
    };
    flow.validate().map_err(|e| {
        let field = match &e {
            FlowError::BadProtocol(_) => "protocol",
            FlowError::EndBeforeStart { .. } => "end_ms",
            FlowError::AbsurdTime { which: "start", .. } => "start_ms",
            FlowError::AbsurdTime { .. } => "end_ms",
            FlowError::PortZero {
                which: "source", ..
            } => "src_port",
            FlowError::PortZero { .. } => "dst_port",
            FlowError::MixedFamilies { .. } => "dst_ip",
            FlowError::OutcomeNotTcp(_) => "outcome",
            FlowError::BadUnit { .. } => "local_unit",
        };
        err(field, e.to_string())
    })?;
    Ok(flow)
}

/// Whether a container ID is one the inventory would accept (empty is
/// checked by the caller).
pub fn valid_container_id(id: &str) -> bool {
    id.len() <= MAX_CONTAINER_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// At most 64 characters of untrusted input, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod workload_tests {
    use super::*;

    fn sample() -> Workload {
        let mut w = Workload::partial(&"c".repeat(64), RuntimeSource::Cri, "");
        w.confidence = Confidence::Full;
        w.name = "app".into();
        w.state = WorkloadState::Running;
        w.pid = Some(42);
        w.exit_code = Some(0);
        w.labels.insert("a".into(), "b".into());
        w.compose = Some(Compose {
            project: "p".into(),
            service: "s".into(),
            oneoff: true,
        });
        let mut pod = PodInfo {
            uid: "u".into(),
            namespace: "ns".into(),
            ..PodInfo::default()
        };
        pod.labels.insert("x".into(), "y".into());
        pod.ips.push("10.0.0.1".into());
        w.pod = Some(pod);
        w
    }

    #[test]
    fn round_trip() {
        let w = sample();
        let back = Workload::try_from(&pb::WorkloadRecord::from(&w)).unwrap();
        assert_eq!(w, back);
    }

    #[test]
    fn rejects_bad_fields() {
        let good = pb::WorkloadRecord::from(&sample());
        let cases: Vec<(&str, Box<dyn Fn(&mut pb::WorkloadRecord)>)> = vec![
            ("container_id", Box::new(|r| r.container_id.clear())),
            ("container_id", Box::new(|r| r.container_id = "a/b".into())),
            (
                "container_id",
                Box::new(|r| r.container_id = "a".repeat(129)),
            ),
            ("source", Box::new(|r| r.source = "lxc".into())),
            ("state", Box::new(|r| r.state = "gone".into())),
            ("confidence", Box::new(|r| r.confidence = "some".into())),
        ];
        for (field, mutate) in cases {
            let mut r = good.clone();
            mutate(&mut r);
            let e = Workload::try_from(&r).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod bundle_tests {
    use std::time::{Duration, SystemTime};

    use hallmark_ca::{JwtAuthority, KeyAlg, X509Authority};

    use super::*;

    #[test]
    fn round_trip() {
        let td = TrustDomain::new("example.org").unwrap();
        let now = SystemTime::now();
        let root = X509Authority::generate_root(&td, Duration::from_secs(3600), now).unwrap();
        let key = JwtAuthority::generate(KeyAlg::EcP256, now).unwrap();
        let mut b = Bundle::new(td.clone());
        b.x509_authorities = vec![root.cert_der().to_vec()];
        b.jwt_authorities = vec![key.jwt_key()];
        b.sequence = 7;
        b.refresh_hint_secs = 60;

        let wire = pb::Bundle::from(&b);
        assert_eq!(wire.trust_domain, "example.org");
        assert_eq!(wire.x509_authorities, b.x509_authorities);
        assert_eq!(wire.sequence, 7);
        assert_eq!(bundle_from_pb(&td, &wire).unwrap(), b);
    }

    #[test]
    fn a_bundle_without_a_jwks_document_is_refused() {
        let td = TrustDomain::new("example.org").unwrap();
        let e = bundle_from_pb(&td, &pb::Bundle::default()).unwrap_err();
        assert!(matches!(e, BundleError::NotJson(_)), "{e}");
    }
}

#[cfg(test)]
#[path = "convert_flow_tests.rs"]
mod flow_tests;
