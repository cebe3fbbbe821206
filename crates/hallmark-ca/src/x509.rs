//! X.509 authorities: generating a root or loading an intermediate, and
//! issuing X509-SVIDs from CSRs per the SPIFFE X509-SVID specification.
//! Verification is in the `verify` module.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use hallmark_core::time::{from_unix_secs, unix_secs};
use hallmark_core::{SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;
use x509_parser::prelude::FromDer;

use crate::csr::{verify_csr, CsrError};
use crate::verify::{parse_cert, uri_sans, verify_x509_svid};
use crate::{sha256_hex, CaError};

/// Certificates start this many seconds in the past so a peer whose clock
/// lags slightly still accepts them.
const BACKDATE_SECS: i64 = 10;
/// RFC 5280's upper bound for a CommonName; longer DNS names stay SAN-only.
const MAX_CN_LEN: usize = 64;
/// The lifetime of the throwaway certificate issued to check a loaded CA.
const SELF_CHECK_TTL: Duration = Duration::from_secs(60);

/// An X.509 signing authority: a self-signed root, or an intermediate whose
/// chain up to its root was loaded with it.
pub struct X509Authority {
    cert_der: Vec<u8>,
    /// Certificates above `cert_der`, ending with the root; empty for a root.
    chain_der: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
    key: KeyPair,
    /// rcgen's view of the CA certificate, needed to sign with it. Its own
    /// DER is discarded: only the subject name and key identifier matter.
    issuer: rcgen::Certificate,
    id: String,
    /// The earliest notAfter of the CA certificate and its chain.
    not_after: SystemTime,
    /// Set when the CA certificate carries a SPIFFE ID; then only IDs in
    /// that trust domain may be signed.
    trust_domain: Option<TrustDomain>,
}

/// Everything needed to rebuild an [`X509Authority`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAuthority {
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER, whatever form the key was loaded in.
    pub key_pkcs8: Vec<u8>,
    /// The certificates above `cert_der` up to and including the root.
    pub chain_der: Vec<Vec<u8>>,
}

impl fmt::Debug for StoredAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredAuthority")
            .field("id", &sha256_hex(&self.cert_der))
            .field("key_pkcs8", &"<redacted>")
            .field("chain_len", &self.chain_der.len())
            .finish()
    }
}

impl fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Authority")
            .field("id", &self.id)
            .field("not_after", &unix_secs(self.not_after))
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

