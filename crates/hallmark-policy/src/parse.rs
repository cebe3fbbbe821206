//! Reading a policy document from YAML text: every error found is
//! collected with its line before the document is refused, and groups that
//! can never match are reported as warnings.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hallmark_core::Selector;

use crate::diagnostic::{Diagnostic, PolicyErrors, Severity, Subject};
use crate::document::{
    check_label_key, check_label_value, check_name, Action, Block, Cidr, Group, ImagePattern,
    MatchExpression, Mode, Operator, PolicyDocument, PortRange, ProtocolMatch, Rule, SpiffePattern,
    ANY_GROUP, DEFAULT_PRIORITY,
};
use crate::yaml::{self, Node, Value};

/// An accepted document and the warnings about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub document: PolicyDocument,
    pub warnings: Vec<Diagnostic>,
}

const TOP_KEYS: &[&str] = &["groups", "rules", "default"];
const BLOCK_KEYS: &[&str] = &[
    "spiffe_id",
    "selector",
    "namespace",
    "labels",
    "match_expressions",
    "image",
    "context",
    "node",
    "cidr",
];
const EXPRESSION_KEYS: &[&str] = &["key", "operator", "values"];
const RULE_KEYS: &[&str] = &[
    "name", "from", "to", "protocol", "ports", "action", "mode", "priority",
];

