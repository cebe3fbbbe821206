#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;
use crate::attribution::UnattributedReason;
use crate::endpoint::{buckets_of, edges_of, GraphBy, WorkloadEndpoint};
use crate::flow::{Flow, Reporter};
use crate::policy::decide;
use hallmark_policy::parse;

const POLICY: &str = r#"
groups:
  web: [{selector: "docker:label:app:web"}]
  db: [{labels: {tier: db}}]
  corp: [{cidr: 10.8.0.0/16}]
  batch: [{labels: {tier: batch}}]
rules:
  - {name: web-to-db, from: [web], to: [db], protocol: tcp, ports: ["5432"], action: allow}
  - {name: corp-to-db, from: [corp], to: [db], action: deny}
  - {name: batch-watch, from: [batch], to: [db], action: deny, mode: watch}
default: allow
"#;

fn in_force() -> RevisedPolicy {
    RevisedPolicy {
        revision: 7,
        policy: Policy::compile(&parse("p.yaml", POLICY).unwrap().document),
    }
}

fn workload(id: char, labels: &[(&str, &str)], selectors: &[&str]) -> Endpoint {
    Endpoint::Workload(WorkloadEndpoint {
        context: "lab".into(),
        node: "n2".into(),
        container_id: id.to_string().repeat(64),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        selectors: selectors.iter().map(|s| s.to_string()).collect(),
        ..WorkloadEndpoint::default()
    })
}

fn web() -> Endpoint {
    workload('a', &[], &["docker:label:app:web"])
}

fn db() -> Endpoint {
    workload('b', &[("tier", "db")], &[])
}

fn batch() -> Endpoint {
    workload('c', &[("tier", "batch")], &[])
}

fn flow(src: &str, dst: &str, initiator: Initiator) -> Flow {
    Flow {
        start_ms: 60_000,
        end_ms: 60_010,
        protocol: Protocol::Tcp,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        initiator,
        bytes_sent: 10,
        packets_sent: 1,
        bytes_received: 10,
        packets_received: 1,
        outcome: None,
        retransmits: 0,
        rtt_us: None,
        reporter: Reporter::Agent("n2".into()),
        local: None,
        enforced: None,
    }
}

fn stored(src: Endpoint, dst: Endpoint, srca: &str, dsta: &str) -> StoredFlow {
    StoredFlow::new(flow(srca, dsta, Initiator::Source), src, dst, 1)
}

fn unattributed() -> Endpoint {
    Endpoint::Unattributed {
        reason: UnattributedReason::NoOwner,
    }
}

#[test]
fn the_judge_decides_as_policy_decide_does_and_stores_the_reason() {
    let p = in_force();
    let mut judge = Judge::new(&p);
    let flows = [
        stored(web(), db(), "10.0.0.9:40000", "10.0.0.2:5432"),
        // The same ends again (from the cache), and web at a corp address:
        // the address is part of an end's groups.
        stored(web(), db(), "10.0.0.9:40001", "10.0.0.2:5432"),
        stored(web(), db(), "10.8.0.9:40000", "10.0.0.2:5432"),
        stored(batch(), db(), "10.0.0.7:40000", "10.0.0.2:5432"),
        stored(unattributed(), db(), "10.0.0.6:40000", "10.0.0.2:5432"),
        stored(db(), web(), "10.0.0.2:40000", "10.0.0.9:80"),
        StoredFlow::new(
            flow("10.0.0.2:5432", "10.0.0.9:40000", Initiator::Destination),
            db(),
            web(),
            1,
        ),
        StoredFlow::new(
            flow("10.0.0.9:40000", "10.0.0.2:5432", Initiator::Unknown),
            web(),
            db(),
            1,
        ),
    ];
    let want = [
        (Outcome::Allowed, Some("web-to-db"), Some(Mode::Enforce)),
        (Outcome::Allowed, Some("web-to-db"), Some(Mode::Enforce)),
        (Outcome::Denied, Some("corp-to-db"), Some(Mode::Enforce)),
        (Outcome::WouldDeny, Some("batch-watch"), Some(Mode::Watch)),
        (Outcome::NoDecision, None, None),
        (Outcome::Allowed, None, None),
        (Outcome::Allowed, Some("web-to-db"), Some(Mode::Enforce)),
        (Outcome::NoDecision, None, None),
    ];
    for (f, (outcome, rule, mode)) in flows.into_iter().zip(want) {
        assert_eq!(judge.decide(&f), decide(&p.policy, &f), "{f:?}");
        let mut judged = f.clone();
        judge.judge(&mut judged);
        assert_eq!(judged.verdict, Some(outcome), "{f:?}");
        assert_eq!(judged.verdict_rule.as_deref(), rule, "{f:?}");
        assert_eq!(judged.verdict_mode, mode, "{f:?}");
        assert_eq!(judged.policy_revision, Some(7));
        assert_eq!(f.with_verdict(&judge.decide(&judged), 7), judged);
    }
}

