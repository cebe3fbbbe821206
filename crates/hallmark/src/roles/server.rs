//! `hallmark server run`: the server's configuration from flags over the
//! config file, and the process around it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use hallmark_server::{CaSource, OidcConfig, OidcTls, RotationConfig, ServerConfig};

use super::{pick, shutdown_signal, RoleArgs, DRAIN_DEADLINE};
use crate::config::{self, DEFAULT_LISTEN, DEFAULT_TRUST_DOMAIN};
use crate::health;

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub common: RoleArgs,
    /// Node API address for agents [default: 127.0.0.1:8081].
    #[arg(long)]
    pub listen: Option<String>,
    /// Admin API socket [default: <data-dir>/admin.sock].
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Also serve the admin API over mTLS on this address, to callers
    /// presenting an X509-SVID of an entry marked `--admin` [default: off].
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// The bundle's `spiffe_refresh_hint`: how often federated trust
    /// domains fetch it again, 10s..1d [default: 5m].
    #[arg(long)]
    pub bundle_refresh_hint: Option<String>,
    /// Datastore: `sqlite` (a file in the data dir) or a PostgreSQL URL
    /// `postgres://user:password@host:port/db` [default: sqlite].
    #[arg(long, env = "HALLMARK_DATASTORE")]
    pub datastore: Option<String>,
    /// JWT-SVID signing key: ec-p256 (ES256) or rsa-2048 (RS256) [default: ec-p256].
    #[arg(long)]
    pub jwt_key_type: Option<String>,
    /// Lifetime of a self-signed root created on first start [default: 365d].
    #[arg(long)]
    pub ca_ttl: Option<String>,
    /// Lifetime of agent SVIDs [default: 1h].
    #[arg(long)]
    pub agent_svid_ttl: Option<String>,
    /// Default join token lifetime [default: 10m].
    #[arg(long)]
    pub join_token_ttl: Option<String>,
    /// How long stopped workloads stay in the inventory (late flow records
    /// still need them) [default: 1h].
    #[arg(long)]
    pub workload_retention: Option<String>,
    /// CA certificate (PEM) to sign with instead of a self-signed root.
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM, PKCS#8).
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Certificates above the CA up to the root (PEM), for an intermediate CA.
    #[arg(long, requires = "ca_cert")]
    pub ca_chain: Option<PathBuf>,
    /// Rotate signing authorities only by hand (`hallmark authority ...`),
    /// not on schedule (prepare at 50% of the active one's lifetime,
    /// activate at 83%).
    #[arg(long)]
    pub no_auto_rotation: bool,
    /// How often the server checks the rotation schedule and re-reads the
    /// authorities (a retired one leaves the bundle at the next check after
    /// its window) [default: 10s].
    #[arg(long)]
    pub rotation_check_interval: Option<String>,
    /// Lifetime of a JWT-SVID or OIDC signing key before scheduled
    /// rotation replaces it [default: 30d].
    #[arg(long)]
    pub jwt_key_ttl: Option<String>,
    #[command(flatten)]
    pub oidc: OidcArgs,
    #[command(flatten)]
    pub federation: FederationArgs,
    #[command(flatten)]
    pub flows: FlowArgs,
    #[command(flatten)]
    pub console: super::console::ConsoleArgs,
}

/// Flow attribution (server only).
#[derive(Args, Debug, Default)]
pub struct FlowArgs {
    /// How often agents re-assert the addresses they hold; an ownership
    /// range is proven only by evidence at most twice this apart. Set the
    /// same on agents [default: 10s].
    #[arg(long)]
    pub ownership_heartbeat: Option<String>,
    /// How long a flow waits for ownership evidence before it is stored
    /// with the unproven end unattributed (`late`) [default: 60s].
    #[arg(long)]
    pub attribution_holdback: Option<String>,
    /// The largest clock difference between nodes: a flow this close to a
    /// change of an IP's owner is left unattributed (`ambiguous`)
    /// [default: 500ms].
    #[arg(long)]
    pub clock_skew: Option<String>,
    /// A named network NAME=CIDR for addresses no workload holds
    /// (e.g. corp=10.8.0.0/16); repeat for more.
    #[arg(long = "network", value_name = "NAME=CIDR")]
    pub networks: Vec<String>,
    /// How long attributed flows are kept [default: 24h].
    #[arg(long)]
    pub flow_retention: Option<String>,
    /// How long the identity graph (per-minute edges) is kept [default: 30d].
    #[arg(long)]
    pub graph_retention: Option<String>,
    /// Receive NetFlow v5/v9 and IPFIX on this UDP address [default: off].
    #[arg(long)]
    pub flow_collector_listen: Option<String>,
}

