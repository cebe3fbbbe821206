use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use hallmark_bpf::{Direction, EnforceEvent, Protocol, Verdict};
use hallmark_core::{RuntimeSource, Workload, WorkloadState};
use hallmark_flows::TcpOutcome;
use hallmark_policy::{parse, Policy};

use super::inputs::{dns_exempt, held_locally, locals, peers, resolvers};
use super::worker::event_flow;
use super::*;
use crate::capture::cgroups::LocalTag;
use crate::capture::convert::Clock;

fn workload(id: &str, app: &str, ip: &str, spiffe: &[&str]) -> Workload {
    let mut w = Workload::partial(&id.repeat(64), RuntimeSource::Docker, "test");
    w.state = WorkloadState::Running;
    w.labels = BTreeMap::from([("app".to_string(), app.to_string())]);
    w.selectors = vec![format!("docker:label:app:{app}")];
    w.spiffe_ids = spiffe.iter().map(|s| s.to_string()).collect();
    w.ips = vec![ip.to_string()];
    w.cgroup = format!("/docker/{}", id.repeat(64));
    w
}

fn policy(text: &str) -> Policy {
    Policy::compile(&parse("test.yaml", text).unwrap().document)
}

const DOC: &str = "groups:\n  web:\n    - selector: docker:label:app:web\n  db:\n    - labels: {app: db}\nrules:\n  - name: web-to-db\n    from: [web]\n    to: [db]\n    ports: [\"5432\"]\n    action: allow\ndefault: deny\n";

#[test]
fn modes_and_exit_policies_parse_and_name_the_key_when_wrong() {
    assert_eq!("watch".parse(), Ok(EnforcementMode::Watch));
    assert_eq!(EnforcementMode::default(), EnforcementMode::On);
    assert_eq!(OnAgentExit::default(), OnAgentExit::Keep);
    assert_eq!("detach".parse(), Ok(OnAgentExit::Detach));
    let e = "enforce".parse::<EnforcementMode>().unwrap_err();
    assert!(
        e.contains("enforcement `enforce`") && e.contains("off, watch or on"),
        "{e}"
    );
    let e = "stay".parse::<OnAgentExit>().unwrap_err();
    assert!(e.contains("on_agent_exit `stay`"), "{e}");
    assert_eq!(EnforcementMode::Watch.kernel(), hallmark_bpf::Mode::Watch);
}

#[test]
fn only_running_workloads_with_an_identity_and_a_cgroup_are_enforced() {
    let web = workload("a", "web", "172.30.0.2", &["spiffe://td/web"]);
    let mut stopped = workload("b", "web", "172.30.0.3", &["spiffe://td/web"]);
    stopped.state = WorkloadState::Stopped;
    let anonymous = workload("c", "web", "172.30.0.4", &[]);
    let no_cgroup = workload("d", "web", "172.30.0.5", &["spiffe://td/web"]);
    let agent_itself = workload("e", "web", "172.30.0.6", &["spiffe://td/web"]);
    let ids = |p: &str| match p.split('/').next_back().and_then(|s| s.chars().next()) {
        Some('d') => None,
        Some(c) => Some(c as u64),
        None => None,
    };
    let got = locals(
        &[web, stopped, anonymous, no_cgroup, agent_itself],
        "prod",
        "node-1",
        Some('e' as u64),
        &ids,
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].cgroup_id, 'a' as u64);
    let a = &got[0].attributes;
    assert_eq!(a.labels["app"], "web");
    assert_eq!(a.spiffe_ids, vec!["spiffe://td/web".to_string()]);
    assert_eq!(a.addr, Some("172.30.0.2".parse().unwrap()));
    assert_eq!((a.context.as_str(), a.node.as_str()), ("prod", "node-1"));
}

