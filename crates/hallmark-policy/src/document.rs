//! The policy document as typed values: groups of match blocks, rules
//! between groups, and the default.
//!
//! Every value that has a syntax (SPIFFE ID pattern, selector, CIDR, port
//! range, label) is parsed once into its type, so a document in hand is a
//! valid one whether it came from [`crate::parse`] or from
//! [`crate::suggest`]. Names and label syntax are checked by the parser,
//! which knows the line to blame.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use hallmark_core::{Selector, SpiffeId, TrustDomain};
use serde::{Serialize, Serializer};

/// The group every endpoint belongs to, attributed or not. It may be used
/// in rules and may not be defined.
pub const ANY_GROUP: &str = "any";

/// Longest group or rule name.
pub const MAX_NAME_LEN: usize = 128;

/// A whole policy: applied as one, versioned as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDocument {
    /// Groups in document order.
    pub groups: Vec<Group>,
    /// Rules in document order (order breaks ties, see the crate docs).
    pub rules: Vec<Rule>,
    /// The action when no rule matches.
    pub default: Action,
}

impl Default for PolicyDocument {
    fn default() -> Self {
        PolicyDocument {
            groups: Vec::new(),
            rules: Vec::new(),
            default: Action::Allow,
        }
    }
}

/// A named set of endpoints: those matching any of its blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub name: String,
    pub blocks: Vec<Block>,
}

/// Conditions that must all hold. At least one is set (an empty block
/// would match everything; the `any` group says that).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Block {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<SpiffePattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<MatchExpression>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImagePattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
}

impl Block {
    /// Whether no condition is set.
    pub fn is_empty(&self) -> bool {
        *self == Block::default()
    }
}

/// One Kubernetes-style label requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchExpression {
    pub key: String,
    pub operator: Operator,
    /// Empty for `Exists` and `DoesNotExist`, non-empty otherwise.
    pub values: Vec<String>,
}

/// Kubernetes label-selector operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

/// A rule from groups to groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub name: String,
    /// Initiator groups (any of them).
    pub from: Vec<String>,
    /// Acceptor groups (any of them).
    pub to: Vec<String>,
    pub protocol: ProtocolMatch,
    /// The acceptor's ports; empty means every port.
    pub ports: Vec<PortRange>,
    pub action: Action,
    pub mode: Mode,
    /// Lower is considered first.
    pub priority: u32,
}

/// The priority of a rule that does not give one.
pub const DEFAULT_PRIORITY: u32 = 1000;

/// What a rule or the default does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// Whether a rule's verdict is enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Watch,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Watch => "watch",
        }
    }
}

/// The protocol of a flow being decided.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// The protocols a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolMatch {
    Tcp,
    Udp,
    Any,
}

impl ProtocolMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolMatch::Tcp => "tcp",
            ProtocolMatch::Udp => "udp",
            ProtocolMatch::Any => "any",
        }
    }

    pub fn matches(self, p: Protocol) -> bool {
        matches!(
            (self, p),
            (ProtocolMatch::Any, _)
                | (ProtocolMatch::Tcp, Protocol::Tcp)
                | (ProtocolMatch::Udp, Protocol::Udp)
        )
    }
}

impl From<Protocol> for ProtocolMatch {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => ProtocolMatch::Tcp,
            Protocol::Udp => ProtocolMatch::Udp,
        }
    }
}

/// An inclusive range of ports, `1..=65535` at most (port 0 is no port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// A range `lo..=hi`; refuses port 0 and a reversed range.
    pub fn new(lo: u16, hi: u16) -> Result<Self, String> {
        if lo == 0 {
            return Err("port 0 is not a port (ports are 1-65535)".to_string());
        }
        if lo > hi {
            return Err(format!("range {lo}-{hi} is reversed (write {hi}-{lo})"));
        }
        Ok(PortRange { lo, hi })
    }

    /// One port.
    pub fn single(port: u16) -> Result<Self, String> {
        Self::new(port, port)
    }

    /// Parses `"5432"` or `"8000-8100"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let port = |p: &str| -> Result<u16, String> {
            let t = p.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "`{s}` is not a port or range (write `5432` or `8000-8100`)"
                ));
            }
            match t.parse::<u32>() {
                Ok(n) if n <= 65535 => Ok(n as u16),
                _ => Err(format!("port {t} is above 65535")),
            }
        };
        match s.split_once('-') {
            Some((a, b)) => Self::new(port(a)?, port(b)?),
            None => Self::single(port(s)?),
        }
    }

    pub fn lo(self) -> u16 {
        self.lo
    }

    pub fn hi(self) -> u16 {
        self.hi
    }

    pub fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A SPIFFE ID, exact or a glob.
///
/// `*` matches any run of characters within one path segment
/// (`spiffe://td/ns/*/sa/db`, `spiffe://td/sa/web-*`); a last segment that
/// is exactly `*` matches one or more segments below the path, at any depth
/// (`spiffe://td/ns/payments/*`), as the flows CLI reads that form. The
/// trust domain is always literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffePattern {
    text: String,
    /// `spiffe://td` of the pattern.
    trust_domain_id: String,
    /// Path segments, the last one without its `*` if `below`.
    segments: Vec<String>,
    /// Whether the pattern ends in `/*` (anything below).
    below: bool,
}