/// The SPIFFE bundle endpoint other trust domains fetch this one's bundle
/// from (server only).
#[derive(Args, Debug, Default)]
pub struct FederationArgs {
    /// Serve the SPIFFE bundle endpoint (HTTPS GET /) on this address
    /// [default: off].
    #[arg(long)]
    pub federation_listen: Option<String>,
    /// How the endpoint authenticates: https_spiffe (an SVID for
    /// spiffe://<td>/hallmark/server) or https_web (--federation-tls-cert)
    /// [default: https_spiffe].
    #[arg(long)]
    pub federation_profile: Option<String>,
    /// https_web: certificate chain (PEM, leaf first) of the endpoint.
    #[arg(long, requires = "federation_tls_key")]
    pub federation_tls_cert: Option<PathBuf>,
    /// https_web: private key (PEM) of --federation-tls-cert.
    #[arg(long, requires = "federation_tls_cert")]
    pub federation_tls_key: Option<PathBuf>,
}

/// The OIDC issuer for cloud federation (server only).
#[derive(Args, Debug, Default)]
pub struct OidcArgs {
    /// Public OIDC issuer URL `https://host[/path]` (no query or trailing
    /// slash; a port works for tests, GCP and Azure, but AWS IAM refuses
    /// it); enables the discovery document and JWKS [default: off].
    #[arg(long)]
    pub oidc_issuer: Option<String>,
    /// Address serving the discovery document and JWKS [default:
    /// 0.0.0.0:<the issuer's port>, else 0.0.0.0:8443].
    #[arg(long)]
    pub oidc_listen: Option<String>,
    /// HTTPS certificate chain (PEM, leaf first) for the issuer [default:
    /// self-signed for the issuer's host, written to <data-dir>/oidc-tls.pem].
    #[arg(long, requires = "oidc_tls_key")]
    pub oidc_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --oidc-tls-cert.
    #[arg(long, requires = "oidc_tls_cert")]
    pub oidc_tls_key: Option<PathBuf>,
    /// Serve the issuer over plain HTTP, for a TLS-terminating proxy or CDN
    /// in front (the issuer URL stays https).
    #[arg(long, conflicts_with = "oidc_tls_cert")]
    pub oidc_insecure_http: bool,
    /// Extra claims for every OIDC token, comma-separated, from the attested
    /// attributes: context, node, namespace, pod, pod_uid, container,
    /// container_id, image, image_digest, compose_project, compose_service.
    #[arg(long, value_delimiter = ',')]
    pub oidc_claims: Vec<String>,
    /// Lifetime of OIDC tokens, at most 24h [default: 5m].
    #[arg(long)]
    pub oidc_token_ttl: Option<String>,
    /// OIDC signing key: rsa-2048 (RS256, accepted by every cloud) or
    /// ec-p256 (ES256) [default: rsa-2048].
    #[arg(long)]
    pub oidc_key_type: Option<String>,
}

