#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::{parse, Mode, Outcome, Policy};

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn workload(ns: &str, app: &str, addr: &str) -> Attributes {
    Attributes {
        spiffe_ids: vec![format!("spiffe://example.org/ns/{ns}/sa/{app}")],
        selectors: vec![
            format!("docker:compose-service:{app}"),
            "unix:uid:1000".to_string(),
        ],
        namespace: ns.to_string(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        image: format!("registry.example/{app}:1.0"),
        context: "prod".into(),
        node: "n1".into(),
        addr: ip(addr),
    }
}

fn observed() -> Vec<Observed> {
    let web = workload("shop", "web", "10.0.0.2");
    let api = workload("shop", "api", "10.0.0.3");
    let db = workload("data", "db", "10.0.1.4");
    let o = |from: &Attributes, to: &Attributes, protocol, port, flows| Observed {
        from: from.clone(),
        to: to.clone(),
        protocol,
        port,
        flows,
    };
    let external = Attributes::address("93.184.216.34".parse().unwrap());
    let dns = Attributes::address("2001:db8::53".parse().unwrap());
    vec![
        o(&web, &api, Protocol::Tcp, 8080, 120),
        o(&web, &api, Protocol::Tcp, 8443, 3),
        o(&api, &db, Protocol::Tcp, 5432, 40),
        o(&api, &db, Protocol::Tcp, 5432, 2),
        o(&api, &db, Protocol::Udp, 5432, 5),
        o(&api, &external, Protocol::Tcp, 443, 9),
        o(&api, &dns, Protocol::Udp, 53, 30),
        // The same pair again with another port: one rule, two ports.
        o(&web, &api, Protocol::Tcp, 9090, 7),
    ]
}

fn round_trip(doc: &PolicyDocument) -> PolicyDocument {
    let yaml = to_yaml(doc);
    let parsed = parse("suggested.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    parsed.document
}

#[test]
fn suggestion_round_trips_and_allows_what_was_seen() {
    for by in [
        SuggestBy::SpiffeId,
        SuggestBy::Service,
        SuggestBy::Namespace,
    ] {
        let seen = observed();
        let doc = suggest(&seen, 1, by);
        assert_eq!(round_trip(&doc), doc, "{by:?}\n{}", to_yaml(&doc));
        assert_eq!(doc.default, Action::Allow);
        assert!(doc.rules.iter().all(|r| r.mode == Mode::Watch), "{by:?}");
        let last = doc.rules.last().unwrap();
        assert_eq!(
            (
                last.name.as_str(),
                last.action,
                last.priority,
                &last.from,
                &last.to
            ),
            (
                CATCH_ALL_RULE,
                Action::Deny,
                u32::MAX,
                &vec!["any".to_string()],
                &vec!["any".to_string()]
            )
        );

        let p = Policy::compile(&doc);
        for o in &seen {
            let v = p.decide(
                &p.groups_of(&o.from),
                &p.groups_of(&o.to),
                o.protocol,
                o.port,
            );
            assert_eq!(v.outcome, Outcome::Allowed, "{by:?}: {o:?} gave {v:?}");
        }
        // New kinds of traffic: another port, the reverse direction, a
        // new peer.
        let (web, api, db) = (&seen[0].from, &seen[0].to, &seen[2].to);
        let newcomer = Attributes::address("10.99.0.1".parse().unwrap());
        for (from, to, proto, port) in [
            (web, api, Protocol::Tcp, 22),
            (web, api, Protocol::Udp, 8080),
            (db, api, Protocol::Tcp, 8080),
            (&newcomer, api, Protocol::Tcp, 8080),
        ] {
            let v = p.decide(&p.groups_of(from), &p.groups_of(to), proto, port);
            assert_eq!(v.outcome, Outcome::WouldDeny, "{by:?}: {port}");
            assert_eq!(v.rule(), Some(CATCH_ALL_RULE));
        }
    }
}

#[test]
fn groups_and_rules_by_spiffe_id() {
    let doc = suggest(&observed(), 1, SuggestBy::SpiffeId);
    let names: Vec<&str> = doc.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "example.org-ns-data-sa-db",
            "example.org-ns-shop-sa-api",
            "example.org-ns-shop-sa-web",
            "ip-2001-db8-53-128",
            "ip-93.184.216.34-32",
        ]
    );
    let yaml = to_yaml(&doc);
    assert!(
        yaml.contains("    - spiffe_id: \"spiffe://example.org/ns/shop/sa/web\"\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("    - cidr: \"93.184.216.34/32\"\n"),
        "{yaml}"
    );
    let rules: Vec<(String, String)> = doc
        .rules
        .iter()
        .map(|r| {
            let ports: Vec<String> = r.ports.iter().map(ToString::to_string).collect();
            (r.name.clone(), ports.join(","))
        })
        .collect();
    let rule = |n: &str, p: &str| (n.to_string(), p.to_string());
    assert_eq!(
        rules,
        [
            rule(
                "example.org-ns-shop-sa-api-to-example.org-ns-data-sa-db-tcp",
                "5432"
            ),
            rule(
                "example.org-ns-shop-sa-api-to-example.org-ns-data-sa-db-udp",
                "5432"
            ),
            rule("example.org-ns-shop-sa-api-to-ip-2001-db8-53-128-udp", "53"),
            rule(
                "example.org-ns-shop-sa-api-to-ip-93.184.216.34-32-tcp",
                "443"
            ),
            rule(
                "example.org-ns-shop-sa-web-to-example.org-ns-shop-sa-api-tcp",
                "8080,8443,9090"
            ),
            rule(CATCH_ALL_RULE, ""),
        ]
    );
}

