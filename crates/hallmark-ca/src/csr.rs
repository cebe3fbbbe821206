//! PKCS#10 certificate signing requests from agents.
//!
//! A CSR proves possession of a private key and carries its public key; that
//! is all Hallmark takes from it. Subject, SANs and requested extensions are
//! the requester's wishes and are ignored: the registration entry decides what
//! goes into the certificate.
//!
//! The self-signature is checked with aws-lc-rs directly rather than
//! x509-parser's `verify` feature, which would bring a second crypto library.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// RSA keys below this size are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA key aws-lc-rs verifies with.
const MAX_RSA_BITS: usize = 8192;

/// Every way a CSR can be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// The bytes are not a DER-encoded PKCS#10 request.
    #[error("CSR: not a DER-encoded PKCS#10 certification request: {0}")]
    NotDer(String),
    /// A valid request is followed by more bytes.
    #[error("CSR: {0} bytes of trailing data after the request")]
    TrailingData(usize),
    /// The public key type or curve is not one Hallmark accepts.
    #[error(
        "CSR: unsupported public key algorithm {0} (supported: EC P-256, EC P-384, RSA, Ed25519)"
    )]
    UnsupportedKeyAlgorithm(String),
    /// The public key is of a supported type but malformed.
    #[error("CSR: malformed public key: {0}")]
    BadPublicKey(String),
    /// An RSA key shorter than [`MIN_RSA_BITS`].
    #[error("CSR: RSA key is {bits} bits; at least {MIN_RSA_BITS} are required")]
    KeyTooSmall { bits: usize },
    /// An RSA key longer than Hallmark can verify.
    #[error("CSR: RSA key is {bits} bits; at most {MAX_RSA_BITS} are supported")]
    KeyTooLarge { bits: usize },
    /// The signature algorithm is unknown or does not fit the key type.
    #[error("CSR: signature algorithm {sig_alg} is not supported for a {key} key")]
    UnsupportedSignatureAlgorithm { sig_alg: String, key: &'static str },
    /// The self-signature does not verify with the request's own key.
    #[error("CSR: signature does not verify")]
    BadSignature,
}

/// The kinds of public key a CSR may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    EcP256,
    EcP384,
    Rsa,
    Ed25519,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::EcP256 => "EC P-256",
            KeyKind::EcP384 => "EC P-384",
            KeyKind::Rsa => "RSA",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}

/// Parses a CSR, checks its key and self-signature, and returns its
/// SubjectPublicKeyInfo DER. Nothing else in the request is looked at.
pub fn verify_csr(csr_der: &[u8]) -> Result<Vec<u8>, CsrError> {
    check_envelope(csr_der)?;
    let (rest, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|e| CsrError::NotDer(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData(rest.len()));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let kind = key_kind(spki)?;
    let sig_oid = &csr.signature_algorithm.algorithm;
    let alg: &'static dyn VerificationAlgorithm = match kind {
        KeyKind::EcP256 | KeyKind::EcP384 => {
            let sha256 = *sig_oid == OID_SIG_ECDSA_WITH_SHA256;
            let sha384 = *sig_oid == OID_SIG_ECDSA_WITH_SHA384;
            match (kind, sha256, sha384) {
                (KeyKind::EcP256, true, _) => &signature::ECDSA_P256_SHA256_ASN1,
                (KeyKind::EcP256, _, true) => &signature::ECDSA_P256_SHA384_ASN1,
                (KeyKind::EcP384, true, _) => &signature::ECDSA_P384_SHA256_ASN1,
                (KeyKind::EcP384, _, true) => &signature::ECDSA_P384_SHA384_ASN1,
                _ => return Err(unsupported_sig(sig_oid, kind)),
            }
        }
        KeyKind::Rsa => {
            let bits = rsa_modulus_bits(spki)?;
            if bits < MIN_RSA_BITS {
                return Err(CsrError::KeyTooSmall { bits });
            }
            if bits > MAX_RSA_BITS {
                return Err(CsrError::KeyTooLarge { bits });
            }
            if *sig_oid == OID_PKCS1_SHA256WITHRSA {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else if *sig_oid == OID_PKCS1_SHA384WITHRSA {
                &signature::RSA_PKCS1_2048_8192_SHA384
            } else if *sig_oid == OID_PKCS1_SHA512WITHRSA {
                &signature::RSA_PKCS1_2048_8192_SHA512
            } else {
                return Err(unsupported_sig(sig_oid, kind));
            }
        }
        KeyKind::Ed25519 if *sig_oid == OID_SIG_ED25519 => &signature::ED25519,
        KeyKind::Ed25519 => return Err(unsupported_sig(sig_oid, kind)),
    };
    if csr.signature_value.unused_bits != 0 {
        return Err(CsrError::BadSignature);
    }
    UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(info.raw, csr.signature_value.data.as_ref())
        .map_err(|_| CsrError::BadSignature)?;
    Ok(spki.raw.to_vec())
}

/// One DER tag-length header: (tag, header length, content length).
fn der_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *buf.first()?;
    let first = *buf.get(1)? as usize;
    if first < 0x80 {
        return Some((tag, 2, first));
    }
    let n = first & 0x7f;
    // DER: long form only for lengths >= 128, with no leading zero byte.
    if n == 0 || n > 3 || buf.len() < 2 + n || buf[2] == 0 {
        return None;
    }
    let len = buf[2..2 + n]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    (len >= 0x80).then_some((tag, 2 + n, len))
}