impl X509Authority {
    /// A new self-signed EC P-256 root for `td`, valid from `now` - 10 s to
    /// `now` + `ttl`.
    pub fn generate_root(
        td: &TrustDomain,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        const WHAT: &str = "X.509 root";
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|_| CaError::KeyGeneration { what: WHAT })?;
        let now_s = unix_secs(now);
        let mut params = CertificateParams::default();
        params.not_before = offset(now_s.saturating_sub(BACKDATE_SECS), WHAT)?;
        params.not_after = offset(now_s.saturating_add(ttl_secs(ttl, WHAT)?), WHAT)?;
        let serial = random_serial()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, td.name());
        // Successive roots of a trust domain get distinct names, so path
        // building goes straight to the right one and logs can tell them
        // apart.
        dn.push(
            DnType::CommonName,
            format!(
                "Hallmark CA {}",
                hex::encode(serial.to_bytes().get(..4).unwrap_or_default())
            ),
        );
        params.serial_number = Some(serial);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(ia5(td.id().as_str(), WHAT)?)];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(rcgen_err(WHAT))?;
        Self::assemble(cert.der().to_vec(), key.serialize_der(), Vec::new())
    }

    /// Loads a CA certificate and its private key (PKCS#8, SEC1 or PKCS#1
    /// PEM). `chain_pem` holds the certificates above it up to and including
    /// the root; leave it out for a self-signed root.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        chain_pem: Option<&str>,
    ) -> Result<Self, CaError> {
        let mut certs = certs_from_pem(cert_pem, "CA certificate PEM")?;
        if certs.len() != 1 {
            return Err(CaError::BadPem {
                what: "CA certificate PEM",
                reason: format!(
                    "expected exactly one CERTIFICATE block, found {}",
                    certs.len()
                ),
            });
        }
        let cert_der = certs.remove(0);
        let key_pkcs8 = key_from_pem(key_pem)?;
        let chain_der = match chain_pem {
            Some(pem) if !pem.trim().is_empty() => certs_from_pem(pem, "CA chain PEM")?,
            _ => Vec::new(),
        };
        Self::assemble(cert_der, key_pkcs8, chain_der)
    }

    pub fn to_stored(&self) -> StoredAuthority {
        StoredAuthority {
            cert_der: self.cert_der.clone(),
            key_pkcs8: self.key_pkcs8.clone(),
            chain_der: self.chain_der.clone(),
        }
    }

    /// Rebuilds an authority, re-running every check [`Self::from_pem`] does,
    /// so a corrupted store is caught at load rather than at first signing.
    pub fn from_stored(s: &StoredAuthority) -> Result<Self, CaError> {
        Self::assemble(s.cert_der.clone(), s.key_pkcs8.clone(), s.chain_der.clone())
    }

    /// Lowercase hex SHA-256 of the CA certificate DER.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificates above this CA, ending with the root.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// The root this CA chains to: itself when self-signed.
    pub fn trust_anchor_der(&self) -> &[u8] {
        self.chain_der.last().unwrap_or(&self.cert_der)
    }

    /// Lowercase hex SHA-256 of [`Self::trust_anchor_der`], what agents pin.
    pub fn fingerprint(&self) -> String {
        sha256_hex(self.trust_anchor_der())
    }

    /// When this CA stops being able to issue: the earliest notAfter of its
    /// certificate and chain.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The trust domain named by the CA certificate's URI SAN, if any.
    pub fn trust_domain(&self) -> Option<&TrustDomain> {
        self.trust_domain.as_ref()
    }

    /// Signs an X509-SVID for the public key in `csr_der`. Only the key is
    /// taken from the CSR. The leaf carries `spiffe_id` as its only URI SAN,
    /// `dns_names` as DNS SANs (the first also as CN), is valid from `now` -
    /// 10 s to the earlier of `now` + `ttl` and this CA's expiry, and is
    /// returned with the intermediates above it: `[leaf, intermediates..]`,
    /// root excluded.
    pub fn sign_x509_svid(
        &self,
        csr_der: &[u8],
        spiffe_id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<Vec<u8>>, CaError> {
        let spki_der = verify_csr(csr_der)?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&spki_der)
            .map_err(|e| CsrError::UnsupportedKeyAlgorithm(e.to_string()))?;
        let rsa_key = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki_der)
            .map(|(_, spki)| spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION)
            .map_err(|e| CsrError::BadPublicKey(e.to_string()))?;
        let leaf = self.issue_leaf(&public_key, rsa_key, spiffe_id, dns_names, ttl, now)?;
        Ok(self.chain_with(leaf))
    }

    fn issue_leaf(
        &self,
        public_key: &impl PublicKeyData,
        rsa_key: bool,
        spiffe_id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<u8>, CaError> {
        const WHAT: &str = "X509-SVID";
        if spiffe_id.path().is_empty() {
            return Err(CaError::IdWithoutPath {
                what: WHAT,
                id: spiffe_id.clone(),
            });
        }
        if let Some(td) = &self.trust_domain {
            if !spiffe_id.is_member_of(td) {
                return Err(CaError::WrongTrustDomain {
                    id: spiffe_id.clone(),
                    trust_domain: td.to_string(),
                });
            }
        }
        let ttl = ttl_secs(ttl, WHAT)?;
        let now_s = unix_secs(now);
        let ca_end = unix_secs(self.not_after);
        if now_s >= ca_end {
            return Err(CaError::CaExpired {
                id: self.id.clone(),
                not_after: ca_end,
                now: now_s,
            });
        }

        let mut params = CertificateParams::default();
        params.not_before = offset(now_s.saturating_sub(BACKDATE_SECS), WHAT)?;
        params.not_after = offset(now_s.saturating_add(ttl).min(ca_end), WHAT)?;
        params.serial_number = Some(random_serial()?);
        // A non-empty subject keeps the SAN extension legal as non-critical
        // (RFC 5280 4.2.1.6), which is how rcgen writes it.
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, spiffe_id.trust_domain_name());
        if let Some(first) = dns_names.first().filter(|n| n.len() <= MAX_CN_LEN) {
            dn.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = dn;
        let mut sans = vec![SanType::URI(ia5(spiffe_id.as_str(), WHAT)?)];
        for name in dns_names {
            if rustls_pki_types::DnsName::try_from(name.as_str()).is_err() {
                return Err(CaError::InvalidDnsName(name.clone()));
            }
            sans.push(SanType::DnsName(ia5(name, WHAT)?));
        }
        params.subject_alt_names = sans;
        // basicConstraints with cA=false, critical. DER omits a DEFAULT
        // value, so cA=false is an empty SEQUENCE; rcgen's ExplicitNoCa
        // encodes `cA FALSE` explicitly, which strict parsers (Python's
        // `cryptography`, hence py-spiffe) reject.
        params.is_ca = IsCa::NoCa;
        let mut bc = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
        bc.set_criticality(true);
        params.custom_extensions.push(bc);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if rsa_key {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer, &self.key)
            .map_err(rcgen_err(WHAT))?;
        Ok(cert.der().to_vec())
    }

    fn chain_with(&self, leaf: Vec<u8>) -> Vec<Vec<u8>> {
        let mut chain = vec![leaf];
        if let Some((_root, intermediates)) = self.chain_der.split_last() {
            chain.push(self.cert_der.clone());
            chain.extend(intermediates.iter().cloned());
        }
        chain
    }

    /// The one constructor: checks the certificate is a CA, the key is its
    /// key and the chain ends in a root, then proves all of it by issuing a
    /// throwaway SVID and verifying it against the trust anchor.
    fn assemble(
        cert_der: Vec<u8>,
        key_pkcs8: Vec<u8>,
        chain_der: Vec<Vec<u8>>,
    ) -> Result<Self, CaError> {
        let id = sha256_hex(&cert_der);
        let key = KeyPair::try_from(key_pkcs8.as_slice()).map_err(|e| CaError::BadKey {
            what: format!("private key of CA certificate {id}"),
            reason: e.to_string(),
        })?;

        let cert = parse_cert(&cert_der, "CA certificate")?;
        check_is_ca(&cert, &id)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch { id });
        }
        let mut not_before_max = cert.validity().not_before.timestamp();
        let mut not_after_min = cert.validity().not_after.timestamp();
        let mut top_is_self_signed = cert.subject().as_raw() == cert.issuer().as_raw();
        for (i, der) in chain_der.iter().enumerate() {
            let c = parse_cert(der, &format!("CA chain certificate #{}", i + 1))?;
            check_is_ca(&c, &sha256_hex(der))?;
            not_before_max = not_before_max.max(c.validity().not_before.timestamp());
            not_after_min = not_after_min.min(c.validity().not_after.timestamp());
            top_is_self_signed = c.subject().as_raw() == c.issuer().as_raw();
        }
        if !top_is_self_signed {
            return Err(CaError::ChainNotRooted {
                id: chain_der
                    .last()
                    .map_or_else(|| id.clone(), |d| sha256_hex(d)),
            });
        }
        let trust_domain = match uri_sans(&cert, "CA certificate")?.as_slice() {
            [uri] => SpiffeId::new(uri).ok().map(|s| s.trust_domain()),
            _ => None,
        };
        drop(cert);

        let issuer =
            CertificateParams::from_ca_cert_der(&CertificateDer::from(cert_der.as_slice()))
                .and_then(|params| params.self_signed(&key))
                .map_err(rcgen_err("CA certificate"))?;
        let authority = X509Authority {
            cert_der,
            chain_der,
            key_pkcs8,
            key,
            issuer,
            id,
            not_after: from_unix_secs(not_after_min),
            trust_domain,
        };
        authority.self_check(not_before_max)?;
        Ok(authority)
    }

    /// Issues and verifies a throwaway SVID at an instant inside every
    /// validity window of the chain, so the check does not depend on the
    /// current time. This catches what static checks miss: a chain that does
    /// not link up, and an issuer name rcgen cannot reproduce byte for byte
    /// (which would make every SVID unverifiable).
    fn self_check(&self, not_before_max: i64) -> Result<(), CaError> {
        let fail = |reason: String| CaError::SelfCheck {
            id: self.id.clone(),
            reason,
        };
        let at = not_before_max.saturating_add(BACKDATE_SECS + 1);
        if at >= unix_secs(self.not_after) {
            return Err(fail(
                "the validity periods of the CA chain do not overlap".into(),
            ));
        }
        let at = from_unix_secs(at);
        let probe_id = match &self.trust_domain {
            Some(td) => td.id_with_path("/hallmark/ca-self-check"),
            None => SpiffeId::new("spiffe://hallmark.invalid/ca-self-check"),
        }
        .map_err(|e| fail(e.to_string()))?;
        let probe_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|_| {
            CaError::KeyGeneration {
                what: "CA self-check",
            }
        })?;
        let leaf = self
            .issue_leaf(&probe_key, false, &probe_id, &[], SELF_CHECK_TTL, at)
            .map_err(|e| fail(e.to_string()))?;
        let chain = self.chain_with(leaf);
        match verify_x509_svid(&chain, &[self.trust_anchor_der().to_vec()], at) {
            Ok(id) if id == probe_id => Ok(()),
            Ok(id) => Err(fail(format!("issued for {probe_id} but verified as {id}"))),
            Err(e) => Err(fail(e.to_string())),
        }
    }
}

