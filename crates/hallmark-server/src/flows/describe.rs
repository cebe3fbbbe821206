//! From an attribution to what an operator reads: an owner is described
//! from the inventory as it is when the flow is stored (name, image,
//! namespace, labels, SPIFFE IDs), so the flow keeps saying who it was
//! after the workload is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hallmark_core::TrustDomain;
use hallmark_flows::{EndAttribution, Endpoint, Flow, Owner, Side, WorkloadEndpoint};
use hallmark_store::Store;

/// How long a description is reused before the inventory is read again.
const CACHE_MS: i64 = 10_000;
/// Descriptions kept at most; the cache is cleared when it grows past it.
const CACHE_MAX: usize = 100_000;

#[derive(Clone)]
pub(crate) struct Describer {
    store: Arc<dyn Store>,
    trust_domain: TrustDomain,
    retention: Duration,
    cache: Arc<Mutex<HashMap<Owner, (Endpoint, i64)>>>,
}

impl Describer {
    pub fn new(store: Arc<dyn Store>, trust_domain: TrustDomain, retention: Duration) -> Self {
        Describer {
            store,
            trust_domain,
            retention,
            cache: Arc::default(),
        }
    }

    /// The endpoint for one end's attribution (`owner` is the attribution's
    /// owner resolved from the engine's table).
    pub async fn endpoint(
        &self,
        end: &EndAttribution,
        owner: Option<&Owner>,
        now_ms: i64,
    ) -> Endpoint {
        match end {
            EndAttribution::External(network) => Endpoint::External {
                network: network.clone(),
            },
            EndAttribution::Unattributed(reason) => Endpoint::Unattributed { reason: *reason },
            EndAttribution::Local(_) | EndAttribution::Owned(_) => match owner {
                Some(o) => self.owner(o, now_ms).await,
                // An owner the engine named is always in its table.
                None => Endpoint::Unattributed {
                    reason: hallmark_flows::UnattributedReason::NoOwner,
                },
            },
        }
    }

    /// Describes an owner, from the cache when fresh.
    pub async fn owner(&self, owner: &Owner, now_ms: i64) -> Endpoint {
        if let Ok(cache) = self.cache.lock() {
            if let Some((e, at)) = cache.get(owner) {
                if now_ms - at < CACHE_MS {
                    return e.clone();
                }
            }
        }
        let e = self.read(owner, now_ms).await;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(owner.clone(), (e.clone(), now_ms));
        }
        e
    }

    async fn read(&self, owner: &Owner, now_ms: i64) -> Endpoint {
        match owner {
            Owner::Node { context, node } => Endpoint::Node {
                context: context.clone(),
                node: node.clone(),
                spiffe_id: self
                    .trust_domain
                    .agent_id(node)
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                unit: String::new(),
            },
            Owner::Workload {
                context,
                node,
                container_id,
            } => {
                let found = self
                    .store
                    .find_workloads_by_prefix(container_id, now_ms, self.retention)
                    .await;
                let found = match found {
                    Ok(list) => list.into_iter().find(|w| {
                        &w.context_name == context
                            && w.workload.container_id == *container_id
                            && w.agent_id.agent_node() == Some(node.as_str())
                    }),
                    Err(e) => {
                        tracing::debug!(error = %e, "reading the inventory to describe a flow end failed");
                        None
                    }
                };
                match found {
                    Some(w) => Endpoint::Workload(workload_endpoint(context, node, &w.workload)),
                    None => Endpoint::bare(owner),
                }
            }
        }
    }
}

/// `end` with the unit of the host process the reporter saw at its own
/// end, when `end` describes `side` of `flow`, that side is the reporter's
/// local side and the node itself owned it.
pub(crate) fn with_local_unit(
    end: Endpoint,
    attribution: &EndAttribution,
    flow: &Flow,
    side: Side,
) -> Endpoint {
    let Some(local) = flow
        .local
        .as_ref()
        .filter(|l| l.side == side && !l.unit.is_empty())
    else {
        return end;
    };
    match (end, attribution) {
        (
            Endpoint::Node {
                context,
                node,
                spiffe_id,
                ..
            },
            EndAttribution::Local(_),
        ) => Endpoint::Node {
            context,
            node,
            spiffe_id,
            unit: local.unit.clone(),
        },
        (end, _) => end,
    }
}

/// A workload record as a flow end.
pub(crate) fn workload_endpoint(
    context: &str,
    node: &str,
    w: &hallmark_core::Workload,
) -> WorkloadEndpoint {
    let mut labels = w.labels.clone();
    let (namespace, pod) = match &w.pod {
        Some(p) => {
            labels.extend(p.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            (p.namespace.clone(), p.name.clone())
        }
        None => (String::new(), String::new()),
    };
    let (compose_project, compose_service) = match &w.compose {
        Some(c) => (c.project.clone(), c.service.clone()),
        None => (String::new(), String::new()),
    };
    let mut spiffe_ids = w.spiffe_ids.clone();
    spiffe_ids.sort();
    spiffe_ids.dedup();
    let mut selectors = w.selectors.clone();
    selectors.sort();
    selectors.dedup();
    WorkloadEndpoint {
        context: context.to_string(),
        node: node.to_string(),
        container_id: w.container_id.clone(),
        name: w.name.clone(),
        image: w.image.clone(),
        namespace,
        pod,
        compose_project,
        compose_service,
        labels,
        spiffe_ids,
        selectors,
    }
}
