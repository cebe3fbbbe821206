//! The flow record: one conversation between two IP endpoints over a span of
//! time, as any source reports it.
//!
//! Every source (an agent's capture, a VPC flow log line, a NetFlow/IPFIX
//! record, a JSON line) is turned into a [`Flow`] and checked once by
//! [`Flow::validate`]; the rest of Hallmark handles only valid flows.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::owner::Owner;

/// Earliest flow time accepted: 2000-01-01T00:00:00Z, in unix ms. Anything
/// earlier is a clock that was never set or a field read as the wrong unit.
pub const MIN_FLOW_MS: i64 = 946_684_800_000;
/// Latest flow time accepted: 2100-01-01T00:00:00Z, in unix ms.
pub const MAX_FLOW_MS: i64 = 4_102_444_800_000;

/// Longest systemd unit name a local side may carry, in bytes.
pub const MAX_UNIT_LEN: usize = 256;

/// The IP protocol, by IANA number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Icmp,
    Tcp,
    Udp,
    Icmpv6,
    Other(u8),
}

impl Protocol {
    /// The protocol with IANA number `n`.
    pub fn from_number(n: u8) -> Self {
        match n {
            1 => Protocol::Icmp,
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            58 => Protocol::Icmpv6,
            other => Protocol::Other(other),
        }
    }

    /// The IANA number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Icmp => 1,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmpv6 => 58,
            Protocol::Other(n) => n,
        }
    }

    /// Whether flows of this protocol have ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp) || matches!(self, Protocol::Other(132 | 33))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Icmp => f.write_str("icmp"),
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Icmpv6 => f.write_str("icmpv6"),
            Protocol::Other(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Protocol {
    type Err = FlowError;

    /// `tcp`, `udp`, `icmp`, `icmpv6` (any case) or an IANA number.
    fn from_str(s: &str) -> Result<Self, FlowError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            "icmpv6" | "ipv6-icmp" => Ok(Protocol::Icmpv6),
            other => other
                .parse::<u8>()
                .map(Protocol::from_number)
                .map_err(|_| FlowError::BadProtocol(s.to_string())),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The `src` address of the record.
    Source,
    /// The `dst` address of the record.
    Destination,
}

/// Which end opened the conversation, when the reporter knows it (a TCP
/// state transition does; a flow log line does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Initiator {
    Source,
    Destination,
    #[default]
    Unknown,
}

/// How a TCP conversation went, where the reporter saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpOutcome {
    /// The handshake completed.
    Established,
    /// The peer answered the SYN with a reset.
    Refused,
    /// An established connection ended with a reset.
    Reset,
    /// The SYN was never answered.
    TimedOut,
}

/// Who reported a flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Reporter {
    /// A Hallmark agent, by node name.
    Agent(String),
    /// A NetFlow/IPFIX exporter, by its address.
    Exporter(SocketAddr),
    /// A flow log file (or standard input), by its name.
    File(String),
}

impl fmt::Display for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reporter::Agent(node) => write!(f, "agent:{node}"),
            Reporter::Exporter(addr) => write!(f, "exporter:{addr}"),
            Reporter::File(name) => write!(f, "file:{name}"),
        }
    }
}

/// The end of a flow its reporter saw from inside: the workload (or node)
/// the socket belonged to, known at capture time rather than looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LocalSide {
    pub side: Side,
    pub owner: Owner,
    /// The owner shares its IP with its node (host network) and owns only
    /// this end's port of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_port: bool,
    /// The systemd unit (e.g. `ssh.service`) of the host process that held
    /// the socket, when the owner is the node itself; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
}

