//! `/api/v1/`: the console's JSON API. Each endpoint is one admin service
//! call with the request the matching CLI command sends; query parameters
//! are named after the CLI's flags and take the same values (`since=1h`,
//! `from=ns:payments`, `verdict=would-deny`), checked by the same parsers,
//! and refused with a 400 naming the parameter and the rule.

// Parameter checks answer the HTTP response to send back as their error:
// it is built once per refused request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use hallmark_core::time::unix_millis;
use hallmark_core::timearg::parse_instant;
use hallmark_flows::api::GraphRequest;
use hallmark_flows::verdict::parse_verdict_filter;
use hallmark_flows::{EndpointFilter, FlowQuery, FlowStatus, GraphBy, Protocol};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use serde::Serialize;
use tonic::{Code, Request};

use crate::auth::{error, AppState};

/// Flows a listing answers unless asked for another number (as `hallmark
/// flows list`).
const DEFAULT_FLOW_LIMIT: usize = 100;
/// The most flows one listing answers.
const MAX_FLOW_LIMIT: usize = 10_000;

type St = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route(
            "/api/v1/session",
            get(crate::auth::whoami)
                .post(crate::auth::login)
                .delete(crate::auth::logout),
        )
        .route("/api/v1/status", get(status))
        .route("/api/v1/graph", get(graph))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/flows/stats", get(flow_stats))
        .route("/api/v1/whois", get(whois))
        .route("/api/v1/workloads", get(workloads))
        .route("/api/v1/workloads/{id}", get(workload))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/entries", get(entries))
        .route("/api/v1/authorities", get(authorities))
        .route("/api/v1/federations", get(federations))
        .route("/api/v1/bundle", get(bundle))
        .route("/api/v1/groups", get(groups))
        .route("/api/v1/groups/{name}/members", get(group_members))
        .route("/api/v1/policy", get(policy_show).post(policy_apply))
        .route("/api/v1/policy/history", get(policy_history))
        .route("/api/v1/policy/rules", get(policy_rules))
        .route("/api/v1/policy/audit", get(policy_audit))
        .route("/api/v1/policy/dry-run", post(policy_dry_run))
        .route("/api/v1/policy/check", get(policy_check))
        .route("/api/v1/policy/suggest", get(policy_suggest))
        .route("/api/v1/policy/enforcement", get(enforcement))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API endpoint: see docs/CONSOLE.md",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::guard,
        ));
    Router::new()
        .merge(crate::assets::routes())
        .route("/login", get(crate::auth::login_link))
        .merge(api)
        .layer(middleware::from_fn(crate::auth::security_headers))
        .with_state(state)
}

/// A tonic status as an HTTP answer.
fn status_answer(s: tonic::Status) -> Response {
    let code = match s.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, s.message())
}

/// An admin call's answer shaped by `ok`, or its status as an HTTP error.
fn answer<T>(
    r: Result<tonic::Response<T>, tonic::Status>,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match r {
        Ok(r) => ok(r.into_inner()),
        Err(e) => status_answer(e),
    }
}

/// A JSON text the admin service produced, as it is.
fn raw_json(json: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

fn json<T: Serialize>(v: &T) -> Response {
    axum::Json(v).into_response()
}

fn bad(param: &str, why: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, format!("{param}: {why}"))
}

/// Query parameters in order; a name may repeat (`from=a&from=b`).
struct Params(Vec<(String, String)>);

