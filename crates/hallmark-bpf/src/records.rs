//! The byte layouts shared with `bpf/flows.bpf.c`, and their parsing into
//! typed records.
//!
//! Every record the kernel side writes (ring buffer events, iterator output,
//! map keys and values) is a fixed-size C struct in host byte order, except
//! addresses, which stay in network order as the kernel keeps them. Parsing
//! reads fields at fixed offsets with `from_ne_bytes`, so no `unsafe` casts
//! are needed; the offsets below are the contract with the C structs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Size of `struct flow_event` (ring buffer and iterator records).
pub(crate) const EVENT_SIZE: usize = 112;
/// Size of `struct conn` (value of the `conns` map).
pub(crate) const CONN_SIZE: usize = 56;
/// Size of `struct udp_key`.
pub(crate) const UDP_KEY_SIZE: usize = 48;
/// Size of `struct udp_val`.
pub(crate) const UDP_VAL_SIZE: usize = 56;

const KIND_CLOSED: u8 = 1;
const KIND_FAILED: u8 = 2;
const KIND_OPEN: u8 = 3;
const KIND_LISTEN: u8 = 4;

/// How a TCP connection ended (or, for open ones, that it is established).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The handshake completed; the connection closed normally or is open.
    Established,
    /// The connect was answered with a reset (`ECONNREFUSED`).
    Refused,
    /// An established connection was reset by the peer (`ECONNRESET`/`EPIPE`).
    Reset,
    /// The connect never completed (`ETIMEDOUT`, unreachable, or abandoned).
    TimedOut,
}

impl Outcome {
    /// A short stable label: `established`, `refused`, `reset`, `timed-out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::TimedOut => "timed-out",
        }
    }
}

/// One TCP connection, from the local socket's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpEvent {
    /// Cgroup id (cgroup2 directory inode) of the socket.
    pub cgroup_id: u64,
    /// Local address and port, as recorded at ESTABLISHED (or at failure).
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// True: this socket connected (SYN_SENT); false: it was accepted (SYN_RECV).
    pub initiated: bool,
    /// When the connect or accept began (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// When it closed or failed; for open connections, the snapshot time.
    pub end_ns: u64,
    /// Payload bytes sent and acknowledged by the peer (`bytes_acked`).
    pub bytes_sent: u64,
    /// Payload bytes received (`bytes_received`).
    pub bytes_received: u64,
    /// Segments sent, including pure ACKs and retransmissions (`segs_out`).
    pub packets_sent: u64,
    /// Segments received, including pure ACKs (`segs_in`).
    pub packets_received: u64,
    /// Retransmitted segments (`total_retrans`).
    pub retransmits: u32,
    /// Smoothed round-trip time in microseconds.
    pub srtt_us: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The kernel socket address: the connection's key, to match snapshot
    /// records with the final event.
    pub sock: u64,
}

/// A listening TCP socket seen by a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Cgroup id of the listening socket.
    pub cgroup_id: u64,
    /// Bound address (possibly unspecified) and port.
    pub local: SocketAddr,
}

/// A UDP flow: traffic of one socket side with one remote endpoint.
///
/// Bytes are UDP payload bytes: each packet's length less its IP and UDP
/// headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFlow {
    /// Cgroup id of the socket that sent or received the packets.
    pub cgroup_id: u64,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// True if the first packet seen was sent by the local side.
    pub initiated: bool,
    /// First packet (CLOCK_MONOTONIC ns).
    pub first_ns: u64,
    /// Latest packet (CLOCK_MONOTONIC ns).
    pub last_ns: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Packets received.
    pub packets_received: u64,
    /// True if the flow was idle long enough and has been removed; false for
    /// an interim report of a flow still active.
    pub closed: bool,
}

/// A record the kernel side wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// A closed or failed connection (ring buffer).
    Ended(TcpEvent),
    /// An open connection (iterator).
    Open(TcpEvent),
    /// A listening socket (iterator).
    Listen(Listener),
}

/// Why bytes from the kernel side could not be read as a record. Seeing one
/// means the loaded object and this crate disagree on a layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record has the wrong size.
    #[error("flow record of {got} bytes, expected {want}")]
    Size {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The kind byte names no known record.
    #[error("flow record kind {0} is unknown (1 closed, 2 failed, 3 open, 4 listen)")]
    Kind(u8),
    /// The address family is neither 4 nor 6.
    #[error("flow record address family {0} is unknown (expected 4 or 6)")]
    Family(u8),
    /// The outcome byte names no known outcome.
    #[error("flow record outcome {0} is unknown (0..=3)")]
    Outcome(u8),
    /// An enforcement event's verdict is neither deny (1) nor would-deny (2).
    #[error("enforcement event verdict {0} is unknown (1 deny, 2 would-deny)")]
    Verdict(u8),
    /// An enforcement event's protocol is neither TCP (6) nor UDP (17).
    #[error("enforcement event protocol {0} is unknown (6 tcp, 17 udp)")]
    Protocol(u8),
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

/// An address stored as 16 network-order bytes (IPv4 in the first four).
pub(crate) fn addr_at(b: &[u8], off: usize, family: u8) -> Result<IpAddr, RecordError> {
    match family {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(
            b[off],
            b[off + 1],
            b[off + 2],
            b[off + 3],
        ))),
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[off..off + 16]);
            Ok(IpAddr::V6(Ipv6Addr::from(a)))
        }
        other => Err(RecordError::Family(other)),
    }
}

