//! Hallmark's certificate authority: keys, X.509 and JWT SVIDs, trust bundles
//! and SPIFFE-aware TLS verifiers.
//!
//! The server holds an [`X509Authority`] (a self-signed root it generated, or
//! an intermediate loaded from disk) and a [`JwtAuthority`], signs workload
//! CSRs into X509-SVIDs and mints JWT-SVIDs. Agents generate keys and CSRs
//! with [`generate_key_and_csr`] so private keys never leave the node, verify
//! what they receive with [`verify_x509_svid`] and [`validate_jwt_svid`], and
//! exchange trust as [`Bundle`]s in the SPIFFE bundle (JWK Set) format. The
//! [`tls`] module builds rustls configurations that authenticate peers by
//! SPIFFE ID instead of DNS name, for the agent ↔ server connection.
//!
//! Nothing here reads the clock: every function that depends on time takes a
//! `SystemTime`, so expiry and rotation can be tested at fixed instants.
//! All cryptography goes through aws-lc-rs.

#![forbid(unsafe_code)]

mod bundle;
mod csr;
mod error;
mod https;
mod jwk;
mod jwt;
pub mod tls;
mod verify;
mod x509;

pub use bundle::{Bundle, BundleError, JwtKey};
pub use csr::{verify_csr, CsrError, MIN_RSA_BITS};
pub use error::CaError;
pub use https::{HttpsIdentity, ReloadingIdentity, RELOAD_CHECK};
pub use jwk::JwkError;
pub use jwt::{validate_jwt_svid, JwtAuthority, JwtError, KeyAlg, StoredJwtKey, ValidatedJwt};
pub use verify::{spiffe_id_from_cert, verify_x509_svid};
pub use x509::{generate_key_and_csr, StoredAuthority, X509Authority};

/// Lowercase hex SHA-256, the form of every certificate id and fingerprint.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
