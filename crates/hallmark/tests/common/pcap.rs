//! Reads a classic pcap file (as `tcpdump -w` writes it, Ethernet link
//! type) into per-direction IPv4 TCP/UDP counters: what a flow exporter
//! replaying the capture must report, computed independently of it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

/// One direction of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    pub protocol: u8,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// What crossed in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    /// IP total lengths summed (what NetFlow calls octets).
    pub bytes: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Per-direction counters of every IPv4 TCP/UDP packet in the capture.
pub fn directions(path: &Path) -> BTreeMap<Tuple, Counts> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(data.len() >= 24, "{} is not a pcap file", path.display());
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => panic!("{}: unknown pcap magic {m:#x}", path.display()),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let linktype = u32_at(&data, 20);
    assert_eq!(
        linktype,
        1,
        "{}: link type {linktype}, want Ethernet",
        path.display()
    );
    let mut out: BTreeMap<Tuple, Counts> = BTreeMap::new();
    let mut i = 24;
    while i + 16 <= data.len() {
        let secs = i64::from(u32_at(&data, i));
        let frac = i64::from(u32_at(&data, i + 4));
        let caplen = u32_at(&data, i + 8) as usize;
        let at_ms = secs * 1000 + if nanos { frac / 1_000_000 } else { frac / 1000 };
        let frame = &data[i + 16..(i + 16 + caplen).min(data.len())];
        i += 16 + caplen;
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = u64::from(u16::from_be_bytes([ip[2], ip[3]]));
        let protocol = ip[9];
        if !(protocol == 6 || protocol == 17) || ip.len() < ihl + 4 {
            continue;
        }
        let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let sport = u16::from_be_bytes([ip[ihl], ip[ihl + 1]]);
        let dport = u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]);
        let t = Tuple {
            protocol,
            src: SocketAddrV4::new(src_ip, sport),
            dst: SocketAddrV4::new(dst_ip, dport),
        };
        let c = out.entry(t).or_insert(Counts {
            first_ms: at_ms,
            last_ms: at_ms,
            ..Counts::default()
        });
        c.packets += 1;
        c.bytes += total;
        c.first_ms = c.first_ms.min(at_ms);
        c.last_ms = c.last_ms.max(at_ms);
    }
    out
}
