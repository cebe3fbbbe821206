//! `hallmark federation`: relationships with foreign trust domains, whose
//! bundles the server fetches from their SPIFFE bundle endpoints and hands
//! to the workloads of entries that federate with them.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use hallmark_core::time::unix_secs;
use hallmark_proto::hallmark as pb;
use serde::Serialize;

use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{age, out, outln, print_json, table};

#[derive(Subcommand, Debug)]
pub enum FederationCommand {
    /// Federate with a foreign trust domain: fetch its bundle from its
    /// bundle endpoint from now on.
    Create(CreateArgs),
    /// List relationships with their refresh state.
    List(ListArgs),
    /// One relationship, with its bundle.
    Show(TdArgs),
    /// Stop federating with a trust domain.
    Delete(TdArgs),
    /// Fetch a trust domain's bundle now.
    Refresh(TdArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The foreign trust domain, e.g. partner.example.
    #[arg(long)]
    pub trust_domain: String,
    /// https:// URL of its SPIFFE bundle endpoint.
    #[arg(long)]
    pub bundle_endpoint_url: String,
    /// How the endpoint authenticates: https_spiffe (an SVID chained to the
    /// foreign bundle) or https_web (a WebPKI certificate).
    #[arg(
        long,
        alias = "bundle-endpoint-profile",
        default_value = "https_spiffe"
    )]
    pub profile: String,
    /// https_spiffe: the SPIFFE ID the endpoint presents [default:
    /// spiffe://<trust-domain>/hallmark/server].
    #[arg(long)]
    pub endpoint_spiffe_id: Option<String>,
    /// The foreign bundle to start from (JWKS from `hallmark bundle show
    /// --format jwks` on the other side, or PEM certificates); required for
    /// https_spiffe.
    #[arg(long, alias = "bundle", alias = "trust-domain-bundle")]
    pub trust_bundle: Option<PathBuf>,
    /// https_web: PEM roots to trust for the endpoint beside the system's.
    #[arg(long)]
    pub web_ca: Option<PathBuf>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct TdArgs {
    /// The foreign trust domain.
    pub trust_domain: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Serialize)]
struct FederationOut {
    trust_domain: String,
    bundle_endpoint_url: String,
    profile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    endpoint_spiffe_id: String,
    created_at: i64,
    /// Unix seconds; absent before the first successful fetch.
    last_refresh: Option<i64>,
    next_refresh: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    last_error: String,
    /// The bundle in force: absent until bootstrapped or fetched.
    bundle_sequence: Option<u64>,
    x509_authorities: usize,
    jwt_authorities: usize,
    /// The bundle document (JWKS JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<serde_json::Value>,
}

impl FederationOut {
    fn new(f: &pb::Federation, with_bundle: bool) -> Self {
        let doc = f
            .bundle
            .as_ref()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.jwks).ok());
        let jwt_authorities = doc
            .as_ref()
            .and_then(|d| d.get("keys"))
            .and_then(|k| k.as_array())
            .map_or(0, |keys| {
                keys.iter()
                    .filter(|k| k.get("use").and_then(|u| u.as_str()) == Some("jwt-svid"))
                    .count()
            });
        FederationOut {
            trust_domain: f.trust_domain.clone(),
            bundle_endpoint_url: f.bundle_endpoint_url.clone(),
            profile: f.profile.clone(),
            endpoint_spiffe_id: f.endpoint_spiffe_id.clone(),
            created_at: f.created_at,
            last_refresh: (f.last_refresh > 0).then_some(f.last_refresh),
            next_refresh: f.next_refresh,
            last_error: f.last_error.clone(),
            bundle_sequence: f.bundle.as_ref().map(|b| b.sequence),
            x509_authorities: f.bundle.as_ref().map_or(0, |b| b.x509_authorities.len()),
            jwt_authorities,
            bundle: if with_bundle { doc } else { None },
        }
    }
}

pub async fn run(cmd: FederationCommand) -> Result<()> {
    match cmd {
        FederationCommand::Create(a) => create(a).await,
        FederationCommand::List(a) => list(a).await,
        FederationCommand::Show(a) => {
            let mut c = admin_client(&a.admin).await?;
            let f = c
                .get_federation(pb::FederationRequest {
                    trust_domain: a.trust_domain.clone(),
                })
                .await
                .map_err(admin_error)?
                .into_inner();
            show(&a.admin, &f)
        }
        FederationCommand::Delete(a) => {
            let mut c = admin_client(&a.admin).await?;
            c.delete_federation(pb::FederationRequest {
                trust_domain: a.trust_domain.clone(),
            })
            .await
            .map_err(admin_error)?;
            outln!(
                "deleted the federation with {}; its workloads stop receiving its bundle",
                a.trust_domain
            )?;
            Ok(())
        }
        FederationCommand::Refresh(a) => {
            let mut c = admin_client(&a.admin).await?;
            let f = c
                .refresh_federation(pb::FederationRequest {
                    trust_domain: a.trust_domain.clone(),
                })
                .await
                .map_err(admin_error)?
                .into_inner();
            if !f.last_error.is_empty() && !a.admin.json {
                return Err(anyhow!(
                    "refreshing the bundle of {} failed: {}; the bundle in force stays",
                    f.trust_domain,
                    f.last_error
                ));
            }
            show(&a.admin, &f)
        }
    }
}

