//! The behaviour every [`Store`] back end must show, as one suite that both
//! the SQLite tests (tests/sqlite.rs) and the PostgreSQL tests
//! (tests/postgres.rs) run.
//!
//! The suite may run on a store that already holds data: everything it
//! creates lives under a fresh random path, selector value and token hash,
//! and it only asserts about its own records (plus orderings, which must
//! hold for everything). It assumes nobody else writes to the store while it
//! runs, because it checks that the revision moves by exactly what it did.
//!
//! Orderings are bytewise; a PostgreSQL schema must declare its text columns
//! `COLLATE "C"` to pass.

use std::fmt::Debug;

use hallmark_core::{Entry, EntryId, EntrySpec, Selector, SpiffeId, TrustDomain};

use crate::{
    AgentRecord, AuthorityKind, AuthorityRecord, EntryFilter, FederationProfile, FederationRecord,
    FederationRefresh, JoinToken, Result, Store, StoreError,
};

mod inventory;

/// Runs every check against `store`; panics with a message naming the check
/// and what differed on the first failure.
pub async fn run_all(store: &dyn Store) {
    let run = Run::new();
    entries_round_trip(store, &run).await;
    duplicate_entries(store, &run).await;
    entry_filters(store, &run).await;
    revision_moves_on_every_change(store, &run).await;
    join_tokens(store, &run).await;
    pruning_join_tokens(store, &run).await;
    concurrent_token_consumers(store, &run).await;
    agents(store, &run).await;
    authorities(store, &run).await;
    entry_federation_fields(store, &run).await;
    federations(store, &run).await;
    inventory::run_all(store, &run).await;
}

/// Names unique to one run of the suite.
struct Run {
    /// A random UUID, used as a path segment, selector value and hash seed.
    tag: String,
}

impl Run {
    fn new() -> Self {
        Run {
            tag: EntryId::new_random().to_string(),
        }
    }

    fn id(&self, name: &str) -> SpiffeId {
        let text = format!("spiffe://conformance.example/{}/{name}", self.tag);
        match SpiffeId::new(&text) {
            Ok(id) => id,
            Err(e) => panic!("conformance: test SPIFFE ID `{text}` {e}"),
        }
    }

    fn agent(&self, node: &str) -> SpiffeId {
        self.id(&format!("hallmark/agent/{node}"))
    }

    /// A selector no other run uses.
    fn selector(&self, name: &str) -> Selector {
        let text = format!("hallmark:context:{}-{name}", self.tag);
        match Selector::new(&text) {
            Ok(s) => s,
            Err(e) => panic!("conformance: test selector `{text}` {e}"),
        }
    }

    /// A 64-hex-digit token hash no other run uses.
    fn token_hash(&self, n: u32) -> String {
        format!("{}{n:032x}", self.tag.replace('-', ""))
    }

    fn spec(&self, name: &str, node: &str, selectors: &[&str]) -> EntrySpec {
        EntrySpec {
            spiffe_id: self.id(name),
            parent_id: self.agent(node),
            selectors: selectors.iter().map(|s| self.selector(s)).collect(),
            x509_ttl_secs: 3600,
            jwt_ttl_secs: 300,
            dns_names: Vec::new(),
            hint: String::new(),
            admin: false,
            federates_with: Vec::new(),
            oidc_claims: Vec::new(),
        }
    }

    /// Whether a record belongs to this run.
    fn owns(&self, id: &SpiffeId) -> bool {
        id.path().contains(&self.tag)
    }
}