/// A flow record. Counters are per direction: `*_sent` from `src` to `dst`,
/// `*_received` from `dst` to `src`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// First packet, unix milliseconds (the reporter's clock).
    pub start_ms: i64,
    /// Last packet, unix milliseconds; not before `start_ms`.
    pub end_ms: i64,
    pub protocol: Protocol,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    #[serde(default)]
    pub initiator: Initiator,
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub packets_sent: u64,
    #[serde(default)]
    pub bytes_received: u64,
    #[serde(default)]
    pub packets_received: u64,
    /// TCP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TcpOutcome>,
    /// Segments retransmitted, as the reporter's socket counted them (TCP
    /// captured by an agent; 0 otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retransmits: u64,
    /// Smoothed round-trip time in microseconds, from the reporter's socket
    /// (TCP captured by an agent); `None` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u32>,
    pub reporter: Reporter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSide>,
    /// What the reporter's kernel decided for this flow (an agent's
    /// enforcement event): the server keeps it instead of deciding again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced: Option<EnforcedVerdict>,
}

/// A verdict a node's kernel enforced, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcedVerdict {
    /// `denied` or `would-deny` (an allowed flow raises no event).
    pub verdict: hallmark_policy::Outcome,
    /// The deciding rule; `None` for the policy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// That rule's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<hallmark_policy::Mode>,
    /// The policy revision in force in that kernel.
    pub policy_revision: i64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One variant per rule a flow record must follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("protocol `{0}` is not tcp, udp, icmp, icmpv6 or a number 0-255")]
    BadProtocol(String),
    #[error("end time {end_ms} is before start time {start_ms} (time going backwards)")]
    EndBeforeStart { start_ms: i64, end_ms: i64 },
    #[error("{which} time {ms} ms is outside 2000-01-01..2100-01-01 (a clock never set, or seconds read as milliseconds)")]
    AbsurdTime { which: &'static str, ms: i64 },
    #[error("{which} port is 0: a {protocol} flow always has ports")]
    PortZero {
        which: &'static str,
        protocol: Protocol,
    },
    #[error("source {src} and destination {dst} are not of the same IP version")]
    MixedFamilies { src: SocketAddr, dst: SocketAddr },
    #[error("a TCP outcome ({0:?}) is only meaningful for TCP flows")]
    OutcomeNotTcp(TcpOutcome),
    #[error("local unit `{unit}` {why}")]
    BadUnit { unit: String, why: &'static str },
}

impl FlowError {
    /// A short stable name for counters (`flows stats`, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            FlowError::BadProtocol(_) => "bad-protocol",
            FlowError::EndBeforeStart { .. } => "time-backwards",
            FlowError::AbsurdTime { .. } => "absurd-time",
            FlowError::PortZero { .. } => "port-zero",
            FlowError::MixedFamilies { .. } => "mixed-families",
            FlowError::OutcomeNotTcp(_) => "outcome-not-tcp",
            FlowError::BadUnit { .. } => "bad-unit",
        }
    }
}

impl Flow {
    /// Checks every rule; the first broken one is the error.
    pub fn validate(&self) -> Result<(), FlowError> {
        for (which, ms) in [("start", self.start_ms), ("end", self.end_ms)] {
            if !(MIN_FLOW_MS..MAX_FLOW_MS).contains(&ms) {
                return Err(FlowError::AbsurdTime { which, ms });
            }
        }
        if self.end_ms < self.start_ms {
            return Err(FlowError::EndBeforeStart {
                start_ms: self.start_ms,
                end_ms: self.end_ms,
            });
        }
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(FlowError::MixedFamilies {
                src: self.src,
                dst: self.dst,
            });
        }
        if self.protocol.has_ports() {
            // A kernel decides a connect or a send before the socket is
            // bound: a refused one never had a source port, and one let
            // through in watch mode had none yet when it was decided.
            let decided_unbound = self.enforced.as_ref().is_some_and(|e| {
                matches!(
                    e.verdict,
                    hallmark_policy::Outcome::Denied | hallmark_policy::Outcome::WouldDeny
                )
            });
            for (which, addr) in [("source", self.src), ("destination", self.dst)] {
                if addr.port() == 0 && !(decided_unbound && which == "source") {
                    return Err(FlowError::PortZero {
                        which,
                        protocol: self.protocol,
                    });
                }
            }
        }
        if let Some(outcome) = self.outcome {
            if self.protocol != Protocol::Tcp {
                return Err(FlowError::OutcomeNotTcp(outcome));
            }
        }
        if let Some(local) = &self.local {
            check_unit(local)?;
        }
        Ok(())
    }

    /// The address of one end.
    pub fn addr(&self, side: Side) -> SocketAddr {
        match side {
            Side::Source => self.src,
            Side::Destination => self.dst,
        }
    }
}

