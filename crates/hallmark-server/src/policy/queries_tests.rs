//! The policy queries on a real server (in process, SQLite): inventory and
//! flows in through the calls the node and admin APIs make, the policy set
//! in force directly, answers out through the admin functions.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use hallmark_core::{Confidence, RuntimeSource, TrustDomain, Workload, WorkloadState};
use hallmark_policy::Policy;
use hallmark_proto::hallmark as pb;
use hallmark_store::{InventoryReport, WorkloadEvent, WorkloadEventKind};
use serde_json::Value;

use super::super::admin;
use super::super::CurrentPolicy;
use crate::{ServerConfig, ServerHandle, Shared};

const TD: &str = "policy.test";

fn now_ms() -> i64 {
    hallmark_core::time::unix_millis(std::time::SystemTime::now())
}

const POLICY: &str = "
groups:
  web:
    - labels: {app: web}
  db:
    - labels: {app: db}
  cache:
    - labels: {app: cache}
rules:
  - name: web-to-db
    from: [web]
    to: [db]
    protocol: tcp
    ports: [\"5432\"]
    action: allow
    priority: 100
  - name: web-not-to-cache
    from: [web]
    to: [cache]
    action: deny
    priority: 100
  - name: others-to-db
    from: [any]
    to: [db]
    action: deny
    mode: watch
    priority: 200
default: allow
";

fn cid(c: char) -> String {
    c.to_string().repeat(64)
}

async fn server(dir: &tempfile::TempDir) -> ServerHandle {
    let mut config = ServerConfig::new(TrustDomain::new(TD).unwrap(), dir.path().join("server"));
    // An unattributed end is stored soon after its flow arrives.
    config.flows.holdback = Duration::from_millis(1500);
    crate::start(config).await.unwrap()
}

fn set_policy(shared: &Shared, revision: i64, yaml: &str) {
    let doc = hallmark_policy::parse("test.yaml", yaml).unwrap().document;
    shared.policy.set(CurrentPolicy {
        revision,
        document: yaml.to_string(),
        policy: Policy::compile(&doc),
        applied_at_ms: now_ms(),
    });
}

fn agent() -> hallmark_core::SpiffeId {
    TrustDomain::new(TD).unwrap().agent_id("n1").unwrap()
}

async fn report(shared: &Shared, kind: WorkloadEventKind, c: char, app: &str, ip: &str, id: &str) {
    let mut w = Workload::partial(&cid(c), RuntimeSource::Docker, "");
    w.confidence = Confidence::Full;
    w.name = app.into();
    w.image = "busybox:1".into();
    w.state = if kind == WorkloadEventKind::Stopped {
        WorkloadState::Stopped
    } else {
        WorkloadState::Running
    };
    w.ips = vec![ip.into()];
    w.labels = [("app".to_string(), app.to_string())].into();
    w.selectors = vec![format!("docker:label:app:{app}")];
    if !id.is_empty() {
        w.spiffe_ids = vec![id.to_string()];
    }
    let report = InventoryReport {
        agent_id: agent(),
        context_name: "prod".into(),
        snapshot: None,
        events: vec![WorkloadEvent {
            kind,
            at_ms: now_ms() - 20_000,
            workload: w,
        }],
        runtime: None,
        dropped_events: 0,
    };
    shared
        .store
        .apply_inventory(&report, now_ms())
        .await
        .unwrap();
    shared.membership.changed();
    crate::flows::api::inventory_evidence(&shared.flows, &agent(), &report).await;
}

async fn heartbeats(shared: &Shared, from_ms: i64, addrs: &[(&str, char)]) {
    let mut at = from_ms;
    while at <= now_ms() {
        let hb = pb::OwnershipHeartbeat {
            context_name: "prod".into(),
            at_ms: at,
            addresses: addrs
                .iter()
                .map(|(ip, c)| pb::OwnedAddress {
                    ip: (*ip).into(),
                    port: 0,
                    container_id: cid(*c),
                })
                .collect(),
        };
        crate::flows::api::heartbeat(&shared.flows, &shared.metrics, &agent(), hb)
            .await
            .unwrap();
        at += 1000;
    }
}

fn rec(src: &str, dst: &str, at_ms: i64) -> pb::FlowRecord {
    let (si, sp) = src.rsplit_once(':').unwrap();
    let (di, dp) = dst.rsplit_once(':').unwrap();
    pb::FlowRecord {
        start_ms: at_ms,
        end_ms: at_ms + 20,
        protocol: 6,
        src_ip: si.into(),
        src_port: sp.parse().unwrap(),
        dst_ip: di.into(),
        dst_port: dp.parse().unwrap(),
        initiator: "source".into(),
        bytes_sent: 300,
        packets_sent: 3,
        ..Default::default()
    }
}

async fn ingest(shared: &Shared, recs: Vec<pb::FlowRecord>) {
    let resp = crate::flows::api::ingest(
        &shared.flows,
        &shared.metrics,
        pb::IngestFlowsRequest {
            source: "test.jsonl".into(),
            flows: recs,
        },
    )
    .await
    .unwrap();
    assert_eq!(resp.rejected, 0, "{resp:?}");
}

async fn stored_flows(shared: &Shared) -> usize {
    let json = shared
        .flow_queries
        .list(r#"{"since_ms":0,"limit":1000}"#)
        .await
        .unwrap();
    serde_json::from_str::<Vec<Value>>(&json).unwrap().len()
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

const WEB: &str = "spiffe://policy.test/web";
const DB: &str = "spiffe://policy.test/db";

/// web (10.0.0.5), db (10.0.0.6) and cache (10.0.0.7, no SPIFFE ID) run;
/// the policy is in force at revision 1. Returns the heartbeats' start.
async fn setup(shared: &Shared) -> i64 {
    let t0 = now_ms() - 20_000;
    report(
        shared,
        WorkloadEventKind::Started,
        'a',
        "web",
        "10.0.0.5",
        WEB,
    )
    .await;
    report(
        shared,
        WorkloadEventKind::Started,
        'b',
        "db",
        "10.0.0.6",
        DB,
    )
    .await;
    report(
        shared,
        WorkloadEventKind::Started,
        'c',
        "cache",
        "10.0.0.7",
        "",
    )
    .await;
    heartbeats(
        shared,
        t0,
        &[("10.0.0.5", 'a'), ("10.0.0.6", 'b'), ("10.0.0.7", 'c')],
    )
    .await;
    set_policy(shared, 1, POLICY);
    t0
}

#[tokio::test]
async fn groups_list_members_and_follow_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(&dir).await;
    let shared = h.shared.clone();
    setup(&shared).await;

    let groups = json(&admin::list_groups(&shared, "{}").await.unwrap());
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["any", "web", "db", "cache"]);
    assert_eq!(groups[0]["members"], 3, "{groups}");
    assert_eq!(groups[2]["members"], 1);
    assert_eq!(groups[2]["blocks"], json(r#"[{"labels":{"app":"db"}}]"#));
    assert_eq!(groups[2]["rules"], json(r#"["web-to-db","others-to-db"]"#));
    assert_eq!(groups[0]["rules"], json(r#"["others-to-db"]"#));

    let members = json(
        &admin::group_members(&shared, r#"{"group":"web"}"#)
            .await
            .unwrap(),
    );
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");
    let m = &members[0];
    assert_eq!(m["kind"], "workload");
    assert_eq!(m["container_id"], cid('a'));
    assert_eq!(
        (&m["context"], &m["node"]),
        (&json("\"prod\""), &json("\"n1\""))
    );
    assert_eq!(m["spiffe_ids"], json(&format!("[\"{WEB}\"]")));
    assert_eq!(m["selectors"], json(r#"["docker:label:app:web"]"#));
    assert_eq!(m["ips"], json(r#"["10.0.0.5"]"#));
    assert_eq!(m["labels"]["app"], "web");

    let err = admin::group_members(&shared, r#"{"group":"pay-db"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message()
            .contains("group `pay-db` is not defined in policy revision 1")
            && err.message().contains("hallmark group list"),
        "{}",
        err.message()
    );

    // The task publishes what each identity is, for agents.
    let mut rx = shared.identity_groups.subscribe();
    let t = Instant::now();
    while !rx.borrow().groups.contains_key(WEB) || rx.borrow().revision != 1 {
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", *rx.borrow());
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
    assert_eq!(rx.borrow().groups[WEB], ["any", "web"]);
    assert_eq!(rx.borrow().groups[DB], ["any", "db"]);

    // A second web starts: a member at once, with the same identity; it
    // stops: gone.
    report(
        &shared,
        WorkloadEventKind::Started,
        'd',
        "web",
        "10.0.0.8",
        WEB,
    )
    .await;
    let members = json(
        &admin::group_members(&shared, r#"{"group":"web"}"#)
            .await
            .unwrap(),
    );
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    report(
        &shared,
        WorkloadEventKind::Stopped,
        'a',
        "web",
        "10.0.0.5",
        WEB,
    )
    .await;
    report(
        &shared,
        WorkloadEventKind::Stopped,
        'd',
        "web",
        "10.0.0.8",
        WEB,
    )
    .await;
    let members = json(
        &admin::group_members(&shared, r#"{"group":"web"}"#)
            .await
            .unwrap(),
    );
    assert_eq!(members, json("[]"));
    // No running workload holds the web identity any more: agents stop
    // being told about it, and the gauge reads 0.
    let t = Instant::now();
    while rx.borrow().groups.contains_key(WEB) {
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", *rx.borrow());
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
    let metrics = h.status().metrics().await;
    assert!(
        metrics.contains("hallmark_server_policy_group_members{group=\"web\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hallmark_server_policy_group_members{group=\"db\"} 1"),
        "{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn check_decides_by_spiffe_id_workload_id_and_address() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(&dir).await;
    let shared = h.shared.clone();
    let t0 = setup(&shared).await;
    let check = async |req: String| json(&admin::check_policy(&shared, &req).await.unwrap());

    let a = check(format!(r#"{{"from":"{WEB}","to":"{DB}","port":5432}}"#)).await;
    assert_eq!(a["verdict"], "allowed", "{a}");
    assert_eq!(a["allowed"], true);
    assert_eq!(
        (&a["rule"], &a["mode"]),
        (&json("\"web-to-db\""), &json("\"enforce\""))
    );
    assert_eq!(
        (&a["action"], &a["decided_by"]),
        (&json("\"allow\""), &json("\"rule\""))
    );
    assert_eq!(a["policy_revision"], 1);
    assert_eq!(
        (&a["protocol"], &a["port"]),
        (&json("\"tcp\""), &json("5432"))
    );
    assert_eq!(a["from"]["kind"], "spiffe-id");
    assert_eq!(a["from"]["groups"], json(r#"["any","web"]"#));
    assert_eq!(a["from"]["workloads"][0]["container_id"], cid('a'));

    // Another port: no rule for web, the watch rule would deny.
    let a = check(format!(r#"{{"from":"{WEB}","to":"{DB}","port":22}}"#)).await;
    assert_eq!(
        (&a["verdict"], &a["allowed"]),
        (&json("\"would-deny\""), &json("true")),
        "{a}"
    );
    assert_eq!(
        (&a["rule"], &a["mode"]),
        (&json("\"others-to-db\""), &json("\"watch\""))
    );

    // By workload ID prefix.
    let a = check(format!(
        r#"{{"from":"{}","to":"{}","port":80,"protocol":"udp"}}"#,
        &cid('a')[..12],
        cid('c')
    ))
    .await;
    assert_eq!(
        (&a["verdict"], &a["allowed"]),
        (&json("\"denied\""), &json("false")),
        "{a}"
    );
    assert_eq!(a["rule"], "web-not-to-cache");
    assert_eq!(a["to"]["kind"], "workload");
    assert_eq!(a["to"]["groups"], json(r#"["any","cache"]"#));

    // By address, through the ownership index at that instant.
    let at = t0 + 4000;
    let a = check(format!(
        r#"{{"from":"10.0.0.7","to":"10.0.0.6","port":5432,"at_ms":{at}}}"#
    ))
    .await;
    assert_eq!(a["verdict"], "would-deny", "{a}");
    assert_eq!(a["from"]["kind"], "workload");
    assert_eq!(a["from"]["workloads"][0]["container_id"], cid('c'));
    assert_eq!(a["to"]["groups"], json(r#"["any","db"]"#));
    assert_eq!(a["at_ms"], at);
    // Without --at, "now": the inventory says who holds the address when
    // the evidence does not reach the instant yet.
    let a = check(r#"{"from":"10.0.0.5","to":"10.0.0.6","port":5432}"#.to_string()).await;
    assert_eq!(a["verdict"], "allowed", "{a}");
    assert_eq!(a["from"]["kind"], "workload");
    assert_eq!(a["from"]["workloads"][0]["container_id"], cid('a'));
    // An address nobody holds is an address alone: only `any` (and cidr
    // groups) match it.
    let a = check(format!(r#"{{"from":"192.0.2.1","to":"{DB}","port":5432}}"#)).await;
    assert_eq!(a["from"]["kind"], "address", "{a}");
    assert_eq!(a["from"]["groups"], json(r#"["any"]"#));
    assert_eq!(a["verdict"], "would-deny");

    // A SPIFFE ID no workload holds yet: the bare ID.
    let a = check(format!(
        r#"{{"from":"spiffe://policy.test/new","to":"{DB}","port":5432}}"#
    ))
    .await;
    assert_eq!(a["from"]["kind"], "spiffe-id", "{a}");
    assert_eq!(a["from"]["workloads"], json("[]"));
    assert_eq!(a["from"]["groups"], json(r#"["any"]"#));
    assert_eq!(a["verdict"], "would-deny");

    // Bad inputs name the input and the rule.
    for (req, want) in [
        (
            format!(r#"{{"from":"{WEB}","to":"{DB}","port":0}}"#),
            "port 0",
        ),
        (
            format!(r#"{{"from":"{WEB}","to":"{DB}","port":70000}}"#),
            "port 70000",
        ),
        (
            format!(r#"{{"from":"{WEB}","to":"{DB}","port":1,"protocol":"icmp"}}"#),
            "protocol `icmp`: must be tcp or udp",
        ),
        (
            format!(r#"{{"from":"spiffe://policy.test/a b","to":"{DB}","port":1}}"#),
            "from `spiffe://policy.test/a b` is not a SPIFFE ID",
        ),
        (
            format!(r#"{{"from":"{WEB}","to":"zz","port":1}}"#),
            "to: container ID `zz`",
        ),
    ] {
        let err = admin::check_policy(&shared, &req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{req}");
        assert!(err.message().contains(want), "{req}: {}", err.message());
    }
    h.shutdown().await;
}

#[tokio::test]
async fn audit_dry_run_and_suggest_over_recorded_flows() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(&dir).await;
    let shared = h.shared.clone();
    let t0 = setup(&shared).await;
    ingest(
        &shared,
        vec![
            rec("10.0.0.5:40000", "10.0.0.6:5432", t0 + 3000),
            rec("10.0.0.5:40001", "10.0.0.6:5432", t0 + 3500),
            rec("10.0.0.7:40002", "10.0.0.6:5432", t0 + 4000),
            rec("10.0.0.5:40003", "10.0.0.7:6379", t0 + 5000),
            // An unattributed end: no decision, in no audit.
            rec("192.0.2.9:40004", "10.0.0.6:5432", t0 + 5000),
        ],
    )
    .await;
    wait_for("5 stored flows", async || stored_flows(&shared).await == 5).await;

    let rows = json(&admin::audit_policy(&shared, "{}").await.unwrap());
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    // Newest first.
    assert_eq!(rows[0]["verdict"], "denied");
    assert_eq!(rows[0]["verdict_rule"], "web-not-to-cache");
    assert_eq!(rows[0]["verdict_mode"], "enforce");
    assert_eq!(rows[0]["policy_revision"], 1);
    assert_eq!(rows[0]["flow"]["dst"], "10.0.0.7:6379");
    assert_eq!(rows[1]["verdict"], "would-deny");
    assert_eq!(rows[1]["verdict_rule"], "others-to-db");
    let only = json(
        &admin::audit_policy(&shared, r#"{"verdict":"would-deny"}"#)
            .await
            .unwrap(),
    );
    assert_eq!(only.as_array().unwrap().len(), 1);
    let err = admin::audit_policy(&shared, r#"{"verdict":"allowed"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A candidate that allows anything to db and has no rule for cache.
    let candidate = "
groups:
  db:
    - labels: {app: db}
rules:
  - name: all-to-db
    from: [any]
    to: [db]
    protocol: tcp
    ports: [\"5432\"]
    action: allow
default: allow
";
    let req = serde_json::json!({"file": "cand.yaml", "document": candidate}).to_string();
    let d = json(&admin::dry_run_policy(&shared, &req).await.unwrap());
    assert_eq!(d["current_revision"], 1, "{d}");
    assert_eq!(d["flows_considered"], 4);
    assert_eq!(d["changed"], 2);
    let by_rule = d["by_rule"].as_array().unwrap();
    assert_eq!(by_rule.len(), 2, "{d}");
    let line = |rule: Value| by_rule.iter().find(|l| l["rule"] == rule).unwrap();
    let to_db = line(json("\"all-to-db\""));
    assert_eq!(
        (&to_db["from_verdict"], &to_db["to_verdict"]),
        (&json("\"would-deny\""), &json("\"allowed\""))
    );
    assert_eq!(
        (&to_db["flows"], &to_db["mode"]),
        (&json("1"), &json("\"enforce\""))
    );
    assert_eq!(to_db["examples"][0]["verdict"], "allowed");
    assert_eq!(to_db["examples"][0]["verdict_rule"], "all-to-db");
    let by_default = line(Value::Null);
    assert_eq!(
        (&by_default["from_verdict"], &by_default["to_verdict"]),
        (&json("\"denied\""), &json("\"allowed\""))
    );
    assert_eq!(d["unmatched"]["flows"], 1);
    assert_eq!(
        d["unmatched"]["examples"][0]["flow"]["dst"],
        "10.0.0.7:6379"
    );

    let bad = serde_json::json!({"file": "cand.yaml", "document": "rules:\n  - name: x\n    from: [nope]\n    to: [any]\n    action: allow\n"}).to_string();
    let err = admin::dry_run_policy(&shared, &bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("cand.yaml:3"), "{}", err.message());

    // Suggest from what was seen, put it in force: the seen traffic is
    // allowed, a new kind of flow would be denied.
    let s = json(
        &admin::suggest_policy(&shared, r#"{"by":"spiffe-id"}"#)
            .await
            .unwrap(),
    );
    assert_eq!(s["flows_considered"], 4, "{s}");
    let doc = s["document"].as_str().unwrap();
    let parsed = hallmark_policy::parse("suggested.yaml", doc)
        .unwrap()
        .document;
    assert_eq!(parsed.rules.len(), s["rules"].as_u64().unwrap() as usize);
    assert!(parsed
        .rules
        .iter()
        .all(|r| r.mode == hallmark_policy::Mode::Watch));
    set_policy(&shared, 2, doc);
    let rows = json(&admin::audit_policy(&shared, "{}").await.unwrap());
    assert_eq!(rows, json("[]"), "{doc}");
    ingest(
        &shared,
        vec![rec("10.0.0.6:40010", "10.0.0.5:22", t0 + 6000)],
    )
    .await;
    wait_for("6 stored flows", async || stored_flows(&shared).await == 6).await;
    let rows = json(&admin::audit_policy(&shared, "{}").await.unwrap());
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["verdict"], "would-deny");
    assert_eq!(rows[0]["verdict_rule"], hallmark_policy::CATCH_ALL_RULE);
    assert_eq!(rows[0]["policy_revision"], 2);

    let err = admin::suggest_policy(&shared, r#"{"by":"pod"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    h.shutdown().await;
}

#[test]
fn server_membership_keeps_one_entry_per_endpoint() {
    // The listing -> index step the task runs: additions, changes and
    // removals in one pass.
    use super::super::membership::{apply, Listing, Member, MemberKey};
    use hallmark_policy::{Attributes, Membership};
    let policy = Arc::new(Policy::compile(
        &hallmark_policy::parse("t", POLICY).unwrap().document,
    ));
    let key = |c: &str| MemberKey::Workload {
        context: "prod".into(),
        node: "n1".into(),
        container_id: c.into(),
    };
    let member = |app: &str| {
        let a = Attributes {
            labels: [("app".to_string(), app.to_string())].into(),
            context: "prod".into(),
            ..Attributes::default()
        };
        (
            Member::Node {
                context: "prod".into(),
                node: "n1".into(),
                spiffe_id: String::new(),
            },
            a,
        )
    };
    let mut index: Membership<MemberKey> = Membership::new(policy);
    let mut l = Listing::default();
    l.members.insert(key("a"), member("web"));
    l.members.insert(key("b"), member("db"));
    apply(&mut index, &l);
    assert_eq!(index.members("web").len(), 1);
    l.members.remove(&key("a"));
    l.members.insert(key("b"), member("web"));
    apply(&mut index, &l);
    assert_eq!(index.len(), 1);
    assert_eq!(index.members("web")[0].0, &key("b"));
    assert!(index.members("db").is_empty());
}
