#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

//! Versioned policy inside one process: a real server on a loopback port
//! over a real SQLite file, an agent attested with a join token and holding
//! a Sync stream over mTLS, and the admin calls.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hallmark_ca::tls::ServerTrust;
use hallmark_core::{SpiffeId, TrustDomain};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use hallmark_proto::hallmark::node_client::NodeClient;
use hallmark_store::{NewPolicyRevision, SqliteStore, Store};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Streaming};

use super::super::IdentityGroups;
use crate::{ServerConfig, ServerHandle};

const TD: &str = "policy.test";

const WEB_DB: &str = "\
groups:
  web:
    - selector: docker:label:app:web
  db:
    - spiffe_id: spiffe://policy.test/db
rules:
  - name: web-to-db
    from: [web]
    to: [db]
    protocol: tcp
    ports: [\"5432\"]
    action: allow
default: deny
";

const OPEN: &str = "default: allow\n";

pub(crate) struct Harness {
    pub server: ServerHandle,
    pub store: Arc<dyn Store>,
    // Last: the directory must outlive the server using it.
    dir: TempDir,
}

impl Harness {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir).await
    }

    async fn start_in(dir: TempDir) -> Self {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("datastore.sqlite3"))
                .await
                .unwrap(),
        );
        let td = TrustDomain::new(TD).unwrap();
        let server = crate::start_with_store(
            ServerConfig::new(td, dir.path().to_path_buf()),
            store.clone(),
        )
        .await
        .unwrap();
        Harness { server, store, dir }
    }

    pub async fn restart(self) -> Self {
        let Harness { server, dir, .. } = self;
        server.shutdown().await;
        Self::start_in(dir).await
    }

    pub async fn call(
        &self,
        rpc: &str,
        json: serde_json::Value,
    ) -> Result<serde_json::Value, tonic::Status> {
        let admin = self.server.admin();
        let req = Request::new(pb::PolicyRequest {
            json: json.to_string(),
        });
        let resp = match rpc {
            "apply" => admin.apply_policy(req).await,
            "get" => admin.get_policy(req).await,
            "history" => admin.policy_history(req).await,
            "rollback" => admin.rollback_policy(req).await,
            "enforcement" => admin.set_enforcement(req).await,
            other => panic!("no RPC {other}"),
        }?;
        Ok(serde_json::from_str(&resp.into_inner().json).unwrap())
    }

    pub async fn apply(&self, file: &str, document: &str) -> serde_json::Value {
        self.call(
            "apply",
            serde_json::json!({"file": file, "document": document, "source": format!("cli:{file}")}),
        )
        .await
        .unwrap()
    }

    /// Attests node `node` and opens its Sync stream.
    pub async fn agent(&self, node: &str) -> (SpiffeId, Streaming<pb::SyncUpdate>) {
        let (id, mut client) = self.agent_client(node).await;
        let stream = client
            .sync(pb::SyncRequest::default())
            .await
            .unwrap()
            .into_inner();
        (id, stream)
    }

    /// Attests node `node`: its ID and a node API client over mTLS with
    /// its SVID.
    pub async fn agent_client(&self, node: &str) -> (SpiffeId, NodeClient<Channel>) {
        let admin = self.server.admin();
        let token = admin
            .generate_token(Request::new(pb::GenerateTokenRequest {
                node: node.into(),
                ttl_secs: 0,
            }))
            .await
            .unwrap()
            .into_inner();
        let id = SpiffeId::new(&token.agent_spiffe_id).unwrap();
        let td = TrustDomain::new(TD).unwrap();
        let (key, csr) = hallmark_ca::generate_key_and_csr(&id).unwrap();
        let anonymous = Arc::new(
            hallmark_ca::tls::client_config(
                ServerTrust::Fingerprint(token.ca_fingerprint),
                td.server_id(),
                None,
            )
            .unwrap(),
        );
        let resp = node_client(self.server.listen_addr, anonymous)
            .await
            .attest(pb::AttestRequest {
                join_token: token.token,
                csr,
            })
            .await
            .unwrap()
            .into_inner();
        let svid = resp.svid.unwrap();
        let roots = resp.bundle.unwrap().x509_authorities;
        let tls = Arc::new(
            hallmark_ca::tls::client_config(
                ServerTrust::Roots(Arc::new(RwLock::new(roots))),
                td.server_id(),
                Some((svid.cert_chain, key)),
            )
            .unwrap(),
        );
        (id, node_client(self.server.listen_addr, tls).await)
    }

    pub fn metrics(&self) -> String {
        self.server.shared.metrics.render()
    }
}

