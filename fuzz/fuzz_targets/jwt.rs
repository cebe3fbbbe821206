//! `validate_jwt_svid` on arbitrary tokens against the fixture bundle (one
//! EC P-256 and one RSA key, trust domain example.org).
//!
//! No token may validate unless the fixture keys signed its header and
//! claims: the signing input (`header.claims`) of a validated token must be
//! one of the tokens minted from the fixture templates. (Comparing signing
//! inputs rather than whole tokens allows the other valid ECDSA signature,
//! (r, n - s), which is not a forgery.) A validated token's `sub` must be
//! the returned SPIFFE ID and its `aud` must include the audience.

#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use hallmark_ca::{validate_jwt_svid, Bundle};
use hallmark_core::TrustDomain;
use hallmark_fuzz::{validation_time, Fixtures, AUDIENCE, TRUST_DOMAIN};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct State {
    bundle: Bundle,
    signed_inputs: HashSet<String>,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let fixtures = Fixtures::from_json(include_str!("../fixtures/keys.json"))
            .unwrap_or_else(|e| panic!("loading fixtures: {e}"));
        let tokens = fixtures
            .minted_tokens()
            .unwrap_or_else(|e| panic!("minting: {e}"));
        let bundle = fixtures.bundle;
        let mut signed_inputs = HashSet::new();
        for t in tokens {
            let verdict =
                validate_jwt_svid(&t.token, AUDIENCE, &lookup(&bundle), validation_time());
            assert_eq!(
                verdict.is_ok(),
                t.valid,
                "fixture token {}: {verdict:?}",
                t.name
            );
            let (input, _) = t
                .token
                .rsplit_once('.')
                .unwrap_or_else(|| panic!("token {}", t.name));
            signed_inputs.insert(input.to_string());
        }
        State {
            bundle,
            signed_inputs,
        }
    })
}

fn lookup(bundle: &Bundle) -> impl Fn(&TrustDomain) -> Option<Bundle> + '_ {
    move |td: &TrustDomain| (td.name() == TRUST_DOMAIN).then(|| bundle.clone())
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let state = state();
    let Ok(validated) =
        validate_jwt_svid(token, AUDIENCE, &lookup(&state.bundle), validation_time())
    else {
        return;
    };
    let signing_input = token.rsplit_once('.').map(|(input, _)| input);
    assert!(
        signing_input.is_some_and(|i| state.signed_inputs.contains(i)),
        "a token the fixture keys never signed validated: {token}"
    );
    assert_eq!(
        validated.claims.get("sub").and_then(Value::as_str),
        Some(validated.spiffe_id.as_str()),
        "sub of {token}"
    );
    assert_eq!(
        validated.spiffe_id.trust_domain_name(),
        TRUST_DOMAIN,
        "{token}"
    );
    let aud = validated.claims.get("aud");
    let has_audience = match aud {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    assert!(has_audience, "aud {aud:?} of {token}");
});
