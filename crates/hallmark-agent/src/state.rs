//! The agent's state as the APIs on its socket see it: the current
//! [`Snapshot`] of entries, SVIDs and bundles (published by the sync task,
//! see [`crate::sync`]), the server connection, the tainted JWT keys and
//! the identity policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use hallmark_ca::Bundle;
use hallmark_core::{Entry, EntryId, SelectorSet, SpiffeId, TrustDomain};
use hallmark_proto::hallmark::node_client::NodeClient;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

/// One cached X509-SVID with its private key.
pub struct CachedSvid {
    pub entry_id: EntryId,
    pub spiffe_id: SpiffeId,
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER. Never logged, never sent to the server.
    pub key_pkcs8: Vec<u8>,
    pub not_after: SystemTime,
    /// The entry revision this SVID was minted for.
    pub(crate) entry_revision: i64,
    /// When the sync task renews it.
    pub(crate) renew_at: Instant,
}

impl std::fmt::Debug for CachedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSvid")
            .field("entry_id", &self.entry_id)
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What the agent knows at one moment. Immutable; replaced as a whole.
#[derive(Debug)]
pub struct Snapshot {
    /// False until the first sync with the server completed.
    pub ready: bool,
    pub agent_id: SpiffeId,
    /// Authorized entries, oldest first (the first match is a workload's default SVID).
    pub entries: Vec<Entry>,
    pub svids: HashMap<EntryId, Arc<CachedSvid>>,
    pub bundle: Arc<Bundle>,
    /// Bundles of the foreign trust domains the entries federate with.
    pub federated: BTreeMap<TrustDomain, Arc<Bundle>>,
}

impl Snapshot {
    /// The entries a caller with `selectors` is entitled to, oldest first.
    pub fn matching_entries(&self, selectors: &SelectorSet) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.spec.matches(&self.agent_id, selectors))
            .collect()
    }
}

/// What the sync task shares with the APIs on the Workload API socket.
pub struct AgentState {
    pub trust_domain: TrustDomain,
    pub snapshots: watch::Sender<Arc<Snapshot>>,
    /// The current node API client, for JWT-SVID minting.
    pub client: watch::Sender<Option<NodeClient<Channel>>>,
    pub metrics: Arc<crate::metrics::AgentMetrics>,
    /// Key IDs an operator tainted: cached JWT-SVIDs they signed are not
    /// served any more (a fresh one is minted instead).
    pub tainted_jwt_keys: RwLock<Vec<String>>,
    /// The identity policy in force on this node (see [`crate::policy`]).
    pub policy: crate::policy::PolicyCell,
}

impl AgentState {
    /// Whether `token` (a compact JWS) names a tainted key in its `kid`.
    pub fn jwt_signed_by_tainted_key(&self, token: &str) -> bool {
        let tainted = self
            .tainted_jwt_keys
            .read()
            .unwrap_or_else(|p| p.into_inner());
        !tainted.is_empty() && jwt_kid(token).is_some_and(|kid| tainted.contains(&kid))
    }
}

/// The `kid` of a compact JWS header; `None` when it has none or does not
/// parse (tokens here come from our own server, so that only means "not
/// tainted").
fn jwt_kid(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    v.get("kid")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_kid_is_read_from_the_header() {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let cases = [
            (
                format!("{}.e30.sig", enc(r#"{"alg":"ES256","kid":"k1"}"#)),
                Some("k1"),
            ),
            (format!("{}.e30.sig", enc(r#"{"alg":"ES256"}"#)), None),
            ("not-base64!.e30.sig".to_string(), None),
            (String::new(), None),
        ];
        for (token, want) in cases {
            assert_eq!(jwt_kid(&token).as_deref(), want, "{token}");
        }
    }
}
