//! The token endpoint: plain HTTP/1.1 on the Workload API socket, in the
//! spirit of a cloud machine's metadata service, so a script gets an OIDC
//! token with nothing but curl:
//!
//! ```text
//! curl --unix-socket /run/hallmark/workload.sock \
//!      -X POST http://localhost/v1/tokens/oidc -d '{"aud":"sts.amazonaws.com"}'
//! ```
//!
//! Callers are attested exactly as on the Workload API (the same peer
//! credentials captured at accept, PID-reuse guard and container selectors);
//! the socket's file permissions are the only other boundary, so no special
//! header is asked for. The token is minted by the server's OIDC issuer with
//! the caller's attested attributes (context, node, pod, image...) from which
//! the entry's or the server's configured extra claims are drawn.
//!
//! The same endpoint answers `POST /v1/authorize`, policy decisions about
//! the caller (see [`crate::authorize`]).
//!
//! Tokens come from the agent's token cache (see [`crate::token_cache`]),
//! per (entry, audience set, attributes), with the same reuse rules as
//! JWT-SVIDs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use hallmark_core::{SpiffeId, Workload};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tonic::Code;

use crate::attestor::{PeerInfo, PeerStream};
use crate::authorize::{self, AUTHORIZE_PATH};
use crate::caller::{CallerAttestor, NO_IDENTITY};
use crate::state::AgentState;
use crate::token_cache::TokenCache;

/// The token path (the other one served is [`AUTHORIZE_PATH`]).
pub const OIDC_TOKEN_PATH: &str = "/v1/tokens/oidc";
/// Largest request body read; anything bigger is refused unread.
const MAX_BODY: usize = 64 * 1024;
/// How long a caller may take to send a request's headers, or idle between
/// requests, before the connection is closed.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `POST /v1/tokens/oidc` and `POST /v1/authorize` on connections
/// that are not gRPC.
pub struct TokenEndpoint {
    shared: Arc<AgentState>,
    callers: CallerAttestor,
    tokens: Arc<TokenCache>,
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    aud: Option<Audience>,
    #[serde(default)]
    spiffe_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// An answer that is not a token or a decision: status and a message
/// saying what to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl TokenEndpoint {
    pub fn new(shared: Arc<AgentState>, callers: CallerAttestor, tokens: Arc<TokenCache>) -> Self {
        Self {
            shared,
            callers,
            tokens,
        }
    }

    /// Serves HTTP/1.1 requests on one connection until the client closes it.
    pub async fn serve(self: Arc<Self>, stream: PeerStream) {
        let peer = stream.peer().clone();
        let this = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let (this, peer) = (this.clone(), peer.clone());
            async move { Ok::<_, Infallible>(this.handle(req, peer).await) }
        });
        // A caller that never finishes its headers (or idles between
        // requests) does not hold the connection forever.
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            tracing::debug!(error = %e, "token endpoint connection ended with an error");
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: PeerInfo) -> Response<Full<Bytes>> {
        if req.uri().path() == AUTHORIZE_PATH {
            let result = authorize::answer(&self.shared, &self.callers, req, peer).await;
            self.count("TokenEndpoint/authorize", &result);
            return match result {
                Ok(answer) => respond(StatusCode::OK, "application/json", answer.to_string()),
                Err(r) => refusal_response(r),
            };
        }
        let raw = wants_raw(&req);
        let result = self.answer(req, peer).await;
        self.count("TokenEndpoint/oidc", &result);
        match result {
            Ok(answer) if raw => respond(StatusCode::OK, "text/plain", answer.token.clone()),
            Ok(answer) => respond(
                StatusCode::OK,
                "application/json",
                json!({
                    "token": answer.token,
                    "spiffe_id": answer.spiffe_id,
                    "issued_at": answer.issued_at,
                    "expires_at": answer.expires_at,
                })
                .to_string(),
            ),
            Err(r) => refusal_response(r),
        }
    }

    fn count<T>(&self, method: &str, result: &Result<T, Refusal>) {
        let code = match result {
            Ok(_) => "OK".to_string(),
            Err(r) => r.status.as_u16().to_string(),
        };
        self.shared
            .metrics
            .requests
            .get_or_create(&crate::metrics::RequestLabels {
                method: method.into(),
                code,
            })
            .inc();
    }

    async fn answer(&self, req: Request<Incoming>, peer: PeerInfo) -> Result<Answer, Refusal> {
        if req.uri().path() != OIDC_TOKEN_PATH {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no endpoint at {}; POST {OIDC_TOKEN_PATH} with {{\"aud\": \"...\"}} \
                     or POST {AUTHORIZE_PATH} with {{\"peer\": \"spiffe://...\", \"port\": 443}}",
                    req.uri().path()
                ),
            ));
        }
        if req.method() != Method::POST {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not allowed on {OIDC_TOKEN_PATH}; use POST with {{\"aud\": \"...\"}}",
                    req.method()
                ),
            ));
        }
        let body = read_body(req, "{\"aud\": ...}").await?;
        let (audience, spiffe_id) = parse_request(&body)?;
        let caller = self
            .callers
            .attest(peer)
            .await
            .map_err(|s| status_refusal(&s))?;
        let mut entries = caller.snapshot.matching_entries(&caller.selectors);
        if entries.is_empty() {
            return Err(Refusal::new(StatusCode::FORBIDDEN, NO_IDENTITY));
        }
        if let Some(want) = &spiffe_id {
            entries.retain(|e| &e.spec.spiffe_id == want);
            if entries.is_empty() {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("caller is not entitled to {want}; leave spiffe_id out for the default identity"),
                ));
            }
        }
        // The first match is the default identity, as in FetchJWTSVID.
        let entry = entries[0];
        let attributes = attributes(
            self.callers.context_name(),
            &caller.snapshot.agent_id,
            caller.container.as_ref(),
        );
        let token = self
            .tokens
            .oidc_token(&entry.id, &audience, attributes)
            .await
            .map_err(|s| status_refusal(&s))?;
        Ok(Answer {
            token: token.token,
            spiffe_id: entry.spec.spiffe_id.to_string(),
            issued_at: token.issued_at,
            expires_at: token.expires_at,
        })
    }
}

