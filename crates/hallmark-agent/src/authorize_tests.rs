#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::collections::BTreeMap;

use hallmark_core::Selector;
use hallmark_proto::hallmark as pb;

use super::*;

fn refused(body: &str) -> Refusal {
    match parse_request(body.as_bytes()) {
        Ok(r) => panic!("{body} was accepted: {r:?}"),
        Err(r) => r,
    }
}

#[test]
fn request_bodies_are_read_strictly() {
    let ok = parse_request(br#"{"peer":"spiffe://example.org/web","port":443}"#).unwrap();
    assert_eq!(
        ok,
        AuthorizeRequest {
            peer: SpiffeId::new("spiffe://example.org/web").unwrap(),
            port: 443,
            protocol: Protocol::Tcp,
            spiffe_id: None,
        }
    );
    let full = parse_request(
        br#"{"peer":"spiffe://example.org/dns","port":53,"protocol":"udp","spiffe_id":"spiffe://example.org/me"}"#,
    )
    .unwrap();
    assert_eq!(full.protocol, Protocol::Udp);
    assert_eq!(full.spiffe_id.unwrap().as_str(), "spiffe://example.org/me");
    let nulls = parse_request(
        br#"{"peer":"spiffe://example.org/w","port":65535,"protocol":null,"spiffe_id":""}"#,
    )
    .unwrap();
    assert_eq!(
        (nulls.port, nulls.protocol, nulls.spiffe_id),
        (65535, Protocol::Tcp, None)
    );

    let cases: &[(&str, &[&str])] = &[
        ("peer=x", &["not valid JSON", "\"peer\""]),
        ("[]", &["not valid JSON"]),
        (
            r#"{"peer":"spiffe://example.org/w","port":1,"audience":"x"}"#,
            &["unknown field `audience`"],
        ),
        (r#"{"port":443}"#, &["`peer` is missing"]),
        (r#"{"peer":null,"port":443}"#, &["`peer` is missing"]),
        (r#"{"peer":7,"port":443}"#, &["`peer` must be a string"]),
        (
            r#"{"peer":"https://example.org/w","port":443}"#,
            &["`peer` `https://example.org/w` is not a workload SPIFFE ID: "],
        ),
        (
            r#"{"peer":"spiffe://example.org","port":443}"#,
            &["`peer` `spiffe://example.org` is not a workload SPIFFE ID: "],
        ),
        (
            r#"{"peer":"spiffe://example.org/w"}"#,
            &["`port` is missing"],
        ),
        (
            r#"{"peer":"spiffe://example.org/w","port":0}"#,
            &["`port` must be a whole number from 1 to 65535, not 0"],
        ),
        (
            r#"{"peer":"spiffe://example.org/w","port":65536}"#,
            &["not 65536"],
        ),
        (
            r#"{"peer":"spiffe://example.org/w","port":-1}"#,
            &["not -1"],
        ),
        (
            r#"{"peer":"spiffe://example.org/w","port":44.5}"#,
            &["not 44.5"],
        ),
        (
            r#"{"peer":"spiffe://example.org/w","port":"443"}"#,
            &["not \"443\""],
        ),
        (
            r#"{"peer":"spiffe://example.org/w","port":443,"protocol":"icmp"}"#,
            &["`protocol` must be \"tcp\" or \"udp\"", "not \"icmp\""],
        ),
        (
            r#"{"peer":"spiffe://example.org/w","port":443,"protocol":6}"#,
            &["`protocol` must be a string"],
        ),
        (
            r#"{"peer":"spiffe://example.org/w","port":443,"spiffe_id":"me"}"#,
            &["`spiffe_id` `me` is not a workload SPIFFE ID"],
        ),
    ];
    for (body, want) in cases {
        let r = refused(body);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        for w in *want {
            assert!(r.message.contains(w), "{body}: `{}` lacks `{w}`", r.message);
        }
        assert_eq!(
            parse_authorize_request(body.as_bytes()).unwrap_err(),
            r.message
        );
    }
}

#[test]
fn a_caller_answers_only_as_itself() {
    let own = vec![
        "spiffe://example.org/b".to_string(),
        "spiffe://example.org/a".to_string(),
        "spiffe://example.org/b".to_string(),
    ];
    assert_eq!(
        identities(&own, None).unwrap(),
        ["spiffe://example.org/a", "spiffe://example.org/b"]
    );
    let a = SpiffeId::new("spiffe://example.org/a").unwrap();
    assert_eq!(
        identities(&own, Some(&a)).unwrap(),
        ["spiffe://example.org/a"]
    );
    let other = SpiffeId::new("spiffe://example.org/other").unwrap();
    let r = identities(&own, Some(&other)).unwrap_err();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.message.starts_with(
            "a workload may ask only about itself: spiffe://example.org/other is not an identity of the caller"
        ),
        "{}",
        r.message
    );
    // A caller without entries still is one (its selectors decide), but
    // it can claim no SPIFFE ID at all.
    assert!(identities(&[], None).unwrap().is_empty());
    assert_eq!(
        identities(&[], Some(&a)).unwrap_err().status,
        StatusCode::FORBIDDEN
    );
}

fn selectors(list: &[&str]) -> SelectorSet {
    list.iter().map(|s| Selector::new(s).unwrap()).collect()
}

fn container() -> Workload {
    let mut w = Workload::partial(
        &"c".repeat(64),
        hallmark_core::RuntimeSource::Docker,
        "test",
    );
    w.image = "registry.example/pay/api:1".into();
    w.labels = BTreeMap::from([
        ("app".to_string(), "api".to_string()),
        ("tier".to_string(), "back".to_string()),
    ]);
    w.pod = Some(hallmark_core::PodInfo {
        namespace: "payments".into(),
        labels: BTreeMap::from([("tier".to_string(), "db".to_string())]),
        ..Default::default()
    });
    w
}

#[test]
fn the_caller_is_described_by_what_attestation_found() {
    let sel = selectors(&["unix:uid:1000", "docker:label:app:api"]);
    let w = container();
    let a = caller_attributes(
        "prod",
        "node-1",
        &sel,
        Some(&w),
        vec!["spiffe://example.org/api".into()],
    );
    assert_eq!(a.spiffe_ids, ["spiffe://example.org/api"]);
    assert_eq!(a.selectors, ["docker:label:app:api", "unix:uid:1000"]);
    assert_eq!((a.context.as_str(), a.node.as_str()), ("prod", "node-1"));
    assert_eq!(a.namespace, "payments");
    assert_eq!(a.image, "registry.example/pay/api:1");
    assert_eq!(
        a.labels["tier"], "db",
        "the pod's labels over the container's"
    );
    assert_eq!(a.labels["app"], "api");
    assert_eq!(a.addr, None);

    let host = caller_attributes("prod", "node-1", &sel, None, Vec::new());
    assert!(host.labels.is_empty() && host.namespace.is_empty() && host.image.is_empty());
    assert!(host.is_attested(), "selectors make it an attested endpoint");
}

const DOC: &str = "\
groups:
  api:
    - selector: docker:label:app:api
  payments:
    - namespace: payments
      labels: {tier: db}
  web:
    - spiffe_id: spiffe://example.org/web/*
  frontends:
    - selector: docker:label:app:frontend
rules:
  - name: web-to-api
    from: [web]
    to: [api]
    protocol: tcp
    ports: [\"443\"]
    action: allow
    priority: 10
  - name: frontends-to-payments
    from: [frontends]
    to: [payments]
    ports: [\"8000-8100\"]
    action: allow
    priority: 10
  - name: watch-web-dns
    from: [web]
    to: [api]
    protocol: udp
    ports: [\"53\"]
    action: deny
    mode: watch
    priority: 10
  - name: udp-open
    from: [any]
    to: [any]
    protocol: udp
    action: allow
    priority: 100
default: deny
";

fn agent_policy(groups: &[(&str, &[&str])]) -> AgentPolicy {
    AgentPolicy::default().next(&pb::SyncUpdate {
        policy_revision: 4,
        policy_document: DOC.into(),
        identity_groups: groups
            .iter()
            .map(|(id, g)| pb::IdentityGroups {
                spiffe_id: id.to_string(),
                groups: g.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
        identity_groups_sent: true,
        ..Default::default()
    })
}

fn ask(peer: &str, port: u16, protocol: Protocol) -> AuthorizeRequest {
    AuthorizeRequest {
        peer: SpiffeId::new(peer).unwrap(),
        port,
        protocol,
        spiffe_id: None,
    }
}

fn api_caller() -> Attributes {
    let w = container();
    caller_attributes(
        "prod",
        "node-1",
        &selectors(&["unix:uid:1000", "docker:label:app:api"]),
        Some(&w),
        vec!["spiffe://example.org/api".into()],
    )
}

#[test]
fn decisions_take_the_callers_groups_from_attestation_and_the_peers_from_the_server() {
    let state = agent_policy(&[("spiffe://example.org/fe", &["frontends"])]);
    assert_eq!(state.revision, 4);
    let caller = api_caller();

    // The bare ID of the peer matches `web` by glob.
    let d = decide(
        &state,
        &caller,
        &ask("spiffe://example.org/web/1", 443, Protocol::Tcp),
    );
    assert_eq!(d.verdict.outcome, Outcome::Allowed);
    assert_eq!(d.verdict.rule(), Some("web-to-api"));
    assert_eq!(d.workload_groups, ["api", "payments"]);
    assert_eq!(d.peer_groups, ["web"]);
    let json = d.to_json(
        &ask("spiffe://example.org/web/1", 443, Protocol::Tcp),
        &caller.spiffe_ids,
    );
    assert_eq!(
        json,
        json!({
            "allowed": true,
            "verdict": "allowed",
            "rule": "web-to-api",
            "mode": "enforce",
            "decided_by": "rule",
            "policy_revision": 4,
            "peer": "spiffe://example.org/web/1",
            "peer_groups": ["web"],
            "port": 443,
            "protocol": "tcp",
            "workload": {"spiffe_ids": ["spiffe://example.org/api"], "groups": ["api", "payments"]},
        })
    );

    // The peer is `frontends` only because the server says a running
    // workload holding its ID is; the caller is `payments` by its pod's
    // namespace and labels.
    let d = decide(
        &state,
        &caller,
        &ask("spiffe://example.org/fe", 8080, Protocol::Tcp),
    );
    assert_eq!(d.verdict.rule(), Some("frontends-to-payments"));
    assert_eq!(d.peer_groups, ["frontends"]);
    let unknown = agent_policy(&[]);
    let d = decide(
        &unknown,
        &caller,
        &ask("spiffe://example.org/fe", 8080, Protocol::Tcp),
    );
    assert_eq!(d.verdict.outcome, Outcome::Denied);
    assert!(d.peer_groups.is_empty());

    // Default deny: not allowed, decided by the default.
    let d = decide(
        &state,
        &caller,
        &ask("spiffe://example.org/web/1", 22, Protocol::Tcp),
    );
    assert_eq!(d.verdict.outcome, Outcome::Denied);
    let json = d.to_json(&ask("spiffe://example.org/web/1", 22, Protocol::Tcp), &[]);
    assert_eq!(json["allowed"], false);
    assert_eq!(json["verdict"], "denied");
    assert_eq!(json["decided_by"], "default");
    assert_eq!(json["rule"], Value::Null);
    assert_eq!(json["mode"], Value::Null);

    // A watch-mode deny is recorded, never enforced: allowed, would-deny.
    let dns = ask("spiffe://example.org/web/1", 53, Protocol::Udp);
    let d = decide(&state, &caller, &dns);
    assert_eq!(d.verdict.outcome, Outcome::WouldDeny);
    let json = d.to_json(&dns, &[]);
    assert_eq!(json["allowed"], true);
    assert_eq!(json["verdict"], "would-deny");
    assert_eq!(json["rule"], "watch-web-dns");
    assert_eq!(json["mode"], "watch");
    assert_eq!(json["protocol"], "udp");

    // The same question from a caller the groups do not describe.
    let other = caller_attributes(
        "prod",
        "node-1",
        &selectors(&["unix:uid:1001"]),
        None,
        vec!["spiffe://example.org/other".into()],
    );
    let d = decide(
        &state,
        &other,
        &ask("spiffe://example.org/web/1", 443, Protocol::Tcp),
    );
    assert_eq!(d.verdict.outcome, Outcome::Denied);
    assert!(d.workload_groups.is_empty());
}

#[test]
fn without_a_policy_everything_is_allowed_by_the_default() {
    let d = decide(
        &AgentPolicy::default(),
        &api_caller(),
        &ask("spiffe://example.org/web/1", 443, Protocol::Tcp),
    );
    let json = d.to_json(&ask("spiffe://example.org/web/1", 443, Protocol::Tcp), &[]);
    assert_eq!(json["allowed"], true);
    assert_eq!(json["verdict"], "allowed");
    assert_eq!(json["decided_by"], "default");
    assert_eq!(json["policy_revision"], 0);
}