/// Parses and validates a policy document. `file` names the source in
/// messages (`policy.yaml:12: rule `web-to-db`: ...`).
pub fn parse(file: &str, text: &str) -> Result<Parsed, PolicyErrors> {
    let mut r = Reader {
        file,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let document = match yaml::parse(text) {
        Err(e) => {
            r.error(e.line, &Subject::Document, e.message);
            None
        }
        Ok(None) => {
            r.error(
                1,
                &Subject::Document,
                "the document is empty (a policy has `groups`, `rules` and `default`)",
            );
            None
        }
        Ok(Some(root)) => r.document(&root),
    };
    match document {
        Some(document) if r.errors.is_empty() => Ok(Parsed {
            document,
            warnings: r.warnings,
        }),
        _ => Err(PolicyErrors {
            errors: r.errors,
            warnings: r.warnings,
        }),
    }
}

struct Reader<'f> {
    file: &'f str,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Reader<'_> {
    fn push(&mut self, severity: Severity, line: usize, subject: &Subject, message: String) {
        let d = Diagnostic {
            severity,
            file: self.file.to_string(),
            line,
            subject: subject.clone(),
            message,
        };
        match severity {
            Severity::Error => self.errors.push(d),
            Severity::Warning => self.warnings.push(d),
        }
    }

    fn error(&mut self, line: usize, subject: &Subject, message: impl Into<String>) {
        self.push(Severity::Error, line, subject, message.into());
    }

    fn warn(&mut self, line: usize, subject: &Subject, message: impl Into<String>) {
        self.push(Severity::Warning, line, subject, message.into());
    }

    /// The entries of a map whose keys are all in `allowed` (or any key if
    /// `allowed` is empty), each key once.
    fn map<'n>(
        &mut self,
        node: &'n Node,
        subject: &Subject,
        what: &str,
        allowed: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node)>> {
        let Value::Mapping(entries) = &node.value else {
            self.error(
                node.line,
                subject,
                format!("{what} must be a map, found {}", node.kind()),
            );
            return None;
        };
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Value::Scalar { text: key, .. } = &k.value else {
                continue; // the YAML reader accepts scalar keys only
            };
            if let Some(first) = seen.get(key.as_str()) {
                self.error(
                    k.line,
                    subject,
                    format!("duplicate key `{key}` in {what} (first at line {first})"),
                );
                continue;
            }
            seen.insert(key, k.line);
            if !allowed.is_empty() && !allowed.contains(&key.as_str()) {
                self.error(
                    k.line,
                    subject,
                    format!(
                        "unknown key `{key}` in {what} (known: {})",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            out.push((key.as_str(), v));
        }
        Some(out)
    }

    fn list<'n>(&mut self, node: &'n Node, subject: &Subject, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Sequence(items) => Some(items),
            _ => {
                self.error(
                    node.line,
                    subject,
                    format!("{what} must be a list, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A non-null scalar's text.
    fn text(&mut self, node: &Node, subject: &Subject, what: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } if !node.is_null() => Some(text.clone()),
            _ => {
                self.error(
                    node.line,
                    subject,
                    format!("{what} must be a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A non-empty string; `check` refuses bad syntax with its reason.
    fn checked<T>(
        &mut self,
        node: &Node,
        subject: &Subject,
        what: &str,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(node, subject, what)?;
        match check(&text) {
            Ok(v) => Some(v),
            Err(rule) => {
                self.error(node.line, subject, format!("{what}: {rule}"));
                None
            }
        }
    }

    fn document(&mut self, root: &Node) -> Option<PolicyDocument> {
        let doc = Subject::Document;
        let top = self.map(root, &doc, "the document", TOP_KEYS)?;
        let mut document = PolicyDocument::default();
        let mut group_lines: BTreeMap<String, usize> = BTreeMap::new();
        let mut rules_node = None;
        for (key, value) in top {
            match key {
                "groups" => {
                    document.groups = self.groups(value, &mut group_lines);
                }
                "rules" => rules_node = Some(value),
                _ => {
                    if let Some(action) = self.keyword(value, &doc, "default", ACTIONS) {
                        document.default = action;
                    }
                }
            }
        }
        // Rules after groups, whatever the key order, so group references
        // can be checked.
        if let Some(node) = rules_node {
            document.rules = self.rules(node, &group_lines);
        }
        Some(document)
    }

    fn groups(&mut self, node: &Node, lines: &mut BTreeMap<String, usize>) -> Vec<Group> {
        let doc = Subject::Document;
        let Value::Mapping(entries) = &node.value else {
            self.error(
                node.line,
                &doc,
                format!(
                    "`groups` must be a map of group name to match blocks, found {}",
                    node.kind()
                ),
            );
            return Vec::new();
        };
        let mut groups = Vec::new();
        for (k, v) in entries {
            let Value::Scalar { text: name, .. } = &k.value else {
                continue;
            };
            let subject = Subject::Group(name.clone());
            if let Some(first) = lines.get(name) {
                self.error(
                    k.line,
                    &subject,
                    format!("duplicate group name (first defined at line {first})"),
                );
                continue;
            }
            lines.insert(name.clone(), k.line);
            if name == ANY_GROUP {
                self.error(
                    k.line,
                    &subject,
                    "`any` is reserved (it matches every endpoint) and cannot be defined",
                );
                continue;
            }
            if let Err(rule) = check_name(name) {
                self.error(k.line, &subject, format!("bad group name: {rule}"));
            }
            if let Some(group) = self.group(name, k.line, v, &subject) {
                groups.push(group);
            }
        }
        groups
    }

    fn group(&mut self, name: &str, line: usize, node: &Node, subject: &Subject) -> Option<Group> {
        let items = self.list(node, subject, "a group (a list of match blocks)")?;
        if items.is_empty() {
            self.error(
                line,
                subject,
                "a group needs at least one match block (use `any` for every endpoint)",
            );
            return None;
        }
        let mut blocks = Vec::new();
        let mut dead = 0;
        for item in items {
            let Some(block) = self.block(item, subject) else {
                continue;
            };
            if let Some(why) = contradiction(&block) {
                dead += 1;
                self.warn(
                    item.line,
                    subject,
                    format!("this block can never match: {why}"),
                );
            }
            blocks.push(block);
        }
        if dead == items.len() {
            self.warn(
                line,
                subject,
                "no endpoint can ever be a member: every block is contradictory",
            );
        }
        Some(Group {
            name: name.to_string(),
            blocks,
        })
    }

    fn block(&mut self, node: &Node, s: &Subject) -> Option<Block> {
        let entries = self.map(node, s, "a match block", BLOCK_KEYS)?;
        let mut b = Block::default();
        let errors_before = self.errors.len();
        for (key, v) in entries {
            match key {
                "spiffe_id" => b.spiffe_id = self.checked(v, s, "spiffe_id", SpiffePattern::parse),
                "selector" => {
                    b.selector = self.checked(v, s, "selector", |t| {
                        Selector::new(t).map_err(|e| format!("selector `{t}` {e}"))
                    })
                }
                "namespace" => b.namespace = self.checked(v, s, "namespace", nonblank),
                "context" => b.context = self.checked(v, s, "context", nonblank),
                "node" => b.node = self.checked(v, s, "node", nonblank),
                "image" => b.image = self.checked(v, s, "image", ImagePattern::parse),
                "cidr" => b.cidr = self.checked(v, s, "cidr", Cidr::parse),
                "labels" => b.labels = self.labels(v, s),
                _ => b.match_expressions = self.expressions(v, s),
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        if b.is_empty() {
            self.error(
                node.line,
                s,
                "empty match block would match every endpoint: use the group `any` in rules instead",
            );
            return None;
        }
        Some(b)
    }

    fn labels(&mut self, node: &Node, s: &Subject) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let Some(entries) = self.map(node, s, "labels", &[]) else {
            return labels;
        };
        if entries.is_empty() {
            self.error(node.line, s, "labels is empty (leave it out instead)");
        }
        for (key, v) in entries {
            if let Err(rule) = check_label_key(key) {
                self.error(v.line, s, rule);
                continue;
            }
            if let Some(value) = self.checked(v, s, &format!("label `{key}`"), |t| {
                check_label_value(t).map(|()| t.to_string())
            }) {
                labels.insert(key.to_string(), value);
            }
        }
        labels
    }

    fn expressions(&mut self, node: &Node, s: &Subject) -> Vec<MatchExpression> {
        let Some(items) = self.list(node, s, "match_expressions") else {
            return Vec::new();
        };
        if items.is_empty() {
            self.error(
                node.line,
                s,
                "match_expressions is empty (leave it out instead)",
            );
        }
        let mut out = Vec::new();
        for item in items {
            if let Some(e) = self.expression(item, s) {
                out.push(e);
            }
        }
        out
    }

    fn expression(&mut self, node: &Node, s: &Subject) -> Option<MatchExpression> {
        let entries = self.map(node, s, "a match expression", EXPRESSION_KEYS)?;
        let entries_have = (
            entries.iter().any(|(k, _)| *k == "key"),
            entries.iter().any(|(k, _)| *k == "operator"),
        );
        let (mut key, mut operator, mut values) = (None, None, None);
        for (k, v) in entries {
            match k {
                "key" => {
                    key = self.checked(v, s, "match expression key", |t| {
                        check_label_key(t).map(|()| t.to_string())
                    })
                }
                "operator" => operator = self.keyword(v, s, "operator", OPERATORS),
                _ => {
                    let items = self.list(v, s, "values")?;
                    let mut vs = Vec::new();
                    for item in items {
                        vs.push(self.checked(item, s, "value", |t| {
                            check_label_value(t).map(|()| t.to_string())
                        })?);
                    }
                    values = Some((v.line, vs));
                }
            }
        }
        let (Some(key), Some(operator)) = (key, operator) else {
            if entries_have.0 && entries_have.1 {
                return None; // already reported
            }
            self.error(
                node.line,
                s,
                "a match expression needs `key` and `operator` (In, NotIn, Exists, DoesNotExist)",
            );
            return None;
        };
        let values = match (operator, values) {
            (Operator::In | Operator::NotIn, Some((_, vs))) if !vs.is_empty() => vs,
            (Operator::In | Operator::NotIn, _) => {
                self.error(
                    node.line,
                    s,
                    format!(
                        "match expression on `{key}`: operator {} needs a non-empty `values` list",
                        operator.as_str()
                    ),
                );
                return None;
            }
            (Operator::Exists | Operator::DoesNotExist, None) => Vec::new(),
            (Operator::Exists | Operator::DoesNotExist, Some((line, _))) => {
                self.error(
                    line,
                    s,
                    format!(
                        "match expression on `{key}`: operator {} takes no `values`",
                        operator.as_str()
                    ),
                );
                return None;
            }
        };
        Some(MatchExpression {
            key,
            operator,
            values,
        })
    }

    fn rules(&mut self, node: &Node, groups: &BTreeMap<String, usize>) -> Vec<Rule> {
        let Some(items) = self.list(node, &Subject::Document, "`rules`") else {
            return Vec::new();
        };
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut rules = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(rule) = self.rule(i, item, groups, &mut names) {
                rules.push(rule);
            }
        }
        rules
    }

    fn rule(
        &mut self,
        index: usize,
        node: &Node,
        groups: &BTreeMap<String, usize>,
        names: &mut HashMap<String, usize>,
    ) -> Option<Rule> {
        let mut s = Subject::Rule(format!("#{}", index + 1));
        // The name first, so every other message names the rule.
        let name_node = match &node.value {
            Value::Mapping(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == "name"))
                .map(|(_, v)| v),
            _ => None,
        };
        let name = name_node
            .and_then(|v| self.checked(v, &s, "name", |t| check_name(t).map(|()| t.to_string())));
        if let Some(name) = &name {
            s = Subject::Rule(name.clone());
        }
        let errors_before = self.errors.len();
        let entries = self.map(node, &s, "a rule", RULE_KEYS)?;
        if name_node.is_none() {
            self.error(node.line, &s, "a rule needs a `name`");
        }
        if let Some(name) = &name {
            if let Some(first) = names.get(name) {
                self.error(
                    node.line,
                    &s,
                    format!("duplicate rule name (first defined at line {first})"),
                );
            } else {
                names.insert(name.clone(), node.line);
            }
        }
        let mut rule = Rule {
            name: name.clone().unwrap_or_default(),
            from: Vec::new(),
            to: Vec::new(),
            protocol: ProtocolMatch::Any,
            ports: Vec::new(),
            action: Action::Allow,
            mode: Mode::Enforce,
            priority: DEFAULT_PRIORITY,
        };
        let mut action = None;
        let (mut from, mut to) = (None, None);
        let has_from = entries.iter().any(|(k, _)| *k == "from");
        let has_to = entries.iter().any(|(k, _)| *k == "to");
        for &(key, v) in &entries {
            match key {
                "name" => {}
                "from" => from = self.group_refs(v, &s, "from", groups),
                "to" => to = self.group_refs(v, &s, "to", groups),
                "protocol" => {
                    if let Some(p) = self.keyword(v, &s, "protocol", PROTOCOLS) {
                        rule.protocol = p;
                    }
                }
                "ports" => rule.ports = self.ports(v, &s),
                "action" => action = self.keyword(v, &s, "action", ACTIONS),
                "mode" => {
                    if let Some(m) = self.keyword(v, &s, "mode", MODES) {
                        rule.mode = m;
                    }
                }
                _ => {
                    if let Some(p) = self.checked(v, &s, "priority", |t| {
                        t.parse::<u32>()
                            .ok()
                            .filter(|_| t.bytes().all(|b| b.is_ascii_digit()))
                            .ok_or_else(|| format!("`{t}` is not a whole number 0-{}", u32::MAX))
                    }) {
                        rule.priority = p;
                    }
                }
            }
        }
        for (what, given) in [("from", has_from), ("to", has_to)] {
            if !given {
                self.error(
                    node.line,
                    &s,
                    format!("a rule needs `{what}` (a list of groups)"),
                );
            }
        }
        match action {
            Some(a) => rule.action = a,
            None if !entries.iter().any(|(k, _)| *k == "action") => {
                self.error(node.line, &s, "a rule needs an `action` (allow or deny)")
            }
            None => {}
        }
        if self.errors.len() > errors_before || name.is_none() {
            return None;
        }
        rule.from = from?;
        rule.to = to?;
        Some(rule)
    }

    /// A non-empty list of defined group names (or `any`).
    fn group_refs(
        &mut self,
        node: &Node,
        s: &Subject,
        what: &str,
        groups: &BTreeMap<String, usize>,
    ) -> Option<Vec<String>> {
        let items = self.list(node, s, &format!("`{what}` (a list of groups)"))?;
        if items.is_empty() {
            self.error(node.line, s, format!("empty group list in {what}"));
            return None;
        }
        let mut names = Vec::new();
        for item in items {
            let name = self.text(item, s, &format!("a group name in {what}"))?;
            if name != ANY_GROUP && !groups.contains_key(&name) {
                self.error(item.line, s, format!("unknown group `{name}` in {what}"));
                continue;
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Some(names)
    }

    fn ports(&mut self, node: &Node, s: &Subject) -> Vec<PortRange> {
        let Some(items) = self.list(node, s, "ports") else {
            return Vec::new();
        };
        if items.is_empty() {
            self.error(node.line, s, "ports is empty (leave it out for every port)");
        }
        let mut ports = Vec::new();
        for item in items {
            if let Some(p) = self.checked(item, s, "ports", PortRange::parse) {
                ports.push(p);
            }
        }
        ports
    }

    fn keyword<T: Copy>(
        &mut self,
        node: &Node,
        s: &Subject,
        what: &str,
        words: &[(&str, T)],
    ) -> Option<T> {
        let text = self.text(node, s, what)?;
        match words.iter().find(|(w, _)| *w == text) {
            Some((_, v)) => Some(*v),
            None => {
                let known: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
                self.error(
                    node.line,
                    s,
                    format!("{what} `{text}` is not one of {}", known.join(", ")),
                );
                None
            }
        }
    }
}

const ACTIONS: &[(&str, Action)] = &[("allow", Action::Allow), ("deny", Action::Deny)];
const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("watch", Mode::Watch)];
const PROTOCOLS: &[(&str, ProtocolMatch)] = &[
    ("tcp", ProtocolMatch::Tcp),
    ("udp", ProtocolMatch::Udp),
    ("any", ProtocolMatch::Any),
];
const OPERATORS: &[(&str, Operator)] = &[
    ("In", Operator::In),
    ("NotIn", Operator::NotIn),
    ("Exists", Operator::Exists),
    ("DoesNotExist", Operator::DoesNotExist),
];

fn nonblank(t: &str) -> Result<String, String> {
    if t.trim().is_empty() {
        Err("is empty".to_string())
    } else {
        Ok(t.to_string())
    }
}

/// Why no endpoint can satisfy a block's label conditions, if none can.
///
/// For each key the candidate states are: absent, each value the block
/// mentions, and some other value. The block is contradictory when, for
/// some key, no candidate satisfies every condition on that key (the
/// conditions on different keys are independent).
pub(crate) fn contradiction(b: &Block) -> Option<String> {
    let mut keys: BTreeSet<&str> = b.labels.keys().map(String::as_str).collect();
    keys.extend(b.match_expressions.iter().map(|m| m.key.as_str()));
    for key in keys {
        let mut mentioned: BTreeSet<&str> = BTreeSet::new();
        mentioned.extend(b.labels.get(key).map(String::as_str));
        for m in b.match_expressions.iter().filter(|m| m.key == key) {
            mentioned.extend(m.values.iter().map(String::as_str));
        }
        // None = absent; Some(None) = a value not mentioned.
        let mut states: Vec<Option<Option<&str>>> = vec![None, Some(None)];
        states.extend(mentioned.iter().map(|v| Some(Some(*v))));
        let holds = |state: Option<Option<&str>>| {
            b.labels
                .get(key)
                .is_none_or(|want| state == Some(Some(want.as_str())))
                && b.match_expressions
                    .iter()
                    .filter(|m| m.key == key)
                    .all(|m| {
                        let has =
                            |s: Option<&str>| s.is_some_and(|v| m.values.iter().any(|w| w == v));
                        match (m.operator, state) {
                            (Operator::In, Some(v)) => has(v),
                            (Operator::NotIn, Some(v)) => !has(v),
                            (Operator::NotIn, None) => true,
                            (Operator::Exists, s) => s.is_some(),
                            (Operator::DoesNotExist, s) => s.is_none(),
                            (Operator::In, None) => false,
                        }
                    })
        };
        if !states.into_iter().any(holds) {
            return Some(format!(
                "its conditions on label `{key}` contradict each other"
            ));
        }
    }
    None
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
