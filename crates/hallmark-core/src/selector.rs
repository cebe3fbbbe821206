//! Selectors: the attested facts about a workload (`unix:uid:1000`,
//! `docker:label:app:web`, `k8s:ns:payments`).
//!
//! Text form is `<type>:<key>:<value>`. The type names the attestor that
//! produces it; the key names the fact. Values may themselves contain `:`
//! (labels are `label:<k>:<v>`), so parsing splits on the first two colons only.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest selector accepted, in bytes.
pub const MAX_SELECTOR_LEN: usize = 1024;

/// The keys each selector type knows. A selector with another type or key
/// could never be produced by an attestor, so an entry using it would never
/// match: refusing it at creation saves the operator a silent miss.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "unix",
        &["uid", "gid", "user", "group", "path", "sha256", "container"],
    ),
    (
        "docker",
        &[
            "label",
            "image_id",
            "image",
            "name",
            "compose-project",
            "compose-service",
        ],
    ),
    (
        "k8s",
        &[
            "ns",
            "pod-name",
            "pod-uid",
            "container-name",
            "container-image",
            "pod-label",
        ],
    ),
    ("hallmark", &["context"]),
];

/// The selector every caller outside any container holds, and no caller in
/// one: `unix:container:none`. Pinning an entry with it keeps a host identity
/// (such as `unix:uid:0`) from matching root processes inside containers.
pub const HOST_SELECTOR: &str = "unix:container:none";

/// One variant per rule a selector must follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("is empty")]
    Empty,
    #[error("must have the form `<type>:<key>:<value>` (e.g. `unix:uid:1000`)")]
    MissingSeparator,
    #[error("has an unknown type `{0}` (known: unix, docker, k8s, hallmark)")]
    UnknownType(String),
    #[error("has an unknown key `{key}` for type `{ty}` (known: {known})")]
    UnknownKey {
        ty: String,
        key: String,
        known: String,
    },
    #[error("has an empty value")]
    EmptyValue,
    #[error("value `{0}` must be a decimal number")]
    NotNumeric(String),
    #[error("value must be an absolute path")]
    RelativePath,
    #[error("value must be 64 lowercase hex digits")]
    BadSha256,
    #[error("`label`/`pod-label` value must be `<name>:<value>`")]
    BadLabel,
    #[error("`unix:container` has the one value `none` (`unix:container:none`: the caller runs in no container)")]
    BadContainer,
    #[error("contains a control character")]
    ControlChar,
    #[error("is longer than {MAX_SELECTOR_LEN} bytes")]
    TooLong,
}

/// A validated selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    ty: String,
    /// `<key>:<value>`, everything after the type.
    value: String,
}

impl Selector {
    pub fn new(s: &str) -> Result<Self, SelectorError> {
        if s.is_empty() {
            return Err(SelectorError::Empty);
        }
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(SelectorError::ControlChar);
        }
        let (ty, rest) = s.split_once(':').ok_or(SelectorError::MissingSeparator)?;
        let (key, value) = rest
            .split_once(':')
            .ok_or(SelectorError::MissingSeparator)?;
        let keys = KNOWN
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, k)| *k)
            .ok_or_else(|| SelectorError::UnknownType(ty.to_string()))?;
        if !keys.contains(&key) {
            return Err(SelectorError::UnknownKey {
                ty: ty.to_string(),
                key: key.to_string(),
                known: keys.join(", "),
            });
        }
        if value.is_empty() {
            return Err(SelectorError::EmptyValue);
        }
        match key {
            "uid" | "gid" if value.parse::<u32>().is_err() => {
                return Err(SelectorError::NotNumeric(value.to_string()));
            }
            "path" if !value.starts_with('/') => return Err(SelectorError::RelativePath),
            "sha256"
                if value.len() != 64
                    || !value
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                return Err(SelectorError::BadSha256);
            }
            "container" if ty == "unix" && value != "none" => {
                return Err(SelectorError::BadContainer);
            }
            "label" | "pod-label" => match value.split_once(':') {
                Some((k, _)) if !k.is_empty() => {}
                _ => return Err(SelectorError::BadLabel),
            },
            _ => {}
        }
        Ok(Selector {
            ty: ty.to_string(),
            value: rest.to_string(),
        })
    }

    /// Builds a selector from parts an attestor produced. Validates like
    /// [`Selector::new`].
    pub fn from_parts(ty: &str, key: &str, value: &str) -> Result<Self, SelectorError> {
        Self::new(&format!("{ty}:{key}:{value}"))
    }

    /// [`HOST_SELECTOR`] as a value.
    pub fn host() -> Self {
        Selector {
            ty: "unix".to_string(),
            value: "container:none".to_string(),
        }
    }

    /// Whether a selector says only who the caller is as a unix user
    /// (`unix:uid`, `unix:gid`, `unix:user`, `unix:group`): facts a process
    /// in a container shares with host processes of the same ids.
    pub fn is_user_only(&self) -> bool {
        self.ty == "unix"
            && ["uid:", "gid:", "user:", "group:"]
                .iter()
                .any(|k| self.value.starts_with(k))
    }

    /// The selector type (`unix`, `docker`, ...).
    pub fn ty(&self) -> &str {
        &self.ty
    }

    /// Everything after the type: `<key>:<value>`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ty, self.value)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Selector::new(&s).map_err(|e| serde::de::Error::custom(format!("selector `{s}` {e}")))
    }
}

