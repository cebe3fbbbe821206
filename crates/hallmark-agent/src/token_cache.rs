//! The agent's cache of server-minted tokens: JWT-SVIDs for the Workload
//! API and OIDC tokens for the token endpoint, with one behaviour for both.
//!
//! - A token is reused while more than half its lifetime is left: "fresh"
//!   means comfortably valid, not newly signed.
//! - A token signed with a key an operator tainted is never served again; a
//!   new one is minted instead.
//! - Right after start (or a reconnect) the agent may hold SVIDs a moment
//!   before its server connection is published, so minting waits briefly
//!   for the connection rather than failing the first caller.
//! - While the server is away, a cached token that is still valid beats
//!   none.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hallmark_core::time::unix_secs;
use hallmark_core::EntryId;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_client::NodeClient;
use tonic::transport::Channel;
use tonic::Status;

use crate::state::AgentState;

/// Reuse a cached token while more than this share of its lifetime is left.
const REUSE_FRACTION: f64 = 0.5;
/// How long minting waits for the agent's server connection before it
/// gives up with Unavailable.
const CLIENT_WAIT: Duration = Duration::from_secs(2);

/// A minted token and its validity, in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl From<pb::NewJwtSvidResponse> for Token {
    fn from(r: pb::NewJwtSvidResponse) -> Self {
        Token {
            token: r.token,
            issued_at: r.issued_at,
            expires_at: r.expires_at,
        }
    }
}

/// What the server is asked to mint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    JwtSvid,
    /// An OIDC token with claims drawn from the caller's attested attributes.
    Oidc(BTreeMap<String, String>),
}

/// Tokens by what was asked for: kind (with attributes), entry, and the
/// audience set (sorted, deduplicated by the caller).
type Key = (Kind, EntryId, Vec<String>);

/// See the module docs. Shared by every API on the socket.
pub struct TokenCache {
    state: Arc<AgentState>,
    tokens: Mutex<HashMap<Key, Token>>,
}

impl TokenCache {
    pub fn new(state: Arc<AgentState>) -> Self {
        TokenCache {
            state,
            tokens: Mutex::default(),
        }
    }

    /// A JWT-SVID for `entry` and `audience` (sorted, deduplicated).
    pub async fn jwt_svid(&self, entry: &EntryId, audience: &[String]) -> Result<Token, Status> {
        self.get((Kind::JwtSvid, entry.clone(), audience.to_vec()))
            .await
    }

    /// An OIDC token for `entry`, `audience` (sorted, deduplicated) and the
    /// caller's attested `attributes`.
    pub async fn oidc_token(
        &self,
        entry: &EntryId,
        audience: &[String],
        attributes: BTreeMap<String, String>,
    ) -> Result<Token, Status> {
        self.get((Kind::Oidc(attributes), entry.clone(), audience.to_vec()))
            .await
    }

    /// From cache while fresh, else minted; on a failed mint, the cached
    /// token while it is still valid. The error is the server's answer (or
    /// Unavailable when there is no connection).
    async fn get(&self, key: Key) -> Result<Token, Status> {
        let now = unix_secs(SystemTime::now());
        let cached = self
            .lock()
            .get(&key)
            .cloned()
            .filter(|c| !self.state.jwt_signed_by_tainted_key(&c.token));
        if let Some(c) = &cached {
            let life = (c.expires_at - c.issued_at).max(1) as f64;
            if (c.expires_at - now) as f64 > life * REUSE_FRACTION {
                return Ok(c.clone());
            }
        }
        let minted = match self.client().await {
            Some(client) => mint(client, &key).await,
            None => Err(Status::unavailable("not connected to the server")),
        };
        match minted {
            Ok(fresh) => {
                let mut tokens = self.lock();
                // Bounded: expired tokens go before a new one comes in.
                tokens.retain(|_, c| c.expires_at > now);
                tokens.insert(key, fresh.clone());
                Ok(fresh)
            }
            Err(s) => match cached {
                Some(c) if c.expires_at > now + 1 => Ok(c),
                _ => Err(s),
            },
        }
    }

