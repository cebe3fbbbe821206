//! The Engine API client: version negotiation with the engine, every call
//! bounded by [`CALL_TIMEOUT`], and bollard's errors turned into
//! [`RuntimeError`]s that name the call.

use std::future::Future;

use bollard::errors::Error as BollardError;
use bollard::models::SystemInfoCgroupDriverEnum;
use bollard::{BollardRequest, ClientVersion, Docker, API_DEFAULT_VERSION};
use hallmark_core::error_chain;

use super::{CgroupDriver, CALL_TIMEOUT, RUNTIME};
use crate::socket::{socket_reason, DOCKERD};
use crate::RuntimeError;

/// A client that has negotiated with the engine.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) docker: Docker,
    endpoint: String,
    pub(super) api_version: String,
    pub(super) cgroup_driver: CgroupDriver,
}

/// Negotiates the API version with the engine at `endpoint` and reads its
/// cgroup driver.
pub(super) async fn negotiate(endpoint: &str) -> Result<Session, RuntimeError> {
    let timeout_secs = CALL_TIMEOUT.as_secs();
    let probe = Docker::connect_with_unix(endpoint, timeout_secs, API_DEFAULT_VERSION)
        .map_err(|e| map_error(endpoint, "version", e))?
        .with_request_modifier(|req| with_api_version(req, None));
    let server = call(endpoint, "version", probe.version()).await?;
    let server_api = server.api_version.clone().unwrap_or_default();
    let server_max = parse_api_version(&server_api).ok_or_else(|| RuntimeError::Api {
        runtime: RUNTIME,
        call: "version",
        reason: format!("engine API version `{server_api}`: expected <major>.<minor>"),
    })?;
    if let Some(min) = server
        .min_api_version
        .as_deref()
        .and_then(parse_api_version)
    {
        if api_key(&min) > api_key(API_DEFAULT_VERSION) {
            return Err(RuntimeError::Api {
                runtime: RUNTIME,
                call: "version",
                reason: format!(
                    "engine requires API >= {min}; this client speaks up to {API_DEFAULT_VERSION}"
                ),
            });
        }
    }
    let version = if api_key(&server_max) < api_key(API_DEFAULT_VERSION) {
        server_max
    } else {
        *API_DEFAULT_VERSION
    };
    let prefix = version.to_string();
    let docker = Docker::connect_with_unix(endpoint, timeout_secs, &version)
        .map_err(|e| map_error(endpoint, "version", e))?
        .with_request_modifier(move |req| with_api_version(req, Some(&prefix)));

    // The driver only refines derived cgroup paths; an engine that will
    // not say leaves them to /proc.
    let cgroup_driver = match call(endpoint, "info", docker.info()).await {
        Ok(info) => match info.cgroup_driver {
            Some(SystemInfoCgroupDriverEnum::CGROUPFS) => CgroupDriver::Cgroupfs,
            Some(SystemInfoCgroupDriverEnum::SYSTEMD) => CgroupDriver::Systemd,
            _ => CgroupDriver::Unknown,
        },
        Err(e) => {
            tracing::debug!(error = %e, "docker info failed; cgroup paths come from /proc only");
            CgroupDriver::Unknown
        }
    };

    Ok(Session {
        docker,
        endpoint: endpoint.to_string(),
        api_version: version.to_string(),
        cgroup_driver,
    })
}

impl Session {
    pub(super) async fn call<T>(
        &self,
        name: &'static str,
        fut: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, RuntimeError> {
        call(&self.endpoint, name, fut).await
    }

    /// Like [`Self::call`], with the engine's 404 as `Ok(None)`.
    pub(super) async fn call_found<T>(
        &self,
        name: &'static str,
        fut: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<Option<T>, RuntimeError> {
        let found = async {
            match fut.await {
                Ok(v) => Ok(Some(v)),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        call(&self.endpoint, name, found).await
    }
}

/// Runs one Engine API call under [`CALL_TIMEOUT`].
async fn call<T>(
    endpoint: &str,
    name: &'static str,
    fut: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_error(endpoint, name, e)),
        Err(_) => Err(RuntimeError::Timeout {
            runtime: RUNTIME,
            call: name,
            timeout: CALL_TIMEOUT,
        }),
    }
}

/// Sets the request path's API version prefix: `/v<version>/…`, or none
/// at all, which an engine answers at its own maximum.
fn with_api_version(mut req: BollardRequest, version: Option<&str>) -> BollardRequest {
    let uri = req.uri().clone();
    let Some(pq) = uri.path_and_query() else {
        return req;
    };
    let bare = strip_version_prefix(pq.as_str());
    let wanted = match version {
        Some(v) => format!("/v{v}{bare}"),
        None => bare.to_string(),
    };
    if wanted == pq.as_str() {
        return req;
    }
    let mut parts = uri.into_parts();
    // Both halves were a valid URI a moment ago and only the version digits
    // changed, so these parses do not fail; if one did, the request would go
    // out as bollard built it.
    if let Ok(new_pq) = wanted.parse() {
        parts.path_and_query = Some(new_pq);
        if let Ok(new_uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = new_uri;
        }
    }
    req
}

/// `/v1.53/version?x` → `/version?x`; anything else unchanged.
fn strip_version_prefix(path_and_query: &str) -> &str {
    let Some(rest) = path_and_query.strip_prefix("/v") else {
        return path_and_query;
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (version, tail) = rest.split_at(end);
    if parse_api_version(version).is_some() && tail.starts_with('/') {
        tail
    } else {
        path_and_query
    }
}

fn parse_api_version(s: &str) -> Option<ClientVersion> {
    let (major, minor) = s.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

fn api_key(v: &ClientVersion) -> (usize, usize) {
    (v.major_version, v.minor_version)
}

/// Turns a bollard error into the crate's error, naming the call.
pub(super) fn map_error(endpoint: &str, name: &'static str, e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Api {
            runtime: RUNTIME,
            call: name,
            reason: format!("{status_code}: {message}"),
        },
        BollardError::RequestTimeoutError => RuntimeError::Timeout {
            runtime: RUNTIME,
            call: name,
            timeout: CALL_TIMEOUT,
        },
        BollardError::SocketNotFoundError(_) => RuntimeError::Unreachable {
            runtime: RUNTIME,
            endpoint: endpoint.to_string(),
            reason: socket_reason(std::io::ErrorKind::NotFound, &DOCKERD),
        },
        other => {
            let io_kind = io_error_kind(&other);
            match io_kind.filter(|k| is_connection_failure(*k)) {
                Some(kind) => RuntimeError::Unreachable {
                    runtime: RUNTIME,
                    endpoint: endpoint.to_string(),
                    reason: socket_reason(kind, &DOCKERD),
                },
                None => RuntimeError::Api {
                    runtime: RUNTIME,
                    call: name,
                    reason: error_chain(&other),
                },
            }
        }
    }
}

fn is_connection_failure(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        NotFound | PermissionDenied | ConnectionRefused | ConnectionReset | BrokenPipe
    )
}

/// The first I/O error in an error's source chain.
fn io_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefix() {
        let cases = [
            ("/v1.53/version", "/version"),
            (
                "/v1.41/containers/json?all=true",
                "/containers/json?all=true",
            ),
            ("/version", "/version"),
            ("/vx.y/version", "/vx.y/version"),
            ("/v1.53", "/v1.53"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_version_prefix(input), want, "{input}");
        }
        let v = parse_api_version("1.41").map(|v| api_key(&v));
        assert_eq!(v, Some((1, 41)));
        assert!(parse_api_version("1").is_none());
        assert!(parse_api_version("1.x").is_none());
    }
}
