//! Which container runtime this node has.
//!
//! [`discover`] turns the operator's [`RuntimeChoice`] and the sockets on the
//! node into one connected [`Runtime`], recording every socket it tried and
//! why it was or was not used, so `status` can say what happened.
//!
//! Where each runtime is looked for, first to last:
//! - CRI: the configured `cri_socket` (then nothing else: a pinned path is
//!   never second-guessed); else crictl's `runtime-endpoint`, then
//!   [`CRI_COMMON_PATHS`].
//! - Docker: the configured `docker_socket` (alone); else `$DOCKER_HOST`
//!   when it is `unix://…`, then [`DOCKER_COMMON_PATHS`].
//!
//! A common path with no file behind it is not an attempt: it is only
//! reported, together with the other missing ones, when no socket of that
//! runtime exists at all. `Auto` takes CRI when a socket exists and answers
//! the CRI `Version` call, and falls back to Docker otherwise. containerd
//! serves its own API and (when enabled) CRI on the same socket, so an
//! existing containerd socket whose CRI plugin is off fails the `Version`
//! call and `Auto` moves on.

use std::fmt;
use std::future::Future;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::combined::Combined;
use crate::cri::CriRuntime;
use crate::docker::DockerRuntime;
use crate::socket::{check_socket, Daemon, CRI_DAEMON, DOCKERD};
use crate::{Runtime, RuntimeError};

/// crictl's config file, read for its `runtime-endpoint`.
pub const DEFAULT_CRICTL_CONFIG: &str = "/etc/crictl.yaml";

/// Where CRI runtimes put their socket, most common first.
pub const CRI_COMMON_PATHS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
];

/// Where dockerd puts its socket.
pub const DOCKER_COMMON_PATHS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// The most one connection attempt may take, whatever the back end's own
/// per-call timeouts add up to.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// The operator's choice (`runtime = "auto" | "docker" | "cri" | "none"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeChoice {
    /// CRI first, then Docker.
    #[default]
    Auto,
    Docker,
    Cri,
    /// No runtime: unix attestation only.
    None,
}

/// Where to look for runtimes.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryConfig {
    pub choice: RuntimeChoice,
    pub docker_socket: Option<PathBuf>,
    pub cri_socket: Option<PathBuf>,
    /// crictl's config file; `None` means `/etc/crictl.yaml`.
    pub crictl_config: Option<PathBuf>,
}

/// One socket tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub runtime: &'static str,
    pub endpoint: String,
    /// The runtime's version, or why it could not be used.
    pub outcome: Result<String, String>,
}

/// The outcome of discovery.
#[derive(Clone, Default)]
pub struct Discovered {
    pub runtime: Option<Arc<dyn Runtime>>,
    pub version: String,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The configured runtime is not one of the four choices.
    #[error("runtime `{value}`: expected one of auto, docker, cri, none")]
    UnknownRuntime { value: String },
    /// crictl's `runtime-endpoint` is not a Unix socket this agent can use.
    #[error("crictl runtime-endpoint `{value}`: {rule}")]
    CrictlEndpoint { value: String, rule: &'static str },
}

/// Where a candidate socket path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Configuration or environment: always an attempt.
    Named,
    /// A well-known path: an attempt only when something is there.
    Common,
}

impl RuntimeChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeChoice::Auto => "auto",
            RuntimeChoice::Docker => "docker",
            RuntimeChoice::Cri => "cri",
            RuntimeChoice::None => "none",
        }
    }
}

