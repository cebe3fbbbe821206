#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use crate::{parse, Action, Attributes, DecidedBy, Mode, Outcome, Policy, Protocol, Verdict};

use Outcome::{Allowed, Denied, WouldDeny};
use Protocol::{Tcp, Udp};

fn compile(yaml: &str) -> Policy {
    Policy::compile(&parse("test.yaml", yaml).unwrap().document)
}

/// Who decided, in a table's words: `rule-name/mode` or `default`.
fn by(v: &Verdict) -> String {
    match &v.decided_by {
        DecidedBy::Rule { name, mode, .. } => format!("{name}/{}", mode.as_str()),
        DecidedBy::Default { .. } => "default".to_string(),
        DecidedBy::Nothing => "nothing".to_string(),
    }
}

fn wl(app: &str) -> Attributes {
    Attributes {
        spiffe_ids: vec![format!("spiffe://example.org/ns/shop/sa/{app}")],
        selectors: vec![format!("docker:label:app:{app}")],
        namespace: "shop".into(),
        labels: [("app".to_string(), app.to_string())].into(),
        context: "prod".into(),
        node: "n1".into(),
        addr: Some("10.0.0.5".parse().unwrap()),
        ..Attributes::default()
    }
}

type Row<'a> = (
    &'a str,
    Attributes,
    Attributes,
    Protocol,
    u16,
    Outcome,
    &'a str,
);

fn check(p: &Policy, rows: Vec<Row<'_>>) {
    for (what, from, to, proto, port, outcome, decided) in rows {
        let v = p.decide(&p.groups_of(&from), &p.groups_of(&to), proto, port);
        assert_eq!((v.outcome, by(&v).as_str()), (outcome, decided), "{what}");
    }
}

const GROUPS: &str = r#"
groups:
  web: [{selector: "docker:label:app:web"}]
  api: [{selector: "docker:label:app:api"}]
  db: [{selector: "docker:label:app:db"}]
  corp: [{cidr: 10.8.0.0/16}]
"#;

#[test]
fn priority_order_and_deny_wins_ties() {
    let p = compile(&format!(
        "{GROUPS}
rules:
  - {{name: allow-web-db-late, from: [web], to: [db], action: allow, priority: 500}}
  - {{name: deny-web-db, from: [web], to: [db], ports: ['5432'], action: deny, priority: 200}}
  - {{name: allow-web-db, from: [web], to: [db], ports: ['5432'], action: allow, priority: 100}}
  - {{name: tie-allow-first, from: [api], to: [db], action: allow, priority: 10}}
  - {{name: tie-deny, from: [api], to: [db], ports: ['6379'], action: deny, priority: 10}}
  - {{name: tie-allow-second, from: [api], to: [db], action: allow, priority: 10}}
  - {{name: tie-deny-second, from: [any], to: [db], ports: ['6379'], action: deny, priority: 10}}
default: deny
"
    ));
    check(
        &p,
        vec![
            (
                "lower priority first",
                wl("web"),
                wl("db"),
                Tcp,
                5432,
                Allowed,
                "allow-web-db/enforce",
            ),
            (
                "next level when the first does not match",
                wl("web"),
                wl("db"),
                Tcp,
                80,
                Allowed,
                "allow-web-db-late/enforce",
            ),
            (
                "deny beats allow at one priority",
                wl("api"),
                wl("db"),
                Tcp,
                6379,
                Denied,
                "tie-deny/enforce",
            ),
            (
                "first allow in document order is named",
                wl("api"),
                wl("db"),
                Tcp,
                80,
                Allowed,
                "tie-allow-first/enforce",
            ),
            (
                "no rule: default",
                wl("db"),
                wl("web"),
                Tcp,
                80,
                Denied,
                "default",
            ),
        ],
    );
}

