//! `hallmark_policy::parse` on arbitrary text: policy files come from
//! operators and from `policy apply` requests.
//!
//! Whatever the text: no panic, the same answer twice, and every error or
//! warning names the file and a line of the input. An accepted document
//! writes (`to_yaml`) to text that parses back to the same document with
//! the same warnings' count, compiles, and decides every question between
//! a set of probe endpoints with a verdict that agrees with the rule or
//! default it names.

#![no_main]

use std::net::IpAddr;

use hallmark_policy::{
    parse, to_yaml, Action, Attributes, DecidedBy, Mode, Outcome, Policy, Protocol,
};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.yaml";

fn probes() -> Vec<Attributes> {
    let addr = |s: &str| s.parse::<IpAddr>().ok();
    vec![
        Attributes::default(),
        Attributes {
            spiffe_ids: vec!["spiffe://example.org/ns/shop/sa/web".into()],
            selectors: vec!["docker:label:app:web".into(), "unix:uid:1000".into()],
            namespace: "shop".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            image: "docker.io/library/nginx:1.25".into(),
            context: "prod".into(),
            node: "n1".into(),
            addr: addr("10.8.0.2"),
        },
        Attributes::spiffe_id("spiffe://example.org/payments/db/x"),
        Attributes {
            addr: addr("fd00::1"),
            ..Attributes::default()
        },
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = parse(FILE, text);
    assert_eq!(first, parse(FILE, text), "not deterministic");
    // A line of the input, or the one just past its end (YAML breaks lines
    // at `\n`, `\r\n` and a lone `\r`).
    let last_line = 1 + text.replace("\r\n", "\n").matches(['\n', '\r']).count();
    let parsed = match first {
        Err(e) => {
            assert!(!e.errors.is_empty(), "refused without an error");
            for d in e.errors.iter().chain(&e.warnings) {
                assert_eq!(d.file, FILE);
                assert!(
                    (1..=last_line).contains(&d.line),
                    "{d} of {last_line} lines"
                );
                assert!(!d.message.is_empty());
            }
            return;
        }
        Ok(p) => p,
    };
    for d in &parsed.warnings {
        assert!(
            (1..=last_line).contains(&d.line),
            "{d} of {last_line} lines"
        );
    }

    let doc = &parsed.document;
    let written = to_yaml(doc);
    let again = parse("written.yaml", &written)
        .unwrap_or_else(|e| panic!("written document refused: {e}\n{written}\nfrom {text:?}"));
    assert_eq!(
        &again.document, doc,
        "round trip changed the document\n{written}"
    );
    assert_eq!(again.warnings.len(), parsed.warnings.len(), "{written}");

    let policy = Policy::compile(doc);
    let sets: Vec<_> = probes().iter().map(|e| policy.groups_of(e)).collect();
    for from in &sets {
        assert!(from.contains(0), "every endpoint is in `any`");
        for to in &sets {
            for (protocol, port) in [
                (Protocol::Tcp, 1),
                (Protocol::Udp, 53),
                (Protocol::Tcp, 65535),
            ] {
                let v = policy.decide(from, to, protocol, port);
                let (action, mode) = match &v.decided_by {
                    DecidedBy::Rule { name, mode, action } => {
                        let rule = doc.rules.iter().find(|r| r.name.as_str() == &**name);
                        let rule = rule.unwrap_or_else(|| panic!("verdict names no rule: {v:?}"));
                        assert_eq!((rule.action, rule.mode), (*action, *mode));
                        assert!(rule.protocol.matches(protocol));
                        assert!(
                            rule.ports.is_empty() || rule.ports.iter().any(|p| p.contains(port))
                        );
                        (*action, Some(*mode))
                    }
                    DecidedBy::Default { action } => {
                        assert_eq!(*action, doc.default);
                        (*action, None)
                    }
                    DecidedBy::Nothing => panic!("decide gave no decision"),
                };
                match v.outcome {
                    Outcome::Denied => {
                        assert_eq!(action, Action::Deny);
                        assert_ne!(mode, Some(Mode::Watch));
                    }
                    Outcome::WouldDeny => {
                        assert_eq!((action, mode), (Action::Deny, Some(Mode::Watch)))
                    }
                    Outcome::Allowed => assert_eq!(action, Action::Allow),
                    Outcome::NoDecision => panic!("decide gave no-decision"),
                }
            }
        }
    }
});
