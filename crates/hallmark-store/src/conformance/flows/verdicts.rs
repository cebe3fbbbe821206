//! What policy said about each flow: every verdict reads back as written,
//! `verdict` filters listings, the graph counts verdicts, and a merged
//! row holds the verdict of the merged flow, not of either half.

use std::sync::Arc;

use hallmark_flows::verdict::{RevisedPolicy, VerdictCounts, OUTCOMES};
use hallmark_flows::Judge;
use hallmark_policy::{Mode, Outcome, Policy};

use super::*;
use crate::flows::MergePolicy;

/// Clients may not reach servers; everything else is allowed, and a watch
/// rule would deny batch jobs.
const POLICY: &str = r#"
groups:
  clients: [{cidr: 10.22.0.1/32}]
  servers: [{cidr: 10.22.0.2/32}]
  batch: [{cidr: 10.22.0.3/32}]
rules:
  - {name: "clients-to-servers", from: [clients], to: [servers], action: deny}
  - {name: batch-watch.v2_x, from: [batch], to: [servers], action: deny, mode: watch}
default: allow
"#;

fn policy(revision: i64) -> RevisedPolicy {
    let doc = match hallmark_policy::parse("conformance.yaml", POLICY) {
        Ok(p) => p.document,
        Err(e) => panic!("conformance: test policy: {e:?}"),
    };
    RevisedPolicy {
        revision,
        policy: Policy::compile(&doc),
    }
}

pub(super) async fn verdicts(store: &dyn Store, run: &Run) {
    round_trip_and_filter(store, run).await;
    merged_rows_are_decided_whole(store, run, true).await;
    merged_rows_are_decided_whole(store, run, false).await;
}

async fn round_trip_and_filter(store: &dyn Store, run: &Run) {
    let t = run.flow_base() + 21 * HOUR;
    let client = workload(run, "vd", "client", "shop", &["client"]);
    let server = workload(run, "vd", "server", "shop", &["server"]);
    let batch_job = workload(run, "vd", "batch", "jobs", &["batch"]);
    let p = policy(3);
    let mut judge = Judge::new(&p);
    let mut flows = vec![
        // denied by an enforced rule
        stored(
            tcp("10.22.0.1:40000", "10.22.0.2:443", t),
            client.clone(),
            server.clone(),
        ),
        // would-deny by a watch rule
        stored(
            tcp("10.22.0.3:40000", "10.22.0.2:443", t + 1_000),
            batch_job,
            server.clone(),
        ),
        // allowed by the default
        stored(
            tcp("10.22.0.2:40000", "10.22.0.1:80", t + 2_000),
            server.clone(),
            client.clone(),
        ),
        // no decision: an unattributed end
        stored(
            tcp("10.22.0.9:40000", "10.22.0.2:443", t + 3_000),
            Endpoint::Unattributed {
                reason: UnattributedReason::NoOwner,
            },
            server.clone(),
        ),
    ];
    for f in &mut flows {
        judge.judge(f);
    }
    // Stored before verdicts existed.
    flows.push(stored(
        tcp("10.22.0.1:40001", "10.22.0.2:443", t + 4_000),
        client,
        server,
    ));
    let want_verdicts = [
        Some(Outcome::Denied),
        Some(Outcome::WouldDeny),
        Some(Outcome::Allowed),
        Some(Outcome::NoDecision),
        None,
    ];
    let got: Vec<Option<Outcome>> = flows.iter().map(|f| f.verdict).collect();
    assert_eq!(got, want_verdicts, "conformance: test flows as judged");
    assert_eq!(flows[1].verdict_mode, Some(Mode::Watch));
    let written = write(store, "verdicts", &batch(run, t, flows.clone())).await;
    let flows = with_ids(&flows, &written);
    let mut newest_first = flows.clone();
    newest_first.reverse();
    assert_eq!(
        window(store, "verdicts", t, t + HOUR / 2).await,
        newest_first,
        "conformance: every verdict, its rule, mode and policy revision read back as written"
    );
    for o in OUTCOMES {
        let q = FlowQuery {
            since_ms: t,
            until_ms: Some(t + HOUR / 2),
            verdict: Some(o),
            ..FlowQuery::default()
        };
        let listed = ok("verdict filter", store.list_flows(&q).await);
        let want: Vec<StoredFlow> = newest_first
            .iter()
            .filter(|f| f.verdict == Some(o))
            .cloned()
            .collect();
        assert_eq!(listed, want, "conformance: listing with verdict {o:?}");
    }
    let graph = ok("verdict graph", store.graph(t, Some(t + HOUR / 2)).await);
    assert_eq!(
        graph,
        summed(&buckets_of(&flows)),
        "conformance: the graph counts each verdict"
    );
    let mut total = VerdictCounts::default();
    for b in &graph {
        total.add(&b.verdicts);
    }
    assert_eq!(
        total,
        VerdictCounts {
            allowed: 1,
            denied: 1,
            would_deny: 1,
            no_decision: 1
        },
        "conformance: a flow without a verdict counts in none"
    );
    assert_eq!(
        ok(
            "verdict graph",
            store.graph_from_flows(t, Some(t + HOUR / 2)).await
        ),
        graph,
        "conformance: graph_from_flows counts verdicts as the graph does"
    );
}

