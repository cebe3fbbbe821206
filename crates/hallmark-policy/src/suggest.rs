//! Least-privilege policy from observed traffic, and writing documents
//! back as YAML.
//!
//! [`suggest`] groups each end of every observed flow by what it is (its
//! SPIFFE ID, its service or its namespace), allows exactly the acceptor
//! ports seen between each pair of groups, and ends with a catch-all
//! would-deny, all in watch mode: applying the suggestion changes no
//! enforcement, and traffic of a new kind shows up as `would-deny`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use hallmark_core::{Selector, SpiffeId};

use crate::attributes::Attributes;
use crate::document::{
    check_label_key, check_label_value, Action, Block, Cidr, Group, ImagePattern, Mode,
    PolicyDocument, PortRange, Protocol, ProtocolMatch, Rule, ANY_GROUP, DEFAULT_PRIORITY,
    MAX_NAME_LEN,
};

/// Traffic seen between two endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The initiator.
    pub from: Attributes,
    /// The acceptor.
    pub to: Attributes,
    pub protocol: Protocol,
    /// The acceptor's port (the initiator's is ephemeral and never used).
    pub port: u16,
    /// How many flows were seen.
    pub flows: u64,
}

/// What a suggested group stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuggestBy {
    /// One group per SPIFFE ID (an endpoint with several: the first in
    /// sort order).
    SpiffeId,
    /// One group per service: the Compose service
    /// (`docker:compose-service:NAME`), else the `app.kubernetes.io/name`
    /// or `app` label within the namespace, else the image.
    Service,
    /// One group per namespace.
    Namespace,
}

/// Name of the final catch-all rule of a suggestion.
pub const CATCH_ALL_RULE: &str = "unobserved-traffic";