/// A local side's unit is a systemd unit name of a host process: printable
/// ASCII without spaces or `/`, at most [`MAX_UNIT_LEN`] bytes, and only on
/// a side the node itself owns.
fn check_unit(local: &LocalSide) -> Result<(), FlowError> {
    let unit = &local.unit;
    if unit.is_empty() {
        return Ok(());
    }
    let bad = |why| FlowError::BadUnit {
        unit: unit.chars().take(64).collect(),
        why,
    };
    if unit.len() > MAX_UNIT_LEN {
        return Err(bad("is longer than 256 bytes"));
    }
    if !unit.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(bad(
            "must be printable ASCII without spaces or `/` (a systemd unit name, not a path)",
        ));
    }
    if !matches!(local.owner, Owner::Node { .. }) {
        return Err(bad(
            "is set on a workload's side: only host processes of the node have a unit",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    pub(crate) fn tcp(src: &str, dst: &str, start_ms: i64) -> Flow {
        Flow {
            start_ms,
            end_ms: start_ms + 10,
            protocol: Protocol::Tcp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            initiator: Initiator::Source,
            bytes_sent: 100,
            packets_sent: 2,
            bytes_received: 50,
            packets_received: 1,
            outcome: Some(TcpOutcome::Established),
            retransmits: 0,
            rtt_us: None,
            reporter: Reporter::File("test".into()),
            local: None,
            enforced: None,
        }
    }

    const T: i64 = 1_700_000_000_000;

    #[test]
    fn each_rule_is_named() {
        let ok = tcp("10.0.0.1:40000", "10.0.0.2:443", T);
        assert_eq!(ok.validate(), Ok(()));
        let v6 = tcp("[fd00::1]:40000", "[fd00::2]:443", T);
        assert_eq!(v6.validate(), Ok(()));

        let mut f = ok.clone();
        f.end_ms = T - 1;
        assert!(matches!(
            f.validate(),
            Err(FlowError::EndBeforeStart { .. })
        ));
        let mut f = ok.clone();
        f.start_ms = 1_700_000_000; // seconds, not milliseconds
        assert!(matches!(
            f.validate(),
            Err(FlowError::AbsurdTime { which: "start", .. })
        ));
        let mut f = ok.clone();
        f.end_ms = i64::MAX;
        assert!(matches!(
            f.validate(),
            Err(FlowError::AbsurdTime { which: "end", .. })
        ));
        let f = tcp("10.0.0.1:0", "10.0.0.2:443", T);
        assert!(matches!(
            f.validate(),
            Err(FlowError::PortZero {
                which: "source",
                ..
            })
        ));
        let mut refused = tcp("10.0.0.1:0", "10.0.0.2:443", T);
        refused.enforced = Some(EnforcedVerdict {
            verdict: hallmark_policy::Outcome::Denied,
            rule: None,
            mode: None,
            policy_revision: 1,
        });
        assert_eq!(
            refused.validate(),
            Ok(()),
            "a connect the kernel denied has no port"
        );
        let mut watched = refused.clone();
        watched.enforced.as_mut().unwrap().verdict = hallmark_policy::Outcome::WouldDeny;
        assert_eq!(
            watched.validate(),
            Ok(()),
            "nor one decided, then let through"
        );
        let mut allowed = refused.clone();
        allowed.enforced.as_mut().unwrap().verdict = hallmark_policy::Outcome::Allowed;
        assert!(
            allowed.validate().is_err(),
            "allowed flows are captured, with ports"
        );
        let f = tcp("10.0.0.1:1", "[fd00::2]:443", T);
        assert!(matches!(f.validate(), Err(FlowError::MixedFamilies { .. })));
        let mut f = tcp("10.0.0.1:0", "10.0.0.2:0", T);
        f.protocol = Protocol::Icmp;
        f.outcome = None;
        assert_eq!(f.validate(), Ok(()), "ICMP has no ports");
        f.outcome = Some(TcpOutcome::Refused);
        assert!(matches!(f.validate(), Err(FlowError::OutcomeNotTcp(_))));
    }

    #[test]
    fn protocol_names_and_numbers_round_trip() {
        for n in 0..=255u8 {
            let p = Protocol::from_number(n);
            assert_eq!(p.number(), n);
            assert_eq!(p.to_string().parse::<Protocol>().unwrap(), p);
        }
        assert_eq!("TCP".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert!(matches!(
            "tcpx".parse::<Protocol>(),
            Err(FlowError::BadProtocol(_))
        ));
        assert!("256".parse::<Protocol>().is_err());
    }

    #[test]
    fn json_round_trip() {
        let f = tcp("10.0.0.1:40000", "10.0.0.2:443", T);
        let text = serde_json::to_string(&f).unwrap();
        assert!(text.contains("\"protocol\":\"tcp\""), "{text}");
        let back: Flow = serde_json::from_str(&text).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn old_json_without_capture_fields_still_parses() {
        // A pending row stored before flows had retransmits, RTT or units.
        let old = r#"{"start_ms":1700000000000,"end_ms":1700000000010,"protocol":"tcp","src":"10.0.0.1:40000","dst":"10.0.0.2:443","initiator":"source","bytes_sent":100,"packets_sent":2,"bytes_received":50,"packets_received":1,"outcome":"established","reporter":{"kind":"agent","name":"n1"},"local":{"side":"source","owner":{"kind":"node","context":"c","node":"n1"}}}"#;
        let f: Flow = serde_json::from_str(old).unwrap();
        assert_eq!(f.retransmits, 0);
        assert_eq!(f.rtt_us, None);
        assert_eq!(f.local.as_ref().unwrap().unit, "");
        // Unknown values stay out of the JSON, so it reads as before.
        let text = serde_json::to_string(&f).unwrap();
        assert!(
            !text.contains("retransmits") && !text.contains("rtt_us") && !text.contains("unit"),
            "{text}"
        );

        let mut g = f.clone();
        g.retransmits = 3;
        g.rtt_us = Some(1_250);
        if let Some(l) = g.local.as_mut() {
            l.unit = "ssh.service".into();
        }
        let back: Flow = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn a_unit_is_a_unit_name_on_the_node_side() {
        let mut f = tcp("10.0.0.1:40000", "10.0.0.2:443", T);
        let node = Owner::Node {
            context: "c".into(),
            node: "n1".into(),
        };
        let with = |f: &Flow, owner: &Owner, unit: &str| {
            let mut f = f.clone();
            f.local = Some(LocalSide {
                side: Side::Source,
                owner: owner.clone(),
                by_port: false,
                unit: unit.into(),
            });
            f.validate()
        };
        assert_eq!(with(&f, &node, "ssh.service"), Ok(()));
        assert_eq!(with(&f, &node, "user@1000.service"), Ok(()));
        assert_eq!(with(&f, &node, &"a".repeat(MAX_UNIT_LEN)), Ok(()));
        for bad in [
            "system.slice/ssh.service".to_string(),
            "ssh service".into(),
            "ssh\n.service".to_string(),
            "a".repeat(MAX_UNIT_LEN + 1),
        ] {
            let e = with(&f, &node, &bad).unwrap_err();
            assert!(matches!(e, FlowError::BadUnit { .. }), "{bad:?}: {e:?}");
            assert!(e.to_string().starts_with("local unit `"), "{e}");
        }
        let workload = Owner::Workload {
            context: "c".into(),
            node: "n1".into(),
            container_id: "c1".into(),
        };
        let e = with(&f, &workload, "ssh.service").unwrap_err();
        assert!(e.to_string().contains("workload"), "{e}");
        f.local = None;
        assert_eq!(f.validate(), Ok(()));
    }
}