/// Each end's agent knows only its end, so each report alone decides
/// nothing; merged, the flow is a client reaching a server: denied. With
/// the write's policy the merged row is decided again; without one it has
/// no verdict (neither report's fits it).
async fn merged_rows_are_decided_whole(store: &dyn Store, run: &Run, with_policy: bool) {
    let t = run.flow_base() + if with_policy { 22 } else { 23 } * HOUR;
    let what = if with_policy {
        "merge with policy"
    } else {
        "merge without policy"
    };
    let (a, b) = ("10.22.0.1:41000", "10.22.0.2:8443");
    let client = workload(run, "vm", "client", "shop", &["client"]);
    let server = workload(run, "vm", "server", "shop", &["server"]);
    let no_owner = || Endpoint::Unattributed {
        reason: UnattributedReason::NoOwner,
    };
    let report = |start: i64, node: &str, side: Side, owner: Owner| {
        let mut f = tcp(a, b, start);
        f.reporter = Reporter::Agent(node.into());
        f.local = Some(LocalSide {
            side,
            owner,
            by_port: false,
            unit: String::new(),
        });
        f
    };
    let p = Arc::new(policy(4));
    let mut judge = Judge::new(p.as_ref());
    let mut first = stored(
        report(t, "n1", Side::Source, run.owner("vclient")),
        client.clone(),
        no_owner(),
    );
    let mut second = stored(
        report(t + 3, "n2", Side::Destination, run.owner("vserver")),
        no_owner(),
        server.clone(),
    );
    judge.judge(&mut first);
    judge.judge(&mut second);
    assert_eq!(first.verdict, Some(Outcome::NoDecision));
    let mut w1 = batch(run, t, vec![first]);
    let mut w2 = batch(run, t + 10, vec![second]);
    if with_policy {
        w1.policy = Some(MergePolicy(p.clone()));
        w2.policy = Some(MergePolicy(p.clone()));
    }
    write(store, what, &w1).await;
    let graph = ok(what, store.graph(t, Some(t + HOUR / 2)).await);
    assert_eq!(graph.len(), 1);
    assert_eq!(
        graph[0].verdicts.no_decision, 1,
        "conformance: {what}: first half"
    );
    let w = write(store, what, &w2).await;
    assert_eq!(w.merged, 1, "conformance: {what}: the reports merge");
    let listed = window(store, what, t, t + HOUR / 2).await;
    assert_eq!(listed.len(), 1, "conformance: {what}: {listed:#?}");
    let f = &listed[0];
    assert_eq!((&f.src, &f.dst), (&client, &server));
    if with_policy {
        assert_eq!(
            (
                f.verdict,
                f.verdict_rule.as_deref(),
                f.verdict_mode,
                f.policy_revision
            ),
            (
                Some(Outcome::Denied),
                Some("clients-to-servers"),
                Some(Mode::Enforce),
                Some(4)
            ),
            "conformance: {what}: the merged row is decided as a whole"
        );
    } else {
        assert_eq!(
            (f.verdict, f.policy_revision),
            (None, None),
            "conformance: {what}: no verdict decided from half a flow"
        );
    }
    let graph = ok(what, store.graph(t, Some(t + HOUR / 2)).await);
    assert_eq!(
        graph,
        summed(&buckets_of(&listed)),
        "conformance: {what}: the half's verdict is taken back from the graph"
    );
    assert_eq!(
        ok(what, store.graph_from_flows(t, Some(t + HOUR / 2)).await),
        graph,
        "conformance: {what}: graph_from_flows"
    );
}
