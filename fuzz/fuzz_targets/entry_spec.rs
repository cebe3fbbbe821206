//! `EntrySpec::parse` on arbitrary operator input.
//!
//! The input is the fields of a `RawEntrySpec` separated by NUL bytes, in
//! this order (missing trailing fields are empty), so seeds stay readable:
//!
//! ```text
//! spiffe_id \0 parent_id \0 selectors \0 x509_ttl \0 jwt_ttl \0 dns_names \0 hint \0 admin
//! \0 federates_with \0 oidc_claims
//! ```
//!
//! `selectors` and `dns_names` are newline-separated lists (neither may hold
//! a control character, so nothing valid is lost by the split); the TTLs are
//! decimal, empty for "use the default"; `admin` is true when it is `1`.
//!
//! An accepted spec must keep every rule the server relies on later: ID in
//! the server's trust domain, selectors valid, sorted and unique, TTLs in
//! range. Parsing must be idempotent, and the spec must survive JSON (the
//! store) and the wire (`hallmark_proto::hallmark::Entry`) unchanged.

#![no_main]

use hallmark_core::entry::{
    DEFAULT_JWT_TTL_SECS, DEFAULT_X509_TTL_SECS, MAX_TTL_SECS, MIN_TTL_SECS,
};
use hallmark_core::{Entry, EntryId, EntrySpec, RawEntrySpec, Selector, SelectorSet, SpiffeId};
use hallmark_proto::hallmark as pb;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const TRUST_DOMAIN: &str = "example.org";

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = input.split('\0');
    let mut next = || fields.next().unwrap_or("");
    let spiffe_id = next();
    let parent_id = next();
    let selectors = list(next());
    let Some(x509_ttl_secs) = ttl(next()) else {
        return;
    };
    let Some(jwt_ttl_secs) = ttl(next()) else {
        return;
    };
    let dns_names = list(next());
    let hint = next();
    let admin = next() == "1";
    let federates_with = list(next());
    let oidc_claims = list(next());
    let raw = RawEntrySpec {
        spiffe_id,
        parent_id,
        selectors,
        x509_ttl_secs,
        jwt_ttl_secs,
        dns_names,
        hint,
        admin,
        federates_with,
        oidc_claims,
    };
    let Ok(spec) = EntrySpec::parse(&raw, TRUST_DOMAIN) else {
        return;
    };
    check_spec(&raw, &spec);
});

fn list(field: &str) -> Vec<&str> {
    if field.is_empty() {
        Vec::new()
    } else {
        field.split('\n').collect()
    }
}

/// `Some(None)` for an empty field, `None` for text that is not a u64 (the
/// input is skipped: the API takes numbers, not text).
fn ttl(field: &str) -> Option<Option<u64>> {
    if field.is_empty() {
        Some(None)
    } else {
        field.parse().ok().map(Some)
    }
}

