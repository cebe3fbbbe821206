//! The token endpoint's request body comes from any local process. Whatever
//! it is, parsing must not panic; an accepted request has a non-empty,
//! sorted, duplicate-free audience of non-blank strings and a valid SPIFFE
//! ID if one was asked for; a refusal carries a message; the answer depends
//! on nothing but the bytes.
#![no_main]

use hallmark_agent::token_endpoint::parse_token_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = parse_token_request(data);
    assert_eq!(first, parse_token_request(data), "not deterministic");
    match first {
        Ok((audience, spiffe_id)) => {
            assert!(!audience.is_empty());
            assert!(audience.windows(2).all(|w| w[0] < w[1]), "{audience:?}");
            assert!(
                audience.iter().all(|a| !a.trim().is_empty()),
                "{audience:?}"
            );
            if let Some(id) = spiffe_id {
                assert!(hallmark_core::SpiffeId::new(id.as_str()).is_ok());
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
