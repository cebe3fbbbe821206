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

/// How often agents and federated trust domains should re-fetch the bundle
/// (`spiffe_refresh_hint`) unless configured otherwise.
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);
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
    /// A rotation step the authority's state does not allow.
    #[error("{kind} authority `{id}`: {rule}")]
    Rule {
        kind: &'static str,
        id: String,
        rule: String,
    },
    /// No authority of that kind has that ID.
    #[error("no {kind} authority `{id}`; list them with `hallmark authority show`")]
    NotFound { kind: &'static str, id: String },
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
    store: Arc<dyn Store>,
    td: TrustDomain,
    /// The X.509 CA comes from files: rotating it means replacing them.
    disk_ca: bool,
    ca_ttl: Duration,
    /// The bundle's `spiffe_refresh_hint`.
    refresh_hint_secs: u64,
    current: RwLock<Arc<Authorities>>,
    tainted: RwLock<Tainted>,
    bundle_tx: watch::Sender<Arc<Bundle>>,
    /// Serializes this server's own changes; other servers on the same
    /// datastore are reconciled by [`CaManager::reload`].
    changes: tokio::sync::Mutex<()>,
}

/// The life of an authority. Every transition moves forward in this order,
/// which is what keeps the bundle sequence increasing (see
/// [`bundle_sequence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuthorityState {
    /// Published in the bundle, signs nothing yet.
    Prepared,
    /// Signs; one per kind.
    Active,
    /// Signs nothing any more; published until what it signed has expired.
    Retired,
    /// Retired and distrusted: agents re-issue what it signed at once.
    Tainted,
    /// Not published any more.
    Revoked,
}

