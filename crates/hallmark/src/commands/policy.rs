//! `hallmark policy`: identity policy documents.
//!
//! `validate -f FILE` checks a document where it is written, before it goes
//! anywhere: every error and warning with its file, line and group or rule,
//! as `hallmark_policy::parse` finds them. It needs no server. The
//! versioned policy on the server (`apply`, `show`, `history`, `rollback`)
//! is in `policy_versions`, the fleet-wide enforcement switch in
//! `policy_enforcement`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use hallmark_policy::{Diagnostic, PolicyDocument};
use serde::Serialize;

use super::policy_query;
use crate::output::{outln, print_json};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Check a policy document: every error and warning with its file,
    /// line and group or rule. Exits 1 when the document would be refused.
    Validate(ValidateArgs),
    /// Validate a document and apply it on the server as the next
    /// revision; every agent holds it within a second. Applying the text
    /// in force again changes nothing.
    Apply(super::policy_versions::ApplyArgs),
    /// Print the policy document in force (or of --revision N) exactly as
    /// applied.
    Show(super::policy_versions::ShowArgs),
    /// The applied revisions, newest first.
    History(super::policy_versions::HistoryArgs),
    /// Apply revision N's document again, as a new revision.
    Rollback(super::policy_versions::RollbackArgs),
    /// Decide whether one endpoint may reach another on a port, by the
    /// policy in force: the verdict, the deciding rule and each end's
    /// groups. Exits 0 whatever the verdict.
    Check(policy_query::CheckArgs),
    /// Recorded flows the policy in force denies or would deny.
    Audit(policy_query::AuditArgs),
    /// What a candidate document would change: recorded flows whose
    /// verdict changes, per candidate rule, and those no rule matches.
    DryRun(policy_query::DryRunArgs),
    /// Least-privilege allow rules from observed flows, as a watch-mode
    /// document (on stdout) that `apply` accepts.
    Suggest(policy_query::SuggestArgs),
    /// The fleet-wide kill switch: `off` stops every agent from blocking
    /// within a second (verdicts are still observed), `on` puts
    /// enforcement back; alone, print it.
    Enforcement(super::policy_enforcement::EnforcementArgs),
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The policy document (YAML); `-` reads standard input.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Validate(a) => validate(a),
        PolicyCommand::Apply(a) => super::policy_versions::apply(a).await,
        PolicyCommand::Show(a) => super::policy_versions::show(a).await,
        PolicyCommand::History(a) => super::policy_versions::history(a).await,
        PolicyCommand::Rollback(a) => super::policy_versions::rollback(a).await,
        PolicyCommand::Check(a) => policy_query::check(a).await,
        PolicyCommand::Audit(a) => policy_query::audit(a).await,
        PolicyCommand::DryRun(a) => policy_query::dry_run(a).await,
        PolicyCommand::Suggest(a) => policy_query::suggest(a).await,
        PolicyCommand::Enforcement(a) => super::policy_enforcement::run(a).await,
    }
}

/// What `validate --json` prints.
#[derive(Debug, Serialize)]
struct Validation<'a> {
    file: &'a str,
    valid: bool,
    groups: usize,
    rules: usize,
    default: &'a str,
    errors: &'a [Diagnostic],
    warnings: &'a [Diagnostic],
}

pub(super) fn read(file: &PathBuf) -> Result<(String, String)> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the policy document from standard input")?;
        return Ok(("<stdin>".into(), text));
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the policy document {}", file.display()))?;
    Ok((file.display().to_string(), text))
}

fn validate(a: ValidateArgs) -> Result<()> {
    let (name, text) = read(&a.file)?;
    let (document, errors, warnings) = match hallmark_policy::parse(&name, &text) {
        Ok(p) => (Some(p.document), Vec::new(), p.warnings),
        Err(e) => (None, e.errors, e.warnings),
    };
    let empty = PolicyDocument::default();
    let doc = document.as_ref().unwrap_or(&empty);
    if a.json {
        print_json(&Validation {
            file: &name,
            valid: document.is_some(),
            groups: doc.groups.len(),
            rules: doc.rules.len(),
            default: doc.default.as_str(),
            errors: &errors,
            warnings: &warnings,
        })?;
    } else {
        for d in errors.iter().chain(&warnings) {
            eprintln!("{d}");
        }
        if document.is_some() {
            let count =
                |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            outln!(
                "{name}: valid: {}, {}, default {}{}",
                count(doc.groups.len(), "group"),
                count(doc.rules.len(), "rule"),
                doc.default.as_str(),
                match warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".into(),
                    n => format!(", {n} warnings"),
                }
            )?;
        }
    }
    if document.is_none() {
        let n = errors.len();
        return Err(anyhow!(
            "{name}: policy refused: {n} error{}; fix them and validate again",
            if n == 1 { "" } else { "s" }
        ));
    }
    Ok(())
}
