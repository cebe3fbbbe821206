//! The JWT-SVID (or OIDC token) file: fetching it, and when to refresh it.

use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use hallmark_core::time::unix_secs;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::JwtsvidRequest;
use serde::Deserialize;
use tonic::transport::Channel;
use tracing::info;

use super::{JwtTarget, FILE_MODE};
use crate::connect::{socket_path, workload_error, workload_request, WorkloadArgs};
use crate::files::write_atomic;

/// Shortest wait before the next JWT-SVID refresh, so a token already past
/// half its life (or a skewed clock) cannot turn into a busy loop.
const JWT_REFRESH_FLOOR: Duration = Duration::from_secs(1);
/// Wait after a failed JWT-SVID fetch while the X.509 stream stays healthy.
pub(super) const JWT_RETRY: Duration = Duration::from_secs(2);

/// Fetches the JWT-SVID for `spiffe_id`, writes it, and returns how long
/// until it is due for refresh.
pub(super) async fn fetch_and_write_jwt(
    c: &mut SpiffeWorkloadApiClient<Channel>,
    conn: &WorkloadArgs,
    target: &JwtTarget,
    spiffe_id: &str,
) -> Result<Duration> {
    let token = if target.oidc {
        fetch_oidc_token(conn, &target.audience, spiffe_id).await?
    } else {
        fetch_jwt_svid(c, target, spiffe_id).await?
    };
    let kind = if target.oidc {
        "OIDC token"
    } else {
        "JWT-SVID"
    };
    let claims = JwtClaims::parse(&token).with_context(|| format!("{kind} for {spiffe_id}"))?;
    // No trailing newline: some SDKs send the file's bytes verbatim.
    write_atomic(&target.path, token.as_bytes(), FILE_MODE)?;
    info!(
        file = %target.path.display(),
        spiffe_id = %claims.sub,
        audience = ?target.audience,
        exp = claims.exp,
        "wrote {kind}"
    );
    Ok(refresh_delay(
        claims.iat,
        claims.exp,
        unix_secs(SystemTime::now()),
    ))
}

/// Largest token endpoint answer read; tokens are a few KiB.
const MAX_TOKEN_ANSWER: u64 = 1 << 20;

/// `POST /v1/tokens/oidc` over the agent's socket (plain HTTP/1.1, one
/// request per connection).
async fn fetch_oidc_token(
    conn: &WorkloadArgs,
    audience: &[String],
    spiffe_id: &str,
) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = socket_path(&conn.socket)?;
    let body = serde_json::json!({ "aud": audience, "spiffe_id": spiffe_id }).to_string();
    let request = format!(
        "POST /v1/tokens/oidc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let what = || format!("token endpoint on {}", path.display());
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .with_context(|| format!("connecting to the {}", what()))?;
    stream
        .write_all(request.as_bytes())
        .await
        .with_context(what)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_TOKEN_ANSWER)
        .read_to_end(&mut raw)
        .await
        .with_context(what)?;
    let (status, body) = split_http_answer(&raw).with_context(what)?;
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| anyhow!("{}: answer is not JSON: {e}", what()))?;
    if status != 200 {
        let msg = json["error"].as_str().unwrap_or("no error message");
        bail!("{}: HTTP {status}: {msg}", what());
    }
    json["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}: the answer has no `token`", what()))
}

/// The status code and body of a complete HTTP/1.1 answer read until the
/// server closed the connection (Content-Length framing; the endpoint never
/// chunks).
fn split_http_answer(raw: &[u8]) -> Result<(u16, &[u8])> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP answer"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| anyhow!("HTTP header is not UTF-8"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    let mut body = &raw[end + 4..];
    let length = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    if let Some(n) = length {
        if body.len() < n {
            bail!("HTTP answer cut short ({} of {n} bytes)", body.len());
        }
        body = &body[..n];
    }
    Ok((status, body))
}