impl Params {
    fn of(q: Option<String>) -> Params {
        let q = q.unwrap_or_default();
        Params(
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last value of `name`; an empty value counts as absent.
    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Refuses a parameter the endpoint does not know.
    fn only(&self, known: &[&str]) -> Result<(), Response> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(bad(
                k,
                format!(
                    "unknown parameter; this endpoint takes {}",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// An instant in the CLI's forms (`1h`, RFC 3339, unix seconds, `now`).
    fn instant(
        &self,
        name: &str,
        default: Option<&str>,
        now: i64,
    ) -> Result<Option<i64>, Response> {
        match self.one(name).or(default) {
            None => Ok(None),
            Some(t) => parse_instant(t, now).map(Some).map_err(|e| bad(name, e)),
        }
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, Response> {
        match self.one(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad(name, format!("`{v}` is not a whole number in range"))),
        }
    }
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// `since`/`until` as a non-empty window.
fn window(p: &Params, default_since: &str, now: i64) -> Result<(i64, Option<i64>), Response> {
    let since = p.instant("since", Some(default_since), now)?.unwrap_or(now);
    let until = p.instant("until", None, now)?;
    if let Some(u) = until {
        if u <= since {
            return Err(bad("until", "is not after since: the window is empty"));
        }
    }
    Ok((since, until))
}

macro_rules! try_or {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

async fn status(State(s): St) -> Response {
    answer(
        s.admin.status(Request::new(pb::StatusRequest {})).await,
        |r| json(&r),
    )
}

/// A map grouping named by a `by` parameter.
fn graph_by(v: &str) -> Result<GraphBy, Response> {
    GraphBy::parse(v).ok_or_else(|| {
        bad(
            "by",
            format!("`{v}` is not spiffe-id, workload, namespace, service or context"),
        )
    })
}

/// `GET /api/v1/graph?since=24h&until=&by=spiffe-id`: `hallmark flows
/// graph --format json`.
async fn graph(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["since", "until", "by"]));
    let (since_ms, until_ms) = try_or!(window(&p, "24h", now_ms()));
    let by = match p.one("by") {
        None => GraphBy::SpiffeId,
        Some(b) => try_or!(graph_by(b)),
    };
    let req = GraphRequest {
        since_ms,
        until_ms,
        by,
    };
    let json = serde_json::to_string(&req).unwrap_or_default();
    answer(
        s.admin
            .flow_graph(Request::new(pb::FlowQueryRequest { json }))
            .await,
        |r| raw_json(r.json),
    )
}

/// The flow query of `hallmark flows list`, from parameters named after its
/// flags.
fn flow_query(p: &Params, now: i64) -> Result<FlowQuery, Response> {
    p.only(&[
        "since", "until", "from", "to", "port", "protocol", "status", "verdict", "limit",
        "after_id",
    ])?;
    let (since_ms, until_ms) = window(p, "1h", now)?;
    let filters = |name: &str| -> Result<Vec<EndpointFilter>, Response> {
        p.all(name)
            .into_iter()
            .map(|f| {
                f.parse::<EndpointFilter>()
                    .map_err(|e: hallmark_flows::FilterError| bad(name, e))
            })
            .collect()
    };
    let protocol = match p.one("protocol") {
        None => None,
        Some(v) => Some(
            v.parse::<Protocol>()
                .map_err(|e: hallmark_flows::FlowError| bad("protocol", e))?,
        ),
    };
    let status = match p.one("status") {
        None => None,
        Some(v) => Some(FlowStatus::parse(v).ok_or_else(|| {
            bad(
                "status",
                format!("`{v}` is not attributed, unattributed or external"),
            )
        })?),
    };
    let verdict = match p.one("verdict") {
        None => None,
        Some(v) => Some(parse_verdict_filter(v).map_err(|e| bad("verdict", e))?),
    };
    let limit = match p.number::<usize>("limit")? {
        None => DEFAULT_FLOW_LIMIT,
        Some(0) => return Err(bad("limit", "must be at least 1")),
        Some(n) if n > MAX_FLOW_LIMIT => {
            return Err(bad("limit", format!("at most {MAX_FLOW_LIMIT}")))
        }
        Some(n) => n,
    };
    Ok(FlowQuery {
        since_ms,
        until_ms,
        from: filters("from")?,
        to: filters("to")?,
        port: p.number("port")?,
        protocol,
        status,
        verdict,
        after_id: p.number("after_id")?,
        limit,
    })
}

/// The flow query a `/api/v1/flows` query string asks for, or the refusal
/// (its status code and message): what the endpoint runs, for fuzzing.
pub fn parse_flow_query(query: &str, now_ms: i64) -> Result<FlowQuery, (u16, String)> {
    flow_query(&Params::of(Some(query.to_string())), now_ms).map_err(|r| {
        let code = r.status().as_u16();
        (code, format!("refused with {code}"))
    })
}

/// `GET /api/v1/flows?since&until&from&to&port&protocol&status&verdict&limit&after_id`:
/// `hallmark flows list --json` (newest first; with `after_id`, the flows
/// stored after it, oldest first: a live tail).
async fn flows(State(s): St, RawQuery(q): RawQuery) -> Response {
    let query = try_or!(flow_query(&Params::of(q), now_ms()));
    let json = serde_json::to_string(&query).unwrap_or_default();
    answer(
        s.admin
            .list_flows(Request::new(pb::FlowQueryRequest { json }))
            .await,
        |r| raw_json(r.json),
    )
}

async fn flow_stats(State(s): St) -> Response {
    let req = pb::FlowQueryRequest { json: "{}".into() };
    answer(s.admin.flow_stats(Request::new(req)).await, |r| {
        raw_json(r.json)
    })
}

/// `GET /api/v1/whois?ip=&at=`: `hallmark flows whois`.
async fn whois(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["ip", "at"]));
    let Some(ip) = p.one("ip") else {
        return bad("ip", "required: the address to look up");
    };
    let ip: std::net::IpAddr = try_or!(ip
        .parse()
        .map_err(|_| bad("ip", format!("`{ip}` is not an IP address"))));
    let now = now_ms();
    let at_ms = try_or!(p.instant("at", Some("now"), now)).unwrap_or(now);
    let json = serde_json::json!({ "ip": ip, "at_ms": at_ms }).to_string();
    answer(
        s.admin
            .whois(Request::new(pb::FlowQueryRequest { json }))
            .await,
        |r| raw_json(r.json),
    )
}

/// `GET /api/v1/workloads?context&node&namespace&image&label&state`:
/// `hallmark workloads list`.
async fn workloads(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["context", "node", "namespace", "image", "label", "state"]));
    let own = |n: &str| p.one(n).unwrap_or_default().to_string();
    let req = pb::ListWorkloadsRequest {
        context_name: own("context"),
        node: own("node"),
        namespace: own("namespace"),
        image: own("image"),
        labels: p.all("label").into_iter().map(str::to_string).collect(),
        state: own("state"),
    };
    answer(s.admin.list_workloads(Request::new(req)).await, |r| {
        json(&r.workloads)
    })
}

/// `GET /api/v1/workloads/{id}`: `hallmark workloads show`.
async fn workload(State(s): St, Path(id): Path<String>) -> Response {
    let req = pb::GetWorkloadRequest { container_id: id };
    answer(s.admin.get_workload(Request::new(req)).await, |r| json(&r))
}

/// `GET /api/v1/agents`: `hallmark agent list`, with each agent's runtime
/// status (degraded discovery and why).
async fn agents(State(s): St) -> Response {
    answer(
        s.admin
            .list_agents(Request::new(pb::ListAgentsRequest {}))
            .await,
        |r| json(&r.agents),
    )
}

/// `GET /api/v1/entries?parent&spiffe_id&selector`: `hallmark entry list`.
async fn entries(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["parent", "spiffe_id", "selector"]));
    let own = |n: &str| p.one(n).unwrap_or_default().to_string();
    let req = pb::ListEntriesRequest {
        parent_id: own("parent"),
        spiffe_id: own("spiffe_id"),
        selector: own("selector"),
    };
    answer(s.admin.list_entries(Request::new(req)).await, |r| {
        json(&r.entries)
    })
}