#[test]
fn by_service_and_namespace() {
    let doc = suggest(&observed(), 1, SuggestBy::Service);
    let blocks: Vec<(&str, String)> = doc
        .groups
        .iter()
        .map(|g| {
            (
                g.name.as_str(),
                format!(
                    "{:?}",
                    g.blocks[0].selector.as_ref().map(ToString::to_string)
                ),
            )
        })
        .collect();
    assert_eq!(
        blocks[0],
        ("api", "Some(\"docker:compose-service:api\")".to_string())
    );

    // Without Compose, the app label in its namespace; without that, the image.
    let mut seen = observed();
    for o in &mut seen {
        for e in [&mut o.from, &mut o.to] {
            e.selectors.clear();
        }
    }
    for o in &mut seen {
        for e in [&mut o.from, &mut o.to] {
            if e.labels.get("app").is_some_and(|a| a == "web") {
                e.labels.clear();
            }
        }
    }
    let doc = suggest(&seen, 1, SuggestBy::Service);
    let names: Vec<&str> = doc.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "data-db",
            "ip-2001-db8-53-128",
            "ip-93.184.216.34-32",
            "registry.example-web-1.0",
            "shop-api"
        ]
    );
    assert_eq!(round_trip(&doc), doc);

    let doc = suggest(&observed(), 1, SuggestBy::Namespace);
    let names: Vec<&str> = doc.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        ["data", "ip-2001-db8-53-128", "ip-93.184.216.34-32", "shop"]
    );
}

#[test]
fn min_flows_and_ephemeral_ports() {
    // 8443 (3 flows) drops at min 4; 5432/tcp sums 40 + 2 and stays.
    let doc = suggest(&observed(), 4, SuggestBy::Namespace);
    let ports = |name: &str| {
        doc.rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.ports.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    assert_eq!(ports("shop-to-shop-tcp").unwrap(), ["8080", "9090"]);
    assert_eq!(ports("shop-to-data-tcp").unwrap(), ["5432"]);
    let doc = suggest(&observed(), 1000, SuggestBy::Namespace);
    assert!(doc.groups.is_empty());
    assert_eq!(doc.rules.len(), 1);
    assert_eq!(round_trip(&doc), doc);
    // Only the acceptor's port appears: the initiator's is never known here.
    let doc = suggest(&observed(), 1, SuggestBy::Namespace);
    let all: Vec<u16> = doc
        .rules
        .iter()
        .flat_map(|r| r.ports.iter().map(|p| p.lo()))
        .collect();
    assert!(
        all.iter()
            .all(|p| [8080, 8443, 9090, 5432, 443, 53].contains(p)),
        "{all:?}"
    );
}

#[test]
fn names_are_valid_and_unique() {
    let mut taken = BTreeSet::new();
    assert_eq!(unique("Shop/Web Front!", &mut taken), "shop-web-front");
    assert_eq!(unique("shop web front", &mut taken), "shop-web-front-2");
    assert_eq!(
        unique("any", &mut BTreeSet::from(["any".to_string()])),
        "any-2"
    );
    assert_eq!(unique("///", &mut taken), "group");
    let long = unique(&"x".repeat(500), &mut taken);
    assert!(crate::check_name(&long).is_ok() && long.len() <= MAX_NAME_LEN);
    assert_eq!(unique("-_-a", &mut taken), "a");
}

#[test]
fn yaml_quoting_survives_odd_text() {
    let odd = "a \"quoted\" \\ back\tslash\n\u{1}\u{2028}é: #x";
    let doc = PolicyDocument {
        groups: vec![Group {
            name: "g".into(),
            blocks: vec![Block {
                node: Some(odd.to_string()),
                context: Some("null".into()),
                namespace: Some("123".into()),
                image: Some(ImagePattern::parse("*:latest").unwrap()),
                match_expressions: vec![crate::MatchExpression {
                    key: "tier".into(),
                    operator: crate::Operator::In,
                    values: vec!["true".into(), "".into()],
                }],
                ..Block::default()
            }],
        }],
        rules: vec![],
        default: Action::Deny,
    };
    assert_eq!(round_trip(&doc), doc, "{}", to_yaml(&doc));
}
