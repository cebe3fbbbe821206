//! The workload inventory end to end inside one process: a real server on
//! a loopback port, agents attested with join tokens over mTLS exactly as
//! `hallmark agent` does (key and CSR made locally, SVID presented as the
//! client certificate), reports sent through the node API, and what the
//! admin API and the metrics then show.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hallmark_ca::tls::ServerTrust;
use hallmark_core::{
    Compose, Confidence, PodInfo, RuntimeSource, SpiffeId, TrustDomain, Workload, WorkloadState,
};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use hallmark_proto::hallmark::node_client::NodeClient;
use hallmark_server::{AdminService, ServerConfig, ServerHandle};
use hallmark_store::prelude::*;
use hallmark_store::{SqliteStore, WorkloadFilter};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const TD: &str = "inventory.test";

struct Harness {
    server: ServerHandle,
    admin: AdminService,
    store: Arc<SqliteStore>,
    td: TrustDomain,
    // Last: the directory must outlive the server using it.
    _dir: TempDir,
}

/// An attested agent's node API client.
struct TestAgent {
    id: SpiffeId,
    node: NodeClient<Channel>,
}

impl Harness {
    async fn start(retention: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("datastore.sqlite3"))
                .await
                .unwrap(),
        );
        let td = TrustDomain::new(TD).unwrap();
        let server = hallmark_server::start_with_store(
            ServerConfig {
                workload_retention: retention,
                ..ServerConfig::new(td.clone(), dir.path().to_path_buf())
            },
            store.clone(),
        )
        .await
        .unwrap();
        let admin = server.admin();
        Harness {
            server,
            admin,
            store,
            td,
            _dir: dir,
        }
    }

    /// Joins node `node` with a fresh token, as an agent does on first start.
    async fn attest(&self, node: &str) -> TestAgent {
        let token = self
            .admin
            .generate_token(Request::new(pb::GenerateTokenRequest {
                node: node.into(),
                ttl_secs: 0,
            }))
            .await
            .unwrap()
            .into_inner();
        let id = SpiffeId::new(&token.agent_spiffe_id).unwrap();
        let (key, csr) = hallmark_ca::generate_key_and_csr(&id).unwrap();
        let mut anonymous = self
            .client(ServerTrust::Fingerprint(token.ca_fingerprint), None)
            .await;
        let resp = anonymous
            .attest(pb::AttestRequest {
                join_token: token.token,
                csr,
            })
            .await
            .unwrap()
            .into_inner();
        let svid = resp.svid.unwrap();
        let roots = resp.bundle.unwrap().x509_authorities;
        let node = self
            .client(roots_trust(roots), Some((svid.cert_chain, key)))
            .await;
        TestAgent { id, node }
    }

    /// A node API client with the given trust and client identity.
    async fn client(
        &self,
        trust: ServerTrust,
        identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    ) -> NodeClient<Channel> {
        let tls = Arc::new(
            hallmark_ca::tls::client_config(trust, self.td.server_id(), identity).unwrap(),
        );
        node_client(self.server.listen_addr, tls).await
    }

    async fn list(&self, req: pb::ListWorkloadsRequest) -> Vec<pb::StoredWorkload> {
        self.admin
            .list_workloads(Request::new(req))
            .await
            .unwrap()
            .into_inner()
            .workloads
    }

    async fn list_err(&self, req: pb::ListWorkloadsRequest) -> tonic::Status {
        self.admin
            .list_workloads(Request::new(req))
            .await
            .unwrap_err()
    }

    async fn get(&self, id: &str) -> Result<tonic::Response<pb::StoredWorkload>, tonic::Status> {
        self.admin
            .get_workload(Request::new(pb::GetWorkloadRequest {
                container_id: id.into(),
            }))
            .await
    }

    async fn agents(&self) -> HashMap<String, pb::Agent> {
        self.admin
            .list_agents(Request::new(pb::ListAgentsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .agents
            .into_iter()
            .map(|a| (a.spiffe_id.clone(), a))
            .collect()
    }

    async fn metrics(&self) -> String {
        self.server.status().metrics().await
    }
}

fn roots_trust(roots: Vec<Vec<u8>>) -> ServerTrust {
    ServerTrust::Roots(Arc::new(RwLock::new(roots)))
}

async fn node_client(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> NodeClient<Channel> {
    let channel = Endpoint::from_static("http://hallmark-server")
        .connect_with_connector(tower::service_fn(move |_| {
            let tls = tls.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                // The verifier checks the SPIFFE ID; TLS still wants a name.
                let name = rustls::pki_types::ServerName::try_from("hallmark-server")
                    .map_err(std::io::Error::other)?;
                let stream = TlsConnector::from(tls).connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    NodeClient::new(channel)
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn cid(n: u32) -> String {
    format!("{n:08x}{}", "0".repeat(56))
}

fn docker(id: &str, name: &str, image: &str) -> Workload {
    let mut w = Workload::partial(id, RuntimeSource::Docker, "");
    w.confidence = Confidence::Full;
    w.name = name.into();
    w.image = image.into();
    w.state = WorkloadState::Running;
    w
}

fn rec(w: &Workload) -> pb::WorkloadRecord {
    pb::WorkloadRecord::from(w)
}

fn snapshot(ctx: &str, id: u64, workloads: &[&Workload]) -> pb::InventoryReport {
    pb::InventoryReport {
        context_name: ctx.into(),
        snapshot_id: id,
        page: 0,
        last_page: true,
        workloads: workloads.iter().map(|w| rec(w)).collect(),
        ..Default::default()
    }
}

fn events(ctx: &str, list: &[(&str, i64, &Workload)]) -> pb::InventoryReport {
    pb::InventoryReport {
        context_name: ctx.into(),
        events: list
            .iter()
            .map(|(kind, at_ms, w)| pb::WorkloadEvent {
                kind: (*kind).into(),
                at_ms: *at_ms,
                record: Some(rec(w)),
            })
            .collect(),
        ..Default::default()
    }
}

fn container_ids(list: &[pb::StoredWorkload]) -> Vec<String> {
    let mut ids: Vec<String> = list
        .iter()
        .map(|s| s.record.as_ref().unwrap().container_id.clone())
        .collect();
    ids.sort();
    ids
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_reach_listings_lookups_agents_and_metrics() {
    let h = Harness::start(hallmark_server::DEFAULT_WORKLOAD_RETENTION).await;
    let mut n1 = h.attest("n1").await;
    let mut n2 = h.attest("n2").await;

    let mut web = docker(&cid(1), "web-1", "shop/web:1.2");
    web.labels.insert("app".into(), "web".into());
    web.compose = Some(Compose {
        project: "shop".into(),
        service: "web".into(),
        oneoff: false,
    });
    web.ips = vec!["172.17.0.5".into()];
    let mut pay = docker(&cid(2), "pay", "docker.io/library/busybox:1");
    pay.source = RuntimeSource::Cri;
    pay.pod = Some(PodInfo {
        uid: "u-1".into(),
        name: "pay-0".into(),
        namespace: "payments".into(),
        ..PodInfo::default()
    });
    let job = docker(&cid(3), "job", "busybox:1");

    let mut report = snapshot("prod", 11, &[&web, &pay]);
    report.runtime = Some(pb::RuntimeStatus {
        runtime: "docker".into(),
        endpoint: "/var/run/docker.sock".into(),
        version: "Docker Engine 20.10.24".into(),
        degraded: true,
        reason: "CRI socket /run/containerd/containerd.sock not configured".into(),
    });
    report.dropped_events = 2;
    n1.node.report_inventory(report).await.unwrap();
    n2.node
        .report_inventory(events("lab", &[("started", now_ms(), &job)]))
        .await
        .unwrap();
    assert_eq!(
        metric(&h.metrics().await, "hallmark_server_agent_dropped_events"),
        Some(2.0),
        "dropped events summed over agents"
    );

    let all = h.list(pb::ListWorkloadsRequest::default()).await;
    assert_eq!(container_ids(&all), vec![cid(1), cid(2), cid(3)]);
    let stored_web = all
        .iter()
        .find(|s| s.record.as_ref().unwrap().container_id == cid(1))
        .unwrap();
    assert_eq!(stored_web.context_name, "prod");
    assert_eq!(stored_web.agent_id, n1.id.to_string());
    assert_eq!(stored_web.record.as_ref(), Some(&rec(&web)));
    assert_eq!(stored_web.stopped_at_ms, 0);
    assert!(stored_web.first_seen_ms > 0 && stored_web.first_seen_ms <= now_ms());
    assert!(stored_web.events.is_empty(), "listings carry no events");

    let cases: Vec<(&str, pb::ListWorkloadsRequest, Vec<String>)> = vec![
        (
            "node name",
            pb::ListWorkloadsRequest {
                node: "n1".into(),
                ..Default::default()
            },
            vec![cid(1), cid(2)],
        ),
        (
            "node SPIFFE ID",
            pb::ListWorkloadsRequest {
                node: n2.id.to_string(),
                ..Default::default()
            },
            vec![cid(3)],
        ),
        (
            "context",
            pb::ListWorkloadsRequest {
                context_name: "lab".into(),
                ..Default::default()
            },
            vec![cid(3)],
        ),
        (
            "namespace",
            pb::ListWorkloadsRequest {
                namespace: "payments".into(),
                ..Default::default()
            },
            vec![cid(2)],
        ),
        (
            "image short name",
            pb::ListWorkloadsRequest {
                image: "busybox".into(),
                ..Default::default()
            },
            vec![cid(2), cid(3)],
        ),
        (
            "label",
            pb::ListWorkloadsRequest {
                labels: vec!["app=web".into()],
                ..Default::default()
            },
            vec![cid(1)],
        ),
        (
            "state",
            pb::ListWorkloadsRequest {
                state: "running".into(),
                context_name: "prod".into(),
                ..Default::default()
            },
            vec![cid(1), cid(2)],
        ),
    ];
    for (name, req, want) in cases {
        assert_eq!(container_ids(&h.list(req).await), want, "filter by {name}");
    }
    for (req, needle) in [
        (
            pb::ListWorkloadsRequest {
                state: "gone".into(),
                ..Default::default()
            },
            "state `gone`",
        ),
        (
            pb::ListWorkloadsRequest {
                labels: vec!["=x".into()],
                ..Default::default()
            },
            "labels[0]: label `=x` has an empty key",
        ),
        (
            pb::ListWorkloadsRequest {
                node: "a/b".into(),
                ..Default::default()
            },
            "node `a/b`",
        ),
    ] {
        let s = h.list_err(req).await;
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains(needle), "want `{needle}` in {s:?}");
    }

    // Lookups: a unique prefix, with the event history.
    let job_prefix = &cid(3)[..12];
    let got = h.get(job_prefix).await.unwrap().into_inner();
    assert_eq!(got.record.as_ref().unwrap().name, "job");
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].kind, "started");
    let s = h.get("0000").await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("ambiguous") && s.message().contains(&cid(1)),
        "{s:?}"
    );
    let s = h.get("ffffffff").await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = h.get("abc").await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("at least 4 characters"), "{s:?}");

    // The same container reported by the second agent too: the most recent
    // copy answers, and the response says who else reports it.
    n2.node
        .report_inventory(events("lab", &[("updated", now_ms(), &web)]))
        .await
        .unwrap();
    let resp = h.get(&cid(1)).await.unwrap();
    let also = resp
        .metadata()
        .get(hallmark_server::ALSO_REPORTED_BY_HEADER)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let got = resp.into_inner();
    assert_eq!(got.agent_id, n2.id.to_string());
    assert_eq!(also, format!("prod {}", n1.id));
    assert_eq!(got.events.len(), 1, "events of every agent");

    // Agent list: runtime and context from the latest report.
    let agents = h.agents().await;
    let a1 = &agents[n1.id.as_str()];
    assert_eq!(a1.context_name, "prod");
    let rt = a1.runtime.as_ref().unwrap();
    assert_eq!(
        (rt.runtime.as_str(), rt.degraded),
        ("docker", true),
        "{rt:?}"
    );
    assert!(rt.reason.contains("containerd.sock"), "{rt:?}");
    let a2 = &agents[n2.id.as_str()];
    assert_eq!(a2.context_name, "lab");
    assert!(a2.runtime.is_none(), "n2 never sent a runtime status");

    // A stopped event, then a snapshot that no longer lists pay.
    let mut web_stopped = web.clone();
    web_stopped.state = WorkloadState::Stopped;
    let at = now_ms();
    n1.node
        .report_inventory(events("prod", &[("stopped", at, &web_stopped)]))
        .await
        .unwrap();
    n1.node
        .report_inventory(snapshot("prod", 12, &[]))
        .await
        .unwrap();
    let prod = h
        .list(pb::ListWorkloadsRequest {
            node: "n1".into(),
            ..Default::default()
        })
        .await;
    let stopped: HashMap<String, i64> = prod
        .iter()
        .map(|s| {
            (
                s.record.as_ref().unwrap().container_id.clone(),
                s.stopped_at_ms,
            )
        })
        .collect();
    assert_eq!(stopped[&cid(1)], at, "stopped at the event's time");
    assert!(stopped[&cid(2)] >= at, "stopped by the empty snapshot");
    assert!(prod
        .iter()
        .all(|s| s.record.as_ref().unwrap().state == "stopped"));
    let current = h
        .list(pb::ListWorkloadsRequest {
            state: "current".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(container_ids(&current), vec![cid(1), cid(3)], "n2's copies");

    let text = h.metrics().await;
    assert_eq!(
        metric(&text, "hallmark_server_workloads{state=\"current\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "hallmark_server_workloads{state=\"stopped\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "hallmark_server_inventory_reports_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "hallmark_server_inventory_events_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "hallmark_server_agent_dropped_events"),
        Some(0.0),
        "the latest report of each agent counts: n1's said 0\n{text}"
    );
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_and_callers_that_are_not_agents_are_refused() {
    let h = Harness::start(hallmark_server::DEFAULT_WORKLOAD_RETENTION).await;
    let mut agent = h.attest("n1").await;
    let w = docker(&cid(1), "w", "x:1");

    let bad_id = cid(1);
    let mut bad_record = snapshot("prod", 1, &[&w]);
    bad_record.workloads[0].confidence = "sure".into();
    let mut too_many = snapshot("prod", 1, &[]);
    too_many.workloads = vec![rec(&w); 1001];
    let cases: Vec<(pb::InventoryReport, Vec<&str>)> = vec![
        (
            snapshot("prod/eu", 1, &[&w]),
            vec![
                "context_name `prod/eu`",
                "1 to 63 characters of [A-Za-z0-9._-]",
            ],
        ),
        (too_many, vec!["1001 workloads", "limit is 1000"]),
        (
            bad_record,
            vec!["workloads[0]", &bad_id, "field `confidence`"],
        ),
        (
            events("prod", &[("exploded", 1, &w)]),
            vec!["events[0]: kind `exploded`"],
        ),
    ];
    for (report, needles) in cases {
        let s = agent.node.report_inventory(report).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        for n in needles {
            assert!(s.message().contains(n), "want `{n}` in {s:?}");
        }
    }
    assert!(
        h.list(pb::ListWorkloadsRequest::default()).await.is_empty(),
        "a refused report stores nothing"
    );
    assert!(
        h.agents().await[agent.id.as_str()].context_name.is_empty(),
        "a refused report does not set the agent's context"
    );

    // No client certificate at all.
    let roots = h
        .admin
        .get_bundle(Request::new(pb::GetBundleRequest {}))
        .await
        .unwrap()
        .into_inner()
        .x509_authorities;
    let mut anonymous = h.client(roots_trust(roots.clone()), None).await;
    let s = anonymous
        .report_inventory(snapshot("prod", 1, &[&w]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // A workload's SVID is not an agent's.
    let workload_id = h.td.id_with_path("/web").unwrap();
    let entry = h
        .admin
        .create_entry(Request::new(pb::CreateEntryRequest {
            spiffe_id: workload_id.to_string(),
            parent_id: agent.id.to_string(),
            selectors: vec!["unix:uid:1000".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let (key, csr) = hallmark_ca::generate_key_and_csr(&workload_id).unwrap();
    let signed = agent
        .node
        .batch_new_x509_svid(pb::BatchNewX509SvidRequest {
            requests: vec![pb::SvidRequest {
                entry_id: entry.id,
                csr,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let chain = signed.results[0].svid.as_ref().unwrap().cert_chain.clone();
    let mut workload = h.client(roots_trust(roots), Some((chain, key))).await;
    let s = workload
        .report_inventory(snapshot("prod", 1, &[&w]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("not an agent ID"), "{s:?}");

    // A banned agent neither.
    h.admin
        .ban_agent(Request::new(pb::AgentRequest {
            spiffe_id: agent.id.to_string(),
        }))
        .await
        .unwrap();
    let s = agent
        .node
        .report_inventory(snapshot("prod", 1, &[&w]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        h.list(pb::ListWorkloadsRequest::default()).await.is_empty(),
        "refused callers store nothing"
    );

    let text = h.metrics().await;
    for (reason, n) in [
        ("context_name", 1.0),
        ("too_many_workloads", 1.0),
        ("bad_workload", 1.0),
        ("bad_event", 1.0),
        ("unauthorized", 3.0),
    ] {
        let name =
            format!("hallmark_server_inventory_reports_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &name), Some(n), "{name} in\n{text}");
    }
    h.server.shutdown().await;
}

/// Polls `f` every 50 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn everything_stored(store: &SqliteStore) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_workloads(&WorkloadFilter::default(), now_ms(), Duration::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.workload.container_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_workloads_are_hidden_then_pruned_after_the_retention() {
    // Long enough that the first listing below surely falls within it.
    let h = Harness::start(Duration::from_secs(3)).await;
    let mut agent = h.attest("n1").await;
    let (live, gone) = (
        docker(&cid(1), "live", "x:1"),
        docker(&cid(2), "gone", "x:1"),
    );
    let t = now_ms();
    agent
        .node
        .report_inventory(events(
            "prod",
            &[("started", t, &live), ("stopped", t, &gone)],
        ))
        .await
        .unwrap();
    assert_eq!(
        container_ids(&h.list(pb::ListWorkloadsRequest::default()).await),
        vec![cid(1), cid(2)],
        "a stopped workload is listed within the retention"
    );
    eventually("the stopped workload to be hidden", || async {
        container_ids(&h.list(pb::ListWorkloadsRequest::default()).await) == vec![cid(1)]
    })
    .await;
    eventually("the pruner to delete the stopped workload", || async {
        everything_stored(&h.store).await == vec![cid(1)]
    })
    .await;
    eventually("the pruner to delete old events", || async {
        h.store.workload_events(&cid(1)).await.unwrap().is_empty()
    })
    .await;
    let s = h.get(&cid(2)).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(h.get(&cid(1)).await.is_ok(), "current workloads stay");
    assert!(metric(&h.metrics().await, "hallmark_server_workloads_pruned_total").unwrap() >= 1.0);
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_hide_expired_workloads_before_the_pruner_runs() {
    // With an hour of retention the pruner runs at start and then once a
    // minute, so a workload that stopped two hours ago stays stored for a
    // while: it must not be listed meanwhile.
    let h = Harness::start(hallmark_server::DEFAULT_WORKLOAD_RETENTION).await;
    let mut agent = h.attest("n1").await;
    let old = docker(&cid(7), "old", "x:1");
    agent
        .node
        .report_inventory(events("prod", &[("stopped", now_ms() - 7_200_000, &old)]))
        .await
        .unwrap();
    assert_eq!(everything_stored(&h.store).await, vec![cid(7)]);
    assert!(h.list(pb::ListWorkloadsRequest::default()).await.is_empty());
    assert_eq!(h.get(&cid(7)).await.unwrap_err().code(), Code::NotFound);
    h.server.shutdown().await;
}