/// `GET /api/v1/authorities?kind`: `hallmark authority list`.
async fn authorities(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["kind"]));
    let req = pb::ListAuthoritiesRequest {
        kind: p.one("kind").unwrap_or_default().to_string(),
    };
    answer(s.admin.list_authorities(Request::new(req)).await, |r| {
        json(&r.authorities)
    })
}

/// `GET /api/v1/federations`: `hallmark federation list`.
async fn federations(State(s): St) -> Response {
    let req = pb::ListFederationsRequest {};
    answer(s.admin.list_federations(Request::new(req)).await, |r| {
        json(&r.federations)
    })
}

/// `GET /api/v1/bundle`: the trust bundle (`hallmark bundle show`), as the
/// SPIFFE bundle document (JWKS).
async fn bundle(State(s): St) -> Response {
    answer(
        s.admin
            .get_bundle(Request::new(pb::GetBundleRequest {}))
            .await,
        |r| raw_json(String::from_utf8_lossy(&r.jwks).into_owned()),
    )
}

/// A policy call with a JSON request, answered as it is.
async fn policy_call(s: &AppState, rpc: PolicyRpc, json: String) -> Response {
    let req = Request::new(pb::PolicyRequest { json });
    let r = match rpc {
        PolicyRpc::Get => s.admin.get_policy(req).await,
        PolicyRpc::History => s.admin.policy_history(req).await,
        PolicyRpc::Apply => s.admin.apply_policy(req).await,
        PolicyRpc::Check => s.admin.check_policy(req).await,
        PolicyRpc::Audit => s.admin.audit_policy(req).await,
        PolicyRpc::DryRun => s.admin.dry_run_policy(req).await,
        PolicyRpc::Suggest => s.admin.suggest_policy(req).await,
        PolicyRpc::Groups => s.admin.list_groups(req).await,
        PolicyRpc::Members => s.admin.group_members(req).await,
        PolicyRpc::Enforcement => s.admin.set_enforcement(req).await,
    };
    answer(r, |r| raw_json(r.json))
}

