//! The flow queries of the admin API, in the JSON documents of
//! `hallmark_flows::api`: the same answers for the CLI and the console.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use hallmark_flows::api::{
    FlowStatsAnswer, GraphAnswer, GraphRequest, WhoisAnswer, WhoisEvidence, WhoisRange,
    WhoisRequest, WhoisVerdict,
};
use hallmark_flows::{edges_of, Endpoint, FlowQuery, Lookup, OwnershipKey, StoredFlow};
use hallmark_store::Store;

use super::describe::Describer;
use super::FlowEngine;

/// Default and largest `flows list` page.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
/// How far around the instant `whois` shows evidence.
const WHOIS_WINDOW_MS: i64 = 5 * 60_000;
const WHOIS_MAX_EVIDENCE: usize = 200;

/// Why a query cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("reading flows from the datastore: {0}")]
    Store(#[from] hallmark_store::StoreError),
}

/// The flow queries, over the store and this server's engine.
#[derive(Clone)]
pub struct FlowQueries {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) engine: FlowEngine,
    pub(crate) describer: Describer,
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, QueryError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| QueryError::BadRequest(format!("{what} request: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

impl FlowQueries {
    /// `ListFlows`: a [`FlowQuery`] in, a JSON array of [`StoredFlow`] out.
    pub async fn list(&self, json: &str) -> Result<String, QueryError> {
        let mut q: FlowQuery = parse("ListFlows", json)?;
        if q.limit == 0 {
            q.limit = DEFAULT_LIMIT;
        }
        q.limit = q.limit.min(MAX_LIMIT);
        if let Some(u) = q.until_ms {
            if u <= q.since_ms {
                return Err(QueryError::BadRequest(format!(
                    "until ({u}) must be after since ({})",
                    q.since_ms
                )));
            }
        }
        let flows: Vec<StoredFlow> = self.store.list_flows(&q).await?;
        Ok(to_json(&flows))
    }

    /// `FlowGraph`: a [`GraphRequest`] in, a [`GraphAnswer`] out.
    pub async fn graph(&self, json: &str) -> Result<String, QueryError> {
        let r: GraphRequest = parse("FlowGraph", json)?;
        let buckets = self.store.graph(r.since_ms, r.until_ms).await?;
        let edges = edges_of(&buckets, r.by);
        Ok(to_json(&GraphAnswer {
            since_ms: r.since_ms,
            until_ms: r.until_ms,
            by: r.by,
            edges,
        }))
    }

    /// `Whois`: a [`WhoisRequest`] in, a [`WhoisAnswer`] out.
    pub async fn whois(&self, json: &str) -> Result<String, QueryError> {
        let r: WhoisRequest = parse("Whois", json)?;
        Ok(to_json(&self.whois_answer(r.ip, r.at_ms).await?))
    }

    async fn whois_answer(&self, ip: IpAddr, at_ms: i64) -> Result<WhoisAnswer, QueryError> {
        let stored = self
            .store
            .evidence_for(
                ip,
                at_ms - WHOIS_WINDOW_MS,
                at_ms + WHOIS_WINDOW_MS,
                WHOIS_MAX_EVIDENCE,
            )
            .await?;
        // Read the engine under its lock, describe afterwards.
        let (lookup, network, ranges, owners_of_lookup) = {
            let a = self
                .engine
                .attributor
                .lock()
                .map_err(|_| QueryError::BadRequest("the flow engine is unavailable".into()))?;
            let index = a.index();
            let lookup = index.lookup(ip, None, at_ms);
            let network = a.networks().name_of(ip).map(str::to_string);
            let mut keys: BTreeSet<OwnershipKey> = stored.iter().map(|e| e.key).collect();
            keys.insert(OwnershipKey::ip(ip));
            let mut ranges = Vec::new();
            for key in keys {
                for p in index.ranges(key) {
                    if p.last_ms + WHOIS_WINDOW_MS < at_ms || p.first_ms - WHOIS_WINDOW_MS > at_ms {
                        continue;
                    }
                    if let Some(owner) = index.owners().get(p.owner) {
                        ranges.push((key, owner.clone(), p));
                    }
                }
            }
            let owner = |id| index.owners().get(id).cloned();
            let owners = match lookup {
                Lookup::Owned(p) => vec![owner(p.owner)],
                Lookup::Ambiguous(a, b) => vec![owner(a.owner), owner(b.owner)],
                _ => Vec::new(),
            };
            (lookup, network, ranges, owners)
        };
        let now = super::pipeline::now_ms();
        let mut owners = Vec::new();
        for o in owners_of_lookup.into_iter().flatten() {
            owners.push(self.describer.owner(&o, now).await);
        }
        let mut out_ranges = Vec::new();
        for (key, owner, p) in ranges {
            out_ranges.push(WhoisRange {
                key,
                owner: self.describer.owner(&owner, now).await,
                first_ms: p.first_ms,
                last_ms: p.last_ms,
                started: p.started,
                stopped: p.stopped,
                points: p.points,
            });
        }
        let mut evidence = Vec::new();
        for e in stored {
            evidence.push(WhoisEvidence {
                key: e.key,
                owner: self.describer.owner(&e.owner, now).await,
                at_ms: e.at_ms,
                kind: e.kind,
            });
        }
        let (verdict, explanation) = explain(&lookup, network.as_deref(), &owners);
        Ok(WhoisAnswer {
            ip,
            at_ms,
            verdict,
            owners,
            network,
            explanation,
            ranges: out_ranges,
            evidence,
        })
    }

    /// `FlowStats`: this server's counters and what the store holds.
    pub async fn stats(&self) -> Result<String, QueryError> {
        let counts = self.store.flow_counts().await?;
        let c = &self.engine.counters;
        let mut s = FlowStatsAnswer {
            ingested: c.ingested.lock().map(|m| m.clone()).unwrap_or_default(),
            rejected: c.rejected.lock().map(|m| m.clone()).unwrap_or_default(),
            evidence: c.evidence.lock().map(|m| m.clone()).unwrap_or_default(),
            attributed: counts.attributed,
            external: counts.external,
            unattributed: counts.unattributed,
            stored_flows: counts.attributed + counts.external + counts.unattributed,
            stored_graph_rows: counts.graph_rows,
            stored_evidence: counts.evidence,
            stored_pending: counts.pending,
            ..FlowStatsAnswer::default()
        };
        if let Ok(a) = self.engine.attributor.lock() {
            let st = a.stats();
            s.unattributed_ends
                .insert("no-owner".into(), st.ends_no_owner);
            s.unattributed_ends
                .insert("ambiguous".into(), st.ends_ambiguous);
            s.unattributed_ends.insert("late".into(), st.ends_late);
            s.held = a.held() as u64;
            s.held_total = st.flows_held;
            s.ownership_ranges = a.index().range_count() as u64;
            s.ownership_addresses = a.index().ip_count() as u64;
        }
        Ok(to_json(&s))
    }
}

fn explain(lookup: &Lookup, network: Option<&str>, owners: &[Endpoint]) -> (WhoisVerdict, String) {
    let net = |s: String| match network {
        Some(n) => format!("{s}; the address is in network `{n}`"),
        None => s,
    };
    match lookup {
        Lookup::Owned(p) => (
            WhoisVerdict::Owned,
            format!(
                "held by {} from {} to {} (proven by {} observations{}{})",
                owners.first().map(ToString::to_string).unwrap_or_default(),
                rfc3339_ms(p.first_ms),
                rfc3339_ms(p.last_ms),
                p.points,
                if p.started { ", a start event" } else { "" },
                if p.stopped { ", a stop event" } else { "" },
            ),
        ),
        Lookup::Ambiguous(..) => (
            WhoisVerdict::Ambiguous,
            format!(
                "{} and {} are both proven within the clock skew of that instant: flows then are left unattributed",
                owners.first().map(ToString::to_string).unwrap_or_default(),
                owners.get(1).map(ToString::to_string).unwrap_or_default(),
            ),
        ),
        Lookup::NoOwner => (
            WhoisVerdict::NoOwner,
            net("no owner was proven at that instant, though evidence for the address continues past it".into()),
        ),
        Lookup::Pending => (
            WhoisVerdict::Pending,
            net("the evidence does not reach past that instant yet (the next heartbeat will tell)".into()),
        ),
        Lookup::Unknown => (
            WhoisVerdict::Unknown,
            net("no agent has reported this address in the window the server keeps: it is not a workload or node of this deployment, or its agent does not report".into()),
        ),
    }
}

/// A unix-millisecond time in RFC 3339 (UTC), or the number when out of range.
fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