/// A fresh EC P-256 key (PKCS#8 DER) and a CSR for it carrying `spiffe_id`
/// as URI SAN. The server ignores the SAN; it is there for humans and logs.
pub fn generate_key_and_csr(spiffe_id: &SpiffeId) -> Result<(Vec<u8>, Vec<u8>), CaError> {
    const WHAT: &str = "CSR";
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|_| {
        CaError::KeyGeneration {
            what: "workload key",
        }
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(ia5(spiffe_id.as_str(), WHAT)?)];
    let csr = params.serialize_request(&key).map_err(rcgen_err(WHAT))?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}
fn check_is_ca(cert: &X509Certificate<'_>, id: &str) -> Result<(), CaError> {
    let bad = |e: x509_parser::error::X509Error| CaError::BadCertificate {
        what: format!("CA certificate {id}"),
        reason: e.to_string(),
    };
    if !cert
        .basic_constraints()
        .map_err(bad)?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(CaError::NotACa { id: id.to_string() });
    }
    if cert
        .key_usage()
        .map_err(bad)?
        .is_some_and(|ku| !ku.value.key_cert_sign())
    {
        return Err(CaError::CaKeyUsage { id: id.to_string() });
    }
    Ok(())
}

fn certs_from_pem(pem_text: &str, what: &'static str) -> Result<Vec<Vec<u8>>, CaError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| CaError::BadPem {
        what,
        reason: e.to_string(),
    })?;
    if blocks.is_empty() {
        return Err(CaError::BadPem {
            what,
            reason: "no PEM blocks found".into(),
        });
    }
    blocks
        .into_iter()
        .map(|b| match b.tag() {
            "CERTIFICATE" => Ok(b.into_contents()),
            other => Err(CaError::BadPem {
                what,
                reason: format!("unexpected `{other}` block; only CERTIFICATE blocks are allowed"),
            }),
        })
        .collect()
}

