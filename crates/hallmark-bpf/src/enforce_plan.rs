//! Checking a [`PolicyImage`] before anything is written: everything that
//! could make an install fail half way (too many segments, unordered
//! segments, bad prefixes, capacity) is found here, so a refused image
//! leaves the maps untouched. Pairs with the same port segments share one
//! table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::enforce::{
    PolicyImage, LOCAL_CAPACITY, MAP_LOCAL, MAP_PAIRS, MAP_PEER4, MAP_PEER6, MAP_TABLES,
    PAIR_CAPACITY, PEER4_CAPACITY, PEER6_CAPACITY, TABLE_CAPACITY,
};
use crate::enforce_records::{self as rec, PairKey, Segment, EXEMPT_KEY_SIZE, MAX_SEGS};
use crate::error::EnforceError;

/// An image checked and deduplicated, ready to write.
pub(crate) struct Plan {
    pub(crate) locals: BTreeMap<u64, u32>,
    pub(crate) peer4: BTreeMap<(std::net::Ipv4Addr, u8), u32>,
    pub(crate) peer6: BTreeMap<(std::net::Ipv6Addr, u8), u32>,
    /// Each pair's table: an index into `tables`.
    pub(crate) pairs: BTreeMap<PairKey, u32>,
    /// Distinct segment tables.
    pub(crate) tables: Vec<Vec<Segment>>,
    pub(crate) exempt: Vec<[u8; EXEMPT_KEY_SIZE]>,
}

