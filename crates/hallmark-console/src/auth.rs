//! Who may use the console, and the headers every answer carries.
//!
//! A caller is let in by one of:
//! - a session cookie (`hallmark_session`: `HttpOnly`, `SameSite=Strict`,
//!   `Secure` over TLS), made by logging in with a token: `GET
//!   /login?token=...` (the URL `hallmark up` prints; it answers with a
//!   redirect to `/`, so the token leaves the address bar) or `POST
//!   /api/v1/session {"token": ...}` (the login form). A session's writes
//!   need its CSRF token in `X-CSRF-Token`;
//! - `Authorization: Bearer <token>` on each call (scripts);
//! - over TLS, a client certificate that is the X509-SVID of an admin entry.
//!
//! A token is the start token of this process or one minted by `hallmark
//! console token`. Any request other than GET whose `Origin` is not the
//! console's own, or that the browser marks cross-site, is refused first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hallmark_core::time::unix_millis;
use hallmark_server::console_key::ConsoleKey;
use hallmark_server::metrics::{ReasonLabels, ResultLabels, ServerMetrics};
use hallmark_server::AdminService;
use rand::RngCore;
use serde::Deserialize;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "hallmark_session";
/// The header a session's writes carry its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// The longest a session lives (less when its token expires sooner).
const SESSION_MS: i64 = 12 * 3600 * 1000;
/// Sessions kept at most; the oldest is dropped beyond it.
const MAX_SESSIONS: usize = 10_000;

/// The Content-Security-Policy of every answer: only this origin's
/// scripts, styles and connections; no inline script, no framing.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(crate) struct AppState {
    pub admin: AdminService,
    key: Arc<ConsoleKey>,
    start_token: String,
    start_expires_ms: i64,
    pub tls: bool,
    sessions: Mutex<HashMap<String, Session>>,
    metrics: Arc<ServerMetrics>,
}

#[derive(Debug, Clone)]
struct Session {
    expires_ms: i64,
    csrf: String,
}

/// How a request was let in.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Session { csrf: String, expires_ms: i64 },
    Bearer,
    ClientCert(String),
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A fresh start token: 32 random bytes, hex.
pub(crate) fn start_token() -> String {
    format!("hms_{}", random_hex(32))
}

/// Compares two strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl AppState {
    pub fn new(
        admin: AdminService,
        key: Arc<ConsoleKey>,
        start_token: String,
        tls: bool,
        metrics: Arc<ServerMetrics>,
    ) -> Self {
        AppState {
            admin,
            key,
            start_token,
            // The start token lasts while the process runs; sessions made
            // with it get the usual lifetime.
            start_expires_ms: i64::MAX,
            tls,
            sessions: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn count_login(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.metrics
            .console_logins
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    fn count_refused(&self, reason: &str) {
        self.metrics
            .console_refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// The expiry (unix ms) of a good token, or why it is refused.
    fn check_token(&self, token: &str) -> Result<i64, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("no token given".into());
        }
        if same(token, &self.start_token) {
            return Ok(self.start_expires_ms);
        }
        let now_secs = now_ms() / 1000;
        self.key
            .verify(token, now_secs)
            .map(|secs| secs.saturating_mul(1000))
            .map_err(|e| format!("the token {e}"))
    }

    fn new_session(&self, token_expires_ms: i64) -> (String, Session) {
        let id = random_hex(32);
        let s = Session {
            expires_ms: token_expires_ms.min(now_ms() + SESSION_MS),
            csrf: random_hex(16),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        sessions.retain(|_, s| s.expires_ms > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), s.clone());
        (id, s)
    }

    /// A new session for a good token, with the cookie that carries it;
    /// counted and logged either way (`how` names the way in).
    fn log_in(&self, token: &str, how: &str) -> Result<(HeaderValue, Session), String> {
        match self.check_token(token) {
            Ok(expires) => {
                let (id, s) = self.new_session(expires);
                self.count_login(true);
                tracing::info!(via = how, "console login");
                Ok((self.cookie(&id, (s.expires_ms - now_ms()) / 1000), s))
            }
            Err(why) => {
                self.count_login(false);
                tracing::warn!(via = how, reason = %why, "console login refused");
                Err(why)
            }
        }
    }

    fn session(&self, id: &str) -> Option<Session> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .filter(|s| s.expires_ms > now_ms())
            .cloned()
    }

    fn end_session(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(id);
    }

    fn cookie(&self, id: &str, max_age_secs: i64) -> HeaderValue {
        let secure = if self.tls { "; Secure" } else { "" };
        let v = format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The session ID in the request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// A JSON error answer: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = Json(serde_json::json!({ "error": message.into() }));
    (status, body).into_response()
}

fn unauthorized(why: &str) -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        format!("{why}: log in with the URL `hallmark up` printed, a token from `hallmark console token` (POST /api/v1/session), or send `Authorization: Bearer <token>`"),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"hallmark-console\""),
    );
    r
}

/// The browser's `Sec-Fetch-Site` when it says the request was made by
/// another site's page.
fn fetched_from_another_site(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .filter(|site| *site == "cross-site" || *site == "same-site")
}

/// Whether a request comes from another site: its `Origin` is not this
/// host, or the browser says so (`Sec-Fetch-Site`).
fn cross_site(headers: &HeaderMap, tls: bool) -> Option<String> {
    if let Some(site) = fetched_from_another_site(headers) {
        return Some(format!("Sec-Fetch-Site: {site}"));
    }
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let scheme = if tls { "https" } else { "http" };
    if origin == format!("{scheme}://{host}") {
        None
    } else {
        Some(format!("Origin {origin}"))
    }
}

