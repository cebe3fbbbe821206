//! Rotation of signing authorities: prepared -> active -> retired, by
//! schedule and by hand, and the admin calls that drive it.
//!
//! The state machine itself lives in [`crate::authority::CaManager`]; this
//! module decides *when* (the schedule) and *how long* a retired authority
//! stays published (the longest lifetime of anything it may have signed).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_proto::hallmark as pb;
use hallmark_store::{AuthorityKind, AuthorityRecord, EntryFilter};
use tokio::sync::watch;
use tonic::Status;

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

fn status(e: AuthorityError) -> Status {
    match e {
        AuthorityError::Rule { .. } => Status::failed_precondition(e.to_string()),
        AuthorityError::NotFound { .. } => Status::not_found(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn parse_kind(kind: &str, required: bool) -> Result<Option<AuthorityKind>, Status> {
    if kind.is_empty() && !required {
        return Ok(None);
    }
    AuthorityKind::from_name(kind).map(Some).ok_or_else(|| {
        Status::invalid_argument(format!(
            "authority kind `{kind}` is not one of x509, jwt, oidc"
        ))
    })
}

fn required_kind(kind: &str) -> Result<AuthorityKind, Status> {
    parse_kind(kind, true)?.ok_or_else(|| Status::invalid_argument("an authority kind is required"))
}

/// The kind named in the request, or, when it names none, the kind of the
/// authority with the requested ID (IDs do not repeat across kinds).
async fn kind_of(shared: &Shared, req: &pb::AuthorityRequest) -> Result<AuthorityKind, Status> {
    if !req.kind.is_empty() || req.id.is_empty() {
        return required_kind(&req.kind);
    }
    let records = shared.ca.list(None).await.map_err(status)?;
    let mut kinds = records.iter().filter(|r| r.id == req.id).map(|r| r.kind);
    match (kinds.next(), kinds.next()) {
        (Some(kind), None) => Ok(kind),
        (None, _) => Err(Status::not_found(format!(
            "no authority `{}`; list them with `hallmark authority show`",
            req.id
        ))),
        (Some(_), Some(_)) => Err(Status::invalid_argument(format!(
            "authority ID `{}` exists for several kinds; name the kind",
            req.id
        ))),
    }
}

fn required_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "an authority ID is required; list them with `hallmark authority show`",
        ));
    }
    Ok(id)
}

/// The admin API's view: never the private key.
pub(crate) fn to_pb(r: &AuthorityRecord) -> pb::Authority {
    pb::Authority {
        kind: r.kind.as_str().into(),
        id: r.id.clone(),
        state: r.state.clone(),
        alg: r.alg.clone(),
        created_at: r.created_at,
        not_after: r.not_after,
        cert_der: r.cert_der.clone(),
    }
}

pub(crate) async fn list(
    shared: &Shared,
    req: pb::ListAuthoritiesRequest,
) -> Result<pb::ListAuthoritiesResponse, Status> {
    let kind = parse_kind(&req.kind, false)?;
    let records = shared.ca.list(kind).await.map_err(status)?;
    Ok(pb::ListAuthoritiesResponse {
        authorities: records.iter().map(to_pb).collect(),
    })
}

pub(crate) async fn prepare(
    shared: &Shared,
    req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    let kind = required_kind(&req.kind)?;
    let r = shared
        .ca
        .prepare(kind, SystemTime::now())
        .await
        .map_err(status)?;
    Ok(to_pb(&r))
}

pub(crate) async fn activate(
    shared: &Shared,
    req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    let kind = kind_of(shared, &req).await?;
    let id = (!req.id.is_empty()).then_some(req.id.as_str());
    let window = retire_window(shared, kind).await.map_err(status)?;
    let r = shared
        .ca
        .activate(kind, id, window, SystemTime::now())
        .await
        .map_err(status)?;
    Ok(to_pb(&r))
}

pub(crate) async fn taint(
    shared: &Shared,
    req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    let kind = kind_of(shared, &req).await?;
    let r = shared
        .ca
        .taint(kind, required_id(&req.id)?, SystemTime::now())
        .await
        .map_err(status)?;
    Ok(to_pb(&r))
}

pub(crate) async fn revoke(
    shared: &Shared,
    req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    let kind = kind_of(shared, &req).await?;
    let r = shared
        .ca
        .revoke(kind, required_id(&req.id)?, SystemTime::now())
        .await
        .map_err(status)?;
    Ok(to_pb(&r))
}

/// How long an authority retired now must stay published: the longest
/// lifetime of anything it may have signed, read from the entries (an
/// entry's TTL applies to SVIDs minted from it) and the agent SVID TTL.
async fn retire_window(shared: &Shared, kind: AuthorityKind) -> Result<Duration, AuthorityError> {
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
        let now_unix = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
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

    #[test]
    fn kinds_outside_the_list_are_refused() {
        assert!(parse_kind("x509", true).is_ok());
        assert_eq!(parse_kind("", false).ok(), Some(None));
        let e = required_kind("").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = required_kind("rsa").unwrap_err();
        assert!(e.message().contains("`rsa`"), "{}", e.message());
        assert_eq!(
            required_id("").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
