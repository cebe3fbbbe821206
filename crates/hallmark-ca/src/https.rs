//! Plain web-PKI HTTPS for the OIDC issuer: the discovery document and JWKS
//! are fetched by cloud providers and ordinary HTTP clients, which check the
//! certificate against a DNS name, not a SPIFFE ID.
//!
//! An operator normally gives a certificate from a public CA. Without one, a
//! self-signed certificate for the issuer's host is made at start so the
//! endpoints work at once for local testing (clients then trust that
//! certificate explicitly).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::crypto::aws_lc_rs;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::{unix_secs, CaError};

/// A certificate chain and its private key, ready for a TLS server.
pub struct HttpsIdentity {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for HttpsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsIdentity")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl HttpsIdentity {
    /// A new self-signed EC P-256 certificate for `host` (a DNS name or an IP
    /// address), valid from `now` - 60 s for `ttl`.
    pub fn self_signed(host: &str, ttl: Duration, now: SystemTime) -> Result<Self, CaError> {
        const WHAT: &str = "self-signed HTTPS certificate";
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|_| CaError::KeyGeneration { what: WHAT })?;
        let now_s = unix_secs(now);
        let at = |secs: i64| {
            OffsetDateTime::from_unix_timestamp(secs)
                .map_err(|_| CaError::TimeOutOfRange { what: WHAT, secs })
        };
        let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let mut params = CertificateParams::default();
        params.not_before = at(now_s.saturating_sub(60))?;
        params.not_after = at(now_s.saturating_add(ttl_s))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                rcgen::Ia5String::try_from(host)
                    .map_err(|source| CaError::Rcgen { what: WHAT, source })?,
            ),
        }];
        let cert = params
            .self_signed(&key)
            .map_err(|source| CaError::Rcgen { what: WHAT, source })?;
        Ok(Self {
            chain: vec![cert.der().to_vec()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    /// Reads a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, SEC1 or PKCS#1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CaError> {
        let certs = pem::parse_many(cert_pem).map_err(|e| CaError::BadPem {
            what: "HTTPS certificate",
            reason: e.to_string(),
        })?;
        let chain: Vec<Vec<u8>> = certs
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect();
        if chain.is_empty() {
            return Err(CaError::BadPem {
                what: "HTTPS certificate",
                reason: "no CERTIFICATE block found; give the chain in PEM, leaf first".into(),
            });
        }
        let keys = pem::parse_many(key_pem).map_err(|e| CaError::BadPem {
            what: "HTTPS private key",
            reason: e.to_string(),
        })?;
        let key = keys
            .into_iter()
            .find_map(|p| match p.tag() {
                "PRIVATE KEY" => Some(PrivateKeyDer::Pkcs8(p.into_contents().into())),
                "EC PRIVATE KEY" => Some(PrivateKeyDer::Sec1(p.into_contents().into())),
                "RSA PRIVATE KEY" => Some(PrivateKeyDer::Pkcs1(p.into_contents().into())),
                _ => None,
            })
            .ok_or_else(|| CaError::BadPem {
                what: "HTTPS private key",
                reason: "no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block found".into(),
            })?;
        Ok(Self { chain, key })
    }

    /// The leaf certificate in PEM, for clients to trust a self-signed one.
    pub fn leaf_pem(&self) -> String {
        self.chain
            .first()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
            .unwrap_or_default()
    }

    /// A TLS server configuration without client authentication, offering
    /// HTTP/1.1 by ALPN. Fails when the key does not match the certificate.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, CaError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let chain = self
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn self_signed_names_the_host_and_round_trips_through_pem() {
        let now = crate::system_time(1_700_000_000);
        for host in ["issuer.example.org", "127.0.0.1"] {
            let id = HttpsIdentity::self_signed(host, Duration::from_secs(3600), now).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&id.chain[0]).unwrap();
            let san = cert.subject_alternative_name().unwrap().unwrap();
            let names = format!("{:?}", san.value.general_names);
            assert!(
                names.contains(host) || names.contains("127, 0, 0, 1"),
                "{names}"
            );
            assert_eq!(cert.validity().not_after.timestamp(), 1_700_003_600);
            id.server_config().unwrap();
            let key_pem = match &id.key {
                PrivateKeyDer::Pkcs8(k) => {
                    pem::encode(&pem::Pem::new("PRIVATE KEY", k.secret_pkcs8_der().to_vec()))
                }
                _ => unreachable!(),
            };
            let again =
                HttpsIdentity::from_pem(id.leaf_pem().as_bytes(), key_pem.as_bytes()).unwrap();
            assert_eq!(again.chain, id.chain);
            again.server_config().unwrap();
        }
    }

    #[test]
    fn from_pem_names_what_is_missing() {
        let now = crate::system_time(1_700_000_000);
        let id = HttpsIdentity::self_signed("a.example", Duration::from_secs(60), now).unwrap();
        let err = HttpsIdentity::from_pem(b"", b"").unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE block"), "{err}");
        let err = HttpsIdentity::from_pem(id.leaf_pem().as_bytes(), id.leaf_pem().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTPS private key"), "{err}");
    }
}
