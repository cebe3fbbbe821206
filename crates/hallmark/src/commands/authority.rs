//! `hallmark authority`: the server's signing authorities and their
//! rotation (prepare -> activate -> retire, taint, revoke).

use anyhow::Result;
use clap::{Args, Subcommand};
use hallmark_proto::hallmark as pb;
use serde::Serialize;

use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{out, outln, print_json, table, timestamp};

#[derive(Subcommand, Debug)]
pub enum AuthorityCommand {
    /// List authorities with their state and when they leave the bundle.
    Show(ShowArgs),
    /// Create a new authority that is published in the bundle but signs
    /// nothing yet.
    Prepare(KindArgs),
    /// Make a prepared authority the one that signs; the active one retires
    /// and stays published until what it signed has expired.
    Activate(ActivateArgs),
    /// Distrust a retired authority: agents re-issue everything it signed
    /// at once.
    Taint(IdArgs),
    /// Remove a tainted authority from the bundle.
    Revoke(IdArgs),
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Only this kind: x509, jwt or oidc.
    #[arg(long)]
    pub kind: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct KindArgs {
    /// x509, jwt or oidc.
    #[arg(long, default_value = "x509")]
    pub kind: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct ActivateArgs {
    /// x509, jwt or oidc [default: the kind of --id, else x509].
    #[arg(long)]
    pub kind: Option<String>,
    /// The prepared authority to activate [default: the newest prepared one].
    // Key IDs are base64url and may start with `-`.
    #[arg(long, allow_hyphen_values = true)]
    pub id: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    /// x509, jwt or oidc [default: the kind of the authority with this ID].
    #[arg(long)]
    pub kind: Option<String>,
    /// The authority's ID (see `hallmark authority show`), as --id or as
    /// the argument.
    // Key IDs are base64url and may start with `-`.
    #[arg(
        long = "id",
        allow_hyphen_values = true,
        required_unless_present = "id_arg",
        conflicts_with = "id_arg"
    )]
    pub id: Option<String>,
    #[arg(value_name = "ID", allow_hyphen_values = true)]
    pub id_arg: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

impl IdArgs {
    /// The request naming this authority (the server finds its kind when
    /// none is given).
    fn request(&self) -> pb::AuthorityRequest {
        pb::AuthorityRequest {
            kind: self.kind.clone().unwrap_or_default(),
            id: self
                .id
                .clone()
                .or_else(|| self.id_arg.clone())
                .unwrap_or_default(),
        }
    }
}

#[derive(Serialize)]
struct AuthorityOut {
    kind: String,
    id: String,
    state: String,
    alg: String,
    created_at: i64,
    /// Unix seconds; absent while the authority has no end (an active key).
    not_after: Option<i64>,
}

impl From<&pb::Authority> for AuthorityOut {
    fn from(a: &pb::Authority) -> Self {
        AuthorityOut {
            kind: a.kind.clone(),
            id: a.id.clone(),
            state: a.state.clone(),
            alg: a.alg.clone(),
            created_at: a.created_at,
            not_after: (a.not_after < i64::MAX).then_some(a.not_after),
        }
    }
}

pub async fn run(cmd: AuthorityCommand) -> Result<()> {
    match cmd {
        AuthorityCommand::Show(a) => show(a).await,
        AuthorityCommand::Prepare(a) => {
            let mut c = admin_client(&a.admin).await?;
            let r = c
                .prepare_authority(pb::AuthorityRequest {
                    kind: a.kind.clone(),
                    id: String::new(),
                })
                .await
                .map_err(admin_error)?
                .into_inner();
            report(&a.admin, &r, &format!(
                "prepared {} authority {}; it is in the bundle now and signs nothing; activate it with `hallmark authority activate --kind {}` once agents have it (give them a minute)",
                r.kind, r.id, r.kind
            ))
        }
        AuthorityCommand::Activate(a) => {
            let mut c = admin_client(&a.admin).await?;
            let r = c
                .activate_authority(pb::AuthorityRequest {
                    // Without an ID the server needs the kind: X.509 then.
                    kind: a.kind.clone().unwrap_or_else(|| {
                        if a.id.is_some() {
                            String::new()
                        } else {
                            "x509".into()
                        }
                    }),
                    id: a.id.clone().unwrap_or_default(),
                })
                .await
                .map_err(admin_error)?
                .into_inner();
            report(&a.admin, &r, &format!(
                "activated {} authority {}; it signs from now on; the previous one is retired and stays in the bundle until what it signed has expired (see `hallmark authority show`)",
                r.kind, r.id
            ))
        }
        AuthorityCommand::Taint(a) => {
            let mut c = admin_client(&a.admin).await?;
            let r = c
                .taint_authority(a.request())
                .await
                .map_err(admin_error)?
                .into_inner();
            report(&a.admin, &r, &format!(
                "tainted {} authority {}; agents re-issue everything it signed now; once they have, remove it from the bundle with `hallmark authority revoke {}`",
                r.kind, r.id, r.id
            ))
        }
        AuthorityCommand::Revoke(a) => {
            let mut c = admin_client(&a.admin).await?;
            let r = c
                .revoke_authority(a.request())
                .await
                .map_err(admin_error)?
                .into_inner();
            report(&a.admin, &r, &format!(
                "revoked {} authority {}; it left the bundle and anything it signed no longer verifies",
                r.kind, r.id
            ))
        }
    }
}

fn report(admin: &AdminArgs, r: &pb::Authority, text: &str) -> Result<()> {
    if admin.json {
        return print_json(&AuthorityOut::from(r));
    }
    outln!("{text}")?;
    Ok(())
}

async fn show(a: ShowArgs) -> Result<()> {
    let mut c = admin_client(&a.admin).await?;
    let list = c
        .list_authorities(pb::ListAuthoritiesRequest {
            kind: a.kind.clone().unwrap_or_default(),
        })
        .await
        .map_err(admin_error)?
        .into_inner()
        .authorities;
    let out: Vec<AuthorityOut> = list.iter().map(AuthorityOut::from).collect();
    if a.admin.json {
        return print_json(&out);
    }
    out!("{}", authority_table(&out))?;
    Ok(())
}

fn authority_table(list: &[AuthorityOut]) -> String {
    let rows = list
        .iter()
        .map(|a| {
            vec![
                a.kind.clone(),
                a.id.clone(),
                a.state.clone(),
                a.alg.clone(),
                timestamp(a.created_at.saturating_mul(1000)),
                a.not_after
                    .map_or("-".into(), |t| timestamp(t.saturating_mul(1000))),
            ]
        })
        .collect();
    table(
        &[
            "KIND",
            "ID",
            "STATE",
            "ALG",
            "CREATED",
            "EXPIRES/LEAVES BUNDLE",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_state_and_end_of_publication() {
        let list = [
            AuthorityOut {
                kind: "x509".into(),
                id: "ab12".into(),
                state: "retired".into(),
                alg: "ec-p256".into(),
                created_at: 0,
                not_after: Some(86_400),
            },
            AuthorityOut {
                kind: "jwt".into(),
                id: "k1".into(),
                state: "active".into(),
                alg: "ES256".into(),
                created_at: 0,
                not_after: None,
            },
        ];
        let t = authority_table(&list);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("KIND"), "{t}");
        assert!(
            lines[1].contains("retired") && lines[1].contains("1970-01-02T00:00:00"),
            "{t}"
        );
        assert!(
            lines[2].contains("active") && lines[2].trim_end().ends_with('-'),
            "{t}"
        );
    }
}