async fn fetch_jwt_svid(
    c: &mut SpiffeWorkloadApiClient<Channel>,
    target: &JwtTarget,
    spiffe_id: &str,
) -> Result<String> {
    let resp = c
        .fetch_jwtsvid(workload_request(JwtsvidRequest {
            audience: target.audience.clone(),
            spiffe_id: spiffe_id.to_string(),
        }))
        .await
        .map_err(workload_error)
        .with_context(|| {
            format!(
                "FetchJWTSVID for {spiffe_id}, audience {:?}",
                target.audience
            )
        })?
        .into_inner();
    resp.svids
        .into_iter()
        .next()
        .map(|s| s.svid)
        .ok_or_else(|| anyhow!("FetchJWTSVID for {spiffe_id}: the answer holds no token"))
}

/// The claims the refresh schedule and the log line need. The token is not
/// verified here: it comes from the local agent over its socket, and the
/// relying party verifies it.
#[derive(Debug, Deserialize, PartialEq)]
struct JwtClaims {
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
}

impl JwtClaims {
    fn parse(token: &str) -> Result<Self> {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("JWT-SVID: not a compact JWS (three dot-separated parts)");
        };
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|e| anyhow!("JWT-SVID: payload is not unpadded base64url: {e}"))?;
        serde_json::from_slice(&json).map_err(|e| {
            anyhow!(
                "JWT-SVID: payload is not a JSON object with string `sub` and integer `exp`: {e}"
            )
        })
    }
}

/// Time until half the token's lifetime has passed, never less than
/// [`JWT_REFRESH_FLOOR`]. The lifetime starts at `iat`, or now when the
/// token has none or the agent's clock runs ahead of ours.
fn refresh_delay(iat: Option<i64>, exp: i64, now: i64) -> Duration {
    let issued = iat.unwrap_or(now).min(now);
    let due = issued + (exp - issued) / 2;
    let secs = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
    Duration::from_secs(secs).max(JWT_REFRESH_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_half_life() {
        // (iat, exp, now) -> seconds until refresh
        let cases: &[(Option<i64>, i64, i64, u64)] = &[
            (Some(1000), 1300, 1000, 150),
            (Some(1000), 1300, 1100, 50),
            (Some(1000), 1300, 1149, 1),
            (Some(1000), 1300, 1200, 1),
            (None, 1300, 1100, 100),
            (Some(1000), 900, 1000, 1),
            (Some(2000), 1300, 1000, 150),
            (Some(1000), 1010, 1000, 5),
        ];
        for &(iat, exp, now, want) in cases {
            assert_eq!(
                refresh_delay(iat, exp, now),
                Duration::from_secs(want),
                "refresh_delay({iat:?}, {exp}, {now})"
            );
        }
    }

    fn token(payload: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"ES256"}"#), enc(payload))
    }

    #[test]
    fn jwt_claims() {
        let ok = JwtClaims::parse(&token(
            r#"{"sub":"spiffe://td/a","aud":["x"],"exp":1300,"iat":1000}"#,
        ))
        .expect("valid token");
        assert_eq!(
            ok,
            JwtClaims {
                sub: "spiffe://td/a".into(),
                exp: 1300,
                iat: Some(1000)
            }
        );
        let no_iat = JwtClaims::parse(&token(r#"{"sub":"s","exp":5}"#)).expect("no iat");
        assert_eq!(no_iat.iat, None);

        let bad: &[(String, &str)] = &[
            ("a.b".into(), "three"),
            ("a.b.c.d".into(), "three"),
            ("a.!!!.c".into(), "base64url"),
            (token(r#"{"sub":"s"}"#), "exp"),
            (token(r#"{"exp":5}"#), "sub"),
            (token(r#"{"sub":"s","exp":"soon"}"#), "exp"),
            (token("[]"), "JSON object"),
        ];
        for (input, needle) in bad {
            let err = format!("{:#}", JwtClaims::parse(input).expect_err(input));
            assert!(err.contains(needle), "parse({input:?}): {err}");
        }
    }

    #[test]
    fn http_answers_split_into_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"token\":\"t\"}";
        let (status, body) = split_http_answer(ok).expect("complete answer");
        assert_eq!(status, 200);
        assert_eq!(body, b"{\"token\":\"t\"}");
        let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(split_http_answer(forbidden).expect("answer").1, b"{}");
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{}",
        ] {
            assert!(
                split_http_answer(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
