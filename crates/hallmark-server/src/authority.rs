//! The server's signing authorities: the X.509 CA that signs SVIDs and the
//! JWT key that signs JWT-SVIDs, persisted in the datastore so a restart (or
//! another server on the same datastore) signs with the same keys.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_ca::{
    Bundle, JwtAuthority, JwtKey, KeyAlg, StoredAuthority, StoredJwtKey, X509Authority,
};
use hallmark_core::TrustDomain;
use hallmark_store::{AuthorityKind, AuthorityRecord, Store};
use tokio::sync::watch;

/// How often agents should re-fetch the bundle (`spiffe_refresh_hint`).
const REFRESH_HINT_SECS: u64 = 300;
/// JWT keys stay published this long after they stop signing, which covers
/// the longest JWT-SVID lifetime an entry may ask for.
const JWT_KEY_PUBLISH_AFTER_RETIRE: Duration = Duration::from_secs(30 * 86400);

/// Where the X.509 CA comes from.
#[derive(Debug, Clone, Default)]
pub enum CaSource {
    /// A self-signed root created on first start and kept in the datastore.
    #[default]
    SelfSigned,
    /// A CA certificate and key (and the chain above it) read from PEM files.
    Disk {
        cert: PathBuf,
        key: PathBuf,
        chain: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("datastore: {0}")]
    Store(#[from] hallmark_store::StoreError),
    #[error("CA: {0}")]
    Ca(#[from] hallmark_ca::CaError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stored {kind} authority `{id}` is unusable: {reason}")]
    Corrupt {
        kind: &'static str,
        id: String,
        reason: String,
    },
}

/// Authorities an operator tainted, by kind: agents re-issue whatever they
/// signed at once. Sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tainted {
    /// X.509 authority IDs.
    pub x509: Vec<String>,
    /// JWT key IDs.
    pub jwt: Vec<String>,
}

/// The authorities in force, swapped as one unit.
pub struct Authorities {
    pub x509: X509Authority,
    pub jwt: JwtAuthority,
    /// Signs OIDC-profile tokens; published in the OIDC JWKS, not in the
    /// SPIFFE bundle.
    pub oidc: JwtAuthority,
    pub bundle: Arc<Bundle>,
}

pub struct CaManager {
    current: RwLock<Arc<Authorities>>,
    bundle_tx: watch::Sender<Arc<Bundle>>,
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl CaManager {
    /// Loads the active authorities from the datastore, creating them on
    /// first start.
    pub async fn load_or_create(
        store: Arc<dyn Store>,
        td: &TrustDomain,
        source: &CaSource,
        ca_ttl: Duration,
        jwt_alg: KeyAlg,
        oidc_alg: KeyAlg,
    ) -> Result<Self, AuthorityError> {
        let now = SystemTime::now();
        let mut x509_records = store.list_authorities(AuthorityKind::X509).await?;
        let x509 = match source {
            CaSource::Disk { cert, key, chain } => {
                let read = |p: &PathBuf| {
                    std::fs::read_to_string(p).map_err(|source| AuthorityError::Read {
                        path: p.clone(),
                        source,
                    })
                };
                let chain_pem = chain.as_ref().map(read).transpose()?;
                let ca = X509Authority::from_pem(&read(cert)?, &read(key)?, chain_pem.as_deref())?;
                // The disk CA becomes the active one; any other stays
                // published (retired) until it expires.
                for r in x509_records
                    .iter_mut()
                    .filter(|r| r.state == "active" && r.id != ca.id())
                {
                    r.state = "retired".into();
                    store.put_authority(r).await?;
                }
                store.put_authority(&x509_record(&ca, now)).await?;
                ca
            }
            CaSource::SelfSigned => {
                match x509_records
                    .iter()
                    .rev()
                    .find(|r| r.state == "active" && r.not_after > unix(now))
                {
                    Some(r) => X509Authority::from_stored(&StoredAuthority {
                        cert_der: r.cert_der.clone(),
                        key_pkcs8: r.key_pkcs8.clone(),
                        chain_der: r.chain_der.clone(),
                    })
                    .map_err(|e| AuthorityError::Corrupt {
                        kind: "X.509",
                        id: r.id.clone(),
                        reason: e.to_string(),
                    })?,
                    None => {
                        let ca = X509Authority::generate_root(td, ca_ttl, now)?;
                        store.put_authority(&x509_record(&ca, now)).await?;
                        tracing::info!(id = %ca.id(), "created a new self-signed X.509 root");
                        ca
                    }
                }
            }
        };

        let jwt = load_or_create_key(&store, AuthorityKind::Jwt, jwt_alg, now).await?;
        let oidc = load_or_create_key(&store, AuthorityKind::Oidc, oidc_alg, now).await?;

        let bundle = Arc::new(build_bundle(td, &store, now).await?);
        let (bundle_tx, _) = watch::channel(bundle.clone());
        Ok(CaManager {
            current: RwLock::new(Arc::new(Authorities {
                x509,
                jwt,
                oidc,
                bundle,
            })),
            bundle_tx,
        })
    }

    pub fn current(&self) -> Arc<Authorities> {
        // A poisoned lock only means a panic elsewhere while swapping; the
        // value inside is still a complete Arc.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn bundle(&self) -> Arc<Bundle> {
        self.current().bundle.clone()
    }

    pub fn subscribe_bundle(&self) -> watch::Receiver<Arc<Bundle>> {
        self.bundle_tx.subscribe()
    }

    /// The tainted authorities agents must re-issue away from.
    pub fn tainted(&self) -> Tainted {
        Tainted::default()
    }

    /// SHA-256 of the trust anchor, the fingerprint agents pin on first contact.
    pub fn fingerprint(&self) -> String {
        self.current().x509.fingerprint()
    }
}

/// The active signing key of `kind` (JWT or OIDC) with algorithm `alg`,
/// created on first start. Switching algorithms retires the old key, which
/// stays published until everything it signed has expired.
async fn load_or_create_key(
    store: &Arc<dyn Store>,
    kind: AuthorityKind,
    alg: KeyAlg,
    now: SystemTime,
) -> Result<JwtAuthority, AuthorityError> {
    let label = match kind {
        AuthorityKind::Oidc => "OIDC",
        _ => "JWT",
    };
    let records = store.list_authorities(kind).await?;
    if let Some(r) = records
        .iter()
        .rev()
        .find(|r| r.state == "active" && r.alg == alg.to_string())
    {
        return JwtAuthority::from_stored(&StoredJwtKey {
            kid: r.id.clone(),
            alg,
            key_pkcs8: r.key_pkcs8.clone(),
            created_at_unix: r.created_at,
        })
        .map_err(|e| AuthorityError::Corrupt {
            kind: label,
            id: r.id.clone(),
            reason: e.to_string(),
        });
    }
    for r in records.iter().filter(|r| r.state == "active") {
        let mut r = r.clone();
        r.state = "retired".into();
        r.not_after = unix(now + JWT_KEY_PUBLISH_AFTER_RETIRE);
        store.put_authority(&r).await?;
    }
    let key = JwtAuthority::generate(alg, now)?;
    store
        .put_authority(&AuthorityRecord {
            id: key.kid().to_string(),
            kind,
            state: "active".into(),
            alg: alg.to_string(),
            key_pkcs8: key.to_stored().key_pkcs8,
            cert_der: Vec::new(),
            chain_der: Vec::new(),
            created_at: unix(now),
            not_after: i64::MAX,
        })
        .await?;
    tracing::info!(kid = %key.kid(), alg = %alg, kind = label, "created a new signing key");
    Ok(key)
}

/// The public keys of every OIDC signing key that is still published
/// (active, prepared, or retired but not yet expired), newest first: the
/// OIDC issuer's JWKS.
#[allow(dead_code)] // the OIDC issuer's JWKS handler is its caller
pub async fn oidc_public_keys(
    store: &Arc<dyn Store>,
    now: SystemTime,
) -> Result<Vec<JwtKey>, AuthorityError> {
    let now_unix = unix(now);
    let mut keys = Vec::new();
    for r in store
        .list_authorities(AuthorityKind::Oidc)
        .await?
        .iter()
        .rev()
        .filter(|r| r.not_after > now_unix && r.state != "revoked")
    {
        let alg: KeyAlg =
            r.alg
                .parse()
                .map_err(|e: hallmark_ca::CaError| AuthorityError::Corrupt {
                    kind: "OIDC",
                    id: r.id.clone(),
                    reason: e.to_string(),
                })?;
        let key = JwtAuthority::from_stored(&StoredJwtKey {
            kid: r.id.clone(),
            alg,
            key_pkcs8: r.key_pkcs8.clone(),
            created_at_unix: r.created_at,
        })?;
        keys.push(key.jwt_key());
    }
    Ok(keys)
}

fn x509_record(ca: &X509Authority, now: SystemTime) -> AuthorityRecord {
    let stored = ca.to_stored();
    AuthorityRecord {
        id: ca.id().to_string(),
        kind: AuthorityKind::X509,
        state: "active".into(),
        alg: "ec-p256".into(),
        key_pkcs8: stored.key_pkcs8,
        cert_der: stored.cert_der,
        chain_der: stored.chain_der,
        created_at: unix(now),
        not_after: unix(ca.not_after()),
    }
}

/// The bundle: every X.509 root and JWT key that is still valid, whatever
/// its state, so anything signed by a retired authority still verifies.
async fn build_bundle(
    td: &TrustDomain,
    store: &Arc<dyn Store>,
    now: SystemTime,
) -> Result<Bundle, AuthorityError> {
    let now_unix = unix(now);
    let x509 = store.list_authorities(AuthorityKind::X509).await?;
    let jwt = store.list_authorities(AuthorityKind::Jwt).await?;
    let mut x509_authorities: Vec<Vec<u8>> = Vec::new();
    for r in x509.iter().filter(|r| r.not_after > now_unix) {
        let anchor = r.chain_der.last().unwrap_or(&r.cert_der).clone();
        if !x509_authorities.contains(&anchor) {
            x509_authorities.push(anchor);
        }
    }
    let mut jwt_authorities = Vec::new();
    for r in jwt.iter().filter(|r| r.not_after > now_unix) {
        let alg: KeyAlg =
            r.alg
                .parse()
                .map_err(|e: hallmark_ca::CaError| AuthorityError::Corrupt {
                    kind: "JWT",
                    id: r.id.clone(),
                    reason: e.to_string(),
                })?;
        let key = JwtAuthority::from_stored(&StoredJwtKey {
            kid: r.id.clone(),
            alg,
            key_pkcs8: r.key_pkcs8.clone(),
            created_at_unix: r.created_at,
        })?;
        jwt_authorities.push(JwtKey {
            kid: key.kid().to_string(),
            jwk: key.public_jwk(),
        });
    }
    Ok(Bundle {
        trust_domain: td.clone(),
        x509_authorities,
        jwt_authorities,
        sequence: (x509.len() + jwt.len()) as u64,
        refresh_hint_secs: REFRESH_HINT_SECS,
    })
}