#[test]
fn verdict_fields_serialize_flat_and_are_absent_on_old_flows() {
    let p = in_force();
    let mut f = stored(batch(), db(), "10.0.0.7:40000", "10.0.0.2:5432");
    let old = serde_json::to_value(&f).unwrap();
    for k in ["verdict", "verdict_rule", "verdict_mode", "policy_revision"] {
        assert!(old.get(k).is_none(), "{k} in {old}");
    }
    Judge::new(&p).judge(&mut f);
    let v = serde_json::to_value(&f).unwrap();
    assert_eq!(v["verdict"], "would-deny");
    assert_eq!(v["verdict_rule"], "batch-watch");
    assert_eq!(v["verdict_mode"], "watch");
    assert_eq!(v["policy_revision"], 7);
    let back: StoredFlow = serde_json::from_value(v).unwrap();
    assert_eq!(back, f);
    // Decided by the default: no rule, no mode.
    let mut d = stored(db(), web(), "10.0.0.2:40000", "10.0.0.9:80");
    Judge::new(&p).judge(&mut d);
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["verdict"], "allowed");
    assert!(v.get("verdict_rule").is_none() && v.get("verdict_mode").is_none());
}

#[test]
fn words_parse_and_filters_accept_the_short_forms() {
    for o in OUTCOMES {
        assert_eq!(parse_outcome_word(outcome_word(o)), Some(o));
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            format!("\"{}\"", outcome_word(o)),
            "the stored word is the JSON word"
        );
        assert_eq!(parse_verdict_filter(outcome_word(o)), Ok(o));
    }
    assert_eq!(parse_verdict_filter("deny"), Ok(Outcome::Denied));
    assert_eq!(parse_verdict_filter("Would_Deny"), Ok(Outcome::WouldDeny));
    let err = parse_verdict_filter("blocked").unwrap_err();
    assert!(
        err.contains("`blocked`") && err.contains("would-deny"),
        "{err}"
    );
    for m in [Mode::Enforce, Mode::Watch] {
        assert_eq!(parse_mode_word(mode_word(m)), Some(m));
    }
}

#[test]
fn edges_count_verdicts_and_summarise_the_worst() {
    let p = in_force();
    let mut judge = Judge::new(&p);
    let mut flows = vec![
        stored(web(), db(), "10.0.0.9:40000", "10.0.0.2:5432"),
        stored(web(), db(), "10.0.0.9:40001", "10.0.0.2:5432"),
        stored(web(), db(), "10.8.0.9:40000", "10.0.0.2:5432"),
        stored(batch(), db(), "10.0.0.7:40000", "10.0.0.2:5432"),
        stored(unattributed(), db(), "10.0.0.6:40000", "10.0.0.2:5432"),
    ];
    for f in &mut flows {
        judge.judge(f);
    }
    // Stored before verdicts: counted as a flow, in no verdict.
    flows.push(stored(batch(), db(), "10.0.0.7:40001", "10.0.0.2:5432"));
    let buckets = buckets_of(&flows);
    let edges = edges_of(&buckets, GraphBy::Workload);
    let edge = |src: &str| edges.iter().find(|e| e.src.contains(src)).unwrap();
    let web_db = edge(&"a".repeat(12));
    assert_eq!(
        (
            web_db.flows,
            web_db.verdicts.allowed,
            web_db.verdicts.denied
        ),
        (3, 2, 1)
    );
    assert_eq!(web_db.verdict, Some(Outcome::Denied));
    let batch_db = edge(&"c".repeat(12));
    assert_eq!((batch_db.flows, batch_db.verdicts.would_deny), (2, 1));
    assert_eq!(batch_db.verdict, Some(Outcome::WouldDeny));
    let un = edge("unattributed");
    assert_eq!(un.verdicts.no_decision, 1);
    assert_eq!(un.verdict, Some(Outcome::NoDecision));
    let v = serde_json::to_value(web_db).unwrap();
    assert_eq!(
        v["verdicts"],
        serde_json::json!({"allowed": 2, "denied": 1, "would_deny": 0, "no_decision": 0})
    );
    assert_eq!(v["verdict"], "denied");
    assert_eq!(web_db.verdicts.to_string(), "2 allowed, 1 denied");
    assert_eq!(VerdictCounts::default().worst(), None);
    assert_eq!(VerdictCounts::default().to_string(), "-");
}

