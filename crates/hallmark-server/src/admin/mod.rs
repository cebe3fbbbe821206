//! The admin API, served on a local Unix socket that only the server's user
//! can open (and, for admin SVIDs, over mTLS: [`mtls`]). Every request's
//! input is validated into domain types here and refused with
//! InvalidArgument naming the input and the rule; the engines' errors are
//! mapped to statuses here too. Federation and authority calls have their
//! own modules.

mod authority;
mod federation;
pub(crate) mod mtls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hallmark_core::time::{unix_millis, unix_secs};
use hallmark_core::{EntryId, EntrySpec, RawEntrySpec, Selector, SpiffeId};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_server::Admin;
use hallmark_store::{EntryFilter, JoinToken, StoreError};
use rand::RngCore;
use tonic::{Request, Response, Status};

use crate::inventory::{
    also_reported_by, event_to_pb, parse_filter, pick_workload, runtime_to_pb, stored_to_pb,
    validate_container_prefix, QueryError, ALSO_REPORTED_BY_HEADER,
};
use crate::node::{agent_id_for_node, hash_token};
use crate::Shared;

#[derive(Debug, Clone, Copy)]
enum Revocation {
    Evict,
    Ban,
}

/// Join tokens live at most this long.
const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 86400);

/// Admin operations, also callable in-process (`hallmark up`).
#[derive(Clone)]
pub struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        AdminService { shared }
    }

    /// Evicts (forgets) or bans an agent; either way its SVID stops working
    /// at once and its open streams end.
    async fn revoke_agent(
        &self,
        raw_id: &str,
        how: Revocation,
    ) -> Result<Response<pb::AgentActionResponse>, Status> {
        let id = parse_id("spiffe_id", raw_id)?;
        let store = &self.shared.store;
        let found = match how {
            Revocation::Evict => store.delete_agent(&id).await,
            Revocation::Ban => store.set_agent_banned(&id, true).await,
        }
        .map_err(store_status)?;
        if !found {
            return Err(Status::not_found(format!("agent {id} not found")));
        }
        let _ = self.shared.revoked.send(id.clone());
        tracing::info!(agent = %id, action = ?how, "agent revoked");
        Ok(Response::new(pb::AgentActionResponse {}))
    }

    fn notify_entries_changed(&self) {
        self.shared.entries_changed.send_modify(|v| *v += 1);
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(m) => Status::not_found(m),
        StoreError::AlreadyExists(m) => Status::already_exists(m),
        other => {
            tracing::error!(error = %other, "datastore error");
            Status::internal(format!("datastore: {other}"))
        }
    }
}

fn query_status(e: QueryError) -> Status {
    match e {
        QueryError::NotFound(_) => Status::not_found(e.to_string()),
        other => Status::invalid_argument(other.to_string()),
    }
}

fn parse_id(field: &str, s: &str) -> Result<SpiffeId, Status> {
    SpiffeId::new(s).map_err(|e| Status::invalid_argument(format!("{field} `{s}` {e}")))
}