/// The server configuration and its datastore, from flags over the file.
fn server_config(a: ServerArgs) -> Result<(ServerConfig, Datastore)> {
    let file = config::load_file(a.common.config.as_deref())?.server;
    let oidc_key_alg = config::key_alg(
        "oidc_key_type",
        &pick(a.oidc.oidc_key_type.clone(), file.oidc_key_type.clone())
            .unwrap_or_else(|| "rsa-2048".into()),
    )?;
    let oidc = oidc_config(a.oidc, &file)?;
    let federation = federation_config(a.federation, &file)?;
    let flows = flow_config(a.flows, &file)?;
    let rotation = rotation_config(
        a.no_auto_rotation,
        a.rotation_check_interval,
        a.jwt_key_ttl,
        &file,
    )?;
    let store = datastore(
        "datastore",
        &pick(a.datastore, file.datastore).unwrap_or_else(|| "sqlite".into()),
    )?;
    let td = pick(a.common.trust_domain, file.trust_domain)
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.into());
    let data_dir = pick(a.common.data_dir, file.data_dir)
        .unwrap_or_else(|| config::default_home().join("server"));
    let listen = pick(a.listen, file.listen).unwrap_or_else(|| DEFAULT_LISTEN.into());
    let ca = match (pick(a.ca_cert, file.ca_cert), pick(a.ca_key, file.ca_key)) {
        (Some(cert), Some(key)) => CaSource::Disk {
            cert,
            key,
            chain: pick(a.ca_chain, file.ca_chain),
        },
        (None, None) => CaSource::SelfSigned,
        _ => return Err(anyhow!("ca_cert and ca_key must be given together")),
    };
    let config = ServerConfig {
        trust_domain: config::trust_domain("trust_domain", &td)?,
        admin_socket: pick(a.admin_socket, file.admin_socket)
            .unwrap_or_else(|| data_dir.join("admin.sock")),
        listen: config::socket_addr("listen", &listen)?,
        jwt_key_alg: config::key_alg(
            "jwt_key_type",
            &pick(a.jwt_key_type, file.jwt_key_type).unwrap_or_else(|| "ec-p256".into()),
        )?,
        ca,
        ca_ttl: config::duration(
            "ca_ttl",
            &pick(a.ca_ttl, file.ca_ttl).unwrap_or_else(|| "365d".into()),
        )?,
        agent_svid_ttl: config::duration(
            "agent_svid_ttl",
            &pick(a.agent_svid_ttl, file.agent_svid_ttl).unwrap_or_else(|| "1h".into()),
        )?,
        join_token_ttl: config::duration(
            "join_token_ttl",
            &pick(a.join_token_ttl, file.join_token_ttl).unwrap_or_else(|| "10m".into()),
        )?,
        workload_retention: match pick(a.workload_retention, file.workload_retention) {
            Some(v) => {
                let d = config::duration("workload_retention", &v)?;
                if d < Duration::from_secs(1) {
                    return Err(anyhow!("workload_retention `{v}`: must be at least 1s"));
                }
                d
            }
            None => hallmark_server::DEFAULT_WORKLOAD_RETENTION,
        },
        oidc_key_alg,
        oidc,
        federation,
        rotation,
        admin_listen: pick(a.admin_listen, file.admin_listen)
            .map(|v| config::socket_addr("admin_listen", &v))
            .transpose()?,
        bundle_refresh_hint: match pick(a.bundle_refresh_hint, file.bundle_refresh_hint) {
            Some(v) => {
                let d = config::duration("bundle_refresh_hint", &v)?;
                if d < Duration::from_secs(10) || d > Duration::from_secs(86_400) {
                    return Err(anyhow!(
                        "bundle_refresh_hint `{v}`: must lie between 10s and 1d (federated domains clamp to that range)"
                    ));
                }
                d
            }
            None => hallmark_server::DEFAULT_REFRESH_HINT,
        },
        flows,
        data_dir,
    };
    Ok((config, store))
}

/// Flow attribution settings from flags over the file.
fn flow_config(a: FlowArgs, file: &config::ServerFile) -> Result<hallmark_server::FlowConfig> {
    let mut c = hallmark_server::FlowConfig::default();
    let dur =
        |key: &str, v: Option<String>, min: Duration, max: Duration| -> Result<Option<Duration>> {
            let Some(v) = v else { return Ok(None) };
            let d = config::duration_ms(key, &v)?;
            if d < min || d > max {
                return Err(anyhow!(
                    "{key} `{v}`: must lie between {} and {}",
                    hallmark_core::format_duration(min),
                    hallmark_core::format_duration(max)
                ));
            }
            Ok(Some(d))
        };
    let day = Duration::from_secs(86_400);
    if let Some(d) = dur(
        "ownership_heartbeat",
        pick(a.ownership_heartbeat, file.ownership_heartbeat.clone()),
        Duration::from_millis(100),
        Duration::from_secs(3600),
    )? {
        c.heartbeat = d;
    }
    if let Some(d) = dur(
        "attribution_holdback",
        pick(a.attribution_holdback, file.attribution_holdback.clone()),
        Duration::ZERO,
        Duration::from_secs(3600),
    )? {
        c.holdback = d;
    }
    if let Some(d) = dur(
        "clock_skew",
        pick(a.clock_skew, file.clock_skew.clone()),
        Duration::ZERO,
        Duration::from_secs(60),
    )? {
        c.clock_skew = d;
    }
    if let Some(d) = dur(
        "flow_retention",
        pick(a.flow_retention, file.flow_retention.clone()),
        Duration::from_secs(60),
        365 * day,
    )? {
        c.flow_retention = d;
    }
    if let Some(d) = dur(
        "graph_retention",
        pick(a.graph_retention, file.graph_retention.clone()),
        Duration::from_secs(60),
        3650 * day,
    )? {
        c.graph_retention = d;
    }
    c.networks = if a.networks.is_empty() {
        file.networks.clone().unwrap_or_default()
    } else {
        a.networks
    };
    for spec in &c.networks {
        let mut n = hallmark_flows::Networks::default();
        n.add_spec(spec).map_err(|e| anyhow!("--network: {e}"))?;
    }
    c.collector_listen = pick(a.flow_collector_listen, file.flow_collector_listen.clone())
        .map(|v| config::socket_addr("flow_collector_listen", &v))
        .transpose()?;
    Ok(c)
}