impl FromStr for RuntimeChoice {
    type Err = DiscoveryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(RuntimeChoice::Auto),
            "docker" => Ok(RuntimeChoice::Docker),
            "cri" => Ok(RuntimeChoice::Cri),
            "none" => Ok(RuntimeChoice::None),
            _ => Err(DiscoveryError::UnknownRuntime {
                value: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for RuntimeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Discovered {
    /// A human summary of why nothing (or a fallback) was chosen, for status
    /// and logs. `None` when the first runtime tried was taken.
    pub fn degraded_reason(&self) -> Option<String> {
        let failures: Vec<String> = self
            .attempts
            .iter()
            .filter_map(|a| {
                a.outcome
                    .as_ref()
                    .err()
                    .map(|reason| format!("{} {}: {reason}", a.runtime, a.endpoint))
            })
            .collect();
        match &self.runtime {
            None if self.attempts.is_empty() => Some(
                "no container runtime configured (runtime = none): \
                 workloads are attested by unix selectors only"
                    .to_string(),
            ),
            None => Some(format!(
                "no container runtime answered: {}",
                failures.join("; ")
            )),
            Some(rt) if !failures.is_empty() => Some(format!(
                "using {} at {} after: {}",
                rt.source(),
                rt.endpoint(),
                failures.join("; ")
            )),
            Some(_) => None,
        }
    }
}

impl fmt::Debug for Discovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovered")
            .field(
                "runtime",
                &self
                    .runtime
                    .as_ref()
                    .map(|r| format!("{} at {}", r.source(), r.endpoint())),
            )
            .field("version", &self.version)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// Picks and connects the runtime `cfg` asks for. Never fails: what could
/// not be used is in [`Discovered::attempts`] and
/// [`Discovered::degraded_reason`].
pub async fn discover(cfg: &DiscoveryConfig) -> Discovered {
    let mut out = Discovered::default();
    match cfg.choice {
        RuntimeChoice::None => {}
        RuntimeChoice::Cri => discover_cri(cfg, &mut out).await,
        RuntimeChoice::Docker => discover_docker(cfg, &mut out).await,
        RuntimeChoice::Auto => {
            discover_cri(cfg, &mut out).await;
            if out.runtime.is_none() {
                discover_docker(cfg, &mut out).await;
            } else {
                // A Docker Engine beside the CRI runtime runs containers
                // CRI does not list: follow both.
                // A node without Docker is the norm here, so its absence
                // is not recorded as a failed attempt.
                let mut docker = Discovered::default();
                discover_docker(cfg, &mut docker).await;
                if let (Some(cri), Some(d)) = (out.runtime.clone(), docker.runtime) {
                    out.runtime = Some(Arc::new(Combined::new(cri, d)));
                    out.version = format!("{} + {}", out.version, docker.version);
                    out.attempts
                        .extend(docker.attempts.into_iter().filter(|a| a.outcome.is_ok()));
                }
            }
        }
    }
    out
}

async fn discover_cri(cfg: &DiscoveryConfig, out: &mut Discovered) {
    let mut crictl_endpoint = None;
    if cfg.cri_socket.is_none() {
        let path = cfg
            .crictl_config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CRICTL_CONFIG));
        match std::fs::read_to_string(&path) {
            Ok(text) => match crictl_runtime_endpoint(&text) {
                Ok(ep) => crictl_endpoint = ep,
                Err(e) => out.attempts.push(Attempt {
                    runtime: "cri",
                    endpoint: path.display().to_string(),
                    outcome: Err(e.to_string()),
                }),
            },
            // crictl is optional: only a config the operator named must exist.
            Err(e) if e.kind() == ErrorKind::NotFound && cfg.crictl_config.is_none() => {}
            Err(e) => out.attempts.push(Attempt {
                runtime: "cri",
                endpoint: path.display().to_string(),
                outcome: Err(format!("reading crictl config: {e}")),
            }),
        }
    }
    let candidates = cri_candidates(cfg.cri_socket.as_deref(), crictl_endpoint.as_deref());
    try_candidates("cri", &CRI_DAEMON, candidates, out, |path| async move {
        let rt = CriRuntime::connect(&path).await?;
        let version = rt.version().await?;
        Ok((Arc::new(rt) as Arc<dyn Runtime>, version))
    })
    .await;
}

async fn discover_docker(cfg: &DiscoveryConfig, out: &mut Discovered) {
    let docker_host = std::env::var("DOCKER_HOST").ok();
    if cfg.docker_socket.is_none() {
        if let Some(host) = docker_host
            .as_deref()
            .filter(|h| docker_host_path(h).is_none())
        {
            if !host.is_empty() {
                out.attempts.push(Attempt {
                    runtime: "docker",
                    endpoint: host.to_string(),
                    outcome: Err("DOCKER_HOST is not a unix:// socket; only local Unix \
                                  sockets are supported"
                        .to_string()),
                });
            }
        }
    }
    let candidates = docker_candidates(cfg.docker_socket.as_deref(), docker_host.as_deref());
    try_candidates("docker", &DOCKERD, candidates, out, |path| async move {
        let rt = DockerRuntime::connect(&path)?;
        let version = rt.version().await?;
        Ok((Arc::new(rt) as Arc<dyn Runtime>, version))
    })
    .await;
}

/// Tries each candidate until one connects; records every attempt.
async fn try_candidates<F, Fut>(
    runtime: &'static str,
    daemon: &Daemon,
    candidates: Vec<(PathBuf, Origin)>,
    out: &mut Discovered,
    connect: F,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(Arc<dyn Runtime>, String), RuntimeError>>,
{
    let mut missing = Vec::new();
    let mut tried = 0usize;
    for (path, origin) in candidates {
        let endpoint = path.display().to_string();
        if let Err(reason) = check_socket(&path, daemon) {
            if origin == Origin::Common && !path.exists() {
                missing.push(endpoint);
            } else {
                tried += 1;
                out.attempts.push(Attempt {
                    runtime,
                    endpoint,
                    outcome: Err(reason),
                });
            }
            continue;
        }
        tried += 1;
        let outcome = match tokio::time::timeout(ATTEMPT_TIMEOUT, connect(endpoint.clone())).await {
            Ok(Ok((rt, version))) => {
                out.attempts.push(Attempt {
                    runtime,
                    endpoint,
                    outcome: Ok(version.clone()),
                });
                out.runtime = Some(rt);
                out.version = version;
                return;
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        };
        out.attempts.push(Attempt {
            runtime,
            endpoint,
            outcome,
        });
    }
    if tried == 0 && !missing.is_empty() {
        out.attempts.push(Attempt {
            runtime,
            endpoint: missing.join(", "),
            outcome: Err("no socket at any of the usual paths".to_string()),
        });
    }
}

/// CRI socket candidates in the order they are tried.
fn cri_candidates(explicit: Option<&Path>, crictl: Option<&Path>) -> Vec<(PathBuf, Origin)> {
    if let Some(p) = explicit {
        return vec![(p.to_path_buf(), Origin::Named)];
    }
    let named = crictl.map(Path::to_path_buf);
    with_common(named, CRI_COMMON_PATHS)
}

/// Docker socket candidates in the order they are tried.
fn docker_candidates(explicit: Option<&Path>, docker_host: Option<&str>) -> Vec<(PathBuf, Origin)> {
    if let Some(p) = explicit {
        return vec![(p.to_path_buf(), Origin::Named)];
    }
    let named = docker_host.and_then(docker_host_path);
    with_common(named, DOCKER_COMMON_PATHS)
}

/// `named` (if any), then the common paths, each file once: `/var/run` is a
/// symlink to `/run` on most systems, so paths are compared resolved.
fn with_common(named: Option<PathBuf>, common: &[&str]) -> Vec<(PathBuf, Origin)> {
    let mut out: Vec<(PathBuf, Origin)> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let all = named
        .map(|p| (p, Origin::Named))
        .into_iter()
        .chain(common.iter().map(|p| (PathBuf::from(p), Origin::Common)));
    for (path, origin) in all {
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !seen.contains(&key) {
            seen.push(key);
            out.push((path, origin));
        }
    }
    out
}

/// The socket path in `DOCKER_HOST=unix:///path`; `None` for other schemes.
fn docker_host_path(host: &str) -> Option<PathBuf> {
    host.strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
}

/// The `runtime-endpoint` of a crictl config (`/etc/crictl.yaml`).
///
/// The file is flat YAML and only this one top-level `key: value` line
/// matters, so it is read by hand rather than with a YAML parser. `Ok(None)`
/// when the key is absent or empty.
pub fn crictl_runtime_endpoint(text: &str) -> Result<Option<PathBuf>, DiscoveryError> {
    let Some(raw) = text
        .lines()
        .find_map(|line| line.strip_prefix("runtime-endpoint:"))
    else {
        return Ok(None);
    };
    let mut value = raw.trim();
    if let Some((before, _comment)) = value.split_once(" #") {
        value = before.trim_end();
    }
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            value = &value[1..value.len() - 1];
        }
    }
    if value.is_empty() {
        return Ok(None);
    }
    let path = match value.split_once("://") {
        Some(("unix", path)) => path,
        Some(_) => {
            return Err(DiscoveryError::CrictlEndpoint {
                value: value.to_string(),
                rule: "only unix:// sockets are supported",
            })
        }
        None => value,
    };
    if !path.starts_with('/') {
        return Err(DiscoveryError::CrictlEndpoint {
            value: value.to_string(),
            rule: "the socket path must be absolute",
        });
    }
    Ok(Some(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parsing() {
        let cases = [
            ("auto", Ok(RuntimeChoice::Auto)),
            ("docker", Ok(RuntimeChoice::Docker)),
            ("cri", Ok(RuntimeChoice::Cri)),
            ("none", Ok(RuntimeChoice::None)),
            (" Docker ", Ok(RuntimeChoice::Docker)),
            ("containerd", Err(())),
            ("", Err(())),
        ];
        for (input, want) in cases {
            match (input.parse::<RuntimeChoice>(), want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, want, "{input:?}");
                    assert_eq!(got.to_string().parse::<RuntimeChoice>(), Ok(got));
                }
                (Err(e), Err(())) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&format!("`{input}`")) && msg.contains("auto, docker"),
                        "{msg}"
                    );
                }
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn crictl_parsing() {
        let sock = |p: &str| Ok(Some(PathBuf::from(p)));
        let cases: Vec<(&str, Result<Option<PathBuf>, &str>)> = vec![
            (
                "runtime-endpoint: unix:///run/containerd/containerd.sock\n",
                sock("/run/containerd/containerd.sock"),
            ),
            (
                "image-endpoint: unix:///x.sock\nruntime-endpoint: unix:///run/crio/crio.sock\ntimeout: 2\n",
                sock("/run/crio/crio.sock"),
            ),
            (
                "runtime-endpoint: \"unix:///run/k3s/containerd/containerd.sock\"",
                sock("/run/k3s/containerd/containerd.sock"),
            ),
            ("runtime-endpoint: '/run/crio/crio.sock'", sock("/run/crio/crio.sock")),
            (
                "runtime-endpoint: unix:///run/a.sock  # the node's containerd",
                sock("/run/a.sock"),
            ),
            ("runtime-endpoint:unix:///run/b.sock", sock("/run/b.sock")),
            ("timeout: 2\ndebug: false\n", Ok(None)),
            ("runtime-endpoint: \"\"\n", Ok(None)),
            ("runtime-endpoint:\n", Ok(None)),
            // Indented: belongs to some other mapping, not crictl's key.
            ("other:\n  runtime-endpoint: unix:///run/c.sock\n", Ok(None)),
            ("", Ok(None)),
            (
                "runtime-endpoint: tcp://10.0.0.1:1234",
                Err("only unix:// sockets"),
            ),
            ("runtime-endpoint: npipe:////./pipe/x", Err("only unix://")),
            ("runtime-endpoint: unix://relative.sock", Err("absolute")),
            ("runtime-endpoint: relative.sock", Err("absolute")),
        ];
        for (input, want) in cases {
            let got = crictl_runtime_endpoint(input);
            match want {
                Ok(p) => assert_eq!(got, Ok(p), "{input:?}"),
                Err(rule) => {
                    let msg = got.expect_err(input).to_string();
                    assert!(
                        msg.contains(rule) && msg.contains("runtime-endpoint"),
                        "{msg}"
                    );
                }
            }
        }
    }

    fn paths(c: &[(PathBuf, Origin)]) -> Vec<String> {
        c.iter().map(|(p, _)| p.display().to_string()).collect()
    }

    #[test]
    fn cri_candidate_order() {
        let explicit = cri_candidates(Some(Path::new("/srv/cri.sock")), Some(Path::new("/x")));
        assert_eq!(
            explicit,
            vec![(PathBuf::from("/srv/cri.sock"), Origin::Named)]
        );

        let from_crictl = cri_candidates(None, Some(Path::new("/srv/crictl.sock")));
        assert_eq!(
            from_crictl[0],
            (PathBuf::from("/srv/crictl.sock"), Origin::Named)
        );
        assert_eq!(from_crictl.len(), 1 + common_unique(CRI_COMMON_PATHS));
        assert!(from_crictl[1..].iter().all(|(_, o)| *o == Origin::Common));

        let plain = paths(&cri_candidates(None, None));
        assert_eq!(plain[0], "/run/containerd/containerd.sock");
        assert_eq!(
            plain.last().map(String::as_str),
            Some("/run/k3s/containerd/containerd.sock")
        );
        // crio comes after containerd, whatever the symlinks collapse.
        let crio = plain.iter().position(|p| p.contains("crio")).unwrap();
        let containerd = plain
            .iter()
            .position(|p| p.contains("containerd.sock"))
            .unwrap();
        assert!(containerd < crio);

        // The crictl endpoint equal to a common path is tried once.
        let dup = paths(&cri_candidates(None, Some(Path::new(CRI_COMMON_PATHS[0]))));
        assert_eq!(dup.iter().filter(|p| *p == CRI_COMMON_PATHS[0]).count(), 1);
    }

    /// How many of `common` remain once paths naming one file are merged.
    fn common_unique(common: &[&str]) -> usize {
        with_common(None, common).len()
    }

    #[test]
    fn docker_candidate_order() {
        let explicit = docker_candidates(Some(Path::new("/srv/d.sock")), Some("unix:///x.sock"));
        assert_eq!(paths(&explicit), vec!["/srv/d.sock"]);

        let from_env = docker_candidates(None, Some("unix:///srv/env.sock"));
        assert_eq!(paths(&from_env)[0], "/srv/env.sock");
        assert_eq!(from_env[0].1, Origin::Named);
        assert_eq!(from_env.len(), 1 + common_unique(DOCKER_COMMON_PATHS));

        let tcp = paths(&docker_candidates(None, Some("tcp://127.0.0.1:2375")));
        assert_eq!(tcp[0], "/var/run/docker.sock");
        assert_eq!(tcp.len(), common_unique(DOCKER_COMMON_PATHS));

        assert_eq!(
            docker_host_path("unix:///run/user/1000/docker.sock"),
            Some(PathBuf::from("/run/user/1000/docker.sock"))
        );
        assert_eq!(docker_host_path("unix://relative"), None);
        assert_eq!(docker_host_path("ssh://host"), None);
    }

    #[test]
    fn symlinked_paths_are_tried_once() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&real).unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real_s = real.display().to_string();
        let link_s = link.display().to_string();
        let got = with_common(None, &[link_s.as_str(), real_s.as_str()]);
        assert_eq!(paths(&got), vec![link_s]);
    }

    fn attempt(runtime: &'static str, endpoint: &str, outcome: Result<&str, &str>) -> Attempt {
        Attempt {
            runtime,
            endpoint: endpoint.into(),
            outcome: outcome.map(Into::into).map_err(Into::into),
        }
    }

    #[test]
    fn degraded_reasons() {
        let none = Discovered::default();
        assert!(none.degraded_reason().unwrap().contains("runtime = none"));

        let failed = Discovered {
            attempts: vec![
                attempt(
                    "cri",
                    "/run/containerd/containerd.sock",
                    Err("cri Version: unimplemented"),
                ),
                attempt(
                    "docker",
                    "/var/run/docker.sock",
                    Err("no such file: is dockerd running?"),
                ),
            ],
            ..Discovered::default()
        };
        let r = failed.degraded_reason().unwrap();
        assert!(r.starts_with("no container runtime answered"), "{r}");
        assert!(
            r.contains("cri /run/containerd/containerd.sock: cri Version: unimplemented"),
            "{r}"
        );
        assert!(
            r.contains("docker /var/run/docker.sock: no such file"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn choice_none_tries_nothing() {
        let d = discover(&DiscoveryConfig {
            choice: RuntimeChoice::None,
            ..DiscoveryConfig::default()
        })
        .await;
        assert!(d.runtime.is_none());
        assert!(d.attempts.is_empty());
        assert!(d.version.is_empty());
    }

    #[tokio::test]
    async fn explicit_missing_sockets_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let cri = dir.path().join("cri.sock");
        let docker = dir.path().join("docker.sock");
        let d = discover(&DiscoveryConfig {
            choice: RuntimeChoice::Auto,
            cri_socket: Some(cri.clone()),
            docker_socket: Some(docker.clone()),
            crictl_config: None,
        })
        .await;
        assert!(d.runtime.is_none());
        assert_eq!(
            d.attempts,
            vec![
                attempt(
                    "cri",
                    &cri.display().to_string(),
                    Err("no such file: is the CRI runtime (containerd, CRI-O) running?")
                ),
                attempt(
                    "docker",
                    &docker.display().to_string(),
                    Err("no such file: is dockerd running?")
                ),
            ]
        );
        let r = d.degraded_reason().unwrap();
        assert!(
            r.contains(&cri.display().to_string()) && r.contains(&docker.display().to_string()),
            "{r}"
        );
    }

    #[tokio::test]
    async fn bad_crictl_config_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("crictl.yaml");
        std::fs::write(&cfg_path, "runtime-endpoint: tcp://127.0.0.1:1\n").unwrap();
        let d = discover(&DiscoveryConfig {
            choice: RuntimeChoice::Cri,
            crictl_config: Some(cfg_path.clone()),
            ..DiscoveryConfig::default()
        })
        .await;
        let first = &d.attempts[0];
        assert_eq!(first.endpoint, cfg_path.display().to_string());
        assert!(
            first.outcome.as_ref().unwrap_err().contains("only unix://"),
            "{first:?}"
        );

        let missing = dir.path().join("absent.yaml");
        let d = discover(&DiscoveryConfig {
            choice: RuntimeChoice::Cri,
            crictl_config: Some(missing.clone()),
            ..DiscoveryConfig::default()
        })
        .await;
        assert_eq!(d.attempts[0].endpoint, missing.display().to_string());
        assert!(d.attempts[0]
            .outcome
            .as_ref()
            .unwrap_err()
            .contains("reading crictl config"));
    }
}
