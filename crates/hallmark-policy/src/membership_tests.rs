#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::sync::Arc;

use crate::{parse, Attributes, Membership, Policy};

fn compile(yaml: &str) -> Arc<Policy> {
    Arc::new(Policy::compile(&parse("test.yaml", yaml).unwrap().document))
}

const POLICY: &str = "
groups:
  web:
    - labels: {app: web}
  db:
    - labels: {app: db}
  shop:
    - namespace: shop
  payments-id:
    - spiffe_id: spiffe://example.org/payments/*
";

fn wl(app: &str, ns: &str, id: &str) -> Attributes {
    Attributes {
        spiffe_ids: vec![id.to_string()],
        selectors: vec![format!("docker:label:app:{app}")],
        namespace: ns.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        context: "prod".into(),
        node: "n1".into(),
        ..Attributes::default()
    }
}

fn names(m: &Membership<&'static str>, key: &'static str) -> Vec<String> {
    let set = m.groups(&key).unwrap();
    m.policy().names_in(set).map(str::to_string).collect()
}

fn member_keys(m: &Membership<&'static str>, group: &str) -> Vec<&'static str> {
    m.members(group).into_iter().map(|(k, _)| *k).collect()
}

#[test]
fn upsert_joins_groups_and_reports_changes() {
    let mut m = Membership::new(compile(POLICY));
    assert!(m.upsert("a", wl("web", "shop", "spiffe://example.org/web")));
    assert_eq!(names(&m, "a"), ["any", "web", "shop"]);
    // The same attributes again change nothing.
    assert!(!m.upsert("a", wl("web", "shop", "spiffe://example.org/web")));
    // Other attributes, same groups: not a change.
    let mut moved = wl("web", "shop", "spiffe://example.org/web");
    moved.node = "n2".into();
    assert!(!m.upsert("a", moved));
    // Relabelled: leaves web, joins db.
    assert!(m.upsert("a", wl("db", "shop", "spiffe://example.org/web")));
    assert_eq!(names(&m, "a"), ["any", "db", "shop"]);
    assert!(member_keys(&m, "web").is_empty());
    assert_eq!(member_keys(&m, "db"), ["a"]);
    assert_eq!(m.len(), 1);
}

#[test]
fn members_and_counts_follow_upserts_and_removals() {
    let mut m = Membership::new(compile(POLICY));
    m.upsert("a", wl("web", "shop", "spiffe://example.org/web"));
    m.upsert("b", wl("web", "other", "spiffe://example.org/web"));
    m.upsert("c", wl("db", "shop", "spiffe://example.org/payments/db"));
    assert_eq!(member_keys(&m, "web"), ["a", "b"]);
    assert_eq!(member_keys(&m, "any"), ["a", "b", "c"]);
    assert!(member_keys(&m, "nope").is_empty());
    let counts = m.counts();
    assert_eq!(
        counts,
        [
            ("any".to_string(), 3),
            ("web".to_string(), 2),
            ("db".to_string(), 1),
            ("shop".to_string(), 2),
            ("payments-id".to_string(), 1),
        ]
    );
    assert!(m.remove(&"a"));
    assert!(!m.remove(&"a"));
    assert_eq!(member_keys(&m, "web"), ["b"]);
    assert_eq!(member_keys(&m, "shop"), ["c"]);
    assert!(m.groups(&"a").is_none());
    assert_eq!(m.len(), 2);
}

#[test]
fn identity_groups_are_the_union_over_holders_and_the_bare_id() {
    let mut m = Membership::new(compile(POLICY));
    m.upsert("a", wl("web", "shop", "spiffe://example.org/payments/api"));
    m.upsert("b", wl("db", "other", "spiffe://example.org/payments/api"));
    let p = m.policy().clone();
    let set = m
        .identity_groups("spiffe://example.org/payments/api")
        .unwrap();
    let got: Vec<&str> = p.names_in(&set).collect();
    assert_eq!(got, ["any", "web", "db", "shop", "payments-id"]);
    assert!(m.identity_groups("spiffe://example.org/unknown").is_none());

    // One holder leaves: its groups leave the identity.
    m.remove(&"a");
    let set = m
        .identity_groups("spiffe://example.org/payments/api")
        .unwrap();
    assert_eq!(
        p.names_in(&set).collect::<Vec<_>>(),
        ["any", "db", "payments-id"]
    );
    // The last one leaves: the identity is unknown again.
    m.remove(&"b");
    assert!(m.identities().is_empty());
}

#[test]
fn identities_list_every_held_id_and_drop_replaced_ones() {
    let mut m = Membership::new(compile(POLICY));
    m.upsert("a", wl("web", "shop", "spiffe://example.org/web"));
    m.upsert("c", wl("db", "x", "spiffe://example.org/payments/db"));
    let ids = m.identities();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids["spiffe://example.org/web"], ["any", "web", "shop"]);
    assert_eq!(
        ids["spiffe://example.org/payments/db"],
        ["any", "db", "payments-id"]
    );
    // A workload whose ID changes no longer stands for the old one.
    m.upsert("a", wl("web", "shop", "spiffe://example.org/web2"));
    let ids = m.identities();
    assert!(!ids.contains_key("spiffe://example.org/web"));
    assert!(ids.contains_key("spiffe://example.org/web2"));
}

#[test]
fn set_policy_recomputes_every_member() {
    let mut m = Membership::new(compile(POLICY));
    m.upsert("a", wl("web", "shop", "spiffe://example.org/web"));
    m.upsert("c", wl("db", "x", "spiffe://example.org/payments/db"));
    m.set_policy(compile(
        "
groups:
  everything-prod:
    - context: prod
  db:
    - labels: {app: db}
",
    ));
    assert_eq!(names(&m, "a"), ["any", "everything-prod"]);
    assert_eq!(names(&m, "c"), ["any", "everything-prod", "db"]);
    assert_eq!(member_keys(&m, "everything-prod"), ["a", "c"]);
    assert!(member_keys(&m, "web").is_empty());
    assert_eq!(
        m.counts(),
        [
            ("any".to_string(), 2),
            ("everything-prod".to_string(), 2),
            ("db".to_string(), 1),
        ]
    );
    // Upserts after the change use the new policy.
    assert!(m.upsert("d", wl("db", "y", "spiffe://example.org/d")));
    assert_eq!(member_keys(&m, "db"), ["c", "d"]);
}

#[test]
fn membership_agrees_with_policy_members_after_many_changes() {
    let p = compile(POLICY);
    let mut m = Membership::new(p.clone());
    let apps = ["web", "db", "cache"];
    let nss = ["shop", "other"];
    for i in 0..60u32 {
        let key: &'static str = Box::leak(format!("k{}", i % 17).into_boxed_str());
        if i % 7 == 3 {
            m.remove(&key);
            continue;
        }
        let id = format!("spiffe://example.org/payments/{}", i % 5);
        m.upsert(key, wl(apps[i as usize % 3], nss[i as usize % 2], &id));
    }
    let all: Vec<(&str, Attributes)> = m
        .keys()
        .map(|k| (*k, m.attributes(k).unwrap().clone()))
        .collect();
    for group in p.group_names() {
        let want: Vec<&Attributes> = p.members(group, all.iter().map(|(_, a)| a)).collect();
        let got: Vec<&Attributes> = m.members(group).into_iter().map(|(_, a)| a).collect();
        assert_eq!(got, want, "group {group}");
    }
}
