//! `AuditPolicy`, `DryRunPolicy` and `SuggestPolicy`: policy held against
//! the flows the datastore recorded. Every flow is decided by a
//! `hallmark_flows::verdict::Judge` (each end's groups computed once), as
//! its stored verdict is, so the audit of a flow and the verdict it was
//! stored with never disagree under one revision. Flows policy cannot decide (an unattributed end, an unknown
//! initiator, a protocol other than TCP or UDP) take part in none.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use hallmark_core::time::unix_millis;
use hallmark_flows::policy::question;
use hallmark_flows::verdict::{Judge, RevisedPolicy, VerdictCounts};
use hallmark_flows::{FlowQuery, Protocol, StoredFlow};
use hallmark_policy::{
    suggest, to_yaml, DecidedBy, Mode, Observed, Outcome, Policy, SuggestBy, Verdict,
};
use tonic::Status;

use super::api_queries::{
    AuditRequest, DryRunAnswer, DryRunChange, DryRunEdge, DryRunRequest, DryRunUnmatched,
    SuggestAnswer, SuggestRequest, AUDIT_WINDOW_MS, REVIEW_WINDOW_MS,
};
use super::queries::{parse, store_status, to_json};
use crate::Shared;

/// Flows read from the datastore per request.
const PAGE: usize = 5_000;
/// Default and largest audit answer.
const AUDIT_DEFAULT_LIMIT: usize = 1_000;
const AUDIT_MAX_LIMIT: usize = 100_000;
/// Example flows per dry-run line.
const EXAMPLES: usize = 10;

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// Calls `each` on every stored flow that started in `[since, until)`,
/// oldest stored first, a page at a time.
async fn for_each_flow(
    shared: &Shared,
    since_ms: i64,
    until_ms: Option<i64>,
    mut each: impl FnMut(StoredFlow),
) -> Result<(), Status> {
    let mut after = 0;
    loop {
        let q = FlowQuery {
            since_ms,
            until_ms,
            after_id: Some(after),
            limit: PAGE,
            ..FlowQuery::default()
        };
        let page = shared.store.list_flows(&q).await.map_err(store_status)?;
        let n = page.len();
        for f in page {
            after = after.max(f.id);
            each(f);
        }
        if n < PAGE {
            return Ok(());
        }
    }
}

/// A stored flow as a row with a verdict at the top level: `revision` is
/// the revision that decided it, `None` for a candidate's verdict.
pub(crate) fn flow_row(f: &StoredFlow, v: &Verdict, revision: Option<i64>) -> serde_json::Value {
    let mut f = f.clone();
    f.set_verdict(v, revision.unwrap_or_default());
    f.policy_revision = revision;
    serde_json::to_value(&f).unwrap_or(serde_json::Value::Null)
}

fn window(since: Option<i64>, until: Option<i64>, default_ms: i64) -> Result<i64, Status> {
    let since = since.unwrap_or_else(|| now_ms() - default_ms);
    if let Some(u) = until {
        if u <= since {
            return Err(Status::invalid_argument(format!(
                "until_ms ({u}) must be after since_ms ({since}): the window is empty"
            )));
        }
    }
    Ok(since)
}

/// `AuditPolicy`.
pub(crate) async fn audit_policy(shared: &Shared, json: &str) -> Result<String, Status> {
    let r: AuditRequest = parse("AuditPolicy", json)?;
    let since = window(r.since_ms, r.until_ms, AUDIT_WINDOW_MS)?;
    let wanted: &[Outcome] = match r.verdict.as_deref() {
        None | Some("") => &[Outcome::Denied, Outcome::WouldDeny],
        Some("denied" | "deny") => &[Outcome::Denied],
        Some("would-deny") => &[Outcome::WouldDeny],
        Some(other) => {
            return Err(Status::invalid_argument(format!(
                "verdict `{other}`: must be denied or would-deny (or absent for both)"
            )))
        }
    };
    let limit = match r.limit {
        None | Some(0) => AUDIT_DEFAULT_LIMIT,
        Some(n) => n.min(AUDIT_MAX_LIMIT),
    };
    let current = shared.policy.current();
    let mut judge = Judge::new(&*current);
    // The newest `limit` hits are kept; the list is cut back whenever it
    // doubles, so an audit of millions of flows holds at most 2 x limit.
    let mut hits: Vec<(StoredFlow, Verdict)> = Vec::new();
    let newest_first = |hits: &mut Vec<(StoredFlow, Verdict)>| {
        hits.sort_by_key(|(f, _)| std::cmp::Reverse((f.flow.start_ms, f.id)));
        hits.truncate(limit);
    };
    for_each_flow(shared, since, r.until_ms, |f| {
        let v = judge.decide(&f);
        if wanted.contains(&v.outcome) {
            hits.push((f, v));
            if hits.len() >= 2 * limit {
                newest_first(&mut hits);
            }
        }
    })
    .await?;
    newest_first(&mut hits);
    let rows: Vec<serde_json::Value> = hits
        .iter()
        .map(|(f, v)| flow_row(f, v, Some(current.revision)))
        .collect();
    to_json(&rows)
}

