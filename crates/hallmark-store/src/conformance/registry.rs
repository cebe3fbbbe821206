//! The registry part of the conformance suite: entries and the revision,
//! join tokens, agents.

use hallmark_core::{Entry, EntryId, EntrySpec};

use super::{err, list, ok, Run};
use crate::prelude::*;
use crate::{AgentRecord, EntryFilter, JoinToken, StoreError};

fn sorted_for_listing(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| {
        (a.spec.spiffe_id.as_str(), a.id.as_str()).cmp(&(b.spec.spiffe_id.as_str(), b.id.as_str()))
    });
    entries
}

fn assert_listing_order(what: &str, entries: &[Entry]) {
    for pair in entries.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            (a.spec.spiffe_id.as_str(), a.id.as_str()) < (b.spec.spiffe_id.as_str(), b.id.as_str()),
            "conformance: {what}: entries not ordered by (spiffe_id, id): {} {} before {} {}",
            a.spec.spiffe_id,
            a.id,
            b.spec.spiffe_id,
            b.id
        );
    }
}

pub(super) async fn entries_round_trip(store: &dyn Store, run: &Run) {
    let rev0 = ok("revision before creating", store.revision().await);
    let count0 = ok("count before creating", store.count_entries().await);

    let mut spec = run.spec("rt/web", "n1", &["b", "a", "b"]);
    spec.dns_names = vec!["web.example.org".into(), "*.web.example.org".into()];
    spec.hint = "web frontend".into();
    let e = ok(
        "create_entry",
        store.create_entry(&spec, 1_700_000_000).await,
    );

    assert_eq!(
        e.spec.selectors,
        vec![run.selector("a"), run.selector("b")],
        "conformance: create_entry: selectors must come back sorted and deduplicated"
    );
    let expected_spec = EntrySpec {
        selectors: e.spec.selectors.clone(),
        ..spec.clone()
    };
    assert_eq!(
        e.spec, expected_spec,
        "conformance: create_entry: returned spec differs from the input"
    );
    assert_eq!(
        e.created_at, 1_700_000_000,
        "conformance: create_entry: created_at must be `now`"
    );
    assert!(
        e.revision > rev0,
        "conformance: create_entry: entry revision {} not above {rev0}",
        e.revision
    );
    assert_eq!(
        ok("revision after create", store.revision().await),
        e.revision,
        "conformance: create_entry: entry revision must equal the bumped datastore revision"
    );
    assert_eq!(
        ok("count after create", store.count_entries().await),
        count0 + 1,
        "conformance: count_entries after one create"
    );

    let got = ok("get_entry", store.get_entry(&e.id).await);
    assert_eq!(
        got.as_ref(),
        Some(&e),
        "conformance: get_entry must return the entry as created"
    );

    // Flags and limits round-trip too.
    let mut admin = run.spec("rt/admin", "n1", &["a"]);
    admin.admin = true;
    admin.x509_ttl_secs = hallmark_core::entry::MAX_TTL_SECS;
    admin.jwt_ttl_secs = hallmark_core::entry::MIN_TTL_SECS;
    let a = ok("create admin entry", store.create_entry(&admin, 5).await);
    let got = ok("get admin entry", store.get_entry(&a.id).await);
    assert_eq!(
        got,
        Some(a.clone()),
        "conformance: admin entry must round-trip"
    );
    assert!(
        a.revision > e.revision,
        "conformance: second create must get a higher revision"
    );

    let unknown = EntryId::new_random();
    assert_eq!(
        ok("get unknown entry", store.get_entry(&unknown).await),
        None,
        "conformance: unknown entry id"
    );

    let rev = ok("revision before delete", store.revision().await);
    assert!(
        ok("delete_entry", store.delete_entry(&e.id).await),
        "conformance: delete of an existing entry must return true"
    );
    let rev_after = ok("revision after delete", store.revision().await);
    assert!(
        rev_after > rev,
        "conformance: delete_entry must bump the revision ({rev} -> {rev_after})"
    );
    assert_eq!(
        ok("get deleted", store.get_entry(&e.id).await),
        None,
        "conformance: deleted entry still readable"
    );
    assert!(
        !ok("delete twice", store.delete_entry(&e.id).await),
        "conformance: second delete must return false"
    );
    assert_eq!(
        ok("revision after no-op delete", store.revision().await),
        rev_after,
        "conformance: deleting nothing must not bump the revision"
    );
    assert!(
        !ok("delete unknown", store.delete_entry(&unknown).await),
        "conformance: delete of unknown id"
    );

    // The identity slot frees up with the delete.
    let again = ok("recreate deleted entry", store.create_entry(&spec, 7).await);
    assert_ne!(
        again.id, e.id,
        "conformance: a recreated entry must get a new id"
    );
    assert!(
        again.revision > rev_after,
        "conformance: recreate must bump the revision"
    );

    for id in [&a.id, &again.id] {
        ok("cleanup", store.delete_entry(id).await);
    }
    assert_eq!(
        ok("count after cleanup", store.count_entries().await),
        count0,
        "conformance: count_entries after deletes"
    );
}

