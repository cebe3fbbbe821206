//! rustls configurations for the agent ↔ server connection, where peers are
//! authenticated by the SPIFFE ID in their X509-SVID rather than by DNS name.
//!
//! The client checks the server's chain against a trust source (bundle roots,
//! or a pinned root fingerprint for the first join) and requires the leaf's
//! SPIFFE ID to be exactly the expected server ID. The server makes client
//! certificates optional (joining with a token happens before the agent has
//! an SVID) and verifies them against roots read at handshake time, so a
//! rotated bundle takes effect without rebuilding the configuration.

use std::sync::{Arc, PoisonError, RwLock};

use hallmark_core::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    aws_lc_rs, verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use webpki::KeyUsage;

use crate::verify::{trust_anchors, verify_svid_chain};
use crate::{sha256_hex, CaError};

/// The ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// Where the client's trust in the server comes from.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// Root certificates (DER) of the server's trust domain, read at each
    /// handshake.
    Roots(Arc<RwLock<Vec<Vec<u8>>>>),
    /// SHA-256 (hex) of the server's root certificate DER. The server sends
    /// its root as the last certificate of its chain; the certificate with
    /// this digest becomes the only trust anchor.
    Fingerprint(String),
}

/// A client configuration that trusts the server per `trust`, requires its
/// SVID to name `expected_server_id`, ignores the DNS server name, and
/// presents `client_identity` (SVID chain leaf first, PKCS#8 key) if given.
pub fn client_config(
    trust: ServerTrust,
    expected_server_id: SpiffeId,
    client_identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
) -> Result<ClientConfig, CaError> {
    let trust = match trust {
        ServerTrust::Fingerprint(fp) => ServerTrust::Fingerprint(normalize_fingerprint(&fp)?),
        roots => roots,
    };
    let provider = Arc::new(aws_lc_rs::default_provider());
    let verifier = Arc::new(SpiffeServerVerifier {
        trust,
        expected: expected_server_id,
        algs: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_identity {
        Some((chain, key)) => builder.with_client_auth_cert(cert_chain(chain), pkcs8(key))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A server configuration presenting `chain` (leaf first; put the root last
/// so fingerprint-pinning clients find it) with `key_pkcs8`. Client
/// certificates are optional; when sent they must be X509-SVIDs that verify
/// against the current `client_roots`. ALPN is `h2`.
pub fn server_config(
    chain: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
    client_roots: Arc<RwLock<Vec<Vec<u8>>>>,
) -> Result<ServerConfig, CaError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let verifier = Arc::new(SpiffeClientVerifier {
        roots: client_roots,
        algs: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain(chain), pkcs8(key_pkcs8))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct SpiffeServerVerifier {
    trust: ServerTrust,
    expected: SpiffeId,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = match &self.trust {
            ServerTrust::Roots(roots) => {
                let roots = roots.read().unwrap_or_else(PoisonError::into_inner);
                verify_against(
                    end_entity,
                    intermediates,
                    &roots,
                    now,
                    KeyUsage::server_auth(),
                )
            }
            ServerTrust::Fingerprint(fp) => std::iter::once(end_entity)
                .chain(intermediates)
                .find(|c| sha256_hex(c) == *fp)
                .ok_or_else(|| CaError::FingerprintNotFound(fp.clone()))
                .and_then(|root| {
                    let roots = [root.to_vec()];
                    verify_against(
                        end_entity,
                        intermediates,
                        &roots,
                        now,
                        KeyUsage::server_auth(),
                    )
                }),
        };
        let id = verified.map_err(to_rustls)?;
        if id != self.expected {
            return Err(to_rustls(CaError::UnexpectedPeerId {
                expected: self.expected.clone(),
                found: id,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[derive(Debug)]
struct SpiffeClientVerifier {
    roots: Arc<RwLock<Vec<Vec<u8>>>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Agents hold exactly one SVID; hints would not change their choice.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let roots = self.roots.read().unwrap_or_else(PoisonError::into_inner);
        verify_against(
            end_entity,
            intermediates,
            &roots,
            now,
            KeyUsage::client_auth(),
        )
        .map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn verify_against(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[Vec<u8>],
    now: UnixTime,
    usage: KeyUsage,
) -> Result<SpiffeId, CaError> {
    let roots: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let anchors = trust_anchors(&roots)?;
    verify_svid_chain(end_entity, intermediates, &anchors, now, usage)
}

/// Maps the common path-building failures to rustls' own variants (which
/// pick the right TLS alert) and keeps the full message for everything else.
fn to_rustls(e: CaError) -> rustls::Error {
    let kind = match &e {
        CaError::ChainInvalid(webpki::Error::UnknownIssuer) => CertificateError::UnknownIssuer,
        CaError::ChainInvalid(webpki::Error::CertExpired { .. }) => CertificateError::Expired,
        CaError::ChainInvalid(webpki::Error::CertNotValidYet { .. }) => {
            CertificateError::NotValidYet
        }
        _ => CertificateError::Other(OtherError(Arc::new(Rejected(e)))),
    };
    rustls::Error::InvalidCertificate(kind)
}

/// rustls prints the `Debug` form of custom errors; this makes that the
/// readable message.
struct Rejected(CaError);

impl std::fmt::Debug for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Rejected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn normalize_fingerprint(fp: &str) -> Result<String, CaError> {
    let hex: String = fp
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(CaError::BadFingerprint(fp.to_string()))
    }
}

fn cert_chain(chain: Vec<Vec<u8>>) -> Vec<CertificateDer<'static>> {
    chain.into_iter().map(CertificateDer::from).collect()
}

fn pkcs8(key: Vec<u8>) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised() {
        let hex = "ab".repeat(32);
        assert_eq!(normalize_fingerprint(&hex.to_uppercase()).unwrap(), hex);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(normalize_fingerprint(&colons).unwrap(), hex);
        for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(
                matches!(normalize_fingerprint(bad), Err(CaError::BadFingerprint(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn configs_build_with_h2() {
        let roots = Arc::new(RwLock::new(Vec::new()));
        let id = SpiffeId::new("spiffe://example.org/hallmark/server").unwrap();
        let c = client_config(ServerTrust::Roots(roots), id, None).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(matches!(
            client_config(
                ServerTrust::Fingerprint("nope".into()),
                SpiffeId::new("spiffe://a/b").unwrap(),
                None
            ),
            Err(CaError::BadFingerprint(_))
        ));
    }
}