/// The rotation schedule from flags over the file.
fn rotation_config(
    no_auto_rotation: bool,
    check_interval: Option<String>,
    jwt_key_ttl: Option<String>,
    file: &config::ServerFile,
) -> Result<RotationConfig> {
    let mut c = RotationConfig {
        enabled: !no_auto_rotation && file.auto_rotation.unwrap_or(true),
        ..RotationConfig::default()
    };
    if let Some(v) = pick(check_interval, file.rotation_check_interval.clone()) {
        c.check_interval = config::duration("rotation_check_interval", &v)?;
        if c.check_interval < Duration::from_secs(1) {
            return Err(anyhow!(
                "rotation_check_interval `{v}`: must be at least 1s"
            ));
        }
    }
    if let Some(v) = pick(jwt_key_ttl, file.jwt_key_ttl.clone()) {
        c.jwt_key_ttl = config::duration("jwt_key_ttl", &v)?;
        if c.jwt_key_ttl < Duration::from_secs(60) {
            return Err(anyhow!(
                "jwt_key_ttl `{v}`: must be at least 1m, longer than the JWT-SVIDs it signs"
            ));
        }
    }
    Ok(c)
}

/// The bundle endpoint from flags over the file.
fn federation_config(
    a: FederationArgs,
    file: &config::ServerFile,
) -> Result<hallmark_server::FederationConfig> {
    let listen = pick(a.federation_listen, file.federation_listen.clone())
        .map(|v| config::socket_addr("federation_listen", &v))
        .transpose()?;
    let cert = pick(a.federation_tls_cert, file.federation_tls_cert.clone());
    let key = pick(a.federation_tls_key, file.federation_tls_key.clone());
    let profile = pick(a.federation_profile, file.federation_profile.clone())
        .unwrap_or_else(|| "https_spiffe".into());
    let profile = match (profile.as_str(), cert, key) {
        ("https_spiffe", None, None) => hallmark_server::EndpointProfile::HttpsSpiffe,
        ("https_spiffe", _, _) => {
            return Err(anyhow!(
                "federation_tls_cert/federation_tls_key are for federation_profile https_web; https_spiffe presents the server's SVID"
            ))
        }
        ("https_web", Some(cert), Some(key)) => {
            hallmark_server::EndpointProfile::HttpsWeb { cert, key }
        }
        ("https_web", _, _) => {
            return Err(anyhow!(
                "federation_profile https_web needs federation_tls_cert and federation_tls_key (PEM certificate chain and key)"
            ))
        }
        (other, _, _) => {
            return Err(anyhow!(
                "federation_profile `{other}`: must be https_spiffe or https_web"
            ))
        }
    };
    if listen.is_none() && !matches!(profile, hallmark_server::EndpointProfile::HttpsSpiffe) {
        return Err(anyhow!(
            "federation_profile https_web is set but federation_listen is not: give --federation-listen ADDR"
        ));
    }
    Ok(hallmark_server::FederationConfig { listen, profile })
}

