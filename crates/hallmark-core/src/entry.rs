//! Registration entries: which SPIFFE ID a workload with given selectors,
//! running under a given parent (an agent), is issued.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::selector::{Selector, SelectorSet};
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// Shortest SVID lifetime an entry may ask for. Shorter lifetimes would make
/// the agent spend its time re-signing.
pub const MIN_TTL_SECS: u64 = 10;
/// Longest SVID lifetime an entry may ask for (30 days).
pub const MAX_TTL_SECS: u64 = 30 * 86400;
pub const DEFAULT_X509_TTL_SECS: u64 = 3600;
pub const DEFAULT_JWT_TTL_SECS: u64 = 300;
const MAX_HINT_LEN: usize = 256;
/// Most foreign trust domains one entry may federate with.
pub const MAX_FEDERATES_WITH: usize = 32;

/// The attested attributes an OIDC token may carry as extra claims, by
/// claim name. Each is taken from what the agent attested about the caller
/// (its container runtime record and the agent's own settings); a claim whose
/// attribute is unknown for a caller is left out, never guessed.
pub const OIDC_CLAIM_NAMES: &[&str] = &[
    // The operator-set context name of the agent (cluster or site).
    "context",
    // The agent's node name.
    "node",
    // Kubernetes: namespace, pod name and pod UID.
    "namespace",
    "pod",
    "pod_uid",
    // Container name, ID and image as the runtime reports them.
    "container",
    "container_id",
    "image",
    // The image's content digest (`sha256:...`).
    "image_digest",
    // Docker Compose project and service.
    "compose_project",
    "compose_service",
];
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
    #[error("federates_with `{input}`: {reason}")]
    FederatesWith { input: String, reason: String },
    #[error("federates_with lists more than {MAX_FEDERATES_WITH} trust domains")]
    TooManyFederated,
    #[error("OIDC claim `{0}` is not one of the attested attributes ({names})", names = OIDC_CLAIM_NAMES.join(", "))]
    OidcClaim(String),
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
    /// Foreign trust domains whose bundles this entry's workloads receive,
    /// sorted and deduplicated; never the entry's own.
    #[serde(default)]
    pub federates_with: Vec<TrustDomain>,
    /// Extra OIDC token claims (names from [`OIDC_CLAIM_NAMES`]), sorted
    /// and deduplicated.
    #[serde(default)]
    pub oidc_claims: Vec<String>,
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
    /// Trust domain names or IDs (`partner.example`, `spiffe://partner.example`).
    pub federates_with: Vec<&'a str>,
    pub oidc_claims: Vec<&'a str>,
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
        let federates_with = parse_federates_with(&raw.federates_with, trust_domain)?;
        let oidc_claims = parse_oidc_claims(&raw.oidc_claims)?;
        Ok(EntrySpec {
            spiffe_id,
            parent_id,
            selectors,
            x509_ttl_secs,
            jwt_ttl_secs,
            dns_names,
            hint: raw.hint.to_string(),
            admin: raw.admin,
            federates_with,
            oidc_claims,
        })
    }

    /// True when a workload with `attested` selectors, attested by the agent
    /// `agent_id`, is entitled to this entry.
    pub fn matches(&self, agent_id: &SpiffeId, attested: &SelectorSet) -> bool {
        &self.parent_id == agent_id && attested.satisfies(&self.selectors)
    }
}

/// Validates trust domain names for `federates_with`: sorted, deduplicated,
/// never the server's own domain.
pub fn parse_federates_with(
    raw: &[&str],
    own_trust_domain: &str,
) -> Result<Vec<TrustDomain>, EntryError> {
    let mut out: Vec<TrustDomain> = Vec::with_capacity(raw.len());
    for input in raw {
        let td = TrustDomain::new(input).map_err(|e| EntryError::FederatesWith {
            input: input.to_string(),
            reason: format!("not a trust domain name: {e}"),
        })?;
        if td.name() == own_trust_domain {
            return Err(EntryError::FederatesWith {
                input: input.to_string(),
                reason: "is this server's own trust domain".into(),
            });
        }
        if !out.contains(&td) {
            out.push(td);
        }
    }
    if out.len() > MAX_FEDERATES_WITH {
        return Err(EntryError::TooManyFederated);
    }
    out.sort();
    Ok(out)
}

/// Validates OIDC claim names against [`OIDC_CLAIM_NAMES`]: sorted,
/// deduplicated.
pub fn parse_oidc_claims(raw: &[&str]) -> Result<Vec<String>, EntryError> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for name in raw {
        if !OIDC_CLAIM_NAMES.contains(name) {
            return Err(EntryError::OidcClaim(name.to_string()));
        }
        if !out.iter().any(|c| c == name) {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
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
    fn federates_with_and_oidc_claims() {
        let mut r = raw();
        r.federates_with = vec!["spiffe://b.org", "a.org", "b.org"];
        r.oidc_claims = vec!["pod", "namespace", "pod"];
        let spec = EntrySpec::parse(&r, "example.org").unwrap();
        let names: Vec<&str> = spec.federates_with.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["a.org", "b.org"]);
        assert_eq!(spec.oidc_claims, ["namespace", "pod"]);

        let mut r = raw();
        r.federates_with = vec!["example.org"];
        let e = EntrySpec::parse(&r, "example.org").unwrap_err().to_string();
        assert!(e.contains("own trust domain"), "{e}");
        r.federates_with = vec!["Bad Domain"];
        let e = EntrySpec::parse(&r, "example.org").unwrap_err().to_string();
        assert!(e.contains("Bad Domain"), "{e}");

        let mut r = raw();
        r.oidc_claims = vec!["password"];
        let e = EntrySpec::parse(&r, "example.org").unwrap_err().to_string();
        assert!(e.contains("password") && e.contains("namespace"), "{e}");
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
