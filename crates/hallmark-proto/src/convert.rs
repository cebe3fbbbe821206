//! Conversions between wire messages and domain types. Wire-to-domain
//! conversions validate: an entry arriving over the network passes through
//! the same constructors as one typed by an operator.

use hallmark_core::{Entry, EntryId, EntrySpec, Selector, SpiffeId};

use crate::hallmark as pb;

/// A wire entry that does not hold a valid domain entry.
#[derive(Debug, thiserror::Error)]
#[error("entry `{id}`: field `{field}`: {reason}")]
pub struct EntryConvertError {
    pub id: String,
    pub field: &'static str,
    pub reason: String,
}

impl From<&Entry> for pb::Entry {
    fn from(e: &Entry) -> Self {
        pb::Entry {
            id: e.id.to_string(),
            spiffe_id: e.spec.spiffe_id.to_string(),
            parent_id: e.spec.parent_id.to_string(),
            selectors: e.spec.selectors.iter().map(ToString::to_string).collect(),
            x509_ttl_secs: e.spec.x509_ttl_secs,
            jwt_ttl_secs: e.spec.jwt_ttl_secs,
            dns_names: e.spec.dns_names.clone(),
            hint: e.spec.hint.clone(),
            admin: e.spec.admin,
            created_at: e.created_at,
            revision: e.revision,
        }
    }
}

impl TryFrom<&pb::Entry> for Entry {
    type Error = EntryConvertError;

    fn try_from(p: &pb::Entry) -> Result<Self, Self::Error> {
        let err = |field: &'static str, reason: String| EntryConvertError {
            id: p.id.clone(),
            field,
            reason,
        };
        let id = EntryId::parse(&p.id).map_err(|e| err("id", e.to_string()))?;
        let spiffe_id = SpiffeId::new_workload(&p.spiffe_id)
            .map_err(|e| err("spiffe_id", format!("`{}` {e}", p.spiffe_id)))?;
        let parent_id = SpiffeId::new(&p.parent_id)
            .map_err(|e| err("parent_id", format!("`{}` {e}", p.parent_id)))?;
        let selectors = p
            .selectors
            .iter()
            .map(|s| Selector::new(s).map_err(|e| err("selectors", format!("`{s}` {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entry {
            id,
            spec: EntrySpec {
                spiffe_id,
                parent_id,
                selectors,
                x509_ttl_secs: p.x509_ttl_secs,
                jwt_ttl_secs: p.jwt_ttl_secs,
                dns_names: p.dns_names.clone(),
                hint: p.hint.clone(),
                admin: p.admin,
            },
            created_at: p.created_at,
            revision: p.revision,
        })
    }
}
