//! SPIFFE IDs and trust domains, validated per the SPIFFE ID specification.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SCHEME: &str = "spiffe://";
/// SPIFFE IDs longer than this are refused: the spec asks implementations to
/// accept at least 2048 bytes and URI SANs beyond that are impractical.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Trust domain names are DNS-like labels; 255 bytes is the spec's cap.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// One variant per rule of the SPIFFE ID specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("is empty")]
    Empty,
    #[error("must start with the scheme `spiffe://`")]
    WrongScheme,
    #[error("has no trust domain after `spiffe://`")]
    MissingTrustDomain,
    #[error(
        "trust domain may only contain lowercase letters, digits, `.`, `-` and `_` (found {0:?})"
    )]
    BadTrustDomainChar(char),
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error("path segments may only contain letters, digits, `.`, `-` and `_` (found {0:?})")]
    BadPathChar(char),
    #[error("path has an empty segment (`//`)")]
    EmptySegment,
    #[error("path segments `.` and `..` are not allowed")]
    DotSegment,
    #[error("path must not end with `/`")]
    TrailingSlash,
    #[error("must not contain a query (`?`) or fragment (`#`)")]
    QueryOrFragment,
    #[error("must not contain a port or user info")]
    PortOrUserInfo,
    #[error("is longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
    #[error("must have a path (a workload ID is `spiffe://<trust-domain>/<path>`)")]
    MissingPath,
}

/// A trust domain name such as `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

/// A SPIFFE ID: `spiffe://<trust-domain>[/<path>]`. The path may be empty
/// only for the trust domain's own ID (used by signing certificates).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    td_len: usize,
}

fn validate_td(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    for c in td.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            ':' | '@' => return Err(SpiffeIdError::PortOrUserInfo),
            '?' | '#' => return Err(SpiffeIdError::QueryOrFragment),
            other => return Err(SpiffeIdError::BadTrustDomainChar(other)),
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/'.
    let body = &path[1..];
    if body.is_empty() || path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    for seg in body.split('/') {
        if seg.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        for c in seg.chars() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                '?' | '#' => return Err(SpiffeIdError::QueryOrFragment),
                other => return Err(SpiffeIdError::BadPathChar(other)),
            }
        }
    }
    Ok(())
}

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or a trust domain ID
    /// (`spiffe://example.org`).
    pub fn new(s: &str) -> Result<Self, SpiffeIdError> {
        let name = s.strip_prefix(SCHEME).unwrap_or(s);
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        validate_td(name)?;
        Ok(TrustDomain(name.to_string()))
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            id: format!("{SCHEME}{}", self.0),
            td_len: self.0.len(),
        }
    }

    /// A SPIFFE ID in this trust domain with the given path (which must start
    /// with `/`).
    pub fn id_with_path(&self, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::new(&format!("{SCHEME}{}{path}", self.0))
    }
}

/// Path of the server's own SPIFFE ID, `spiffe://<td>/hallmark/server`.
pub const SERVER_PATH: &str = "/hallmark/server";
/// Path prefix of agent SPIFFE IDs, `spiffe://<td>/hallmark/agent/<node>`.
pub const AGENT_PATH_PREFIX: &str = "/hallmark/agent/";

impl TrustDomain {
    /// The SPIFFE ID the server presents to agents and federated peers.
    pub fn server_id(&self) -> SpiffeId {
        SpiffeId {
            id: format!("{SCHEME}{}{SERVER_PATH}", self.0),
            td_len: self.0.len(),
        }
    }

    /// The SPIFFE ID of the agent attested for node `node`. The node name
    /// must be one valid path segment.
    pub fn agent_id(&self, node: &str) -> Result<SpiffeId, SpiffeIdError> {
        if node.contains('/') {
            return Err(SpiffeIdError::BadPathChar('/'));
        }
        self.id_with_path(&format!("{AGENT_PATH_PREFIX}{node}"))
    }
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID. The trust-domain-only form
    /// (`spiffe://example.org`) is accepted; use [`SpiffeId::new_workload`]
    /// where a path is required.
    pub fn new(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        validate_td(td)?;
        validate_path(path)?;
        Ok(SpiffeId {
            id: s.to_string(),
            td_len: td.len(),
        })
    }

