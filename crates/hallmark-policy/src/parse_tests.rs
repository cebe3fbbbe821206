#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::collections::BTreeMap;

use crate::{
    parse, Action, Block, Cidr, Group, ImagePattern, MatchExpression, Mode, Operator,
    PolicyDocument, PortRange, ProtocolMatch, Rule, Severity, SpiffePattern, Subject,
};

const ISSUE_EXAMPLE: &str = r#"groups:
  web:                                   # a group is a list of match blocks: any block matches (OR),
    - selector: docker:label:app:web     #   all conditions inside one block must hold (AND)
  payments-db:
    - spiffe_id: spiffe://example.org/payments/db/*
    - namespace: payments
      labels: {tier: db}                 # Kubernetes label-selector semantics, also match_expressions
  corp:                                  #   (In, NotIn, Exists, DoesNotExist)
    - cidr: 10.8.0.0/16                  # external networks by address
rules:
  - name: web-to-db
    from: [web]
    to: [payments-db]
    protocol: tcp                        # tcp | udp | any
    ports: ["5432", "8000-8100"]         # the accepting side's ports
    action: allow                        # allow | deny
    mode: enforce                        # enforce | watch (decided and recorded, never enforced)
    priority: 100                        # lower first; at equal priority deny wins
default: allow                           # verdict when no rule matches: allow | deny
"#;

#[test]
fn the_issue_example_parses_to_its_document() {
    let parsed = parse("policy.yaml", ISSUE_EXAMPLE).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let want = PolicyDocument {
        groups: vec![
            Group {
                name: "web".into(),
                blocks: vec![Block {
                    selector: Some("docker:label:app:web".parse().unwrap()),
                    ..Block::default()
                }],
            },
            Group {
                name: "payments-db".into(),
                blocks: vec![
                    Block {
                        spiffe_id: Some(
                            SpiffePattern::parse("spiffe://example.org/payments/db/*").unwrap(),
                        ),
                        ..Block::default()
                    },
                    Block {
                        namespace: Some("payments".into()),
                        labels: BTreeMap::from([("tier".into(), "db".into())]),
                        ..Block::default()
                    },
                ],
            },
            Group {
                name: "corp".into(),
                blocks: vec![Block {
                    cidr: Some(Cidr::parse("10.8.0.0/16").unwrap()),
                    ..Block::default()
                }],
            },
        ],
        rules: vec![Rule {
            name: "web-to-db".into(),
            from: vec!["web".into()],
            to: vec!["payments-db".into()],
            protocol: ProtocolMatch::Tcp,
            ports: vec![
                PortRange::single(5432).unwrap(),
                PortRange::new(8000, 8100).unwrap(),
            ],
            action: Action::Allow,
            mode: Mode::Enforce,
            priority: 100,
        }],
        default: Action::Allow,
    };
    assert_eq!(parsed.document, want);
}

#[test]
fn defaults_and_every_condition() {
    let doc = parse(
        "p.yaml",
        r#"
groups:
  all-kinds:
    - spiffe_id: spiffe://example.org/a
      selector: k8s:ns:payments
      namespace: payments
      labels: {app.kubernetes.io/name: db, tier: ""}
      match_expressions:
        - {key: env, operator: NotIn, values: [dev, test]}
        - {key: team, operator: Exists}
      image: "nginx:*"
      context: prod
      node: node-1
      cidr: "fd00::/8"
rules:
  - name: minimal
    from: [any]
    to: [all-kinds]
    action: deny
"#,
    )
    .unwrap()
    .document;
    let b = &doc.groups[0].blocks[0];
    assert_eq!(b.image, Some(ImagePattern::parse("nginx:*").unwrap()));
    assert_eq!(b.labels.get("tier").map(String::as_str), Some(""));
    assert_eq!(
        b.match_expressions,
        vec![
            MatchExpression {
                key: "env".into(),
                operator: Operator::NotIn,
                values: vec!["dev".into(), "test".into()],
            },
            MatchExpression {
                key: "team".into(),
                operator: Operator::Exists,
                values: vec![],
            },
        ]
    );
    let r = &doc.rules[0];
    assert_eq!(
        (
            r.protocol,
            r.ports.is_empty(),
            r.mode,
            r.priority,
            doc.default
        ),
        (ProtocolMatch::Any, true, Mode::Enforce, 1000, Action::Allow)
    );
}