#[derive(Clone, Copy)]
enum PolicyRpc {
    Get,
    History,
    Apply,
    Check,
    Audit,
    DryRun,
    Suggest,
    Groups,
    Members,
    Enforcement,
}

/// `GET /api/v1/groups`: `hallmark group list`.
async fn groups(State(s): St) -> Response {
    policy_call(&s, PolicyRpc::Groups, "{}".into()).await
}

/// `GET /api/v1/groups/{name}/members`: `hallmark group members NAME`.
async fn group_members(State(s): St, Path(name): Path<String>) -> Response {
    let json = serde_json::json!({ "group": name }).to_string();
    policy_call(&s, PolicyRpc::Members, json).await
}

/// `GET /api/v1/policy?revision=N`: `hallmark policy show`.
async fn policy_show(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["revision"]));
    let revision: Option<i64> = try_or!(p.number("revision"));
    let json = serde_json::json!({ "revision": revision }).to_string();
    policy_call(&s, PolicyRpc::Get, json).await
}

/// `GET /api/v1/policy/rules?revision=N`: the rules of a revision (the one
/// in force by default) as the engine reads them, in document order, with
/// the default action: what `policy show` prints, parsed.
async fn policy_rules(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["revision"]));
    let revision: Option<i64> = try_or!(p.number("revision"));
    let ask = serde_json::json!({ "revision": revision }).to_string();
    let shown = match s
        .admin
        .get_policy(Request::new(pb::PolicyRequest { json: ask }))
        .await
    {
        Ok(r) => r.into_inner().json,
        Err(e) => return status_answer(e),
    };
    let shown: serde_json::Value = match serde_json::from_str(&shown) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("GetPolicy answer: {e}"),
            )
        }
    };
    let text = shown["document"].as_str().unwrap_or_default();
    let revision = shown["revision"].as_i64().unwrap_or_default();
    if text.is_empty() {
        return json(&serde_json::json!({ "revision": revision, "default": "allow", "rules": [] }));
    }
    match hallmark_policy::parse("policy.yaml", text) {
        Ok(parsed) => json(&serde_json::json!({
            "revision": revision,
            "default": parsed.document.default,
            "rules": parsed.document.rules,
        })),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("revision {revision} does not parse: {}", e.errors.len()),
        ),
    }
}

/// `GET /api/v1/policy/history?limit=N`: `hallmark policy history`.
async fn policy_history(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["limit"]));
    let limit: Option<u32> = try_or!(p.number("limit"));
    let json = serde_json::json!({ "limit": limit }).to_string();
    policy_call(&s, PolicyRpc::History, json).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    document: String,
    #[serde(default)]
    file: Option<String>,
}

/// `POST /api/v1/policy {"document", "file"}`: `hallmark policy apply`
/// (a session needs its CSRF token).
async fn policy_apply(State(s): St, body: axum::body::Bytes) -> Response {
    let b: ApplyBody = try_or!(serde_json::from_slice(&body)
        .map_err(|e| bad("body", format!("{e}; send {{\"document\": \"<YAML>\"}}"))));
    let json = serde_json::json!({
        "file": b.file.unwrap_or_else(|| "policy.yaml".into()),
        "document": b.document,
        "source": "console",
    })
    .to_string();
    policy_call(&s, PolicyRpc::Apply, json).await
}

/// `GET /api/v1/policy/audit?since&until&verdict&limit`: `hallmark policy
/// audit`.
async fn policy_audit(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["since", "until", "verdict", "limit"]));
    let (since_ms, until_ms) = try_or!(window(&p, "24h", now_ms()));
    let limit: Option<usize> = try_or!(p.number("limit"));
    let json = serde_json::json!({
        "since_ms": since_ms,
        "until_ms": until_ms,
        "verdict": p.one("verdict"),
        "limit": limit,
    })
    .to_string();
    policy_call(&s, PolicyRpc::Audit, json).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunBody {
    document: String,
    #[serde(default)]
    file: Option<String>,
    /// The CLI's forms (`7d`).
    #[serde(default)]
    since: Option<String>,
    /// Also answer per map edge grouped this way.
    #[serde(default)]
    by: Option<String>,
}

