//! The JSON documents of the policy admin API: requests and answers, the
//! same ones `hallmark policy … --json` and `hallmark group … --json` print.

use serde::{Deserialize, Serialize};

/// `ApplyPolicy`: a document to validate and apply as the next revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The name diagnostics give the document (`policy.yaml`).
    #[serde(default = "default_file")]
    pub file: String,
    /// The YAML text.
    pub document: String,
    /// Who or what applies it, kept in the history (`cli:policy.yaml`).
    #[serde(default)]
    pub source: Option<String>,
}

fn default_file() -> String {
    "policy.yaml".to_string()
}

/// The answer of `ApplyPolicy` and `RollbackPolicy`: the revision in force
/// afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyAnswer {
    pub revision: i64,
    /// True when the document was the one in force already: no revision
    /// was created.
    pub unchanged: bool,
    pub groups: i64,
    pub rules: i64,
    /// `allow` or `deny`.
    pub default: String,
    /// The parser's warnings (`hallmark_policy::Diagnostic` objects).
    pub warnings: Vec<serde_json::Value>,
    pub applied_at_ms: i64,
}

/// `GetPolicy`: one revision, or the latest when `revision` is absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    #[serde(default)]
    pub revision: Option<i64>,
}

/// A stored revision as `policy show --json` prints it; `history` rows are
/// the same without `document`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionJson {
    /// 0 when no policy was ever applied.
    pub revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    pub applied_at_ms: i64,
    pub source: String,
    pub rolled_back_from: Option<i64>,
    /// SHA-256 of the document, hex; empty for revision 0.
    pub digest: String,
    pub groups: i64,
    pub rules: i64,
    pub default: String,
    /// The fleet-wide enforcement switch, `on` or `off`: in `GetPolicy`'s
    /// answer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<String>,
}

/// `PolicyHistory`: the newest `limit` revisions (default
/// [`DEFAULT_HISTORY_LIMIT`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    #[serde(default)]
    pub limit: Option<u32>,
}

/// How many revisions `history` lists unless asked for another number.
pub const DEFAULT_HISTORY_LIMIT: u32 = 100;

/// `RollbackPolicy`: apply revision `revision`'s document again, as a new
/// revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub revision: i64,
}

/// `SetEnforcement`: `{"enforcement": "on"|"off"}`; without it, a read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnforcementRequest {
    #[serde(default)]
    pub enforcement: Option<String>,
}

/// The answer of `SetEnforcement`: the switch afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcementAnswer {
    /// `on` or `off`.
    pub enforcement: String,
    /// True when this call turned it.
    pub changed: bool,
}
