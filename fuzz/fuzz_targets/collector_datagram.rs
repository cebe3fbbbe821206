//! NetFlow v5/v9 and IPFIX datagrams come from anyone who can send UDP to
//! the collector. The input is a sequence of datagrams, each after its
//! length (two bytes, big-endian; the last one takes what is left), fed in
//! order to one collector so templates learnt from one decode the next.
//! Whatever the bytes: no panic; the same datagrams give the same answers;
//! the stats count exactly what each datagram returned; every flow passes
//! the flow rules, is a unidirectional exporter record with at least one
//! packet, and lies within the collector's time window around the time of
//! receipt; every rejection names the exporter and its reason.
#![no_main]

use std::net::SocketAddr;

use hallmark_flows::collector::{Collector, CollectorConfig};
use hallmark_flows::{Initiator, Reporter};
use libfuzzer_sys::fuzz_target;

/// Splits off the next datagram.
fn next_datagram(data: &[u8]) -> (&[u8], &[u8]) {
    match data {
        [hi, lo, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
            rest.split_at(len)
        }
        _ => (data, &[]),
    }
}

/// A time of receipt that agrees with the datagram's own export time, so
/// the fuzzer gets past the clock check and into the records.
fn received_ms(d: &[u8]) -> i64 {
    let be32 = |at: usize| {
        d.get(at..at + 4)
            .map(|b| i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    };
    let export_s = match d {
        [0, 5 | 9, ..] => be32(8),
        [0, 10, ..] => be32(4),
        _ => None,
    };
    export_s.map_or(1_700_000_000_000, |s| s * 1000 + 50)
}

fuzz_target!(|data: &[u8]| {
    let exporter: SocketAddr = SocketAddr::from(([192, 0, 2, 7], 4739));
    let config = CollectorConfig::default();
    let (Ok(mut one), Ok(mut two)) = (Collector::new(config), Collector::new(config)) else {
        panic!("the default config is valid");
    };
    let mut rest = data;
    while !rest.is_empty() {
        let (datagram, next) = next_datagram(rest);
        rest = next;
        let now = received_ms(datagram);
        let before = one.stats();
        let out = one.datagram(exporter, datagram, now);
        assert_eq!(
            out,
            two.datagram(exporter, datagram, now),
            "not deterministic"
        );
        let after = one.stats();
        assert_eq!(after.datagrams, before.datagrams + 1);
        assert_eq!(after.flows, before.flows + out.flows.len() as u64);
        let rejected = |s: &hallmark_flows::CollectorStats| s.rejected.values().sum::<u64>();
        assert_eq!(
            rejected(&after),
            rejected(&before) + out.rejected.len() as u64
        );
        assert!(after.exporters <= config.max_exporters);
        for f in &out.flows {
            assert_eq!(f.validate(), Ok(()));
            assert_eq!(f.reporter, Reporter::Exporter(exporter));
            assert_eq!(
                (f.initiator, f.outcome, &f.local),
                (Initiator::Unknown, None, &None)
            );
            assert!(f.packets_sent > 0);
            assert!(f.end_ms <= now + config.max_clock_skew_ms + config.max_future_ms);
            assert!(f.start_ms >= now - config.max_clock_skew_ms - config.max_flow_age_ms);
        }
        for r in &out.rejected {
            assert_eq!(r.exporter, exporter);
            let text = r.to_string();
            assert!(text.contains(&exporter.to_string()) && text.contains(r.reason().as_str()));
        }
    }
});
