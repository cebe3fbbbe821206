//! Versioned policy: validating and storing documents as numbered
//! revisions, putting the latest in force, and following revisions that
//! other servers on a shared datastore apply.
//!
//! The datastore is the truth: a revision is in force on a server once it
//! is stored and compiled there, and every Sync stream then sends it to its
//! agent (see `node.rs`). A stored revision is parsed again when loaded;
//! one that no longer parses (a newer server wrote it, or the parser got
//! stricter) is logged and counted, and the revision in force stays.

use std::time::SystemTime;

use hallmark_core::time::unix_millis;
use hallmark_policy::{Parsed, Policy, PolicyDocument, PolicyErrors};
use hallmark_store::{
    NewPolicyRevision, PolicyApplied, PolicyRevision, PolicyRevisionInfo, StoreError,
};
use tonic::Status;

use super::api::{
    ApplyAnswer, ApplyRequest, GetRequest, HistoryRequest, RevisionJson, RollbackRequest,
    DEFAULT_HISTORY_LIMIT,
};
use super::CurrentPolicy;
use crate::node::internal;
use crate::Shared;

/// `ApplyPolicy`: validates the document and applies it as the next
/// revision, unless it is the text in force already.
pub(crate) async fn apply_policy(shared: &Shared, json: &str) -> Result<String, Status> {
    let req: ApplyRequest = parse_request("ApplyPolicy", json)?;
    let parsed =
        hallmark_policy::parse(&req.file, &req.document).map_err(|e| refused(&req.file, &e))?;
    let source = req
        .source
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("api:{}", req.file));
    let answer = store_and_enforce(shared, &req.document, parsed, &source, None).await?;
    Ok(to_json(&answer))
}

/// `RollbackPolicy`: applies an earlier revision's document again, as a new
/// revision that records where it came from.
pub(crate) async fn rollback_policy(shared: &Shared, json: &str) -> Result<String, Status> {
    let req: RollbackRequest = parse_request("RollbackPolicy", json)?;
    let old = read_revision(shared, req.revision).await?;
    let parsed = parse_stored(&old).map_err(|e| {
        Status::failed_precondition(format!(
            "policy revision {} no longer parses, so it cannot be rolled back to; apply a corrected document with `hallmark policy apply -f FILE`\n{e}",
            req.revision
        ))
    })?;
    let source = format!("rollback to {}", req.revision);
    let answer =
        store_and_enforce(shared, &old.document, parsed, &source, Some(req.revision)).await?;
    Ok(to_json(&answer))
}

/// `GetPolicy`: one revision with its document, or the latest; revision 0
/// (empty, default allow) before anything was applied.
pub(crate) async fn get_policy(shared: &Shared, json: &str) -> Result<String, Status> {
    let req: GetRequest = parse_request("GetPolicy", json)?;
    let found = match req.revision {
        Some(n) => Some(read_revision(shared, n).await?),
        None => shared.store.latest_policy().await.map_err(internal)?,
    };
    let mut answer = match found {
        Some(r) => revision_json(&r.info, Some(r.document)),
        None => RevisionJson {
            revision: 0,
            document: Some(String::new()),
            applied_at_ms: 0,
            source: String::new(),
            rolled_back_from: None,
            digest: String::new(),
            groups: 0,
            rules: 0,
            default: "allow".to_string(),
            enforcement: None,
        },
    };
    answer.enforcement = Some(super::enforcement::word(*shared.enforcement.borrow()).to_string());
    Ok(to_json(&answer))
}

/// `PolicyHistory`: the newest revisions first, without their documents.
pub(crate) async fn policy_history(shared: &Shared, json: &str) -> Result<String, Status> {
    let req: HistoryRequest = parse_request("PolicyHistory", json)?;
    let limit = req.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    let rows = shared.store.policy_history(limit).await.map_err(internal)?;
    let rows: Vec<RevisionJson> = rows.iter().map(|r| revision_json(r, None)).collect();
    Ok(to_json(&rows))
}

/// Loads the latest stored revision into force, at start. A failure is
/// logged and leaves revision 0 (or the revision in force) in place.
pub(crate) async fn load_latest(shared: &Shared) {
    match shared.store.latest_policy().await {
        Ok(Some(r)) => load(shared, &r),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading the latest policy revision failed; serving the policy in force")
        }
    }
}

