//! Flow queries as operators write them: `flows list --from F --to F` where
//! F names an identity, a place or an address. Parsed here once, so the CLI,
//! the admin API and the console refuse the same input with the same words.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use hallmark_policy::Outcome;
use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, FlowStatus, StoredFlow};
use crate::flow::Protocol;
use crate::network::Cidr;

/// Why a filter does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("empty endpoint filter: use a SPIFFE ID or prefix (spiffe://td/ns/payments/*), ns:NAME, label:K=V, image:NAME, context:NAME, node:NAME, ip:ADDR or a CIDR")]
    Empty,
    #[error("endpoint filter `{input}`: {rule}")]
    Bad { input: String, rule: &'static str },
    #[error("endpoint filter: {0}")]
    Cidr(#[from] crate::network::NetworkError),
}

/// One endpoint filter (`--from`, `--to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum EndpointFilter {
    /// An exact SPIFFE ID.
    SpiffeId(String),
    /// Every SPIFFE ID under a path: `spiffe://td/ns/payments/*` is stored
    /// as `spiffe://td/ns/payments/`.
    SpiffePrefix(String),
    Namespace(String),
    Label(String, String),
    /// An image reference, with or without its tag (`nginx` matches
    /// `nginx:1.25` and `docker.io/library/nginx:1.25`).
    Image(String),
    Context(String),
    Node(String),
    /// An address or a block of them.
    #[serde(with = "cidr_text")]
    Ip(Cidr),
}

/// A CIDR in its text form (`10.0.0.0/16`).
mod cidr_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::network::Cidr;

    pub fn serialize<S: Serializer>(c: &Cidr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for EndpointFilter {
    type Err = FilterError;

    fn from_str(input: &str) -> Result<Self, FilterError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(FilterError::Empty);
        }
        let bad = |rule| FilterError::Bad {
            input: input.to_string(),
            rule,
        };
        let nonempty = |v: &str, rule| {
            if v.is_empty() {
                Err(bad(rule))
            } else {
                Ok(v.to_string())
            }
        };
        if let Some(rest) = s.strip_prefix("spiffe://") {
            let td = rest.split('/').next().unwrap_or("");
            if td.is_empty() {
                return Err(bad("a SPIFFE ID names its trust domain: spiffe://TD/PATH"));
            }
            if s.contains('?') || s.contains('#') {
                return Err(bad("a SPIFFE ID has no query or fragment"));
            }
            if let Some(prefix) = s.strip_suffix("/*") {
                return Ok(EndpointFilter::SpiffePrefix(format!("{prefix}/")));
            }
            if s.contains('*') {
                return Err(bad(
                    "`*` is allowed only as the last path segment (`spiffe://td/ns/payments/*`)",
                ));
            }
            return Ok(EndpointFilter::SpiffeId(s.to_string()));
        }
        if let Some((kind, value)) = s.split_once(':') {
            match kind {
                "ns" | "namespace" => {
                    return nonempty(value, "ns: needs a namespace name")
                        .map(EndpointFilter::Namespace)
                }
                "label" => {
                    let (k, v) = value
                        .split_once('=')
                        .ok_or_else(|| bad("label: needs KEY=VALUE"))?;
                    if k.is_empty() {
                        return Err(bad("label: needs a non-empty KEY in KEY=VALUE"));
                    }
                    return Ok(EndpointFilter::Label(k.to_string(), v.to_string()));
                }
                "image" => {
                    return nonempty(value, "image: needs an image name").map(EndpointFilter::Image)
                }
                "context" => {
                    return nonempty(value, "context: needs a context name")
                        .map(EndpointFilter::Context)
                }
                "node" => {
                    return nonempty(value, "node: needs a node name").map(EndpointFilter::Node)
                }
                "ip" => {
                    return parse_ip(value)
                        .map(EndpointFilter::Ip)
                        .ok_or_else(|| bad("ip: needs an IP address or a CIDR"))
                }
                _ => {}
            }
        }
        if let Some(cidr) = parse_ip(s) {
            return Ok(EndpointFilter::Ip(cidr));
        }
        if let Some((addr, _)) = s.split_once('/') {
            if addr.parse::<IpAddr>().is_ok() {
                return Err(s
                    .parse::<Cidr>()
                    .err()
                    .map(FilterError::Cidr)
                    .unwrap_or(FilterError::Empty));
            }
        }
        Err(bad("use a SPIFFE ID or prefix (spiffe://td/ns/payments/*), ns:NAME, label:K=V, image:NAME, context:NAME, node:NAME, ip:ADDR or a CIDR"))
    }
}

fn parse_ip(s: &str) -> Option<Cidr> {
    if s.contains('/') {
        return s.parse::<Cidr>().ok();
    }
    let ip: IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let len = if ip.is_ipv4() { 32 } else { 128 };
    format!("{ip}/{len}").parse::<Cidr>().ok()
}

impl fmt::Display for EndpointFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointFilter::SpiffeId(id) => f.write_str(id),
            EndpointFilter::SpiffePrefix(p) => write!(f, "{p}*"),
            EndpointFilter::Namespace(n) => write!(f, "ns:{n}"),
            EndpointFilter::Label(k, v) => write!(f, "label:{k}={v}"),
            EndpointFilter::Image(i) => write!(f, "image:{i}"),
            EndpointFilter::Context(c) => write!(f, "context:{c}"),
            EndpointFilter::Node(n) => write!(f, "node:{n}"),
            EndpointFilter::Ip(c) => write!(f, "ip:{c}"),
        }
    }
}

