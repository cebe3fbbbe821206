//! `POST /v1/authorize`: whether a peer may reach the calling workload,
//! for services without a mesh, answered on this node from the policy the
//! agent holds (see [`crate::policy`]) with no server round trip:
//!
//! ```text
//! curl --unix-socket /run/hallmark/workload.sock \
//!      -X POST http://localhost/v1/authorize \
//!      -d '{"peer": "spiffe://example.org/web", "port": 443}'
//! ```
//!
//! The answer is always about the caller: it is the acceptor, described by
//! what attestation found (its selectors, the SPIFFE IDs of its entries,
//! its container's labels, namespace and image, the node's context and
//! name), exactly as a flow to it is decided. A caller may pick one of its
//! own SPIFFE IDs with `spiffe_id`, never another workload's, so no process
//! can learn what policy says about a workload it is not.
//!
//! The peer is the initiator, known only by the SPIFFE ID it presented:
//! its groups are those the server computed for that ID (the running
//! workloads holding it) with the groups the bare ID matches.

use std::collections::BTreeSet;
use std::sync::Arc;

use hallmark_core::{SelectorSet, SpiffeId, Workload};
use hallmark_policy::{Attributes, DecidedBy, GroupSet, Outcome, Protocol, Verdict, ANY_GROUP};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::attestor::PeerInfo;
use crate::caller::CallerAttestor;
use crate::policy::AgentPolicy;
use crate::state::AgentState;
use crate::token_endpoint::{read_body, status_refusal, Refusal};

/// The path served.
pub const AUTHORIZE_PATH: &str = "/v1/authorize";

/// What a body looks like, for messages.
const FORM: &str = r#"{"peer": "spiffe://...", "port": 443}"#;

/// The body as sent; every field is checked by [`parse_request`] so that
/// each refusal names the field and the rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    peer: Option<Value>,
    port: Option<Value>,
    protocol: Option<Value>,
    spiffe_id: Option<Value>,
}

/// A checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// The initiator.
    pub peer: SpiffeId,
    /// The caller's port the peer would reach.
    pub port: u16,
    pub protocol: Protocol,
    /// Which of the caller's identities answers; all of them when absent.
    pub spiffe_id: Option<SpiffeId>,
}

/// How the endpoint reads a request body, for callers outside this module
/// (the fuzz target): the checked request or the message a caller gets.
pub fn parse_authorize_request(body: &[u8]) -> Result<AuthorizeRequest, String> {
    parse_request(body).map_err(|r| r.message)
}

pub(crate) fn parse_request(body: &[u8]) -> Result<AuthorizeRequest, Refusal> {
    let bad = |m: String| Refusal::new(StatusCode::BAD_REQUEST, m);
    let raw: RawRequest = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "request body is not valid JSON of the form {FORM}: {e}"
        ))
    })?;
    let text = |field: &str, v: Value| match v {
        Value::String(s) => Ok(s),
        other => Err(bad(format!("`{field}` must be a string, not {other}"))),
    };
    let spiffe_id = |field: &str, s: String| {
        SpiffeId::new_workload(&s)
            .map_err(|e| bad(format!("`{field}` `{s}` is not a workload SPIFFE ID: {e}")))
    };
    let peer = match raw.peer {
        None | Some(Value::Null) => {
            return Err(bad(format!(
                "`peer` is missing: give the SPIFFE ID the peer presented, e.g. {FORM}"
            )))
        }
        Some(v) => spiffe_id("peer", text("peer", v)?)?,
    };
    let port = match raw.port {
        None | Some(Value::Null) => {
            return Err(bad(format!(
                "`port` is missing: give the port of yours the peer would reach, e.g. {FORM}"
            )))
        }
        Some(v) => match v.as_u64() {
            Some(p @ 1..=65535) => p as u16,
            _ => {
                return Err(bad(format!(
                    "`port` must be a whole number from 1 to 65535, not {v}"
                )))
            }
        },
    };
    let protocol = match raw.protocol {
        None | Some(Value::Null) => Protocol::Tcp,
        Some(v) => match text("protocol", v)?.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(bad(format!(
                    "`protocol` must be \"tcp\" or \"udp\" (default tcp), not \"{other}\""
                )))
            }
        },
    };
    let spiffe_id = match raw.spiffe_id {
        None | Some(Value::Null) => None,
        Some(v) => {
            let s = text("spiffe_id", v)?;
            if s.is_empty() {
                None
            } else {
                Some(spiffe_id("spiffe_id", s)?)
            }
        }
    };
    Ok(AuthorizeRequest {
        peer,
        port,
        protocol,
        spiffe_id,
    })
}

/// Answers one request on the socket: the decision as JSON, or why not.
pub(crate) async fn answer(
    shared: &Arc<AgentState>,
    callers: &CallerAttestor,
    req: Request<Incoming>,
    peer: PeerInfo,
) -> Result<Value, Refusal> {
    if req.method() != Method::POST {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not allowed on {AUTHORIZE_PATH}; use POST with {FORM}",
                req.method()
            ),
        ));
    }
    let body = read_body(req, FORM).await?;
    let request = parse_request(&body)?;
    let caller = callers.attest(peer).await.map_err(|s| status_refusal(&s))?;
    let own: Vec<String> = caller
        .snapshot
        .matching_entries(&caller.selectors)
        .iter()
        .map(|e| e.spec.spiffe_id.to_string())
        .collect();
    let spiffe_ids = identities(&own, request.spiffe_id.as_ref())?;
    let attributes = caller_attributes(
        callers.context_name(),
        caller.snapshot.agent_id.agent_node().unwrap_or_default(),
        &caller.selectors,
        caller.container.as_ref(),
        spiffe_ids,
    );
    let policy = shared.policy.current();
    policy
        .usable()
        .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let decision = decide(&policy, &attributes, &request);
    shared
        .metrics
        .authorize_decisions
        .get_or_create(&crate::metrics::VerdictLabels {
            verdict: outcome_word(decision.verdict.outcome).into(),
        })
        .inc();
    Ok(decision.to_json(&request, &attributes.spiffe_ids))
}