/// An entry for `spiffe://example.org/<name>` under the agent of node
/// `node1` with `selectors`, a DNS name and a hint from `name`: the fixture
/// the back ends' own tests share. Panics on an invalid name or selector.
pub fn example_spec(name: &str, selectors: &[&str]) -> EntrySpec {
    let id = |text: String| match SpiffeId::new(&text) {
        Ok(id) => id,
        Err(e) => panic!("example SPIFFE ID `{text}` {e}"),
    };
    EntrySpec {
        spiffe_id: id(format!("spiffe://example.org/{name}")),
        parent_id: id("spiffe://example.org/hallmark/agent/node1".into()),
        selectors: selectors
            .iter()
            .map(|s| match Selector::new(s) {
                Ok(s) => s,
                Err(e) => panic!("example selector `{s}` {e}"),
            })
            .collect(),
        x509_ttl_secs: 3600,
        jwt_ttl_secs: 300,
        dns_names: vec![format!("{name}.example.org")],
        hint: name.to_string(),
        admin: false,
        federates_with: Vec::new(),
        oidc_claims: Vec::new(),
    }
}

/// Unwraps a store result, panicking with what was being done.
fn ok<T>(what: &str, r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("conformance: {what}: unexpected error: {e}"),
    }
}

/// Expects a store error matching `want`, panicking with what was being done.
fn err<T: Debug>(what: &str, r: Result<T>, want: fn(&StoreError) -> bool) -> StoreError {
    match r {
        Err(e) if want(&e) => e,
        Err(e) => panic!("conformance: {what}: wrong error: {e:?}"),
        Ok(v) => panic!("conformance: {what}: expected an error, got Ok({v:?})"),
    }
}

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

async fn list(store: &dyn Store, what: &str, filter: EntryFilter) -> Vec<Entry> {
    ok(what, store.list_entries(&filter).await)
}

