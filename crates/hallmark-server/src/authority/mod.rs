//! The server's signing authorities: the X.509 CA that signs SVIDs and the
//! JWT key that signs JWT-SVIDs, persisted in the datastore so a restart (or
//! another server on the same datastore) signs with the same keys.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hallmark_ca::{Bundle, JwtAuthority, JwtKey, KeyAlg, StoredJwtKey, X509Authority};
use hallmark_core::time::unix_secs;
use hallmark_core::TrustDomain;
use hallmark_store::{AuthorityKind, AuthorityRecord, Store};
use tokio::sync::watch;

use records::{
    bundle_from, find_record, key_from_record, key_record, published, retire_until, tainted_from,
    x509_from_record, x509_record,
};

mod records;
#[cfg(test)]
mod tests;

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
                    .find(|r| r.state == "active" && r.not_after > unix_secs(now))
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
        if target.not_after <= unix_secs(now) {
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
        r.not_after = unix_secs(now + JWT_KEY_PUBLISH_AFTER_RETIRE);
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
    let now_unix = unix_secs(now);
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