/// Reads one private key from PEM and normalises it to PKCS#8, so storage
/// and rcgen see a single format.
fn key_from_pem(pem_text: &str) -> Result<Vec<u8>, CaError> {
    const WHAT: &str = "CA key PEM";
    let bad = |reason: String| CaError::BadPem { what: WHAT, reason };
    let blocks = pem::parse_many(pem_text).map_err(|e| bad(e.to_string()))?;
    // `openssl ecparam -genkey` writes the curve parameters first.
    let keys: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() != "EC PARAMETERS")
        .collect();
    let [block] = keys.as_slice() else {
        return Err(bad(format!(
            "expected exactly one private key block, found {}",
            keys.len()
        )));
    };
    let der = block.contents();
    let unusable = |kind: &str| CaError::BadKey {
        what: WHAT.to_string(),
        reason: format!("not a usable {kind} private key"),
    };
    match block.tag() {
        "PRIVATE KEY" => Ok(der.to_vec()),
        "EC PRIVATE KEY" => [
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        ]
        .into_iter()
        .find_map(|alg| aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(alg, der).ok())
        .and_then(|k| k.to_pkcs8v1().ok())
        .map(|doc| doc.as_ref().to_vec())
        .ok_or_else(|| unusable("SEC1 EC (P-256 or P-384)")),
        "RSA PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_der(der)
            .ok()
            .and_then(|k| AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k).ok())
            .map(|d| d.as_ref().to_vec())
            .ok_or_else(|| unusable("PKCS#1 RSA")),
        "ENCRYPTED PRIVATE KEY" => Err(bad(
            "encrypted keys are not supported; decrypt the key first".into(),
        )),
        other => Err(bad(format!(
            "unexpected `{other}` block; expected a private key"
        ))),
    }
}

/// A random positive 127-bit serial: the top bit is cleared so DER needs no
/// sign byte, the next one set so the serial is never zero or short.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::KeyGeneration {
            what: "certificate serial",
        })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn ttl_secs(ttl: Duration, what: &'static str) -> Result<i64, CaError> {
    match ttl.as_secs() {
        0 => Err(CaError::InvalidTtl { what }),
        s => Ok(i64::try_from(s).unwrap_or(i64::MAX)),
    }
}

fn offset(secs: i64, what: &'static str) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CaError::TimeOutOfRange { what, secs })
}

fn ia5(s: &str, what: &'static str) -> Result<rcgen::Ia5String, CaError> {
    rcgen::Ia5String::try_from(s).map_err(rcgen_err(what))
}