/// The request body, refused unread when it is larger than [`MAX_BODY`].
/// `form` says what a body should hold.
pub(crate) async fn read_body(req: Request<Incoming>, form: &str) -> Result<Bytes, Refusal> {
    let too_big = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY} bytes; send only {form}"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_big());
    }
    Ok(Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| too_big())?
        .to_bytes())
}

/// A refusal as JSON `{"error": ...}`, with `Allow` on a 405.
fn refusal_response(r: Refusal) -> Response<Full<Bytes>> {
    let mut resp = respond(
        r.status,
        "application/json",
        json!({ "error": r.message }).to_string(),
    );
    if r.status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

struct Answer {
    token: String,
    spiffe_id: String,
    issued_at: i64,
    expires_at: i64,
}

/// How the endpoint reads a token request body, for callers outside this
/// module (the fuzz target): the audience (sorted, deduplicated, none empty) and the optional SPIFFE
/// ID a token request body asks for, or the message a caller would get.
pub fn parse_token_request(body: &[u8]) -> Result<(Vec<String>, Option<SpiffeId>), String> {
    parse_request(body).map_err(|r| r.message)
}

/// The audience (sorted, deduplicated) and the optional SPIFFE ID asked for.
fn parse_request(body: &[u8]) -> Result<(Vec<String>, Option<SpiffeId>), Refusal> {
    let bad = |m: String| Refusal::new(StatusCode::BAD_REQUEST, m);
    let req: TokenRequest = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "request body is not valid JSON of the form {{\"aud\": \"...\"}}: {e}"
        ))
    })?;
    let mut audience = match req.aud {
        None => {
            return Err(bad(
                "`aud` is missing: give the audience, e.g. {\"aud\": \"sts.amazonaws.com\"}".into(),
            ))
        }
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(list)) => list,
    };
    if audience.is_empty() || audience.iter().any(|a| a.trim().is_empty()) {
        return Err(bad(
            "`aud` must be a non-empty string or a list of non-empty strings".into(),
        ));
    }
    audience.sort();
    audience.dedup();
    let spiffe_id = req
        .spiffe_id
        .filter(|s| !s.is_empty())
        .map(|s| {
            SpiffeId::new(&s).map_err(|e| bad(format!("`spiffe_id` `{s}` is not a SPIFFE ID: {e}")))
        })
        .transpose()?;
    Ok((audience, spiffe_id))
}

/// What the agent attested about the caller, by OIDC claim name. Only
/// attributes that are known and non-empty are sent.
fn attributes(
    context: &str,
    agent_id: &SpiffeId,
    container: Option<&Workload>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            out.insert(k.to_string(), v.to_string());
        }
    };
    put("context", context);
    put("node", agent_id.agent_node().unwrap_or_default());
    if let Some(w) = container {
        put("container", &w.name);
        put("container_id", &w.container_id);
        put("image", &w.image);
        put("image_digest", &w.image_digest);
        if let Some(pod) = &w.pod {
            put("namespace", &pod.namespace);
            put("pod", &pod.name);
            put("pod_uid", &pod.uid);
        }
        if let Some(c) = &w.compose {
            put("compose_project", &c.project);
            put("compose_service", &c.service);
        }
    }
    out
}

