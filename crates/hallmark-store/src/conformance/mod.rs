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

use hallmark_core::{Entry, EntryId, EntrySpec, Selector, SpiffeId};

use crate::prelude::*;
use crate::{EntryFilter, Result, StoreError};

mod authority;
mod federation;
mod flows;
mod inventory;
mod policy;
mod registry;

/// Runs every check against `store`; panics with a message naming the check
/// and what differed on the first failure.
pub async fn run_all(store: &dyn Store) {
    let run = Run::new();
    registry::entries_round_trip(store, &run).await;
    registry::duplicate_entries(store, &run).await;
    registry::entry_filters(store, &run).await;
    registry::revision_moves_on_every_change(store, &run).await;
    registry::join_tokens(store, &run).await;
    registry::pruning_join_tokens(store, &run).await;
    registry::concurrent_token_consumers(store, &run).await;
    registry::agents(store, &run).await;
    authority::authorities(store, &run).await;
    federation::entry_federation_fields(store, &run).await;
    federation::federations(store, &run).await;
    inventory::run_all(store, &run).await;
    flows::run_all(store, &run).await;
    policy::run_all(store, &run).await;
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

async fn list(store: &dyn Store, what: &str, filter: EntryFilter) -> Vec<Entry> {
    ok(what, store.list_entries(&filter).await)
}
