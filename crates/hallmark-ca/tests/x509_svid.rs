//! X.509 authorities end to end: roots, loaded intermediates, SVID issuance
//! checked rule by rule with an independent parser, and verification.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_ca::{
    generate_key_and_csr, spiffe_id_from_cert, verify_x509_svid, CaError, CsrError,
    StoredAuthority, X509Authority,
};
use hallmark_core::{SpiffeId, TrustDomain};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::parse_x509_certificate;

const NOW: u64 = 1_800_000_000;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn dns_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(*d),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn svid_follows_every_x509_svid_rule() {
    let ca = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let workload = id("spiffe://example.org/ns/prod/web");
    let (_key, csr) = generate_key_and_csr(&workload).unwrap();
    let dns = vec!["web.example.org".to_string(), "web".to_string()];
    let chain = ca
        .sign_x509_svid(&csr, &workload, &dns, HOUR, at(NOW))
        .unwrap();
    assert_eq!(chain.len(), 1, "a root CA adds no intermediates");

    assert_eq!(
        verify_x509_svid(&chain, &[ca.cert_der().to_vec()], at(NOW)).unwrap(),
        workload
    );
    assert_eq!(spiffe_id_from_cert(&chain[0]).unwrap(), workload);

    let leaf = parse(&chain[0]);
    let root = parse(ca.cert_der());
    assert_eq!(uri_sans(&leaf), vec![workload.as_str()]);
    assert_eq!(dns_sans(&leaf), vec!["web.example.org", "web"]);
    let cn: Vec<_> = leaf
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cn, vec!["web.example.org"]);

    let ku = leaf.key_usage().unwrap().expect("keyUsage present");
    assert!(ku.critical, "keyUsage must be critical");
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    let bc = leaf
        .basic_constraints()
        .unwrap()
        .expect("basicConstraints present");
    assert!(!bc.value.ca);
    let bc_ext = leaf
        .extensions()
        .iter()
        .find(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_BASIC_CONSTRAINTS)
        .unwrap();
    assert!(bc_ext.critical);
    assert_eq!(
        bc_ext.value,
        &[0x30, 0x00],
        "cA=false is the DEFAULT, so DER omits it"
    );
    let eku = leaf.extended_key_usage().unwrap().expect("EKU present");
    assert!(eku.value.server_auth && eku.value.client_auth);

    assert_eq!(leaf.validity().not_before.timestamp(), NOW as i64 - 10);
    assert_eq!(leaf.validity().not_after.timestamp(), NOW as i64 + 3600);
    let serial = leaf.raw_serial();
    assert_eq!(serial.len(), 16);
    assert_eq!(serial[0] & 0x80, 0, "serial must be positive");

    assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());
    let ski = root
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap();
    let aki = leaf
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(k) => {
                k.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(aki, ski);
    assert_eq!(
        leaf.public_key().raw,
        hallmark_ca::verify_csr(&csr).unwrap().as_slice()
    );
}

#[test]
fn not_after_is_capped_by_the_ca() {
    let ca = X509Authority::generate_root(&td(), HOUR, at(NOW)).unwrap();
    let workload = id("spiffe://example.org/w");
    let (_, csr) = generate_key_and_csr(&workload).unwrap();
    let chain = ca
        .sign_x509_svid(&csr, &workload, &[], DAY, at(NOW + 1800))
        .unwrap();
    assert_eq!(
        parse(&chain[0]).validity().not_after.timestamp(),
        NOW as i64 + 3600
    );
    assert_eq!(ca.not_after(), at(NOW + 3600));
}

#[test]
fn csr_names_are_ignored() {
    let ca = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let asked = id("spiffe://example.org/admin");
    let granted = id("spiffe://example.org/web");
    let (_, csr) = generate_key_and_csr(&asked).unwrap();
    let chain = ca
        .sign_x509_svid(&csr, &granted, &[], HOUR, at(NOW))
        .unwrap();
    assert_eq!(uri_sans(&parse(&chain[0])), vec![granted.as_str()]);
}

