#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::net::IpAddr;

use crate::{parse, Attributes, Policy};

/// Every kind of condition, one group each (and a few combinations).
const GROUPS: &str = r#"
groups:
  exact-id:
    - spiffe_id: spiffe://example.org/ns/payments/sa/db
  below-payments:
    - spiffe_id: spiffe://example.org/ns/payments/*
  any-ns-db:
    - spiffe_id: spiffe://example.org/ns/*/sa/db
  web-star:
    - spiffe_id: spiffe://example.org/sa/web-*
  whole-td:
    - spiffe_id: spiffe://example.org/*
  web-selector:
    - selector: docker:label:app:web
  payments-ns:
    - namespace: payments
  db-tier:
    - namespace: payments
      labels: {tier: db}
  tier-in:
    - match_expressions:
        - {key: tier, operator: In, values: [db, cache]}
  tier-notin:
    - match_expressions:
        - {key: tier, operator: NotIn, values: [db]}
  tier-exists:
    - match_expressions:
        - {key: tier, operator: Exists}
  tier-absent:
    - match_expressions:
        - {key: tier, operator: DoesNotExist}
  nginx:
    - image: docker.io/library/nginx:1.25
  any-nginx:
    - image: "*/nginx:*"
  prod:
    - context: prod
  node-a:
    - node: node-a
  corp4:
    - cidr: 10.8.0.0/16
  corp6:
    - cidr: fd00:8::/32
  either:
    - namespace: billing
    - selector: docker:label:app:web
rules: []
"#;

fn policy() -> Policy {
    Policy::compile(&parse("groups.yaml", GROUPS).unwrap().document)
}

fn groups(p: &Policy, e: &Attributes) -> Vec<String> {
    p.names_in(&p.groups_of(e)).map(str::to_string).collect()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn workload() -> Attributes {
    Attributes {
        spiffe_ids: vec!["spiffe://example.org/ns/payments/sa/db".into()],
        selectors: vec!["docker:label:app:db".into(), "unix:uid:999".into()],
        namespace: "payments".into(),
        labels: [("tier".to_string(), "db".to_string())].into(),
        image: "docker.io/library/nginx:1.25".into(),
        context: "prod".into(),
        node: "node-a".into(),
        addr: ip("10.8.3.4"),
    }
}

#[test]
fn membership_table() {
    let p = policy();
    let id = |s: &str| Attributes::spiffe_id(s);
    let cases: Vec<(&str, Attributes, Vec<&str>)> = vec![
        (
            "a workload matching many conditions",
            workload(),
            vec![
                "any",
                "exact-id",
                "below-payments",
                "any-ns-db",
                "whole-td",
                "payments-ns",
                "db-tier",
                "tier-in",
                "tier-exists",
                "nginx",
                "any-nginx",
                "prod",
                "node-a",
                "corp4",
            ],
        ),
        (
            "a workload without the label: NotIn and DoesNotExist hold",
            Attributes {
                labels: Default::default(),
                selectors: vec!["docker:label:app:web".into()],
                namespace: "billing".into(),
                image: "nginx".into(),
                addr: ip("::ffff:10.8.0.1"),
                ..workload()
            },
            vec![
                "any",
                "exact-id",
                "below-payments",
                "any-ns-db",
                "whole-td",
                "web-selector",
                "tier-notin",
                "tier-absent",
                "prod",
                "node-a",
                "corp4",
                "either",
            ],
        ),
        (
            "another label value: NotIn and Exists hold, In does not",
            Attributes {
                labels: [("tier".to_string(), "web".to_string())].into(),
                ..Attributes {
                    context: "prod".into(),
                    ..Attributes::default()
                }
            },
            vec!["any", "tier-notin", "tier-exists", "prod"],
        ),
        (
            "a bare SPIFFE ID matches only spiffe_id conditions",
            id("spiffe://example.org/ns/payments/sa/db"),
            vec!["any", "exact-id", "below-payments", "any-ns-db", "whole-td"],
        ),
        (
            "trailing /* matches any depth below",
            id("spiffe://example.org/ns/payments/sa/db/replica/2"),
            vec!["any", "below-payments", "whole-td"],
        ),
        (
            "trailing /* does not match the path itself",
            id("spiffe://example.org/ns/payments"),
            vec!["any", "whole-td"],
        ),
        (
            "a segment * does not span segments",
            id("spiffe://example.org/ns/a/b/sa/db"),
            vec!["any", "whole-td"],
        ),
        (
            "a partial-segment glob",
            id("spiffe://example.org/sa/web-frontend"),
            vec!["any", "web-star", "whole-td"],
        ),
        (
            "a partial-segment glob stays in its segment",
            id("spiffe://example.org/sa/web-frontend/x"),
            vec!["any", "whole-td"],
        ),
        (
            "another trust domain",
            id("spiffe://other.org/ns/payments/sa/db"),
            vec!["any"],
        ),
        (
            "a prefix of the trust domain is not it",
            id("spiffe://example.org.evil/ns/payments/sa/db"),
            vec!["any"],
        ),
        (
            "an address alone: only cidr",
            Attributes::address("10.8.200.1".parse().unwrap()),
            vec!["any", "corp4"],
        ),
        (
            "an IPv6 address",
            Attributes::address("fd00:8:1::5".parse().unwrap()),
            vec!["any", "corp6"],
        ),
        (
            "outside every network",
            Attributes::address("10.9.0.1".parse().unwrap()),
            vec!["any"],
        ),
        ("nothing known", Attributes::default(), vec!["any"]),
    ];
    for (what, e, want) in cases {
        assert_eq!(groups(&p, &e), want, "{what}");
    }
}

#[test]
fn members_lists_matching_endpoints() {
    let p = policy();
    let endpoints = [
        workload(),
        Attributes::spiffe_id("spiffe://example.org/ns/payments/sa/api"),
        Attributes::address("10.8.0.9".parse().unwrap()),
    ];
    let names = |g: &str| {
        p.members(g, endpoints.iter())
            .map(|e| e.spiffe_ids.first().cloned().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names("below-payments"),
        [
            "spiffe://example.org/ns/payments/sa/db",
            "spiffe://example.org/ns/payments/sa/api"
        ]
    );
    assert_eq!(
        names("corp4"),
        ["spiffe://example.org/ns/payments/sa/db", ""]
    );
    assert_eq!(names("any").len(), 3);
    assert!(names("no-such-group").is_empty());
}

#[test]
fn an_image_glob_needs_an_image() {
    let p = Policy::compile(
        &parse("g.yaml", "groups:\n  imaged: [{image: \"*\"}]\n")
            .unwrap()
            .document,
    );
    assert_eq!(groups(&p, &workload()), ["any", "imaged"]);
    let host = Attributes {
        selectors: vec!["unix:uid:0".into()],
        node: "n1".into(),
        ..Attributes::default()
    };
    for e in [
        host,
        Attributes::spiffe_id("spiffe://example.org/a"),
        Attributes::address("10.0.0.1".parse().unwrap()),
    ] {
        assert_eq!(groups(&p, &e), ["any"], "{e:?}");
    }
}