async fn entries_round_trip(store: &dyn Store, run: &Run) {
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

async fn duplicate_entries(store: &dyn Store, run: &Run) {
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

async fn entry_filters(store: &dyn Store, run: &Run) {
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

async fn revision_moves_on_every_change(store: &dyn Store, run: &Run) {
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

async fn join_tokens(store: &dyn Store, run: &Run) {
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

async fn pruning_join_tokens(store: &dyn Store, run: &Run) {
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

async fn concurrent_token_consumers(store: &dyn Store, run: &Run) {
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

async fn agents(store: &dyn Store, run: &Run) {
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

async fn authorities(store: &dyn Store, run: &Run) {
    let x1 = AuthorityRecord {
        id: format!("{}-x-a-newer", run.tag),
        kind: AuthorityKind::X509,
        state: "active".into(),
        alg: "ec-p256".into(),
        key_pkcs8: vec![0x30, 0x00, 0xff, 0x00, 0x01],
        cert_der: vec![0x30, 0x82, 0x00, 0x00, 0xff],
        chain_der: vec![vec![0x30, 0x01], vec![0x30, 0x02, 0x00]],
        created_at: 100,
        not_after: 10_000,
    };
    let x0 = AuthorityRecord {
        id: format!("{}-x-z-older", run.tag),
        state: "retired".into(),
        chain_der: Vec::new(),
        // Older but sorting after x1 by id, so the order shows which key
        // the listing used.
        created_at: 50,
        ..x1.clone()
    };
    let j1 = AuthorityRecord {
        id: format!("{}-j1", run.tag),
        kind: AuthorityKind::Jwt,
        state: "active".into(),
        alg: "RS256".into(),
        key_pkcs8: vec![7; 1200],
        cert_der: Vec::new(),
        chain_der: Vec::new(),
        created_at: 75,
        not_after: i64::MAX,
    };
    for a in [&x1, &x0, &j1] {
        ok("put_authority", store.put_authority(a).await);
    }
    let ours = |list: Vec<AuthorityRecord>| {
        list.into_iter()
            .filter(|a| a.id.starts_with(&run.tag))
            .collect::<Vec<_>>()
    };

    let x509 = ok(
        "list x509",
        store.list_authorities(AuthorityKind::X509).await,
    );
    for pair in x509.windows(2) {
        assert!(
            (pair[0].created_at, &pair[0].id) <= (pair[1].created_at, &pair[1].id),
            "conformance: list_authorities not ordered by created_at"
        );
    }
    assert_eq!(
        ours(x509),
        vec![x0.clone(), x1.clone()],
        "conformance: X.509 authorities, oldest first, bytes intact"
    );
    let jwt = ok("list jwt", store.list_authorities(AuthorityKind::Jwt).await);
    assert_eq!(
        ours(jwt),
        vec![j1.clone()],
        "conformance: JWT authorities only"
    );

    // Replacing keeps one record and replaces the chain wholesale.
    let retired = AuthorityRecord {
        state: "retired".into(),
        chain_der: vec![vec![0x30, 0x09]],
        not_after: 20_000,
        ..x1.clone()
    };
    ok("put again", store.put_authority(&retired).await);
    let x509 = ours(ok(
        "list x509",
        store.list_authorities(AuthorityKind::X509).await,
    ));
    assert_eq!(
        x509,
        vec![x0.clone(), retired.clone()],
        "conformance: put_authority must replace by id, chain included"
    );

    let chainless = AuthorityRecord {
        chain_der: Vec::new(),
        ..retired
    };
    ok("put without chain", store.put_authority(&chainless).await);
    let x509 = ours(ok(
        "list x509",
        store.list_authorities(AuthorityKind::X509).await,
    ));
    assert_eq!(
        x509,
        vec![x0, chainless],
        "conformance: an emptied chain must come back empty"
    );
}

fn trust_domain(name: &str) -> TrustDomain {
    match TrustDomain::new(name) {
        Ok(td) => td,
        Err(e) => panic!("conformance: test trust domain `{name}` {e}"),
    }
}

async fn entry_federation_fields(store: &dyn Store, run: &Run) {
    let mut spec = run.spec("fed/web", "n1", &["fed"]);
    spec.federates_with = vec![trust_domain("alpha.example"), trust_domain("beta.example")];
    spec.oidc_claims = vec!["context".into(), "node".into()];
    let e = ok(
        "create federating entry",
        store.create_entry(&spec, 7).await,
    );
    assert_eq!(
        (&e.spec.federates_with, &e.spec.oidc_claims),
        (&spec.federates_with, &spec.oidc_claims),
        "conformance: create_entry must return federates_with and oidc_claims"
    );
    let got = ok("get federating entry", store.get_entry(&e.id).await);
    assert_eq!(
        got.as_ref(),
        Some(&e),
        "conformance: get_entry must return federates_with and oidc_claims"
    );
    let listed = list(
        store,
        "list federating entry",
        EntryFilter {
            spiffe_id: Some(spec.spiffe_id.clone()),
            ..EntryFilter::default()
        },
    )
    .await;
    assert_eq!(
        listed,
        vec![e.clone()],
        "conformance: list_entries must return federates_with and oidc_claims"
    );
    ok("cleanup", store.delete_entry(&e.id).await);
}

async fn federations(store: &dyn Store, run: &Run) {
    // Trust domain names allow only lowercase letters, digits, `-`, `.`
    // and `_`: the run tag (a UUID) qualifies.
    let td = |label: &str| trust_domain(&format!("{label}.{}.conformance.example", run.tag));
    let ours = |list: Vec<FederationRecord>| {
        list.into_iter()
            .filter(|f| f.trust_domain.name().contains(&run.tag))
            .collect::<Vec<_>>()
    };
    let spiffe = FederationRecord {
        trust_domain: td("b"),
        bundle_endpoint_url: "https://b.example:8443/".into(),
        profile: FederationProfile::HttpsSpiffe,
        endpoint_spiffe_id: format!("spiffe://{}/hallmark/server", td("b")),
        web_ca_pem: Vec::new(),
        bundle: br#"{"keys":[],"spiffe_sequence":3}"#.to_vec(),
        bundle_sequence: 3,
        created_at: 100,
        last_refresh: 0,
        next_refresh: 100,
        last_error: String::new(),
    };
    let web = FederationRecord {
        trust_domain: td("a"),
        bundle_endpoint_url: "https://a.example/bundle".into(),
        profile: FederationProfile::HttpsWeb,
        endpoint_spiffe_id: String::new(),
        web_ca_pem: b"-----BEGIN CERTIFICATE-----\n...".to_vec(),
        bundle: Vec::new(),
        bundle_sequence: 0,
        created_at: 101,
        last_refresh: 0,
        next_refresh: 101,
        last_error: "not fetched yet".into(),
    };
    assert_eq!(
        ok(
            "get before put",
            store.get_federation(&spiffe.trust_domain).await
        ),
        None,
        "conformance: get_federation of an unknown trust domain"
    );
    ok("put_federation", store.put_federation(&spiffe).await);
    ok("put_federation", store.put_federation(&web).await);
    assert_eq!(
        ok(
            "get_federation",
            store.get_federation(&spiffe.trust_domain).await
        ),
        Some(spiffe.clone()),
        "conformance: get_federation must return the record as put, bytes intact"
    );
    let all = ok("list_federations", store.list_federations().await);
    for pair in all.windows(2) {
        assert!(
            pair[0].trust_domain.name() < pair[1].trust_domain.name(),
            "conformance: list_federations not ordered by trust domain"
        );
    }
    assert_eq!(
        ours(all),
        vec![web.clone(), spiffe.clone()],
        "conformance: list_federations returns every relationship by name"
    );

    // An operator edit replaces every field.
    let edited = FederationRecord {
        bundle_endpoint_url: "https://b2.example/".into(),
        ..spiffe.clone()
    };
    ok("put again", store.put_federation(&edited).await);
    // A refresh then writes its outcome without undoing the edit.
    let fetched = FederationRefresh::Fetched {
        bundle: br#"{"keys":[],"spiffe_sequence":4}"#.to_vec(),
        sequence: 4,
        at: 200,
        next_refresh: 500,
    };
    assert!(
        ok(
            "record fetched",
            store
                .record_federation_refresh(&edited.trust_domain, &fetched)
                .await
        ),
        "conformance: record_federation_refresh of a known relationship must say true"
    );
    let after_fetch = FederationRecord {
        bundle: br#"{"keys":[],"spiffe_sequence":4}"#.to_vec(),
        bundle_sequence: 4,
        last_refresh: 200,
        next_refresh: 500,
        ..edited.clone()
    };
    assert_eq!(
        ok("get after fetch", store.get_federation(&edited.trust_domain).await),
        Some(after_fetch.clone()),
        "conformance: a fetch replaces bundle, sequence and times only, and keeps the edited endpoint"
    );
    let failed = FederationRefresh::Failed {
        error: "connection refused".into(),
        next_refresh: 510,
    };
    ok(
        "record failure",
        store
            .record_federation_refresh(&edited.trust_domain, &failed)
            .await,
    );
    assert_eq!(
        ok(
            "get after failure",
            store.get_federation(&edited.trust_domain).await
        ),
        Some(FederationRecord {
            last_error: "connection refused".into(),
            next_refresh: 510,
            ..after_fetch.clone()
        }),
        "conformance: a failed fetch keeps the bundle and last_refresh"
    );
    ok(
        "record fetched after failure",
        store
            .record_federation_refresh(&edited.trust_domain, &fetched)
            .await,
    );
    assert_eq!(
        ok(
            "get after recovery",
            store.get_federation(&edited.trust_domain).await
        ),
        Some(after_fetch),
        "conformance: a successful fetch clears last_error"
    );

    assert!(
        ok(
            "delete",
            store.delete_federation(&spiffe.trust_domain).await
        ),
        "conformance: delete_federation of a known relationship must say true"
    );
    assert!(
        !ok(
            "delete again",
            store.delete_federation(&spiffe.trust_domain).await
        ),
        "conformance: delete_federation of an unknown relationship must say false"
    );
    assert!(
        !ok(
            "refresh after delete",
            store
                .record_federation_refresh(&spiffe.trust_domain, &failed)
                .await
        ),
        "conformance: record_federation_refresh must not recreate a deleted relationship"
    );
    assert_eq!(
        ok(
            "get after delete",
            store.get_federation(&spiffe.trust_domain).await
        ),
        None,
        "conformance: a deleted relationship is gone"
    );
    ok("cleanup", store.delete_federation(&web.trust_domain).await);
}