impl Plan {
    /// Checks everything that could make the install fail half way;
    /// later entries for the same key win.
    pub(crate) fn new(image: &PolicyImage) -> Result<Plan, EnforceError> {
        let locals: BTreeMap<u64, u32> = image.locals.iter().copied().collect();
        let mut peer4 = BTreeMap::new();
        let mut peer6 = BTreeMap::new();
        for p in &image.peers {
            // A v4-mapped v6 prefix (::ffff:a.b.c.d/96+n) is the v4 /n.
            let (addr, len) = match (p.addr, rec::canonical(p.addr)) {
                (IpAddr::V6(_), IpAddr::V4(v4)) if p.prefix_len >= 96 => {
                    (IpAddr::V4(v4), p.prefix_len - 96)
                }
                (a, _) => (a, p.prefix_len),
            };
            match addr {
                IpAddr::V4(a) if len <= 32 => {
                    let masked =
                        u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    peer4.insert((masked.into(), len), p.ident);
                }
                IpAddr::V6(a) if len <= 128 => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    peer6.insert(((u128::from(a) & mask).into(), len), p.ident);
                }
                _ => {
                    return Err(EnforceError::BadPrefix {
                        addr: p.addr,
                        prefix_len: p.prefix_len,
                    })
                }
            }
        }
        let mut checked: BTreeMap<PairKey, &[Segment]> = BTreeMap::new();
        for (pair, segs) in &image.pairs {
            if segs.len() > MAX_SEGS {
                return Err(EnforceError::TooManySegments {
                    pair: *pair,
                    segments: segs.len(),
                });
            }
            if segs.is_empty() {
                return Err(EnforceError::BadSegments {
                    pair: *pair,
                    reason: "no port segments",
                });
            }
            if segs.windows(2).any(|w| w[0].start >= w[1].start) {
                return Err(EnforceError::BadSegments {
                    pair: *pair,
                    reason: "segment starts must strictly increase",
                });
            }
            checked.insert(*pair, segs);
        }
        let mut pairs = BTreeMap::new();
        let mut tables: Vec<Vec<Segment>> = Vec::new();
        let mut table_ids: HashMap<&[Segment], u32> = HashMap::new();
        for (pair, segs) in checked {
            let next = u32::try_from(tables.len()).unwrap_or(u32::MAX);
            let id = *table_ids.entry(segs).or_insert(next);
            if id == next {
                tables.push(segs.to_vec());
            }
            pairs.insert(pair, id);
        }
        let exempt: BTreeSet<_> = image.exempt.iter().map(rec::exempt_key).collect();
        for (map, needed, capacity) in [
            (MAP_LOCAL, locals.len(), LOCAL_CAPACITY),
            (MAP_PEER4, peer4.len(), PEER4_CAPACITY),
            (MAP_PEER6, peer6.len(), PEER6_CAPACITY),
            (MAP_PAIRS, pairs.len(), PAIR_CAPACITY),
            (MAP_TABLES, tables.len(), TABLE_CAPACITY),
        ] {
            if needed > capacity {
                return Err(EnforceError::Capacity {
                    map,
                    needed,
                    capacity,
                });
            }
        }
        Ok(Plan {
            locals,
            peer4,
            peer6,
            pairs,
            tables,
            exempt: exempt.into_iter().collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use crate::enforce_records::{Direction, Peer, Protocol, Verdict};

    fn peer(addr: &str, prefix_len: u8) -> Peer {
        Peer {
            addr: addr.parse().unwrap(),
            prefix_len,
            ident: 3,
        }
    }

    #[test]
    fn prefixes_are_masked_and_v4_mapped_ones_become_v4() {
        let image = PolicyImage {
            peers: vec![
                peer("10.1.2.3", 8),
                peer("::ffff:192.168.7.9", 120),
                peer("2001:db8::1", 32),
                peer("0.0.0.0", 0),
            ],
            ..PolicyImage::default()
        };
        let plan = Plan::new(&image).unwrap();
        let v4: Vec<_> = plan.peer4.keys().map(|(a, l)| format!("{a}/{l}")).collect();
        assert_eq!(v4, ["0.0.0.0/0", "10.0.0.0/8", "192.168.7.0/24"]);
        let v6: Vec<_> = plan.peer6.keys().map(|(a, l)| format!("{a}/{l}")).collect();
        assert_eq!(v6, ["2001:db8::/32"]);
        for bad in [peer("10.0.0.0", 33), peer("::", 129)] {
            let image = PolicyImage {
                peers: vec![bad],
                ..PolicyImage::default()
            };
            assert_eq!(Plan::new(&image).err().unwrap().reason(), "bad-prefix");
        }
    }

    #[test]
    fn segments_are_checked() {
        let key = PairKey {
            local: 1,
            remote: 2,
            protocol: Protocol::Tcp,
            direction: Direction::Egress,
        };
        let seg = |start| Segment {
            start,
            verdict: Verdict::Allow,
            rule: 1,
        };
        let with = |segs: Vec<Segment>| PolicyImage {
            pairs: vec![(key, segs)],
            ..PolicyImage::default()
        };
        assert!(Plan::new(&with((0..64).map(seg).collect())).is_ok());
        let err = Plan::new(&with((0..65).map(seg).collect())).err().unwrap();
        assert_eq!(err.reason(), "too-many-segments");
        assert_eq!(
            Plan::new(&with(vec![])).err().unwrap().reason(),
            "bad-segments"
        );
        let err = Plan::new(&with(vec![seg(80), seg(22)])).err().unwrap();
        assert_eq!(err.reason(), "bad-segments");
    }

    #[test]
    fn pairs_with_the_same_segments_share_a_table() {
        let key = |remote| PairKey {
            local: 1,
            remote,
            protocol: Protocol::Tcp,
            direction: Direction::Egress,
        };
        let seg = |start, verdict| Segment {
            start,
            verdict,
            rule: 4,
        };
        let web = vec![seg(0, Verdict::Deny), seg(443, Verdict::Allow)];
        let db = vec![seg(0, Verdict::Deny), seg(5432, Verdict::Allow)];
        let image = PolicyImage {
            pairs: vec![
                (key(2), web.clone()),
                (key(3), db.clone()),
                (key(4), web.clone()),
                // Later entries for a key win: 5's first table is never used.
                (key(5), vec![seg(0, Verdict::Allow)]),
                (key(5), db.clone()),
            ],
            ..PolicyImage::default()
        };
        let plan = Plan::new(&image).unwrap();
        assert_eq!(plan.tables.len(), 2);
        let table = |remote| &plan.tables[plan.pairs[&key(remote)] as usize];
        assert_eq!(table(2), &web);
        assert_eq!(table(4), &web);
        assert_eq!(table(3), &db);
        assert_eq!(table(5), &db);
        assert_eq!(plan.pairs[&key(2)], plan.pairs[&key(4)]);
    }

    #[test]
    fn capacity_counts_distinct_keys() {
        let dup = PolicyImage {
            locals: vec![(7, 1); LOCAL_CAPACITY + 10],
            ..PolicyImage::default()
        };
        assert_eq!(Plan::new(&dup).unwrap().locals.len(), 1);
        let over = PolicyImage {
            locals: (0..=LOCAL_CAPACITY as u64).map(|c| (c, 1)).collect(),
            ..PolicyImage::default()
        };
        assert!(matches!(
            Plan::new(&over),
            Err(EnforceError::Capacity { needed, .. }) if needed == LOCAL_CAPACITY + 1
        ));
    }
}