/// Suggests a watch-mode policy allowing what `observed` shows.
///
/// An end that has nothing to group by (no SPIFFE ID, service or
/// namespace, as `by` asks) is grouped by its address alone (`cidr` of one
/// host); an end with neither is skipped. A (group pair, protocol, port)
/// seen in fewer than `min_flows` flows in total gets no rule, so it would
/// be would-deny. Group and rule names are derived from what they group,
/// made valid names, and made unique with a `-2`, `-3`... suffix; groups
/// and rules are listed by name, the catch-all last.
pub fn suggest(observed: &[Observed], min_flows: u64, by: SuggestBy) -> PolicyDocument {
    // Group key (kind and value, sortable) -> (name base, block).
    let mut keys: BTreeMap<String, (String, Block)> = BTreeMap::new();
    let mut traffic: BTreeMap<(String, String, Protocol), BTreeMap<u16, u64>> = BTreeMap::new();
    for o in observed {
        let (Some(from), Some(to)) = (group_key(&o.from, by), group_key(&o.to, by)) else {
            continue;
        };
        if o.port == 0 {
            continue;
        }
        let seen = traffic
            .entry((from.0.clone(), to.0.clone(), o.protocol))
            .or_default()
            .entry(o.port)
            .or_default();
        *seen = seen.saturating_add(o.flows);
        keys.entry(from.0).or_insert((from.1, from.2));
        keys.entry(to.0).or_insert((to.1, to.2));
    }
    traffic.retain(|_, ports| {
        ports.retain(|_, flows| *flows >= min_flows);
        !ports.is_empty()
    });

    let used: BTreeSet<&String> = traffic.keys().flat_map(|(f, t, _)| [f, t]).collect();
    let mut taken: BTreeSet<String> = BTreeSet::from([ANY_GROUP.to_string()]);
    let mut names: BTreeMap<&String, String> = BTreeMap::new();
    let mut groups = Vec::new();
    for key in used {
        let Some((base, block)) = keys.get(key) else {
            continue;
        };
        let name = unique(base, &mut taken);
        names.insert(key, name.clone());
        groups.push(Group {
            name,
            blocks: vec![block.clone()],
        });
    }

    let mut rule_names = BTreeSet::from([CATCH_ALL_RULE.to_string()]);
    let mut rules = Vec::new();
    for ((f, t, protocol), ports) in &traffic {
        let (Some(from), Some(to)) = (names.get(f), names.get(t)) else {
            continue;
        };
        let proto = ProtocolMatch::from(*protocol);
        let name = unique(
            &format!("{from}-to-{to}-{}", proto.as_str()),
            &mut rule_names,
        );
        rules.push(Rule {
            name,
            from: vec![from.clone()],
            to: vec![to.clone()],
            protocol: proto,
            ports: ports
                .keys()
                .filter_map(|p| PortRange::single(*p).ok())
                .collect(),
            action: Action::Allow,
            mode: Mode::Watch,
            priority: DEFAULT_PRIORITY,
        });
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    rules.push(Rule {
        name: CATCH_ALL_RULE.to_string(),
        from: vec![ANY_GROUP.to_string()],
        to: vec![ANY_GROUP.to_string()],
        protocol: ProtocolMatch::Any,
        ports: Vec::new(),
        action: Action::Deny,
        mode: Mode::Watch,
        priority: u32::MAX,
    });
    PolicyDocument {
        groups,
        rules,
        default: Action::Allow,
    }
}

/// The group an endpoint falls in: (sort key, name base, block).
fn group_key(e: &Attributes, by: SuggestBy) -> Option<(String, String, Block)> {
    let primary = match by {
        SuggestBy::SpiffeId => e
            .spiffe_ids
            .iter()
            .filter_map(|id| SpiffeId::new_workload(id).ok())
            .min()
            .map(|id| {
                let base = id.as_str().trim_start_matches("spiffe://").to_string();
                let block = Block {
                    spiffe_id: Some(crate::document::SpiffePattern::exact(&id)),
                    ..Block::default()
                };
                (format!("spiffe\0{id}"), base, block)
            }),
        SuggestBy::Namespace => (!e.namespace.trim().is_empty()).then(|| {
            let block = Block {
                namespace: Some(e.namespace.clone()),
                ..Block::default()
            };
            (format!("ns\0{}", e.namespace), e.namespace.clone(), block)
        }),
        SuggestBy::Service => service(e),
    };
    primary.or_else(|| {
        let cidr = Cidr::host(e.addr?);
        let block = Block {
            cidr: Some(cidr),
            ..Block::default()
        };
        Some((format!("ip\0{cidr}"), format!("ip-{cidr}"), block))
    })
}

fn service(e: &Attributes) -> Option<(String, String, Block)> {
    let compose = e.selectors.iter().find_map(|s| {
        let name = s.strip_prefix("docker:compose-service:")?;
        Selector::new(s).ok().map(|sel| (name, sel))
    });
    if let Some((name, sel)) = compose {
        let block = Block {
            selector: Some(sel),
            ..Block::default()
        };
        return Some((format!("compose\0{name}"), name.to_string(), block));
    }
    for key in ["app.kubernetes.io/name", "app"] {
        let Some(app) = e.labels.get(key) else {
            continue;
        };
        if app.is_empty() || check_label_key(key).is_err() || check_label_value(app).is_err() {
            continue;
        }
        let ns = e.namespace.trim();
        let block = Block {
            namespace: (!ns.is_empty()).then(|| e.namespace.clone()),
            labels: BTreeMap::from([(key.to_string(), app.clone())]),
            ..Block::default()
        };
        let base = if ns.is_empty() {
            app.clone()
        } else {
            format!("{ns}-{app}")
        };
        return Some((format!("app\0{}\0{key}\0{app}", e.namespace), base, block));
    }
    let image = ImagePattern::parse(&e.image).ok()?;
    let base = e.image.clone();
    let block = Block {
        image: Some(image),
        ..Block::default()
    };
    Some((format!("image\0{}", e.image), base, block))
}

/// A valid name from `base` (lowercase; runs of other characters become
/// one `-`), not yet in `taken`, and records it.
fn unique(base: &str, taken: &mut BTreeSet<String>) -> String {
    let mut name = String::new();
    for c in base.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let mut name = name
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .trim_end_matches('-')
        .to_string();
    if name.is_empty() {
        name = "group".to_string();
    }
    // Room for a suffix.
    name.truncate(MAX_NAME_LEN - 8);
    let mut candidate = name.clone();
    let mut n = 1u32;
    while taken.contains(&candidate) {
        n += 1;
        candidate = format!("{name}-{n}");
    }
    taken.insert(candidate.clone());
    candidate
}

/// Writes a document as YAML that [`crate::parse`] reads back to the same
/// document. Every string is double-quoted, so no value is ever read as
/// another type.
pub fn to_yaml(doc: &PolicyDocument) -> String {
    let mut out = String::new();
    if doc.groups.is_empty() {
        out.push_str("groups: {}\n");
    } else {
        out.push_str("groups:\n");
    }
    for g in &doc.groups {
        let _ = writeln!(out, "  {}:", quote(&g.name));
        for b in &g.blocks {
            block(&mut out, b);
        }
    }
    if doc.rules.is_empty() {
        out.push_str("rules: []\n");
    } else {
        out.push_str("rules:\n");
    }
    for r in &doc.rules {
        let _ = writeln!(out, "  - name: {}", quote(&r.name));
        let _ = writeln!(out, "    from: {}", flow_list(r.from.iter()));
        let _ = writeln!(out, "    to: {}", flow_list(r.to.iter()));
        let _ = writeln!(out, "    protocol: {}", r.protocol.as_str());
        if !r.ports.is_empty() {
            let ports: Vec<String> = r.ports.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "    ports: {}", flow_list(ports.iter()));
        }
        let _ = writeln!(out, "    action: {}", r.action.as_str());
        let _ = writeln!(out, "    mode: {}", r.mode.as_str());
        let _ = writeln!(out, "    priority: {}", r.priority);
    }
    let _ = writeln!(out, "default: {}", doc.default.as_str());
    out
}

fn block(out: &mut String, b: &Block) {
    let mut lines: Vec<String> = Vec::new();
    let mut scalar = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            lines.push(format!("{key}: {}", quote(&v)));
        }
    };
    scalar("spiffe_id", b.spiffe_id.as_ref().map(ToString::to_string));
    scalar("selector", b.selector.as_ref().map(ToString::to_string));
    scalar("namespace", b.namespace.clone());
    scalar("image", b.image.as_ref().map(ToString::to_string));
    scalar("context", b.context.clone());
    scalar("node", b.node.clone());
    scalar("cidr", b.cidr.as_ref().map(ToString::to_string));
    if !b.labels.is_empty() {
        lines.push("labels:".to_string());
        for (k, v) in &b.labels {
            lines.push(format!("  {}: {}", quote(k), quote(v)));
        }
    }
    if !b.match_expressions.is_empty() {
        lines.push("match_expressions:".to_string());
        for m in &b.match_expressions {
            lines.push(format!("  - key: {}", quote(&m.key)));
            lines.push(format!("    operator: {}", m.operator.as_str()));
            if !m.values.is_empty() {
                lines.push(format!("    values: {}", flow_list(m.values.iter())));
            }
        }
    }
    for (i, line) in lines.iter().enumerate() {
        let lead = if i == 0 { "    - " } else { "      " };
        let _ = writeln!(out, "{lead}{line}");
    }
}

fn flow_list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let quoted: Vec<String> = items.map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A YAML double-quoted scalar.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[path = "suggest_tests.rs"]
mod tests;
