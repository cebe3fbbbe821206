//! Tests of the authority state machine, against a real datastore.

use super::*;
use hallmark_store::prelude::*;
use hallmark_store::SqliteStore;

const HOUR: Duration = Duration::from_secs(3600);

async fn manager(store: Arc<dyn Store>) -> CaManager {
    let td: TrustDomain = "example.org".parse().unwrap();
    CaManager::load_or_create(
        store,
        &td,
        &CaSource::SelfSigned,
        Duration::from_secs(86_400),
        KeyAlg::EcP256,
        KeyAlg::EcP256,
        DEFAULT_REFRESH_HINT,
    )
    .await
    .unwrap()
}

async fn memory() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_in_memory().await.unwrap())
}

fn rule(e: AuthorityError) -> String {
    match e {
        AuthorityError::Rule { rule, .. } => rule,
        other => panic!("expected a rule violation, got {other}"),
    }
}

#[tokio::test]
async fn x509_rotation_publishes_first_then_signs_then_retires() {
    let ca = manager(memory().await).await;
    let now = SystemTime::now();
    let first = ca.current().x509.id().to_string();
    let seq0 = ca.bundle().sequence;
    let mut rx = ca.subscribe_bundle();

    let p = ca.prepare(AuthorityKind::X509, now).await.unwrap();
    assert_eq!(p.state, "prepared");
    assert!(rx.has_changed().unwrap(), "prepare publishes a bundle");
    let b = rx.borrow_and_update().clone();
    assert_eq!(
        b.x509_authorities.len(),
        2,
        "the prepared root is published"
    );
    assert!(b.sequence > seq0);
    assert_eq!(ca.current().x509.id(), first, "a prepared CA signs nothing");

    let a = ca
        .activate(AuthorityKind::X509, None, HOUR, now)
        .await
        .unwrap();
    assert_eq!(a.id, p.id);
    assert_eq!(ca.current().x509.id(), p.id, "the activated CA signs");
    let b2 = ca.bundle();
    assert_eq!(
        b2.x509_authorities.len(),
        2,
        "the retired root stays published"
    );
    assert!(b2.sequence > b.sequence);
    let records = ca.list(Some(AuthorityKind::X509)).await.unwrap();
    let old = records.iter().find(|r| r.id == first).unwrap();
    assert_eq!(old.state, "retired");
    assert_eq!(
        old.not_after,
        unix_secs(now) + 3600,
        "published for the window"
    );

    // After its window the retired root leaves the bundle.
    let later = now + HOUR + Duration::from_secs(1);
    assert!(ca.reload_at(later).await.unwrap());
    let b3 = ca.bundle();
    assert_eq!(
        b3.x509_authorities,
        vec![ca.current().x509.cert_der().to_vec()]
    );
    assert!(b3.sequence > b2.sequence);
    assert!(!ca.reload_at(later).await.unwrap(), "nothing changed");
}

#[tokio::test]
async fn every_refusal_names_the_rule() {
    let ca = manager(memory().await).await;
    let now = SystemTime::now();
    let active = ca.current().x509.id().to_string();

    let e = rule(
        ca.activate(AuthorityKind::X509, None, HOUR, now)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("no prepared authority"), "{e}");
    let e = rule(
        ca.activate(AuthorityKind::X509, Some(&active), HOUR, now)
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains("it is active") && e.contains("only a prepared"),
        "{e}"
    );
    let e = rule(
        ca.taint(AuthorityKind::X509, &active, now)
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains("it is active") && e.contains("only a retired"),
        "{e}"
    );
    let e = rule(
        ca.revoke(AuthorityKind::X509, &active, now)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("only a tainted"), "{e}");

    let p = ca.prepare(AuthorityKind::X509, now).await.unwrap();
    let e = rule(ca.taint(AuthorityKind::X509, &p.id, now).await.unwrap_err());
    assert!(e.contains("it is prepared"), "{e}");
    let e = rule(
        ca.revoke(AuthorityKind::X509, &p.id, now)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("it is prepared"), "{e}");

    let missing = ca
        .taint(AuthorityKind::X509, "nope", now)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, AuthorityError::NotFound { .. }),
        "{missing}"
    );
    let missing = ca
        .taint(AuthorityKind::Jwt, &active, now)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, AuthorityError::NotFound { .. }),
        "kinds do not mix"
    );

    ca.activate(AuthorityKind::X509, Some(&p.id), HOUR, now)
        .await
        .unwrap();
    let e = rule(
        ca.revoke(AuthorityKind::X509, &active, now)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("it is retired"), "{e}");
    ca.taint(AuthorityKind::X509, &active, now).await.unwrap();
    let e = rule(
        ca.taint(AuthorityKind::X509, &active, now)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("it is tainted"), "{e}");
    ca.revoke(AuthorityKind::X509, &active, now).await.unwrap();
    let e = rule(
        ca.revoke(AuthorityKind::X509, &active, now)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("it is revoked"), "revoke only once: {e}");
}

