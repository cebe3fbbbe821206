//! The policy-revision part of the conformance suite.
//!
//! The store may hold revisions of earlier runs, so every number is checked
//! relative to the latest revision found at the start.

use super::{err, ok, Run};
use crate::prelude::*;
use crate::{policy_digest, NewPolicyRevision, PolicyApplied, StoreError};

fn new<'a>(document: &'a str, source: &'a str, at: i64) -> NewPolicyRevision<'a> {
    NewPolicyRevision {
        document,
        applied_at_ms: at,
        source,
        rolled_back_from: None,
        groups: 2,
        rules: 1,
        default: "allow",
    }
}

pub(super) async fn run_all(store: &dyn Store, run: &Run) {
    revisions_round_trip(store, run).await;
    concurrent_applies(store, run).await;
    enforcement_switch(store).await;
}

/// The fleet-wide enforcement switch: on until turned off, a change moves
/// the datastore revision, a no-op does not.
async fn enforcement_switch(store: &dyn Store) {
    // The store may hold an earlier run's value: start from "on".
    ok(
        "set_policy_enforcement on",
        store.set_policy_enforcement(true).await,
    );
    assert!(
        ok("policy_enforcement", store.policy_enforcement().await),
        "conformance: enforcement on"
    );
    let before = ok("revision", store.revision().await);
    assert!(
        !ok(
            "set_policy_enforcement on again",
            store.set_policy_enforcement(true).await
        ),
        "conformance: setting the value in force is no change"
    );
    assert_eq!(
        ok("revision", store.revision().await),
        before,
        "conformance: an unchanged switch leaves the datastore revision alone"
    );
    assert!(
        ok(
            "set_policy_enforcement off",
            store.set_policy_enforcement(false).await
        ),
        "conformance: turning it off is a change"
    );
    assert!(
        !ok("policy_enforcement", store.policy_enforcement().await),
        "conformance: enforcement reads off after turning it off"
    );
    let off = ok("revision", store.revision().await);
    assert!(
        off > before,
        "conformance: a switch moves the datastore revision so other servers look"
    );
    assert!(!ok(
        "set_policy_enforcement off again",
        store.set_policy_enforcement(false).await
    ));
    assert_eq!(ok("revision", store.revision().await), off);
    assert!(ok(
        "set_policy_enforcement back on",
        store.set_policy_enforcement(true).await
    ));
    assert!(ok("policy_enforcement", store.policy_enforcement().await));
    assert!(ok("revision", store.revision().await) > off);
}

async fn revisions_round_trip(store: &dyn Store, run: &Run) {
    let base = ok(
        "latest_policy_revision",
        store.latest_policy_revision().await,
    );
    let latest = ok("latest_policy", store.latest_policy().await);
    assert_eq!(
        latest.as_ref().map_or(0, |r| r.info.revision),
        base,
        "conformance: latest_policy and latest_policy_revision agree"
    );

    let doc1 = format!("# {}\ngroups: {{}}\nrules: []\ndefault: allow\n", run.tag);
    let applied = ok(
        "apply_policy",
        store.apply_policy(&new(&doc1, "cli:one.yaml", 1_000)).await,
    );
    let PolicyApplied::Applied(first) = applied else {
        panic!("conformance: a new text must make a new revision, got {applied:?}");
    };
    assert_eq!(first.info.revision, base + 1, "conformance: next revision");
    assert_eq!(first.info.digest, policy_digest(&doc1));
    assert_eq!(first.info.digest.len(), 64);
    assert_eq!(first.document, doc1);

    let revision_before = ok("revision", store.revision().await);
    let same = ok(
        "apply_policy again",
        store
            .apply_policy(&new(&doc1, "cli:again.yaml", 2_000))
            .await,
    );
    assert_eq!(
        same,
        PolicyApplied::Unchanged(first.clone()),
        "conformance: the same text again is unchanged, the stored revision returned"
    );
    assert_eq!(
        ok("revision", store.revision().await),
        revision_before,
        "conformance: an unchanged apply leaves the datastore revision alone"
    );

    let doc2 = format!("{doc1}# second\n");
    let second = ok(
        "apply_policy second",
        store
            .apply_policy(&NewPolicyRevision {
                rolled_back_from: Some(first.info.revision),
                groups: 0,
                rules: 0,
                default: "deny",
                ..new(&doc2, "rollback to 1", 3_000)
            })
            .await,
    );
    let second = second.revision().clone();
    assert_eq!(second.info.revision, base + 2);
    assert!(
        ok("revision", store.revision().await) > revision_before,
        "conformance: an apply moves the datastore revision so other servers look"
    );

    let got = ok("get_policy", store.get_policy(second.info.revision).await);
    assert_eq!(
        got, second,
        "conformance: get_policy returns what was stored"
    );
    assert_eq!(got.info.rolled_back_from, Some(first.info.revision));
    assert_eq!(got.info.default, "deny");
    assert_eq!(got.info.source, "rollback to 1");
    assert_eq!(got.info.applied_at_ms, 3_000);
    assert_eq!(
        ok(
            "get_policy first",
            store.get_policy(first.info.revision).await
        ),
        first
    );
    assert_eq!(
        ok("latest_policy", store.latest_policy().await),
        Some(second.clone())
    );
    assert_eq!(
        ok(
            "latest_policy_revision",
            store.latest_policy_revision().await
        ),
        base + 2
    );

    let missing = base + 1_000;
    let e = err(
        "get_policy of a missing revision",
        store.get_policy(missing).await,
        |e| matches!(e, StoreError::NotFound(_)),
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("policy revision {missing} does not exist"))
            && msg.contains("hallmark policy history"),
        "conformance: a missing revision's error names it and what to do: {msg}"
    );

    let history = ok("policy_history", store.policy_history(2).await);
    assert_eq!(
        history,
        vec![second.info.clone(), first.info.clone()],
        "conformance: history newest first, limited"
    );
    let all = ok("policy_history all", store.policy_history(u32::MAX).await);
    assert_eq!(
        all.len() as i64,
        base + 2,
        "conformance: history is complete"
    );
    for pair in all.windows(2) {
        assert_eq!(
            pair[0].revision,
            pair[1].revision + 1,
            "conformance: revisions are consecutive, newest first"
        );
    }
}

async fn concurrent_applies(store: &dyn Store, run: &Run) {
    let base = ok(
        "latest_policy_revision",
        store.latest_policy_revision().await,
    );
    let docs: Vec<String> = (0..6)
        .map(|i| format!("# {} concurrent {i}\ndefault: allow\n", run.tag))
        .collect();
    let applies = docs
        .iter()
        .map(|d| async move { store.apply_policy(&new(d, "cli:race.yaml", 5_000)).await });
    let results = futures_join_all(applies).await;
    let mut numbers: Vec<i64> = results
        .into_iter()
        .map(|r| match ok("concurrent apply_policy", r) {
            PolicyApplied::Applied(r) => r.info.revision,
            other => panic!("conformance: concurrent distinct texts all apply: {other:?}"),
        })
        .collect();
    numbers.sort_unstable();
    let want: Vec<i64> = (base + 1..=base + docs.len() as i64).collect();
    assert_eq!(
        numbers, want,
        "conformance: concurrent applies get distinct consecutive revisions"
    );
    for n in want {
        let r = ok("get_policy raced", store.get_policy(n).await);
        assert!(
            docs.contains(&r.document),
            "conformance: raced revision {n} holds one of the applied texts"
        );
    }
}

/// Runs every future at once on this task and collects their outputs in
/// order: concurrent enough that each store call waits on the database
/// while the others are in flight.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut handles: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (h, out) in handles.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match h.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