/// Puts in force the latest revision if another server applied a newer one
/// than this server holds. Called when the datastore revision moves.
pub(crate) async fn follow_latest(shared: &Shared) {
    let in_force = shared.policy.current().revision;
    let latest = match shared.store.latest_policy_revision().await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "reading the latest policy revision failed; retrying on the next change");
            return;
        }
    };
    if latest <= in_force {
        return;
    }
    match shared.store.get_policy(latest).await {
        Ok(r) => load(shared, &r),
        Err(e) => {
            tracing::warn!(error = %e, revision = latest, "reading a policy revision failed; retrying on the next change")
        }
    }
}

/// Compiles a stored revision and puts it in force, or logs why not.
fn load(shared: &Shared, r: &PolicyRevision) {
    match parse_stored(r) {
        Ok(parsed) => {
            enforce(shared, r, &parsed.document);
            tracing::info!(
                "policy revision {} in force ({} groups, {} rules, default {})",
                r.info.revision,
                r.info.groups,
                r.info.rules,
                r.info.default
            );
        }
        Err(e) => {
            shared.metrics.policy_load_failures.inc();
            tracing::error!(
                revision = r.info.revision,
                in_force = shared.policy.current().revision,
                "stored policy revision {} does not parse; the policy in force stays: {e}",
                r.info.revision
            );
        }
    }
}

/// Stores a validated document and puts the revision in force.
async fn store_and_enforce(
    shared: &Shared,
    document: &str,
    parsed: Parsed,
    source: &str,
    rolled_back_from: Option<i64>,
) -> Result<ApplyAnswer, Status> {
    let doc = &parsed.document;
    let new = NewPolicyRevision {
        document,
        applied_at_ms: unix_millis(SystemTime::now()),
        source,
        rolled_back_from,
        groups: count(doc.groups.len()),
        rules: count(doc.rules.len()),
        default: doc.default.as_str(),
    };
    let applied = shared.store.apply_policy(&new).await.map_err(internal)?;
    let r = applied.revision();
    let unchanged = matches!(applied, PolicyApplied::Unchanged(_));
    // Also when unchanged: this server may not have caught up with the
    // revision yet (it was applied through another server).
    enforce(shared, r, doc);
    if !unchanged {
        shared.metrics.policy_applies.inc();
        tracing::info!(
            source,
            "policy revision {} applied ({} groups, {} rules, default {})",
            r.info.revision,
            r.info.groups,
            r.info.rules,
            r.info.default
        );
    }
    Ok(ApplyAnswer {
        revision: r.info.revision,
        unchanged,
        groups: r.info.groups,
        rules: r.info.rules,
        default: r.info.default.clone(),
        warnings: parsed
            .warnings
            .iter()
            .filter_map(|w| serde_json::to_value(w).ok())
            .collect(),
        applied_at_ms: r.info.applied_at_ms,
    })
}

/// Puts a revision in force here (unless a newer one is already) and wakes
/// every Sync stream.
fn enforce(shared: &Shared, r: &PolicyRevision, doc: &PolicyDocument) {
    shared.policy.set(CurrentPolicy {
        revision: r.info.revision,
        document: r.document.clone(),
        policy: Policy::compile(doc),
        applied_at_ms: r.info.applied_at_ms,
    });
    shared
        .metrics
        .policy_revision
        .set(shared.policy.current().revision);
}

fn parse_stored(r: &PolicyRevision) -> Result<Parsed, PolicyErrors> {
    hallmark_policy::parse(&format!("revision {}", r.info.revision), &r.document)
}

async fn read_revision(shared: &Shared, revision: i64) -> Result<PolicyRevision, Status> {
    match shared.store.get_policy(revision).await {
        Ok(r) => Ok(r),
        Err(StoreError::NotFound(msg)) => Err(Status::not_found(msg)),
        Err(e) => Err(internal(e)),
    }
}

/// The refusal of a bad document: every diagnostic, one per line.
fn refused(file: &str, e: &PolicyErrors) -> Status {
    Status::invalid_argument(format!(
        "{e}\nnothing was applied: fix {file} and apply it again (`hallmark policy validate -f {file}` checks it)"
    ))
}

fn revision_json(info: &PolicyRevisionInfo, document: Option<String>) -> RevisionJson {
    RevisionJson {
        revision: info.revision,
        document,
        applied_at_ms: info.applied_at_ms,
        source: info.source.clone(),
        rolled_back_from: info.rolled_back_from,
        digest: info.digest.clone(),
        groups: info.groups,
        rules: info.rules,
        default: info.default.clone(),
        enforcement: None,
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn parse_request<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, Status> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| Status::invalid_argument(format!("{what} request: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
#[path = "versions_tests.rs"]
pub(super) mod tests;
