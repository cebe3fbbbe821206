//! Wire entries (`hallmark.v1.Entry`, protobuf) into domain entries.
//!
//! Entries cross the admin API and the server's store as protobuf; the
//! conversion into `hallmark_core::Entry` is where they are validated. Any
//! bytes that decode and convert must give an entry whose parts hold their
//! invariants, and whose wire form converts back to the same entry.

#![no_main]

use hallmark_core::{Entry, EntryId, Selector, SpiffeId};
use hallmark_proto::hallmark as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = pb::Entry::decode(data) else {
        return;
    };
    let Ok(entry) = Entry::try_from(&wire) else {
        return;
    };

    assert_eq!(
        EntryId::parse(entry.id.as_str()).as_ref(),
        Ok(&entry.id),
        "id of {wire:?}"
    );
    assert_eq!(
        SpiffeId::new_workload(entry.spec.spiffe_id.as_str()).as_ref(),
        Ok(&entry.spec.spiffe_id),
        "spiffe_id of {wire:?}"
    );
    assert_eq!(entry.spec.spiffe_id.as_str(), wire.spiffe_id);
    assert_eq!(entry.spec.parent_id.as_str(), wire.parent_id);
    assert_eq!(
        entry.spec.selectors.len(),
        wire.selectors.len(),
        "selectors of {wire:?}"
    );
    for (sel, text) in entry.spec.selectors.iter().zip(&wire.selectors) {
        assert_eq!(&sel.to_string(), text);
        assert_eq!(Selector::new(text).as_ref(), Ok(sel));
    }

    let again = pb::Entry::from(&entry);
    let back = Entry::try_from(&again).unwrap_or_else(|e| panic!("wire form of {entry:?}: {e}"));
    assert_eq!(back, entry, "wire round trip of {wire:?}");

    let bytes = again.encode_to_vec();
    let decoded = pb::Entry::decode(bytes.as_slice())
        .unwrap_or_else(|e| panic!("re-decoding {again:?}: {e}"));
    assert_eq!(decoded, again, "protobuf round trip of {wire:?}");
});
