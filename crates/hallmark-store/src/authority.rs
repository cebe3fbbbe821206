//! The server's signing authorities (X.509 CAs, JWT and OIDC keys) with
//! their private keys, kept so that every server of a deployment signs with
//! the same ones and a restart keeps them.

use std::fmt;

use crate::Result;

/// Which kind of signing key an [`AuthorityRecord`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorityKind {
    /// A CA certificate and key that sign X.509-SVIDs.
    X509,
    /// A key that signs JWT-SVIDs.
    Jwt,
    /// A key that signs OIDC-profile tokens for cloud federation.
    Oidc,
}

/// A signing authority (CA or JWT key) with its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorityRecord {
    /// X.509: the CA's identifier; JWT: the key ID (`kid`).
    pub id: String,
    pub kind: AuthorityKind,
    /// `prepared`, `active`, `retired` or `tainted`.
    pub state: String,
    pub alg: String,
    /// PKCS#8 DER of the private key.
    pub key_pkcs8: Vec<u8>,
    /// DER certificate; empty for JWT keys.
    pub cert_der: Vec<u8>,
    /// DER certificates above `cert_der`, nearest first.
    pub chain_der: Vec<Vec<u8>>,
    pub created_at: i64,
    pub not_after: i64,
}

/// Signing authorities. Every method is atomic on its own.
#[async_trait::async_trait]
pub trait AuthorityStore: Send + Sync + 'static {
    /// Inserts the authority or replaces every field (chain included) of the
    /// one with the same `id`.
    async fn put_authority(&self, a: &AuthorityRecord) -> Result<()>;

    /// Authorities of one kind, ordered by `created_at` (then `id`).
    async fn list_authorities(&self, kind: AuthorityKind) -> Result<Vec<AuthorityRecord>>;
}

impl AuthorityKind {
    /// The name stored in the datastore.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityKind::X509 => "x509",
            AuthorityKind::Jwt => "jwt",
            AuthorityKind::Oidc => "oidc",
        }
    }

    /// Inverse of [`AuthorityKind::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "x509" => Some(AuthorityKind::X509),
            "jwt" => Some(AuthorityKind::Jwt),
            "oidc" => Some(AuthorityKind::Oidc),
            _ => None,
        }
    }
}

impl fmt::Display for AuthorityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Written by hand so the private key never reaches a log line.
impl fmt::Debug for AuthorityRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("alg", &self.alg)
            .field(
                "key_pkcs8",
                &format_args!("<{} bytes redacted>", self.key_pkcs8.len()),
            )
            .field("cert_der", &format_args!("<{} bytes>", self.cert_der.len()))
            .field(
                "chain_der",
                &format_args!("<{} certificates>", self.chain_der.len()),
            )
            .field("created_at", &self.created_at)
            .field("not_after", &self.not_after)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn authority_kind_names_round_trip() {
        for kind in [AuthorityKind::X509, AuthorityKind::Jwt, AuthorityKind::Oidc] {
            assert_eq!(AuthorityKind::from_name(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(AuthorityKind::from_name("X509"), None);
    }

    #[test]
    fn authority_debug_hides_the_key() {
        let r = AuthorityRecord {
            id: "ca1".into(),
            kind: AuthorityKind::X509,
            state: "active".into(),
            alg: "ec-p256".into(),
            key_pkcs8: vec![0xAB; 40],
            cert_der: vec![1, 2, 3],
            chain_der: vec![vec![4]],
            created_at: 1,
            not_after: 2,
        };
        let dbg = format!("{r:?}");
        assert!(dbg.contains("40 bytes redacted"), "{dbg}");
        assert!(!dbg.contains("171"), "key bytes leaked: {dbg}");
    }
}
