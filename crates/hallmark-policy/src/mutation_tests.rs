//! The fuzz target's properties on deterministic mutations of valid
//! documents, so `cargo test` checks them on every run.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use crate::{parse, to_yaml, Attributes, DecidedBy, Outcome, Policy, Protocol};

const SEED: &str = r#"groups:
  web:
    - selector: docker:label:app:web
  payments-db:
    - spiffe_id: spiffe://example.org/payments/db/*
    - namespace: payments
      labels: {tier: db}
      match_expressions:
        - {key: env, operator: NotIn, values: [dev]}
  corp:
    - cidr: 10.8.0.0/16
rules:
  - name: web-to-db
    from: [web, corp]
    to: [payments-db]
    protocol: tcp
    ports: ["5432", "8000-8100"]
    action: allow
    mode: enforce
    priority: 100
  - {name: watch, from: [any], to: [any], action: deny, mode: watch, priority: 7}
default: deny
"#;

/// Pieces worth splicing in: syntax, keywords and near misses.
const PIECES: &[&str] = &[
    "*",
    "-",
    " ",
    ":",
    "{",
    "}",
    "[",
    "]",
    "0",
    "/",
    "\n",
    "\n  ",
    "'",
    "\"",
    "#",
    "&a ",
    "*a",
    "any",
    "deny",
    "watch",
    "udp",
    "65536",
    "9-1",
    "In",
    "Exists",
    "~",
    "null",
    "spiffe://",
    "::",
    "/33",
    "- ",
    "name: x",
    "ports: []",
    "\r",
    "é",
];

#[test]
fn mutated_documents_never_panic_and_round_trip() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let probes = [
        Attributes::default(),
        Attributes::spiffe_id("spiffe://example.org/payments/db/main"),
        Attributes::address("10.8.1.1".parse().unwrap()),
        Attributes {
            selectors: vec!["docker:label:app:web".into()],
            namespace: "payments".into(),
            labels: [("tier".to_string(), "db".to_string())].into(),
            ..Attributes::default()
        },
    ];
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut text: Vec<char> = SEED.chars().collect();
        for _ in 0..1 + next(3) {
            let at = next(text.len() + 1);
            match next(3) {
                0 if at < text.len() => {
                    let end = (at + 1 + next(6)).min(text.len());
                    text.drain(at..end);
                }
                _ => {
                    let piece = PIECES[next(PIECES.len())];
                    text.splice(at..at, piece.chars());
                }
            }
        }
        let text: String = text.into_iter().collect();
        let lines = 1 + text.replace("\r\n", "\n").matches(['\n', '\r']).count();
        let parsed = match parse("m.yaml", &text) {
            Err(e) => {
                refused += 1;
                assert!(!e.errors.is_empty());
                for d in e.errors.iter().chain(&e.warnings) {
                    assert!((1..=lines).contains(&d.line), "{d} in\n{text}");
                }
                continue;
            }
            Ok(p) => p,
        };
        accepted += 1;
        let written = to_yaml(&parsed.document);
        let again = parse("w.yaml", &written)
            .unwrap_or_else(|e| panic!("{e}\nwritten:\n{written}\nfrom:\n{text}"));
        assert_eq!(again.document, parsed.document, "{written}");
        let p = Policy::compile(&parsed.document);
        for from in &probes {
            for to in &probes {
                let v = p.decide(&p.groups_of(from), &p.groups_of(to), Protocol::Tcp, 5432);
                assert_ne!(v.outcome, Outcome::NoDecision);
                if let DecidedBy::Rule { name, .. } = &v.decided_by {
                    assert!(parsed.document.rules.iter().any(|r| r.name == **name));
                }
            }
        }
    }
    // The mutations reached both sides of the parser.
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}