/// The SPIFFE IDs the caller answers as: the one it chose, which must be
/// its own, or every one it holds (what a flow to it is decided with).
fn identities(own: &[String], chosen: Option<&SpiffeId>) -> Result<Vec<String>, Refusal> {
    match chosen {
        Some(want) if own.iter().any(|id| id == want.as_str()) => Ok(vec![want.to_string()]),
        Some(want) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "a workload may ask only about itself: {want} is not an identity of the caller; \
                 leave spiffe_id out to answer as {}",
                if own.is_empty() {
                    "the caller (it holds no SPIFFE ID)".to_string()
                } else {
                    own.join(", ")
                }
            ),
        )),
        None => {
            let set: BTreeSet<&String> = own.iter().collect();
            Ok(set.into_iter().cloned().collect())
        }
    }
}

/// The caller as policy sees an acceptor: what attestation found, as a
/// flow end of the same workload is described (container labels with its
/// pod's over them). Its address is not known here, so `cidr` groups do
/// not match it.
pub(crate) fn caller_attributes(
    context: &str,
    node: &str,
    selectors: &SelectorSet,
    container: Option<&Workload>,
    spiffe_ids: Vec<String>,
) -> Attributes {
    let selectors: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
    workload_attributes(context, node, selectors, container, spiffe_ids)
}

/// [`caller_attributes`] from selectors in text form: how kernel
/// enforcement describes a local workload from its inventory record.
pub(crate) fn workload_attributes(
    context: &str,
    node: &str,
    mut selectors: Vec<String>,
    container: Option<&Workload>,
    spiffe_ids: Vec<String>,
) -> Attributes {
    selectors.sort();
    selectors.dedup();
    let mut a = Attributes {
        spiffe_ids,
        selectors,
        context: context.to_string(),
        node: node.to_string(),
        ..Attributes::default()
    };
    if let Some(w) = container {
        a.labels = w.labels.clone();
        a.image = w.image.clone();
        if let Some(pod) = &w.pod {
            a.namespace = pod.namespace.clone();
            a.labels
                .extend(pod.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    a
}

/// One decision and the groups it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub verdict: Verdict,
    pub revision: i64,
    /// The caller's groups and the peer's, `any` left out.
    pub workload_groups: Vec<String>,
    pub peer_groups: Vec<String>,
}

/// Decides `peer -> caller` under the agent's policy.
pub(crate) fn decide(
    state: &AgentPolicy,
    caller: &Attributes,
    request: &AuthorizeRequest,
) -> Decision {
    let policy = &state.policy;
    let peer = request.peer.as_str();
    let mut from = policy.set_of(
        state
            .identity_groups
            .get(peer)
            .into_iter()
            .flatten()
            .map(String::as_str),
    );
    from.union_with(&policy.groups_of(&Attributes::spiffe_id(peer)));
    let to = policy.groups_of(caller);
    let verdict = policy.decide(&from, &to, request.protocol, request.port);
    let names = |set: &GroupSet| -> Vec<String> {
        policy
            .names_in(set)
            .filter(|n| *n != ANY_GROUP)
            .map(str::to_string)
            .collect()
    };
    Decision {
        revision: state.revision,
        workload_groups: names(&to),
        peer_groups: names(&from),
        verdict,
    }
}

impl Decision {
    /// The answer's JSON: the decision object (`verdict`, `rule`, `mode`,
    /// `decided_by`, `policy_revision`) with `allowed` and what was asked.
    pub(crate) fn to_json(&self, request: &AuthorizeRequest, spiffe_ids: &[String]) -> Value {
        let (rule, mode, decided_by) = match &self.verdict.decided_by {
            DecidedBy::Rule { name, mode, .. } => (
                Value::from(name.as_ref()),
                Value::from(mode.as_str()),
                "rule",
            ),
            DecidedBy::Default { .. } => (Value::Null, Value::Null, "default"),
            DecidedBy::Nothing => (Value::Null, Value::Null, "nothing"),
        };
        json!({
            "allowed": self.verdict.outcome != Outcome::Denied,
            "verdict": outcome_word(self.verdict.outcome),
            "rule": rule,
            "mode": mode,
            "decided_by": decided_by,
            "policy_revision": self.revision,
            "peer": request.peer.as_str(),
            "peer_groups": self.peer_groups,
            "port": request.port,
            "protocol": match request.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            },
            "workload": {
                "spiffe_ids": spiffe_ids,
                "groups": self.workload_groups,
            },
        })
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Allowed => "allowed",
        Outcome::Denied => "denied",
        Outcome::WouldDeny => "would-deny",
        Outcome::NoDecision => "no-decision",
    }
}

#[cfg(test)]
#[path = "authorize_tests.rs"]
mod tests;
