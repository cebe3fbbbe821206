//! The byte layouts shared with `bpf/enforce.bpf.c`: policy types, their
//! encoding into map keys and values, and the parsing of enforcement events.
//!
//! Integers are host order (`to_ne_bytes`/`from_ne_bytes`); addresses stay
//! in network order. Map keys hold addresses as 16 bytes with IPv4 as
//! v4-mapped (`::ffff:a.b.c.d`), so an IPv4 peer reached through a
//! dual-stack socket matches the same entries as one reached over IPv4.
//! The offsets below are the contract with the `_Static_assert`ed C structs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::records::{addr_at, u16_at, u32_at, u64_at, RecordError};

/// Most port segments one pair may have (`MAX_SEGS` in the C source).
pub const MAX_SEGS: usize = 64;

pub(crate) const CONFIG_SIZE: usize = 16;
pub(crate) const LOCAL_KEY_SIZE: usize = 16;
pub(crate) const PEER4_DATA: usize = 8;
pub(crate) const PEER6_DATA: usize = 20;
pub(crate) const PAIR_KEY_SIZE: usize = 16;
pub(crate) const TABLE_KEY_SIZE: usize = 8;
pub(crate) const TABLE_VAL_SIZE: usize = 452;
pub(crate) const EXEMPT_KEY_SIZE: usize = 20;
pub(crate) const EVENT_SIZE: usize = 72;

const TABLE_START_OFF: usize = 2;
const TABLE_VERDICT_OFF: usize = 130;
const TABLE_RULE_OFF: usize = 196;

/// What the programs do with a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Everything passes and nothing is reported.
    #[default]
    Off,
    /// Denies let traffic through and are reported as would-deny.
    Watch,
    /// Denies block.
    On,
}

impl Mode {
    pub(crate) fn to_raw(self) -> u32 {
        match self {
            Mode::Off => 0,
            Mode::Watch => 1,
            Mode::On => 2,
        }
    }

    pub(crate) fn from_raw(v: u32) -> Mode {
        match v {
            1 => Mode::Watch,
            2 => Mode::On,
            _ => Mode::Off,
        }
    }

    /// `off`, `watch` or `on`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Watch => "watch",
            Mode::On => "on",
        }
    }
}

/// The outcome of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Verdict {
    /// Let through, no event.
    #[default]
    Allow,
    /// Blocked (EPERM for connect/sendmsg, dropped on ingress), with an event.
    Deny,
    /// Let through, with an event.
    WouldDeny,
}

impl Verdict {
    pub(crate) fn to_raw(self) -> u8 {
        match self {
            Verdict::Allow => 0,
            Verdict::Deny => 1,
            Verdict::WouldDeny => 2,
        }
    }

    /// `allow`, `deny` or `would-deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would-deny",
        }
    }
}

/// Transport protocol of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
}

impl Protocol {
    pub(crate) fn to_raw(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// Who initiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The local workload initiates (connect, sendto).
    Egress,
    /// The remote initiates (inbound SYN, inbound datagram).
    Ingress,
}

impl Direction {
    pub(crate) fn to_raw(self) -> u8 {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }
}

/// The decision table's key: which identities, which protocol, which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    /// Identity of the local workload (from its cgroup).
    pub local: u32,
    /// Identity of the peer (from its address; 0 = unknown).
    pub remote: u32,
    /// Protocol.
    pub protocol: Protocol,
    /// Direction.
    pub direction: Direction,
}

/// Ports `start` up to the next segment's start (the last: up to 65535).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment {
    /// First port of the segment.
    pub start: u16,
    /// What happens to these ports.
    pub verdict: Verdict,
    /// Rule id the agent maps back to a rule name (0 = the default).
    pub rule: u32,
}

/// A peer identity for an address prefix (/32 or /128 for a workload,
/// shorter for a CIDR group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Network address (an IPv4-mapped IPv6 address counts as IPv4).
    pub addr: IpAddr,
    /// Prefix length (0..=32 for IPv4, 0..=128 for IPv6).
    pub prefix_len: u8,
    /// The identity.
    pub ident: u32,
}

/// Traffic never blocked (the agent's servers, DNS, the node's SSH).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exempt {
    /// Egress: the remote address; ingress: the local one. The unspecified
    /// address (`::` or `0.0.0.0`) with a non-zero port means that port on
    /// any address.
    pub addr: IpAddr,
    /// Port, 0 = any port of `addr`.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Direction.
    pub direction: Direction,
}

/// One deny or would-deny reported by the programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforceEvent {
    /// When (CLOCK_MONOTONIC ns).
    pub ts_ns: u64,
    /// Cgroup id of the local socket.
    pub cgroup_id: u64,
    /// Local identity.
    pub local_ident: u32,
    /// Remote identity (0 = unknown).
    pub remote_ident: u32,
    /// Rule id (0 = the default verdict).
    pub rule: u32,
    /// [`Verdict::Deny`] or [`Verdict::WouldDeny`].
    pub verdict: Verdict,
    /// Protocol.
    pub protocol: Protocol,
    /// Direction.
    pub direction: Direction,
    /// Local address and port (egress: unspecified or 0 when the socket
    /// was not bound yet).
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
}

