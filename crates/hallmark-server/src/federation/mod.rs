//! Federation with other trust domains: the relationships operators
//! create, the refresh of their foreign bundles, and the SPIFFE bundle
//! endpoint this server serves to them.
//!
//! - [`engine`]: the foreign bundles in force ([`Federations`]) and the
//!   refresh loop that fetches them, with the relationship operations the
//!   admin API drives;
//! - [`fetch`]: fetching one foreign bundle over HTTPS;
//! - [`endpoint`]: the HTTPS listener serving this trust domain's bundle.
//!
//! Relationships and the foreign bundles live in the datastore, so every
//! server on one PostgreSQL sees the same ones.

mod endpoint;
mod engine;
mod fetch;

use std::net::SocketAddr;
use std::path::PathBuf;

use hallmark_ca::Bundle;
use hallmark_core::TrustDomain;

pub(crate) use endpoint::serve_endpoint;
pub use endpoint::EndpointError;
pub(crate) use engine::{
    add, bundles_for, refresh_loop, refresh_now, reload, remove, stored, FederationError,
    Federations,
};

/// The bundle endpoint this server serves to other trust domains.
#[derive(Debug, Clone, Default)]
pub struct FederationConfig {
    /// Where to serve the SPIFFE bundle endpoint; `None` serves none.
    pub listen: Option<SocketAddr>,
    /// How the endpoint authenticates itself.
    pub profile: EndpointProfile,
}

/// The certificate the bundle endpoint presents.
#[derive(Debug, Clone, Default)]
pub enum EndpointProfile {
    /// An X509-SVID for `spiffe://<td>/hallmark/server`, renewed like the
    /// node API's.
    #[default]
    HttpsSpiffe,
    /// The operator's WebPKI certificate chain and key (PEM files).
    HttpsWeb { cert: PathBuf, key: PathBuf },
}

/// A foreign bundle document we can use: it parses and has X.509
/// authorities (without them neither its SVIDs nor its https_spiffe
/// endpoint could ever be verified).
pub(crate) fn parse_foreign_bundle(td: &TrustDomain, json: &[u8]) -> Result<Bundle, String> {
    let bundle = Bundle::from_jwks_json(td, json).map_err(|e| e.to_string())?;
    if bundle.x509_authorities.is_empty() {
        return Err("it has no X.509 authorities (keys with use x509-svid)".into());
    }
    Ok(bundle)
}

/// The DER certificates of a PEM document (CERTIFICATE blocks only).
pub(crate) fn pem_certs(pem_text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("not PEM: {e}"))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect())
}

/// Parses a bootstrap bundle: a SPIFFE bundle (JWKS JSON) or PEM
/// certificates.
pub(crate) fn parse_bootstrap(td: &TrustDomain, data: &[u8]) -> Result<Bundle, String> {
    let text = String::from_utf8_lossy(data);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return parse_foreign_bundle(td, data);
    }
    if trimmed.starts_with("-----BEGIN") {
        let certs = pem_certs(data)?;
        if certs.is_empty() {
            return Err("the PEM holds no CERTIFICATE block".into());
        }
        for (i, der) in certs.iter().enumerate() {
            x509_parser::parse_x509_certificate(der)
                .map_err(|e| format!("certificate {i} of the PEM does not parse: {e}"))?;
        }
        let mut b = Bundle::new(td.clone());
        b.x509_authorities = certs;
        return Ok(b);
    }
    Err("neither a SPIFFE bundle (JWKS JSON) nor PEM certificates".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use std::time::Duration;

    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("partner.example").unwrap()
    }

    fn authority() -> hallmark_ca::X509Authority {
        hallmark_ca::X509Authority::generate_root(
            &td(),
            Duration::from_secs(3600),
            std::time::SystemTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn bootstrap_bundles_parse_from_jwks_and_pem() {
        let ca = authority();
        let mut b = Bundle::new(td());
        b.x509_authorities = vec![ca.cert_der().to_vec()];
        b.sequence = 7;
        let from_jwks = parse_bootstrap(&td(), &b.to_jwks_json()).unwrap();
        assert_eq!(from_jwks.x509_authorities, b.x509_authorities);
        assert_eq!(from_jwks.sequence, 7);
        let from_pem = parse_bootstrap(&td(), b.x509_pem().as_bytes()).unwrap();
        assert_eq!(from_pem.x509_authorities, b.x509_authorities);

        for (bad, why) in [
            (&b"hello"[..], "neither"),
            (&br#"{"keys":[]}"#[..], "no X.509 authorities"),
            (&br#"{"keys":"x"}"#[..], "keys"),
            (
                &b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"[..],
                "no CERTIFICATE",
            ),
        ] {
            let e = parse_bootstrap(&td(), bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