fn rcgen_err(what: &'static str) -> impl Fn(rcgen::Error) -> CaError {
    move |source| CaError::Rcgen { what, source }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use crate::verify::spiffe_id_from_cert;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn t(secs: i64) -> SystemTime {
        from_unix_secs(secs)
    }

    const NOW: i64 = 1_800_000_000;
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<X509Authority>();
        check::<crate::JwtAuthority>();
        check::<CaError>();
    }

    #[test]
    fn root_has_ca_shape() {
        let ca = X509Authority::generate_root(&td(), DAY, t(NOW)).unwrap();
        let cert = parse_cert(ca.cert_der(), "root").unwrap();
        assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.digital_signature());
        assert_eq!(
            spiffe_id_from_cert(ca.cert_der()).unwrap().as_str(),
            "spiffe://example.org"
        );
        assert_eq!(cert.validity().not_before.timestamp(), NOW - 10);
        assert_eq!(cert.validity().not_after.timestamp(), NOW + 86_400);
        assert_eq!(unix_secs(ca.not_after()), NOW + 86_400);
        assert_eq!(ca.trust_anchor_der(), ca.cert_der());
        assert_eq!(ca.fingerprint(), ca.id());
        assert_eq!(ca.id().len(), 64);
        assert_eq!(ca.trust_domain(), Some(&td()));
    }

    #[test]
    fn refuses_ids_outside_its_trust_domain_and_without_path() {
        let ca = X509Authority::generate_root(&td(), DAY, t(NOW)).unwrap();
        let (_, csr) =
            generate_key_and_csr(&SpiffeId::new("spiffe://example.org/w").unwrap()).unwrap();
        let other = SpiffeId::new("spiffe://other.org/w").unwrap();
        assert!(matches!(
            ca.sign_x509_svid(&csr, &other, &[], DAY, t(NOW)),
            Err(CaError::WrongTrustDomain { .. })
        ));
        assert!(matches!(
            ca.sign_x509_svid(&csr, &td().id(), &[], DAY, t(NOW)),
            Err(CaError::IdWithoutPath { .. })
        ));
        let id = SpiffeId::new("spiffe://example.org/w").unwrap();
        assert!(matches!(
            ca.sign_x509_svid(&csr, &id, &["not a name".into()], DAY, t(NOW)),
            Err(CaError::InvalidDnsName(_))
        ));
        assert!(matches!(
            ca.sign_x509_svid(&csr, &id, &[], Duration::from_millis(500), t(NOW)),
            Err(CaError::InvalidTtl { .. })
        ));
        assert!(matches!(
            ca.sign_x509_svid(&csr, &id, &[], DAY, t(NOW + 86_400)),
            Err(CaError::CaExpired { .. })
        ));
    }

    #[test]
    fn serials_are_random_positive_and_full_length() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_ne!(a, b);
        for s in [a, b] {
            assert_eq!(s.len(), 16);
            assert_eq!(s[0] & 0xc0, 0x40);
        }
    }

    #[test]
    fn key_pem_forms_normalise_to_the_same_pkcs8_key() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ec = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            key.serialized_der(),
        )
        .unwrap();
        let sec1 = AsDer::<aws_lc_rs::encoding::EcPrivateKeyRfc5915Der>::as_der(&ec.private_key())
            .unwrap();
        let sec1_pem = pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1.as_ref().to_vec()));
        let pkcs8 = key_from_pem(&sec1_pem).unwrap();
        assert_eq!(
            KeyPair::try_from(pkcs8.as_slice())
                .unwrap()
                .public_key_raw(),
            key.public_key_raw()
        );
        assert_eq!(
            key_from_pem(&key.serialize_pem()).unwrap(),
            key.serialize_der()
        );

        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let rsa_pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap();
        // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING (RSAPrivateKey) }
        let (_, info) = x509_parser::der_parser::parse_der(rsa_pkcs8.as_ref()).unwrap();
        let pkcs1 = info.as_sequence().unwrap()[2].as_slice().unwrap().to_vec();
        let pem_text = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", pkcs1));
        let pkcs8 = key_from_pem(&pem_text).unwrap();
        assert_eq!(pkcs8, rsa_pkcs8.as_ref());

        for (input, fragment) in [
            ("", "exactly one private key block, found 0"),
            ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "encrypted"),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "unexpected `CERTIFICATE`"),
        ] {
            let err = key_from_pem(input).unwrap_err().to_string();
            assert!(err.contains(fragment), "{input:?}: {err}");
        }
    }
}
