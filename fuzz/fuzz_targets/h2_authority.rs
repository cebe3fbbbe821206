//! The Workload API's HTTP/2 `:authority` repair reads bytes from any local
//! process. Whatever they are, it must not panic, and its answer must not
//! depend on how the bytes were split across reads: fed whole or in two
//! pieces, it must produce the same bytes (or fail in both cases).
#![no_main]

use hallmark_agent::h2_authority::AuthorityFix;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let mut whole = AuthorityFix::new(());
    let one = whole.feed(data);

    let at = (split as usize) % (data.len() + 1);
    let mut pieces = AuthorityFix::new(());
    let two = pieces.feed(&data[..at]).and_then(|mut first| {
        first.unsplit(pieces.feed(&data[at..])?);
        Ok(first)
    });

    match (one, two) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "output depends on the split at {at}"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("split at {at} changed the outcome: {a:?} vs {b:?}"),
    }
});
