//! The signing-authority part of the conformance suite.

use super::{ok, Run};
use crate::prelude::*;
use crate::{AuthorityKind, AuthorityRecord};

pub(super) async fn authorities(store: &dyn Store, run: &Run) {
    let x1 = AuthorityRecord {
        id: format!("{}-x-a-newer", run.tag),
        kind: AuthorityKind::X509,
        state: "active".into(),
        alg: "ec-p256".into(),
        key_pkcs8: vec![0x30, 0x00, 0xff, 0x00, 0x01],
        cert_der: vec![0x30, 0x82, 0x00, 0x00, 0xff],
        chain_der: vec![vec![0x30, 0x01], vec![0x30, 0x02, 0x00]],
        created_at: 100,
        not_after: 10_000,
    };
    let x0 = AuthorityRecord {
        id: format!("{}-x-z-older", run.tag),
        state: "retired".into(),
        chain_der: Vec::new(),
        // Older but sorting after x1 by id, so the order shows which key
        // the listing used.
        created_at: 50,
        ..x1.clone()
    };
    let j1 = AuthorityRecord {
        id: format!("{}-j1", run.tag),
        kind: AuthorityKind::Jwt,
        state: "active".into(),
        alg: "RS256".into(),
        key_pkcs8: vec![7; 1200],
        cert_der: Vec::new(),
        chain_der: Vec::new(),
        created_at: 75,
        not_after: i64::MAX,
    };
    for a in [&x1, &x0, &j1] {
        ok("put_authority", store.put_authority(a).await);
    }
    let ours = |list: Vec<AuthorityRecord>| {
        list.into_iter()
            .filter(|a| a.id.starts_with(&run.tag))
            .collect::<Vec<_>>()
    };

    let x509 = ok(
        "list x509",
        store.list_authorities(AuthorityKind::X509).await,
    );
    for pair in x509.windows(2) {
        assert!(
            (pair[0].created_at, &pair[0].id) <= (pair[1].created_at, &pair[1].id),
            "conformance: list_authorities not ordered by created_at"
        );
    }
    assert_eq!(
        ours(x509),
        vec![x0.clone(), x1.clone()],
        "conformance: X.509 authorities, oldest first, bytes intact"
    );
    let jwt = ok("list jwt", store.list_authorities(AuthorityKind::Jwt).await);
    assert_eq!(
        ours(jwt),
        vec![j1.clone()],
        "conformance: JWT authorities only"
    );

    // Replacing keeps one record and replaces the chain wholesale.
    let retired = AuthorityRecord {
        state: "retired".into(),
        chain_der: vec![vec![0x30, 0x09]],
        not_after: 20_000,
        ..x1.clone()
    };
    ok("put again", store.put_authority(&retired).await);
    let x509 = ours(ok(
        "list x509",
        store.list_authorities(AuthorityKind::X509).await,
    ));
    assert_eq!(
        x509,
        vec![x0.clone(), retired.clone()],
        "conformance: put_authority must replace by id, chain included"
    );

    let chainless = AuthorityRecord {
        chain_der: Vec::new(),
        ..retired
    };
    ok("put without chain", store.put_authority(&chainless).await);
    let x509 = ours(ok(
        "list x509",
        store.list_authorities(AuthorityKind::X509).await,
    ));
    assert_eq!(
        x509,
        vec![x0, chainless],
        "conformance: an emptied chain must come back empty"
    );
}
