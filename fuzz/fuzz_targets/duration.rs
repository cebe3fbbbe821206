//! `parse_duration` on arbitrary text (TTLs and intervals in flags/config).
//!
//! An accepted duration is a positive whole number of milliseconds, and
//! `format_duration` prints it in a form that parses back to the same value
//! and is canonical: units in `d h m s ms` order, each at most once, none
//! zero, and none that a larger unit could have held.

#![no_main]

use std::time::Duration;

use hallmark_core::{format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = parse_duration(input) else {
        return;
    };
    assert!(d > Duration::ZERO, "{input:?} parsed to zero");
    assert_eq!(
        d.subsec_nanos() % 1_000_000,
        0,
        "{input:?} parsed to a fraction of a millisecond"
    );

    let text = format_duration(d);
    let back = parse_duration(&text)
        .unwrap_or_else(|e| panic!("{input:?} = {d:?} formats as {text:?}, which is refused: {e}"));
    assert_eq!(back, d, "{input:?} formats as {text:?}");
    assert_canonical(&text, input);
    // Whole seconds in any unit parse to the same value as the bare number.
    if d.subsec_nanos() == 0 {
        assert_eq!(
            parse_duration(&d.as_secs().to_string()),
            Ok(d),
            "bare seconds of {input:?}"
        );
    }
});

fn assert_canonical(text: &str, input: &str) {
    let mut rest = text;
    let mut last_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} (from {input:?}) has no number: {e}"));
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let unit = &rest[digits..digits + unit_len];
        let (rank, limit) = match unit {
            "d" => (1, u64::MAX),
            "h" => (2, 24),
            "m" => (3, 60),
            "s" => (4, 60),
            "ms" => (5, 1000),
            other => panic!("{text:?} (from {input:?}) has unit {other:?}"),
        };
        assert!(
            rank > last_unit,
            "{text:?} (from {input:?}) repeats or reorders units"
        );
        assert!(
            n > 0 && n < limit,
            "{text:?} (from {input:?}) is not canonical"
        );
        last_unit = rank;
        rest = &rest[digits + unit_len..];
    }
}