fn outcome(byte: u8) -> Result<Outcome, RecordError> {
    match byte {
        0 => Ok(Outcome::Established),
        1 => Ok(Outcome::Refused),
        2 => Ok(Outcome::Reset),
        3 => Ok(Outcome::TimedOut),
        other => Err(RecordError::Outcome(other)),
    }
}

/// Parses one `struct flow_event`.
///
/// Layout: sock 0, cgroup_id 8, start_ns 16, end_ns 24, bytes_sent 32,
/// bytes_received 40, packets_sent 48, packets_received 56, retransmits 64,
/// srtt_us 68, kind 72, outcome 73, initiated 74, family 75, lport 76,
/// rport 78, laddr 80, raddr 96.
pub(crate) fn parse_event(b: &[u8]) -> Result<Record, RecordError> {
    if b.len() != EVENT_SIZE {
        return Err(RecordError::Size {
            got: b.len(),
            want: EVENT_SIZE,
        });
    }
    let kind = b[72];
    let family = b[75];
    let local = SocketAddr::new(addr_at(b, 80, family)?, u16_at(b, 76));
    if kind == KIND_LISTEN {
        return Ok(Record::Listen(Listener {
            cgroup_id: u64_at(b, 8),
            local,
        }));
    }
    if !matches!(kind, KIND_CLOSED | KIND_FAILED | KIND_OPEN) {
        return Err(RecordError::Kind(kind));
    }
    let event = TcpEvent {
        cgroup_id: u64_at(b, 8),
        local,
        remote: SocketAddr::new(addr_at(b, 96, family)?, u16_at(b, 78)),
        initiated: b[74] != 0,
        start_ns: u64_at(b, 16),
        end_ns: u64_at(b, 24),
        bytes_sent: u64_at(b, 32),
        bytes_received: u64_at(b, 40),
        packets_sent: u64_at(b, 48),
        packets_received: u64_at(b, 56),
        retransmits: u32_at(b, 64),
        srtt_us: u32_at(b, 68),
        outcome: outcome(b[73])?,
        sock: u64_at(b, 0),
    };
    Ok(if kind == KIND_OPEN {
        Record::Open(event)
    } else {
        Record::Ended(event)
    })
}

/// Parses a stream of iterator output (concatenated `struct flow_event`s).
pub(crate) fn parse_events(b: &[u8]) -> Result<Vec<Record>, RecordError> {
    if !b.len().is_multiple_of(EVENT_SIZE) {
        return Err(RecordError::Size {
            got: b.len() % EVENT_SIZE,
            want: EVENT_SIZE,
        });
    }
    b.chunks_exact(EVENT_SIZE).map(parse_event).collect()
}

/// The `udp_val` fields that sweeping compares.
pub(crate) fn udp_last_ns(val: &[u8; UDP_VAL_SIZE]) -> u64 {
    u64_at(val, 8)
}

/// Parses a `udp_flows` entry.
///
/// Key: cgroup_id 0, laddr 8, raddr 24, lport 40, rport 42, family 44.
/// Value: first_ns 0, last_ns 8, bytes_out 16, packets_out 24, bytes_in 32,
/// packets_in 40, initiated 48.
pub(crate) fn parse_udp(
    key: &[u8; UDP_KEY_SIZE],
    val: &[u8; UDP_VAL_SIZE],
    closed: bool,
) -> Result<UdpFlow, RecordError> {
    let family = key[44];
    Ok(UdpFlow {
        cgroup_id: u64_at(key, 0),
        local: SocketAddr::new(addr_at(key, 8, family)?, u16_at(key, 40)),
        remote: SocketAddr::new(addr_at(key, 24, family)?, u16_at(key, 42)),
        initiated: val[48] != 0,
        first_ns: u64_at(val, 0),
        last_ns: u64_at(val, 8),
        bytes_sent: u64_at(val, 16),
        packets_sent: u64_at(val, 24),
        bytes_received: u64_at(val, 32),
        packets_received: u64_at(val, 40),
        closed,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
#[path = "records_tests.rs"]
mod tests;
