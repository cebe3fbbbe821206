//! Configuration: a TOML file (optional) overridden by flags, over defaults
//! that need no file on a laptop. Unknown keys and bad values are refused
//! with the key and the rule named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hallmark_ca::KeyAlg;
use hallmark_core::{parse_duration, TrustDomain};
use hallmark_runtime::discovery::RuntimeChoice;
use serde::Deserialize;

pub const DEFAULT_TRUST_DOMAIN: &str = "hallmark.local";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";

/// The file's shape. Every field optional; `deny_unknown_fields` turns a
/// typo into an error instead of a silently ignored setting.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub agent: AgentFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub trust_domain: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub admin_socket: Option<PathBuf>,
    pub jwt_key_type: Option<String>,
    pub ca_ttl: Option<String>,
    pub agent_svid_ttl: Option<String>,
    pub join_token_ttl: Option<String>,
    pub workload_retention: Option<String>,
    pub datastore: Option<String>,
    pub admin_listen: Option<String>,
    pub bundle_refresh_hint: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub ca_chain: Option<PathBuf>,
    pub oidc_issuer: Option<String>,
    pub oidc_listen: Option<String>,
    pub oidc_tls_cert: Option<PathBuf>,
    pub oidc_tls_key: Option<PathBuf>,
    pub oidc_insecure_http: Option<bool>,
    pub oidc_claims: Option<Vec<String>>,
    pub oidc_token_ttl: Option<String>,
    pub oidc_key_type: Option<String>,
    pub federation_listen: Option<String>,
    pub federation_profile: Option<String>,
    pub federation_tls_cert: Option<PathBuf>,
    pub federation_tls_key: Option<PathBuf>,
    /// `false` turns scheduled rotation off (see `--no-auto-rotation`).
    pub auto_rotation: Option<bool>,
    pub rotation_check_interval: Option<String>,
    pub jwt_key_ttl: Option<String>,
    pub ownership_heartbeat: Option<String>,
    pub attribution_holdback: Option<String>,
    pub clock_skew: Option<String>,
    /// NAME=CIDR network names, as `--network`.
    pub networks: Option<Vec<String>>,
    pub flow_retention: Option<String>,
    pub graph_retention: Option<String>,
    pub flow_collector_listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub trust_domain: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub servers: Option<Vec<String>>,
    pub socket: Option<PathBuf>,
    pub join_token: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub trust_bundle: Option<PathBuf>,
    pub context: Option<String>,
    pub runtime: Option<String>,
    pub docker_socket: Option<PathBuf>,
    pub cri_socket: Option<PathBuf>,
    pub crictl_config: Option<PathBuf>,
    pub resync_interval: Option<String>,
    pub inventory_spool: Option<PathBuf>,
    pub ownership_heartbeat: Option<String>,
    /// `auto`, `on` or `off`, as `--flows`.
    pub flows: Option<String>,
    pub flow_report_interval: Option<String>,
    pub udp_idle: Option<String>,
    /// Cgroup2 subtrees to capture, as `--flow-cgroup`.
    pub flow_cgroup: Option<Vec<String>>,
    /// `off`, `watch` or `on`, as `--enforcement`.
    pub enforcement: Option<String>,
    /// `keep` or `detach`, as `--on-agent-exit`.
    pub on_agent_exit: Option<String>,
}

pub fn load_file(path: Option<&Path>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    // toml's message names the offending key and where it is.
    toml::from_str(&text)
        .map_err(|e| anyhow!("config file {}: {}", path.display(), e.to_string().trim()))
}

/// `$HALLMARK_HOME`, else `~/.hallmark`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("HALLMARK_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".hallmark")
}

pub fn default_admin_socket() -> PathBuf {
    default_home().join("server").join("admin.sock")
}

pub fn default_workload_socket() -> PathBuf {
    default_home().join("agent").join("workload.sock")
}

pub fn trust_domain(key: &str, v: &str) -> Result<TrustDomain> {
    TrustDomain::new(v).map_err(|e| anyhow!("{key} `{v}`: trust domain {e}"))
}

