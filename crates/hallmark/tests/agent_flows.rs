//! The node API's flow path with a real agent and a real server over mTLS:
//! flows handed to the agent's sink (what capture feeds) are batched, sent
//! with `ReportFlows`, attributed and stored; the local end is the workload
//! the agent tagged, and the tag is itself evidence of who held the address.
//! Ownership heartbeats from the same agent prove its node's addresses.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::short_tempdir;
use hallmark_agent::inventory::InventoryConfig;
use hallmark_agent::{AgentConfig, ServerTrustSource};
use hallmark_core::TrustDomain;
use hallmark_flows::{
    Endpoint, Flow, FlowStatus, Initiator, LocalSide, Owner, Protocol, Reporter, Side, StoredFlow,
};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use hallmark_runtime::discovery::{DiscoveryConfig, RuntimeChoice};
use hallmark_server::ServerConfig;

const TD: &str = "agentflows.test";

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn flow(src: &str, dst: &str, at_ms: i64, local: Option<LocalSide>) -> Flow {
    Flow {
        start_ms: at_ms,
        end_ms: at_ms + 40,
        protocol: Protocol::Tcp,
        src: src.parse::<SocketAddr>().unwrap(),
        dst: dst.parse::<SocketAddr>().unwrap(),
        initiator: Initiator::Source,
        bytes_sent: 512,
        packets_sent: 4,
        bytes_received: 2048,
        packets_received: 3,
        outcome: None,
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::Agent("n1".into()),
        local,
        enforced: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_reported_by_an_agent_are_attributed_by_its_tags() {
    let dir = short_tempdir();
    let td = TrustDomain::new(TD).unwrap();
    let mut config = ServerConfig::new(td.clone(), dir.path().join("server"));
    config.flows.heartbeat = Duration::from_secs(1);
    config.flows.holdback = Duration::from_secs(3);
    let server = hallmark_server::start(config).await.unwrap();
    let admin = server.admin();
    let token = admin
        .generate_token(tonic::Request::new(pb::GenerateTokenRequest {
            node: "n1".into(),
            ttl_secs: 600,
        }))
        .await
        .unwrap()
        .into_inner();
    let flows = hallmark_agent::flows::FlowConfig {
        ownership_heartbeat: Duration::from_secs(1),
        batch_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let mut agent = hallmark_agent::start(AgentConfig {
        enforcement: hallmark_agent::enforce::EnforceConfig::off(),
        trust_domain: td.clone(),
        data_dir: dir.path().join("agent"),
        servers: vec![server.listen_addr.to_string()],
        socket_path: dir.path().join("w.sock"),
        join_token: Some(token.token),
        trust: ServerTrustSource::Fingerprint(token.ca_fingerprint),
        inventory: InventoryConfig {
            context_name: "prod".into(),
            discovery: DiscoveryConfig {
                choice: RuntimeChoice::None,
                ..DiscoveryConfig::default()
            },
            ..InventoryConfig::default()
        },
        flows,
        // Flows here are the test's own, sent through the sink.
        capture: hallmark_agent::capture::CaptureConfig {
            mode: hallmark_agent::capture::CaptureMode::Off,
            ..Default::default()
        },
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), agent.ready())
        .await
        .unwrap();

    // A workload the agent tagged at capture talks to an address nobody
    // holds: the source is the tagged workload, the destination nobody.
    let cid = "c".repeat(64);
    let owner = Owner::Workload {
        context: "prod".into(),
        node: "n1".into(),
        container_id: cid.clone(),
    };
    let t0 = now_ms() - 2_000;
    let sink = agent.flows.sink();
    assert!(sink.try_send(flow(
        "10.77.0.5:40000",
        "198.51.100.7:443",
        t0,
        Some(LocalSide {
            side: Side::Source,
            owner: owner.clone(),
            by_port: false,
            unit: String::new(),
        }),
    )));
    assert!(sink.try_send(flow(
        "10.77.0.5:40001",
        "198.51.100.7:443",
        t0 + 10,
        Some(LocalSide {
            side: Side::Source,
            owner: owner.clone(),
            by_port: false,
            unit: String::new(),
        })
    )));

    let list = loop {
        let json = admin
            .list_flows(tonic::Request::new(pb::FlowQueryRequest {
                json: r#"{"since_ms":0,"limit":100}"#.into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .json;
        let list: Vec<StoredFlow> = serde_json::from_str(&json).unwrap();
        if list.len() == 2 {
            break list;
        }
        assert!(now_ms() - t0 < 30_000, "flows not stored: {json}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for f in &list {
        assert_eq!(f.flow.reporter, Reporter::Agent("n1".into()));
        match &f.src {
            Endpoint::Workload(w) => {
                assert_eq!((w.context.as_str(), w.node.as_str()), ("prod", "n1"));
                assert_eq!(w.container_id, cid);
            }
            other => panic!("source of {f:?} is {other:?}"),
        }
        // Nobody holds the destination, and no network is named.
        assert_eq!(f.status, FlowStatus::Unattributed, "{f:?}");
        assert!(f.flow.local.is_some(), "the local tag is kept: {f:?}");
    }

    // The agent's heartbeats made it to the server (evidence of its node).
    let stats = admin
        .flow_stats(tonic::Request::new(pb::FlowQueryRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .json;
    let stats: hallmark_flows::api::FlowStatsAnswer = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats.ingested.get("agent"), Some(&2), "{stats:?}");
    assert!(
        stats.evidence.get("local-flow").copied().unwrap_or(0) >= 2,
        "{stats:?}"
    );
    assert!(
        stats.evidence.get("heartbeat").copied().unwrap_or(0) >= 1,
        "{stats:?}"
    );
    let status = agent.status().flows();
    assert_eq!(
        status.spool_flows, 0,
        "acknowledged batches leave the spool"
    );
    assert!(status.last_heartbeat_ms > 0, "{status:?}");
    agent.shutdown().await;
    server.shutdown().await;
}