/// `DryRunPolicy`.
pub(crate) async fn dry_run_policy(shared: &Shared, json: &str) -> Result<String, Status> {
    let r: DryRunRequest = parse("DryRunPolicy", json)?;
    let file = if r.file.is_empty() {
        "candidate"
    } else {
        r.file.as_str()
    };
    let candidate = match hallmark_policy::parse(file, &r.document) {
        Ok(p) => RevisedPolicy {
            revision: 0,
            policy: Policy::compile(&p.document),
        },
        Err(e) => {
            let lines: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
            return Err(Status::invalid_argument(format!(
                "candidate policy refused: {} error{}; fix them and run the dry-run again:\n{}",
                lines.len(),
                if lines.len() == 1 { "" } else { "s" },
                lines.join("\n")
            )));
        }
    };
    let since = window(r.since_ms, None, REVIEW_WINDOW_MS)?;
    let current = shared.policy.current();
    let (mut before_judge, mut after_judge) = (Judge::new(&*current), Judge::new(&candidate));
    let mut considered = 0u64;
    let mut changed = 0u64;
    type Key = (Option<String>, Option<Mode>, Outcome, Outcome);
    let mut by_rule: HashMap<Key, (u64, Vec<serde_json::Value>)> = HashMap::new();
    let mut unmatched = DryRunUnmatched::default();
    let mut edges: BTreeMap<EdgeKey, EdgeTally> = BTreeMap::new();
    for_each_flow(shared, since, None, |f| {
        if question(&f).is_none() {
            return;
        }
        considered += 1;
        let before = before_judge.decide(&f);
        let after = after_judge.decide(&f);
        if let Some(by) = r.edges_by {
            let key = (
                f.src.group_name(by),
                f.dst.group_name(by),
                f.flow.dst.port(),
                f.flow.protocol,
            );
            let e = edges.entry(key).or_default();
            e.0 += 1;
            e.1 += u64::from(before.outcome != after.outcome);
            *e.2.slot(before.outcome) += 1;
            *e.3.slot(after.outcome) += 1;
        }
        if matches!(after.decided_by, DecidedBy::Default { .. }) {
            unmatched.flows += 1;
            if unmatched.examples.len() < EXAMPLES {
                unmatched.examples.push(flow_row(&f, &after, None));
            }
        }
        if before.outcome == after.outcome {
            return;
        }
        changed += 1;
        let mode = match &after.decided_by {
            DecidedBy::Rule { mode, .. } => Some(*mode),
            _ => None,
        };
        let key = (
            after.rule().map(str::to_string),
            mode,
            before.outcome,
            after.outcome,
        );
        let e = by_rule.entry(key).or_default();
        e.0 += 1;
        if e.1.len() < EXAMPLES {
            e.1.push(flow_row(&f, &after, None));
        }
    })
    .await?;
    let mut by_rule: Vec<DryRunChange> = by_rule
        .into_iter()
        .map(
            |((rule, mode, from_verdict, to_verdict), (flows, examples))| DryRunChange {
                rule,
                mode,
                from_verdict,
                to_verdict,
                flows,
                examples,
            },
        )
        .collect();
    by_rule.sort_by(|a, b| b.flows.cmp(&a.flows).then_with(|| a.rule.cmp(&b.rule)));
    to_json(&DryRunAnswer {
        current_revision: current.revision,
        flows_considered: considered,
        changed,
        by_rule,
        unmatched,
        edges: dry_run_edges(edges),
    })
}

type EdgeKey = (String, String, u16, Protocol);

/// Per edge: flows, flows changed, verdicts now, verdicts under the
/// candidate.
type EdgeTally = (u64, u64, VerdictCounts, VerdictCounts);

fn dry_run_edges(edges: BTreeMap<EdgeKey, EdgeTally>) -> Vec<DryRunEdge> {
    edges
        .into_iter()
        .map(
            |((src, dst, dst_port, protocol), (flows, changed, now, candidate))| DryRunEdge {
                src,
                dst,
                dst_port,
                protocol,
                flows,
                changed,
                current: now.worst().unwrap_or(Outcome::NoDecision),
                candidate: candidate.worst().unwrap_or(Outcome::NoDecision),
            },
        )
        .collect()
}

/// `SuggestPolicy`.
pub(crate) async fn suggest_policy(shared: &Shared, json: &str) -> Result<String, Status> {
    let r: SuggestRequest = parse("SuggestPolicy", json)?;
    let by = match r.by.as_deref().unwrap_or("spiffe-id") {
        "spiffe-id" => SuggestBy::SpiffeId,
        "service" => SuggestBy::Service,
        "namespace" => SuggestBy::Namespace,
        other => {
            return Err(Status::invalid_argument(format!(
                "by `{other}`: must be spiffe-id, service or namespace"
            )))
        }
    };
    let min_flows = r.min_flows.unwrap_or(1).max(1);
    let since = window(r.since_ms, None, REVIEW_WINDOW_MS)?;
    let mut considered = 0u64;
    // Observations keyed by their ends and port, so repeated connections
    // count as one observation of many flows.
    let mut seen: BTreeMap<String, Observed> = BTreeMap::new();
    for_each_flow(shared, since, None, |f| {
        let Some(q) = question(&f) else {
            return;
        };
        considered += 1;
        let key = serde_json::to_string(&(&q.from, &q.to, q.protocol, q.port)).unwrap_or_default();
        seen.entry(key)
            .and_modify(|o| o.flows = o.flows.saturating_add(1))
            .or_insert(Observed {
                from: q.from,
                to: q.to,
                protocol: q.protocol,
                port: q.port,
                flows: 1,
            });
    })
    .await?;
    let observed: Vec<Observed> = seen.into_values().collect();
    let doc = suggest(&observed, min_flows, by);
    let yaml = to_yaml(&doc);
    // What `apply` would refuse is not a suggestion.
    if let Err(e) = hallmark_policy::parse("suggested", &yaml) {
        return Err(Status::internal(format!(
            "the suggested document does not validate: {}",
            e.errors
                .first()
                .map(ToString::to_string)
                .unwrap_or_default()
        )));
    }
    to_json(&SuggestAnswer {
        document: yaml,
        groups: doc.groups.len(),
        rules: doc.rules.len(),
        flows_considered: considered,
    })
}