#[test]
fn watch_and_enforce() {
    let p = compile(&format!(
        "{GROUPS}
rules:
  - {{name: watch-allow, from: [web], to: [db], action: allow, mode: watch, priority: 10}}
  - {{name: enforce-deny, from: [web], to: [db], action: deny, priority: 100}}
  - {{name: watch-deny, from: [api], to: [db], action: deny, mode: watch, priority: 10}}
  - {{name: enforce-allow, from: [api], to: [db], action: allow, priority: 100}}
  - {{name: enforce-allow-first, from: [web], to: [api], action: allow, priority: 10}}
  - {{name: watch-deny-later, from: [web], to: [api], action: deny, mode: watch, priority: 100}}
  - {{name: watch-deny-only, from: [db], to: [web], action: deny, mode: watch}}
  - {{name: watch-allow-only, from: [db], to: [api], action: allow, mode: watch}}
  - {{name: enforce-allow-tie, from: [api], to: [web], action: allow, priority: 5}}
  - {{name: watch-deny-tie, from: [api], to: [web], action: deny, mode: watch, priority: 5}}
"
    ));
    check(
        &p,
        vec![
            (
                "a watch allow in front of an enforce deny does not lift it",
                wl("web"),
                wl("db"),
                Tcp,
                1,
                Denied,
                "enforce-deny/enforce",
            ),
            (
                "a watch deny in front of an enforce allow: would-deny",
                wl("api"),
                wl("db"),
                Tcp,
                1,
                WouldDeny,
                "watch-deny/watch",
            ),
            (
                "an enforce allow in front of a watch deny: allowed",
                wl("web"),
                wl("api"),
                Tcp,
                1,
                Allowed,
                "enforce-allow-first/enforce",
            ),
            (
                "a watch deny alone: would-deny",
                wl("db"),
                wl("web"),
                Tcp,
                1,
                WouldDeny,
                "watch-deny-only/watch",
            ),
            (
                "a watch allow alone: allowed, by the watch rule",
                wl("db"),
                wl("api"),
                Tcp,
                1,
                Allowed,
                "watch-allow-only/watch",
            ),
            (
                "a watch deny ties an enforce allow: would-deny",
                wl("api"),
                wl("web"),
                Tcp,
                1,
                WouldDeny,
                "watch-deny-tie/watch",
            ),
        ],
    );
}

#[test]
fn default_allow_and_deny() {
    let watch_only = "
  - {name: watch-allow, from: [web], to: [db], action: allow, mode: watch}
  - {name: watch-deny, from: [db], to: [web], action: deny, mode: watch}";
    let allow = compile(&format!("{GROUPS}rules:{watch_only}\ndefault: allow\n"));
    let deny = compile(&format!("{GROUPS}rules:{watch_only}\ndefault: deny\n"));
    let implicit = compile(&format!("{GROUPS}rules:{watch_only}\n"));
    check(
        &allow,
        vec![
            (
                "default allow",
                wl("web"),
                wl("api"),
                Tcp,
                80,
                Allowed,
                "default",
            ),
            (
                "watch allow under default allow",
                wl("web"),
                wl("db"),
                Tcp,
                80,
                Allowed,
                "watch-allow/watch",
            ),
            (
                "watch deny under default allow",
                wl("db"),
                wl("web"),
                Tcp,
                80,
                WouldDeny,
                "watch-deny/watch",
            ),
        ],
    );
    check(
        &implicit,
        vec![(
            "default is allow",
            wl("web"),
            wl("api"),
            Tcp,
            80,
            Allowed,
            "default",
        )],
    );
    check(
        &deny,
        vec![
            (
                "default deny",
                wl("web"),
                wl("api"),
                Tcp,
                80,
                Denied,
                "default",
            ),
            (
                "a watch allow does not lift default deny",
                wl("web"),
                wl("db"),
                Tcp,
                80,
                Denied,
                "default",
            ),
            (
                "watch deny under default deny",
                wl("db"),
                wl("web"),
                Tcp,
                80,
                Denied,
                "default",
            ),
        ],
    );
    let v = deny.decide(
        &deny.groups_of(&wl("web")),
        &deny.groups_of(&wl("api")),
        Tcp,
        80,
    );
    assert_eq!(
        v.decided_by,
        DecidedBy::Default {
            action: Action::Deny
        }
    );
}

