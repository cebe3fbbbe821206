//! `hallmark policy enforcement [off|on]`: the fleet-wide kill switch.
//!
//! `off` lifts enforcement on every agent within a second (they keep
//! observing and reporting would-deny verdicts; nothing is blocked), `on`
//! puts it back; alone, it prints the switch. The switch lives in the
//! server's datastore, so it holds across restarts and for every server
//! sharing the datastore. `--json` prints the `SetEnforcement` answer
//! (`{"enforcement": "on"|"off", "changed": bool}`).

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use hallmark_proto::hallmark as pb;
use hallmark_server::policy::api::{EnforcementAnswer, EnforcementRequest};

use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{outln, print_json};

#[derive(Args, Debug)]
pub struct EnforcementArgs {
    /// Turn enforcement off or on for the whole fleet; without it, print
    /// the switch.
    pub state: Option<Switch>,
    #[command(flatten)]
    pub conn: AdminArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Agents enforce the policy in force (rules in `enforce` mode block).
    On,
    /// No agent blocks anything; verdicts are still observed and reported.
    Off,
}

pub async fn run(a: EnforcementArgs) -> Result<()> {
    let req = EnforcementRequest {
        enforcement: a.state.map(|s| {
            match s {
                Switch::On => "on",
                Switch::Off => "off",
            }
            .to_string()
        }),
    };
    let json = serde_json::to_string(&req).context("encoding SetEnforcement")?;
    let mut client = admin_client(&a.conn).await?;
    let resp = client
        .set_enforcement(pb::PolicyRequest { json })
        .await
        .map_err(admin_error)?
        .into_inner()
        .json;
    let answer: EnforcementAnswer = serde_json::from_str(&resp).map_err(|e| {
        anyhow!("the server's SetEnforcement answer is not what this client reads: {e}")
    })?;
    if a.conn.json {
        return print_json(&answer);
    }
    match (a.state, answer.changed, answer.enforcement.as_str()) {
        (None, _, "off") => outln!(
            "policy enforcement: off (agents observe but block nothing; `hallmark policy enforcement on` puts it back)"
        ),
        (None, _, state) => outln!("policy enforcement: {state}"),
        (Some(_), false, state) => outln!("unchanged: policy enforcement is already {state}"),
        (Some(_), true, "off") => outln!(
            "policy enforcement turned off: every agent stops blocking within a second; `hallmark policy enforcement on` puts it back"
        ),
        (Some(_), true, state) => outln!(
            "policy enforcement turned {state}: every agent enforces the policy in force within a second"
        ),
    }
}