impl SpiffePattern {
    /// Parses an ID or glob, validating it with `hallmark_core`'s SPIFFE ID
    /// rules (a `*` stands for one allowed character there).
    pub fn parse(s: &str) -> Result<Self, String> {
        let probe = s.replace('*', "x");
        let id = SpiffeId::new_workload(&probe).map_err(|e| format!("SPIFFE ID `{s}` {e}"))?;
        let td = id.trust_domain_name();
        // The scheme and trust domain are the same length in both strings.
        let td_end = "spiffe://".len() + td.len();
        if s[..td_end].contains('*') {
            return Err(format!(
                "SPIFFE ID `{s}`: `*` is not allowed in the trust domain"
            ));
        }
        let path = &s[td_end + 1..];
        let mut segments: Vec<String> = path.split('/').map(str::to_string).collect();
        let below = segments.last().is_some_and(|l| l == "*");
        if below {
            segments.pop();
        }
        Ok(SpiffePattern {
            text: s.to_string(),
            trust_domain_id: s[..td_end].to_string(),
            segments,
            below,
        })
    }

    /// An exact ID as a pattern.
    pub fn exact(id: &SpiffeId) -> Self {
        let text = id.as_str();
        SpiffePattern {
            text: text.to_string(),
            trust_domain_id: format!("spiffe://{}", id.trust_domain_name()),
            segments: id.path()[1..].split('/').map(str::to_string).collect(),
            below: false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern's trust domain.
    pub fn trust_domain(&self) -> Option<TrustDomain> {
        TrustDomain::new(&self.trust_domain_id).ok()
    }

    /// Whether `id` (a SPIFFE ID as text) matches.
    pub fn matches(&self, id: &str) -> bool {
        if !self.text.contains('*') {
            return id == self.text;
        }
        let Some(path) = id
            .strip_prefix(self.trust_domain_id.as_str())
            .and_then(|p| p.strip_prefix('/'))
        else {
            return false;
        };
        let mut parts = path.split('/');
        for seg in &self.segments {
            match parts.next() {
                Some(part) if glob(seg, part) => {}
                _ => return false,
            }
        }
        match parts.next() {
            None => !self.below,
            Some(rest) => self.below && !rest.is_empty(),
        }
    }
}

impl fmt::Display for SpiffePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An image reference, exact or a glob where `*` matches any run of
/// characters (`/` and `:` included: `registry.example/pay/*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImagePattern(String);

impl ImagePattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("image is empty".to_string());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "image `{}` contains white space or a control character",
                s.escape_debug()
            ));
        }
        Ok(ImagePattern(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, image: &str) -> bool {
        glob(&self.0, image)
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` matches any run of characters (none included); everything else is
/// literal. Iterative with one backtrack point, so linear-ish on any input.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A network: an address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.8.0.0/16` or `fd00::/8`. A bare address is one host.
    /// Host bits set are refused: `10.8.0.1/16` is most likely a typo.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("CIDR `{s}`: `{addr}` is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("CIDR `{s}`: prefix length `{p}` is not 0-{max}")),
            },
        };
        let cidr = Cidr { network, prefix };
        let masked = cidr.masked(network);
        if masked != network {
            return Err(format!(
                "CIDR `{s}` has host bits set (the network is {masked}/{prefix})"
            ));
        }
        Ok(cidr)
    }

    /// One host: `/32` or `/128`.
    pub fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr {
            network: addr,
            prefix,
        }
    }

    fn masked(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` is inside. An IPv4-mapped IPv6 address
    /// (`::ffff:10.8.0.1`) is the IPv4 address it maps.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.network.is_ipv4() && self.masked(addr) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

macro_rules! serialize_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_as_text!(SpiffePattern, ImagePattern, Cidr, PortRange);

/// Checks a group or rule name: 1-128 of letters, digits, `-`, `_`, `.`,
/// starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name is longer than {MAX_NAME_LEN} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("name must start with a letter or digit".to_string());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "name may only contain letters, digits, `-`, `_` and `.` (found {c:?})"
        ));
    }
    Ok(())
}

/// Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a
/// name of 1-63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "label key `{key}`: prefix `{p}` is not a DNS subdomain (lowercase, e.g. `app.kubernetes.io`)"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("label key `{key}` has an empty name"));
    }
    check_label_text(name).map_err(|rule| format!("label key `{key}`: name {rule}"))
}

/// Kubernetes label value: empty, or 1-63 alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_label_text(value).map_err(|rule| format!("label value `{value}` {rule}"))
}

fn check_label_text(s: &str) -> Result<(), &'static str> {
    if s.len() > 63 {
        return Err("is longer than 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may only contain letters, digits, `-`, `_` and `.`");
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
#[path = "document_tests.rs"]
mod tests;