#[tokio::test]
async fn taint_lists_the_authority_and_revoke_unpublishes_it() {
    let ca = manager(memory().await).await;
    let now = SystemTime::now();
    let old_x509 = ca.current().x509.id().to_string();
    let old_jwt = ca.current().jwt.kid().to_string();
    for kind in [AuthorityKind::X509, AuthorityKind::Jwt] {
        ca.prepare(kind, now).await.unwrap();
        ca.activate(kind, None, HOUR, now).await.unwrap();
    }
    assert_eq!(ca.tainted(), Tainted::default());
    let before = ca.bundle().sequence;
    ca.taint(AuthorityKind::X509, &old_x509, now).await.unwrap();
    ca.taint(AuthorityKind::Jwt, &old_jwt, now).await.unwrap();
    assert_eq!(
        ca.tainted(),
        Tainted {
            x509: vec![old_x509.clone()],
            jwt: vec![old_jwt.clone()],
        }
    );
    let b = ca.bundle();
    assert!(
        b.sequence > before,
        "taint bumps the sequence so agents hear of it"
    );
    assert_eq!(
        b.x509_authorities.len(),
        2,
        "a tainted root is still published"
    );
    assert!(b.jwt_authorities.iter().any(|k| k.kid == old_jwt));

    ca.revoke(AuthorityKind::X509, &old_x509, now)
        .await
        .unwrap();
    ca.revoke(AuthorityKind::Jwt, &old_jwt, now).await.unwrap();
    let b = ca.bundle();
    assert_eq!(
        b.x509_authorities,
        vec![ca.current().x509.cert_der().to_vec()]
    );
    assert!(!b.jwt_authorities.iter().any(|k| k.kid == old_jwt));
    assert_eq!(ca.tainted(), Tainted::default());
}

#[tokio::test]
async fn jwt_and_oidc_keys_rotate_and_old_ones_stay_published() {
    let store = memory().await;
    let ca = manager(store.clone()).await;
    let now = SystemTime::now();
    let old_jwt = ca.current().jwt.kid().to_string();
    let old_oidc = ca.current().oidc.kid().to_string();
    ca.prepare(AuthorityKind::Jwt, now).await.unwrap();
    assert_eq!(ca.current().jwt.kid(), old_jwt);
    assert_eq!(ca.bundle().jwt_authorities.len(), 2);
    let new_jwt = ca
        .activate(AuthorityKind::Jwt, None, HOUR, now)
        .await
        .unwrap();
    assert_eq!(ca.current().jwt.kid(), new_jwt.id);
    assert!(ca.bundle().jwt_authorities.iter().any(|k| k.kid == old_jwt));

    ca.prepare(AuthorityKind::Oidc, now).await.unwrap();
    let new_oidc = ca
        .activate(AuthorityKind::Oidc, None, HOUR, now)
        .await
        .unwrap();
    assert_eq!(ca.current().oidc.kid(), new_oidc.id);
    let kids: Vec<String> = oidc_public_keys(&store, now)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert!(
        kids.contains(&old_oidc) && kids.contains(&new_oidc.id),
        "{kids:?}"
    );
    let kids: Vec<String> = oidc_public_keys(&store, now + HOUR * 2)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(
        kids,
        vec![new_oidc.id.clone()],
        "retired key left after its window"
    );
}

