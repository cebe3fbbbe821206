//! The identity policy's revisions: every document applied, in order, kept
//! whole so that any revision can be shown again or rolled back to.
//!
//! The store does not read policy documents: the caller validates one
//! before applying it and passes what `history` shows about it (group and
//! rule counts, default action) along with the text. The store numbers the
//! revisions (1, 2, 3... without gaps, also when several servers apply at
//! once) and computes each text's digest.

use sha2::{Digest, Sha256};

use crate::Result;

/// What `history` shows about a revision: everything but the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRevisionInfo {
    /// 1 for the first revision applied, then consecutive.
    pub revision: i64,
    /// When the revision was applied (unix ms, the caller's clock).
    pub applied_at_ms: i64,
    /// Who or what applied it (`cli:policy.yaml`, `rollback to 3`).
    pub source: String,
    /// The revision whose document this one re-applied, for a rollback.
    pub rolled_back_from: Option<i64>,
    /// SHA-256 of the document text, lowercase hex.
    pub digest: String,
    /// How many groups and rules the document defines.
    pub groups: i64,
    pub rules: i64,
    /// The document's default action: `allow` or `deny`.
    pub default: String,
}

/// A stored revision with its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRevision {
    pub info: PolicyRevisionInfo,
    /// The YAML document exactly as applied.
    pub document: String,
}

/// A validated document to apply as the next revision.
#[derive(Debug, Clone, Copy)]
pub struct NewPolicyRevision<'a> {
    pub document: &'a str,
    pub applied_at_ms: i64,
    pub source: &'a str,
    pub rolled_back_from: Option<i64>,
    pub groups: i64,
    pub rules: i64,
    /// `allow` or `deny`.
    pub default: &'a str,
}

/// The outcome of [`PolicyStore::apply_policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyApplied {
    /// The document became this new revision.
    Applied(PolicyRevision),
    /// The latest revision has the same text already; nothing was stored.
    Unchanged(PolicyRevision),
}

impl PolicyApplied {
    /// The revision in force after the apply.
    pub fn revision(&self) -> &PolicyRevision {
        match self {
            PolicyApplied::Applied(r) | PolicyApplied::Unchanged(r) => r,
        }
    }
}

/// Policy revisions. Every method is atomic on its own.
#[async_trait::async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Stores `new` as the revision after the latest one, unless the latest
    /// one's text is identical (then [`PolicyApplied::Unchanged`] with that
    /// revision). Concurrent applies, from this server or others sharing
    /// the database, get distinct consecutive numbers. The datastore
    /// revision moves too, so servers following it look at the policy.
    async fn apply_policy(&self, new: &NewPolicyRevision<'_>) -> Result<PolicyApplied>;

    /// One revision; [`crate::StoreError::NotFound`] when there is none with
    /// that number.
    async fn get_policy(&self, revision: i64) -> Result<PolicyRevision>;

    /// The latest revision, `None` before the first apply.
    async fn latest_policy(&self) -> Result<Option<PolicyRevision>>;

    /// The latest revision's number, 0 before the first apply: a cheap
    /// check for servers following others.
    async fn latest_policy_revision(&self) -> Result<i64>;

    /// Up to `limit` revisions, newest first.
    async fn policy_history(&self, limit: u32) -> Result<Vec<PolicyRevisionInfo>>;

    /// The fleet-wide enforcement switch (`hallmark policy enforcement`):
    /// true ("on") until an operator turns it off.
    async fn policy_enforcement(&self) -> Result<bool>;

    /// Sets the enforcement switch; returns whether it changed. A change
    /// moves the datastore revision, so servers following it look; setting
    /// the value it has already leaves the revision alone.
    async fn set_policy_enforcement(&self, on: bool) -> Result<bool>;
}

/// SHA-256 of a document, lowercase hex: the digest stored with it.
pub fn policy_digest(document: &str) -> String {
    Sha256::digest(document.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The message of a read of a revision that does not exist.
pub(crate) fn missing_revision(revision: i64) -> String {
    format!("policy revision {revision} does not exist; `hallmark policy history` lists them")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            policy_digest(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
