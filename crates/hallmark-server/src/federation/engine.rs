//! The federation engine: the foreign bundles in force, rebuilt from the
//! datastore every [`TICK`] by [`refresh_loop`], which also fetches the
//! bundles that are due and wakes the agents' Sync streams when any foreign
//! bundle changed; and the relationship operations the admin API drives.
//! Failures are [`FederationError`]s; the admin API maps them to statuses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hallmark_ca::Bundle;
use hallmark_core::time::unix_secs;
use hallmark_core::{Entry, TrustDomain};
use hallmark_proto::hallmark as pb;
use hallmark_store::{FederationRecord, FederationRefresh, StoreError};
use tokio::sync::watch;

use super::fetch::{fetch, FetchError};
use crate::Shared;

/// How often the refresh loop re-reads the relationships.
const TICK: Duration = Duration::from_secs(1);
/// When the foreign bundle has no `spiffe_refresh_hint`.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const MIN_REFRESH: Duration = Duration::from_secs(10);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Retry delays after failed fetches: doubling from the first to the last.
const FIRST_RETRY: Duration = Duration::from_secs(10);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Why a relationship operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A relationship with this trust domain exists already.
    #[error("a federation with {0} exists already; delete it first with `hallmark federation delete {0}`")]
    Exists(TrustDomain),
    /// There is no relationship with this trust domain.
    #[error("no federation with {0}; list them with `hallmark federation list`")]
    NotFound(TrustDomain),
    /// The datastore failed.
    #[error("datastore: {0}")]
    Store(#[from] StoreError),
}

/// Why refreshing one relationship brought no new bundle in.
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    /// The fetch failed; the failure is recorded on the relationship.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Recording the outcome failed.
    #[error("recording the refresh of {td}: {source}")]
    Store { td: TrustDomain, source: StoreError },
}

/// Foreign bundles decoded from the datastore, and per-relationship retry
/// state.
#[derive(Default)]
pub(crate) struct Federations {
    bundles: RwLock<BTreeMap<TrustDomain, Arc<Bundle>>>,
    /// The retry delay after each relationship's last failed fetch.
    backoff: Mutex<HashMap<TrustDomain, Duration>>,
}

/// The foreign bundles that `entries` federate with, one per trust domain,
/// ordered by trust domain name. Domains without a known bundle are left
/// out.
pub(crate) async fn bundles_for(shared: &Shared, entries: &[Entry]) -> Vec<pb::Bundle> {
    let wanted: BTreeSet<&TrustDomain> = entries
        .iter()
        .flat_map(|e| e.spec.federates_with.iter())
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let bundles = shared
        .federation
        .bundles
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    wanted
        .into_iter()
        .filter_map(|td| bundles.get(td))
        .map(|b| pb::Bundle::from(&**b))
        .collect()
}

/// Rebuilds the in-memory bundles from the datastore and wakes the agents'
/// streams if any differs from before.
pub(crate) async fn reload(shared: &Shared) -> Result<(), StoreError> {
    let records = shared.store.list_federations().await?;
    let mut fresh = BTreeMap::new();
    let now = unix_secs(SystemTime::now());
    for r in &records {
        if r.last_refresh > 0 {
            shared
                .metrics
                .federation_bundle_age
                .get_or_create(&crate::metrics::TrustDomainLabels {
                    trust_domain: r.trust_domain.to_string(),
                })
                .set(now.saturating_sub(r.last_refresh));
        }
        if r.bundle.is_empty() {
            continue;
        }
        match Bundle::from_jwks_json(&r.trust_domain, &r.bundle) {
            Ok(b) => {
                fresh.insert(r.trust_domain.clone(), Arc::new(b));
            }
            Err(e) => {
                tracing::warn!(trust_domain = %r.trust_domain, error = %e, "stored foreign bundle does not parse; leaving it out")
            }
        }
    }
    let changed = {
        let mut bundles = shared
            .federation
            .bundles
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let changed = *bundles != fresh;
        *bundles = fresh;
        changed
    };
    if changed {
        shared.federation_changed.send_modify(|n| *n += 1);
    }
    Ok(())
}

