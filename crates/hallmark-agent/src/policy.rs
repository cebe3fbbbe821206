//! The identity policy as this agent holds it: the compiled policy of the
//! revision in force and the groups of every SPIFFE ID the server knows,
//! both taken from the sync stream (see [`crate::sync`]) so that decisions
//! on this node need no server round trip.
//!
//! The server sends the document on a stream's first update and whenever
//! the revision changes, and the identity groups whenever they change.
//! Nothing is written to disk but a status file: a reconnecting stream
//! resends everything, and while the server is away the agent keeps
//! deciding with what it last received.
//!
//! A document this agent cannot read (a server of another version, say)
//! never turns into "no policy": the policy in force stays, the failure is
//! logged, counted and shown in `hallmark agent status`, and an agent that
//! never held a readable revision refuses to decide rather than allow
//! everything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hallmark_policy::{Policy, PolicyDocument};
use hallmark_proto::hallmark as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The status file in the agent's data directory, read by
/// `hallmark agent status`.
pub const STATUS_FILE: &str = "policy.json";

/// What the agent decides with. Immutable; replaced as a whole, so a
/// decision never mixes the policy of one revision with another's.
#[derive(Debug, Clone)]
pub struct AgentPolicy {
    /// The revision in force; 0 when none was applied (every flow allowed).
    pub revision: i64,
    /// The latest revision the server announced; differs from `revision`
    /// while that one could not be read.
    pub announced: i64,
    pub policy: Arc<Policy>,
    /// Groups and rules defined by the document in force.
    pub groups: usize,
    pub rules: usize,
    /// SPIFFE ID -> the groups a peer presenting it belongs to, as the
    /// server computed them.
    pub identity_groups: Arc<HashMap<String, Vec<String>>>,
    /// Why the announced revision is not in force, when it is not.
    pub error: Option<String>,
    /// Whether a rule of the document in force names port 53 (DNS): then
    /// kernel enforcement does not exempt DNS to the node's resolvers.
    pub names_dns: bool,
    /// Peer addresses of other nodes' workloads and the groups of each,
    /// as the server computed them (kernel enforcement's peer map).
    pub peer_addresses: Arc<Vec<(std::net::IpAddr, Vec<String>)>>,
    /// The fleet switch (`hallmark policy enforcement off`): when set,
    /// every agent turns kernel enforcement off.
    pub fleet_enforcement_off: bool,
}

impl Default for AgentPolicy {
    fn default() -> Self {
        AgentPolicy {
            revision: 0,
            announced: 0,
            policy: Arc::new(Policy::compile(&PolicyDocument::default())),
            groups: 0,
            rules: 0,
            identity_groups: Arc::default(),
            error: None,
            names_dns: false,
            peer_addresses: Arc::default(),
            fleet_enforcement_off: false,
        }
    }
}

impl AgentPolicy {
    /// The state after one sync update: a new document compiled, or the
    /// current policy kept with an error naming the revision that could
    /// not be read; identity groups replaced when the update carries them.
    pub fn next(&self, update: &pb::SyncUpdate) -> AgentPolicy {
        let mut next = self.clone();
        let announced = update.policy_revision;
        next.announced = announced;
        if !update.policy_document.is_empty() {
            let file = format!("revision {announced}");
            match hallmark_policy::parse(&file, &update.policy_document) {
                Ok(parsed) => {
                    next.revision = announced;
                    next.groups = parsed.document.groups.len();
                    next.rules = parsed.document.rules.len();
                    next.names_dns = parsed.document.rules.iter().any(|r| {
                        r.ports
                            .iter()
                            .any(|p| p.contains(crate::enforce::inputs::DNS_PORT))
                    });
                    next.policy = Arc::new(Policy::compile(&parsed.document));
                    next.error = None;
                }
                Err(e) => {
                    next.error = Some(format!(
                        "policy revision {announced} from the server does not parse; \
                         still deciding with {}: {e}",
                        self.in_force()
                    ));
                }
            }
        } else if announced == 0 {
            // The server holds no policy (a stream's first update says so
            // with revision 0 and no document).
            if self.revision != 0 {
                next = AgentPolicy {
                    identity_groups: next.identity_groups,
                    peer_addresses: next.peer_addresses,
                    fleet_enforcement_off: next.fleet_enforcement_off,
                    ..AgentPolicy::default()
                };
            } else {
                next.error = None;
            }
        } else if announced != self.revision && self.error.is_none() {
            // The document goes with every revision change; a change
            // without one is a server bug, and the old policy stays.
            next.error = Some(format!(
                "the server announced policy revision {announced} without its document; \
                 still deciding with {}",
                self.in_force()
            ));
        }
        if update.peer_addresses_sent {
            // An address that does not parse is left out: it is then
            // decided as an address alone, as the server's absent ones are.
            next.peer_addresses = Arc::new(
                update
                    .peer_addresses
                    .iter()
                    .filter_map(|p| Some((p.ip.parse().ok()?, p.groups.clone())))
                    .collect(),
            );
        }
        // Sent on every update; empty means on.
        next.fleet_enforcement_off = update.enforcement == "off";
        if update.identity_groups_sent {
            next.identity_groups = Arc::new(
                update
                    .identity_groups
                    .iter()
                    .map(|g| (g.spiffe_id.clone(), g.groups.clone()))
                    .collect(),
            );
        }
        next
    }

