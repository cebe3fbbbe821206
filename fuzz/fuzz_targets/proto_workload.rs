//! Wire workload records (`hallmark.v1.WorkloadRecord`, protobuf) into
//! domain workloads.
//!
//! Agents send these to the server in inventory reports; the conversion
//! into `hallmark_core::Workload` is where they are validated. Any bytes
//! that decode and convert must give a record with a well-formed container
//! ID, whose wire form converts back to the same record, and whose
//! selectors are all valid selectors.

#![no_main]

use hallmark_core::{Selector, Workload};
use hallmark_proto::convert::MAX_CONTAINER_ID_LEN;
use hallmark_proto::hallmark as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = pb::WorkloadRecord::decode(data) else {
        return;
    };
    let Ok(w) = Workload::try_from(&wire) else {
        return;
    };

    assert!(!w.container_id.is_empty() && w.container_id.len() <= MAX_CONTAINER_ID_LEN);
    assert_eq!(w.container_id, wire.container_id);
    assert!(w.short_id().len() <= 12);

    for s in w.selectors() {
        let text = s.to_string();
        assert_eq!(
            Selector::new(&text).as_ref(),
            Ok(&s),
            "selector of {wire:?}"
        );
    }

    let again = pb::WorkloadRecord::from(&w);
    let back = Workload::try_from(&again).unwrap_or_else(|e| panic!("wire form of {w:?}: {e}"));
    assert_eq!(back, w, "wire round trip of {wire:?}");
});