async fn node_client(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> NodeClient<Channel> {
    let channel = Endpoint::from_static("http://hallmark-server")
        .connect_with_connector(tower::service_fn(move |_| {
            let tls = tls.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
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

/// The next update, which must come within `within`.
pub(crate) async fn next(
    stream: &mut Streaming<pb::SyncUpdate>,
    within: Duration,
) -> pb::SyncUpdate {
    tokio::time::timeout(within, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no Sync update within {within:?}"))
        .unwrap()
        .unwrap()
}

/// Asserts that no update comes for a while.
pub(crate) async fn quiet(stream: &mut Streaming<pb::SyncUpdate>) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("unexpected Sync update: {m:?}");
    }
}

pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_reaches_a_connected_agent_within_a_second() {
    let h = Harness::start().await;
    let (agent, mut sync) = h.agent("n1").await;

    let first = next(&mut sync, Duration::from_secs(5)).await;
    assert_eq!(first.policy_revision, 0, "nothing applied yet");
    assert_eq!(first.policy_document, "");
    assert!(
        first.identity_groups_sent,
        "the first update carries the identity groups, even empty"
    );
    assert!(first.identity_groups.is_empty());

    let started = Instant::now();
    let applied = h.apply("policy.yaml", WEB_DB).await;
    assert_eq!(applied["revision"], 1);
    let update = next(&mut sync, Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(update.policy_revision, 1);
    assert_eq!(update.policy_document, WEB_DB, "the document as applied");
    assert!(
        !update.identity_groups_sent,
        "the groups did not change, so they are not re-sent"
    );

    // Identity groups change: sent, without the document.
    let groups = IdentityGroups {
        revision: 1,
        groups: [(
            "spiffe://policy.test/web".to_string(),
            vec!["web".to_string()],
        )]
        .into(),
    };
    h.server
        .shared
        .identity_groups
        .send_replace(Arc::new(groups));
    let update = next(&mut sync, Duration::from_secs(1)).await;
    assert_eq!(update.policy_revision, 1);
    assert_eq!(
        update.policy_document, "",
        "revision unchanged: no document"
    );
    assert!(update.identity_groups_sent);
    assert_eq!(
        update.identity_groups,
        vec![pb::IdentityGroups {
            spiffe_id: "spiffe://policy.test/web".into(),
            groups: vec!["web".into()],
        }]
    );

    // The same groups published again: nothing to send.
    let same = IdentityGroups {
        revision: 1,
        groups: [(
            "spiffe://policy.test/web".to_string(),
            vec!["web".to_string()],
        )]
        .into(),
    };
    h.server.shared.identity_groups.send_replace(Arc::new(same));
    quiet(&mut sync).await;

    // An entry change: entries go out, the policy is named but not re-sent.
    h.server
        .admin()
        .create_entry(Request::new(pb::CreateEntryRequest {
            spiffe_id: "spiffe://policy.test/web".into(),
            parent_id: agent.to_string(),
            selectors: vec!["docker:label:app:web".into()],
            ..Default::default()
        }))
        .await
        .unwrap();
    let update = next(&mut sync, Duration::from_secs(2)).await;
    assert_eq!(update.entries.len(), 1);
    assert_eq!(update.policy_revision, 1);
    assert_eq!(
        update.policy_document, "",
        "no document re-sent for an entry change"
    );
    assert!(!update.identity_groups_sent);

    // The same text again: no revision, no update.
    let again = h.apply("policy.yaml", WEB_DB).await;
    assert_eq!(again["revision"], 1);
    assert_eq!(again["unchanged"], true);
    quiet(&mut sync).await;

    // A new agent's stream starts with the document in force.
    let (_, mut late) = h.agent("n2").await;
    let first = next(&mut late, Duration::from_secs(5)).await;
    assert_eq!(first.policy_revision, 1);
    assert_eq!(first.policy_document, WEB_DB);
    assert!(first.identity_groups_sent);
    assert_eq!(first.identity_groups.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_show_history_rollback_and_refusals() {
    let h = Harness::start().await;

    let none = h.call("get", serde_json::json!({})).await.unwrap();
    assert_eq!(none["revision"], 0);
    assert_eq!(none["document"], "");
    assert_eq!(none["default"], "allow");

    let one = h.apply("web-db.yaml", WEB_DB).await;
    assert_eq!(one["revision"], 1);
    assert_eq!(one["unchanged"], false);
    assert_eq!(one["groups"], 2);
    assert_eq!(one["rules"], 1);
    assert_eq!(one["default"], "deny");
    assert!(one["warnings"].as_array().unwrap().is_empty());
    assert!(one["applied_at_ms"].as_i64().unwrap() > 0);
    assert_eq!(h.server.shared.policy.current().revision, 1);

    let two = h.apply("open.yaml", OPEN).await;
    assert_eq!(two["revision"], 2);
    assert_eq!(two["default"], "allow");

    // A bad document: refused whole, naming file, line and rule; nothing
    // changes.
    let bad = "groups:\n  web:\n    - selector: docker:label:app:web\nrules:\n  - name: web-to-db\n    from: [web]\n    to: [pay-db]\n    action: allow\n";
    let e = h
        .call(
            "apply",
            serde_json::json!({"file": "bad.yaml", "document": bad}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let msg = e.message();
    assert!(
        msg.contains("bad.yaml:7: rule `web-to-db`:") && msg.contains("pay-db"),
        "{msg}"
    );
    assert!(msg.contains("nothing was applied"), "{msg}");
    assert_eq!(h.server.shared.policy.current().revision, 2);
    assert_eq!(
        h.call("get", serde_json::json!({})).await.unwrap()["revision"],
        2
    );

    // Show: latest and a given revision.
    let shown = h
        .call("get", serde_json::json!({"revision": 1}))
        .await
        .unwrap();
    assert_eq!(shown["document"], WEB_DB);
    assert_eq!(shown["source"], "cli:web-db.yaml");
    assert_eq!(shown["rolled_back_from"], serde_json::Value::Null);
    assert_eq!(
        shown["digest"],
        hallmark_store::policy_digest(WEB_DB).as_str()
    );
    let e = h
        .call("get", serde_json::json!({"revision": 7}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        e.message(),
        "policy revision 7 does not exist; `hallmark policy history` lists them"
    );

    // Rollback: a new revision with the old text.
    let three = h
        .call("rollback", serde_json::json!({"revision": 1}))
        .await
        .unwrap();
    assert_eq!(three["revision"], 3);
    assert_eq!(three["unchanged"], false);
    assert_eq!(three["default"], "deny");
    let shown = h.call("get", serde_json::json!({})).await.unwrap();
    assert_eq!(shown["revision"], 3);
    assert_eq!(shown["document"], WEB_DB);
    assert_eq!(shown["source"], "rollback to 1");
    assert_eq!(shown["rolled_back_from"], 1);
    let current = h.server.shared.policy.current();
    assert_eq!((current.revision, current.document.as_str()), (3, WEB_DB));
    let e = h
        .call("rollback", serde_json::json!({"revision": 9}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let history = h.call("history", serde_json::json!({})).await.unwrap();
    let revisions: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revisions, vec![3, 2, 1], "newest first");
    assert!(history[0].get("document").is_none(), "{history}");
    assert_eq!(history[0]["source"], "rollback to 1");
    let limited = h
        .call("history", serde_json::json!({"limit": 1}))
        .await
        .unwrap();
    assert_eq!(limited.as_array().unwrap().len(), 1);

    let e = h
        .call("get", serde_json::json!({"revison": 1}))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "unknown fields are refused"
    );

    let m = h.metrics();
    assert_eq!(
        metric(&m, "hallmark_server_policy_revision"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "hallmark_server_policy_applies_total"),
        Some(3.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_the_latest_revision_and_survives_one_that_no_longer_parses() {
    let h = Harness::start().await;
    h.apply("policy.yaml", WEB_DB).await;
    let h = h.restart().await;
    let current = h.server.shared.policy.current();
    assert_eq!((current.revision, current.document.as_str()), (1, WEB_DB));
    assert_eq!(
        metric(&h.metrics(), "hallmark_server_policy_revision"),
        Some(1.0)
    );

    // A revision the parser refuses, written past the server.
    h.store
        .apply_policy(&NewPolicyRevision {
            document: "rules: [oops\n",
            applied_at_ms: 1,
            source: "test",
            rolled_back_from: None,
            groups: 0,
            rules: 0,
            default: "allow",
        })
        .await
        .unwrap();
    let h = h.restart().await;
    assert_eq!(
        h.server.shared.policy.current().revision,
        0,
        "the unparseable latest revision is not put in force"
    );
    assert_eq!(
        metric(&h.metrics(), "hallmark_server_policy_load_failures_total"),
        Some(1.0)
    );
    // Rolling back to it is refused with what to do.
    let e = h
        .call("rollback", serde_json::json!({"revision": 2}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("no longer parses"), "{}", e.message());
    // A good apply recovers.
    let fixed = h.apply("policy.yaml", OPEN).await;
    assert_eq!(fixed["revision"], 3);
    assert_eq!(h.server.shared.policy.current().revision, 3);
}
