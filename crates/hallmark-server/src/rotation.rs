//! The rotation schedule of signing authorities: prepared -> active ->
//! retired.
//!
//! The state machine itself lives in [`crate::authority::CaManager`]; this
//! module decides *when* (the schedule) and *how long* a retired authority
//! stays published (the longest lifetime of anything it may have signed),
//! a window the admin API's rotation by hand uses too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hallmark_store::{AuthorityKind, AuthorityRecord, EntryFilter};
use tokio::sync::watch;

use crate::authority::{AuthorityError, AuthorityState};
use crate::Shared;

/// OIDC tokens are short-lived (clouds refuse more than 48 h); a retired
/// OIDC key stays in the JWKS at least this long.
const OIDC_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(48 * 3600);

/// When authorities rotate on their own.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    /// Prepare and activate automatically; when false only an operator
    /// rotates (`hallmark authority ...`).
    pub enabled: bool,
    /// How often the schedule looks at the authorities (and re-reads them,
    /// which is also when a retired one leaves the bundle).
    pub check_interval: Duration,
    /// Share of the active authority's lifetime after which a successor is
    /// prepared (published, not signing).
    pub prepare_at: f64,
    /// Share of the active authority's lifetime after which the prepared
    /// successor is activated. Between the two, agents fetch the new
    /// bundle, so nothing it signs is ever unknown to a peer.
    pub activate_at: f64,
    /// Lifetime of a JWT-SVID (and OIDC) signing key before it is rotated
    /// out; keys themselves never expire.
    pub jwt_key_ttl: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            enabled: true,
            check_interval: Duration::from_secs(10),
            prepare_at: 0.5,
            activate_at: 0.83,
            jwt_key_ttl: Duration::from_secs(30 * 86400),
        }
    }
}

/// How long an authority retired now must stay published: the longest
/// lifetime of anything it may have signed, read from the entries (an
/// entry's TTL applies to SVIDs minted from it) and the agent SVID TTL.
pub(crate) async fn retire_window(
    shared: &Shared,
    kind: AuthorityKind,
) -> Result<Duration, AuthorityError> {
    let entries = shared.store.list_entries(&EntryFilter::default()).await?;
    let longest = |f: fn(&hallmark_core::Entry) -> u64| {
        Duration::from_secs(entries.iter().map(f).max().unwrap_or(0))
    };
    Ok(match kind {
        AuthorityKind::X509 => longest(|e| e.spec.x509_ttl_secs)
            .max(shared.agent_svid_ttl)
            .max(Duration::from_secs(
                hallmark_core::entry::DEFAULT_X509_TTL_SECS,
            )),
        AuthorityKind::Jwt => longest(|e| e.spec.jwt_ttl_secs).max(Duration::from_secs(
            hallmark_core::entry::DEFAULT_JWT_TTL_SECS,
        )),
        AuthorityKind::Oidc => longest(|e| e.spec.jwt_ttl_secs).max(OIDC_MAX_TOKEN_LIFETIME),
    })
}

/// What the schedule should do with one kind now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Nothing,
    Prepare,
    /// Activate this prepared authority.
    Activate(String),
}

/// Decides the next scheduled step for one kind's records at `now_unix`.
/// The active authority's lifetime runs from its creation to its
/// `not_after` (X.509) or for `key_ttl` (keys, which never expire).
pub(crate) fn next_step(
    records: &[AuthorityRecord],
    config: &RotationConfig,
    key_ttl: Option<Duration>,
    now_unix: i64,
) -> Step {
    let Some(active) = records.iter().rev().find(|r| r.state == "active") else {
        return Step::Nothing;
    };
    let lifetime = match key_ttl {
        Some(ttl) => i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        None => active.not_after.saturating_sub(active.created_at),
    };
    if lifetime <= 0 {
        return Step::Nothing;
    }
    let age = now_unix.saturating_sub(active.created_at) as f64 / lifetime as f64;
    let prepared = records.iter().rev().find(|r| {
        AuthorityState::from_name(&r.state) == Some(AuthorityState::Prepared)
            && r.not_after > now_unix
    });
    match prepared {
        Some(p) if age >= config.activate_at => Step::Activate(p.id.clone()),
        Some(_) => Step::Nothing,
        None if age >= config.prepare_at => Step::Prepare,
        None => Step::Nothing,
    }
}