pub(super) async fn duplicate_entries(store: &dyn Store, run: &Run) {
    let spec = run.spec("dup/web", "n1", &["a", "b"]);
    let first = ok("create first", store.create_entry(&spec, 1).await);
    let rev = ok("revision", store.revision().await);
    let count = ok("count", store.count_entries().await);

    // Same identity with the selectors in another order and other settings.
    let mut same = run.spec("dup/web", "n1", &["b", "a", "a"]);
    same.x509_ttl_secs = 60;
    same.hint = "other".into();
    let e = err(
        "create duplicate",
        store.create_entry(&same, 2).await,
        |e| matches!(e, StoreError::AlreadyExists(_)),
    );
    assert!(
        e.to_string().contains(first.id.as_str()),
        "conformance: AlreadyExists must name the existing entry {}: {e}",
        first.id
    );
    assert_eq!(
        ok("revision", store.revision().await),
        rev,
        "conformance: a refused create must not bump the revision"
    );
    assert_eq!(
        ok("count", store.count_entries().await),
        count,
        "conformance: a refused create must not store anything"
    );

    // Any one of the three parts differing makes a different entry.
    let others = [
        run.spec("dup/web", "n2", &["a", "b"]),
        run.spec("dup/web", "n1", &["a", "b", "c"]),
        run.spec("dup/web", "n1", &["a"]),
        run.spec("dup/api", "n1", &["a", "b"]),
    ];
    let mut created = vec![first];
    for other in &others {
        let what = format!(
            "create {} under {} with {} selectors",
            other.spiffe_id,
            other.parent_id,
            other.selectors.len()
        );
        created.push(ok(&what, store.create_entry(other, 3).await));
    }
    for e in created {
        ok("cleanup", store.delete_entry(&e.id).await);
    }
}