/// A duration in whole seconds (`90s`, `15m`, `1h30m`, `7d`): lifetimes and
/// intervals that are never shorter than a second.
pub fn duration(key: &str, v: &str) -> Result<Duration> {
    let d = duration_ms(key, v)?;
    if d.subsec_nanos() != 0 {
        return Err(anyhow!(
            "{key} `{v}`: must be whole seconds (e.g. `1s`, `90s`, `15m`)"
        ));
    }
    Ok(d)
}

/// A duration that may have milliseconds (`500ms`, `1s500ms`).
pub fn duration_ms(key: &str, v: &str) -> Result<Duration> {
    parse_duration(v).map_err(|e| anyhow!("{key} `{v}`: duration {e}"))
}

/// An optional lifetime flag in whole seconds; 0 (the flag not given) asks
/// the server for its default.
pub fn ttl_secs(key: &str, v: &Option<String>) -> Result<u64> {
    v.as_deref()
        .map(|s| duration(key, s).map(|d| d.as_secs()))
        .transpose()
        .map(|o| o.unwrap_or(0))
}

pub fn socket_addr(key: &str, v: &str) -> Result<SocketAddr> {
    v.parse()
        .map_err(|_| anyhow!("{key} `{v}`: must be IP:PORT (e.g. 127.0.0.1:8081 or [::]:8081)"))
}

pub fn key_alg(key: &str, v: &str) -> Result<KeyAlg> {
    v.parse().map_err(|e| anyhow!("{key} `{v}`: {e}"))
}

pub fn server_addr(key: &str, v: &str) -> Result<String> {
    // host:port where host may be a name; require a port.
    match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(v.to_string()),
        _ => Err(anyhow!(
            "{key} `{v}`: must be HOST:PORT (e.g. 127.0.0.1:8081)"
        )),
    }
}

/// A context name: 1 to 63 characters of `[A-Za-z0-9._-]`, the same rule
/// the server applies to inventory reports.
pub fn context_name(key: &str, v: &str) -> Result<String> {
    if v.is_empty()
        || v.len() > 63
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(anyhow!(
            "{key} `{v}`: must be 1 to 63 characters of letters, digits, `.`, `_` or `-` (e.g. prod-eu-1)"
        ));
    }
    Ok(v.to_string())
}

pub fn runtime_choice(key: &str, v: &str) -> Result<RuntimeChoice> {
    match v {
        "auto" => Ok(RuntimeChoice::Auto),
        "docker" => Ok(RuntimeChoice::Docker),
        "cri" => Ok(RuntimeChoice::Cri),
        "none" => Ok(RuntimeChoice::None),
        _ => Err(anyhow!(
            "{key} `{v}`: must be one of auto (CRI, then Docker), docker, cri, none"
        )),
    }
}

pub fn fingerprint(key: &str, v: &str) -> Result<String> {
    let v = v.trim().replace(':', "").to_ascii_lowercase();
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(anyhow!("{key} `{v}`: must be a SHA-256 fingerprint, 64 hex digits (as printed by `hallmark token generate`)"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[server]\ntrust_domian = \"x\"\n").unwrap();
        let e = load_file(Some(&p)).unwrap_err().to_string();
        assert!(
            e.contains("trust_domian") && e.contains(&p.display().to_string()),
            "{e}"
        );

        std::fs::write(&p, "[server]\nlisten = 5\n").unwrap();
        let e = load_file(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");

        std::fs::write(
            &p,
            "[server]\ntrust_domain = \"example.org\"\n[agent]\nservers = [\"a:1\"]\n",
        )
        .unwrap();
        let c = load_file(Some(&p)).unwrap();
        assert_eq!(c.server.trust_domain.as_deref(), Some("example.org"));

        assert!(duration("x509_ttl", "5x")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(trust_domain("trust_domain", "Bad")
            .unwrap_err()
            .to_string()
            .contains("`Bad`"));
        assert!(server_addr("server", "nope").is_err());
        assert!(fingerprint("ca_fingerprint", "abc").is_err());
        assert!(socket_addr("listen", "localhost").is_err());
    }
}
