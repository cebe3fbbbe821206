//! Verifying X509-SVIDs and reading SPIFFE IDs from certificates: webpki
//! path validation against trust anchors, then the leaf rules of the SPIFFE
//! X509-SVID specification that webpki does not know about.

use std::time::{Duration, SystemTime};

use hallmark_core::time::unix_secs;
use hallmark_core::SpiffeId;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::CaError;

/// Signature algorithms accepted on certificate chains: everything
/// aws-lc-rs verifies except the legacy/post-quantum oddities no SPIFFE
/// implementation issues.
static CHAIN_SIG_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ECDSA_P521_SHA256,
    webpki::aws_lc_rs::ECDSA_P521_SHA384,
    webpki::aws_lc_rs::ECDSA_P521_SHA512,
    webpki::aws_lc_rs::ED25519,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Verifies an X509-SVID chain (leaf first) against root certificates at
/// `now`, then checks the leaf against the X509-SVID rules. Returns the
/// leaf's SPIFFE ID. Which trust domain the roots belong to is the caller's
/// concern.
pub fn verify_x509_svid(
    chain: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: SystemTime,
) -> Result<SpiffeId, CaError> {
    let (leaf, rest) = chain.split_first().ok_or(CaError::EmptyChain)?;
    let roots: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let anchors = trust_anchors(&roots)?;
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    verify_svid_chain(
        &CertificateDer::from(leaf.as_slice()),
        &intermediates,
        &anchors,
        unix_time(now),
        KeyUsage::client_auth(),
    )
}

/// The SPIFFE ID in a certificate's single URI SAN (with or without path, so
/// signing certificates qualify too).
pub fn spiffe_id_from_cert(der: &[u8]) -> Result<SpiffeId, CaError> {
    let cert = parse_cert(der, "certificate")?;
    single_spiffe_id(&cert, "certificate")
}

pub(crate) fn trust_anchors<'a>(
    roots: &'a [CertificateDer<'a>],
) -> Result<Vec<TrustAnchor<'a>>, CaError> {
    if roots.is_empty() {
        return Err(CaError::NoTrustAnchors);
    }
    roots
        .iter()
        .enumerate()
        .map(|(index, der)| {
            webpki::anchor_from_trusted_cert(der).map_err(|e| CaError::BadTrustAnchor {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Path validation with webpki, then the X509-SVID leaf rules.
pub(crate) fn verify_svid_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    now: UnixTime,
    usage: KeyUsage,
) -> Result<SpiffeId, CaError> {
    let ee = EndEntityCert::try_from(leaf).map_err(CaError::ChainInvalid)?;
    ee.verify_for_usage(
        CHAIN_SIG_ALGS,
        anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(CaError::ChainInvalid)?;
    check_svid_leaf(leaf)
}

fn unix_time(t: SystemTime) -> UnixTime {
    // A pre-epoch clock becomes the epoch, where every certificate is
    // invalid: fail closed.
    UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(unix_secs(t)).unwrap_or(0),
    ))
}

/// The X509-SVID leaf rules webpki does not know about.
fn check_svid_leaf(der: &[u8]) -> Result<SpiffeId, CaError> {
    let cert = parse_cert(der, "X509-SVID leaf")?;
    let id = single_spiffe_id(&cert, "X509-SVID")?;
    let rule = |rule: &'static str| CaError::SvidRule {
        id: id.to_string(),
        rule,
    };
    let bad = |e: x509_parser::error::X509Error| CaError::BadCertificate {
        what: format!("X509-SVID for `{id}`"),
        reason: e.to_string(),
    };
    if id.path().is_empty() {
        return Err(rule("the SPIFFE ID of a leaf must have a path"));
    }
    if cert
        .basic_constraints()
        .map_err(bad)?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(rule("a leaf must not be a CA (basicConstraints cA is set)"));
    }
    let ku = cert
        .key_usage()
        .map_err(bad)?
        .ok_or_else(|| rule("keyUsage extension is required"))?;
    if !ku.critical {
        return Err(rule("keyUsage must be critical"));
    }
    if !ku.value.digital_signature() {
        return Err(rule("keyUsage must include digitalSignature"));
    }
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(rule("keyUsage must not include keyCertSign or cRLSign"));
    }
    if let Some(eku) = cert.extended_key_usage().map_err(bad)? {
        if !(eku.value.server_auth && eku.value.client_auth) {
            return Err(rule(
                "extendedKeyUsage, when present, must include serverAuth and clientAuth",
            ));
        }
    }
    Ok(id)
}

fn single_spiffe_id(cert: &X509Certificate<'_>, what: &'static str) -> Result<SpiffeId, CaError> {
    match uri_sans(cert, what)?.as_slice() {
        [uri] => SpiffeId::new(uri).map_err(|source| CaError::BadSpiffeId {
            uri: uri.to_string(),
            source,
        }),
        other => Err(CaError::UriSanCount {
            what,
            count: other.len(),
        }),
    }
}

pub(crate) fn uri_sans<'a>(
    cert: &'a X509Certificate<'_>,
    what: &'static str,
) -> Result<Vec<&'a str>, CaError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::BadCertificate {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}
pub(crate) fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, CaError> {
    let bad = |reason: String| CaError::BadCertificate {
        what: what.to_string(),
        reason,
    };
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes of trailing data", rest.len())));
    }
    Ok(cert)
}
