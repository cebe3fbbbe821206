//! `SpiffeId::new` and `TrustDomain::new` on arbitrary text.
//!
//! An accepted ID must be stored exactly as given (no normalisation: URI SANs
//! are compared byte for byte), split into a trust domain and path that
//! reassemble it, and re-parse equal. Its trust domain must stand on its own.

#![no_main]

use hallmark_core::spiffe_id::{MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN};
use hallmark_core::{SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    check_spiffe_id(input);
    check_trust_domain(input);
});

fn check_spiffe_id(input: &str) {
    let Ok(id) = SpiffeId::new(input) else {
        return;
    };
    assert_eq!(id.to_string(), input, "Display of {input:?}");
    assert_eq!(id.as_str(), input, "as_str of {input:?}");
    assert!(
        input.len() <= MAX_SPIFFE_ID_LEN,
        "{input:?} is over the length cap"
    );
    assert_eq!(
        SpiffeId::new(&id.to_string()).as_ref(),
        Ok(&id),
        "re-parse of {input:?}"
    );

    let td_name = id.trust_domain_name();
    let path = id.path();
    assert_eq!(
        format!("spiffe://{td_name}{path}"),
        input,
        "trust domain + path of {input:?}"
    );
    assert!(!td_name.is_empty() && td_name.len() <= MAX_TRUST_DOMAIN_LEN);
    assert!(
        path.is_empty() || (path.starts_with('/') && !path.ends_with('/')),
        "path {path:?} of {input:?}"
    );

    let td = TrustDomain::new(td_name)
        .unwrap_or_else(|e| panic!("trust domain {td_name:?} of accepted {input:?} refused: {e}"));
    assert_eq!(td.name(), td_name);
    assert_eq!(id.trust_domain(), td);
    assert!(id.is_member_of(&td));
    if path.is_empty() {
        assert_eq!(td.id(), id, "trust domain ID of {input:?}");
        assert!(
            SpiffeId::new_workload(input).is_err(),
            "{input:?} has no path"
        );
    } else {
        assert_eq!(
            td.id_with_path(path).as_ref(),
            Ok(&id),
            "id_with_path of {input:?}"
        );
        assert_eq!(SpiffeId::new_workload(input).as_ref(), Ok(&id));
    }

    let json = serde_json::to_string(&id).unwrap_or_else(|e| panic!("serialising {input:?}: {e}"));
    let back: SpiffeId =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("deserialising {json}: {e}"));
    assert_eq!(back, id, "serde round trip of {input:?}");
}

/// `TrustDomain::new` takes a bare name or a trust domain ID; either way the
/// name it keeps must make a valid path-less SPIFFE ID.
fn check_trust_domain(input: &str) {
    let Ok(td) = TrustDomain::new(input) else {
        return;
    };
    let name = td.name();
    assert!(
        input == name || input.strip_prefix("spiffe://") == Some(name),
        "name {name:?} is not what {input:?} spelled"
    );
    let id = SpiffeId::new(&format!("spiffe://{name}"))
        .unwrap_or_else(|e| panic!("trust domain {input:?} accepted but its ID is not: {e}"));
    assert_eq!(td.id(), id);
    assert_eq!(id.path(), "");
    assert_eq!(
        TrustDomain::new(name).as_ref(),
        Ok(&td),
        "re-parse of {input:?}"
    );
}