#[test]
fn protocols_and_ports() {
    let p = compile(&format!(
        "{GROUPS}
rules:
  - {{name: tcp-ranges, from: [web], to: [db], protocol: tcp, ports: ['5432', '8000-8100'], action: allow}}
  - {{name: udp-dns, from: [web], to: [db], protocol: udp, ports: ['53'], action: allow}}
  - {{name: any-proto, from: [api], to: [db], protocol: any, ports: ['9000'], action: allow}}
  - {{name: implicit-any, from: [api], to: [web], ports: ['1-1024'], action: allow}}
  - {{name: all-ports, from: [db], to: [web], protocol: tcp, action: allow}}
  - {{name: top-port, from: [db], to: [api], ports: ['65535'], action: allow}}
default: deny
"
    ));
    check(
        &p,
        vec![
            (
                "single port",
                wl("web"),
                wl("db"),
                Tcp,
                5432,
                Allowed,
                "tcp-ranges/enforce",
            ),
            (
                "range start",
                wl("web"),
                wl("db"),
                Tcp,
                8000,
                Allowed,
                "tcp-ranges/enforce",
            ),
            (
                "range end",
                wl("web"),
                wl("db"),
                Tcp,
                8100,
                Allowed,
                "tcp-ranges/enforce",
            ),
            (
                "below range",
                wl("web"),
                wl("db"),
                Tcp,
                7999,
                Denied,
                "default",
            ),
            (
                "above range",
                wl("web"),
                wl("db"),
                Tcp,
                8101,
                Denied,
                "default",
            ),
            (
                "between ports",
                wl("web"),
                wl("db"),
                Tcp,
                5433,
                Denied,
                "default",
            ),
            (
                "tcp rule, udp flow",
                wl("web"),
                wl("db"),
                Udp,
                5432,
                Denied,
                "default",
            ),
            (
                "udp rule",
                wl("web"),
                wl("db"),
                Udp,
                53,
                Allowed,
                "udp-dns/enforce",
            ),
            (
                "udp rule, tcp flow",
                wl("web"),
                wl("db"),
                Tcp,
                53,
                Denied,
                "default",
            ),
            (
                "any: tcp",
                wl("api"),
                wl("db"),
                Tcp,
                9000,
                Allowed,
                "any-proto/enforce",
            ),
            (
                "any: udp",
                wl("api"),
                wl("db"),
                Udp,
                9000,
                Allowed,
                "any-proto/enforce",
            ),
            (
                "protocol absent is any",
                wl("api"),
                wl("web"),
                Udp,
                1024,
                Allowed,
                "implicit-any/enforce",
            ),
            (
                "ports absent: every port",
                wl("db"),
                wl("web"),
                Tcp,
                1,
                Allowed,
                "all-ports/enforce",
            ),
            (
                "ports absent: every port, top",
                wl("db"),
                wl("web"),
                Tcp,
                65535,
                Allowed,
                "all-ports/enforce",
            ),
            (
                "port 65535",
                wl("db"),
                wl("api"),
                Tcp,
                65535,
                Allowed,
                "top-port/enforce",
            ),
            (
                "port 65534",
                wl("db"),
                wl("api"),
                Tcp,
                65534,
                Denied,
                "default",
            ),
        ],
    );
}

#[test]
fn any_group_cidr_groups_and_unknown_endpoints() {
    let p = compile(&format!(
        "{GROUPS}
rules:
  - {{name: corp-to-web, from: [corp], to: [web], ports: ['443'], action: allow, priority: 10}}
  - {{name: nobody-to-db, from: [any], to: [db], action: deny, priority: 20}}
  - {{name: web-out, from: [web], to: [any], protocol: tcp, ports: ['443'], action: allow, priority: 30}}
  - {{name: by-id, from: [api], to: [web], action: allow, priority: 40}}
default: deny
"
    ));
    let corp_host = Attributes::address("10.8.1.1".parse().unwrap());
    let internet = Attributes::address("93.184.216.34".parse().unwrap());
    let v6 = Attributes::address("2001:db8::1".parse().unwrap());
    let bare_web = Attributes::spiffe_id("spiffe://example.org/ns/shop/sa/web");
    check(
        &p,
        vec![
            (
                "unattributed address in a CIDR group",
                corp_host.clone(),
                wl("web"),
                Tcp,
                443,
                Allowed,
                "corp-to-web/enforce",
            ),
            (
                "a CIDR group member on another port",
                corp_host.clone(),
                wl("web"),
                Tcp,
                80,
                Denied,
                "default",
            ),
            (
                "any includes unattributed ends",
                internet.clone(),
                wl("db"),
                Tcp,
                5432,
                Denied,
                "nobody-to-db/enforce",
            ),
            (
                "any includes workloads",
                wl("web"),
                wl("db"),
                Tcp,
                5432,
                Denied,
                "nobody-to-db/enforce",
            ),
            (
                "to any: an external IPv4 address",
                wl("web"),
                internet.clone(),
                Tcp,
                443,
                Allowed,
                "web-out/enforce",
            ),
            (
                "to any: an external IPv6 address",
                wl("web"),
                v6,
                Tcp,
                443,
                Allowed,
                "web-out/enforce",
            ),
            (
                "an unknown initiator matches no group but any",
                internet,
                wl("web"),
                Tcp,
                443,
                Denied,
                "default",
            ),
            (
                "a bare SPIFFE ID is in no selector group",
                bare_web,
                wl("db"),
                Tcp,
                443,
                Denied,
                "nobody-to-db/enforce",
            ),
            (
                "nothing known about either end",
                Attributes::default(),
                Attributes::default(),
                Udp,
                53,
                Denied,
                "default",
            ),
        ],
    );
}

