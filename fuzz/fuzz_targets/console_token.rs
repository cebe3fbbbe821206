//! A console token arrives from any browser or script (the login form, a
//! bearer header, a login link). Checking it must not panic, must answer
//! the same every time, and may accept only the shape a server mints:
//! `hmc1.<expiry>.<32 hex nonce>.<64 hex MAC>` with an expiry after now.
#![no_main]

use hallmark_server::console_key::ConsoleKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let key = ConsoleKey::from_bytes(&[42; 32]);
    let now = 1_800_000_000;
    let first = key.verify(token, now);
    assert_eq!(first, key.verify(token, now), "not deterministic");
    if let Ok(expiry) = first {
        assert!(expiry > now);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 4, "{token}");
        assert_eq!(parts[0], "hmc1");
        assert_eq!(parts[2].len(), 32);
        assert_eq!(parts[3].len(), 64);
    }
    // What the key mints, it accepts.
    let minted = key.mint(now + 60);
    assert_eq!(key.verify(&minted, now), Ok(now + 60));
});
