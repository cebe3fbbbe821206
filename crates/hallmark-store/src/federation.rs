//! Federation relationships: where a foreign trust domain's bundle is
//! fetched from, and the bundle last fetched.
//!
//! Operators write the endpoint fields ([`FederationStore::put_federation`]);
//! the refresh loop writes only the outcome of a fetch
//! ([`FederationStore::record_federation_refresh`]), so a refresh finishing
//! after an operator's edit never puts the old endpoint back.

use std::fmt;

use hallmark_core::TrustDomain;

use crate::{Result, StoreError};

/// Federation relationships. Every method is atomic on its own.
#[async_trait::async_trait]
pub trait FederationStore: Send + Sync + 'static {
    /// Inserts the federation relationship or replaces every field of the
    /// one with the same trust domain.
    async fn put_federation(&self, f: &FederationRecord) -> Result<()>;

    async fn get_federation(&self, td: &TrustDomain) -> Result<Option<FederationRecord>>;

    /// All federation relationships, ordered by trust domain name bytewise.
    async fn list_federations(&self) -> Result<Vec<FederationRecord>>;

    /// `false` when there was no relationship with `td`.
    async fn delete_federation(&self, td: &TrustDomain) -> Result<bool>;

    /// Records the outcome of a fetch of `td`'s bundle, touching only the
    /// bundle, sequence, refresh times and error columns, so an operator's
    /// concurrent edit of the endpoint survives. `false` when the
    /// relationship was deleted meanwhile (nothing is written).
    async fn record_federation_refresh(
        &self,
        td: &TrustDomain,
        outcome: &FederationRefresh,
    ) -> Result<bool>;
}

/// How a foreign bundle endpoint authenticates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FederationProfile {
    /// A WebPKI certificate for the URL's host name.
    HttpsWeb,
    /// An X509-SVID of a configured SPIFFE ID, chained to the foreign
    /// trust domain's current bundle.
    HttpsSpiffe,
}

impl FederationProfile {
    /// The name stored in the datastore and used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FederationProfile::HttpsWeb => "https_web",
            FederationProfile::HttpsSpiffe => "https_spiffe",
        }
    }

    /// Inverse of [`FederationProfile::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "https_web" => Some(FederationProfile::HttpsWeb),
            "https_spiffe" => Some(FederationProfile::HttpsSpiffe),
            _ => None,
        }
    }
}

impl fmt::Display for FederationProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A federation relationship with one foreign trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRecord {
    pub trust_domain: TrustDomain,
    /// `https://` URL of the foreign SPIFFE bundle endpoint.
    pub bundle_endpoint_url: String,
    pub profile: FederationProfile,
    /// https_spiffe: the SPIFFE ID the endpoint must present; empty for
    /// https_web.
    pub endpoint_spiffe_id: String,
    /// https_web: extra PEM roots trusted for the endpoint; may be empty.
    pub web_ca_pem: Vec<u8>,
    /// The foreign SPIFFE bundle (JWKS JSON) in force; empty until known.
    pub bundle: Vec<u8>,
    /// `spiffe_sequence` of `bundle`.
    pub bundle_sequence: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last successful fetch; 0 before the first.
    pub last_refresh: i64,
    /// Unix seconds at which the next fetch is due.
    pub next_refresh: i64,
    /// Why the last fetch failed; empty after a success.
    pub last_error: String,
}

/// The outcome of one fetch of a foreign bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FederationRefresh {
    /// A bundle was fetched and accepted: it replaces the stored one and
    /// clears `last_error`.
    Fetched {
        bundle: Vec<u8>,
        sequence: u64,
        at: i64,
        next_refresh: i64,
    },
    /// The fetch failed: the stored bundle stays, `last_error` is set.
    Failed { error: String, next_refresh: i64 },
}

/// Column list matching [`FederationRow`].
pub(crate) const FEDERATION_COLUMNS: &str =
    "trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, web_ca_pem, bundle, \
     bundle_sequence, created_at, last_refresh, next_refresh, last_error";

