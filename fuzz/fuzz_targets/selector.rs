//! `Selector::new` on arbitrary text.
//!
//! Selectors are matched by string equality against what attestors produce,
//! so an accepted selector must print exactly as given, split into type and
//! `<key>:<value>` without losing a byte, and rebuild equal from its parts.

#![no_main]

use hallmark_core::selector::MAX_SELECTOR_LEN;
use hallmark_core::{Selector, SelectorSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sel) = Selector::new(input) else {
        return;
    };
    assert_eq!(sel.to_string(), input, "Display of {input:?}");
    assert!(input.len() <= MAX_SELECTOR_LEN);
    assert!(
        !input.chars().any(char::is_control),
        "{input:?} has a control character"
    );
    assert_eq!(
        Selector::new(&sel.to_string()).as_ref(),
        Ok(&sel),
        "re-parse of {input:?}"
    );
    assert_eq!(
        format!("{}:{}", sel.ty(), sel.value()),
        input,
        "ty + value of {input:?}"
    );
    assert!(
        !sel.ty().contains(':'),
        "type {:?} of {input:?} holds a colon",
        sel.ty()
    );

    let (key, value) = sel
        .value()
        .split_once(':')
        .unwrap_or_else(|| panic!("value {:?} of {input:?} has no key", sel.value()));
    assert!(!value.is_empty(), "{input:?} has an empty value");
    assert_eq!(
        Selector::from_parts(sel.ty(), key, value).as_ref(),
        Ok(&sel),
        "from_parts of {input:?}"
    );

    let json = serde_json::to_string(&sel).unwrap_or_else(|e| panic!("serialising {input:?}: {e}"));
    let back: Selector =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("deserialising {json}: {e}"));
    assert_eq!(back, sel, "serde round trip of {input:?}");

    // A workload attested with this selector satisfies an entry requiring it;
    // an empty requirement must never match (entries say what they select).
    let set: SelectorSet = [sel.clone()].into_iter().collect();
    assert!(
        set.satisfies(std::slice::from_ref(&sel)),
        "set of {input:?}"
    );
    assert!(!set.satisfies(&[]), "empty requirement matched {input:?}");
});