pub(super) async fn entry_filters(store: &dyn Store, run: &Run) {
    let specs = [
        run.spec("f/w1", "n1", &["a"]),
        run.spec("f/w2", "n1", &["a", "b"]),
        run.spec("f/w3", "n2", &["b"]),
        run.spec("f/w1", "n2", &["a"]),
        run.spec("f/w0", "n1", &["c"]),
    ];
    let mut created = Vec::new();
    for s in &specs {
        created.push(ok("create filter entry", store.create_entry(s, 10).await));
    }
    let pick = |pred: &dyn Fn(&Entry) -> bool| {
        sorted_for_listing(created.iter().filter(|e| pred(e)).cloned().collect())
    };
    let (n1, n2) = (run.agent("n1"), run.agent("n2"));
    let (sel_a, sel_b) = (run.selector("a"), run.selector("b"));
    let w1 = run.id("f/w1");

    let cases: Vec<(&str, EntryFilter, Vec<Entry>)> = vec![
        (
            "parent n1",
            EntryFilter {
                parent_id: Some(n1.clone()),
                ..Default::default()
            },
            pick(&|e| e.spec.parent_id == n1),
        ),
        (
            "parent n2",
            EntryFilter {
                parent_id: Some(n2.clone()),
                ..Default::default()
            },
            pick(&|e| e.spec.parent_id == n2),
        ),
        (
            "spiffe_id w1",
            EntryFilter {
                spiffe_id: Some(w1.clone()),
                ..Default::default()
            },
            pick(&|e| e.spec.spiffe_id == w1),
        ),
        (
            "selector a",
            EntryFilter {
                selector: Some(sel_a.clone()),
                ..Default::default()
            },
            pick(&|e| e.spec.selectors.contains(&sel_a)),
        ),
        (
            "selector b under n1",
            EntryFilter {
                parent_id: Some(n1.clone()),
                selector: Some(sel_b.clone()),
                ..Default::default()
            },
            pick(&|e| e.spec.parent_id == n1 && e.spec.selectors.contains(&sel_b)),
        ),
        (
            "spiffe_id w1 under n2 with selector a",
            EntryFilter {
                parent_id: Some(n2.clone()),
                spiffe_id: Some(w1.clone()),
                selector: Some(sel_a.clone()),
            },
            pick(&|e| e.spec.parent_id == n2 && e.spec.spiffe_id == w1),
        ),
        (
            "spiffe_id w3 under n1 (none)",
            EntryFilter {
                parent_id: Some(n1.clone()),
                spiffe_id: Some(run.id("f/w3")),
                ..Default::default()
            },
            Vec::new(),
        ),
        (
            "unused selector (none)",
            EntryFilter {
                selector: Some(run.selector("unused")),
                ..Default::default()
            },
            Vec::new(),
        ),
    ];
    for (name, filter, want) in cases {
        let got = list(store, name, filter).await;
        assert_eq!(got, want, "conformance: list_entries filtered by {name}");
    }
    // Sanity of the expectations themselves: each selected something real.
    assert_eq!(pick(&|e| e.spec.parent_id == n1).len(), 3);

    let all = list(store, "list all", EntryFilter::default()).await;
    assert_listing_order("list all", &all);
    let ours: Vec<Entry> = all
        .into_iter()
        .filter(|e| run.owns(&e.spec.spiffe_id) && e.spec.spiffe_id.path().contains("/f/"))
        .collect();
    assert_eq!(
        ours,
        sorted_for_listing(created.clone()),
        "conformance: unfiltered list_entries must include every entry"
    );

    // Deleting an entry takes it out of selector filtering too.
    let w2 = &created[1];
    ok("delete w2", store.delete_entry(&w2.id).await);
    let got = list(
        store,
        "selector b after delete",
        EntryFilter {
            selector: Some(sel_b.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        got,
        vec![created[2].clone()],
        "conformance: a deleted entry must not match a selector filter"
    );

    for e in created.iter().filter(|e| e.id != w2.id) {
        ok("cleanup", store.delete_entry(&e.id).await);
    }
}

pub(super) async fn revision_moves_on_every_change(store: &dyn Store, run: &Run) {
    let mut last = ok("revision", store.revision().await);
    let mut made = Vec::new();
    for i in 0..5 {
        let e = ok(
            "create",
            store
                .create_entry(&run.spec(&format!("rev/w{i}"), "n1", &["a"]), i)
                .await,
        );
        let now = ok("revision", store.revision().await);
        assert_eq!(
            now,
            last + 1,
            "conformance: one create must move the revision by one ({last} -> {now})"
        );
        assert_eq!(
            e.revision, now,
            "conformance: entry revision must be the datastore revision it created"
        );
        last = now;
        made.push(e);
    }
    // A refused create and an empty delete leave it alone.
    let _ = store
        .create_entry(&run.spec("rev/w0", "n1", &["a"]), 9)
        .await;
    ok(
        "delete unknown",
        store.delete_entry(&EntryId::new_random()).await,
    );
    assert_eq!(
        ok("revision", store.revision().await),
        last,
        "conformance: no change, no revision bump"
    );
    for e in made {
        ok("delete", store.delete_entry(&e.id).await);
        let now = ok("revision", store.revision().await);
        assert_eq!(
            now,
            last + 1,
            "conformance: one delete must move the revision by one ({last} -> {now})"
        );
        last = now;
    }
}

pub(super) async fn join_tokens(store: &dyn Store, run: &Run) {
    let agent = run.agent("joiner");
    let token = |n: u32, expires_at: i64| JoinToken {
        token_hash: run.token_hash(n),
        agent_id: agent.clone(),
        expires_at,
    };
    let used = |e: &StoreError| matches!(e, StoreError::TokenUsed);
    let expired = |e: &StoreError| matches!(e, StoreError::TokenExpired);
    let not_found = |e: &StoreError| matches!(e, StoreError::TokenNotFound);

    ok(
        "create token 1",
        store.create_join_token(&token(1, 2000)).await,
    );
    let got = ok(
        "consume token 1",
        store.consume_join_token(&run.token_hash(1), 1500).await,
    );
    assert_eq!(
        got, agent,
        "conformance: consume_join_token must return the token's agent ID"
    );
    err(
        "consume token 1 again",
        store.consume_join_token(&run.token_hash(1), 1500).await,
        used,
    );
    // Used wins over expired: it is the more useful thing to tell.
    err(
        "consume used token after expiry",
        store.consume_join_token(&run.token_hash(1), 9000).await,
        used,
    );

    err(
        "consume unknown token",
        store.consume_join_token(&run.token_hash(99), 1500).await,
        not_found,
    );

    ok(
        "create token 2",
        store.create_join_token(&token(2, 2000)).await,
    );
    err(
        "consume token 2 after expiry",
        store.consume_join_token(&run.token_hash(2), 2001).await,
        expired,
    );
    err(
        "consume token 2 after expiry again",
        store.consume_join_token(&run.token_hash(2), 2001).await,
        expired,
    );
    // Valid through its expires_at second, and the refused attempts above
    // did not mark it used.
    let got = ok(
        "consume token 2 at expires_at",
        store.consume_join_token(&run.token_hash(2), 2000).await,
    );
    assert_eq!(got, agent);

    ok(
        "create token 3",
        store.create_join_token(&token(3, 2000)).await,
    );
    err(
        "create token 3 twice",
        store.create_join_token(&token(3, 4000)).await,
        |e| matches!(e, StoreError::AlreadyExists(_)),
    );
}

pub(super) async fn pruning_join_tokens(store: &dyn Store, run: &Run) {
    let agent = run.agent("pruned");
    for (n, expires_at) in [(10, 2000), (11, 2500), (12, 5000), (13, 8000), (14, 8000)] {
        let t = JoinToken {
            token_hash: run.token_hash(n),
            agent_id: agent.clone(),
            expires_at,
        };
        ok(
            "create token for pruning",
            store.create_join_token(&t).await,
        );
    }
    ok(
        "use token 10",
        store.consume_join_token(&run.token_hash(10), 1000).await,
    );
    ok(
        "use token 13 later",
        store.consume_join_token(&run.token_hash(13), 4000).await,
    );

    // At 3000: 10 is used, 11 expired; 12 valid; 13 is used only at 4000.
    let pruned = ok("prune at 3000", store.prune_join_tokens(3000).await);
    assert!(
        pruned >= 2,
        "conformance: prune_join_tokens(3000) deleted {pruned}, expected at least tokens 10 and 11"
    );
    let consume =
        |n: u32, now: i64| async move { store.consume_join_token(&run.token_hash(n), now).await };
    err("token 10 after prune", consume(10, 1000).await, |e| {
        matches!(e, StoreError::TokenNotFound)
    });
    err("token 11 after prune", consume(11, 1000).await, |e| {
        matches!(e, StoreError::TokenNotFound)
    });
    err(
        "token 13 kept (used in the future)",
        consume(13, 3000).await,
        |e| matches!(e, StoreError::TokenUsed),
    );

    ok("prune at 4000", store.prune_join_tokens(4000).await);
    err(
        "token 13 after prune at its use time",
        consume(13, 4000).await,
        |e| matches!(e, StoreError::TokenNotFound),
    );
    let got = ok("token 12 survives pruning", consume(12, 4000).await);
    assert_eq!(got, agent);
    ok("prune at 4000 again", store.prune_join_tokens(4000).await);
    let got = ok(
        "unused unexpired token 14 survives pruning",
        consume(14, 4000).await,
    );
    assert_eq!(got, agent);
}

pub(super) async fn concurrent_token_consumers(store: &dyn Store, run: &Run) {
    let hash = run.token_hash(20);
    let t = JoinToken {
        token_hash: hash.clone(),
        agent_id: run.agent("racer"),
        expires_at: 100,
    };
    ok("create raced token", store.create_join_token(&t).await);
    let (a, b, c, d) = tokio::join!(
        store.consume_join_token(&hash, 50),
        store.consume_join_token(&hash, 50),
        store.consume_join_token(&hash, 50),
        store.consume_join_token(&hash, 50),
    );
    let results = [a, b, c, d];
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        wins, 1,
        "conformance: exactly one concurrent consumer must win: {results:?}"
    );
    for r in &results {
        match r {
            Ok(id) => assert_eq!(id, &t.agent_id),
            Err(StoreError::TokenUsed) => {}
            Err(e) => panic!("conformance: a losing consumer must get TokenUsed, got {e:?}"),
        }
    }
}

pub(super) async fn agents(store: &dyn Store, run: &Run) {
    let a = AgentRecord {
        spiffe_id: run.agent("a1"),
        serial: "01ab".into(),
        expires_at: 5000,
        attested_at: 1000,
        last_seen: 1000,
        banned: false,
    };
    let ours = |list: Vec<AgentRecord>| {
        list.into_iter()
            .filter(|r| run.owns(&r.spiffe_id))
            .collect::<Vec<_>>()
    };

    assert_eq!(
        ok("get before upsert", store.get_agent(&a.spiffe_id).await),
        None,
        "conformance: unknown agent"
    );
    ok("upsert", store.upsert_agent(&a).await);
    assert_eq!(
        ok("get", store.get_agent(&a.spiffe_id).await),
        Some(a.clone()),
        "conformance: agent round trip"
    );

    let renewed = AgentRecord {
        serial: "02cd".into(),
        expires_at: 6000,
        last_seen: 1100,
        ..a.clone()
    };
    ok("upsert again", store.upsert_agent(&renewed).await);
    assert_eq!(
        ok("get", store.get_agent(&a.spiffe_id).await),
        Some(renewed.clone()),
        "conformance: upsert must replace"
    );
    assert_eq!(
        ours(ok("list", store.list_agents().await)),
        vec![renewed.clone()],
        "conformance: one agent, listed once"
    );

    ok("touch", store.touch_agent(&a.spiffe_id, 1200).await);
    let touched = AgentRecord {
        last_seen: 1200,
        ..renewed.clone()
    };
    assert_eq!(
        ok("get", store.get_agent(&a.spiffe_id).await),
        Some(touched.clone()),
        "conformance: touch sets only last_seen"
    );
    let unknown = run.agent("nobody");
    let e = err("touch unknown", store.touch_agent(&unknown, 1).await, |e| {
        matches!(e, StoreError::NotFound(_))
    });
    assert!(
        e.to_string().contains(unknown.as_str()),
        "conformance: NotFound must name the agent: {e}"
    );

    assert!(
        ok("ban", store.set_agent_banned(&a.spiffe_id, true).await),
        "conformance: ban of a known agent"
    );
    let banned = ok("get banned", store.get_agent(&a.spiffe_id).await);
    assert_eq!(
        banned.map(|r| r.banned),
        Some(true),
        "conformance: ban must stick"
    );
    assert!(ok(
        "unban",
        store.set_agent_banned(&a.spiffe_id, false).await
    ));
    assert_eq!(
        ok("get", store.get_agent(&a.spiffe_id).await),
        Some(touched.clone()),
        "conformance: unban"
    );
    assert!(
        !ok("ban unknown", store.set_agent_banned(&unknown, true).await),
        "conformance: ban of an unknown agent"
    );
    assert_eq!(
        ok("get unknown", store.get_agent(&unknown).await),
        None,
        "conformance: banning must not create agents"
    );

    // Ordering by SPIFFE ID.
    let b = AgentRecord {
        spiffe_id: run.agent("a0"),
        ..a.clone()
    };
    ok("upsert second", store.upsert_agent(&b).await);
    let all = ok("list", store.list_agents().await);
    for pair in all.windows(2) {
        assert!(
            pair[0].spiffe_id.as_str() < pair[1].spiffe_id.as_str(),
            "conformance: list_agents not ordered by spiffe_id"
        );
    }
    assert_eq!(
        ours(all),
        vec![b.clone(), touched],
        "conformance: list_agents content"
    );

    assert!(
        ok("delete", store.delete_agent(&a.spiffe_id).await),
        "conformance: delete of a known agent"
    );
    assert_eq!(ok("get deleted", store.get_agent(&a.spiffe_id).await), None);
    assert!(
        !ok("delete twice", store.delete_agent(&a.spiffe_id).await),
        "conformance: second agent delete"
    );
    ok("cleanup", store.delete_agent(&b.spiffe_id).await);
}