impl AuthorityState {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityState::Prepared => "prepared",
            AuthorityState::Active => "active",
            AuthorityState::Retired => "retired",
            AuthorityState::Tainted => "tainted",
            AuthorityState::Revoked => "revoked",
        }
    }

    /// Inverse of [`AuthorityState::as_str`]; `None` for anything else.
    pub fn from_name(s: &str) -> Option<Self> {
        [
            AuthorityState::Prepared,
            AuthorityState::Active,
            AuthorityState::Retired,
            AuthorityState::Tainted,
            AuthorityState::Revoked,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Position in the life cycle, 1-based, for [`bundle_sequence`].
    fn rank(self) -> u64 {
        self as u64 + 1
    }
}

fn state_of(r: &AuthorityRecord) -> Option<AuthorityState> {
    AuthorityState::from_name(&r.state)
}

fn kind_label(kind: AuthorityKind) -> &'static str {
    match kind {
        AuthorityKind::X509 => "X.509",
        AuthorityKind::Jwt => "JWT",
        AuthorityKind::Oidc => "OIDC",
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl CaManager {
    /// Loads the active authorities from the datastore, creating them on
    /// first start. The bundle carries `refresh_hint` as its
    /// `spiffe_refresh_hint`.
    pub async fn load_or_create(
        store: Arc<dyn Store>,
        td: &TrustDomain,
        source: &CaSource,
        ca_ttl: Duration,
        jwt_alg: KeyAlg,
        oidc_alg: KeyAlg,
        refresh_hint: Duration,
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
                if !x509_records
                    .iter()
                    .any(|r| r.id == ca.id() && r.state == "active")
                {
                    store
                        .put_authority(&x509_record(&ca, AuthorityState::Active, now))
                        .await?;
                }
                ca
            }
            CaSource::SelfSigned => {
                match x509_records
                    .iter()
                    .rev()
                    .find(|r| r.state == "active" && r.not_after > unix(now))
                {
                    Some(r) => x509_from_record(r)?,
                    None => {
                        let ca = X509Authority::generate_root(td, ca_ttl, now)?;
                        store
                            .put_authority(&x509_record(&ca, AuthorityState::Active, now))
                            .await?;
                        tracing::info!(id = %ca.id(), "created a new self-signed X.509 root");
                        ca
                    }
                }
            }
        };

        let jwt = load_or_create_key(&store, AuthorityKind::Jwt, jwt_alg, now).await?;
        let oidc = load_or_create_key(&store, AuthorityKind::Oidc, oidc_alg, now).await?;

        let x509_records = store.list_authorities(AuthorityKind::X509).await?;
        let jwt_records = store.list_authorities(AuthorityKind::Jwt).await?;
        let refresh_hint_secs = refresh_hint.as_secs().max(1);
        let bundle = Arc::new(bundle_from(
            td,
            &x509_records,
            &jwt_records,
            refresh_hint_secs,
            now,
        )?);
        let oidc_records = store.list_authorities(AuthorityKind::Oidc).await?;
        let tainted = tainted_from(&x509_records, &jwt_records, &oidc_records);
        let (bundle_tx, _) = watch::channel(bundle.clone());
        Ok(CaManager {
            store,
            td: td.clone(),
            disk_ca: matches!(source, CaSource::Disk { .. }),
            ca_ttl,
            refresh_hint_secs,
            current: RwLock::new(Arc::new(Authorities {
                x509,
                jwt,
                oidc,
                bundle,
            })),
            tainted: RwLock::new(tainted),
            bundle_tx,
            changes: tokio::sync::Mutex::new(()),
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
        self.tainted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// SHA-256 of the trust anchor, the fingerprint agents pin on first contact.
    pub fn fingerprint(&self) -> String {
        self.current().x509.fingerprint()
    }

    /// Every authority of `kind` (all kinds when `None`), oldest first.
    pub async fn list(
        &self,
        kind: Option<AuthorityKind>,
    ) -> Result<Vec<AuthorityRecord>, AuthorityError> {
        let kinds = match kind {
            Some(k) => vec![k],
            None => vec![AuthorityKind::X509, AuthorityKind::Jwt, AuthorityKind::Oidc],
        };
        let mut out = Vec::new();
        for k in kinds {
            out.extend(self.store.list_authorities(k).await?);
        }
        Ok(out)
    }

    /// Re-reads the datastore and, if anything changed (another server
    /// rotated, a retired authority's window ended), swaps the authorities
    /// in force and publishes the new bundle. Returns whether it did.
    pub async fn reload(&self) -> Result<bool, AuthorityError> {
        self.reload_at(SystemTime::now()).await
    }

    pub(crate) async fn reload_at(&self, now: SystemTime) -> Result<bool, AuthorityError> {
        let x509 = self.converged(AuthorityKind::X509, now).await?;
        let jwt = self.converged(AuthorityKind::Jwt, now).await?;
        let oidc = self.converged(AuthorityKind::Oidc, now).await?;
        let bundle = bundle_from(&self.td, &x509, &jwt, self.refresh_hint_secs, now)?;
        let tainted = tainted_from(&x509, &jwt, &oidc);
        let cur = self.current();
        let active = |rs: &[AuthorityRecord]| {
            rs.iter()
                .rev()
                .find(|r| r.state == "active")
                .map(|r| r.id.clone())
        };
        let (x509_id, jwt_id, oidc_id) = (active(&x509), active(&jwt), active(&oidc));
        let same_signers = x509_id.as_deref().is_none_or(|id| id == cur.x509.id())
            && jwt_id.as_deref().is_none_or(|id| id == cur.jwt.kid())
            && oidc_id.as_deref().is_none_or(|id| id == cur.oidc.kid());
        if same_signers && bundle == *cur.bundle && tainted == self.tainted() {
            return Ok(false);
        }
        let find = |rs: &[AuthorityRecord], id: &Option<String>| {
            id.as_ref()
                .and_then(|id| rs.iter().find(|r| &r.id == id).cloned())
        };
        let next_x509 = match find(&x509, &x509_id) {
            Some(r) if r.id != cur.x509.id() => x509_from_record(&r)?,
            _ => X509Authority::from_stored(&cur.x509.to_stored())?,
        };
        let next_jwt = match find(&jwt, &jwt_id) {
            Some(r) if r.id != cur.jwt.kid() => key_from_record(&r)?,
            _ => JwtAuthority::from_stored(&cur.jwt.to_stored())?,
        };
        let next_oidc = match find(&oidc, &oidc_id) {
            Some(r) if r.id != cur.oidc.kid() => key_from_record(&r)?,
            _ => JwtAuthority::from_stored(&cur.oidc.to_stored())?,
        };
        let bundle = Arc::new(bundle);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Authorities {
            x509: next_x509,
            jwt: next_jwt,
            oidc: next_oidc,
            bundle: bundle.clone(),
        });
        *self.tainted.write().unwrap_or_else(|p| p.into_inner()) = tainted;
        // Swapped first, then published: whoever wakes on the bundle (the
        // node API's TLS, agent streams) already signs with the new one.
        self.bundle_tx.send_replace(bundle);
        tracing::info!(
            x509 = %self.current().x509.id(),
            jwt = %self.current().jwt.kid(),
            "authorities reloaded"
        );
        Ok(true)
    }

    /// The records of `kind`, with at most one active: when two servers
    /// activated at once, the newest active wins and the others are
    /// retired (conservatively: published until the CA expires, or for the
    /// longest JWT lifetime). Every server resolves the same way, so they
    /// converge without a lock across the datastore.
    async fn converged(
        &self,
        kind: AuthorityKind,
        now: SystemTime,
    ) -> Result<Vec<AuthorityRecord>, AuthorityError> {
        let mut records = self.store.list_authorities(kind).await?;
        let newest_active = records.iter().rposition(|r| r.state == "active");
        if let Some(keep) = newest_active {
            for (i, r) in records.iter_mut().enumerate() {
                if i != keep && r.state == "active" {
                    r.state = AuthorityState::Retired.as_str().into();
                    r.not_after = retire_until(r, now, JWT_KEY_PUBLISH_AFTER_RETIRE);
                    self.store.put_authority(r).await?;
                    tracing::warn!(kind = kind_label(kind), id = %r.id, "two active authorities found; retired the older one");
                }
            }
        }
        Ok(records)
    }

    /// Creates a new prepared authority of `kind`: published from now on,
    /// signing nothing until activated.
    pub async fn prepare(
        &self,
        kind: AuthorityKind,
        now: SystemTime,
    ) -> Result<AuthorityRecord, AuthorityError> {
        let _guard = self.changes.lock().await;
        let record = match kind {
            AuthorityKind::X509 => {
                if self.disk_ca {
                    return Err(AuthorityError::Rule {
                        kind: kind_label(kind),
                        id: self.current().x509.id().to_string(),
                        rule: "the CA comes from --ca-cert; rotate it by replacing the files and restarting the server".into(),
                    });
                }
                let ca = X509Authority::generate_root(&self.td, self.ca_ttl, now)?;
                x509_record(&ca, AuthorityState::Prepared, now)
            }
            AuthorityKind::Jwt | AuthorityKind::Oidc => {
                let cur = self.current();
                let alg = match kind {
                    AuthorityKind::Jwt => cur.jwt.alg(),
                    _ => cur.oidc.alg(),
                };
                let key = JwtAuthority::generate(alg, now)?;
                key_record(&key, kind, AuthorityState::Prepared, now)
            }
        };
        self.store.put_authority(&record).await?;
        tracing::info!(kind = kind_label(kind), id = %record.id, "prepared a new authority");
        self.reload_at(now).await?;
        Ok(record)
    }

    /// Makes the prepared authority `id` (the newest prepared one when
    /// `None`) the one that signs, and retires the active one: it stays
    /// published for `window` (the longest lifetime of anything it signed),
    /// capped by its own expiry.
    pub async fn activate(
        &self,
        kind: AuthorityKind,
        id: Option<&str>,
        window: Duration,
        now: SystemTime,
    ) -> Result<AuthorityRecord, AuthorityError> {
        let _guard = self.changes.lock().await;
        let records = self.converged(kind, now).await?;
        let label = kind_label(kind);
        let target = match id {
            Some(id) => {
                let r = find_record(&records, kind, id)?;
                if state_of(r) != Some(AuthorityState::Prepared) {
                    return Err(AuthorityError::Rule {
                        kind: label,
                        id: r.id.clone(),
                        rule: format!("it is {}; only a prepared authority can be activated (prepare one with `hallmark authority prepare --kind {kind}`)", r.state),
                    });
                }
                r.clone()
            }
            None => records
                .iter()
                .rev()
                .find(|r| state_of(r) == Some(AuthorityState::Prepared))
                .cloned()
                .ok_or_else(|| AuthorityError::Rule {
                    kind: label,
                    id: String::new(),
                    rule: format!("there is no prepared authority to activate; prepare one first with `hallmark authority prepare --kind {kind}`"),
                })?,
        };
        if target.not_after <= unix(now) {
            return Err(AuthorityError::Rule {
                kind: label,
                id: target.id.clone(),
                rule: "it has expired; prepare a new one".into(),
            });
        }
        let mut activated = target.clone();
        activated.state = AuthorityState::Active.as_str().into();
        // Activate before retiring: if this server dies in between, the
        // datastore holds two actives, which every server resolves to the
        // newest; never none.
        self.store.put_authority(&activated).await?;
        for r in records.iter().filter(|r| r.state == "active") {
            let mut r = r.clone();
            r.state = AuthorityState::Retired.as_str().into();
            r.not_after = retire_until(&r, now, window);
            self.store.put_authority(&r).await?;
        }
        tracing::info!(kind = label, id = %activated.id, "activated an authority");
        self.reload_at(now).await?;
        Ok(activated)
    }

    /// Marks the retired authority `id` as distrusted: it stays published so
    /// what it signed still verifies while agents re-issue it all at once.
    pub async fn taint(
        &self,
        kind: AuthorityKind,
        id: &str,
        now: SystemTime,
    ) -> Result<AuthorityRecord, AuthorityError> {
        self.transition(kind, id, AuthorityState::Retired, AuthorityState::Tainted, now, "only a retired authority can be tainted (activate a new one first, which retires this one)")
            .await
    }

    /// Removes the tainted authority `id` from the bundle: anything it
    /// signed stops verifying.
    pub async fn revoke(
        &self,
        kind: AuthorityKind,
        id: &str,
        now: SystemTime,
    ) -> Result<AuthorityRecord, AuthorityError> {
        self.transition(kind, id, AuthorityState::Tainted, AuthorityState::Revoked, now, "only a tainted authority can be revoked (taint it first, and give agents time to re-issue)")
            .await
    }

    async fn transition(
        &self,
        kind: AuthorityKind,
        id: &str,
        from: AuthorityState,
        to: AuthorityState,
        now: SystemTime,
        rule: &str,
    ) -> Result<AuthorityRecord, AuthorityError> {
        let _guard = self.changes.lock().await;
        let records = self.store.list_authorities(kind).await?;
        let r = find_record(&records, kind, id)?;
        if state_of(r) != Some(from) {
            return Err(AuthorityError::Rule {
                kind: kind_label(kind),
                id: r.id.clone(),
                rule: format!("it is {}; {rule}", r.state),
            });
        }
        let mut next = r.clone();
        next.state = to.as_str().into();
        self.store.put_authority(&next).await?;
        tracing::info!(kind = kind_label(kind), id = %next.id, state = to.as_str(), "authority state changed");
        self.reload_at(now).await?;
        Ok(next)
    }
}

fn find_record<'a>(
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
fn retire_until(r: &AuthorityRecord, now: SystemTime, window: Duration) -> i64 {
    unix(now)
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
fn tainted_from(
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

fn published(r: &AuthorityRecord, now_unix: i64) -> bool {
    r.not_after > now_unix && state_of(r) != Some(AuthorityState::Revoked)
}

fn x509_from_record(r: &AuthorityRecord) -> Result<X509Authority, AuthorityError> {
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

fn key_from_record(r: &AuthorityRecord) -> Result<JwtAuthority, AuthorityError> {
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

fn key_record(
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
        created_at: unix(now),
        // A key has no expiry of its own; retiring it sets one.
        not_after: i64::MAX,
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
    let label = kind_label(kind);
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
        .put_authority(&key_record(&key, kind, AuthorityState::Active, now))
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
        .filter(|r| published(r, now_unix))
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

fn x509_record(ca: &X509Authority, state: AuthorityState, now: SystemTime) -> AuthorityRecord {
    let stored = ca.to_stored();
    AuthorityRecord {
        id: ca.id().to_string(),
        kind: AuthorityKind::X509,
        state: state.as_str().into(),
        alg: "ec-p256".into(),
        key_pkcs8: stored.key_pkcs8,
        cert_der: stored.cert_der,
        chain_der: stored.chain_der,
        created_at: unix(now),
        not_after: unix(ca.not_after()),
    }
}

/// The bundle: every X.509 root and JWT key that is still published,
/// whatever its state, so anything signed by a retired authority still
/// verifies.
fn bundle_from(
    td: &TrustDomain,
    x509: &[AuthorityRecord],
    jwt: &[AuthorityRecord],
    refresh_hint_secs: u64,
    now: SystemTime,
) -> Result<Bundle, AuthorityError> {
    let now_unix = unix(now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use hallmark_store::SqliteStore;

    const HOUR: Duration = Duration::from_secs(3600);

    async fn manager(store: Arc<dyn Store>) -> CaManager {
        let td: TrustDomain = "example.org".parse().unwrap();
        CaManager::load_or_create(
            store,
            &td,
            &CaSource::SelfSigned,
            Duration::from_secs(86_400),
            KeyAlg::EcP256,
            KeyAlg::EcP256,
            DEFAULT_REFRESH_HINT,
        )
        .await
        .unwrap()
    }

    async fn memory() -> Arc<dyn Store> {
        Arc::new(SqliteStore::open_in_memory().await.unwrap())
    }

    fn rule(e: AuthorityError) -> String {
        match e {
            AuthorityError::Rule { rule, .. } => rule,
            other => panic!("expected a rule violation, got {other}"),
        }
    }

    #[tokio::test]
    async fn x509_rotation_publishes_first_then_signs_then_retires() {
        let ca = manager(memory().await).await;
        let now = SystemTime::now();
        let first = ca.current().x509.id().to_string();
        let seq0 = ca.bundle().sequence;
        let mut rx = ca.subscribe_bundle();

        let p = ca.prepare(AuthorityKind::X509, now).await.unwrap();
        assert_eq!(p.state, "prepared");
        assert!(rx.has_changed().unwrap(), "prepare publishes a bundle");
        let b = rx.borrow_and_update().clone();
        assert_eq!(
            b.x509_authorities.len(),
            2,
            "the prepared root is published"
        );
        assert!(b.sequence > seq0);
        assert_eq!(ca.current().x509.id(), first, "a prepared CA signs nothing");

        let a = ca
            .activate(AuthorityKind::X509, None, HOUR, now)
            .await
            .unwrap();
        assert_eq!(a.id, p.id);
        assert_eq!(ca.current().x509.id(), p.id, "the activated CA signs");
        let b2 = ca.bundle();
        assert_eq!(
            b2.x509_authorities.len(),
            2,
            "the retired root stays published"
        );
        assert!(b2.sequence > b.sequence);
        let records = ca.list(Some(AuthorityKind::X509)).await.unwrap();
        let old = records.iter().find(|r| r.id == first).unwrap();
        assert_eq!(old.state, "retired");
        assert_eq!(old.not_after, unix(now) + 3600, "published for the window");

        // After its window the retired root leaves the bundle.
        let later = now + HOUR + Duration::from_secs(1);
        assert!(ca.reload_at(later).await.unwrap());
        let b3 = ca.bundle();
        assert_eq!(
            b3.x509_authorities,
            vec![ca.current().x509.cert_der().to_vec()]
        );
        assert!(b3.sequence > b2.sequence);
        assert!(!ca.reload_at(later).await.unwrap(), "nothing changed");
    }

    #[tokio::test]
    async fn every_refusal_names_the_rule() {
        let ca = manager(memory().await).await;
        let now = SystemTime::now();
        let active = ca.current().x509.id().to_string();

        let e = rule(
            ca.activate(AuthorityKind::X509, None, HOUR, now)
                .await
                .unwrap_err(),
        );
        assert!(e.contains("no prepared authority"), "{e}");
        let e = rule(
            ca.activate(AuthorityKind::X509, Some(&active), HOUR, now)
                .await
                .unwrap_err(),
        );
        assert!(
            e.contains("it is active") && e.contains("only a prepared"),
            "{e}"
        );
        let e = rule(
            ca.taint(AuthorityKind::X509, &active, now)
                .await
                .unwrap_err(),
        );
        assert!(
            e.contains("it is active") && e.contains("only a retired"),
            "{e}"
        );
        let e = rule(
            ca.revoke(AuthorityKind::X509, &active, now)
                .await
                .unwrap_err(),
        );
        assert!(e.contains("only a tainted"), "{e}");

        let p = ca.prepare(AuthorityKind::X509, now).await.unwrap();
        let e = rule(ca.taint(AuthorityKind::X509, &p.id, now).await.unwrap_err());
        assert!(e.contains("it is prepared"), "{e}");
        let e = rule(
            ca.revoke(AuthorityKind::X509, &p.id, now)
                .await
                .unwrap_err(),
        );
        assert!(e.contains("it is prepared"), "{e}");

        let missing = ca
            .taint(AuthorityKind::X509, "nope", now)
            .await
            .unwrap_err();
        assert!(
            matches!(missing, AuthorityError::NotFound { .. }),
            "{missing}"
        );
        let missing = ca
            .taint(AuthorityKind::Jwt, &active, now)
            .await
            .unwrap_err();
        assert!(
            matches!(missing, AuthorityError::NotFound { .. }),
            "kinds do not mix"
        );

        ca.activate(AuthorityKind::X509, Some(&p.id), HOUR, now)
            .await
            .unwrap();
        let e = rule(
            ca.revoke(AuthorityKind::X509, &active, now)
                .await
                .unwrap_err(),
        );
        assert!(e.contains("it is retired"), "{e}");
        ca.taint(AuthorityKind::X509, &active, now).await.unwrap();
        let e = rule(
            ca.taint(AuthorityKind::X509, &active, now)
                .await
                .unwrap_err(),
        );
        assert!(e.contains("it is tainted"), "{e}");
        ca.revoke(AuthorityKind::X509, &active, now).await.unwrap();
        let e = rule(
            ca.revoke(AuthorityKind::X509, &active, now)
                .await
                .unwrap_err(),
        );
        assert!(e.contains("it is revoked"), "revoke only once: {e}");
    }

    #[tokio::test]
    async fn taint_lists_the_authority_and_revoke_unpublishes_it() {
        let ca = manager(memory().await).await;
        let now = SystemTime::now();
        let old_x509 = ca.current().x509.id().to_string();
        let old_jwt = ca.current().jwt.kid().to_string();
        for kind in [AuthorityKind::X509, AuthorityKind::Jwt] {
            ca.prepare(kind, now).await.unwrap();
            ca.activate(kind, None, HOUR, now).await.unwrap();
        }
        assert_eq!(ca.tainted(), Tainted::default());
        let before = ca.bundle().sequence;
        ca.taint(AuthorityKind::X509, &old_x509, now).await.unwrap();
        ca.taint(AuthorityKind::Jwt, &old_jwt, now).await.unwrap();
        assert_eq!(
            ca.tainted(),
            Tainted {
                x509: vec![old_x509.clone()],
                jwt: vec![old_jwt.clone()],
            }
        );
        let b = ca.bundle();
        assert!(
            b.sequence > before,
            "taint bumps the sequence so agents hear of it"
        );
        assert_eq!(
            b.x509_authorities.len(),
            2,
            "a tainted root is still published"
        );
        assert!(b.jwt_authorities.iter().any(|k| k.kid == old_jwt));

        ca.revoke(AuthorityKind::X509, &old_x509, now)
            .await
            .unwrap();
        ca.revoke(AuthorityKind::Jwt, &old_jwt, now).await.unwrap();
        let b = ca.bundle();
        assert_eq!(
            b.x509_authorities,
            vec![ca.current().x509.cert_der().to_vec()]
        );
        assert!(!b.jwt_authorities.iter().any(|k| k.kid == old_jwt));
        assert_eq!(ca.tainted(), Tainted::default());
    }

    #[tokio::test]
    async fn jwt_and_oidc_keys_rotate_and_old_ones_stay_published() {
        let store = memory().await;
        let ca = manager(store.clone()).await;
        let now = SystemTime::now();
        let old_jwt = ca.current().jwt.kid().to_string();
        let old_oidc = ca.current().oidc.kid().to_string();
        ca.prepare(AuthorityKind::Jwt, now).await.unwrap();
        assert_eq!(ca.current().jwt.kid(), old_jwt);
        assert_eq!(ca.bundle().jwt_authorities.len(), 2);
        let new_jwt = ca
            .activate(AuthorityKind::Jwt, None, HOUR, now)
            .await
            .unwrap();
        assert_eq!(ca.current().jwt.kid(), new_jwt.id);
        assert!(ca.bundle().jwt_authorities.iter().any(|k| k.kid == old_jwt));

        ca.prepare(AuthorityKind::Oidc, now).await.unwrap();
        let new_oidc = ca
            .activate(AuthorityKind::Oidc, None, HOUR, now)
            .await
            .unwrap();
        assert_eq!(ca.current().oidc.kid(), new_oidc.id);
        let kids: Vec<String> = oidc_public_keys(&store, now)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert!(
            kids.contains(&old_oidc) && kids.contains(&new_oidc.id),
            "{kids:?}"
        );
        let kids: Vec<String> = oidc_public_keys(&store, now + HOUR * 2)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(
            kids,
            vec![new_oidc.id.clone()],
            "retired key left after its window"
        );
    }

    #[tokio::test]
    async fn restart_keeps_the_active_authority_and_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let now = SystemTime::now();
        let (id, seq) = {
            let ca = manager(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
            ca.prepare(AuthorityKind::X509, now).await.unwrap();
            ca.activate(AuthorityKind::X509, None, HOUR, now)
                .await
                .unwrap();
            ca.prepare(AuthorityKind::Jwt, now).await.unwrap();
            (ca.current().x509.id().to_string(), ca.bundle().sequence)
        };
        let ca = manager(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
        assert_eq!(ca.current().x509.id(), id);
        assert_eq!(ca.bundle().sequence, seq, "same records, same sequence");
        let last_jwt = ca.list(Some(AuthorityKind::Jwt)).await.unwrap();
        assert_eq!(last_jwt.iter().filter(|r| r.state == "prepared").count(), 1);
    }

    #[tokio::test]
    async fn a_second_server_follows_and_two_actives_converge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let now = SystemTime::now();
        let a = manager(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
        let b = manager(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
        assert_eq!(a.current().x509.id(), b.current().x509.id());

        let p = a.prepare(AuthorityKind::X509, now).await.unwrap();
        assert!(b.reload_at(now).await.unwrap(), "b sees a's prepared root");
        assert_eq!(a.bundle().as_ref(), b.bundle().as_ref());
        a.activate(AuthorityKind::X509, None, HOUR, now)
            .await
            .unwrap();
        assert!(b.reload_at(now).await.unwrap());
        assert_eq!(b.current().x509.id(), p.id, "b signs with the new CA too");

        // Both prepare and activate their own at once: the newest wins.
        let pa = a.prepare(AuthorityKind::X509, now).await.unwrap();
        let pb = b
            .prepare(AuthorityKind::X509, now + Duration::from_secs(1))
            .await
            .unwrap();
        a.activate(AuthorityKind::X509, Some(&pa.id), HOUR, now)
            .await
            .unwrap();
        // b decided before seeing a's activation: write its own directly.
        let mut raw = pb.clone();
        raw.state = "active".into();
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        store.put_authority(&raw).await.unwrap();
        a.reload_at(now).await.unwrap();
        b.reload_at(now).await.unwrap();
        assert_eq!(a.current().x509.id(), pb.id);
        assert_eq!(b.current().x509.id(), pb.id);
        let actives = store
            .list_authorities(AuthorityKind::X509)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.state == "active")
            .count();
        assert_eq!(actives, 1);
    }

    #[tokio::test]
    async fn a_ca_from_files_is_not_prepared() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let root = X509Authority::generate_root(&td, HOUR, SystemTime::now()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("ca.pem");
        let key = dir.path().join("ca.key");
        std::fs::write(
            &cert,
            pem::encode(&pem::Pem::new("CERTIFICATE", root.cert_der().to_vec())),
        )
        .unwrap();
        std::fs::write(
            &key,
            pem::encode(&pem::Pem::new("PRIVATE KEY", root.to_stored().key_pkcs8)),
        )
        .unwrap();
        let ca = CaManager::load_or_create(
            memory().await,
            &td,
            &CaSource::Disk {
                cert,
                key,
                chain: None,
            },
            HOUR,
            KeyAlg::EcP256,
            KeyAlg::EcP256,
            DEFAULT_REFRESH_HINT,
        )
        .await
        .unwrap();
        let e = rule(
            ca.prepare(AuthorityKind::X509, SystemTime::now())
                .await
                .unwrap_err(),
        );
        assert!(
            e.contains("--ca-cert") && e.contains("replacing the files"),
            "{e}"
        );
        ca.prepare(AuthorityKind::Jwt, SystemTime::now())
            .await
            .unwrap();
    }
}