#[test]
fn peers_are_the_local_workloads_addresses_then_the_servers() {
    let p = policy(DOC);
    let web = workload("a", "web", "172.30.0.2", &["spiffe://td/web"]);
    let db = workload("b", "db", "172.30.0.3", &["spiffe://td/db"]);
    // Running here without an entry: still this node's first-hand address.
    let anonymous = workload("c", "db", "172.30.0.8", &[]);
    let mut gone = workload("d", "web", "172.30.0.9", &["spiffe://td/web"]);
    gone.state = WorkloadState::Stopped;
    let all = [web, db, anonymous, gone];
    assert_eq!(held_locally(&all).len(), 3);
    let server = vec![
        ("172.30.0.3".parse().unwrap(), vec!["web".to_string()]),
        ("10.0.0.9".parse().unwrap(), vec!["db".to_string()]),
        ("172.30.0.7".parse().unwrap(), vec!["db".to_string()]),
    ];
    let released = [
        "172.30.0.7".parse::<IpAddr>().unwrap(),
        "172.30.0.3".parse().unwrap(),
    ]
    .into_iter()
    .collect();
    let got = peers(&p, &all, "prod", "n", &server, &released);
    let map: BTreeMap<IpAddr, Vec<String>> = got.into_iter().collect();
    assert!(map[&"172.30.0.8".parse::<IpAddr>().unwrap()].contains(&"db".to_string()));
    assert!(!map.contains_key(&"172.30.0.9".parse::<IpAddr>().unwrap()));
    assert!(
        !map.contains_key(&"172.30.0.7".parse::<IpAddr>().unwrap()),
        "an address given up here is unknown until the server has caught up: {map:?}"
    );
    assert!(map[&"172.30.0.2".parse::<IpAddr>().unwrap()].contains(&"web".to_string()));
    assert!(
        map[&"172.30.0.3".parse::<IpAddr>().unwrap()].contains(&"db".to_string()),
        "what this node knows of its own workloads wins: {map:?}"
    );
    assert_eq!(
        map[&"10.0.0.9".parse::<IpAddr>().unwrap()],
        vec!["db".to_string()]
    );
}

#[test]
fn dns_to_the_resolvers_is_exempt_unless_a_rule_names_port_53() {
    let r = resolvers("# comment\nnameserver 10.0.0.2\nsearch x\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\nnameserver bogus\n");
    assert_eq!(
        r,
        vec![
            "10.0.0.2".parse::<IpAddr>().unwrap(),
            "fe80::1".parse().unwrap()
        ]
    );
    let e = dns_exempt(false, &r);
    assert_eq!(e.len(), 4);
    assert!(e
        .iter()
        .all(|x| x.port == 53 && x.direction == Direction::Egress));
    assert!(dns_exempt(true, &r).is_empty());
}

#[test]
fn a_denied_connect_is_a_refused_flow_of_no_bytes() {
    let local: SocketAddr = "172.30.0.2:40000".parse().unwrap();
    let remote: SocketAddr = "172.30.0.3:22".parse().unwrap();
    let ev = EnforceEvent {
        ts_ns: 5_000_000_000,
        cgroup_id: 7,
        local_ident: 1,
        remote_ident: 2,
        rule: 0,
        verdict: Verdict::Deny,
        protocol: Protocol::Tcp,
        direction: Direction::Egress,
        local,
        remote,
    };
    let tag = LocalTag {
        container_id: Some("a".repeat(64)),
        ..LocalTag::default()
    };
    let clock = Clock::with_offset_ns(1_700_000_000_000_000_000);
    let f = event_flow(&ev, &tag, "default", &clock, None, 3);
    assert_eq!((f.src, f.dst), (local, remote));
    let e = f.enforced.clone().unwrap();
    assert_eq!(e.verdict, hallmark_policy::Outcome::Denied);
    assert_eq!(
        (e.rule, e.mode, e.policy_revision),
        (None, None, 3),
        "the default"
    );
    assert_eq!(f.outcome, Some(TcpOutcome::Refused));
    assert_eq!(f.bytes_sent + f.bytes_received, 0);
    f.validate().unwrap();

    let inbound = EnforceEvent {
        verdict: Verdict::WouldDeny,
        direction: Direction::Ingress,
        ..ev
    };
    let f = event_flow(&inbound, &tag, "default", &clock, Some("admin".into()), 3);
    assert_eq!((f.src, f.dst), (remote, local), "the initiator first");
    assert_eq!(f.outcome, None);
    let e = f.enforced.clone().unwrap();
    assert_eq!(e.verdict, hallmark_policy::Outcome::WouldDeny);
    assert_eq!(e.rule.as_deref(), Some("admin"));
    assert_eq!(e.mode, Some(hallmark_policy::Mode::Watch));
    let record = crate::flows::to_record(&f);
    assert_eq!(
        (
            record.verdict.as_str(),
            record.verdict_rule.as_str(),
            record.verdict_mode.as_str(),
            record.policy_revision
        ),
        ("would-deny", "admin", "watch", 3)
    );
}

