//! The federation part of the conformance suite: relationships and the
//! entries' federation fields.

use hallmark_core::TrustDomain;

use super::{list, ok, Run};
use crate::prelude::*;
use crate::{EntryFilter, FederationProfile, FederationRecord, FederationRefresh};

fn trust_domain(name: &str) -> TrustDomain {
    match TrustDomain::new(name) {
        Ok(td) => td,
        Err(e) => panic!("conformance: test trust domain `{name}` {e}"),
    }
}

pub(super) async fn entry_federation_fields(store: &dyn Store, run: &Run) {
    let mut spec = run.spec("fed/web", "n1", &["fed"]);
    spec.federates_with = vec![trust_domain("alpha.example"), trust_domain("beta.example")];
    spec.oidc_claims = vec!["context".into(), "node".into()];
    let e = ok(
        "create federating entry",
        store.create_entry(&spec, 7).await,
    );
    assert_eq!(
        (&e.spec.federates_with, &e.spec.oidc_claims),
        (&spec.federates_with, &spec.oidc_claims),
        "conformance: create_entry must return federates_with and oidc_claims"
    );
    let got = ok("get federating entry", store.get_entry(&e.id).await);
    assert_eq!(
        got.as_ref(),
        Some(&e),
        "conformance: get_entry must return federates_with and oidc_claims"
    );
    let listed = list(
        store,
        "list federating entry",
        EntryFilter {
            spiffe_id: Some(spec.spiffe_id.clone()),
            ..EntryFilter::default()
        },
    )
    .await;
    assert_eq!(
        listed,
        vec![e.clone()],
        "conformance: list_entries must return federates_with and oidc_claims"
    );
    ok("cleanup", store.delete_entry(&e.id).await);
}

pub(super) async fn federations(store: &dyn Store, run: &Run) {
    // Trust domain names allow only lowercase letters, digits, `-`, `.`
    // and `_`: the run tag (a UUID) qualifies.
    let td = |label: &str| trust_domain(&format!("{label}.{}.conformance.example", run.tag));
    let ours = |list: Vec<FederationRecord>| {
        list.into_iter()
            .filter(|f| f.trust_domain.name().contains(&run.tag))
            .collect::<Vec<_>>()
    };
    let spiffe = FederationRecord {
        trust_domain: td("b"),
        bundle_endpoint_url: "https://b.example:8443/".into(),
        profile: FederationProfile::HttpsSpiffe,
        endpoint_spiffe_id: format!("spiffe://{}/hallmark/server", td("b")),
        web_ca_pem: Vec::new(),
        bundle: br#"{"keys":[],"spiffe_sequence":3}"#.to_vec(),
        bundle_sequence: 3,
        created_at: 100,
        last_refresh: 0,
        next_refresh: 100,
        last_error: String::new(),
    };
    let web = FederationRecord {
        trust_domain: td("a"),
        bundle_endpoint_url: "https://a.example/bundle".into(),
        profile: FederationProfile::HttpsWeb,
        endpoint_spiffe_id: String::new(),
        web_ca_pem: b"-----BEGIN CERTIFICATE-----\n...".to_vec(),
        bundle: Vec::new(),
        bundle_sequence: 0,
        created_at: 101,
        last_refresh: 0,
        next_refresh: 101,
        last_error: "not fetched yet".into(),
    };
    assert_eq!(
        ok(
            "get before put",
            store.get_federation(&spiffe.trust_domain).await
        ),
        None,
        "conformance: get_federation of an unknown trust domain"
    );
    ok("put_federation", store.put_federation(&spiffe).await);
    ok("put_federation", store.put_federation(&web).await);
    assert_eq!(
        ok(
            "get_federation",
            store.get_federation(&spiffe.trust_domain).await
        ),
        Some(spiffe.clone()),
        "conformance: get_federation must return the record as put, bytes intact"
    );
    let all = ok("list_federations", store.list_federations().await);
    for pair in all.windows(2) {
        assert!(
            pair[0].trust_domain.name() < pair[1].trust_domain.name(),
            "conformance: list_federations not ordered by trust domain"
        );
    }
    assert_eq!(
        ours(all),
        vec![web.clone(), spiffe.clone()],
        "conformance: list_federations returns every relationship by name"
    );

    // An operator edit replaces every field.
    let edited = FederationRecord {
        bundle_endpoint_url: "https://b2.example/".into(),
        ..spiffe.clone()
    };
    ok("put again", store.put_federation(&edited).await);
    // A refresh then writes its outcome without undoing the edit.
    let fetched = FederationRefresh::Fetched {
        bundle: br#"{"keys":[],"spiffe_sequence":4}"#.to_vec(),
        sequence: 4,
        at: 200,
        next_refresh: 500,
    };
    assert!(
        ok(
            "record fetched",
            store
                .record_federation_refresh(&edited.trust_domain, &fetched)
                .await
        ),
        "conformance: record_federation_refresh of a known relationship must say true"
    );
    let after_fetch = FederationRecord {
        bundle: br#"{"keys":[],"spiffe_sequence":4}"#.to_vec(),
        bundle_sequence: 4,
        last_refresh: 200,
        next_refresh: 500,
        ..edited.clone()
    };
    assert_eq!(
        ok("get after fetch", store.get_federation(&edited.trust_domain).await),
        Some(after_fetch.clone()),
        "conformance: a fetch replaces bundle, sequence and times only, and keeps the edited endpoint"
    );
    let failed = FederationRefresh::Failed {
        error: "connection refused".into(),
        next_refresh: 510,
    };
    ok(
        "record failure",
        store
            .record_federation_refresh(&edited.trust_domain, &failed)
            .await,
    );
    assert_eq!(
        ok(
            "get after failure",
            store.get_federation(&edited.trust_domain).await
        ),
        Some(FederationRecord {
            last_error: "connection refused".into(),
            next_refresh: 510,
            ..after_fetch.clone()
        }),
        "conformance: a failed fetch keeps the bundle and last_refresh"
    );
    ok(
        "record fetched after failure",
        store
            .record_federation_refresh(&edited.trust_domain, &fetched)
            .await,
    );
    assert_eq!(
        ok(
            "get after recovery",
            store.get_federation(&edited.trust_domain).await
        ),
        Some(after_fetch),
        "conformance: a successful fetch clears last_error"
    );

    assert!(
        ok(
            "delete",
            store.delete_federation(&spiffe.trust_domain).await
        ),
        "conformance: delete_federation of a known relationship must say true"
    );
    assert!(
        !ok(
            "delete again",
            store.delete_federation(&spiffe.trust_domain).await
        ),
        "conformance: delete_federation of an unknown relationship must say false"
    );
    assert!(
        !ok(
            "refresh after delete",
            store
                .record_federation_refresh(&spiffe.trust_domain, &failed)
                .await
        ),
        "conformance: record_federation_refresh must not recreate a deleted relationship"
    );
    assert_eq!(
        ok(
            "get after delete",
            store.get_federation(&spiffe.trust_domain).await
        ),
        None,
        "conformance: a deleted relationship is gone"
    );
    ok("cleanup", store.delete_federation(&web.trust_domain).await);
}