/// `Accept: text/plain` or `?format=raw` asks for the bare token (handy for
/// a file an SDK reads, like `AWS_WEB_IDENTITY_TOKEN_FILE`).
fn wants_raw<B>(req: &Request<B>) -> bool {
    let query_raw = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "format=raw"));
    let accept_text = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/plain"));
    query_raw || accept_text
}

pub(crate) fn status_refusal(s: &tonic::Status) -> Refusal {
    let status = match s.code() {
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unavailable | Code::FailedPrecondition | Code::DeadlineExceeded => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Code::NotFound => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_GATEWAY,
    };
    Refusal::new(status, s.message().to_string())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn request_bodies() {
        let ok = |aud: &[&str], id: Option<&str>| {
            Ok((
                aud.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                id.map(|s| SpiffeId::new(s).unwrap()),
            ))
        };
        let cases: &[(&str, Result<_, &str>)] = &[
            (r#"{"aud":"sts.amazonaws.com"}"#, Ok(("one", None))),
            (r#"{"aud":["b","a","b"]}"#, Ok(("many", None))),
            (
                r#"{"aud":"x","spiffe_id":"spiffe://example.org/w"}"#,
                Ok(("id", Some("spiffe://example.org/w"))),
            ),
            (r#"{}"#, Err("`aud` is missing")),
            (r#"{"aud":""}"#, Err("`aud` must be")),
            (r#"{"aud":[]}"#, Err("`aud` must be")),
            (r#"{"aud":["a",""]}"#, Err("`aud` must be")),
            (r#"{"aud":7}"#, Err("not valid JSON")),
            (r#"{"audience":"x"}"#, Err("not valid JSON")),
            ("aud=x", Err("not valid JSON")),
            (r#"{"aud":"x","spiffe_id":"https://x"}"#, Err("`spiffe_id`")),
        ];
        for (body, want) in cases {
            let got = parse_request(body.as_bytes());
            match want {
                Ok(("one", None)) => assert_eq!(got, ok(&["sts.amazonaws.com"], None)),
                Ok(("many", None)) => assert_eq!(got, ok(&["a", "b"], None)),
                Ok((_, id)) => assert_eq!(got, ok(&["x"], *id)),
                Err(msg) => {
                    let r = got.unwrap_err();
                    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
                    assert!(r.message.contains(msg), "{body}: {}", r.message);
                }
            }
        }
    }

    #[test]
    fn attributes_come_from_the_container_record_and_the_agent() {
        let agent = SpiffeId::new("spiffe://example.org/hallmark/agent/node-1").unwrap();
        let bare = attributes("prod", &agent, None);
        assert_eq!(
            bare,
            BTreeMap::from([
                ("context".to_string(), "prod".to_string()),
                ("node".to_string(), "node-1".to_string()),
            ])
        );
        let mut w = Workload::partial(&"a".repeat(64), hallmark_core::RuntimeSource::Cri, "test");
        w.name = "app".into();
        w.image_digest = "sha256:abc".into();
        w.pod = Some(hallmark_core::PodInfo {
            uid: "u-1".into(),
            name: "web-0".into(),
            namespace: "shop".into(),
            ..Default::default()
        });
        let full = attributes("prod", &agent, Some(&w));
        assert_eq!(full["namespace"], "shop");
        assert_eq!(full["pod"], "web-0");
        assert_eq!(full["pod_uid"], "u-1");
        assert_eq!(full["container"], "app");
        assert_eq!(full["image_digest"], "sha256:abc");
        assert!(!full.contains_key("image"), "empty attributes are left out");
        assert!(!full.contains_key("compose_project"));
        for k in full.keys() {
            assert!(hallmark_core::OIDC_CLAIM_NAMES.contains(&k.as_str()), "{k}");
        }
    }

    #[test]
    fn raw_answers_on_request() {
        let req = |uri: &str, accept: Option<&str>| {
            let mut b = Request::builder().uri(uri);
            if let Some(a) = accept {
                b = b.header(ACCEPT, a);
            }
            b.body(()).unwrap()
        };
        assert!(!wants_raw(&req("/v1/tokens/oidc", None)));
        assert!(!wants_raw(&req(
            "/v1/tokens/oidc",
            Some("application/json")
        )));
        assert!(wants_raw(&req("/v1/tokens/oidc?format=raw", None)));
        assert!(wants_raw(&req("/v1/tokens/oidc", Some("text/plain"))));
    }
}
