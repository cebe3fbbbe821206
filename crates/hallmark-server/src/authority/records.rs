//! Signing authorities as datastore records: converting between the two,
//! and what a set of records says (the bundle, its sequence, the tainted
//! authorities). Pure functions, so every server on a datastore derives the
//! same answers from the same records.

use std::time::{Duration, SystemTime};

use hallmark_ca::{
    Bundle, JwtAuthority, JwtKey, KeyAlg, StoredAuthority, StoredJwtKey, X509Authority,
};
use hallmark_core::time::unix_secs;
use hallmark_core::TrustDomain;
use hallmark_store::{AuthorityKind, AuthorityRecord};

use super::{kind_label, state_of, AuthorityError, AuthorityState, Tainted};

pub(super) fn find_record<'a>(
    records: &'a [AuthorityRecord],
    kind: AuthorityKind,
    id: &str,
) -> Result<&'a AuthorityRecord, AuthorityError> {
    records
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| AuthorityError::NotFound {
            kind: kind_label(kind),
            id: id.to_string(),
        })
}

/// When a retiring authority leaves the bundle: after `window`, but never
/// later than its own expiry (nothing it signed outlives it).
pub(super) fn retire_until(r: &AuthorityRecord, now: SystemTime, window: Duration) -> i64 {
    unix_secs(now)
        .saturating_add(i64::try_from(window.as_secs()).unwrap_or(i64::MAX))
        .min(r.not_after)
}

/// The bundle sequence, derived from the records so that every server on a
/// datastore computes the same one and it never goes backwards: states only
/// move forward ([`AuthorityState`]), records are never deleted (revoked is
/// a state), and expiry only happens once. Any change of the bundle raises
/// the sum of state ranks or the count of expired records.
fn bundle_sequence(x509: &[AuthorityRecord], jwt: &[AuthorityRecord], now_unix: i64) -> u64 {
    x509.iter()
        .chain(jwt)
        .map(|r| state_of(r).map_or(1, AuthorityState::rank) + u64::from(r.not_after <= now_unix))
        .sum()
}

/// Tainted X.509 authorities, and tainted JWT and OIDC key IDs together
/// (kids are random, so one list serves both token caches of the agent).
pub(super) fn tainted_from(
    x509: &[AuthorityRecord],
    jwt: &[AuthorityRecord],
    oidc: &[AuthorityRecord],
) -> Tainted {
    let ids = |rs: &[&[AuthorityRecord]]| {
        let mut v: Vec<String> = rs
            .iter()
            .flat_map(|r| r.iter())
            .filter(|r| state_of(r) == Some(AuthorityState::Tainted))
            .map(|r| r.id.clone())
            .collect();
        v.sort();
        v
    };
    Tainted {
        x509: ids(&[x509]),
        jwt: ids(&[jwt, oidc]),
    }
}

pub(super) fn published(r: &AuthorityRecord, now_unix: i64) -> bool {
    r.not_after > now_unix && state_of(r) != Some(AuthorityState::Revoked)
}

pub(super) fn x509_from_record(r: &AuthorityRecord) -> Result<X509Authority, AuthorityError> {
    X509Authority::from_stored(&StoredAuthority {
        cert_der: r.cert_der.clone(),
        key_pkcs8: r.key_pkcs8.clone(),
        chain_der: r.chain_der.clone(),
    })
    .map_err(|e| AuthorityError::Corrupt {
        kind: "X.509",
        id: r.id.clone(),
        reason: e.to_string(),
    })
}

pub(super) fn key_from_record(r: &AuthorityRecord) -> Result<JwtAuthority, AuthorityError> {
    let corrupt = |reason: String| AuthorityError::Corrupt {
        kind: kind_label(r.kind),
        id: r.id.clone(),
        reason,
    };
    let alg: KeyAlg = r
        .alg
        .parse()
        .map_err(|e: hallmark_ca::CaError| corrupt(e.to_string()))?;
    JwtAuthority::from_stored(&StoredJwtKey {
        kid: r.id.clone(),
        alg,
        key_pkcs8: r.key_pkcs8.clone(),
        created_at_unix: r.created_at,
    })
    .map_err(|e| corrupt(e.to_string()))
}

pub(super) fn key_record(
    key: &JwtAuthority,
    kind: AuthorityKind,
    state: AuthorityState,
    now: SystemTime,
) -> AuthorityRecord {
    AuthorityRecord {
        id: key.kid().to_string(),
        kind,
        state: state.as_str().into(),
        alg: key.alg().to_string(),
        key_pkcs8: key.to_stored().key_pkcs8,
        cert_der: Vec::new(),
        chain_der: Vec::new(),
        created_at: unix_secs(now),
        // A key has no expiry of its own; retiring it sets one.
        not_after: i64::MAX,
    }
}

pub(super) fn x509_record(
    ca: &X509Authority,
    state: AuthorityState,
    now: SystemTime,
) -> AuthorityRecord {
    let stored = ca.to_stored();
    AuthorityRecord {
        id: ca.id().to_string(),
        kind: AuthorityKind::X509,
        state: state.as_str().into(),
        alg: "ec-p256".into(),
        key_pkcs8: stored.key_pkcs8,
        cert_der: stored.cert_der,
        chain_der: stored.chain_der,
        created_at: unix_secs(now),
        not_after: unix_secs(ca.not_after()),
    }
}

/// The bundle: every X.509 root and JWT key that is still published,
/// whatever its state, so anything signed by a retired authority still
/// verifies.
pub(super) fn bundle_from(
    td: &TrustDomain,
    x509: &[AuthorityRecord],
    jwt: &[AuthorityRecord],
    refresh_hint_secs: u64,
    now: SystemTime,
) -> Result<Bundle, AuthorityError> {
    let now_unix = unix_secs(now);
    let mut x509_authorities: Vec<Vec<u8>> = Vec::new();
    for r in x509.iter().filter(|r| published(r, now_unix)) {
        let anchor = r.chain_der.last().unwrap_or(&r.cert_der).clone();
        if !x509_authorities.contains(&anchor) {
            x509_authorities.push(anchor);
        }
    }
    let mut jwt_authorities = Vec::new();
    for r in jwt.iter().filter(|r| published(r, now_unix)) {
        let key = key_from_record(r)?;
        jwt_authorities.push(JwtKey {
            kid: key.kid().to_string(),
            jwk: key.public_jwk(),
        });
    }
    Ok(Bundle {
        trust_domain: td.clone(),
        x509_authorities,
        jwt_authorities,
        sequence: bundle_sequence(x509, jwt, now_unix),
        refresh_hint_secs,
    })
}