fn check_spec(raw: &RawEntrySpec<'_>, spec: &EntrySpec) {
    assert_eq!(
        spec.spiffe_id.as_str(),
        raw.spiffe_id,
        "spiffe_id of {raw:?}"
    );
    assert_eq!(spec.spiffe_id.trust_domain_name(), TRUST_DOMAIN, "{raw:?}");
    assert!(
        !spec.spiffe_id.path().is_empty(),
        "workload ID without path in {raw:?}"
    );
    assert_eq!(
        spec.parent_id.as_str(),
        raw.parent_id,
        "parent_id of {raw:?}"
    );
    assert!(
        !spec.parent_id.path().is_empty(),
        "parent ID without path in {raw:?}"
    );

    assert!(!spec.selectors.is_empty(), "no selectors in {raw:?}");
    assert!(
        spec.selectors.windows(2).all(|w| w[0] < w[1]),
        "selectors not sorted and unique: {:?}",
        spec.selectors
    );
    for sel in &spec.selectors {
        let text = sel.to_string();
        assert_eq!(
            Selector::new(&text).as_ref(),
            Ok(sel),
            "selector {text:?} does not re-parse"
        );
        assert!(
            raw.selectors.contains(&text.as_str()),
            "selector {text:?} not in {raw:?}"
        );
    }
    for s in &raw.selectors {
        assert!(
            spec.selectors.iter().any(|sel| sel.to_string() == *s),
            "{s:?} was dropped"
        );
    }

    for (which, secs, asked, default) in [
        (
            "X.509",
            spec.x509_ttl_secs,
            raw.x509_ttl_secs,
            DEFAULT_X509_TTL_SECS,
        ),
        (
            "JWT",
            spec.jwt_ttl_secs,
            raw.jwt_ttl_secs,
            DEFAULT_JWT_TTL_SECS,
        ),
    ] {
        assert!(
            (MIN_TTL_SECS..=MAX_TTL_SECS).contains(&secs),
            "{which} TTL {secs} out of range for {raw:?}"
        );
        assert_eq!(secs, asked.unwrap_or(default), "{which} TTL of {raw:?}");
    }

    let lowered: Vec<String> = raw
        .dns_names
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    assert_eq!(spec.dns_names, lowered, "dns_names of {raw:?}");
    assert_eq!(spec.hint, raw.hint);
    assert_eq!(spec.admin, raw.admin);

    // Parsing what was accepted gives the same spec: nothing in it depends
    // on how the operator spelled the input beyond what the spec keeps.
    let selectors: Vec<String> = spec.selectors.iter().map(ToString::to_string).collect();
    let federated: Vec<String> = spec
        .federates_with
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    let again = RawEntrySpec {
        spiffe_id: spec.spiffe_id.as_str(),
        parent_id: spec.parent_id.as_str(),
        selectors: selectors.iter().map(String::as_str).collect(),
        x509_ttl_secs: Some(spec.x509_ttl_secs),
        jwt_ttl_secs: Some(spec.jwt_ttl_secs),
        dns_names: spec.dns_names.iter().map(String::as_str).collect(),
        hint: &spec.hint,
        admin: spec.admin,
        federates_with: federated.iter().map(String::as_str).collect(),
        oidc_claims: spec.oidc_claims.iter().map(String::as_str).collect(),
    };
    assert_eq!(
        EntrySpec::parse(&again, TRUST_DOMAIN).as_ref(),
        Ok(spec),
        "re-parse of {raw:?}"
    );

    // The agent that is the entry's parent, attesting exactly its selectors,
    // is entitled to it; any other agent is not.
    let attested: SelectorSet = spec.selectors.iter().cloned().collect();
    assert!(
        spec.matches(&spec.parent_id, &attested),
        "{raw:?} does not match its own parent"
    );
    if let Ok(other) = SpiffeId::new(&format!("{}x", spec.parent_id)) {
        assert!(
            !spec.matches(&other, &attested),
            "{raw:?} matched agent {other}"
        );
    }

    let json = serde_json::to_string(spec).unwrap_or_else(|e| panic!("serialising {raw:?}: {e}"));
    let back: EntrySpec =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("deserialising {json}: {e}"));
    assert_eq!(&back, spec, "JSON round trip of {raw:?}");

    let entry = Entry {
        id: entry_id(),
        spec: spec.clone(),
        created_at: 1_700_000_000,
        revision: 7,
    };
    let wire = pb::Entry::from(&entry);
    let back = Entry::try_from(&wire).unwrap_or_else(|e| panic!("wire form of {raw:?}: {e}"));
    assert_eq!(back, entry, "wire round trip of {raw:?}");
}

/// A fixed id keeps runs reproducible (a random one would be as good a test).
fn entry_id() -> EntryId {
    static ID: OnceLock<EntryId> = OnceLock::new();
    ID.get_or_init(|| {
        EntryId::parse("7f3c2a4e-1b2c-4d5e-8f90-123456789abc")
            .unwrap_or_else(|e| panic!("fixed entry id: {e}"))
    })
    .clone()
}
