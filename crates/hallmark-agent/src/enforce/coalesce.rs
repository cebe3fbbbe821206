//! Repeats of one kernel decision, reported once: a peer the policy drops
//! retransmits its SYN (1 s, 3 s, 7 s, ...), each datagram of a denied UDP
//! flow is decided again, and a workload may retry a denied connect in a
//! loop. Each is counted by the kernel, but one flow per attempt would
//! flood the flow pipeline with copies. An event identical to one reported
//! within [`WINDOW_NS`] (same cgroup, protocol, direction, verdict, rule
//! and both addresses) is left out.

use std::collections::HashMap;
use std::net::SocketAddr;

use hallmark_bpf::{Direction, EnforceEvent, Protocol, Verdict};

/// How long an event stands for its repeats (the kernel's clock, ns): long
/// enough to cover a connect's SYN retransmissions.
pub const WINDOW_NS: u64 = 60_000_000_000;
/// Events remembered at most; beyond, the oldest are forgotten first.
const CAPACITY: usize = 65_536;

type Key = (
    u64,
    Protocol,
    Direction,
    Verdict,
    u32,
    SocketAddr,
    SocketAddr,
);

/// The events reported in the last [`WINDOW_NS`].
#[derive(Debug, Default)]
pub struct Recent {
    seen: HashMap<Key, u64>,
    /// Events left out since start.
    pub coalesced: u64,
}

impl Recent {
    /// Whether `ev` is the first of its kind in the window (report it);
    /// a repeat is counted in [`Recent::coalesced`].
    pub fn first(&mut self, ev: &EnforceEvent) -> bool {
        let key = (
            ev.cgroup_id,
            ev.protocol,
            ev.direction,
            ev.verdict,
            ev.rule,
            ev.local,
            ev.remote,
        );
        if let Some(at) = self.seen.get(&key) {
            if ev.ts_ns.saturating_sub(*at) < WINDOW_NS {
                self.coalesced += 1;
                return false;
            }
        }
        if self.seen.len() >= CAPACITY {
            self.forget_before(ev.ts_ns.saturating_sub(WINDOW_NS));
            if self.seen.len() >= CAPACITY {
                // All recent: start over rather than grow (repeats of the
                // forgotten ones are reported once more).
                self.seen.clear();
            }
        }
        self.seen.insert(key, ev.ts_ns);
        true
    }

    /// Forgets the events reported before `ts_ns`.
    pub fn forget_before(&mut self, ts_ns: u64) {
        self.seen.retain(|_, at| *at >= ts_ns);
    }

    /// Events remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts_s: u64, remote_port: u16) -> EnforceEvent {
        EnforceEvent {
            ts_ns: ts_s * 1_000_000_000,
            cgroup_id: 7,
            local_ident: 1,
            remote_ident: 0,
            rule: 0,
            verdict: Verdict::Deny,
            protocol: Protocol::Tcp,
            direction: Direction::Ingress,
            local: "172.30.0.3:5432".parse().unwrap(),
            remote: SocketAddr::from(([172, 30, 0, 1], remote_port)),
        }
    }

    #[test]
    fn retransmissions_are_one_event_and_a_new_attempt_is_another() {
        let mut r = Recent::default();
        assert!(r.first(&ev(100, 40_000)));
        // The SYN again after 1, 3 and 7 s.
        assert!(!r.first(&ev(101, 40_000)));
        assert!(!r.first(&ev(103, 40_000)));
        assert!(!r.first(&ev(107, 40_000)));
        assert_eq!(r.coalesced, 3);
        // Another source port: another connection.
        assert!(r.first(&ev(107, 40_001)));
        // Past the window: reported again.
        assert!(r.first(&ev(161, 40_000)));
        let other_rule = EnforceEvent {
            rule: 4,
            ..ev(161, 40_000)
        };
        assert!(r.first(&other_rule));
        r.forget_before(161 * 1_000_000_000);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut r = Recent::default();
        for i in 0..(CAPACITY as u64 + 10) {
            let mut e = ev(1, 1);
            e.cgroup_id = i;
            assert!(r.first(&e));
        }
        assert!(r.len() <= CAPACITY);
    }
}
