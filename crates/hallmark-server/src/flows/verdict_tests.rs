//! Every stored flow carries the verdict of the policy in force when it
//! was stored, through the real pipeline on a real SQLite datastore.

use hallmark_flows::api::GraphAnswer;
use hallmark_policy::{Mode, Outcome, Policy};

use super::*;
use crate::policy::CurrentPolicy;

const POLICY: &str = r#"
groups:
  web: [{spiffe_id: "spiffe://flows.test/web"}]
  db: [{spiffe_id: "spiffe://flows.test/db"}]
  batch: [{spiffe_id: "spiffe://flows.test/batch"}]
rules:
  - {name: web-to-db, from: [web], to: [db], protocol: tcp, ports: ["5432"], action: allow}
  - {name: batch-to-db, from: [batch], to: [db], protocol: tcp, ports: ["5432"], action: allow}
  - {name: batch-watch, from: [batch], to: [db], action: deny, mode: watch}
default: deny
"#;

pub(super) fn in_force(revision: i64, text: &str) -> CurrentPolicy {
    let doc = hallmark_policy::parse("p.yaml", text).unwrap().document;
    CurrentPolicy {
        revision,
        document: text.into(),
        policy: Policy::compile(&doc),
        applied_at_ms: now_ms(),
    }
}

fn initiated(src: &str, dst: &str, at_ms: i64) -> pb::FlowRecord {
    pb::FlowRecord {
        initiator: "source".into(),
        ..rec(src, dst, at_ms)
    }
}

type Reason = (Option<String>, Option<Mode>);
type Said = (Option<Outcome>, Option<String>, Option<Mode>, Option<i64>);

fn said(f: &StoredFlow) -> Said {
    (
        f.verdict,
        f.verdict_rule.clone(),
        f.verdict_mode,
        f.policy_revision,
    )
}

