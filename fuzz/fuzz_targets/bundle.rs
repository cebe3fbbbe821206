//! `Bundle::from_jwks_json` on arbitrary bytes: bundles arrive from
//! federation endpoints and from the server.
//!
//! An accepted bundle must publish (`to_jwks_json`) to a document that
//! parses back to the same bundle, with no private key member, every JWT
//! key under a unique non-empty kid, and every X.509 authority once.

#![no_main]

use std::sync::OnceLock;

use hallmark_ca::Bundle;
use hallmark_core::TrustDomain;
use hallmark_fuzz::{hex, TRUST_DOMAIN};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

fn trust_domain() -> &'static TrustDomain {
    static TD: OnceLock<TrustDomain> = OnceLock::new();
    TD.get_or_init(|| {
        TrustDomain::new(TRUST_DOMAIN).unwrap_or_else(|e| panic!("{TRUST_DOMAIN}: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let td = trust_domain();
    let Ok(bundle) = Bundle::from_jwks_json(td, data) else {
        return;
    };
    let input = String::from_utf8_lossy(data);
    assert_eq!(&bundle.trust_domain, td);
    for (i, der) in bundle.x509_authorities.iter().enumerate() {
        assert!(
            !bundle.x509_authorities[..i].contains(der),
            "X.509 authority {} listed twice from {input}",
            hex(der)
        );
    }
    for (i, key) in bundle.jwt_authorities.iter().enumerate() {
        assert!(!key.kid.is_empty(), "empty kid from {input}");
        assert!(
            bundle.jwt_authorities[..i].iter().all(|k| k.kid != key.kid),
            "kid {} listed twice from {input}",
            key.kid
        );
    }

    let published = bundle.to_jwks_json();
    let doc: Value = serde_json::from_slice(&published)
        .unwrap_or_else(|e| panic!("published bundle is not JSON ({e}) for input {input}"));
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("published bundle has no keys array for input {input}"));
    assert_eq!(
        keys.len(),
        bundle.x509_authorities.len() + bundle.jwt_authorities.len(),
        "published key count for input {input}"
    );
    for key in keys {
        for m in PRIVATE_MEMBERS {
            assert!(
                key.get(m).is_none(),
                "published key has private member `{m}` for input {input}"
            );
        }
    }

    let reparsed = Bundle::from_jwks_json(td, &published).unwrap_or_else(|e| {
        panic!(
            "published bundle is refused: {e}\ninput {input}\npublished {}",
            String::from_utf8_lossy(&published)
        )
    });
    assert_eq!(
        reparsed,
        bundle,
        "bundle changed on a publish round trip\ninput {input}\npublished {}",
        String::from_utf8_lossy(&published)
    );
});