#[test]
fn bad_csrs_are_refused_before_signing() {
    let ca = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let workload = id("spiffe://example.org/w");
    let (_, mut csr) = generate_key_and_csr(&workload).unwrap();
    let last = csr.len() - 1;
    csr[last] ^= 0xff;
    assert!(matches!(
        ca.sign_x509_svid(&csr, &workload, &[], HOUR, at(NOW)),
        Err(CaError::Csr(CsrError::BadSignature))
    ));
    assert!(matches!(
        ca.sign_x509_svid(b"garbage", &workload, &[], HOUR, at(NOW)),
        Err(CaError::Csr(CsrError::NotDer(_)))
    ));
}

#[test]
fn rsa_and_ed25519_keys_get_svids() {
    let ca = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let workload = id("spiffe://example.org/w");
    for (alg, key_encipherment) in [
        (&rcgen::PKCS_RSA_SHA256, true),
        (&rcgen::PKCS_ED25519, false),
    ] {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let chain = ca
            .sign_x509_svid(csr.der(), &workload, &[], HOUR, at(NOW))
            .unwrap();
        let leaf = parse(&chain[0]);
        assert_eq!(
            leaf.key_usage().unwrap().unwrap().value.key_encipherment(),
            key_encipherment
        );
        assert_eq!(
            verify_x509_svid(&chain, &[ca.cert_der().to_vec()], at(NOW)).unwrap(),
            workload
        );
    }
}

#[test]
fn server_certificate_works_for_tls_server_auth() {
    let ca = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let server = td().id_with_path("/hallmark/server").unwrap();
    let (_, csr) = generate_key_and_csr(&server).unwrap();
    let chain = ca
        .sign_x509_svid(&csr, &server, &["localhost".to_string()], HOUR, at(NOW))
        .unwrap();
    let leaf = rustls_pki_types::CertificateDer::from(chain[0].as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let root = rustls_pki_types::CertificateDer::from(ca.cert_der());
    let anchors = [webpki::anchor_from_trusted_cert(&root).unwrap()];
    let now = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(NOW));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    ee.verify_is_valid_for_subject_name(&name).unwrap();
}

#[test]
fn verification_failures() {
    let ca = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let other = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let workload = id("spiffe://example.org/w");
    let (_, csr) = generate_key_and_csr(&workload).unwrap();
    let chain = ca
        .sign_x509_svid(&csr, &workload, &[], HOUR, at(NOW))
        .unwrap();
    let roots = vec![ca.cert_der().to_vec()];

    assert!(matches!(
        verify_x509_svid(&chain, &[other.cert_der().to_vec()], at(NOW)),
        Err(CaError::ChainInvalid(webpki::Error::UnknownIssuer))
    ));
    // Both roots present: the right one is found.
    let both = vec![other.cert_der().to_vec(), ca.cert_der().to_vec()];
    assert_eq!(verify_x509_svid(&chain, &both, at(NOW)).unwrap(), workload);
    assert!(matches!(
        verify_x509_svid(&chain, &roots, at(NOW + 3600 + 1)),
        Err(CaError::ChainInvalid(webpki::Error::CertExpired { .. }))
    ));
    assert!(matches!(
        verify_x509_svid(&chain, &roots, at(NOW - 60)),
        Err(CaError::ChainInvalid(webpki::Error::CertNotValidYet { .. }))
    ));
    assert!(matches!(
        verify_x509_svid(&[], &roots, at(NOW)),
        Err(CaError::EmptyChain)
    ));
    assert!(matches!(
        verify_x509_svid(&chain, &[], at(NOW)),
        Err(CaError::NoTrustAnchors)
    ));
    assert!(matches!(
        verify_x509_svid(&chain, &[b"junk".to_vec()], at(NOW)),
        Err(CaError::BadTrustAnchor { index: 0, .. })
    ));
    // A CA certificate is not an SVID, even when it is its own anchor.
    assert!(verify_x509_svid(&roots, &roots, at(NOW)).is_err());
}

