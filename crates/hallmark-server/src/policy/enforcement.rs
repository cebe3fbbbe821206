//! The fleet-wide enforcement switch: `hallmark policy enforcement off`
//! lifts enforcement on every agent (they keep observing), `on` puts it
//! back.
//!
//! The datastore holds the switch (so it survives restarts and every
//! server on a shared datastore follows it: a change moves the datastore
//! revision); each server keeps it in `Shared::enforcement`, and every
//! Sync stream names it on each update, so a connected agent hears of a
//! change within one push.

use tonic::Status;

use super::api::{EnforcementAnswer, EnforcementRequest};
use super::queries::{parse, store_status, to_json};
use crate::Shared;

/// The wire and JSON word for the switch.
pub fn word(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// `SetEnforcement`.
pub(crate) async fn set_enforcement(shared: &Shared, json: &str) -> Result<String, Status> {
    let req: EnforcementRequest = parse("SetEnforcement", json)?;
    let Some(value) = req.enforcement else {
        follow(shared).await;
        return to_json(&EnforcementAnswer {
            enforcement: word(*shared.enforcement.borrow()).to_string(),
            changed: false,
        });
    };
    let on = match value.as_str() {
        "on" => true,
        "off" => false,
        other => {
            return Err(Status::invalid_argument(format!(
                "enforcement `{other}`: must be on or off (`hallmark policy enforcement off` lifts enforcement on every agent, `on` puts it back)"
            )))
        }
    };
    let changed = shared
        .store
        .set_policy_enforcement(on)
        .await
        .map_err(store_status)?;
    set(shared, on);
    if changed {
        if on {
            tracing::info!("policy enforcement turned on for the fleet");
        } else {
            tracing::warn!("policy enforcement turned off for the fleet: agents observe but no longer block; `hallmark policy enforcement on` puts it back");
        }
    }
    to_json(&EnforcementAnswer {
        enforcement: word(on).to_string(),
        changed,
    })
}

/// Reads the switch from the datastore and puts it in force here: at
/// start, and when the datastore revision moves (another server may have
/// turned it). A failed read keeps the switch in force.
pub(crate) async fn follow(shared: &Shared) {
    match shared.store.policy_enforcement().await {
        Ok(on) => set(shared, on),
        Err(e) => {
            tracing::warn!(error = %e, "reading the enforcement switch failed; keeping enforcement {}", word(*shared.enforcement.borrow()))
        }
    }
}

/// Puts the switch in force here; Sync streams wake when it changed.
fn set(shared: &Shared, on: bool) {
    shared.enforcement.send_if_modified(|cur| {
        let changed = *cur != on;
        *cur = on;
        changed
    });
    shared.metrics.policy_enforcement.set(i64::from(on));
}