/// The OIDC issuer from flags over the file; `None` without an issuer URL.
fn oidc_config(a: OidcArgs, file: &config::ServerFile) -> Result<Option<OidcConfig>> {
    let Some(issuer) = a.oidc_issuer.or_else(|| file.oidc_issuer.clone()) else {
        let stray = [
            (
                "oidc_listen",
                a.oidc_listen.is_some() || file.oidc_listen.is_some(),
            ),
            (
                "oidc_tls_cert",
                a.oidc_tls_cert.is_some() || file.oidc_tls_cert.is_some(),
            ),
            (
                "oidc_insecure_http",
                a.oidc_insecure_http || file.oidc_insecure_http.unwrap_or(false),
            ),
            (
                "oidc_claims",
                !a.oidc_claims.is_empty() || file.oidc_claims.is_some(),
            ),
            (
                "oidc_token_ttl",
                a.oidc_token_ttl.is_some() || file.oidc_token_ttl.is_some(),
            ),
        ];
        if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
            return Err(anyhow!(
                "{key} is set but oidc_issuer is not: give --oidc-issuer https://... to enable the OIDC issuer"
            ));
        }
        return Ok(None);
    };
    let issuer: hallmark_server::IssuerUrl = issuer
        .parse()
        .map_err(|e: hallmark_server::IssuerError| anyhow!("oidc_issuer: {e}"))?;
    let listen = a
        .oidc_listen
        .or_else(|| file.oidc_listen.clone())
        .unwrap_or_else(|| match issuer.port() {
            Some(port) => format!("0.0.0.0:{port}"),
            None => hallmark_server::oidc::DEFAULT_LISTEN.into(),
        });
    let insecure = a.oidc_insecure_http || file.oidc_insecure_http.unwrap_or(false);
    let tls = match (
        a.oidc_tls_cert.or_else(|| file.oidc_tls_cert.clone()),
        a.oidc_tls_key.or_else(|| file.oidc_tls_key.clone()),
    ) {
        (Some(_), Some(_)) if insecure => {
            return Err(anyhow!(
                "oidc_insecure_http and oidc_tls_cert exclude each other: serve HTTPS with the certificate, or plain HTTP behind a TLS proxy"
            ))
        }
        (Some(cert), Some(key)) => OidcTls::Files { cert, key },
        (None, None) if insecure => OidcTls::InsecureHttp,
        (None, None) => OidcTls::SelfSigned,
        _ => return Err(anyhow!("oidc_tls_cert and oidc_tls_key must be given together")),
    };
    let claims: Vec<String> = if a.oidc_claims.is_empty() {
        file.oidc_claims.clone().unwrap_or_default()
    } else {
        a.oidc_claims
    };
    let claims = hallmark_core::entry::parse_oidc_claims(
        &claims
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>(),
    )
    .map_err(|e| anyhow!("oidc_claims: {e}"))?;
    let token_ttl = match a.oidc_token_ttl.or_else(|| file.oidc_token_ttl.clone()) {
        Some(v) => {
            let d = config::duration("oidc_token_ttl", &v)?;
            let max = hallmark_server::oidc::MAX_TOKEN_TTL;
            if d < Duration::from_secs(1) || d > max {
                return Err(anyhow!(
                    "oidc_token_ttl `{v}`: must be between 1s and 24h (GCP refuses tokens that live 48h or more)"
                ));
            }
            d
        }
        None => hallmark_server::oidc::DEFAULT_TOKEN_TTL,
    };
    Ok(Some(OidcConfig {
        issuer,
        listen: config::socket_addr("oidc_listen", &listen)?,
        tls,
        claims,
        token_ttl,
    }))
}

/// Where the server keeps its state.
enum Datastore {
    Sqlite,
    Postgres(String),
}

fn datastore(key: &str, v: &str) -> Result<Datastore> {
    if v == "sqlite" {
        Ok(Datastore::Sqlite)
    } else if v.starts_with("postgres://") || v.starts_with("postgresql://") {
        Ok(Datastore::Postgres(v.to_string()))
    } else {
        // The value may be a URL with a password: do not echo it.
        Err(anyhow!(
            "{key}: must be `sqlite` or a PostgreSQL URL starting with postgres:// (e.g. postgres://hallmark:secret@db:5432/hallmark)"
        ))
    }
}

pub async fn run_server(mut a: ServerArgs) -> Result<()> {
    let health = a.common.health_listen.clone();
    let console_args = std::mem::take(&mut a.console);
    let (cfg, store) = server_config(a)?;
    let data_dir = cfg.data_dir.clone();
    let handle = match store {
        Datastore::Sqlite => hallmark_server::start(cfg).await?,
        Datastore::Postgres(url) => {
            let store = hallmark_store::PostgresStore::connect(&url)
                .await
                .context("opening the PostgreSQL datastore")?;
            hallmark_server::start_with_store(cfg, std::sync::Arc::new(store)).await?
        }
    };
    if let Some(addr) = health {
        let s = handle.status();
        let probe = health::Probe::new(
            {
                let s = s.clone();
                move || {
                    let s = s.clone();
                    Box::pin(async move { s.ready().await })
                }
            },
            move || {
                let s = s.clone();
                Box::pin(async move { s.metrics().await })
            },
        );
        health::serve(config::socket_addr("health_listen", &addr)?, probe).await?;
    }
    let console = super::console::start(&console_args, None, &handle, &data_dir).await?;
    if let Some(c) = &console {
        tracing::info!(url = %c.console.url(), "console: log in with a token from `hallmark console token`");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    if let Some(c) = console {
        c.stop();
    }
    let _ = tokio::time::timeout(DRAIN_DEADLINE, handle.shutdown()).await;
    Ok(())
}
