//! The console's `/api/v1/flows` query string comes from any logged-in
//! browser or script. Parsing must not panic; an accepted query has a
//! non-empty window and a limit of 1..=10,000; a refusal is a 400.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let now = 1_800_000_000_000;
    match hallmark_console::parse_flow_query(query, now) {
        Ok(q) => {
            assert!((1..=10_000).contains(&q.limit), "{query}: limit {}", q.limit);
            if let Some(until) = q.until_ms {
                assert!(until > q.since_ms, "{query}");
            }
        }
        Err((code, message)) => {
            assert_eq!(code, 400, "{query}");
            assert!(!message.is_empty());
        }
    }
});