/// The selectors attested for one workload; entries match by subset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorSet(BTreeSet<Selector>);

impl SelectorSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, s: Selector) {
        self.0.insert(s);
    }

    /// True when every selector of `required` is present here. An empty
    /// requirement matches nothing: an entry must say what it selects.
    pub fn satisfies(&self, required: &[Selector]) -> bool {
        !required.is_empty() && required.iter().all(|s| self.0.contains(s))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Selector> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        SelectorSet(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "unix:uid:1000",
            "unix:path:/usr/bin/python3",
            "docker:label:app:web",
            "docker:label:com.docker.compose.service:db:x",
            "k8s:ns:payments",
            "k8s:pod-label:tier:front",
            "hallmark:context:prod-eu",
            "unix:container:none",
        ] {
            let sel = Selector::new(s).unwrap();
            assert_eq!(sel.to_string(), s);
        }
        let sel = Selector::new("docker:label:app:web").unwrap();
        assert_eq!(sel.ty(), "docker");
        assert_eq!(sel.value(), "label:app:web");
    }

    #[test]
    fn each_rule_is_named() {
        use SelectorError::*;
        let cases: &[(&str, SelectorError)] = &[
            ("", Empty),
            ("unix", MissingSeparator),
            ("unix:uid", MissingSeparator),
            ("unix:uid:", EmptyValue),
            ("unix:uid:abc", NotNumeric("abc".into())),
            ("unix:path:bin/sh", RelativePath),
            ("unix:sha256:ABC", BadSha256),
            ("unix:container:docker", BadContainer),
            ("unix:container:", EmptyValue),
            ("docker:label:app", BadLabel),
            ("docker:label::x", BadLabel),
            ("unix:uid:1\n", ControlChar),
            ("aws:region:eu", UnknownType("aws".into())),
        ];
        for (input, want) in cases {
            assert_eq!(Selector::new(input).unwrap_err(), *want, "input {input:?}");
        }
        assert!(matches!(
            Selector::new("unix:pid:1").unwrap_err(),
            UnknownKey { .. }
        ));
        assert_eq!(
            Selector::new(&format!("unix:path:/{}", "a".repeat(MAX_SELECTOR_LEN))).unwrap_err(),
            TooLong
        );
    }

    #[test]
    fn subset_matching() {
        let set: SelectorSet = ["unix:uid:1000", "unix:gid:1000", "unix:user:alice"]
            .iter()
            .map(|s| Selector::new(s).unwrap())
            .collect();
        let uid = Selector::new("unix:uid:1000").unwrap();
        let gid = Selector::new("unix:gid:1000").unwrap();
        let other = Selector::new("unix:uid:1001").unwrap();
        assert!(set.satisfies(std::slice::from_ref(&uid)));
        assert!(set.satisfies(&[uid.clone(), gid]));
        assert!(!set.satisfies(&[uid, other]));
        assert!(!set.satisfies(&[]));
    }

    #[test]
    fn host_selector_and_user_only_selectors() {
        assert_eq!(Selector::host(), Selector::new(HOST_SELECTOR).unwrap());
        assert_eq!(Selector::host().to_string(), HOST_SELECTOR);
        for (s, user_only) in [
            ("unix:uid:0", true),
            ("unix:gid:0", true),
            ("unix:user:root", true),
            ("unix:group:root", true),
            ("unix:path:/usr/bin/x", false),
            ("unix:container:none", false),
            ("docker:label:uid:0", false),
            ("hallmark:context:uid", false),
        ] {
            assert_eq!(Selector::new(s).unwrap().is_user_only(), user_only, "{s}");
        }
    }
}