/// `POST /api/v1/policy/dry-run {"document", "since", "by"}`: `hallmark
/// policy dry-run`, plus, with `by`, each map edge's verdict now and under
/// the candidate. Changes nothing, so a session needs no more than for a
/// read (it is a POST only because the document is long).
async fn policy_dry_run(State(s): St, body: axum::body::Bytes) -> Response {
    let b: DryRunBody = try_or!(serde_json::from_slice(&body)
        .map_err(|e| bad("body", format!("{e}; send {{\"document\": \"<YAML>\"}}"))));
    let since_ms = match b.since.as_deref() {
        None | Some("") => None,
        Some(t) => Some(try_or!(
            parse_instant(t, now_ms()).map_err(|e| bad("since", e))
        )),
    };
    let by = match b.by.as_deref() {
        None | Some("") => None,
        Some(v) => Some(try_or!(graph_by(v))),
    };
    let json = serde_json::json!({
        "file": b.file.unwrap_or_else(|| "candidate.yaml".into()),
        "document": b.document,
        "since_ms": since_ms,
        "edges_by": by,
    })
    .to_string();
    policy_call(&s, PolicyRpc::DryRun, json).await
}

/// `GET /api/v1/policy/check?from&to&port&protocol&at`: `hallmark policy
/// check`.
async fn policy_check(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["from", "to", "port", "protocol", "at"]));
    let (Some(from), Some(to)) = (p.one("from"), p.one("to")) else {
        return bad(
            "from/to",
            "both are required: a SPIFFE ID, workload ID or IP address",
        );
    };
    let Some(port) = try_or!(p.number::<u32>("port")) else {
        return bad("port", "required");
    };
    let at_ms = try_or!(p.instant("at", None, now_ms()));
    let json = serde_json::json!({
        "from": from, "to": to, "port": port,
        "protocol": p.one("protocol"), "at_ms": at_ms,
    })
    .to_string();
    policy_call(&s, PolicyRpc::Check, json).await
}

/// `GET /api/v1/policy/suggest?since&by&min_flows`: `hallmark policy
/// suggest --json`.
async fn policy_suggest(State(s): St, RawQuery(q): RawQuery) -> Response {
    let p = Params::of(q);
    try_or!(p.only(&["since", "by", "min_flows"]));
    let since_ms = try_or!(p.instant("since", Some("7d"), now_ms()));
    let min_flows: Option<u64> = try_or!(p.number("min_flows"));
    let json = serde_json::json!({
        "since_ms": since_ms, "by": p.one("by"), "min_flows": min_flows,
    })
    .to_string();
    policy_call(&s, PolicyRpc::Suggest, json).await
}

/// `GET /api/v1/policy/enforcement`: the fleet switch (read only here).
async fn enforcement(State(s): St) -> Response {
    policy_call(&s, PolicyRpc::Enforcement, "{}".into()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::of(Some(q.to_string()))
    }

    #[test]
    fn flow_parameters_take_the_cli_forms() {
        let now = 1_800_000_000_000;
        let q = flow_query(
            &params("since=2h&from=ns:payments&from=label:app%3Dweb&to=10.0.0.0/8&port=5432&protocol=tcp&verdict=would-deny&limit=5"),
            now,
        )
        .unwrap();
        assert_eq!(q.since_ms, now - 2 * 3600 * 1000);
        assert_eq!(q.from.len(), 2);
        assert_eq!(q.to.len(), 1);
        assert_eq!(q.port, Some(5432));
        assert_eq!(q.limit, 5);
        assert!(q.verdict.is_some());
    }

    #[test]
    fn bad_parameters_are_named() {
        let now = 1_800_000_000_000;
        for (q, name) in [
            ("since=yesterday", "since"),
            ("port=70000", "port"),
            ("from=nope:x", "from"),
            ("limit=0", "limit"),
            ("verdict=maybe", "verdict"),
            ("colour=red", "colour"),
            ("since=1h&until=2h", "until"),
        ] {
            let r = flow_query(&params(q), now)
                .err()
                .unwrap_or_else(|| panic!("{q} accepted"));
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
            let _ = name;
        }
    }
}
