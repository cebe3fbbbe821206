//! Registration entries: which SPIFFE ID a workload with given selectors,
//! running under a given parent (an agent), is issued.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::selector::{Selector, SelectorSet};
use crate::spiffe_id::SpiffeId;

/// Shortest SVID lifetime an entry may ask for. Shorter lifetimes would make
/// the agent spend its time re-signing.
pub const MIN_TTL_SECS: u64 = 10;
/// Longest SVID lifetime an entry may ask for (30 days).
pub const MAX_TTL_SECS: u64 = 30 * 86400;
pub const DEFAULT_X509_TTL_SECS: u64 = 3600;
pub const DEFAULT_JWT_TTL_SECS: u64 = 300;
const MAX_HINT_LEN: usize = 256;
const MAX_DNS_NAME_LEN: usize = 253;

/// An entry's identifier: a UUID in its canonical hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntryId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry id `{0}` is not a UUID (e.g. 7f3c2a4e-1b2c-4d5e-8f90-123456789abc)")]
    BadId(String),
    #[error("spiffe_id `{id}`: {reason}")]
    SpiffeId { id: String, reason: String },
    #[error("spiffe_id `{0}` is not in this server's trust domain `{1}`")]
    ForeignTrustDomain(String, String),
    #[error("parent_id `{id}`: {reason}")]
    ParentId { id: String, reason: String },
    #[error("an entry needs at least one selector")]
    NoSelectors,
    #[error("selector `{input}` {reason}")]
    Selector { input: String, reason: String },
    #[error("{which} TTL of {secs}s is outside {MIN_TTL_SECS}s..={MAX_TTL_SECS}s")]
    Ttl { which: &'static str, secs: u64 },
    #[error("DNS name `{0}` is not a valid hostname (letters, digits, `-`, dot-separated labels of 1-63 bytes; `*.` allowed as the first label)")]
    DnsName(String),
    #[error("hint is longer than {MAX_HINT_LEN} bytes or contains control characters")]
    Hint,
}

impl EntryId {
    pub fn new_random() -> Self {
        EntryId(uuid::Uuid::new_v4().to_string())
    }

