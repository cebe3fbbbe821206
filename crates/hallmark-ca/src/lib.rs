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

mod bundle;
mod csr;
mod error;
mod https;
mod jwk;
mod jwt;
pub mod tls;
mod x509;

pub use bundle::{Bundle, BundleError, JwtKey};
pub use csr::{verify_csr, CsrError};
pub use error::CaError;
pub use https::{HttpsIdentity, ReloadingIdentity, RELOAD_CHECK};
pub use jwk::JwkError;
pub use jwt::{validate_jwt_svid, JwtAuthority, JwtError, KeyAlg, StoredJwtKey, ValidatedJwt};
pub use x509::{
    generate_key_and_csr, spiffe_id_from_cert, verify_x509_svid, StoredAuthority, X509Authority,
};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, negative for earlier instants, saturating at
/// the ends of `i64`. Pre-epoch clocks are nonsense, but mapping them to
/// negative seconds keeps every comparison correct instead of failing open.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The inverse of [`unix_secs`].
pub(crate) fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Lowercase hex SHA-256, the form of every certificate id and fingerprint.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn unix_secs_round_trips_on_both_sides_of_the_epoch() {
        for secs in [0i64, 1, 1_700_000_000, -1, -86_400] {
            assert_eq!(unix_secs(system_time(secs)), secs);
        }
        // Sub-second parts are truncated toward the epoch.
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1_999)), 1);
    }
}
