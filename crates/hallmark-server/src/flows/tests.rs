//! The pipeline on a real SQLite datastore: evidence and flows in through
//! the same calls the node and admin APIs make, answers out through the
//! admin queries.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::sync::Arc;
use std::time::Duration;

use hallmark_core::{Confidence, RuntimeSource, SpiffeId, TrustDomain, Workload, WorkloadState};
use hallmark_flows::api::{FlowStatsAnswer, WhoisAnswer, WhoisVerdict};
use hallmark_flows::{Endpoint, FlowStatus, StoredFlow};
use hallmark_proto::hallmark as pb;
use hallmark_store::prelude::*;
use hallmark_store::{InventoryReport, SqliteStore, WorkloadEvent, WorkloadEventKind};
use tokio::sync::watch;

use super::pipeline::now_ms;
use super::*;
use crate::metrics::ServerMetrics;

const TD: &str = "flows.test";

struct Fixture {
    store: Arc<SqliteStore>,
    policy: Arc<crate::policy::PolicyCell>,
    started: FlowsStarted,
    metrics: Arc<ServerMetrics>,
    shutdown: watch::Sender<bool>,
    dir: tempfile::TempDir,
}

fn config() -> FlowConfig {
    FlowConfig {
        heartbeat: Duration::from_secs(1),
        holdback: Duration::from_millis(1500),
        networks: vec!["corp=10.8.0.0/16".into()],
        ..FlowConfig::default()
    }
}

async fn start_on(dir: tempfile::TempDir, store: Arc<SqliteStore>) -> Fixture {
    let metrics: Arc<ServerMetrics> = Arc::default();
    let (shutdown, rx) = watch::channel(false);
    let policy: Arc<crate::policy::PolicyCell> = Arc::default();
    let started = start(FlowStart {
        config: &config(),
        store: store.clone(),
        trust_domain: TrustDomain::new(TD).unwrap(),
        data_dir: dir.path(),
        evidence_retention: Duration::from_secs(3600),
        metrics: metrics.clone(),
        policy: policy.clone(),
        shutdown: rx,
    })
    .await
    .unwrap();
    Fixture {
        store,
        policy,
        started,
        metrics,
        shutdown,
        dir,
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("db.sqlite3"))
            .await
            .unwrap(),
    );
    start_on(dir, store).await
}

impl Fixture {
    fn agent(&self) -> SpiffeId {
        TrustDomain::new(TD).unwrap().agent_id("n1").unwrap()
    }

    async fn heartbeat(&self, at_ms: i64, addrs: &[(&str, &str)]) {
        let hb = pb::OwnershipHeartbeat {
            context_name: "prod".into(),
            at_ms,
            addresses: addrs
                .iter()
                .map(|(ip, c)| pb::OwnedAddress {
                    ip: (*ip).into(),
                    port: 0,
                    container_id: (*c).into(),
                })
                .collect(),
        };
        api::heartbeat(&self.started.engine, &self.metrics, &self.agent(), hb)
            .await
            .unwrap();
    }

    async fn ingest(&self, recs: Vec<pb::FlowRecord>) -> pb::IngestFlowsResponse {
        api::ingest(
            &self.started.engine,
            &self.metrics,
            pb::IngestFlowsRequest {
                source: "test.log".into(),
                flows: recs,
            },
        )
        .await
        .unwrap()
    }

