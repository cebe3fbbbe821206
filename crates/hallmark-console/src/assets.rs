//! The console's pages and scripts, embedded in the binary: nothing is
//! read from disk or fetched from elsewhere at run time. Third-party
//! libraries sit in `assets/vendor/` with their licences (see its README).

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../assets", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("/app.js", JS),
    asset!("/app.css", "text/css; charset=utf-8"),
    asset!("/favicon.svg", "image/svg+xml"),
    asset!("/vendor/cytoscape.min.js", JS),
    asset!("/vendor/dagre.min.js", JS),
    asset!("/vendor/cytoscape-dagre.js", JS),
    asset!("/vendor/LICENSE.cytoscape", "text/plain; charset=utf-8"),
    asset!("/vendor/LICENSE.dagre", "text/plain; charset=utf-8"),
    asset!(
        "/vendor/LICENSE.cytoscape-dagre",
        "text/plain; charset=utf-8"
    ),
];

const INDEX: &str = include_str!("../assets/index.html");

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/index.html", get(|| async { Html(INDEX) }));
    for a in ASSETS {
        r = r.route(
            &format!("/assets{}", a.path),
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, a.content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    a.body,
                )
                    .into_response()
            }),
        );
    }
    r
}

/// The page a refused login link answers with (the reason is escaped).
pub(crate) fn login_refused(why: &str) -> Response {
    let why: String = why
        .chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect();
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Hallmark console: login refused</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body><main class=\"login\">\
         <h1>Login refused</h1><p>{why}.</p><p><a href=\"/\">Log in with a token</a></p></main></body></html>"
    );
    (StatusCode::UNAUTHORIZED, Html(page)).into_response()
}