#[tokio::test]
async fn restart_keeps_the_active_authority_and_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let now = SystemTime::now();
    let (id, seq) = {
        let ca = manager(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
        ca.prepare(AuthorityKind::X509, now).await.unwrap();
        ca.activate(AuthorityKind::X509, None, HOUR, now)
            .await
            .unwrap();
        ca.prepare(AuthorityKind::Jwt, now).await.unwrap();
        (ca.current().x509.id().to_string(), ca.bundle().sequence)
    };
    let ca = manager(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
    assert_eq!(ca.current().x509.id(), id);
    assert_eq!(ca.bundle().sequence, seq, "same records, same sequence");
    let last_jwt = ca.list(Some(AuthorityKind::Jwt)).await.unwrap();
    assert_eq!(last_jwt.iter().filter(|r| r.state == "prepared").count(), 1);
}

#[tokio::test]
async fn a_second_server_follows_and_two_actives_converge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let now = SystemTime::now();
    let a = manager(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
    let b = manager(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
    assert_eq!(a.current().x509.id(), b.current().x509.id());

    let p = a.prepare(AuthorityKind::X509, now).await.unwrap();
    assert!(b.reload_at(now).await.unwrap(), "b sees a's prepared root");
    assert_eq!(a.bundle().as_ref(), b.bundle().as_ref());
    a.activate(AuthorityKind::X509, None, HOUR, now)
        .await
        .unwrap();
    assert!(b.reload_at(now).await.unwrap());
    assert_eq!(b.current().x509.id(), p.id, "b signs with the new CA too");

    // Both prepare and activate their own at once: the newest wins.
    let pa = a.prepare(AuthorityKind::X509, now).await.unwrap();
    let pb = b
        .prepare(AuthorityKind::X509, now + Duration::from_secs(1))
        .await
        .unwrap();
    a.activate(AuthorityKind::X509, Some(&pa.id), HOUR, now)
        .await
        .unwrap();
    // b decided before seeing a's activation: write its own directly.
    let mut raw = pb.clone();
    raw.state = "active".into();
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    store.put_authority(&raw).await.unwrap();
    a.reload_at(now).await.unwrap();
    b.reload_at(now).await.unwrap();
    assert_eq!(a.current().x509.id(), pb.id);
    assert_eq!(b.current().x509.id(), pb.id);
    let actives = store
        .list_authorities(AuthorityKind::X509)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.state == "active")
        .count();
    assert_eq!(actives, 1);
}

#[tokio::test]
async fn a_ca_from_files_is_not_prepared() {
    let td: TrustDomain = "example.org".parse().unwrap();
    let root = X509Authority::generate_root(&td, HOUR, SystemTime::now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("ca.pem");
    let key = dir.path().join("ca.key");
    std::fs::write(
        &cert,
        pem::encode(&pem::Pem::new("CERTIFICATE", root.cert_der().to_vec())),
    )
    .unwrap();
    std::fs::write(
        &key,
        pem::encode(&pem::Pem::new("PRIVATE KEY", root.to_stored().key_pkcs8)),
    )
    .unwrap();
    let ca = CaManager::load_or_create(
        memory().await,
        &td,
        &CaSource::Disk {
            cert,
            key,
            chain: None,
        },
        HOUR,
        KeyAlg::EcP256,
        KeyAlg::EcP256,
        DEFAULT_REFRESH_HINT,
    )
    .await
    .unwrap();
    let e = rule(
        ca.prepare(AuthorityKind::X509, SystemTime::now())
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains("--ca-cert") && e.contains("replacing the files"),
        "{e}"
    );
    ca.prepare(AuthorityKind::Jwt, SystemTime::now())
        .await
        .unwrap();
}