#[tokio::test]
async fn stored_flows_carry_the_verdict_of_the_policy_in_force() {
    let f = fixture().await;
    f.policy.set(in_force(5, POLICY));
    let t0 = now_ms() - 10_000;
    report_workload(&f, 'a', "web", "10.0.0.5", &["spiffe://flows.test/web"], t0).await;
    report_workload(&f, 'b', "db", "10.0.0.6", &["spiffe://flows.test/db"], t0).await;
    report_workload(
        &f,
        'c',
        "batch",
        "10.0.0.7",
        &["spiffe://flows.test/batch"],
        t0,
    )
    .await;
    for i in 0..=10 {
        f.heartbeat(
            t0 + i * 1000,
            &[
                ("10.0.0.5", &cid('a')),
                ("10.0.0.6", &cid('b')),
                ("10.0.0.7", &cid('c')),
            ],
        )
        .await;
    }
    let resp = f
        .ingest(vec![
            initiated("10.0.0.5:40000", "10.0.0.6:5432", t0 + 4000),
            initiated("10.0.0.5:40001", "10.0.0.6:5432", t0 + 4100),
            initiated("10.0.0.7:40000", "10.0.0.6:5432", t0 + 4000),
            initiated("10.0.0.6:40000", "10.0.0.5:80", t0 + 4000),
            // Nobody ever held 10.0.0.99: an unattributed end.
            initiated("10.0.0.99:40000", "10.0.0.6:5432", t0 + 4000),
            // The initiator unknown: the acceptor's port is a guess.
            rec("10.0.0.5:40002", "10.0.0.6:5432", t0 + 4000),
        ])
        .await;
    assert_eq!((resp.accepted, resp.rejected), (6, 0), "{resp:?}");
    let list = wait_for("6 stored flows", async || {
        let l = f.list().await;
        (l.len() == 6).then_some(l)
    })
    .await;
    let by = |ip: &str, port: u16| {
        list.iter()
            .find(|s| s.flow.src.port() == port && s.flow.src.ip().to_string() == ip)
            .unwrap()
    };
    let rule = |n: &str, m: Mode| (Some(n.to_string()), Some(m));
    let want: [(&str, u16, Outcome, Reason); 6] = [
        (
            "10.0.0.5",
            40000,
            Outcome::Allowed,
            rule("web-to-db", Mode::Enforce),
        ),
        (
            "10.0.0.5",
            40001,
            Outcome::Allowed,
            rule("web-to-db", Mode::Enforce),
        ),
        (
            "10.0.0.7",
            40000,
            Outcome::WouldDeny,
            rule("batch-watch", Mode::Watch),
        ),
        ("10.0.0.6", 40000, Outcome::Denied, (None, None)),
        ("10.0.0.99", 40000, Outcome::NoDecision, (None, None)),
        ("10.0.0.5", 40002, Outcome::NoDecision, (None, None)),
    ];
    for (ip, port, outcome, (r, m)) in want {
        assert_eq!(
            said(by(ip, port)),
            (Some(outcome), r, m, Some(5)),
            "{ip}:{port}: {:?}",
            by(ip, port)
        );
    }
    assert!(matches!(
        by("10.0.0.99", 40000).src,
        Endpoint::Unattributed { .. }
    ));

    // `verdict` narrows a listing.
    let denied: Vec<StoredFlow> = serde_json::from_str(
        &f.started
            .queries
            .list(r#"{"since_ms":0,"limit":100,"verdict":"denied"}"#)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].flow.dst.port(), 80);

    // The graph counts verdicts per edge and names the worst.
    let graph: GraphAnswer = serde_json::from_str(
        &f.started
            .queries
            .graph(r#"{"since_ms":0,"by":"spiffe-id"}"#)
            .await
            .unwrap(),
    )
    .unwrap();
    let edge = |src: &str, dst: &str, port: u16| {
        graph
            .edges
            .iter()
            .find(|e| e.src == src && e.dst == dst && e.dst_port == port)
            .unwrap_or_else(|| panic!("{src} -> {dst}:{port} in {:#?}", graph.edges))
    };
    let web_db = edge("spiffe://flows.test/web", "spiffe://flows.test/db", 5432);
    assert_eq!(web_db.flows, 3);
    assert_eq!(
        (web_db.verdicts.allowed, web_db.verdicts.no_decision),
        (2, 1)
    );
    assert_eq!(web_db.verdict, Some(Outcome::Allowed));
    let batch_db = edge("spiffe://flows.test/batch", "spiffe://flows.test/db", 5432);
    assert_eq!(batch_db.verdicts.would_deny, 1);
    assert_eq!(batch_db.verdict, Some(Outcome::WouldDeny));
    let db_web = edge("spiffe://flows.test/db", "spiffe://flows.test/web", 80);
    assert_eq!(db_web.verdict, Some(Outcome::Denied));

    let metrics = f.metrics.render();
    for line in [
        r#"hallmark_server_flow_verdicts_total{verdict="allowed"} 2"#,
        r#"hallmark_server_flow_verdicts_total{verdict="would-deny"} 1"#,
        r#"hallmark_server_flow_verdicts_total{verdict="denied"} 1"#,
        r#"hallmark_server_flow_verdicts_total{verdict="no-decision"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // A new revision decides the flows stored from now on; stored flows
    // keep what the policy said when they were stored.
    f.policy.set(in_force(6, "default: allow\n"));
    f.ingest(vec![initiated("10.0.0.6:40001", "10.0.0.5:80", t0 + 6000)])
        .await;
    let list = wait_for("7 stored flows", async || {
        let l = f.list().await;
        (l.len() == 7).then_some(l)
    })
    .await;
    let again = |port: u16| {
        list.iter()
            .find(|s| s.flow.src.port() == port && s.flow.src.ip().to_string() == "10.0.0.6")
            .unwrap()
    };
    assert_eq!(
        said(again(40001)),
        (Some(Outcome::Allowed), None, None, Some(6))
    );
    assert_eq!(
        said(again(40000)),
        (Some(Outcome::Denied), None, None, Some(5))
    );
    f.stop().await;
}
