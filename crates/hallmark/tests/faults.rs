//! What a workload sees when the server or the agent goes away and comes
//! back: cached SVIDs keep being served, the server keeps its CA and
//! registry across restarts, and a restarted agent needs no new join token.

mod common;

use std::time::Duration;

use common::*;
use hallmark_proto::workload::JwtsvidRequest;
use serde_json::Value;

/// Entries sorted by id, for comparing two listings.
fn sorted_entries(server: &TestServer) -> Vec<Value> {
    let list = server.json(&["entry", "list"]);
    let mut entries = list
        .as_array()
        .unwrap_or_else(|| panic!("entry list --json is not an array: {list}"))
        .clone();
    entries.sort_by_key(entry_id);
    entries
}

/// Waits until `svid fetch` as root yields `id`; fails after `within`.
#[track_caller]
fn wait_for_svid(agent: &TestAgent, id: &str, within: Duration) -> FetchedSvid {
    let what = format!("`svid fetch` to return {id}");
    wait_until(&what, within, || {
        agent.try_fetch_svid().ok().filter(|s| s.spiffe_id() == id)
    })
}

#[test]
fn server_outage_then_restart_keeps_ca_entries_and_agent_recovers() {
    let mut server = TestServer::start("outage.test");
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("cached");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    let before = wait_for_svid(&agent, &id, WAIT);
    let bundle_before = server.bundle_pem();
    let entries_before = sorted_entries(&server);

    server.kill();
    // The agent keeps serving what it has: the same SVID, not a new one.
    for _ in 0..3 {
        let during = agent.fetch_svid();
        assert_eq!(during.spiffe_id(), id);
        assert_eq!(
            during.leaf.serial, before.leaf.serial,
            "while the server is down the agent serves its cached SVID"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    server.restart();
    // And once more after a clean stop (SIGTERM exits 0).
    let status = server.terminate();
    assert!(status.success(), "server exit on SIGTERM: {status}");
    server.restart();
    assert_eq!(
        server.bundle_pem(),
        bundle_before,
        "the CA survives a restart on the same data dir"
    );
    assert_eq!(
        sorted_entries(&server),
        entries_before,
        "the registry survives a restart on the same data dir"
    );
    let after = agent.fetch_svid();
    verify_chain(&after.chain, &pem_certs(&bundle_before))
        .expect("SVIDs still chain to the CA from before the restart");

    // The agent reconnects by itself: a new entry reaches it.
    let fresh = server.id("after-restart");
    server.create_entry(&fresh, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&id, &fresh], Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_for_an_already_minted_audience_survives_a_server_outage() {
    let mut server = TestServer::start("jwtcache.test");
    let agent = TestAgent::start(&server, "n1");
    let id = server.id("jwt-cached");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    wait_for_svid(&agent, &id, WAIT);

    let client = agent.client().await;
    let fetch = |audience: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .fetch_jwtsvid(req(JwtsvidRequest {
                    audience: vec![audience.to_string()],
                    spiffe_id: String::new(),
                }))
                .await
                .map(|r| r.into_inner())
        }
    };
    let minted = fetch("minted")
        .await
        .expect("FetchJWTSVID with the server up");
    assert_eq!(minted.svids[0].spiffe_id, id);

    server.kill();
    let cached = fetch("minted")
        .await
        .unwrap_or_else(|s| panic!("FetchJWTSVID for an audience minted before the outage: {s:?}"));
    assert_eq!(cached.svids[0].spiffe_id, id);
}

#[test]
fn restarted_agent_serves_again_without_a_join_token() {
    let server = TestServer::start("agentrestart.test");
    let mut agent = TestAgent::start(&server, "n1");
    let id = server.id("survivor");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    wait_for_svid(&agent, &id, WAIT);

    // A clean stop first: SIGTERM drains and exits 0.
    let status = agent.terminate();
    assert!(status.success(), "agent exit on SIGTERM: {status}");
    agent.restart();
    wait_for_svid(&agent, &id, WAIT);

    // Then a crash. `restart` starts `agent run` with neither --join-token
    // nor --ca-fingerprint, on the same data dir and socket path (the old
    // socket file is left behind).
    agent.restart();
    let svid = wait_for_svid(&agent, &id, WAIT);
    verify_chain(&svid.chain, &pem_certs(&server.bundle_pem())).expect("chain after agent restart");

    let agents = server.json(&["agent", "list"]);
    let matching: Vec<&Value> = agents
        .as_array()
        .unwrap_or_else(|| panic!("agent list --json is not an array: {agents}"))
        .iter()
        .filter(|a| a["spiffe_id"] == agent.spiffe_id.as_str())
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "one agent record after a restart: {agents}"
    );

    // And it still follows the registry.
    let fresh = server.id("after-agent-restart");
    server.create_entry(&fresh, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&id, &fresh], Duration::from_secs(5));
}