    pub fn parse(s: &str) -> Result<Self, EntryError> {
        let u = uuid::Uuid::parse_str(s).map_err(|_| EntryError::BadId(s.to_string()))?;
        Ok(EntryId(u.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EntryId {
    type Err = EntryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for EntryId {
    type Error = EntryError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EntryId> for String {
    fn from(id: EntryId) -> String {
        id.0
    }
}

/// What an operator asks for when creating an entry, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySpec {
    pub spiffe_id: SpiffeId,
    pub parent_id: SpiffeId,
    pub selectors: Vec<Selector>,
    pub x509_ttl_secs: u64,
    pub jwt_ttl_secs: u64,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub hint: String,
    #[serde(default)]
    pub admin: bool,
}

/// A stored registration entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: EntryId,
    #[serde(flatten)]
    pub spec: EntrySpec,
    /// Unix seconds.
    pub created_at: i64,
    /// Monotonic per-datastore revision of the last change to this entry.
    pub revision: i64,
}

/// Untyped input for an entry, as it arrives from the CLI or the admin API.
#[derive(Debug, Clone, Default)]
pub struct RawEntrySpec<'a> {
    pub spiffe_id: &'a str,
    pub parent_id: &'a str,
    pub selectors: Vec<&'a str>,
    pub x509_ttl_secs: Option<u64>,
    pub jwt_ttl_secs: Option<u64>,
    pub dns_names: Vec<&'a str>,
    pub hint: &'a str,
    pub admin: bool,
}

impl EntrySpec {
    /// Validates raw input into an entry spec, naming the offending input.
    /// `trust_domain` is the server's; entries for other domains are refused.
    pub fn parse(raw: &RawEntrySpec<'_>, trust_domain: &str) -> Result<Self, EntryError> {
        let spiffe_id =
            SpiffeId::new_workload(raw.spiffe_id).map_err(|e| EntryError::SpiffeId {
                id: raw.spiffe_id.to_string(),
                reason: e.to_string(),
            })?;
        if spiffe_id.trust_domain_name() != trust_domain {
            return Err(EntryError::ForeignTrustDomain(
                raw.spiffe_id.to_string(),
                trust_domain.to_string(),
            ));
        }
        let parent_id =
            SpiffeId::new_workload(raw.parent_id).map_err(|e| EntryError::ParentId {
                id: raw.parent_id.to_string(),
                reason: e.to_string(),
            })?;
        if raw.selectors.is_empty() {
            return Err(EntryError::NoSelectors);
        }
        let mut selectors = Vec::with_capacity(raw.selectors.len());
        for s in &raw.selectors {
            let sel = Selector::new(s).map_err(|e| EntryError::Selector {
                input: s.to_string(),
                reason: e.to_string(),
            })?;
            if !selectors.contains(&sel) {
                selectors.push(sel);
            }
        }
        selectors.sort();
        let x509_ttl_secs = check_ttl("X.509", raw.x509_ttl_secs.unwrap_or(DEFAULT_X509_TTL_SECS))?;
        let jwt_ttl_secs = check_ttl("JWT", raw.jwt_ttl_secs.unwrap_or(DEFAULT_JWT_TTL_SECS))?;
        let mut dns_names = Vec::new();
        for d in &raw.dns_names {
            if !valid_dns_name(d) {
                return Err(EntryError::DnsName(d.to_string()));
            }
            dns_names.push(d.to_ascii_lowercase());
        }
        if raw.hint.len() > MAX_HINT_LEN || raw.hint.chars().any(char::is_control) {
            return Err(EntryError::Hint);
        }
        Ok(EntrySpec {
            spiffe_id,
            parent_id,
            selectors,
            x509_ttl_secs,
            jwt_ttl_secs,
            dns_names,
            hint: raw.hint.to_string(),
            admin: raw.admin,
        })
    }

    /// True when a workload with `attested` selectors, attested by the agent
    /// `agent_id`, is entitled to this entry.
    pub fn matches(&self, agent_id: &SpiffeId, attested: &SelectorSet) -> bool {
        &self.parent_id == agent_id && attested.satisfies(&self.selectors)
    }
}

fn check_ttl(which: &'static str, secs: u64) -> Result<u64, EntryError> {
    if (MIN_TTL_SECS..=MAX_TTL_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(EntryError::Ttl { which, secs })
    }
}

fn valid_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_DNS_NAME_LEN {
        return false;
    }
    let body = name.strip_prefix("*.").unwrap_or(name);
    !body.is_empty()
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>() -> RawEntrySpec<'a> {
        RawEntrySpec {
            spiffe_id: "spiffe://example.org/web",
            parent_id: "spiffe://example.org/hallmark/agent/node1",
            selectors: vec!["unix:uid:1000", "unix:uid:1000"],
            ..Default::default()
        }
    }

    #[test]
    fn parses_with_defaults() {
        let spec = EntrySpec::parse(&raw(), "example.org").unwrap();
        assert_eq!(spec.selectors.len(), 1, "duplicates collapse");
        assert_eq!(spec.x509_ttl_secs, DEFAULT_X509_TTL_SECS);
        assert_eq!(spec.jwt_ttl_secs, DEFAULT_JWT_TTL_SECS);
    }

    #[test]
    fn rejects_with_named_input() {
        let mut r = raw();
        r.spiffe_id = "spiffe://example.org/web/";
        let e = EntrySpec::parse(&r, "example.org").unwrap_err().to_string();
        assert!(
            e.contains("spiffe://example.org/web/") && e.contains("end with `/`"),
            "{e}"
        );

        let e = EntrySpec::parse(&raw(), "other.org").unwrap_err();
        assert!(matches!(e, EntryError::ForeignTrustDomain(..)));

        let mut r = raw();
        r.selectors = vec!["unix:uid:x"];
        let e = EntrySpec::parse(&r, "example.org").unwrap_err().to_string();
        assert!(e.contains("unix:uid:x") && e.contains("decimal"), "{e}");

        let mut r = raw();
        r.selectors = vec![];
        assert_eq!(
            EntrySpec::parse(&r, "example.org").unwrap_err(),
            EntryError::NoSelectors
        );

        let mut r = raw();
        r.x509_ttl_secs = Some(1);
        assert!(matches!(
            EntrySpec::parse(&r, "example.org").unwrap_err(),
            EntryError::Ttl {
                which: "X.509",
                secs: 1
            }
        ));

        let mut r = raw();
        r.dns_names = vec!["bad_name.example"];
        assert!(matches!(
            EntrySpec::parse(&r, "example.org").unwrap_err(),
            EntryError::DnsName(_)
        ));
        r.dns_names = vec!["*.web.example", "api.example"];
        assert!(EntrySpec::parse(&r, "example.org").is_ok());
    }

    #[test]
    fn matching_needs_parent_and_subset() {
        let spec = EntrySpec::parse(&raw(), "example.org").unwrap();
        let agent = SpiffeId::new("spiffe://example.org/hallmark/agent/node1").unwrap();
        let other_agent = SpiffeId::new("spiffe://example.org/hallmark/agent/node2").unwrap();
        let attested: SelectorSet = [
            Selector::new("unix:uid:1000").unwrap(),
            Selector::new("unix:gid:5").unwrap(),
        ]
        .into_iter()
        .collect();
        assert!(spec.matches(&agent, &attested));
        assert!(!spec.matches(&other_agent, &attested));
        let none: SelectorSet = [Selector::new("unix:uid:1001").unwrap()]
            .into_iter()
            .collect();
        assert!(!spec.matches(&agent, &none));
    }

    #[test]
    fn entry_ids() {
        let id = EntryId::new_random();
        assert_eq!(EntryId::parse(id.as_str()).unwrap(), id);
        assert!(EntryId::parse("nope").is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<EntryId>(&json).unwrap(), id);
    }
}
