//! Plain web-PKI HTTPS for the OIDC issuer: the discovery document and JWKS
//! are fetched by cloud providers and ordinary HTTP clients, which check the
//! certificate against a DNS name, not a SPIFFE ID.
//!
//! An operator normally gives a certificate from a public CA. Without one, a
//! self-signed certificate for the issuer's host is made at start so the
//! endpoints work at once for local testing (clients then trust that
//! certificate explicitly).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hallmark_core::time::unix_secs;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::CaError;

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

    /// Reads the PEM certificate chain and key from files (see
    /// [`HttpsIdentity::from_pem`]); errors name the file.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, CaError> {
        let read = |path: &Path, what: &'static str| {
            std::fs::read(path).map_err(|e| CaError::BadPem {
                what,
                reason: format!("reading {}: {e}", path.display()),
            })
        };
        Self::from_pem(
            &read(cert, "HTTPS certificate")?,
            &read(key, "HTTPS private key")?,
        )
    }

    /// The chain and key as rustls serves them; fails when the key is not
    /// usable or does not match the certificate.
    fn certified_key(&self) -> Result<Arc<CertifiedKey>, CaError> {
        let provider = aws_lc_rs::default_provider();
        let chain = self
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let key = CertifiedKey::from_der(chain, self.key.clone_key(), &provider)?;
        Ok(Arc::new(key))
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

/// How often a [`ReloadingIdentity`] looks at its files.
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// A certificate and key read from files and read again when either file
/// changes, so a renewed certificate (ACME, cert-manager) is served without
/// a restart. A renewal that does not load (half-written files, a key that
/// does not match) keeps the previous pair and is logged.
pub struct ReloadingIdentity {
    cert: PathBuf,
    key: PathBuf,
    check_every: Duration,
    state: Mutex<Loaded>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl std::fmt::Debug for ReloadingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingIdentity")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingIdentity {
    /// Loads the pair now (an error names the file) and then looks for
    /// changes at most every `check_every`.
    pub fn open(cert: &Path, key: &Path, check_every: Duration) -> Result<Self, CaError> {
        let stamps = (modified(cert), modified(key));
        let loaded = HttpsIdentity::from_files(cert, key)?.certified_key()?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            check_every,
            state: Mutex::new(Loaded {
                key: loaded,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to serve now, re-read first if the files changed since the
    /// last look.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != state.stamps {
                match HttpsIdentity::from_files(&self.cert, &self.key)
                    .and_then(|id| id.certified_key())
                {
                    Ok(key) => {
                        state.key = key;
                        state.stamps = stamps;
                        tracing::info!(cert = %self.cert.display(), "HTTPS certificate reloaded");
                    }
                    // Not marked as seen: the next look tries again, as a
                    // renewal may still be writing the second file.
                    Err(e) => tracing::warn!(
                        cert = %self.cert.display(),
                        error = %e,
                        "the changed HTTPS certificate does not load; serving the previous one"
                    ),
                }
            }
        }
        state.key.clone()
    }

    /// A TLS server configuration (no client authentication, HTTP/1.1 by
    /// ALPN) serving whatever [`ReloadingIdentity::current`] holds.
    pub fn server_config(self) -> Result<Arc<ServerConfig>, CaError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn self_signed_names_the_host_and_round_trips_through_pem() {
        let now = hallmark_core::time::from_unix_secs(1_700_000_000);
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

    fn write_pair(dir: &Path, id: &HttpsIdentity) {
        let key = match &id.key {
            PrivateKeyDer::Pkcs8(k) => {
                pem::encode(&pem::Pem::new("PRIVATE KEY", k.secret_pkcs8_der().to_vec()))
            }
            _ => unreachable!(),
        };
        std::fs::write(dir.join("c.pem"), id.leaf_pem()).unwrap();
        std::fs::write(dir.join("k.pem"), key).unwrap();
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_one_is_not() {
        let dir = std::env::temp_dir().join(format!("hm-https-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = hallmark_core::time::from_unix_secs(1_700_000_000);
        let first = HttpsIdentity::self_signed("a.example", Duration::from_secs(60), now).unwrap();
        write_pair(&dir, &first);
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        let reloading = ReloadingIdentity::open(&c, &k, Duration::ZERO).unwrap();
        assert_eq!(reloading.current().cert[0].as_ref(), &first.chain[0][..]);

        // mtime granularity: make sure the stamp moves.
        std::thread::sleep(Duration::from_millis(20));
        let second = HttpsIdentity::self_signed("a.example", Duration::from_secs(60), now).unwrap();
        write_pair(&dir, &second);
        assert_eq!(reloading.current().cert[0].as_ref(), &second.chain[0][..]);

        // A half-written renewal keeps the previous pair.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&c, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(reloading.current().cert[0].as_ref(), &second.chain[0][..]);

        // Missing files at start are an error naming the file.
        let err = ReloadingIdentity::open(&dir.join("nope.pem"), &k, RELOAD_CHECK)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_pem_names_what_is_missing() {
        let now = hallmark_core::time::from_unix_secs(1_700_000_000);
        let id = HttpsIdentity::self_signed("a.example", Duration::from_secs(60), now).unwrap();
        let err = HttpsIdentity::from_pem(b"", b"").unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE block"), "{err}");
        let err = HttpsIdentity::from_pem(id.leaf_pem().as_bytes(), id.leaf_pem().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTPS private key"), "{err}");
    }
}