#[test]
fn spiffe_groups_decide_for_bare_ids() {
    let p = compile(
        r#"
groups:
  payments: [{spiffe_id: "spiffe://example.org/ns/payments/*"}]
  db: [{spiffe_id: "spiffe://example.org/ns/*/sa/db"}]
  labelled-db: [{labels: {tier: db}}]
rules:
  - {name: payments-to-db, from: [payments], to: [db], ports: ['5432'], action: allow}
  - {name: not-labelled, from: [any], to: [labelled-db], action: deny, priority: 1}
default: deny
"#,
    );
    let id = Attributes::spiffe_id;
    check(
        &p,
        vec![
            (
                "design check by SPIFFE IDs",
                id("spiffe://example.org/ns/payments/sa/api/v2"),
                id("spiffe://example.org/ns/billing/sa/db"),
                Tcp,
                5432,
                Allowed,
                "payments-to-db/enforce",
            ),
            (
                "segment glob does not span",
                id("spiffe://example.org/ns/payments/sa/api"),
                id("spiffe://example.org/ns/a/b/sa/db"),
                Tcp,
                5432,
                Denied,
                "default",
            ),
            (
                "trailing glob needs a segment below",
                id("spiffe://example.org/ns/payments"),
                id("spiffe://example.org/ns/x/sa/db"),
                Tcp,
                5432,
                Denied,
                "default",
            ),
        ],
    );
}

#[test]
fn verdicts_serialize_with_stable_names() {
    let p = compile(&format!(
        "{GROUPS}
rules:
  - {{name: watch-deny, from: [web], to: [db], action: deny, mode: watch}}
"
    ));
    let v = p.decide(&p.groups_of(&wl("web")), &p.groups_of(&wl("db")), Tcp, 1);
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"outcome":"would-deny","decided_by":{"by":"rule","name":"watch-deny","mode":"watch","action":"deny"}}"#
    );
    let v = p.decide(&p.groups_of(&wl("db")), &p.groups_of(&wl("db")), Tcp, 1);
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"outcome":"allowed","decided_by":{"by":"default","action":"allow"}}"#
    );
    assert_eq!(
        serde_json::to_string(&Verdict::no_decision()).unwrap(),
        r#"{"outcome":"no-decision","decided_by":{"by":"nothing"}}"#
    );
    for (o, text) in [
        (Outcome::Allowed, "\"allowed\""),
        (Outcome::Denied, "\"denied\""),
        (Outcome::WouldDeny, "\"would-deny\""),
        (Outcome::NoDecision, "\"no-decision\""),
    ] {
        assert_eq!(serde_json::to_string(&o).unwrap(), text);
        assert_eq!(serde_json::from_str::<Outcome>(text).unwrap(), o);
    }
    let back: Verdict = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(back, v);
    assert_eq!(Mode::Watch.as_str(), "watch");
}