async fn create(a: CreateArgs) -> Result<()> {
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))
    };
    let bootstrap_bundle = match &a.trust_bundle {
        Some(p) => read("--trust-bundle", p)?,
        None => Vec::new(),
    };
    let web_ca_pem = match &a.web_ca {
        Some(p) => read("--web-ca", p)?,
        None => Vec::new(),
    };
    let mut c = admin_client(&a.admin).await?;
    let f = c
        .create_federation(pb::CreateFederationRequest {
            federation: Some(pb::Federation {
                trust_domain: a.trust_domain.clone(),
                bundle_endpoint_url: a.bundle_endpoint_url.clone(),
                profile: a.profile.clone(),
                endpoint_spiffe_id: a.endpoint_spiffe_id.clone().unwrap_or_default(),
                web_ca_pem,
                ..Default::default()
            }),
            bootstrap_bundle,
        })
        .await
        .map_err(admin_error)?
        .into_inner();
    if a.admin.json {
        return print_json(&FederationOut::new(&f, true));
    }
    if f.last_error.is_empty() {
        outln!(
            "federating with {}; bundle sequence {} fetched from {}",
            f.trust_domain,
            f.bundle.as_ref().map_or(0, |b| b.sequence),
            f.bundle_endpoint_url
        )?;
    } else {
        outln!(
            "federating with {}; the first fetch failed and is retried with backoff: {}",
            f.trust_domain,
            f.last_error
        )?;
    }
    Ok(())
}

async fn list(a: ListArgs) -> Result<()> {
    let mut c = admin_client(&a.admin).await?;
    let list = c
        .list_federations(pb::ListFederationsRequest {})
        .await
        .map_err(admin_error)?
        .into_inner()
        .federations;
    let out: Vec<FederationOut> = list.iter().map(|f| FederationOut::new(f, false)).collect();
    if a.admin.json {
        return print_json(&out);
    }
    out!("{}", federation_table(&out, now()))?;
    Ok(())
}

fn show(admin: &AdminArgs, f: &pb::Federation) -> Result<()> {
    let out = FederationOut::new(f, true);
    if admin.json {
        return print_json(&out);
    }
    out!("{}", federation_table(std::slice::from_ref(&out), now()))?;
    if let Some(b) = &out.bundle {
        outln!("{b}")?;
    }
    Ok(())
}

fn now() -> i64 {
    unix_secs(SystemTime::now())
}

fn federation_table(list: &[FederationOut], now: i64) -> String {
    let rows = list
        .iter()
        .map(|f| {
            vec![
                f.trust_domain.clone(),
                f.profile.clone(),
                f.bundle_endpoint_url.clone(),
                f.last_refresh.map_or("never".into(), |t| {
                    format!("{} ago", relative(now.saturating_sub(t)))
                }),
                if f.next_refresh <= now {
                    "due".into()
                } else {
                    format!("in {}", relative(f.next_refresh - now))
                },
                if f.last_error.is_empty() {
                    match f.bundle_sequence {
                        Some(seq) => format!("ok (sequence {seq})"),
                        None => "no bundle yet".into(),
                    }
                } else {
                    format!("error: {}", f.last_error)
                },
            ]
        })
        .collect();
    table(
        &[
            "TRUST DOMAIN",
            "PROFILE",
            "ENDPOINT",
            "LAST REFRESH",
            "NEXT",
            "STATUS",
        ],
        rows,
    )
}

/// Seconds the way `kubectl` prints ages.
fn relative(secs: i64) -> String {
    age(secs.saturating_mul(1000))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        for (secs, want) in [
            (-3, "0s"),
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (3600, "1h"),
            (86_400, "1d"),
        ] {
            assert_eq!(relative(secs), want, "{secs}");
        }
    }

    #[test]
    fn table_shows_status_and_times() {
        let f = |err: &str, last: Option<i64>, seq: Option<u64>| FederationOut {
            trust_domain: "beta.test".into(),
            bundle_endpoint_url: "https://127.0.0.1:1/".into(),
            profile: "https_spiffe".into(),
            endpoint_spiffe_id: String::new(),
            created_at: 0,
            last_refresh: last,
            next_refresh: 1_000 + 300,
            last_error: err.into(),
            bundle_sequence: seq,
            x509_authorities: 1,
            jwt_authorities: 1,
            bundle: None,
        };
        let out = federation_table(
            &[
                f("", Some(990), Some(4)),
                f("connection refused", None, None),
            ],
            1_000,
        );
        assert!(out.contains("10s ago"), "{out}");
        assert!(out.contains("in 5m"), "{out}");
        assert!(out.contains("ok (sequence 4)"), "{out}");
        assert!(out.contains("never"), "{out}");
        assert!(out.contains("error: connection refused"), "{out}");
    }
}