#[test]
fn the_status_line_says_mode_revision_and_pinning() {
    let s = EnforceStatus {
        state: EnforceState::Running,
        mode: "on".into(),
        revision: 3,
        workloads: 2,
        pin_dir: "/sys/fs/bpf/hallmark/n1".into(),
        taken_over: true,
        ..EnforceStatus::default()
    };
    let line = s.summary();
    assert!(line.starts_with("on (configured on)"), "{line}");
    assert!(line.contains("revision 3 in the kernel"), "{line}");
    assert!(
        line.contains("pinned at /sys/fs/bpf/hallmark/n1 (taken over)"),
        "{line}"
    );
}

#[test]
fn the_compiled_image_keeps_the_rules_and_the_default() {
    use super::image::compile;
    use super::inputs::{gather, Inputs};
    let p = policy(DOC);
    let web = workload("a", "web", "172.30.0.2", &["spiffe://td/web"]);
    let db = workload("b", "db", "172.30.0.3", &["spiffe://td/db"]);
    let ids = |p: &str| {
        p.split('/')
            .next_back()
            .and_then(|s| s.chars().next())
            .map(|c| c as u64)
    };
    let state = crate::policy::AgentPolicy {
        revision: 4,
        policy: std::sync::Arc::new(p.clone()),
        ..Default::default()
    };
    let ns: [IpAddr; 1] = ["10.0.0.2".parse().unwrap()];
    let inputs: Inputs = gather(
        &state,
        &[web, db],
        "prod",
        "n",
        None,
        &ids,
        &ns,
        &Default::default(),
    );
    let c = compile(&p, &inputs, hallmark_bpf::Mode::Watch).unwrap();
    assert_eq!(c.image.mode, hallmark_bpf::Mode::Watch);
    assert_eq!(c.image.default_verdict, Verdict::Deny);
    assert_eq!(c.image.locals.len(), 2);
    assert_eq!(
        c.image.exempt.len(),
        2,
        "DNS over UDP and TCP to the resolver"
    );
    assert_eq!(c.rule_name(0), "default");
    assert_eq!(c.rule_name(1), "web-to-db");
    // web → db's address on 5432: allowed by rule 1.
    let web_id = c.image.locals[0].1;
    let db_addr: IpAddr = "172.30.0.3".parse().unwrap();
    let db_peer = c
        .image
        .peers
        .iter()
        .find(|p| p.addr == db_addr)
        .unwrap()
        .ident;
    let (_, segs) = c
        .image
        .pairs
        .iter()
        .find(|(k, _)| {
            (k.local, k.remote, k.direction, k.protocol)
                == (web_id, db_peer, Direction::Egress, Protocol::Tcp)
        })
        .expect("a web → db pair");
    let at = |port: u16| segs.iter().rev().find(|s| s.start <= port).copied();
    let s = at(5432).unwrap();
    assert_eq!((s.verdict, s.rule), (Verdict::Allow, 1), "{segs:?}");
}
