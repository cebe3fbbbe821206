//! Operator-named networks: CIDRs that no workload holds but that an
//! operator can name (`--network corp=10.8.0.0/16`), so a flow to them reads
//! "external: corp" rather than "unattributed".

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One variant per rule a network definition must follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("network `{0}` must be NAME=CIDR (e.g. corp=10.8.0.0/16)")]
    MissingName(String),
    #[error("network name `{0}` must be 1-63 characters of a-z, 0-9, `-`, `_` or `.`")]
    BadName(String),
    #[error("`{0}` is not a CIDR (ADDRESS/PREFIX, e.g. 10.8.0.0/16 or fd00::/8)")]
    BadCidr(String),
    #[error("prefix length {len} is longer than {max} for {addr}")]
    PrefixTooLong { addr: IpAddr, len: u8, max: u8 },
    #[error("{0} has bits set past its prefix length (did you mean {1}?)")]
    HostBits(String, String),
}

/// An address block: an address and a prefix length, with no bits set past
/// the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.len);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.len);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = NetworkError;

    /// `ADDRESS/PREFIX`; a bare address is a single-host block.
    fn from_str(s: &str) -> Result<Self, NetworkError> {
        let bad = || NetworkError::BadCidr(s.to_string());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (
                a.parse::<IpAddr>().map_err(|_| bad())?,
                Some(l.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(NetworkError::PrefixTooLong { addr, len, max });
        }
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::from((u32::from(a) & mask_v4(len)).to_be_bytes()),
            IpAddr::V6(a) => IpAddr::from((u128::from(a) & mask_v6(len)).to_be_bytes()),
        };
        if masked != addr {
            return Err(NetworkError::HostBits(
                s.to_string(),
                format!("{masked}/{len}"),
            ));
        }
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Named networks; the longest matching prefix names an address.
#[derive(Debug, Clone, Default)]
pub struct Networks {
    /// Longest prefix first.
    blocks: Vec<(Cidr, String)>,
}

impl Networks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `NAME=CIDR`.
    pub fn add_spec(&mut self, spec: &str) -> Result<(), NetworkError> {
        let (name, cidr) = spec
            .split_once('=')
            .ok_or_else(|| NetworkError::MissingName(spec.to_string()))?;
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
        if !valid {
            return Err(NetworkError::BadName(name.to_string()));
        }
        self.add(name, cidr.parse()?);
        Ok(())
    }

    /// Adds a named block.
    pub fn add(&mut self, name: &str, cidr: Cidr) {
        let at = self
            .blocks
            .partition_point(|(c, _)| c.prefix_len() >= cidr.prefix_len());
        self.blocks.insert(at, (cidr, name.to_string()));
    }

    /// The name of the most specific block holding `ip`.
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        self.blocks
            .iter()
            .find(|(c, _)| c.contains(ip))
            .map(|(_, n)| n.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// `(name, cidr)` pairs, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Cidr)> {
        self.blocks.iter().map(|(c, n)| (n.as_str(), *c))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_names_the_address() {
        let mut n = Networks::new();
        n.add_spec("corp=10.8.0.0/16").unwrap();
        n.add_spec("corp-dmz=10.8.4.0/24").unwrap();
        n.add_spec("internet=0.0.0.0/0").unwrap();
        n.add_spec("v6=fd00::/8").unwrap();
        assert_eq!(n.name_of(ip("10.8.4.9")), Some("corp-dmz"));
        assert_eq!(n.name_of(ip("10.8.5.9")), Some("corp"));
        assert_eq!(n.name_of(ip("8.8.8.8")), Some("internet"));
        assert_eq!(n.name_of(ip("fd12::1")), Some("v6"));
        assert_eq!(n.name_of(ip("2001:db8::1")), None);
    }

    #[test]
    fn each_rule_is_named() {
        let mut n = Networks::new();
        for (spec, want) in [
            ("10.0.0.0/8", NetworkError::MissingName("10.0.0.0/8".into())),
            ("=10.0.0.0/8", NetworkError::BadName("".into())),
            ("Corp=10.0.0.0/8", NetworkError::BadName("Corp".into())),
            ("corp=10.0.0/8", NetworkError::BadCidr("10.0.0/8".into())),
            (
                "corp=10.0.0.0/x",
                NetworkError::BadCidr("10.0.0.0/x".into()),
            ),
            (
                "corp=10.0.0.0/33",
                NetworkError::PrefixTooLong {
                    addr: ip("10.0.0.0"),
                    len: 33,
                    max: 32,
                },
            ),
            (
                "corp=10.1.2.3/8",
                NetworkError::HostBits("10.1.2.3/8".into(), "10.0.0.0/8".into()),
            ),
        ] {
            assert_eq!(n.add_spec(spec), Err(want), "{spec}");
        }
        assert!(n.is_empty());
        let host: Cidr = "10.1.2.3".parse().unwrap();
        assert_eq!(host.to_string(), "10.1.2.3/32");
        assert!(host.contains(ip("10.1.2.3")) && !host.contains(ip("10.1.2.4")));
    }
}