    async fn list(&self) -> Vec<StoredFlow> {
        let json = self
            .started
            .queries
            .list(r#"{"since_ms":0,"limit":1000}"#)
            .await
            .unwrap();
        serde_json::from_str(&json).unwrap()
    }

    async fn stats(&self) -> FlowStatsAnswer {
        serde_json::from_str(&self.started.queries.stats().await.unwrap()).unwrap()
    }

    async fn whois(&self, ip: &str, at_ms: i64) -> WhoisAnswer {
        let req = format!(r#"{{"ip":"{ip}","at_ms":{at_ms}}}"#);
        serde_json::from_str(&self.started.queries.whois(&req).await.unwrap()).unwrap()
    }

    async fn stop(self) -> (tempfile::TempDir, Arc<SqliteStore>) {
        let _ = self.shutdown.send(true);
        for t in self.started.tasks {
            let _ = t.await;
        }
        (self.dir, self.store)
    }
}

fn cid(c: char) -> String {
    c.to_string().repeat(64)
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
        bytes_sent: 300,
        packets_sent: 3,
        ..Default::default()
    }
}

/// The inventory names the workload: its name and SPIFFE IDs reach the flow.
async fn report_workload(f: &Fixture, c: char, name: &str, ip: &str, ids: &[&str], at_ms: i64) {
    let mut w = Workload::partial(&cid(c), RuntimeSource::Docker, "");
    w.confidence = Confidence::Full;
    w.name = name.into();
    w.image = "busybox:1".into();
    w.state = WorkloadState::Running;
    w.ips = vec![ip.into()];
    w.spiffe_ids = ids.iter().map(|s| s.to_string()).collect();
    let report = InventoryReport {
        agent_id: f.agent(),
        context_name: "prod".into(),
        snapshot: None,
        events: vec![WorkloadEvent {
            kind: WorkloadEventKind::Started,
            at_ms,
            workload: w,
        }],
        runtime: None,
        dropped_events: 0,
    };
    f.store.apply_inventory(&report, now_ms()).await.unwrap();
    api::inventory_evidence(&f.started.engine, &f.agent(), &report).await;
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn flows_name_workloads_networks_and_nobody() {
    let f = fixture().await;
    let t0 = now_ms() - 10_000;
    report_workload(&f, 'a', "web", "10.0.0.5", &["spiffe://flows.test/web"], t0).await;
    report_workload(&f, 'b', "db", "10.0.0.6", &["spiffe://flows.test/db"], t0).await;
    for i in 0..=10 {
        f.heartbeat(
            t0 + i * 1000,
            &[
                ("10.0.0.5", &cid('a')),
                ("10.0.0.6", &cid('b')),
                ("192.168.1.1", ""),
            ],
        )
        .await;
    }
    let resp = f
        .ingest(vec![
            rec("10.0.0.5:40000", "10.0.0.6:5432", t0 + 4000),
            rec("10.0.0.5:40001", "10.8.3.3:443", t0 + 4000),
            rec("192.168.1.1:40002", "10.0.0.6:5432", t0 + 5000),
            rec("10.0.0.5:40003", "10.0.0.6:0", t0 + 5000),
        ])
        .await;
    assert_eq!((resp.accepted, resp.rejected), (3, 1), "{resp:?}");
    assert!(resp.errors[0].contains("port is 0"), "{:?}", resp.errors);
    let list = wait_for("3 stored flows", async || {
        let l = f.list().await;
        (l.len() == 3).then_some(l)
    })
    .await;
    let by_port = |p: u16| list.iter().find(|s| s.flow.src.port() == p).unwrap();
    let db = by_port(40000);
    assert_eq!(db.status, FlowStatus::Attributed);
    match (&db.src, &db.dst) {
        (Endpoint::Workload(s), Endpoint::Workload(d)) => {
            assert_eq!((s.name.as_str(), d.name.as_str()), ("web", "db"));
            assert_eq!(s.spiffe_ids, vec!["spiffe://flows.test/web".to_string()]);
            assert_eq!(d.container_id, cid('b'));
        }
        other => panic!("{other:?}"),
    }
    let ext = by_port(40001);
    assert_eq!(ext.status, FlowStatus::External);
    assert_eq!(
        ext.dst,
        Endpoint::External {
            network: "corp".into()
        }
    );
    let node = by_port(40002);
    assert!(
        matches!(&node.src, Endpoint::Node { node, spiffe_id, .. } if node == "n1" && spiffe_id.ends_with("/hallmark/agent/n1"))
    );

    let stats = f.stats().await;
    assert_eq!(stats.ingested.get("file"), Some(&3), "{stats:?}");
    assert_eq!(stats.attributed, 2, "{stats:?}");
    assert_eq!(stats.external, 1, "{stats:?}");
    assert_eq!(stats.rejected.get("port-zero"), Some(&1), "{stats:?}");

    let w = f.whois("10.0.0.5", t0 + 4000).await;
    assert_eq!(w.verdict, WhoisVerdict::Owned, "{w:?}");
    assert!(
        w.explanation.contains("spiffe://flows.test/web"),
        "{}",
        w.explanation
    );
    assert!(!w.evidence.is_empty() && !w.ranges.is_empty());
    let w = f.whois("10.9.9.9", t0).await;
    assert_eq!(w.verdict, WhoisVerdict::Unknown);
    f.stop().await;
}

#[tokio::test]
async fn held_flows_wait_for_evidence_and_survive_a_restart() {
    let f = fixture().await;
    let t0 = now_ms() - 5_000;
    // The flow arrives before any evidence for its ends.
    f.ingest(vec![rec("10.1.0.5:40000", "10.1.0.6:80", t0 + 1000)])
        .await;
    assert!(f.list().await.is_empty(), "held, not stored");
    assert_eq!(f.stats().await.stored_pending, 1);
    let (dir, store) = f.stop().await;

    // After a restart the evidence arrives; the held flow is taken up.
    let f = start_on(dir, store).await;
    for i in 0..=4 {
        f.heartbeat(
            t0 + i * 1000,
            &[("10.1.0.5", &cid('c')), ("10.1.0.6", &cid('d'))],
        )
        .await;
    }
    let list = wait_for("the held flow", async || {
        let l = f.list().await;
        (l.len() == 1).then_some(l)
    })
    .await;
    assert_eq!(list[0].status, FlowStatus::Attributed, "{:?}", list[0]);
    assert_eq!(f.stats().await.stored_pending, 0);

    // The index is rebuilt from stored evidence at the next start.
    let (dir, store) = f.stop().await;
    let f = start_on(dir, store).await;
    let w = f.whois("10.1.0.5", t0 + 2000).await;
    assert_eq!(w.verdict, WhoisVerdict::Owned, "{w:?}");
    f.stop().await;
}

#[tokio::test]
async fn a_flow_without_evidence_is_stored_late_after_the_holdback() {
    let f = fixture().await;
    let t0 = now_ms();
    f.heartbeat(t0 - 1000, &[("10.2.0.5", &cid('e'))]).await;
    // The source's range is not proven past t0 yet; the destination is
    // unknown. Both wait for the hold-back.
    f.ingest(vec![rec("10.2.0.5:40000", "10.2.0.9:80", t0)])
        .await;
    let list = wait_for("the late flow", async || {
        let l = f.list().await;
        (l.len() == 1).then_some(l)
    })
    .await;
    assert_eq!(list[0].status, FlowStatus::Unattributed);
    let late = |e: &Endpoint| matches!(e, Endpoint::Unattributed { reason } if reason.as_str() == "late" || reason.as_str() == "no-owner");
    assert!(late(&list[0].src) && late(&list[0].dst), "{:?}", list[0]);
    f.stop().await;
}

#[test]
fn heartbeats_from_a_wrong_clock_are_refused() {
    let hb = pb::OwnershipHeartbeat {
        context_name: "prod".into(),
        at_ms: 1_000,
        addresses: vec![],
    };
    let e = evidence_from_heartbeat("n1", &hb, 1_000_000_000_000).unwrap_err();
    assert!(e.to_string().contains("fix the node's clock"), "{e}");
    let hb = pb::OwnershipHeartbeat {
        context_name: "prod".into(),
        at_ms: 5,
        addresses: vec![pb::OwnedAddress {
            ip: "10.0.0.300".into(),
            port: 0,
            container_id: String::new(),
        }],
    };
    let e = evidence_from_heartbeat("n1", &hb, 5).unwrap_err();
    assert_eq!(e.reason(), "bad-ip");
}

#[tokio::test]
async fn both_reports_of_one_connection_are_one_flow_with_the_host_unit() {
    let f = fixture().await;
    f.policy.set(verdicts::in_force(
        2,
        "groups:\n  n1: [{node: n1}]\n  db: [{spiffe_id: \"spiffe://flows.test/db\"}]\n\
         rules:\n  - {name: no-host-db, from: [n1], to: [db], action: deny}\ndefault: allow\n",
    ));
    let t0 = now_ms() - 10_000;
    report_workload(&f, 'b', "db", "10.0.0.6", &["spiffe://flows.test/db"], t0).await;
    for i in 0..=10 {
        f.heartbeat(
            t0 + i * 1000,
            &[("10.0.0.6", &cid('b')), ("192.168.1.1", "")],
        )
        .await;
    }
    // A host process of the node connects to the db container; the agent
    // sees the connect and the accept, a few ms apart.
    let mut client = rec("192.168.1.1:50000", "10.0.0.6:5432", t0 + 4000);
    client.initiator = "source".into();
    client.local_side = "source".into();
    client.local_unit = "backup.service".into();
    client.retransmits = 3;
    client.rtt_us = 420;
    let mut server = rec("192.168.1.1:50000", "10.0.0.6:5432", t0 + 4003);
    server.initiator = "source".into();
    server.local_side = "destination".into();
    server.local_container_id = cid('b');
    server.bytes_sent = 350;
    for (id, r) in [(1, client), (2, server)] {
        let batch = pb::FlowBatch {
            context_name: "prod".into(),
            batch_id: id,
            flows: vec![r],
            dropped_flows: 0,
        };
        let ack = api::report_flows(&f.started.engine, &f.metrics, &f.agent(), batch)
            .await
            .unwrap();
        assert_eq!(ack.rejected, 0);
    }
    let list = wait_for("the merged flow", async || {
        let l = f.list().await;
        (l.iter().any(|s| s.flow.bytes_sent == 350)).then_some(l)
    })
    .await;
    assert_eq!(list.len(), 1, "one flow per connection: {list:#?}");
    let flow = &list[0];
    assert_eq!(flow.status, FlowStatus::Attributed, "{flow:?}");
    assert!(
        matches!(&flow.src, Endpoint::Node { node, unit, .. } if node == "n1" && unit == "backup.service"),
        "{:?}",
        flow.src
    );
    assert!(
        matches!(&flow.dst, Endpoint::Workload(w) if w.name == "db"),
        "{:?}",
        flow.dst
    );
    assert_eq!((flow.flow.retransmits, flow.flow.rtt_us), (3, Some(420)));
    assert_eq!(flow.flow.start_ms, t0 + 4000);
    assert_eq!(
        (
            flow.verdict,
            flow.verdict_rule.as_deref(),
            flow.policy_revision
        ),
        (
            Some(hallmark_policy::Outcome::Denied),
            Some("no-host-db"),
            Some(2)
        ),
        "the merged flow is decided as a whole"
    );
    let metrics = f.metrics.render();
    assert!(
        metrics.contains("hallmark_server_flows_merged_total 1"),
        "{metrics}"
    );
    f.stop().await;
}

#[path = "verdict_tests.rs"]
mod verdicts;