/// `::ffff:a.b.c.d` for IPv4, the address itself for IPv6.
pub(crate) fn mapped(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4; others unchanged.
pub(crate) fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

pub(crate) fn config(mode: Mode, generation: u32, defaults: [Verdict; 2]) -> [u8; CONFIG_SIZE] {
    let mut b = [0u8; CONFIG_SIZE];
    b[0..4].copy_from_slice(&mode.to_raw().to_ne_bytes());
    b[4..8].copy_from_slice(&generation.to_ne_bytes());
    b[8] = defaults[0].to_raw();
    b[9] = defaults[1].to_raw();
    b
}

/// (mode, generation, default verdict bytes) of a config value.
pub(crate) fn parse_config(b: &[u8; CONFIG_SIZE]) -> (Mode, u32, [u8; 2]) {
    (Mode::from_raw(u32_at(b, 0)), u32_at(b, 4) & 1, [b[8], b[9]])
}

pub(crate) fn verdict_from_raw(v: u8) -> Verdict {
    match v {
        0 => Verdict::Allow,
        2 => Verdict::WouldDeny,
        _ => Verdict::Deny,
    }
}

pub(crate) fn local_key(cgroup_id: u64, generation: u32) -> [u8; LOCAL_KEY_SIZE] {
    let mut b = [0u8; LOCAL_KEY_SIZE];
    b[0..8].copy_from_slice(&cgroup_id.to_ne_bytes());
    b[8..12].copy_from_slice(&generation.to_ne_bytes());
    b
}

pub(crate) fn local_key_generation(b: &[u8; LOCAL_KEY_SIZE]) -> u32 {
    u32_at(b, 8)
}

/// LPM data for an IPv4 prefix: the generation, then the address.
pub(crate) fn peer4_data(generation: u32, addr: Ipv4Addr) -> [u8; PEER4_DATA] {
    let mut b = [0u8; PEER4_DATA];
    b[0..4].copy_from_slice(&generation.to_ne_bytes());
    b[4..8].copy_from_slice(&addr.octets());
    b
}

/// LPM data for an IPv6 prefix: the generation, then the address.
pub(crate) fn peer6_data(generation: u32, addr: Ipv6Addr) -> [u8; PEER6_DATA] {
    let mut b = [0u8; PEER6_DATA];
    b[0..4].copy_from_slice(&generation.to_ne_bytes());
    b[4..20].copy_from_slice(&addr.octets());
    b
}

/// The generation at the front of LPM data.
pub(crate) fn peer_generation(data: &[u8]) -> u32 {
    u32_at(data, 0)
}

pub(crate) fn pair_key(generation: u32, k: &PairKey) -> [u8; PAIR_KEY_SIZE] {
    let mut b = [0u8; PAIR_KEY_SIZE];
    b[0..4].copy_from_slice(&generation.to_ne_bytes());
    b[4..8].copy_from_slice(&k.local.to_ne_bytes());
    b[8..12].copy_from_slice(&k.remote.to_ne_bytes());
    b[12] = k.protocol.to_raw();
    b[13] = k.direction.to_raw();
    b
}

pub(crate) fn pair_key_generation(b: &[u8; PAIR_KEY_SIZE]) -> u32 {
    u32_at(b, 0)
}

pub(crate) fn table_key(generation: u32, id: u32) -> [u8; TABLE_KEY_SIZE] {
    let mut b = [0u8; TABLE_KEY_SIZE];
    b[0..4].copy_from_slice(&generation.to_ne_bytes());
    b[4..8].copy_from_slice(&id.to_ne_bytes());
    b
}

pub(crate) fn table_key_generation(b: &[u8; TABLE_KEY_SIZE]) -> u32 {
    u32_at(b, 0)
}

/// The segment table; the caller has checked there are 1..=MAX_SEGS
/// segments with strictly increasing starts.
pub(crate) fn table_val(segs: &[Segment]) -> [u8; TABLE_VAL_SIZE] {
    let mut b = [0u8; TABLE_VAL_SIZE];
    let n = segs.len().min(MAX_SEGS);
    b[0..2].copy_from_slice(&(n as u16).to_ne_bytes());
    for (i, s) in segs.iter().take(MAX_SEGS).enumerate() {
        let o = TABLE_START_OFF + 2 * i;
        b[o..o + 2].copy_from_slice(&s.start.to_ne_bytes());
        b[TABLE_VERDICT_OFF + i] = s.verdict.to_raw();
        let o = TABLE_RULE_OFF + 4 * i;
        b[o..o + 4].copy_from_slice(&s.rule.to_ne_bytes());
    }
    b
}

pub(crate) fn exempt_key(e: &Exempt) -> [u8; EXEMPT_KEY_SIZE] {
    let mut b = [0u8; EXEMPT_KEY_SIZE];
    let addr = canonical(e.addr);
    // Both unspecified addresses mean "any address": one key, all zeros.
    if !addr.is_unspecified() {
        b[0..16].copy_from_slice(&mapped(addr));
    }
    b[16..18].copy_from_slice(&e.port.to_ne_bytes());
    b[18] = e.protocol.to_raw();
    b[19] = e.direction.to_raw();
    b
}

/// Parses one `struct enf_event`.
pub(crate) fn parse_event(b: &[u8]) -> Result<EnforceEvent, RecordError> {
    if b.len() != EVENT_SIZE {
        return Err(RecordError::Size {
            got: b.len(),
            want: EVENT_SIZE,
        });
    }
    let verdict = match b[28] {
        1 => Verdict::Deny,
        2 => Verdict::WouldDeny,
        other => return Err(RecordError::Verdict(other)),
    };
    let protocol = match b[29] {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        other => return Err(RecordError::Protocol(other)),
    };
    let direction = if b[30] == 1 {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let family = b[31];
    Ok(EnforceEvent {
        ts_ns: u64_at(b, 0),
        cgroup_id: u64_at(b, 8),
        local_ident: u32_at(b, 16),
        remote_ident: u32_at(b, 20),
        rule: u32_at(b, 24),
        verdict,
        protocol,
        direction,
        local: SocketAddr::new(addr_at(b, 36, family)?, u16_at(b, 32)),
        remote: SocketAddr::new(addr_at(b, 52, family)?, u16_at(b, 34)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn table_value_puts_each_segment_at_its_offset() {
        let segs = [
            Segment {
                start: 0,
                verdict: Verdict::Deny,
                rule: 0,
            },
            Segment {
                start: 443,
                verdict: Verdict::Allow,
                rule: 7,
            },
        ];
        let b = table_val(&segs);
        assert_eq!(u16_at(&b, 0), 2);
        assert_eq!(u16_at(&b, TABLE_START_OFF + 2), 443);
        assert_eq!(b[TABLE_VERDICT_OFF], 1);
        assert_eq!(b[TABLE_VERDICT_OFF + 1], 0);
        assert_eq!(u32_at(&b, TABLE_RULE_OFF + 4), 7);
    }

    #[test]
    fn keys_carry_the_generation_and_mapped_addresses() {
        let k = local_key(0xdead_beef, 1);
        assert_eq!(local_key_generation(&k), 1);
        assert_eq!(u64_at(&k, 0), 0xdead_beef);
        let p = peer4_data(1, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(peer_generation(&p), 1);
        assert_eq!(&p[4..], &[10, 1, 2, 3]);
        let pk = pair_key(
            1,
            &PairKey {
                local: 5,
                remote: 9,
                protocol: Protocol::Udp,
                direction: Direction::Ingress,
            },
        );
        assert_eq!(pair_key_generation(&pk), 1);
        assert_eq!((pk[12], pk[13]), (17, 1));
        let tk = table_key(1, 42);
        assert_eq!(table_key_generation(&tk), 1);
        assert_eq!(u32_at(&tk, 4), 42);
        let mapped_v6: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let e = |addr| Exempt {
            addr,
            port: 53,
            protocol: Protocol::Udp,
            direction: Direction::Egress,
        };
        assert_eq!(
            exempt_key(&e(mapped_v6)),
            exempt_key(&e("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            exempt_key(&e("0.0.0.0".parse().unwrap())),
            exempt_key(&e("::".parse().unwrap()))
        );
        assert_eq!(
            &exempt_key(&e(mapped_v6))[10..16],
            &[0xff, 0xff, 10, 0, 0, 1]
        );
    }

    #[test]
    fn config_round_trips() {
        let b = config(Mode::Watch, 1, [Verdict::Allow, Verdict::Deny]);
        assert_eq!(parse_config(&b), (Mode::Watch, 1, [0, 1]));
    }

    #[test]
    fn events_parse_and_bad_ones_are_refused() {
        let mut b = [0u8; EVENT_SIZE];
        b[0..8].copy_from_slice(&5u64.to_ne_bytes());
        b[8..16].copy_from_slice(&77u64.to_ne_bytes());
        b[16..20].copy_from_slice(&3u32.to_ne_bytes());
        b[20..24].copy_from_slice(&4u32.to_ne_bytes());
        b[24..28].copy_from_slice(&12u32.to_ne_bytes());
        b[28] = 2;
        b[29] = 6;
        b[30] = 0;
        b[31] = 4;
        b[32..34].copy_from_slice(&40000u16.to_ne_bytes());
        b[34..36].copy_from_slice(&443u16.to_ne_bytes());
        b[36..40].copy_from_slice(&[127, 0, 0, 1]);
        b[52..56].copy_from_slice(&[10, 0, 0, 9]);
        let e = parse_event(&b).unwrap();
        assert_eq!(e.verdict, Verdict::WouldDeny);
        assert_eq!(e.protocol, Protocol::Tcp);
        assert_eq!(e.direction, Direction::Egress);
        assert_eq!(e.rule, 12);
        assert_eq!((e.local_ident, e.remote_ident, e.cgroup_id), (3, 4, 77));
        assert_eq!(e.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(e.remote, "10.0.0.9:443".parse().unwrap());
        assert!(parse_event(&b[..10]).is_err());
        b[31] = 5;
        assert_eq!(parse_event(&b), Err(RecordError::Family(5)));
    }
}