#[test]
fn a_merge_keeps_only_a_verdict_asked_of_the_whole_flow() {
    let p = in_force();
    let mut judge = Judge::new(&p);
    // Each end's agent knew only its own end.
    let mut from_web = stored(web(), unattributed(), "10.0.0.9:40000", "10.0.0.2:5432");
    let mut from_db = stored(unattributed(), db(), "10.0.0.9:40000", "10.0.0.2:5432");
    judge.judge(&mut from_web);
    judge.judge(&mut from_db);
    assert_eq!(from_web.verdict, Some(Outcome::NoDecision));
    let merged = from_web.merge(&from_db);
    assert!(merged.src.is_attributed() && merged.dst.is_attributed());
    assert_eq!(merged.verdict, None, "decided from half a flow: dropped");
    assert_eq!(merged.policy_revision, None);
    // Interim and final reports of one end: the question did not change.
    let mut interim = stored(web(), db(), "10.0.0.9:40000", "10.0.0.2:5432");
    judge.judge(&mut interim);
    let mut last = interim.clone();
    last.flow.bytes_sent = 99;
    last.clear_verdict();
    let merged = interim.merge(&last);
    assert_eq!(merged.verdict, Some(Outcome::Allowed));
    assert_eq!(merged.verdict_rule.as_deref(), Some("web-to-db"));
    // Of two verdicts for the same question, the newer revision's.
    let mut newer = interim.clone();
    newer.verdict = Some(Outcome::Denied);
    newer.policy_revision = Some(8);
    assert_eq!(interim.merge(&newer).verdict, Some(Outcome::Denied));
    assert_eq!(newer.merge(&interim).verdict, Some(Outcome::Denied));
}

#[test]
fn the_query_filters_on_the_stored_verdict() {
    let p = in_force();
    let mut f = stored(batch(), db(), "10.0.0.7:40000", "10.0.0.2:5432");
    let q = |v| crate::query::FlowQuery {
        verdict: Some(v),
        ..crate::query::FlowQuery::default()
    };
    assert!(
        !q(Outcome::WouldDeny).matches(&f),
        "no verdict never matches"
    );
    Judge::new(&p).judge(&mut f);
    assert!(q(Outcome::WouldDeny).matches(&f));
    assert!(!q(Outcome::Allowed).matches(&f));
}

#[test]
fn a_verdict_a_kernel_enforced_is_kept() {
    use crate::flow::EnforcedVerdict;
    let p = in_force();
    let mut judge = Judge::new(&p);
    // web → db on 5432: revision 7 allows it by `web-to-db`.
    let mut f = stored(web(), db(), "10.0.0.1:40000", "10.0.0.2:5432");
    f.flow.enforced = Some(EnforcedVerdict {
        verdict: Outcome::Denied,
        rule: Some("no-ssh".into()),
        mode: Some(hallmark_policy::Mode::Enforce),
        policy_revision: 8,
    });
    judge.judge(&mut f);
    assert_eq!(
        f.verdict,
        Some(Outcome::Denied),
        "not the allow of revision 7"
    );
    assert_eq!(f.verdict_rule.as_deref(), Some("no-ssh"));
    assert_eq!(f.verdict_mode, Some(hallmark_policy::Mode::Enforce));
    assert_eq!(f.policy_revision, Some(8));
}