/// The index must give the answer a plain scan of the rules gives, for
/// every group pair, protocol and a spread of ports.
#[test]
fn index_agrees_with_a_scan_of_the_rules() {
    let mut yaml = String::from("groups:\n");
    for g in 0..12 {
        yaml.push_str(&format!(
            "  g{g}: [{{selector: \"docker:label:app:g{g}\"}}]\n"
        ));
    }
    yaml.push_str("rules:\n");
    // A deterministic spread of rules: overlapping port ranges, both
    // modes, both actions, a few priorities, any on either side.
    let mut x: u64 = 7;
    let mut next = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    for r in 0..300 {
        let from = match next(6) {
            0 => "any".to_string(),
            _ => format!("g{}", next(12)),
        };
        let to = match next(6) {
            0 => "any".to_string(),
            _ => format!("g{}", next(12)),
        };
        let lo = 1 + next(100);
        let ports = match next(3) {
            0 => String::new(),
            1 => format!(", ports: ['{lo}']"),
            _ => format!(", ports: ['{lo}-{}', '{}']", lo + next(50), 200 + next(5)),
        };
        let protocol = ["tcp", "udp", "any"][next(3) as usize];
        let action = ["allow", "deny"][next(2) as usize];
        let mode = ["enforce", "watch"][next(2) as usize];
        yaml.push_str(&format!(
            "  - {{name: r{r}, from: [{from}, g{}], to: [{to}], protocol: {protocol}{ports}, action: {action}, mode: {mode}, priority: {}}}\n",
            next(12),
            next(5) * 10
        ));
    }
    let doc = parse("random.yaml", &yaml).unwrap().document;
    let p = Policy::compile(&doc);

    // The specification, written as directly as possible.
    let scan =
        |from: &Attributes, to: &Attributes, proto: Protocol, port: u16, enforce_only: bool| {
            let (fg, tg) = (p.groups_of(from), p.groups_of(to));
            let in_any = |set: &crate::GroupSet, names: &[String]| {
                names
                    .iter()
                    .any(|n| p.group_id(n).is_some_and(|id| set.contains(id)))
            };
            let matching: Vec<(usize, &crate::Rule)> = doc
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| !enforce_only || r.mode == Mode::Enforce)
                .filter(|(_, r)| in_any(&fg, &r.from) && in_any(&tg, &r.to))
                .filter(|(_, r)| r.protocol.matches(proto))
                .filter(|(_, r)| r.ports.is_empty() || r.ports.iter().any(|pr| pr.contains(port)))
                .collect();
            let top = matching.iter().map(|(_, r)| r.priority).min()?;
            let level: Vec<_> = matching.iter().filter(|(_, r)| r.priority == top).collect();
            level
                .iter()
                .find(|(_, r)| r.action == Action::Deny)
                .or_else(|| level.first())
                .map(|(i, r)| (*i, r.action, r.mode))
        };
    let mut decided = [0usize; 3];
    for f in 0..12 {
        for t in 0..12 {
            for proto in [Tcp, Udp] {
                for port in [
                    1, 2, 50, 99, 100, 101, 150, 151, 200, 202, 204, 205, 1000, 65535,
                ] {
                    let (from, to) = (wl(&format!("g{f}")), wl(&format!("g{t}")));
                    let enforced = scan(&from, &to, proto, port, true);
                    let full = scan(&from, &to, proto, port, false);
                    let (outcome, rule) = match (enforced, full) {
                        (Some((i, Action::Deny, _)), _) => (Denied, Some(i)),
                        (_, Some((i, Action::Deny, _))) => (WouldDeny, Some(i)),
                        (_, Some((i, Action::Allow, _))) => (Allowed, Some(i)),
                        (_, None) => (Allowed, None),
                    };
                    let v = p.decide(&p.groups_of(&from), &p.groups_of(&to), proto, port);
                    let want = rule.map(|i| doc.rules[i].name.as_str());
                    assert_eq!(
                        (v.outcome, v.rule()),
                        (outcome, want),
                        "g{f} -> g{t} {proto:?}/{port}"
                    );
                    decided[outcome as usize] += 1;
                }
            }
        }
    }
    // The table exercised every outcome.
    assert!(decided.iter().all(|n| *n > 0), "{decided:?}");
}

#[test]
fn sets_by_name_and_their_union() {
    let p = compile(&format!("{GROUPS}\nrules: []\n"));
    let web = p.set_of(["web", "no-such-group"]);
    assert_eq!(p.names_in(&web).collect::<Vec<_>>(), ["any", "web"]);
    let mut both = p.set_of(["db"]);
    both.union_with(&web);
    assert_eq!(p.names_in(&both).collect::<Vec<_>>(), ["any", "web", "db"]);
    // A shorter (default) set takes a longer one's words.
    let mut empty = crate::GroupSet::default();
    empty.union_with(&both);
    assert_eq!(empty, both);
    assert_eq!(p.groups_of(&wl("web")), web);
    assert_eq!(both.intersection(&web).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(p.set_of(["db"]).intersection(&p.set_of(["web"])).count(), 1);
}