fn entry_id(s: &str) -> Result<EntryId, Status> {
    EntryId::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn flow_answer(
    r: Result<String, crate::flows::QueryError>,
) -> Result<Response<pb::FlowQueryResponse>, Status> {
    match r {
        Ok(json) => Ok(Response::new(pb::FlowQueryResponse { json })),
        Err(crate::flows::QueryError::BadRequest(m)) => Err(Status::invalid_argument(m)),
        Err(e @ crate::flows::QueryError::Store(_)) => Err(Status::internal(e.to_string())),
    }
}

fn opt(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_entry(
        &self,
        req: Request<pb::CreateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let r = req.into_inner();
        let raw = RawEntrySpec {
            spiffe_id: &r.spiffe_id,
            parent_id: &r.parent_id,
            selectors: r.selectors.iter().map(String::as_str).collect(),
            x509_ttl_secs: opt(r.x509_ttl_secs),
            jwt_ttl_secs: opt(r.jwt_ttl_secs),
            dns_names: r.dns_names.iter().map(String::as_str).collect(),
            hint: &r.hint,
            admin: r.admin,
            federates_with: r.federates_with.iter().map(String::as_str).collect(),
            oidc_claims: r.oidc_claims.iter().map(String::as_str).collect(),
        };
        let spec = EntrySpec::parse(&raw, self.shared.trust_domain.name())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let entry = self
            .shared
            .store
            .create_entry(&spec, unix_secs(SystemTime::now()))
            .await
            .map_err(store_status)?;
        tracing::info!(id = %entry.id, spiffe_id = %entry.spec.spiffe_id, "entry created");
        self.notify_entries_changed();
        Ok(Response::new(pb::Entry::from(&entry)))
    }

    async fn list_entries(
        &self,
        req: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let r = req.into_inner();
        let filter = EntryFilter {
            parent_id: (!r.parent_id.is_empty())
                .then(|| parse_id("parent_id", &r.parent_id))
                .transpose()?,
            spiffe_id: (!r.spiffe_id.is_empty())
                .then(|| parse_id("spiffe_id", &r.spiffe_id))
                .transpose()?,
            selector: (!r.selector.is_empty())
                .then(|| {
                    Selector::new(&r.selector).map_err(|e| {
                        Status::invalid_argument(format!("selector `{}` {e}", r.selector))
                    })
                })
                .transpose()?,
        };
        let entries = self
            .shared
            .store
            .list_entries(&filter)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: entries.iter().map(pb::Entry::from).collect(),
        }))
    }

    async fn get_entry(
        &self,
        req: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let id = entry_id(&req.get_ref().id)?;
        let entry = self
            .shared
            .store
            .get_entry(&id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("entry {id} not found")))?;
        Ok(Response::new(pb::Entry::from(&entry)))
    }

    async fn delete_entry(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::DeleteEntryResponse>, Status> {
        let id = entry_id(&req.get_ref().id)?;
        if !self
            .shared
            .store
            .delete_entry(&id)
            .await
            .map_err(store_status)?
        {
            return Err(Status::not_found(format!("entry {id} not found")));
        }
        tracing::info!(%id, "entry deleted");
        self.notify_entries_changed();
        Ok(Response::new(pb::DeleteEntryResponse {}))
    }

    async fn generate_token(
        &self,
        req: Request<pb::GenerateTokenRequest>,
    ) -> Result<Response<pb::GenerateTokenResponse>, Status> {
        let r = req.into_inner();
        let mut secret = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut secret);
        let token = hex::encode(secret);
        let node = if r.node.is_empty() {
            format!("node-{}", &token[..8])
        } else {
            r.node.clone()
        };
        let agent_id = agent_id_for_node(&self.shared, &node)?;
        let ttl = if r.ttl_secs == 0 {
            self.shared.join_token_ttl
        } else {
            Duration::from_secs(r.ttl_secs)
        };
        if ttl > MAX_JOIN_TOKEN_TTL {
            return Err(Status::invalid_argument(format!(
                "join token TTL of {}s exceeds the maximum of {}s (7d): a join token is a bootstrap secret, keep it short",
                ttl.as_secs(),
                MAX_JOIN_TOKEN_TTL.as_secs()
            )));
        }
        let expires_at = unix_secs(SystemTime::now()) + ttl.as_secs() as i64;
        self.shared
            .store
            .create_join_token(&JoinToken {
                token_hash: hash_token(&token),
                agent_id: agent_id.clone(),
                expires_at,
            })
            .await
            .map_err(store_status)?;
        let _ = self
            .shared
            .store
            .prune_join_tokens(unix_secs(SystemTime::now()))
            .await;
        Ok(Response::new(pb::GenerateTokenResponse {
            token,
            agent_spiffe_id: agent_id.to_string(),
            expires_at,
            ca_fingerprint: self.shared.ca.fingerprint(),
        }))
    }

    async fn create_federation(
        &self,
        req: Request<pb::CreateFederationRequest>,
    ) -> Result<Response<pb::Federation>, Status> {
        federation::create(&self.shared, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_federations(
        &self,
        _req: Request<pb::ListFederationsRequest>,
    ) -> Result<Response<pb::ListFederationsResponse>, Status> {
        federation::list(&self.shared).await.map(Response::new)
    }

    async fn get_federation(
        &self,
        req: Request<pb::FederationRequest>,
    ) -> Result<Response<pb::Federation>, Status> {
        federation::get(&self.shared, &req.get_ref().trust_domain)
            .await
            .map(Response::new)
    }

    async fn delete_federation(
        &self,
        req: Request<pb::FederationRequest>,
    ) -> Result<Response<pb::DeleteFederationResponse>, Status> {
        federation::delete(&self.shared, &req.get_ref().trust_domain).await?;
        Ok(Response::new(pb::DeleteFederationResponse {}))
    }

    async fn refresh_federation(
        &self,
        req: Request<pb::FederationRequest>,
    ) -> Result<Response<pb::Federation>, Status> {
        federation::refresh(&self.shared, &req.get_ref().trust_domain)
            .await
            .map(Response::new)
    }

    async fn list_authorities(
        &self,
        req: Request<pb::ListAuthoritiesRequest>,
    ) -> Result<Response<pb::ListAuthoritiesResponse>, Status> {
        authority::list(&self.shared, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn prepare_authority(
        &self,
        req: Request<pb::AuthorityRequest>,
    ) -> Result<Response<pb::Authority>, Status> {
        authority::prepare(&self.shared, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn activate_authority(
        &self,
        req: Request<pb::AuthorityRequest>,
    ) -> Result<Response<pb::Authority>, Status> {
        authority::activate(&self.shared, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn taint_authority(
        &self,
        req: Request<pb::AuthorityRequest>,
    ) -> Result<Response<pb::Authority>, Status> {
        authority::taint(&self.shared, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn revoke_authority(
        &self,
        req: Request<pb::AuthorityRequest>,
    ) -> Result<Response<pb::Authority>, Status> {
        authority::revoke(&self.shared, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_agents(
        &self,
        _req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let store = &self.shared.store;
        let agents = store.list_agents().await.map_err(store_status)?;
        let mut inventories: HashMap<SpiffeId, hallmark_store::AgentInventory> = store
            .list_agent_inventories()
            .await
            .map_err(store_status)?
            .into_iter()
            .map(|i| (i.agent_id.clone(), i))
            .collect();
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents
                .into_iter()
                .map(|a| {
                    let inventory = inventories.remove(&a.spiffe_id);
                    pb::Agent {
                        connected: self.shared.connected.is_connected(&a.spiffe_id),
                        spiffe_id: a.spiffe_id.to_string(),
                        serial: a.serial,
                        expires_at: a.expires_at,
                        attested_at: a.attested_at,
                        last_seen: a.last_seen,
                        banned: a.banned,
                        runtime: inventory.as_ref().and_then(runtime_to_pb),
                        context_name: inventory.map(|i| i.context_name).unwrap_or_default(),
                    }
                })
                .collect(),
        }))
    }

    async fn list_workloads(
        &self,
        req: Request<pb::ListWorkloadsRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        let filter = parse_filter(req.get_ref(), |node| {
            agent_id_for_node(&self.shared, node).map_err(|s| s.message().to_string())
        })
        .map_err(query_status)?;
        let workloads = self
            .shared
            .store
            .list_workloads(
                &filter,
                unix_millis(SystemTime::now()),
                self.shared.workload_retention,
            )
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListWorkloadsResponse {
            workloads: workloads.iter().map(stored_to_pb).collect(),
        }))
    }

    async fn get_workload(
        &self,
        req: Request<pb::GetWorkloadRequest>,
    ) -> Result<Response<pb::StoredWorkload>, Status> {
        let prefix = req.get_ref().container_id.as_str();
        validate_container_prefix(prefix).map_err(query_status)?;
        let store = &self.shared.store;
        let found = store
            .find_workloads_by_prefix(
                prefix,
                unix_millis(SystemTime::now()),
                self.shared.workload_retention,
            )
            .await
            .map_err(store_status)?;
        let (chosen, others) = pick_workload(prefix, found).map_err(query_status)?;
        let events = store
            .workload_events(&chosen.workload.container_id)
            .await
            .map_err(store_status)?;
        let mut out = stored_to_pb(&chosen);
        out.events = events.iter().map(event_to_pb).collect();
        let mut resp = Response::new(out);
        if !others.is_empty() {
            // Context names and SPIFFE IDs are ASCII, so this cannot fail.
            if let Ok(v) = also_reported_by(&others).parse() {
                resp.metadata_mut().insert(ALSO_REPORTED_BY_HEADER, v);
            }
        }
        Ok(resp)
    }

    async fn evict_agent(
        &self,
        req: Request<pb::AgentRequest>,
    ) -> Result<Response<pb::AgentActionResponse>, Status> {
        self.revoke_agent(&req.get_ref().spiffe_id, Revocation::Evict)
            .await
    }

    async fn ban_agent(
        &self,
        req: Request<pb::AgentRequest>,
    ) -> Result<Response<pb::AgentActionResponse>, Status> {
        self.revoke_agent(&req.get_ref().spiffe_id, Revocation::Ban)
            .await
    }

    async fn get_bundle(
        &self,
        _req: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        Ok(Response::new(pb::Bundle::from(&*self.shared.ca.bundle())))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let entries = self
            .shared
            .store
            .count_entries()
            .await
            .map_err(store_status)?;
        let agents = self
            .shared
            .store
            .list_agents()
            .await
            .map_err(store_status)?
            .len() as u64;
        Ok(Response::new(pb::StatusResponse {
            trust_domain: self.shared.trust_domain.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.shared.started_at,
            entries,
            agents,
            connected_agents: self.shared.connected.count() as u64,
            ca_fingerprint: self.shared.ca.fingerprint(),
            datastore: self.shared.store.backend().to_string(),
            oidc_issuer: self
                .shared
                .oidc
                .as_ref()
                .map(|o| o.issuer.to_string())
                .unwrap_or_default(),
            federations: self
                .shared
                .store
                .list_federations()
                .await
                .map_err(store_status)?
                .len() as u64,
        }))
    }

    async fn ingest_flows(
        &self,
        req: Request<pb::IngestFlowsRequest>,
    ) -> Result<Response<pb::IngestFlowsResponse>, Status> {
        let s = &self.shared;
        crate::flows::api::ingest(&s.flows, &s.metrics, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_flows(
        &self,
        req: Request<pb::FlowQueryRequest>,
    ) -> Result<Response<pb::FlowQueryResponse>, Status> {
        let q = &self.shared.flow_queries;
        flow_answer(q.list(&req.into_inner().json).await)
    }

    async fn flow_graph(
        &self,
        req: Request<pb::FlowQueryRequest>,
    ) -> Result<Response<pb::FlowQueryResponse>, Status> {
        let q = &self.shared.flow_queries;
        flow_answer(q.graph(&req.into_inner().json).await)
    }

    async fn whois(
        &self,
        req: Request<pb::FlowQueryRequest>,
    ) -> Result<Response<pb::FlowQueryResponse>, Status> {
        let q = &self.shared.flow_queries;
        flow_answer(q.whois(&req.into_inner().json).await)
    }

    async fn flow_stats(
        &self,
        _req: Request<pb::FlowQueryRequest>,
    ) -> Result<Response<pb::FlowQueryResponse>, Status> {
        flow_answer(self.shared.flow_queries.stats().await)
    }

    async fn apply_policy(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::apply_policy(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn get_policy(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::get_policy(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn policy_history(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::policy_history(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn rollback_policy(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::rollback_policy(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn check_policy(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::check_policy(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn list_groups(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::list_groups(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn group_members(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::group_members(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn audit_policy(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::audit_policy(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn dry_run_policy(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::dry_run_policy(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn suggest_policy(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::suggest_policy(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn set_enforcement(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        crate::policy::admin::set_enforcement(&self.shared, &req.into_inner().json)
            .await
            .map(|json| Response::new(pb::PolicyResponse { json }))
    }

    async fn mint_console_token(
        &self,
        req: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Mint {
            #[serde(default)]
            ttl_secs: Option<u64>,
        }
        let json = req.into_inner().json;
        let m: Mint = serde_json::from_str(if json.is_empty() { "{}" } else { &json })
            .map_err(|e| Status::invalid_argument(format!("MintConsoleToken request: {e}")))?;
        let max = crate::console_key::MAX_CONSOLE_TOKEN_TTL.as_secs();
        let ttl = match m.ttl_secs {
            None => DEFAULT_CONSOLE_TOKEN_TTL.as_secs(),
            Some(t) if (1..=max).contains(&t) => t,
            Some(t) => {
                return Err(Status::invalid_argument(format!(
                    "ttl_secs {t}: a console token lives 1s..{}d",
                    max / 86400
                )))
            }
        };
        let expires = unix_secs(SystemTime::now()) + i64::try_from(ttl).unwrap_or(i64::MAX / 2);
        let token = self.shared.console_key.mint(expires);
        tracing::info!(expires_at = expires, "console token minted");
        let json = serde_json::json!({ "token": token, "expires_ms": expires * 1000 }).to_string();
        Ok(Response::new(pb::PolicyResponse { json }))
    }
}

/// How long a console token from `hallmark console token` lives unless
/// asked otherwise.
const DEFAULT_CONSOLE_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