impl EndpointFilter {
    /// Whether the end of a flow at `ip`, described as `end`, matches.
    pub fn matches(&self, end: &Endpoint, ip: IpAddr) -> bool {
        match self {
            EndpointFilter::SpiffeId(id) => end.spiffe_ids().iter().any(|s| s == id),
            EndpointFilter::SpiffePrefix(p) => {
                end.spiffe_ids().iter().any(|s| s.starts_with(p.as_str()))
            }
            EndpointFilter::Ip(c) => c.contains(ip),
            EndpointFilter::Namespace(n) => {
                matches!(end, Endpoint::Workload(w) if &w.namespace == n)
            }
            EndpointFilter::Label(k, v) => {
                matches!(end, Endpoint::Workload(w) if w.labels.get(k) == Some(v))
            }
            EndpointFilter::Image(i) => {
                matches!(end, Endpoint::Workload(w) if image_matches(&w.image, i))
            }
            EndpointFilter::Context(c) => match end {
                Endpoint::Workload(w) => &w.context == c,
                Endpoint::Node { context, .. } => context == c,
                _ => false,
            },
            EndpointFilter::Node(n) => match end {
                Endpoint::Workload(w) => &w.node == n,
                Endpoint::Node { node, .. } => node == n,
                _ => false,
            },
        }
    }
}

/// `image:nginx` matches `nginx`, `nginx:1.25`, `nginx@sha256:…` and the
/// same under any registry path (`docker.io/library/nginx:1.25`); a filter
/// with a tag or path must match that far exactly.
fn image_matches(image: &str, filter: &str) -> bool {
    if image == filter {
        return true;
    }
    let base = image.split('@').next().unwrap_or(image);
    // Strip a tag: a colon after the last slash.
    let last_slash = base.rfind('/').map_or(0, |i| i + 1);
    let untagged = match base[last_slash..].find(':') {
        Some(i) => &base[..last_slash + i],
        None => base,
    };
    let candidates = [base, untagged];
    candidates
        .iter()
        .any(|c| *c == filter || c.ends_with(&format!("/{filter}")))
}

/// A `flows list` query. Times are unix ms; `since_ms` inclusive,
/// `until_ms` exclusive, on the flow's start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowQuery {
    pub since_ms: i64,
    pub until_ms: Option<i64>,
    /// Every filter must match the source end.
    #[serde(default)]
    pub from: Vec<EndpointFilter>,
    /// Every filter must match the destination end.
    #[serde(default)]
    pub to: Vec<EndpointFilter>,
    /// Destination port.
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub status: Option<FlowStatus>,
    /// Only flows stored with this verdict (flows stored before verdicts
    /// existed have none and never match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Outcome>,
    /// Only flows stored after this store ID (`--follow`).
    pub after_id: Option<i64>,
    /// At most this many, newest first (oldest first with `after_id`).
    pub limit: usize,
}

impl FlowQuery {
    /// Whether a stored flow satisfies every condition (the store may
    /// apply some in SQL; this is the definition).
    pub fn matches(&self, f: &StoredFlow) -> bool {
        let start = f.flow.start_ms;
        if start < self.since_ms || self.until_ms.is_some_and(|u| start >= u) {
            return false;
        }
        if self.after_id.is_some_and(|a| f.id <= a) {
            return false;
        }
        if self.port.is_some_and(|p| f.flow.dst.port() != p) {
            return false;
        }
        if self.protocol.is_some_and(|p| f.flow.protocol != p) {
            return false;
        }
        if self.status.is_some_and(|s| f.status != s) {
            return false;
        }
        if self.verdict.is_some_and(|v| f.verdict != Some(v)) {
            return false;
        }
        self.from.iter().all(|m| m.matches(&f.src, f.flow.src.ip()))
            && self.to.iter().all(|m| m.matches(&f.dst, f.flow.dst.ip()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use crate::endpoint::WorkloadEndpoint;

    fn wl() -> Endpoint {
        Endpoint::Workload(WorkloadEndpoint {
            context: "prod".into(),
            node: "n1".into(),
            container_id: "c".repeat(64),
            image: "docker.io/library/nginx:1.25".into(),
            namespace: "payments".into(),
            labels: [("app".to_string(), "ledger".to_string())].into(),
            spiffe_ids: vec!["spiffe://example.org/ns/payments/sa/ledger".into()],
            ..WorkloadEndpoint::default()
        })
    }

    #[test]
    fn filters_parse_and_match() {
        let ip: IpAddr = "10.0.4.15".parse().unwrap();
        let cases = [
            ("spiffe://example.org/ns/payments/*", true),
            ("spiffe://example.org/ns/payments/sa/ledger", true),
            ("spiffe://example.org/ns/pay/*", false),
            ("spiffe://example.org/ns/payments/sa/*", true),
            ("ns:payments", true),
            ("ns:other", false),
            ("label:app=ledger", true),
            ("label:app=web", false),
            ("image:nginx", true),
            ("image:nginx:1.25", true),
            ("image:library/nginx", true),
            ("image:ngin", false),
            ("context:prod", true),
            ("node:n1", true),
            ("node:n2", false),
            ("ip:10.0.4.15", true),
            ("10.0.0.0/16", true),
            ("10.1.0.0/16", false),
            ("10.0.4.15", true),
        ];
        for (input, want) in cases {
            let f: EndpointFilter = input.parse().unwrap();
            assert_eq!(f.matches(&wl(), ip), want, "{input}");
        }
    }

    #[test]
    fn bad_filters_name_the_rule() {
        for (input, needle) in [
            ("", "empty"),
            ("label:app", "KEY=VALUE"),
            ("ns:", "namespace name"),
            ("ip:10.0.0.300", "IP address"),
            ("10.0.0.1/16", "did you mean 10.0.0.0/16"),
            ("spiffe:///x", "trust domain"),
            ("spiffe://td/a*/b", "last path segment"),
            ("payments", "use a SPIFFE ID"),
        ] {
            let err = input.parse::<EndpointFilter>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }
}