    /// The server connection, waiting up to [`CLIENT_WAIT`] for one.
    async fn client(&self) -> Option<NodeClient<Channel>> {
        let mut clients = self.state.client.subscribe();
        tokio::time::timeout(CLIENT_WAIT, clients.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|c| c.clone())
    }

    /// The map stays consistent through a panic elsewhere (every update is
    /// one insert or retain), so poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Token>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn mint(mut client: NodeClient<Channel>, key: &Key) -> Result<Token, Status> {
    let (kind, entry, audience) = key;
    let response = match kind {
        Kind::JwtSvid => {
            client
                .new_jwt_svid(pb::NewJwtSvidRequest {
                    entry_id: entry.to_string(),
                    audience: audience.clone(),
                })
                .await?
        }
        Kind::Oidc(attributes) => {
            client
                .new_oidc_token(pb::NewOidcTokenRequest {
                    entry_id: entry.to_string(),
                    audience: audience.clone(),
                    attributes: attributes.clone().into_iter().collect(),
                })
                .await?
        }
    };
    Ok(response.into_inner().into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use crate::state::Snapshot;
    use base64::Engine;
    use hallmark_core::TrustDomain;
    use std::sync::RwLock;
    use tokio::sync::watch;

    fn cache() -> TokenCache {
        let td: TrustDomain = "example.org".parse().unwrap();
        let snapshot = Snapshot {
            ready: true,
            agent_id: td.agent_id("n1").unwrap(),
            entries: Vec::new(),
            svids: HashMap::new(),
            bundle: Arc::new(hallmark_ca::Bundle::new(td.clone())),
            federated: BTreeMap::new(),
        };
        TokenCache::new(Arc::new(AgentState {
            trust_domain: td,
            snapshots: watch::channel(Arc::new(snapshot)).0,
            client: watch::channel(None).0,
            metrics: Arc::default(),
            tainted_jwt_keys: RwLock::new(Vec::new()),
            policy: Default::default(),
        }))
    }

    fn token(kid: &str, issued_at: i64, expires_at: i64) -> Token {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        Token {
            token: format!("{}.e30.sig", enc(&format!(r#"{{"kid":"{kid}"}}"#))),
            issued_at,
            expires_at,
        }
    }

    /// Without a server connection: a fresh token is served at once, a
    /// stale but valid one after the wait for the connection, a tainted
    /// one never; JWT-SVIDs and OIDC tokens do not stand in for each other.
    #[tokio::test]
    async fn served_from_cache_by_one_rule_for_both_kinds() {
        let c = cache();
        let now = unix_secs(SystemTime::now());
        let entry = EntryId::new_random();
        let aud = vec!["a".to_string()];
        let attrs = BTreeMap::from([("context".to_string(), "lab".to_string())]);
        let fresh = token("k1", now, now + 100);
        c.lock().insert(
            (Kind::Oidc(attrs.clone()), entry.clone(), aud.clone()),
            fresh.clone(),
        );
        assert_eq!(
            c.oidc_token(&entry, &aud, attrs.clone()).await.unwrap(),
            fresh
        );
        let other = c.jwt_svid(&entry, &aud).await.unwrap_err();
        assert_eq!(other.code(), tonic::Code::Unavailable, "{other:?}");

        let stale = token("k1", now - 90, now + 10);
        c.lock()
            .insert((Kind::JwtSvid, entry.clone(), aud.clone()), stale.clone());
        assert_eq!(c.jwt_svid(&entry, &aud).await.unwrap(), stale);

        *c.state.tainted_jwt_keys.write().unwrap() = vec!["k1".to_string()];
        assert!(c.jwt_svid(&entry, &aud).await.is_err());
        assert!(c.oidc_token(&entry, &aud, attrs).await.is_err());
    }
}