/// The schedule: every `check_interval`, re-read the authorities (another
/// server may have rotated; a retired one's window may have ended) and, if
/// enabled, prepare or activate what is due. Several servers on one
/// datastore may run it at once: a decision is taken on fresh records, a
/// second prepare is harmless, and two activations converge to the newest
/// (see `CaManager::reload`).
pub(crate) async fn schedule_loop(
    shared: Arc<Shared>,
    config: RotationConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.check_interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = tick(&shared, &config).await {
            tracing::warn!(error = %e, "checking the authority rotation schedule failed; retrying at the next check");
        }
    }
}

async fn tick(shared: &Shared, config: &RotationConfig) -> Result<(), AuthorityError> {
    shared.ca.reload().await?;
    if !config.enabled {
        return Ok(());
    }
    let kinds = [
        (AuthorityKind::X509, None),
        (AuthorityKind::Jwt, Some(config.jwt_key_ttl)),
        (AuthorityKind::Oidc, Some(config.jwt_key_ttl)),
    ];
    for (kind, key_ttl) in kinds {
        let now = SystemTime::now();
        let now_unix = hallmark_core::time::unix_secs(now);
        let records = shared.ca.list(Some(kind)).await?;
        match next_step(&records, config, key_ttl, now_unix) {
            Step::Nothing => {}
            Step::Prepare => match shared.ca.prepare(kind, now).await {
                Ok(r) => {
                    tracing::info!(kind = %kind, id = %r.id, "scheduled rotation: prepared a successor")
                }
                // A CA from files is rotated by replacing them.
                Err(AuthorityError::Rule { .. }) => {}
                Err(e) => return Err(e),
            },
            Step::Activate(id) => {
                let window = retire_window(shared, kind).await?;
                match shared.ca.activate(kind, Some(&id), window, now).await {
                    Ok(r) => {
                        tracing::info!(kind = %kind, id = %r.id, "scheduled rotation: activated the successor")
                    }
                    // Another server activated it first.
                    Err(AuthorityError::Rule { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, state: &str, created_at: i64, not_after: i64) -> AuthorityRecord {
        AuthorityRecord {
            id: id.into(),
            kind: AuthorityKind::X509,
            state: state.into(),
            alg: "ec-p256".into(),
            key_pkcs8: Vec::new(),
            cert_der: Vec::new(),
            chain_der: Vec::new(),
            created_at,
            not_after,
        }
    }

    #[test]
    fn schedule_prepares_then_activates_at_the_configured_shares() {
        let config = RotationConfig::default();
        let active = rec("a", "active", 0, 1000);
        let prepared = rec("p", "prepared", 600, 1600);
        // (name, records, key lifetime, now, expected step)
        type Case = (
            &'static str,
            Vec<AuthorityRecord>,
            Option<Duration>,
            i64,
            Step,
        );
        let cases: &[Case] = &[
            ("young CA", vec![active.clone()], None, 100, Step::Nothing),
            ("half way", vec![active.clone()], None, 500, Step::Prepare),
            (
                "prepared, not due",
                vec![active.clone(), prepared.clone()],
                None,
                700,
                Step::Nothing,
            ),
            (
                "prepared, due",
                vec![active.clone(), prepared.clone()],
                None,
                830,
                Step::Activate("p".into()),
            ),
            (
                "expired prepared is ignored",
                vec![active.clone(), rec("p", "prepared", 0, 800)],
                None,
                900,
                Step::Prepare,
            ),
            (
                "key lifetime from config",
                vec![rec("k", "active", 0, i64::MAX)],
                Some(Duration::from_secs(100)),
                50,
                Step::Prepare,
            ),
            (
                "no active",
                vec![prepared.clone()],
                None,
                10_000,
                Step::Nothing,
            ),
        ];
        for (name, records, ttl, now, want) in cases {
            assert_eq!(&next_step(records, &config, *ttl, *now), want, "{name}");
        }
    }
}