/// Checks the tags of the unsigned envelope around the signed request:
/// `SEQUENCE { SEQUENCE info, SEQUENCE { OID alg, .. }, BIT STRING sig }`.
/// x509-parser is lenient about these tag bytes (class and constructed
/// bits), and only the signed part is covered by the signature, so they are
/// checked here: one byte sequence, one meaning.
fn check_envelope(der: &[u8]) -> Result<(), CsrError> {
    let bad =
        |what: &str| CsrError::NotDer(format!("{what} does not follow the PKCS#10 DER layout"));
    let (tag, hl, _) = der_header(der).ok_or_else(|| bad("outer header"))?;
    if tag != 0x30 {
        return Err(bad("outer SEQUENCE tag"));
    }
    let mut pos = hl;
    for (want, what) in [
        (0x30, "certificationRequestInfo"),
        (0x30, "signatureAlgorithm"),
        (0x03, "signature"),
    ] {
        let (tag, hl, len) =
            der_header(der.get(pos..).unwrap_or_default()).ok_or_else(|| bad(what))?;
        if tag != want {
            return Err(bad(what));
        }
        if what == "signatureAlgorithm" {
            let inner = der.get(pos + hl..).unwrap_or_default();
            match der_header(inner) {
                Some((0x06, _, _)) => {}
                _ => return Err(bad("signatureAlgorithm OID")),
            }
        }
        pos += hl + len;
    }
    Ok(())
}

fn unsupported_sig(oid: &Oid, kind: KeyKind) -> CsrError {
    CsrError::UnsupportedSignatureAlgorithm {
        sig_alg: oid.to_id_string(),
        key: kind.name(),
    }
}

fn key_kind(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| CsrError::BadPublicKey("EC key without a named curve".into()))?;
        if curve == OID_EC_P256 {
            Ok(KeyKind::EcP256)
        } else if curve == OID_NIST_EC_P384 {
            Ok(KeyKind::EcP384)
        } else {
            Err(CsrError::UnsupportedKeyAlgorithm(format!(
                "EC curve {}",
                curve.to_id_string()
            )))
        }
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        Ok(KeyKind::Rsa)
    } else if *alg == OID_SIG_ED25519 {
        Ok(KeyKind::Ed25519)
    } else {
        Err(CsrError::UnsupportedKeyAlgorithm(alg.to_id_string()))
    }
}

/// The modulus length in bits. Computed here because x509-parser's
/// `key_size` miscounts moduli without a leading zero byte.
fn rsa_modulus_bits(spki: &SubjectPublicKeyInfo<'_>) -> Result<usize, CsrError> {
    let parsed = spki
        .parsed()
        .map_err(|e| CsrError::BadPublicKey(e.to_string()))?;
    let x509_parser::public_key::PublicKey::RSA(rsa) = parsed else {
        return Err(CsrError::BadPublicKey(
            "rsaEncryption key is not an RSAPublicKey".into(),
        ));
    };
    Ok(big_endian_bits(rsa.modulus))
}