/// Leaves that chain correctly but break an X509-SVID rule, issued by an
/// rcgen root so every field can be chosen.
#[test]
fn leaf_rules_are_enforced() {
    use rcgen::{
        CertificateParams, ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair, KeyUsagePurpose as Ku,
        SanType,
    };

    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::default();
    root_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let roots = vec![root.der().to_vec()];

    let uri = |s: &str| SanType::URI(s.try_into().unwrap());
    let good = || {
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![uri("spiffe://example.org/w")];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![Ku::DigitalSignature];
        p.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
        p
    };
    type Tweak = Box<dyn Fn(&mut CertificateParams)>;
    let cases: Vec<(&str, Tweak, &str)> = vec![
        ("valid", Box::new(|_| {}), ""),
        (
            "no EKU is fine",
            Box::new(|p| p.extended_key_usages.clear()),
            "",
        ),
        (
            "two URI SANs",
            Box::new(move |p| p.subject_alt_names.push(uri("spiffe://example.org/x"))),
            "exactly one URI SAN, found 2",
        ),
        (
            "no URI SAN",
            Box::new(|p| p.subject_alt_names.clear()),
            "exactly one URI SAN, found 0",
        ),
        (
            "not SPIFFE",
            Box::new(move |p| p.subject_alt_names = vec![uri("https://example.org/w")]),
            "not a valid SPIFFE ID",
        ),
        (
            "no path",
            Box::new(move |p| p.subject_alt_names = vec![uri("spiffe://example.org")]),
            "must have a path",
        ),
        (
            "no keyUsage",
            Box::new(|p| p.key_usages.clear()),
            "keyUsage extension is required",
        ),
        (
            "no digitalSignature",
            Box::new(|p| p.key_usages = vec![Ku::KeyEncipherment]),
            "must include digitalSignature",
        ),
        (
            "keyCertSign",
            Box::new(|p| p.key_usages.push(Ku::KeyCertSign)),
            "must not include keyCertSign",
        ),
        (
            "cRLSign",
            Box::new(|p| p.key_usages.push(Ku::CrlSign)),
            "must not include keyCertSign or cRLSign",
        ),
        (
            "server-only EKU",
            Box::new(|p| p.extended_key_usages = vec![Eku::ServerAuth]),
            "chain does not verify",
        ),
        (
            "client-only EKU",
            Box::new(|p| p.extended_key_usages = vec![Eku::ClientAuth]),
            "must include serverAuth and clientAuth",
        ),
    ];
    for (name, tweak, want) in cases {
        let mut params = good();
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &root, &root_key).unwrap();
        let result = verify_x509_svid(&[leaf.der().to_vec()], &roots, SystemTime::now());
        match (want, result) {
            ("", Ok(id)) => assert_eq!(id.as_str(), "spiffe://example.org/w", "{name}"),
            ("", Err(e)) => panic!("{name}: unexpected error {e}"),
            (want, Ok(_)) => panic!("{name}: accepted, expected `{want}`"),
            (want, Err(e)) => assert!(e.to_string().contains(want), "{name}: `{e}` lacks `{want}`"),
        }
    }
}

#[test]
fn stored_authority_round_trip_keeps_identity() {
    let ca = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let stored = ca.to_stored();
    let json = serde_json::to_string(&stored).unwrap();
    let back: StoredAuthority = serde_json::from_str(&json).unwrap();
    assert!(
        format!("{back:?}").contains("<redacted>"),
        "Debug must not print the key"
    );
    let again = X509Authority::from_stored(&back).unwrap();
    assert_eq!(again.id(), ca.id());
    assert_eq!(again.fingerprint(), ca.fingerprint());
    assert_eq!(again.not_after(), ca.not_after());

    let workload = id("spiffe://example.org/w");
    let (_, csr) = generate_key_and_csr(&workload).unwrap();
    let chain = again
        .sign_x509_svid(&csr, &workload, &[], HOUR, at(NOW))
        .unwrap();
    assert_eq!(
        verify_x509_svid(&chain, &[ca.cert_der().to_vec()], at(NOW)).unwrap(),
        workload
    );

    let other = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let mixed = StoredAuthority {
        key_pkcs8: other.to_stored().key_pkcs8,
        ..stored
    };
    assert!(matches!(
        X509Authority::from_stored(&mixed),
        Err(CaError::KeyMismatch { .. })
    ));
}

