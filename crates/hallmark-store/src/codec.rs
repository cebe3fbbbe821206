//! The stored form of Hallmark's types, shared by every SQL back end so they
//! agree on it.
//!
//! Reading is two steps: sqlx decodes a row into one of the plain `*Row`
//! structs (generic over the database), then `into_*` validates it into
//! domain types. Validation failures become [`StoreError::Corrupt`] naming
//! the table, the row's key and the column.

use std::collections::BTreeSet;
use std::fmt::Display;

use hallmark_core::{Entry, EntryId, EntrySpec, Selector, SpiffeId, Workload, WorkloadState};

use crate::inventory::{
    AgentInventory, RuntimeStatus, StoredWorkload, StoredWorkloadEvent, WorkloadEventKind,
};
use crate::{AgentRecord, AuthorityKind, AuthorityRecord, Result, StoreError};

/// Key of the entry revision counter in the `meta` table.
pub(crate) const ENTRY_REVISION_KEY: &str = "entry_revision";

/// Selectors in their stored order: sorted and deduplicated, so one set has
/// one stored form.
pub(crate) fn canonical_selectors(selectors: &[Selector]) -> Vec<Selector> {
    selectors
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The text the uniqueness index of entries is built on. Selectors cannot
/// contain control characters, so joining with `\n` cannot make two
/// different sets collide.
pub(crate) fn selectors_key(canonical: &[Selector]) -> String {
    canonical
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON array of strings. Goes through `serde_json::Value`, whose
/// `Display` cannot fail, unlike `serde_json::to_string`.
pub(crate) fn json_strings<T: Display>(items: &[T]) -> String {
    serde_json::Value::from(items.iter().map(ToString::to_string).collect::<Vec<_>>()).to_string()
}

/// TTLs are `u64` in the domain but SQL integers are signed. Values past
/// `i64::MAX` cannot come from a parsed entry; refuse them rather than wrap.
pub(crate) fn u64_column(field: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        StoreError::Database(sqlx::Error::Encode(
            format!(
                "{field} = {value} exceeds the largest storable integer ({})",
                i64::MAX
            )
            .into(),
        ))
    })
}

/// Turns a column decode failure (a value of the wrong SQL type, possible
/// with SQLite's dynamic typing) into [`StoreError::Corrupt`] naming the
/// table; other errors pass through.
pub(crate) fn decode_error(table: &str, e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { index, source } => {
            StoreError::Corrupt(format!("table {table}: column {index}: {source}"))
        }
        other => StoreError::Database(other),
    }
}

/// A short, non-secret label for a join token in messages.
pub(crate) fn token_label(token_hash: &str) -> String {
    let prefix: String = token_hash.chars().take(8).collect();
    format!("token_hash {prefix}...")
}

fn corrupt(table: &str, key: &str, column: &str, what: impl Display) -> StoreError {
    StoreError::Corrupt(format!("table {table}, {key}: column {column}: {what}"))
}

fn spiffe_id(table: &str, key: &str, column: &str, value: &str) -> Result<SpiffeId> {
    SpiffeId::new(value)
        .map_err(|e| corrupt(table, key, column, format_args!("SPIFFE ID `{value}` {e}")))
}

pub(crate) fn agent_id_column(table: &str, key: &str, value: &str) -> Result<SpiffeId> {
    spiffe_id(table, key, "agent_id", value)
}

fn unsigned(table: &str, key: &str, column: &str, value: i64) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| corrupt(table, key, column, format_args!("negative value {value}")))
}

fn string_array(table: &str, key: &str, column: &str, json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| {
        corrupt(
            table,
            key,
            column,
            format_args!("not a JSON array of strings: {e}"),
        )
    })
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EntryRow {
    pub id: String,
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: String,
    pub x509_ttl_secs: i64,
    pub jwt_ttl_secs: i64,
    pub dns_names: String,
    pub hint: String,
    pub admin: bool,
    pub created_at: i64,
    pub revision: i64,
    pub federates_with: String,
    pub oidc_claims: String,
}

/// Column list matching [`EntryRow`].
pub(crate) const ENTRY_COLUMNS: &str =
    "id, spiffe_id, parent_id, selectors, x509_ttl_secs, jwt_ttl_secs, dns_names, hint, admin, created_at, revision, \
     federates_with, oidc_claims";