    /// `revision N` or `no policy`, for messages.
    fn in_force(&self) -> String {
        if self.revision == 0 {
            "no policy (every flow allowed)".to_string()
        } else {
            format!("revision {}", self.revision)
        }
    }

    /// Whether this agent may decide: it holds the revision the server
    /// announced, or at least one it read earlier. An agent that could
    /// not read the only revision it was sent has nothing honest to
    /// decide with.
    pub fn usable(&self) -> Result<(), String> {
        match &self.error {
            Some(e) if self.revision == 0 && self.announced != 0 => Err(e.clone()),
            _ => Ok(()),
        }
    }

    pub fn status(&self) -> PolicyStatus {
        PolicyStatus {
            revision: self.revision,
            groups: self.groups,
            rules: self.rules,
            identities: self.identity_groups.len(),
            error: self.error.clone(),
        }
    }
}

/// The policy part of the agent's status (`/status`, `agent status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The revision in force; 0: none applied.
    pub revision: i64,
    pub groups: usize,
    pub rules: usize,
    /// SPIFFE IDs whose groups the agent holds.
    pub identities: usize,
    /// Why the server's latest revision is not in force; `null` when it is.
    pub error: Option<String>,
}

impl PolicyStatus {
    /// `revision N, G groups, R rules, K identities` or `none applied`.
    pub fn summary(&self) -> String {
        if self.revision == 0 {
            return "none applied".to_string();
        }
        let n =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        format!(
            "revision {}, {}, {}, {}",
            self.revision,
            n(self.groups, "group", "groups"),
            n(self.rules, "rule", "rules"),
            n(self.identities, "identity", "identities"),
        )
    }
}

/// The agent's policy, shared by the sync task (the only writer) and the
/// APIs on the socket.
pub struct PolicyCell {
    tx: watch::Sender<Arc<AgentPolicy>>,
}

impl Default for PolicyCell {
    fn default() -> Self {
        PolicyCell {
            tx: watch::channel(Arc::new(AgentPolicy::default())).0,
        }
    }
}

impl PolicyCell {
    pub fn current(&self) -> Arc<AgentPolicy> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<AgentPolicy>> {
        self.tx.subscribe()
    }

    /// Takes the policy part of a sync update; logs and counts a revision
    /// that cannot be read. Returns the new state.
    pub(crate) fn apply(
        &self,
        update: &pb::SyncUpdate,
        metrics: &crate::metrics::AgentMetrics,
    ) -> Arc<AgentPolicy> {
        let current = self.current();
        let next = current.next(update);
        if next.error.is_some() && next.error != current.error {
            metrics.policy_errors.inc();
            if let Some(e) = &next.error {
                tracing::error!(revision = update.policy_revision, "{e}");
            }
        }
        if next.revision != current.revision {
            tracing::info!(
                revision = next.revision,
                groups = next.groups,
                rules = next.rules,
                "policy revision in force"
            );
        }
        metrics.policy_revision.set(next.revision);
        let next = Arc::new(next);
        self.tx.send_replace(next.clone());
        next
    }
}

fn status_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATUS_FILE)
}

/// Writes the status file atomically (0644: it holds no secret).
pub(crate) fn write_status(data_dir: &Path, status: &PolicyStatus) {
    let Ok(text) = serde_json::to_vec_pretty(status) else {
        return;
    };
    let path = status_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
        tracing::warn!(path = %path.display(), error = %e, "writing the policy status file failed");
    }
}

/// Reads the status file an agent wrote.
pub fn read_status(data_dir: &Path) -> std::io::Result<PolicyStatus> {
    let path = status_path(data_dir);
    let text = std::fs::read_to_string(&path)?;
    serde_json::from_str(&text).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