/// Guards `/api/`: refuses cross-site writes, then lets in a session, a
/// bearer token or an admin client certificate; puts the [`Caller`] in the
/// request's extensions.
pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    if write {
        if let Some(why) = cross_site(req.headers(), state.tls) {
            state.count_refused("cross-site");
            return error(
                StatusCode::FORBIDDEN,
                format!("cross-site request refused ({why}): the console's API takes writes only from its own pages"),
            );
        }
    }
    // Logging in needs no caller yet.
    if req.uri().path() == "/api/v1/session" && req.method() == Method::POST {
        return next.run(req).await;
    }
    let caller = if let Some(token) = bearer(req.headers()) {
        match state.check_token(token) {
            Ok(_) => Caller::Bearer,
            Err(why) => {
                state.count_refused("unauthenticated");
                return unauthorized(&why);
            }
        }
    } else if let Some(s) = session_cookie(req.headers()).and_then(|id| state.session(&id)) {
        if write {
            let given = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !same(given, &s.csrf) {
                state.count_refused("csrf");
                return error(
                    StatusCode::FORBIDDEN,
                    format!("missing or wrong {CSRF_HEADER} header: a write with a session cookie must carry the session's CSRF token (GET /api/v1/session)"),
                );
            }
        }
        Caller::Session {
            csrf: s.csrf,
            expires_ms: s.expires_ms,
        }
    } else if let Some(id) = req.extensions().get::<crate::tls::AdminPeer>().cloned() {
        match crate::tls::admin_caller(&state.admin, &id.0).await {
            Ok(id) => Caller::ClientCert(id),
            Err(why) => {
                state.count_refused("unauthenticated");
                return unauthorized(&why);
            }
        }
    } else if req.uri().path() == "/api/v1/session" && req.method() == Method::GET {
        // The page asks who it is before showing the login form: nobody
        // is an answer, not an error.
        return axum::Json(serde_json::json!({ "authenticated": false })).into_response();
    } else {
        state.count_refused("unauthenticated");
        return unauthorized("not logged in");
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Adds the security headers to every answer.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// `GET /login?token=...`: a session, then a redirect to `/` so the token
/// leaves the address bar (and the history entry the browser keeps is `/`).
pub(crate) async fn login_link(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    // Followed from another site, the link would log the browser in with
    // someone else's token: it must be opened directly.
    if fetched_from_another_site(&headers).is_some() {
        state.count_refused("cross-site");
        let page = crate::assets::login_refused(
            "a login link works only when opened directly (typed, pasted or opened from a terminal), not from another site",
        );
        return (StatusCode::FORBIDDEN, page).into_response();
    }
    let token = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    match state.log_in(&token, "a token link") {
        Ok((cookie, _)) => {
            let mut r = Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, "/")
                .body(Body::empty())
                .unwrap_or_default();
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Err(why) => {
            let page = crate::assets::login_refused(&why);
            (StatusCode::UNAUTHORIZED, page).into_response()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    token: String,
}

/// `POST /api/v1/session {"token"}`: the login form.
pub(crate) async fn login(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let b: LoginBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("login body: {e}; send {{\"token\": \"...\"}}"),
            )
        }
    };
    match state.log_in(&b.token, "the login form") {
        Ok((cookie, s)) => {
            let mut r = Json(session_json(&s.csrf, s.expires_ms, "session")).into_response();
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Err(why) => error(StatusCode::UNAUTHORIZED, format!("login refused: {why}")),
    }
}

fn session_json(csrf: &str, expires_ms: i64, via: &str) -> serde_json::Value {
    serde_json::json!({
        "authenticated": true,
        "via": via,
        "csrf_token": csrf,
        "expires_ms": if expires_ms == i64::MAX { None } else { Some(expires_ms) },
    })
}

/// `GET /api/v1/session`: who the caller is, and the CSRF token of a
/// session (`{"authenticated": false}` without credentials).
pub(crate) async fn whoami(caller: axum::Extension<Caller>) -> Response {
    let v = match &caller.0 {
        Caller::Session { csrf, expires_ms } => session_json(csrf, *expires_ms, "session"),
        Caller::Bearer => serde_json::json!({"authenticated": true, "via": "bearer"}),
        Caller::ClientCert(id) => {
            serde_json::json!({"authenticated": true, "via": "client-certificate", "spiffe_id": id})
        }
    };
    Json(v).into_response()
}

/// `DELETE /api/v1/session`: log out.
pub(crate) async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        state.end_session(&id);
    }
    let mut r = Json(serde_json::json!({"authenticated": false})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, state.cookie("", 0));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_passes_and_others_do_not() {
        let h = headers(&[
            ("host", "127.0.0.1:8090"),
            ("origin", "http://127.0.0.1:8090"),
        ]);
        assert_eq!(cross_site(&h, false), None);
        let h = headers(&[
            ("host", "127.0.0.1:8090"),
            ("origin", "http://evil.example"),
        ]);
        assert!(cross_site(&h, false).unwrap().contains("evil.example"));
        // Over TLS the origin must be https.
        let h = headers(&[
            ("host", "c.example:443"),
            ("origin", "http://c.example:443"),
        ]);
        assert!(cross_site(&h, true).is_some());
        let h = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(cross_site(&h, false).is_some());
        // No Origin (curl, a same-origin GET): nothing to refuse on.
        assert_eq!(cross_site(&headers(&[]), false), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; hallmark_session=abc; b=2")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&headers(&[("cookie", "a=1")])), None);
    }

    #[test]
    fn constant_time_compare() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