impl EntryRow {
    pub(crate) fn into_entry(self) -> Result<Entry> {
        const T: &str = "entries";
        let key = format!("id {}", self.id);
        let id = EntryId::parse(&self.id).map_err(|e| corrupt(T, &key, "id", e))?;
        let selectors = string_array(T, &key, "selectors", &self.selectors)?
            .iter()
            .map(|s| {
                Selector::new(s)
                    .map_err(|e| corrupt(T, &key, "selectors", format_args!("selector `{s}` {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Entry {
            id,
            spec: EntrySpec {
                spiffe_id: spiffe_id(T, &key, "spiffe_id", &self.spiffe_id)?,
                parent_id: spiffe_id(T, &key, "parent_id", &self.parent_id)?,
                selectors,
                x509_ttl_secs: unsigned(T, &key, "x509_ttl_secs", self.x509_ttl_secs)?,
                jwt_ttl_secs: unsigned(T, &key, "jwt_ttl_secs", self.jwt_ttl_secs)?,
                dns_names: string_array(T, &key, "dns_names", &self.dns_names)?,
                hint: self.hint,
                admin: self.admin,
                federates_with: string_array(T, &key, "federates_with", &self.federates_with)?
                    .iter()
                    .map(|t| {
                        hallmark_core::TrustDomain::new(t).map_err(|e| {
                            corrupt(T, &key, "federates_with", format_args!("`{t}` {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
                oidc_claims: string_array(T, &key, "oidc_claims", &self.oidc_claims)?,
            },
            created_at: self.created_at,
            revision: self.revision,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AgentRow {
    pub spiffe_id: String,
    pub serial: String,
    pub expires_at: i64,
    pub attested_at: i64,
    pub last_seen: i64,
    pub banned: bool,
}

/// Column list matching [`AgentRow`].
pub(crate) const AGENT_COLUMNS: &str =
    "spiffe_id, serial, expires_at, attested_at, last_seen, banned";

impl AgentRow {
    pub(crate) fn into_agent(self) -> Result<AgentRecord> {
        let key = format!("spiffe_id {}", self.spiffe_id);
        Ok(AgentRecord {
            spiffe_id: spiffe_id("agents", &key, "spiffe_id", &self.spiffe_id)?,
            serial: self.serial,
            expires_at: self.expires_at,
            attested_at: self.attested_at,
            last_seen: self.last_seen,
            banned: self.banned,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AuthorityRow {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub alg: String,
    pub key_pkcs8: Vec<u8>,
    pub cert_der: Vec<u8>,
    pub created_at: i64,
    pub not_after: i64,
}

/// Column list matching [`AuthorityRow`].
pub(crate) const AUTHORITY_COLUMNS: &str =
    "id, kind, state, alg, key_pkcs8, cert_der, created_at, not_after";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChainRow {
    pub authority_id: String,
    pub position: i64,
    pub cert_der: Vec<u8>,
}

impl AuthorityRow {
    /// `chain` holds this authority's chain rows ordered by position.
    pub(crate) fn into_authority(self, chain: Vec<ChainRow>) -> Result<AuthorityRecord> {
        let key = format!("id {}", self.id);
        let kind = AuthorityKind::from_name(&self.kind).ok_or_else(|| {
            corrupt(
                "authorities",
                &key,
                "kind",
                format_args!("unknown kind `{}` (x509 or jwt)", self.kind),
            )
        })?;
        let mut chain_der = Vec::with_capacity(chain.len());
        for (expected, link) in chain.into_iter().enumerate() {
            // A gap would silently shorten the chain a verifier builds.
            if usize::try_from(link.position).ok() != Some(expected) {
                return Err(corrupt(
                    "authority_chain",
                    &format!("authority_id {}", link.authority_id),
                    "position",
                    format_args!("found {} where {expected} was expected", link.position),
                ));
            }
            chain_der.push(link.cert_der);
        }
        Ok(AuthorityRecord {
            id: self.id,
            kind,
            state: self.state,
            alg: self.alg,
            key_pkcs8: self.key_pkcs8,
            cert_der: self.cert_der,
            chain_der,
            created_at: self.created_at,
            not_after: self.not_after,
        })
    }
}

/// The stored text of a workload record: its serde JSON form.
pub(crate) fn workload_json(w: &Workload) -> Result<String> {
    // Serializing a struct of strings, maps with string keys and numbers
    // cannot fail; the error path exists only because the API has one.
    serde_json::to_string(w).map_err(|e| {
        StoreError::Database(sqlx::Error::Encode(
            format!("workload record {}: {e}", w.container_id).into(),
        ))
    })
}

/// The state column: `stopped` exactly when the row is stopped.
pub(crate) fn state_column(w: &Workload, stopped: bool) -> &'static str {
    if stopped {
        WorkloadState::Stopped.as_str()
    } else {
        w.state.as_str()
    }
}

/// The namespace column: the pod's, or empty.
pub(crate) fn namespace_column(w: &Workload) -> &str {
    w.pod.as_ref().map_or("", |p| p.namespace.as_str())
}

/// Snapshot IDs are `u64` on the wire and compared only for equality, so
/// they are stored as the `i64` with the same bits.
pub(crate) fn snapshot_column(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

/// Counters from agents are `u64`; past `i64::MAX` they are stored
/// saturated, which no real count reaches.
pub(crate) fn counter_column(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn workload_record(table: &str, key: &str, container_id: &str, json: &str) -> Result<Workload> {
    let w: Workload = serde_json::from_str(json).map_err(|e| {
        corrupt(
            table,
            key,
            "record",
            format_args!("not a workload record: {e}"),
        )
    })?;
    if w.container_id != container_id {
        return Err(corrupt(
            table,
            key,
            "record",
            format_args!("holds container {} instead", w.container_id),
        ));
    }
    Ok(w)
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WorkloadRow {
    pub context_name: String,
    pub agent_id: String,
    pub container_id: String,
    pub record: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub stopped_at_ms: Option<i64>,
}

/// Column list matching [`WorkloadRow`].
pub(crate) const WORKLOAD_COLUMNS: &str =
    "context_name, agent_id, container_id, record, first_seen_ms, last_seen_ms, stopped_at_ms";

impl WorkloadRow {
    pub(crate) fn into_workload(self) -> Result<StoredWorkload> {
        const T: &str = "workloads";
        let key = format!(
            "context_name {}, agent_id {}, container_id {}",
            self.context_name, self.agent_id, self.container_id
        );
        let mut workload = workload_record(T, &key, &self.container_id, &self.record)?;
        if self.stopped_at_ms.is_some() {
            workload.state = WorkloadState::Stopped;
        }
        Ok(StoredWorkload {
            agent_id: spiffe_id(T, &key, "agent_id", &self.agent_id)?,
            context_name: self.context_name,
            workload,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            stopped_at_ms: self.stopped_at_ms,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WorkloadEventRow {
    pub id: i64,
    pub context_name: String,
    pub agent_id: String,
    pub container_id: String,
    pub kind: String,
    pub at_ms: i64,
    pub received_ms: i64,
    pub record: String,
}

/// Column list matching [`WorkloadEventRow`].
pub(crate) const WORKLOAD_EVENT_COLUMNS: &str =
    "id, context_name, agent_id, container_id, kind, at_ms, received_ms, record";

impl WorkloadEventRow {
    pub(crate) fn into_event(self) -> Result<StoredWorkloadEvent> {
        const T: &str = "workload_events";
        let key = format!("id {}", self.id);
        let kind = WorkloadEventKind::parse(&self.kind).ok_or_else(|| {
            corrupt(
                T,
                &key,
                "kind",
                format_args!("unknown kind `{}` (started, updated or stopped)", self.kind),
            )
        })?;
        Ok(StoredWorkloadEvent {
            agent_id: spiffe_id(T, &key, "agent_id", &self.agent_id)?,
            workload: workload_record(T, &key, &self.container_id, &self.record)?,
            context_name: self.context_name,
            kind,
            at_ms: self.at_ms,
            received_ms: self.received_ms,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AgentInventoryRow {
    pub agent_id: String,
    pub context_name: String,
    pub runtime: String,
    pub endpoint: String,
    pub version: String,
    pub degraded: bool,
    pub reason: String,
    pub dropped_events: i64,
    pub reported_at_ms: i64,
}

/// Column list matching [`AgentInventoryRow`].
pub(crate) const AGENT_INVENTORY_COLUMNS: &str =
    "agent_id, context_name, runtime, endpoint, version, degraded, reason, dropped_events, reported_at_ms";

impl AgentInventoryRow {
    pub(crate) fn into_inventory(self) -> Result<AgentInventory> {
        const T: &str = "agent_inventory";
        let key = format!("agent_id {}", self.agent_id);
        Ok(AgentInventory {
            agent_id: spiffe_id(T, &key, "agent_id", &self.agent_id)?,
            dropped_events: unsigned(T, &key, "dropped_events", self.dropped_events)?,
            context_name: self.context_name,
            runtime: RuntimeStatus {
                runtime: self.runtime,
                endpoint: self.endpoint,
                version: self.version,
                degraded: self.degraded,
                reason: self.reason,
            },
            reported_at_ms: self.reported_at_ms,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    fn entry_row() -> EntryRow {
        EntryRow {
            id: "7f3c2a4e-1b2c-4d5e-8f90-123456789abc".into(),
            spiffe_id: "spiffe://example.org/web".into(),
            parent_id: "spiffe://example.org/hallmark/agent/n1".into(),
            selectors: r#"["unix:gid:5","unix:uid:1000"]"#.into(),
            x509_ttl_secs: 3600,
            jwt_ttl_secs: 300,
            dns_names: r#"["web.example.org"]"#.into(),
            hint: "web".into(),
            admin: false,
            created_at: 10,
            revision: 3,
            federates_with: r#"["partner.example"]"#.into(),
            oidc_claims: r#"["namespace"]"#.into(),
        }
    }

    #[test]
    fn valid_entry_row_parses() {
        let e = entry_row().into_entry().unwrap();
        assert_eq!(e.id.as_str(), "7f3c2a4e-1b2c-4d5e-8f90-123456789abc");
        assert_eq!(e.spec.selectors.len(), 2);
        assert_eq!(e.spec.dns_names, vec!["web.example.org".to_string()]);
        assert_eq!((e.created_at, e.revision), (10, 3));
    }

    #[test]
    fn corrupt_entry_rows_name_table_key_and_column() {
        type Mutate = fn(&mut EntryRow);
        let cases: &[(&str, Mutate, &str, &str)] = &[
            ("bad id", |r| r.id = "nope".into(), "column id", "nope"),
            (
                "bad spiffe_id",
                |r| r.spiffe_id = "http://x/y".into(),
                "column spiffe_id",
                "http://x/y",
            ),
            (
                "bad parent_id",
                |r| r.parent_id = "spiffe://x/a/".into(),
                "column parent_id",
                "end with `/`",
            ),
            (
                "selectors not JSON",
                |r| r.selectors = "unix:uid:1".into(),
                "column selectors",
                "JSON array",
            ),
            (
                "selectors not strings",
                |r| r.selectors = "[1]".into(),
                "column selectors",
                "JSON array",
            ),
            (
                "bad selector",
                |r| r.selectors = r#"["unix:uid:x"]"#.into(),
                "column selectors",
                "unix:uid:x",
            ),
            (
                "negative ttl",
                |r| r.x509_ttl_secs = -1,
                "column x509_ttl_secs",
                "negative value -1",
            ),
            (
                "negative jwt ttl",
                |r| r.jwt_ttl_secs = -5,
                "column jwt_ttl_secs",
                "-5",
            ),
            (
                "dns not JSON",
                |r| r.dns_names = "{".into(),
                "column dns_names",
                "JSON array",
            ),
        ];
        for (name, mutate, column, detail) in cases {
            let mut row = entry_row();
            mutate(&mut row);
            let err = row.into_entry().unwrap_err();
            assert!(matches!(err, StoreError::Corrupt(_)), "{name}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains("table entries"), "{name}: {msg}");
            assert!(msg.contains("id "), "{name}: {msg}");
            assert!(msg.contains(column), "{name}: {msg}");
            assert!(msg.contains(detail), "{name}: {msg}");
        }
    }

    #[test]
    fn corrupt_agent_and_authority_rows() {
        let agent = AgentRow {
            spiffe_id: "spiffe://Bad/x".into(),
            serial: "01".into(),
            expires_at: 0,
            attested_at: 0,
            last_seen: 0,
            banned: false,
        };
        let msg = agent.into_agent().unwrap_err().to_string();
        assert!(
            msg.contains("table agents, spiffe_id spiffe://Bad/x: column spiffe_id"),
            "{msg}"
        );

        let auth = |kind: &str| AuthorityRow {
            id: "ca1".into(),
            kind: kind.into(),
            state: "active".into(),
            alg: "ec-p256".into(),
            key_pkcs8: vec![1],
            cert_der: vec![2],
            created_at: 0,
            not_after: 0,
        };
        let msg = auth("rsa").into_authority(vec![]).unwrap_err().to_string();
        assert!(
            msg.contains("table authorities, id ca1: column kind: unknown kind `rsa`"),
            "{msg}"
        );

        let link = |position| ChainRow {
            authority_id: "ca1".into(),
            position,
            cert_der: vec![9],
        };
        let ok = auth("x509").into_authority(vec![link(0), link(1)]).unwrap();
        assert_eq!(ok.chain_der, vec![vec![9], vec![9]]);
        let msg = auth("x509")
            .into_authority(vec![link(0), link(2)])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(
                "table authority_chain, authority_id ca1: column position: found 2 where 1"
            ),
            "{msg}"
        );
    }

    #[test]
    fn selector_sets_have_one_stored_form() {
        let s = |t: &str| Selector::new(t).unwrap();
        let a = canonical_selectors(&[s("unix:uid:1"), s("docker:label:a:b"), s("unix:uid:1")]);
        let b = canonical_selectors(&[s("docker:label:a:b"), s("unix:uid:1")]);
        assert_eq!(a, b);
        assert_eq!(selectors_key(&a), "docker:label:a:b\nunix:uid:1");
        assert_eq!(json_strings(&a), r#"["docker:label:a:b","unix:uid:1"]"#);
    }

    #[test]
    fn ttls_beyond_i64_are_refused() {
        assert_eq!(u64_column("x509_ttl_secs", 60).unwrap(), 60);
        let msg = u64_column("x509_ttl_secs", u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("x509_ttl_secs") && msg.contains("exceeds"),
            "{msg}"
        );
    }

    #[test]
    fn corrupt_inventory_rows_name_table_key_and_column() {
        let good = Workload::partial("c1", hallmark_core::RuntimeSource::Docker, "r");
        let json = workload_json(&good).unwrap();
        let row = |container_id: &str, record: &str, agent_id: &str| WorkloadRow {
            context_name: "prod".into(),
            agent_id: agent_id.into(),
            container_id: container_id.into(),
            record: record.into(),
            first_seen_ms: 1,
            last_seen_ms: 2,
            stopped_at_ms: Some(3),
        };
        let agent = "spiffe://example.org/hallmark/agent/n1";
        let ok = row("c1", &json, agent).into_workload().unwrap();
        assert_eq!(
            ok.workload.state,
            WorkloadState::Stopped,
            "a stopped row reads as stopped"
        );
        let cases: Vec<(WorkloadRow, &str)> = vec![
            (
                row("c1", "{", agent),
                "column record: not a workload record",
            ),
            (
                row("c2", &json, agent),
                "column record: holds container c1 instead",
            ),
            (row("c1", &json, "spiffe://x/"), "column agent_id"),
        ];
        for (r, want) in cases {
            let msg = r.into_workload().unwrap_err().to_string();
            assert!(msg.contains("table workloads, context_name prod"), "{msg}");
            assert!(msg.contains(want), "want `{want}` in {msg}");
        }

        let event = WorkloadEventRow {
            id: 7,
            context_name: "prod".into(),
            agent_id: agent.into(),
            container_id: "c1".into(),
            kind: "exploded".into(),
            at_ms: 1,
            received_ms: 1,
            record: json.clone(),
        };
        let msg = event.into_event().unwrap_err().to_string();
        assert!(
            msg.contains("table workload_events, id 7: column kind: unknown kind `exploded`"),
            "{msg}"
        );

        let inv = AgentInventoryRow {
            agent_id: agent.into(),
            context_name: "prod".into(),
            runtime: "docker".into(),
            endpoint: String::new(),
            version: String::new(),
            degraded: false,
            reason: String::new(),
            dropped_events: -1,
            reported_at_ms: 0,
        };
        let msg = inv.into_inventory().unwrap_err().to_string();
        assert!(
            msg.contains("table agent_inventory, agent_id spiffe://example.org/hallmark/agent/n1: column dropped_events: negative value -1"),
            "{msg}"
        );
    }

    #[test]
    fn snapshot_ids_keep_their_bits() {
        for id in [1u64, 42, u64::MAX, 1 << 63] {
            let stored = snapshot_column(id);
            assert_eq!(u64::from_ne_bytes(stored.to_ne_bytes()), id);
        }
        assert_eq!(counter_column(5), 5);
        assert_eq!(counter_column(u64::MAX), i64::MAX);
    }

    #[test]
    fn token_label_does_not_reveal_the_hash() {
        let h = "a".repeat(64);
        let label = token_label(&h);
        assert_eq!(label, "token_hash aaaaaaaa...");
    }
}