pub(crate) fn big_endian_bits(n: &[u8]) -> usize {
    let n = strip_leading_zeros(n);
    match n.first() {
        Some(first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

pub(crate) fn strip_leading_zeros(n: &[u8]) -> &[u8] {
    let start = n.iter().position(|b| *b != 0).unwrap_or(n.len());
    &n[start..]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    /// Tag bytes outside the signed part (found by fuzzing): each change
    /// must be refused although the signature still matches.
    #[test]
    fn envelope_tags_are_strict() {
        let id = hallmark_core::SpiffeId::new("spiffe://example.org/w").unwrap();
        let (_, csr) = crate::generate_key_and_csr(&id).unwrap();
        assert!(verify_csr(&csr).is_ok());
        let (_, outer_hl, _) = der_header(&csr).unwrap();
        let (_, info_hl, info_len) = der_header(&csr[outer_hl..]).unwrap();
        let alg_at = outer_hl + info_hl + info_len;
        let (_, alg_hl, alg_len) = der_header(&csr[alg_at..]).unwrap();
        let sig_at = alg_at + alg_hl + alg_len;
        for (pos, new) in [
            (0, 0x10),
            (alg_at, 0x10),
            (alg_at + alg_hl, 0x86),
            (sig_at, 0x43),
        ] {
            let mut bad = csr.clone();
            bad[pos] = new;
            assert!(
                matches!(verify_csr(&bad), Err(CsrError::NotDer(_))),
                "byte {pos} -> {new:#x} accepted"
            );
        }
    }

    fn p256_csr() -> Vec<u8> {
        let id = hallmark_core::SpiffeId::new("spiffe://example.org/w").unwrap();
        crate::generate_key_and_csr(&id).unwrap().1
    }

    #[test]
    fn accepts_ec_rsa_and_ed25519_requests() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_RSA_SHA256,
            &rcgen::PKCS_ED25519,
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let csr = rcgen::CertificateParams::new(vec!["x.test".to_string()])
                .unwrap()
                .serialize_request(&key)
                .unwrap();
            let spki = verify_csr(csr.der()).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(spki, key.public_key_der(), "{alg:?}");
        }
    }

    #[test]
    fn each_defect_has_its_own_error() {
        let good = p256_csr();
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0, 0]);
        let rsa1024 = pem::parse(include_str!("../tests/fixtures/rsa1024.csr.pem"))
            .unwrap()
            .into_contents();

        let cases: Vec<(&str, Vec<u8>, CsrError)> = vec![
            ("tampered signature", tampered, CsrError::BadSignature),
            ("trailing bytes", trailing, CsrError::TrailingData(2)),
            ("RSA-1024", rsa1024, CsrError::KeyTooSmall { bits: 1024 }),
        ];
        for (name, input, want) in cases {
            assert_eq!(verify_csr(&input).unwrap_err(), want, "{name}");
        }
        for garbage in [&b""[..], b"not a csr", &[0x30, 0x03, 0x02, 0x01, 0x00]] {
            assert!(
                matches!(verify_csr(garbage), Err(CsrError::NotDer(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn signature_over_a_modified_request_fails() {
        // Change a byte inside the signed CertificationRequestInfo (the
        // requested URI) while keeping the DER valid.
        let mut csr = p256_csr();
        let pos = csr
            .windows(b"example.org".len())
            .position(|w| w == b"example.org")
            .unwrap();
        csr[pos] = b'E';
        assert_eq!(verify_csr(&csr).unwrap_err(), CsrError::BadSignature);
    }

    #[test]
    fn bit_counting() {
        assert_eq!(big_endian_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(big_endian_bits(&[0x01]), 1);
        assert_eq!(big_endian_bits(&[0x00]), 0);
        assert_eq!(big_endian_bits(&[]), 0);
    }
}