    /// Parses a SPIFFE ID that must name a workload (non-empty path).
    pub fn new_workload(s: &str) -> Result<Self, SpiffeIdError> {
        let id = Self::new(s)?;
        if id.path().is_empty() {
            return Err(SpiffeIdError::MissingPath);
        }
        Ok(id)
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn trust_domain_name(&self) -> &str {
        &self.id[SCHEME.len()..SCHEME.len() + self.td_len]
    }

    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_string())
    }

    /// The path, starting with `/`, or empty for a trust domain ID.
    pub fn path(&self) -> &str {
        &self.id[SCHEME.len() + self.td_len..]
    }

    /// The node name when this is an agent's ID
    /// (`spiffe://<td>/hallmark/agent/<node>`), else `None`.
    pub fn agent_node(&self) -> Option<&str> {
        self.path()
            .strip_prefix(AGENT_PATH_PREFIX)
            .filter(|node| !node.is_empty() && !node.contains('/'))
    }

    /// Whether this is the server ID of its trust domain.
    pub fn is_server(&self) -> bool {
        self.path() == SERVER_PATH
    }

    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.name()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SpiffeId::new(&s).map_err(|e| serde::de::Error::custom(format!("SPIFFE ID `{s}` {e}")))
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TrustDomain::new(&s)
            .map_err(|e| serde::de::Error::custom(format!("trust domain `{s}` {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_round_trip() {
        for s in [
            "spiffe://example.org",
            "spiffe://example.org/web",
            "spiffe://a-b_c.d/ns/prod/sa/Web_1.x-y",
        ] {
            let id = SpiffeId::new(s).unwrap();
            assert_eq!(id.to_string(), s);
            assert_eq!(SpiffeId::new(&id.to_string()).unwrap(), id);
        }
        let id = SpiffeId::new("spiffe://example.org/ns/web").unwrap();
        assert_eq!(id.trust_domain_name(), "example.org");
        assert_eq!(id.path(), "/ns/web");
    }

    #[test]
    fn each_rule_is_named() {
        use SpiffeIdError::*;
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("http://example.org/a", WrongScheme),
            ("spiffe://", MissingTrustDomain),
            ("spiffe:///a", MissingTrustDomain),
            ("spiffe://Example.org/a", BadTrustDomainChar('E')),
            ("spiffe://example.org/a/", TrailingSlash),
            ("spiffe://example.org/", TrailingSlash),
            ("spiffe://example.org/a//b", EmptySegment),
            ("spiffe://example.org/a/../b", DotSegment),
            ("spiffe://example.org/a b", BadPathChar(' ')),
            ("spiffe://example.org/a?x=1", QueryOrFragment),
            ("spiffe://example.org:8080/a", PortOrUserInfo),
            ("spiffe://user@example.org/a", PortOrUserInfo),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::new(input).unwrap_err(), *want, "input {input:?}");
        }
        assert_eq!(
            SpiffeId::new_workload("spiffe://example.org").unwrap_err(),
            MissingPath
        );
        let long = format!("spiffe://example.org/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        assert_eq!(SpiffeId::new(&long).unwrap_err(), TooLong);
    }

    #[test]
    fn trust_domain_forms() {
        assert_eq!(
            TrustDomain::new("example.org").unwrap().name(),
            "example.org"
        );
        assert_eq!(
            TrustDomain::new("spiffe://example.org").unwrap().name(),
            "example.org"
        );
        assert!(TrustDomain::new("Example.org").is_err());
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(td.id().as_str(), "spiffe://example.org");
        assert_eq!(
            td.id_with_path("/x").unwrap().as_str(),
            "spiffe://example.org/x"
        );
    }

    #[test]
    fn server_and_agent_ids() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(
            td.server_id().as_str(),
            "spiffe://example.org/hallmark/server"
        );
        assert!(td.server_id().is_server());
        let agent = td.agent_id("node-1").unwrap();
        assert_eq!(agent.as_str(), "spiffe://example.org/hallmark/agent/node-1");
        assert_eq!(agent.agent_node(), Some("node-1"));
        assert!(!agent.is_server());
        assert_eq!(td.server_id().agent_node(), None);
        for bad in ["", "a/b", "..", "x y"] {
            assert!(td.agent_id(bad).is_err(), "{bad:?} accepted");
        }
        let nested = SpiffeId::new("spiffe://example.org/hallmark/agent/a/b").unwrap();
        assert_eq!(nested.agent_node(), None);
        let workload = SpiffeId::new("spiffe://example.org/hallmark/agents/x").unwrap();
        assert_eq!(workload.agent_node(), None);
    }
}