/// The errors of a refused document, as printed.
fn errors(text: &str) -> Vec<String> {
    match parse("policy.yaml", text) {
        Ok(p) => panic!("accepted: {:?}", p.document),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that refusing `text` gives exactly this one message.
fn refused(text: &str, want: &str) {
    assert_eq!(errors(text), [want], "for:\n{text}");
}

const G: &str = "groups:\n  web: [{selector: \"docker:label:app:web\"}]\n  db: [{namespace: db}]\n";

fn with_rule(rule: &str) -> String {
    format!("{G}rules:\n  - {rule}\n")
}

#[test]
fn unknown_group() {
    refused(
        &with_rule("{name: web-to-db, from: [web], to: [pay-db], action: allow}"),
        "policy.yaml:5: rule `web-to-db`: unknown group `pay-db` in to",
    );
    refused(
        &format!("{G}rules:\n  - name: r\n    from:\n      - web\n      - nope\n    to: [db]\n    action: deny\n"),
        "policy.yaml:8: rule `r`: unknown group `nope` in from",
    );
}

#[test]
fn duplicate_group_and_rule_names() {
    refused(
        "groups:\n  web: [{namespace: a}]\n  db: [{namespace: b}]\n  web: [{namespace: c}]\n",
        "policy.yaml:4: group `web`: duplicate group name (first defined at line 2)",
    );
    refused(
        &format!(
            "{G}rules:\n  - {{name: r, from: [web], to: [db], action: allow}}\n  - {{name: r, from: [db], to: [web], action: allow}}\n"
        ),
        "policy.yaml:6: rule `r`: duplicate rule name (first defined at line 5)",
    );
}

#[test]
fn empty_from_or_to_and_missing_keys() {
    refused(
        &with_rule("{name: r, from: [], to: [db], action: allow}"),
        "policy.yaml:5: rule `r`: empty group list in from",
    );
    refused(
        &with_rule("{name: r, from: [web], to: [], action: allow}"),
        "policy.yaml:5: rule `r`: empty group list in to",
    );
    refused(
        &with_rule("{name: r, from: [web], action: allow}"),
        "policy.yaml:5: rule `r`: a rule needs `to` (a list of groups)",
    );
    refused(
        &with_rule("{name: r, from: [web], to: [db]}"),
        "policy.yaml:5: rule `r`: a rule needs an `action` (allow or deny)",
    );
    refused(
        &with_rule("{from: [web], to: [db], action: allow}"),
        "policy.yaml:5: rule #1: a rule needs a `name`",
    );
    refused(
        &with_rule("{name: r, from: web, to: [db], action: allow}"),
        "policy.yaml:5: rule `r`: `from` (a list of groups) must be a list, found a scalar",
    );
}

#[test]
fn bad_ports() {
    let port = |p: &str| {
        with_rule(&format!(
            "{{name: r, from: [web], to: [db], ports: [{p}], action: allow}}"
        ))
    };
    refused(
        &port("'0'"),
        "policy.yaml:5: rule `r`: ports: port 0 is not a port (ports are 1-65535)",
    );
    refused(
        &port("'65536'"),
        "policy.yaml:5: rule `r`: ports: port 65536 is above 65535",
    );
    refused(
        &port("'9000-8000'"),
        "policy.yaml:5: rule `r`: ports: range 9000-8000 is reversed (write 8000-9000)",
    );
    refused(&port("'http'"), "policy.yaml:5: rule `r`: ports: `http` is not a port or range (write `5432` or `8000-8100`)");
    refused(&port("'80-'"), "policy.yaml:5: rule `r`: ports: `80-` is not a port or range (write `5432` or `8000-8100`)");
    refused(
        &with_rule("{name: r, from: [web], to: [db], ports: [], action: allow}"),
        "policy.yaml:5: rule `r`: ports is empty (leave it out for every port)",
    );
    // Unquoted numbers are ports too, and ports with protocol any are fine.
    let ok = parse("p.yaml", &with_rule("{name: r, from: [web], to: [db], protocol: any, ports: [80, '8000-8080'], action: allow}")).unwrap();
    assert_eq!(ok.document.rules[0].ports.len(), 2);
}

#[test]
fn bad_cidr() {
    let cidr = |c: &str| format!("groups:\n  corp:\n    - cidr: {c}\n");
    refused(
        &cidr("10.8.0.0/33"),
        "policy.yaml:3: group `corp`: cidr: CIDR `10.8.0.0/33`: prefix length `33` is not 0-32",
    );
    refused(&cidr("10.8.0.1/16"), "policy.yaml:3: group `corp`: cidr: CIDR `10.8.0.1/16` has host bits set (the network is 10.8.0.0/16)");
    refused(
        &cidr("10.8.0/16"),
        "policy.yaml:3: group `corp`: cidr: CIDR `10.8.0/16`: `10.8.0` is not an IP address",
    );
    refused(
        &cidr("\"fd00::/129\""),
        "policy.yaml:3: group `corp`: cidr: CIDR `fd00::/129`: prefix length `129` is not 0-128",
    );
}

#[test]
fn malformed_selector_and_spiffe_ids() {
    let block = |b: &str| format!("groups:\n  g:\n    - {b}\n");
    refused(&block("selector: docker:label"), "policy.yaml:3: group `g`: selector: selector `docker:label` must have the form `<type>:<key>:<value>` (e.g. `unix:uid:1000`)");
    refused(&block("selector: nope:uid:1"), "policy.yaml:3: group `g`: selector: selector `nope:uid:1` has an unknown type `nope` (known: unix, docker, k8s, hallmark)");
    refused(&block("spiffe_id: http://example.org/a"), "policy.yaml:3: group `g`: spiffe_id: SPIFFE ID `http://example.org/a` must start with the scheme `spiffe://`");
    refused(&block("spiffe_id: spiffe://Example.org/a"), "policy.yaml:3: group `g`: spiffe_id: SPIFFE ID `spiffe://Example.org/a` trust domain may only contain lowercase letters, digits, `.`, `-` and `_` (found 'E')");
    refused(&block("spiffe_id: spiffe://example.org/a//b"), "policy.yaml:3: group `g`: spiffe_id: SPIFFE ID `spiffe://example.org/a//b` path has an empty segment (`//`)");
    refused(&block("spiffe_id: spiffe://*.org/a"), "policy.yaml:3: group `g`: spiffe_id: SPIFFE ID `spiffe://*.org/a`: `*` is not allowed in the trust domain");
    refused(&block("spiffe_id: spiffe://example.org"), "policy.yaml:3: group `g`: spiffe_id: SPIFFE ID `spiffe://example.org` must have a path (a workload ID is `spiffe://<trust-domain>/<path>`)");
    refused(&block("spiffe_id: spiffe://example.org/a/"), "policy.yaml:3: group `g`: spiffe_id: SPIFFE ID `spiffe://example.org/a/` path must not end with `/`");
}

#[test]
fn bad_labels() {
    let block = |b: &str| format!("groups:\n  g:\n    - {b}\n");
    refused(&block("labels: {\"-app\": web}"), "policy.yaml:3: group `g`: label key `-app`: name must start and end with a letter or digit");
    refused(&block("labels: {\"Example.com/app\": web}"), "policy.yaml:3: group `g`: label key `Example.com/app`: prefix `Example.com` is not a DNS subdomain (lowercase, e.g. `app.kubernetes.io`)");
    refused(&block("labels: {app: \"a b\"}"), "policy.yaml:3: group `g`: label `app`: label value `a b` may only contain letters, digits, `-`, `_` and `.`");
    refused(
        &block(&format!("labels: {{app: {}}}", "x".repeat(64))),
        &format!(
            "policy.yaml:3: group `g`: label `app`: label value `{}` is longer than 63 characters",
            "x".repeat(64)
        ),
    );
    refused(
        &block("labels: {}"),
        "policy.yaml:3: group `g`: labels is empty (leave it out instead)",
    );
}

#[test]
fn bad_operators_and_values() {
    let expr = |e: &str| format!("groups:\n  g:\n    - match_expressions:\n        - {e}\n");
    refused(
        &expr("{key: tier, operator: in, values: [db]}"),
        "policy.yaml:4: group `g`: operator `in` is not one of In, NotIn, Exists, DoesNotExist",
    );
    refused(&expr("{key: tier, operator: In}"), "policy.yaml:4: group `g`: match expression on `tier`: operator In needs a non-empty `values` list");
    refused(&expr("{key: tier, operator: NotIn, values: []}"), "policy.yaml:4: group `g`: match expression on `tier`: operator NotIn needs a non-empty `values` list");
    refused(
        &expr("{key: tier, operator: Exists, values: [db]}"),
        "policy.yaml:4: group `g`: match expression on `tier`: operator Exists takes no `values`",
    );
    refused(&expr("{key: tier, operator: DoesNotExist, values: []}"), "policy.yaml:4: group `g`: match expression on `tier`: operator DoesNotExist takes no `values`");
    refused(&expr("{operator: Exists}"), "policy.yaml:4: group `g`: a match expression needs `key` and `operator` (In, NotIn, Exists, DoesNotExist)");
}

#[test]
fn empty_blocks_and_groups() {
    refused(
        "groups:\n  everyone:\n    - {}\n",
        "policy.yaml:3: group `everyone`: empty match block would match every endpoint: use the group `any` in rules instead",
    );
    refused(
        "groups:\n  nobody: []\n",
        "policy.yaml:2: group `nobody`: a group needs at least one match block (use `any` for every endpoint)",
    );
    refused(
        "groups:\n  any: [{namespace: x}]\n",
        "policy.yaml:2: group `any`: `any` is reserved (it matches every endpoint) and cannot be defined",
    );
    refused(
        "groups:\n  \"bad name\": [{namespace: x}]\n",
        "policy.yaml:2: group `bad name`: bad group name: name may only contain letters, digits, `-`, `_` and `.` (found ' ')",
    );
}

#[test]
fn unknown_keys_anywhere() {
    refused(
        "groups: {}\npolicy: x\n",
        "policy.yaml:2: unknown key `policy` in the document (known: groups, rules, default)",
    );
    refused(
        "groups:\n  g:\n    - namespace: a\n      lables: {a: b}\n",
        "policy.yaml:4: group `g`: unknown key `lables` in a match block (known: spiffe_id, selector, namespace, labels, match_expressions, image, context, node, cidr)",
    );
    refused(
        "groups:\n  g:\n    - match_expressions:\n        - {key: a, operator: Exists, value: x}\n",
        "policy.yaml:4: group `g`: unknown key `value` in a match expression (known: key, operator, values)",
    );
    refused(
        &with_rule("{name: r, from: [web], to: [db], action: allow, port: [80]}"),
        "policy.yaml:5: rule `r`: unknown key `port` in a rule (known: name, from, to, protocol, ports, action, mode, priority)",
    );
    refused(
        "groups:\n  g:\n    - namespace: a\n      namespace: b\n",
        "policy.yaml:4: group `g`: duplicate key `namespace` in a match block (first at line 3)",
    );
}

#[test]
fn bad_keywords_and_numbers() {
    refused(
        &with_rule("{name: r, from: [web], to: [db], action: permit}"),
        "policy.yaml:5: rule `r`: action `permit` is not one of allow, deny",
    );
    refused(
        &with_rule("{name: r, from: [web], to: [db], action: allow, mode: audit}"),
        "policy.yaml:5: rule `r`: mode `audit` is not one of enforce, watch",
    );
    refused(
        &with_rule("{name: r, from: [web], to: [db], action: allow, protocol: icmp}"),
        "policy.yaml:5: rule `r`: protocol `icmp` is not one of tcp, udp, any",
    );
    refused(
        &with_rule("{name: r, from: [web], to: [db], action: allow, priority: -1}"),
        "policy.yaml:5: rule `r`: priority: `-1` is not a whole number 0-4294967295",
    );
    refused(
        &with_rule("{name: r, from: [web], to: [db], action: allow, priority: 4294967296}"),
        "policy.yaml:5: rule `r`: priority: `4294967296` is not a whole number 0-4294967295",
    );
    refused(
        "default: maybe\n",
        "policy.yaml:1: default `maybe` is not one of allow, deny",
    );
    refused(
        "groups: [web]\n",
        "policy.yaml:1: `groups` must be a map of group name to match blocks, found a list",
    );
    refused(
        "rules: {a: b}\n",
        "policy.yaml:1: `rules` must be a list, found a map",
    );
    refused(
        "- a\n",
        "policy.yaml:1: the document must be a map, found a list",
    );
    refused(
        "",
        "policy.yaml:1: the document is empty (a policy has `groups`, `rules` and `default`)",
    );
    refused(
        "groups:\n  g:\n    - namespace:\n",
        "policy.yaml:3: group `g`: namespace must be a string, found nothing",
    );
}

#[test]
fn yaml_syntax_errors_carry_the_line() {
    let e = errors("groups:\n  web: [{selector: a\nrules: []\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("policy.yaml:3: invalid YAML: "), "{e:?}");
    let e =
        errors("groups:\n  web:\n    - selector: \"docker:label:app:web\"\n   bad: indentation\n");
    assert!(e[0].starts_with("policy.yaml:4: invalid YAML: "), "{e:?}");
    refused(
        "groups: {}\n---\ngroups: {}\n",
        "policy.yaml:2: a policy file holds one YAML document, found a second",
    );
    refused(
        "groups:\n  a: &x [{namespace: a}]\n  b: *x\n",
        "policy.yaml:2: YAML anchors (`&name`) are not supported in a policy",
    );
    refused(
        "groups:\n  a: !!seq [{namespace: a}]\n",
        "policy.yaml:2: YAML tags (`!tag`) are not supported in a policy",
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let e = errors(
        "groups:\n  web: [{cidr: 10.0.0.1/8}]\n  db: [{}]\nrules:\n  - {name: a, from: [nope], to: [db], action: allow}\n  - {name: b, from: [web], to: [db], ports: ['0'], action: allow}\n",
    );
    assert_eq!(e.len(), 4, "{e:#?}");
    let lines: Vec<&str> = e.iter().map(|m| m.split(": ").next().unwrap()).collect();
    assert_eq!(
        lines,
        [
            "policy.yaml:2",
            "policy.yaml:3",
            "policy.yaml:5",
            "policy.yaml:6"
        ]
    );
}

#[test]
fn contradictory_blocks_are_warnings() {
    let parsed = parse(
        "policy.yaml",
        r#"groups:
  never:
    - labels: {tier: db}
      match_expressions: [{key: tier, operator: NotIn, values: [db]}]
    - match_expressions:
        - {key: app, operator: Exists}
        - {key: app, operator: DoesNotExist}
  sometimes:
    - match_expressions:
        - {key: tier, operator: In, values: [a, b]}
        - {key: tier, operator: In, values: [c]}
    - namespace: ok
  fine:
    - labels: {tier: db}
      match_expressions:
        - {key: tier, operator: In, values: [db, web]}
        - {key: tier, operator: NotIn, values: [web]}
        - {key: env, operator: NotIn, values: [dev]}
        - {key: env, operator: DoesNotExist}
"#,
    )
    .unwrap();
    let w: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "policy.yaml:3: warning: group `never`: this block can never match: its conditions on label `tier` contradict each other",
            "policy.yaml:5: warning: group `never`: this block can never match: its conditions on label `app` contradict each other",
            "policy.yaml:2: warning: group `never`: no endpoint can ever be a member: every block is contradictory",
            "policy.yaml:9: warning: group `sometimes`: this block can never match: its conditions on label `tier` contradict each other",
        ]
    );
    assert!(parsed
        .warnings
        .iter()
        .all(|d| d.severity == Severity::Warning));
    assert_eq!(parsed.warnings[2].subject, Subject::Group("never".into()));
    // Warnings ride along with errors when a document is refused.
    let refused = parse(
        "policy.yaml",
        "groups:\n  never: [{match_expressions: [{key: a, operator: Exists}, {key: a, operator: DoesNotExist}]}]\nrules: [{name: r, from: [x], to: [never], action: allow}]\n",
    )
    .unwrap_err();
    assert_eq!((refused.errors.len(), refused.warnings.len()), (1, 2));
    assert!(refused.to_string().starts_with("policy refused: 1 error\npolicy.yaml:3: rule `r`: unknown group `x` in from\npolicy.yaml:2: warning: "));
}