/// Insert-or-replace of every column; `$1`..`$11` in [`FEDERATION_COLUMNS`]
/// order. Both back ends accept this statement.
pub(crate) const PUT_FEDERATION: &str =
    "INSERT INTO federations (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, \
     web_ca_pem, bundle, bundle_sequence, created_at, last_refresh, next_refresh, last_error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (trust_domain) DO UPDATE SET bundle_endpoint_url = excluded.bundle_endpoint_url, \
     profile = excluded.profile, endpoint_spiffe_id = excluded.endpoint_spiffe_id, \
     web_ca_pem = excluded.web_ca_pem, bundle = excluded.bundle, \
     bundle_sequence = excluded.bundle_sequence, created_at = excluded.created_at, \
     last_refresh = excluded.last_refresh, next_refresh = excluded.next_refresh, \
     last_error = excluded.last_error";

/// `$1` bundle, `$2` sequence, `$3` at, `$4` next_refresh, `$5` trust domain.
pub(crate) const SET_FETCHED: &str =
    "UPDATE federations SET bundle = $1, bundle_sequence = $2, last_refresh = $3, \
     next_refresh = $4, last_error = '' WHERE trust_domain = $5";

/// `$1` error, `$2` next_refresh, `$3` trust domain.
pub(crate) const SET_FAILED: &str =
    "UPDATE federations SET last_error = $1, next_refresh = $2 WHERE trust_domain = $3";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FederationRow {
    pub trust_domain: String,
    pub bundle_endpoint_url: String,
    pub profile: String,
    pub endpoint_spiffe_id: String,
    pub web_ca_pem: Vec<u8>,
    pub bundle: Vec<u8>,
    pub bundle_sequence: i64,
    pub created_at: i64,
    pub last_refresh: i64,
    pub next_refresh: i64,
    pub last_error: String,
}

impl FederationRow {
    pub(crate) fn into_record(self) -> Result<FederationRecord> {
        let corrupt = |column: &str, what: String| {
            StoreError::Corrupt(format!(
                "table federations, trust_domain {}: column {column}: {what}",
                self.trust_domain
            ))
        };
        let trust_domain = TrustDomain::new(&self.trust_domain).map_err(|e| {
            corrupt(
                "trust_domain",
                format!("trust domain `{}` {e}", self.trust_domain),
            )
        })?;
        let profile = FederationProfile::from_name(&self.profile).ok_or_else(|| {
            corrupt(
                "profile",
                format!(
                    "unknown profile `{}` (https_web or https_spiffe)",
                    self.profile
                ),
            )
        })?;
        let bundle_sequence = u64::try_from(self.bundle_sequence).map_err(|_| {
            corrupt(
                "bundle_sequence",
                format!("negative value {}", self.bundle_sequence),
            )
        })?;
        Ok(FederationRecord {
            trust_domain,
            bundle_endpoint_url: self.bundle_endpoint_url,
            profile,
            endpoint_spiffe_id: self.endpoint_spiffe_id,
            web_ca_pem: self.web_ca_pem,
            bundle: self.bundle,
            bundle_sequence,
            created_at: self.created_at,
            last_refresh: self.last_refresh,
            next_refresh: self.next_refresh,
            last_error: self.last_error,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn profile_names_round_trip() {
        for p in [FederationProfile::HttpsWeb, FederationProfile::HttpsSpiffe] {
            assert_eq!(FederationProfile::from_name(p.as_str()), Some(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        for bad in ["", "https-web", "HTTPS_WEB", "web"] {
            assert_eq!(FederationProfile::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn corrupt_rows_name_the_column() {
        let row = || FederationRow {
            trust_domain: "partner.example".into(),
            bundle_endpoint_url: "https://x".into(),
            profile: "https_web".into(),
            endpoint_spiffe_id: String::new(),
            web_ca_pem: Vec::new(),
            bundle: Vec::new(),
            bundle_sequence: 0,
            created_at: 1,
            last_refresh: 0,
            next_refresh: 0,
            last_error: String::new(),
        };
        assert!(row().into_record().is_ok());
        for (bad, column) in [
            (
                FederationRow {
                    profile: "ftp".into(),
                    ..row()
                },
                "profile",
            ),
            (
                FederationRow {
                    trust_domain: "Bad Domain".into(),
                    ..row()
                },
                "trust_domain",
            ),
            (
                FederationRow {
                    bundle_sequence: -1,
                    ..row()
                },
                "bundle_sequence",
            ),
        ] {
            let e = bad.into_record().unwrap_err().to_string();
            assert!(e.contains(&format!("column {column}")), "{e}");
        }
    }
}
