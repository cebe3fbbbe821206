//! Capture records to flow records.
//!
//! Every captured flow is oriented the same way, whichever end saw it:
//! `src` is the end that initiated (the socket that connected, or sent the
//! first datagram), `initiator` is `source`, and counters are per
//! direction from there. So the two ends of one connection, each with its
//! own agent, report the same `(protocol, src, dst)`, and the server folds
//! their reports (and a long connection's interim reports) into one flow.

use std::net::SocketAddr;

use hallmark_bpf::{Outcome, TcpEvent, UdpFlow};
use hallmark_flows::{Flow, Initiator, LocalSide, Owner, Protocol, Reporter, Side, TcpOutcome};

use super::cgroups::LocalTag;

/// CLOCK_MONOTONIC (the kernel's `bpf_ktime_get_ns`) to unix time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix nanoseconds minus monotonic nanoseconds, read at one instant.
    offset_ns: i128,
}

impl Clock {
    /// The offset as of now.
    pub fn now() -> Self {
        let mono = i128::from(hallmark_bpf::monotonic_now_ns());
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Clock {
            offset_ns: unix - mono,
        }
    }

    /// A clock with a fixed offset (tests).
    pub fn with_offset_ns(offset_ns: i128) -> Self {
        Clock { offset_ns }
    }

    /// Unix milliseconds of a monotonic instant.
    pub fn unix_ms(&self, mono_ns: u64) -> i64 {
        let ns = i128::from(mono_ns) + self.offset_ns;
        i64::try_from(ns / 1_000_000).unwrap_or(0)
    }

    /// How far this clock's offset is from `other`'s, in milliseconds.
    pub fn drift_ms(&self, other: &Clock) -> i64 {
        i64::try_from((self.offset_ns - other.offset_ns) / 1_000_000).unwrap_or(i64::MAX)
    }
}

/// The local side of a record seen from the socket at `local`, owned as
/// `tag` says. Context and node are the server's to fill in: it knows
/// which agent reports.
fn local_side(initiated: bool, tag: &LocalTag, context: &str) -> LocalSide {
    LocalSide {
        side: if initiated {
            Side::Source
        } else {
            Side::Destination
        },
        owner: match &tag.container_id {
            Some(id) => Owner::Workload {
                context: context.to_string(),
                node: String::new(),
                container_id: id.clone(),
            },
            None => Owner::Node {
                context: context.to_string(),
                node: String::new(),
            },
        },
        by_port: tag.by_port,
        unit: tag.unit.clone(),
    }
}

/// What one socket saw of a conversation, from its own side.
pub(crate) struct Seen {
    pub(crate) initiated: bool,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    /// Bytes and packets this socket sent and received.
    pub(crate) sent: (u64, u64),
    pub(crate) received: (u64, u64),
}

/// The flow of `seen`, oriented initiator first: `src` the initiator and
/// counters per direction from there. Protocol-specific fields are left
/// empty for the caller.
pub(crate) fn oriented(
    seen: Seen,
    protocol: Protocol,
    tag: Option<&LocalTag>,
    context: &str,
    clock: &Clock,
) -> Flow {
    let (src, dst, forward, back) = if seen.initiated {
        (seen.local, seen.remote, seen.sent, seen.received)
    } else {
        (seen.remote, seen.local, seen.received, seen.sent)
    };
    let start_ms = clock.unix_ms(seen.start_ns);
    Flow {
        start_ms,
        end_ms: clock.unix_ms(seen.end_ns).max(start_ms),
        protocol,
        src,
        dst,
        initiator: Initiator::Source,
        bytes_sent: forward.0,
        packets_sent: forward.1,
        bytes_received: back.0,
        packets_received: back.1,
        outcome: None,
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::Agent(String::new()),
        local: tag.map(|t| local_side(seen.initiated, t, context)),
        enforced: None,
    }
}

/// A TCP record (closed, failed, or an open connection's interim state).
pub fn tcp_flow(ev: &TcpEvent, tag: Option<&LocalTag>, context: &str, clock: &Clock) -> Flow {
    let seen = Seen {
        initiated: ev.initiated,
        local: ev.local,
        remote: ev.remote,
        start_ns: ev.start_ns,
        end_ns: ev.end_ns,
        sent: (ev.bytes_sent, ev.packets_sent),
        received: (ev.bytes_received, ev.packets_received),
    };
    Flow {
        outcome: Some(match ev.outcome {
            Outcome::Established => TcpOutcome::Established,
            Outcome::Refused => TcpOutcome::Refused,
            Outcome::Reset => TcpOutcome::Reset,
            Outcome::TimedOut => TcpOutcome::TimedOut,
        }),
        retransmits: u64::from(ev.retransmits),
        rtt_us: (ev.srtt_us > 0).then_some(ev.srtt_us),
        ..oriented(seen, Protocol::Tcp, tag, context, clock)
    }
}

/// A UDP record: one (socket cgroup, local, remote) conversation.
pub fn udp_flow(u: &UdpFlow, tag: Option<&LocalTag>, context: &str, clock: &Clock) -> Flow {
    let seen = Seen {
        initiated: u.initiated,
        local: u.local,
        remote: u.remote,
        start_ns: u.first_ns,
        end_ns: u.last_ns,
        sent: (u.bytes_sent, u.packets_sent),
        received: (u.bytes_received, u.packets_received),
    };
    oriented(seen, Protocol::Udp, tag, context, clock)
}