/// Every [`TICK`]: reloads the relationships, fetches the due ones, until
/// shutdown.
pub(crate) async fn refresh_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = reload(&shared).await {
            tracing::warn!(error = %e, "reading federation relationships failed");
        }
        if let Ok(records) = shared.store.list_federations().await {
            let now = unix_secs(SystemTime::now());
            let due = records.into_iter().filter(|r| r.next_refresh <= now);
            let fetches = due.map(|r| {
                let shared = shared.clone();
                async move { refresh_one(&shared, &r).await }
            });
            let results = futures::future::join_all(fetches).await;
            if results.iter().any(|r| r.is_ok()) {
                if let Err(e) = reload(&shared).await {
                    tracing::warn!(error = %e, "reading federation relationships failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Stores a new relationship and makes a first fetch. A first fetch
/// failure is recorded in its `last_error`, not returned: the other side
/// may not be up yet.
pub(crate) async fn add(shared: &Shared, record: &FederationRecord) -> Result<(), FederationError> {
    if shared
        .store
        .get_federation(&record.trust_domain)
        .await?
        .is_some()
    {
        return Err(FederationError::Exists(record.trust_domain.clone()));
    }
    shared.store.put_federation(record).await?;
    tracing::info!(trust_domain = %record.trust_domain, url = %record.bundle_endpoint_url, profile = %record.profile, "federation created");
    let _ = refresh_one(shared, record).await;
    reload(shared).await?;
    Ok(())
}

/// The stored relationship with `td`.
pub(crate) async fn stored(
    shared: &Shared,
    td: &TrustDomain,
) -> Result<FederationRecord, FederationError> {
    shared
        .store
        .get_federation(td)
        .await?
        .ok_or_else(|| FederationError::NotFound(td.clone()))
}

/// Deletes the relationship with `td`; its bundle leaves the agents' updates.
pub(crate) async fn remove(shared: &Shared, td: &TrustDomain) -> Result<(), FederationError> {
    if !shared.store.delete_federation(td).await? {
        return Err(FederationError::NotFound(td.clone()));
    }
    tracing::info!(trust_domain = %td, "federation deleted");
    reload(shared).await?;
    Ok(())
}

/// Fetches the bundle of the relationship with `td` now, whenever it is
/// due. A fetch failure is recorded in its `last_error`, not returned.
pub(crate) async fn refresh_now(shared: &Shared, td: &TrustDomain) -> Result<(), FederationError> {
    let r = stored(shared, td).await?;
    let _ = refresh_one(shared, &r).await;
    reload(shared).await?;
    Ok(())
}

/// Fetches one relationship's bundle and records the outcome; `Ok` when a
/// bundle was fetched and recorded.
async fn refresh_one(shared: &Shared, r: &FederationRecord) -> Result<(), RefreshError> {
    let now = unix_secs(SystemTime::now());
    let (outcome, failure) = match fetch(r).await {
        Ok((bundle, json)) => {
            shared
                .federation
                .backoff
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&r.trust_domain);
            shared.metrics.federation_refreshes_ok.inc();
            let every = match bundle.refresh_hint_secs {
                0 => DEFAULT_REFRESH,
                s => Duration::from_secs(s).clamp(MIN_REFRESH, MAX_REFRESH),
            };
            tracing::debug!(trust_domain = %r.trust_domain, sequence = bundle.sequence, "foreign bundle fetched");
            let fetched = FederationRefresh::Fetched {
                bundle: json,
                sequence: bundle.sequence,
                at: now,
                next_refresh: now.saturating_add(every.as_secs() as i64),
            };
            (fetched, None)
        }
        Err(e) => {
            shared.metrics.federation_refreshes_failed.inc();
            let delay = {
                let mut backoff = shared
                    .federation
                    .backoff
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let d = backoff
                    .get(&r.trust_domain)
                    .map_or(FIRST_RETRY, |d| (*d * 2).min(MAX_RETRY));
                backoff.insert(r.trust_domain.clone(), d);
                d
            };
            tracing::warn!(trust_domain = %r.trust_domain, error = %e, retry_in_secs = delay.as_secs(), "fetching a foreign bundle failed; keeping the one in force");
            let failed = FederationRefresh::Failed {
                error: e.to_string(),
                next_refresh: now.saturating_add(delay.as_secs() as i64),
            };
            (failed, Some(e))
        }
    };
    shared
        .store
        .record_federation_refresh(&r.trust_domain, &outcome)
        .await
        .map_err(|source| RefreshError::Store {
            td: r.trust_domain.clone(),
            source,
        })?;
    match failure {
        None => Ok(()),
        Some(e) => Err(e.into()),
    }
}
