#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use hallmark_policy::{Attributes, Outcome, Protocol};

use super::*;
use crate::metrics::AgentMetrics;

const DOC: &str = "\
groups:
  web:
    - spiffe_id: spiffe://example.org/web
  db:
    - spiffe_id: spiffe://example.org/db
rules:
  - name: web-to-db
    from: [web]
    to: [db]
    ports: [\"5432\"]
    action: allow
default: deny
";

fn update(revision: i64, doc: &str) -> pb::SyncUpdate {
    pb::SyncUpdate {
        policy_revision: revision,
        policy_document: doc.to_string(),
        ..pb::SyncUpdate::default()
    }
}

fn with_groups(mut u: pb::SyncUpdate, groups: &[(&str, &[&str])]) -> pb::SyncUpdate {
    u.identity_groups_sent = true;
    u.identity_groups = groups
        .iter()
        .map(|(id, g)| pb::IdentityGroups {
            spiffe_id: id.to_string(),
            groups: g.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    u
}

/// web -> db on 5432 under `p`.
fn web_to_db(p: &AgentPolicy) -> Outcome {
    let policy = &p.policy;
    let from = policy.groups_of(&Attributes::spiffe_id("spiffe://example.org/web"));
    let to = policy.groups_of(&Attributes::spiffe_id("spiffe://example.org/db"));
    policy.decide(&from, &to, Protocol::Tcp, 5432).outcome
}

/// web -> db on 22: the default decides.
fn default_outcome(p: &AgentPolicy) -> Outcome {
    let policy = &p.policy;
    let from = policy.groups_of(&Attributes::spiffe_id("spiffe://example.org/web"));
    let to = policy.groups_of(&Attributes::spiffe_id("spiffe://example.org/db"));
    policy.decide(&from, &to, Protocol::Tcp, 22).outcome
}

#[test]
fn without_a_policy_every_flow_is_allowed() {
    let p = AgentPolicy::default();
    assert_eq!(p.revision, 0);
    assert!(p.usable().is_ok());
    assert_eq!(default_outcome(&p), Outcome::Allowed);
    // The server's first update when it holds no policy.
    let p = p.next(&update(0, ""));
    assert_eq!((p.revision, p.error.clone()), (0, None));
    assert_eq!(p.status().summary(), "none applied");
}

#[test]
fn a_document_is_compiled_and_identity_groups_taken() {
    let p = AgentPolicy::default().next(&with_groups(
        update(3, DOC),
        &[("spiffe://example.org/web", &["web"])],
    ));
    assert_eq!(p.revision, 3);
    assert_eq!((p.groups, p.rules), (2, 1));
    assert_eq!(p.error, None);
    assert_eq!(web_to_db(&p), Outcome::Allowed);
    assert_eq!(default_outcome(&p), Outcome::Denied);
    assert_eq!(
        p.identity_groups.get("spiffe://example.org/web"),
        Some(&vec!["web".to_string()])
    );
    assert_eq!(
        p.status(),
        PolicyStatus {
            revision: 3,
            groups: 2,
            rules: 1,
            identities: 1,
            error: None,
        }
    );
    assert_eq!(
        p.status().summary(),
        "revision 3, 2 groups, 1 rule, 1 identity"
    );

    // Unchanged revision, no document, no groups: nothing moves.
    let same = p.next(&update(3, ""));
    assert_eq!(same.revision, 3);
    assert_eq!(same.error, None);
    assert_eq!(same.identity_groups.len(), 1);
    assert!(Arc::ptr_eq(&same.policy, &p.policy));

    // Groups sent alone replace the map, even with an empty list.
    let cleared = same.next(&with_groups(update(3, ""), &[]));
    assert!(cleared.identity_groups.is_empty());
    assert_eq!(cleared.revision, 3);
}

#[test]
fn a_document_that_does_not_parse_keeps_the_policy_in_force() {
    let good = AgentPolicy::default().next(&update(3, DOC));
    let broken = DOC.replace("to: [db]", "to: [nope]");
    let bad = good.next(&update(4, &broken));
    assert_eq!(bad.revision, 3, "the old revision stays in force");
    assert_eq!(bad.announced, 4);
    assert!(Arc::ptr_eq(&bad.policy, &good.policy));
    assert_eq!(default_outcome(&bad), Outcome::Denied, "not opened up");
    let e = bad.error.clone().unwrap();
    assert!(
        e.contains("policy revision 4")
            && e.contains("still deciding with revision 3")
            && e.contains("revision 4:")
            && e.contains("unknown group `nope`"),
        "{e}"
    );
    assert!(bad.usable().is_ok(), "an older readable revision decides");
    assert_eq!(bad.status().error, Some(e.clone()));

    // Later updates of the same revision carry no document: the error
    // stays until a readable revision arrives.
    let still = bad.next(&update(4, ""));
    assert_eq!((still.revision, still.error.clone()), (3, Some(e)));
    let fixed = still.next(&update(5, DOC));
    assert_eq!((fixed.revision, fixed.error.clone()), (5, None));
}

#[test]
fn an_agent_that_never_read_a_revision_refuses_to_decide() {
    let p = AgentPolicy::default().next(&update(2, "groups: [oops"));
    assert_eq!(p.revision, 0);
    let e = p.usable().unwrap_err();
    assert!(
        e.contains("policy revision 2") && e.contains("no policy"),
        "{e}"
    );
}

#[test]
fn a_revision_without_its_document_is_an_error_and_no_policy_resets() {
    let good = AgentPolicy::default().next(&update(3, DOC));
    let odd = good.next(&update(9, ""));
    assert_eq!(odd.revision, 3);
    assert!(
        odd.error
            .as_deref()
            .is_some_and(|e| e.contains("revision 9 without its document")),
        "{:?}",
        odd.error
    );
    // The server has no policy any more (its datastore was replaced):
    // so does the agent, and it says so.
    let none = odd.next(&with_groups(
        update(0, ""),
        &[("spiffe://example.org/x", &[])],
    ));
    assert_eq!((none.revision, none.error.clone()), (0, None));
    assert_eq!((none.groups, none.rules), (0, 0));
    assert_eq!(default_outcome(&none), Outcome::Allowed);
    assert_eq!(none.identity_groups.len(), 1);
}

#[test]
fn the_cell_counts_each_unreadable_revision_once() {
    let cell = PolicyCell::default();
    let m = AgentMetrics::default();
    let mut rx = cell.subscribe();
    cell.apply(&update(3, DOC), &m);
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().revision, 3);
    cell.apply(&update(4, "groups: {"), &m);
    cell.apply(&update(4, ""), &m);
    assert_eq!(cell.current().revision, 3);
    let text = m.render();
    assert!(
        text.contains("hallmark_agent_policy_errors_total 1"),
        "{text}"
    );
    assert!(text.contains("hallmark_agent_policy_revision 3"), "{text}");
    cell.apply(&update(5, DOC), &m);
    assert!(m.render().contains("hallmark_agent_policy_revision 5"));
    assert_eq!(cell.current().error, None);
}

#[test]
fn the_status_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read_status(dir.path()).is_err());
    let status = PolicyStatus {
        revision: 7,
        groups: 1,
        rules: 0,
        identities: 12,
        error: Some("policy revision 8 from the server does not parse".into()),
    };
    write_status(dir.path(), &status);
    assert_eq!(read_status(dir.path()).unwrap(), status);
    assert_eq!(
        status.summary(),
        "revision 7, 1 group, 0 rules, 12 identities"
    );
    let json = serde_json::to_value(PolicyStatus::default()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"revision": 0, "groups": 0, "rules": 0, "identities": 0, "error": null})
    );
}

#[test]
fn peer_addresses_and_the_fleet_switch_come_with_updates() {
    let mut u = pb::SyncUpdate {
        peer_addresses: vec![
            pb::PeerAddress {
                ip: "10.1.0.5".into(),
                groups: vec!["web".into()],
            },
            pb::PeerAddress {
                ip: "not-an-ip".into(),
                groups: vec!["db".into()],
            },
        ],
        peer_addresses_sent: true,
        enforcement: "off".into(),
        ..Default::default()
    };
    let p = AgentPolicy::default().next(&u);
    assert_eq!(
        *p.peer_addresses,
        vec![("10.1.0.5".parse().unwrap(), vec!["web".to_string()])]
    );
    assert!(p.fleet_enforcement_off);
    u.peer_addresses_sent = false;
    u.peer_addresses.clear();
    u.enforcement = String::new();
    let q = p.next(&u);
    assert_eq!(q.peer_addresses.len(), 1, "not sent: unchanged");
    assert!(!q.fleet_enforcement_off, "empty means on");
}