const UPSTREAM_ROOT: &str = include_str!("fixtures/upstream-root.pem");
const UPSTREAM_INTERMEDIATE: &str = include_str!("fixtures/upstream-intermediate.pem");
const UPSTREAM_INTERMEDIATE_KEY: &str = include_str!("fixtures/upstream-intermediate.key.pem");
/// Inside the validity of the OpenSSL-made fixtures (2026-2125).
const FIXTURE_TIME: u64 = 1_900_000_000;

fn pem_der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().into_contents()
}

#[test]
fn openssl_intermediate_with_sec1_key_signs_verifiable_svids() {
    let ca = X509Authority::from_pem(
        UPSTREAM_INTERMEDIATE,
        UPSTREAM_INTERMEDIATE_KEY,
        Some(UPSTREAM_ROOT),
    )
    .unwrap();
    let root_der = pem_der(UPSTREAM_ROOT);
    assert_eq!(ca.trust_anchor_der(), root_der.as_slice());
    assert_eq!(ca.cert_der(), pem_der(UPSTREAM_INTERMEDIATE).as_slice());
    assert_eq!(ca.trust_domain().map(|t| t.name()), Some("upstream.test"));
    assert_ne!(ca.fingerprint(), ca.id());

    let workload = id("spiffe://upstream.test/w");
    let (_, csr) = generate_key_and_csr(&workload).unwrap();
    let chain = ca
        .sign_x509_svid(&csr, &workload, &[], HOUR, at(FIXTURE_TIME))
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate, root excluded");
    assert_eq!(chain[1], pem_der(UPSTREAM_INTERMEDIATE));
    assert_eq!(
        verify_x509_svid(&chain, std::slice::from_ref(&root_der), at(FIXTURE_TIME)).unwrap(),
        workload
    );
    // The intermediate's subject (PrintableString, four RDNs) is reproduced
    // byte for byte as the leaf's issuer.
    assert_eq!(
        parse(&chain[0]).issuer().as_raw(),
        parse(&chain[1]).subject().as_raw()
    );

    let again = X509Authority::from_stored(&ca.to_stored()).unwrap();
    assert_eq!(again.id(), ca.id());
    assert_eq!(again.trust_anchor_der(), root_der.as_slice());
}

#[test]
fn loading_refuses_inconsistent_material() {
    // An intermediate without its chain does not reach a root.
    assert!(matches!(
        X509Authority::from_pem(UPSTREAM_INTERMEDIATE, UPSTREAM_INTERMEDIATE_KEY, None),
        Err(CaError::ChainNotRooted { .. })
    ));
    // The root certificate with the intermediate's key.
    assert!(matches!(
        X509Authority::from_pem(UPSTREAM_ROOT, UPSTREAM_INTERMEDIATE_KEY, None),
        Err(CaError::KeyMismatch { .. })
    ));
    // A leaf is not a CA.
    let ca = X509Authority::generate_root(&td(), DAY, at(NOW)).unwrap();
    let workload = id("spiffe://example.org/w");
    let (key, csr) = generate_key_and_csr(&workload).unwrap();
    let chain = ca
        .sign_x509_svid(&csr, &workload, &[], HOUR, at(NOW))
        .unwrap();
    let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", chain[0].clone()));
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key));
    assert!(matches!(
        X509Authority::from_pem(&leaf_pem, &key_pem, None),
        Err(CaError::NotACa { .. })
    ));
    // Two certificates where one is expected.
    let two = format!("{UPSTREAM_ROOT}{UPSTREAM_INTERMEDIATE}");
    assert!(matches!(
        X509Authority::from_pem(&two, UPSTREAM_INTERMEDIATE_KEY, None),
        Err(CaError::BadPem { .. })
    ));
    // A chain that is not the intermediate's issuer.
    let wrong_root = pem::encode(&pem::Pem::new("CERTIFICATE", ca.cert_der().to_vec()));
    assert!(matches!(
        X509Authority::from_pem(
            UPSTREAM_INTERMEDIATE,
            UPSTREAM_INTERMEDIATE_KEY,
            Some(&wrong_root)
        ),
        Err(CaError::SelfCheck { .. })
    ));
}
