//! The admin API's federation calls: requests validated into relationship
//! records, the federation engine's errors mapped to statuses.

use std::time::SystemTime;

use hallmark_ca::Bundle;
use hallmark_core::time::unix_secs;
use hallmark_core::{SpiffeId, TrustDomain};
use hallmark_proto::hallmark as pb;
use hallmark_store::{FederationProfile, FederationRecord};
use tonic::Status;

use crate::federation::{self, parse_bootstrap, pem_certs, FederationError};
use crate::node::internal;
use crate::Shared;

pub(super) async fn create(
    shared: &Shared,
    req: pb::CreateFederationRequest,
) -> Result<pb::Federation, Status> {
    let record = validate(shared, req)?;
    federation::add(shared, &record).await.map_err(status)?;
    get_td(shared, &record.trust_domain).await
}

pub(super) async fn list(shared: &Shared) -> Result<pb::ListFederationsResponse, Status> {
    let records = shared.store.list_federations().await.map_err(internal)?;
    Ok(pb::ListFederationsResponse {
        federations: records.iter().map(to_pb).collect(),
    })
}

pub(super) async fn get(shared: &Shared, trust_domain: &str) -> Result<pb::Federation, Status> {
    get_td(shared, &parse_td(shared, trust_domain)?).await
}

pub(super) async fn delete(shared: &Shared, trust_domain: &str) -> Result<(), Status> {
    let td = parse_td(shared, trust_domain)?;
    federation::remove(shared, &td).await.map_err(status)
}

pub(super) async fn refresh(shared: &Shared, trust_domain: &str) -> Result<pb::Federation, Status> {
    let td = parse_td(shared, trust_domain)?;
    federation::refresh_now(shared, &td).await.map_err(status)?;
    get_td(shared, &td).await
}

async fn get_td(shared: &Shared, td: &TrustDomain) -> Result<pb::Federation, Status> {
    let record = federation::stored(shared, td).await.map_err(status)?;
    Ok(to_pb(&record))
}

fn status(e: FederationError) -> Status {
    match e {
        FederationError::Exists(_) => Status::already_exists(e.to_string()),
        FederationError::NotFound(_) => Status::not_found(e.to_string()),
        FederationError::Store(e) => internal(e),
    }
}

fn to_pb(r: &FederationRecord) -> pb::Federation {
    let bundle = if r.bundle.is_empty() {
        None
    } else {
        Bundle::from_jwks_json(&r.trust_domain, &r.bundle)
            .ok()
            .map(|b| pb::Bundle::from(&b))
    };
    pb::Federation {
        trust_domain: r.trust_domain.to_string(),
        bundle_endpoint_url: r.bundle_endpoint_url.clone(),
        profile: r.profile.to_string(),
        endpoint_spiffe_id: r.endpoint_spiffe_id.clone(),
        bundle,
        created_at: r.created_at,
        last_refresh: r.last_refresh,
        next_refresh: r.next_refresh,
        last_error: r.last_error.clone(),
        web_ca_pem: r.web_ca_pem.clone(),
    }
}

fn parse_td(shared: &Shared, name: &str) -> Result<TrustDomain, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "trust_domain: required (the foreign trust domain's name, e.g. partner.example)",
        ));
    }
    let td = TrustDomain::new(name).map_err(|e| {
        Status::invalid_argument(format!(
            "trust_domain `{name}` is not a trust domain name: {e}"
        ))
    })?;
    if td == shared.trust_domain {
        return Err(Status::invalid_argument(format!(
            "trust_domain `{td}` is this server's own trust domain; federate with another one"
        )));
    }
    Ok(td)
}

/// Checks a creation request and turns it into the record to store.
fn validate(shared: &Shared, req: pb::CreateFederationRequest) -> Result<FederationRecord, Status> {
    let f = req.federation.unwrap_or_default();
    let td = parse_td(shared, &f.trust_domain)?;
    let url = url::Url::parse(&f.bundle_endpoint_url).map_err(|e| {
        Status::invalid_argument(format!(
            "bundle_endpoint_url `{}` is not a URL: {e}",
            f.bundle_endpoint_url
        ))
    })?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(Status::invalid_argument(format!(
            "bundle_endpoint_url `{}` must be an https:// URL with a host",
            f.bundle_endpoint_url
        )));
    }
    let profile = match f.profile.as_str() {
        "" => FederationProfile::HttpsSpiffe,
        p => FederationProfile::from_name(p).ok_or_else(|| {
            Status::invalid_argument(format!(
                "profile `{p}` is not a bundle endpoint profile (https_spiffe or https_web)"
            ))
        })?,
    };
    let bundle = if req.bootstrap_bundle.is_empty() {
        None
    } else {
        Some(
            parse_bootstrap(&td, &req.bootstrap_bundle)
                .map_err(|e| Status::invalid_argument(format!("bootstrap bundle for {td}: {e}")))?,
        )
    };
    let endpoint_spiffe_id = match profile {
        FederationProfile::HttpsSpiffe => {
            let id = if f.endpoint_spiffe_id.is_empty() {
                td.server_id()
            } else {
                SpiffeId::new(&f.endpoint_spiffe_id).map_err(|e| {
                    Status::invalid_argument(format!(
                        "endpoint_spiffe_id `{}` is not a SPIFFE ID: {e}",
                        f.endpoint_spiffe_id
                    ))
                })?
            };
            if !id.is_member_of(&td) {
                return Err(Status::invalid_argument(format!(
                    "endpoint_spiffe_id `{id}` must be in trust domain {td}"
                )));
            }
            if bundle.is_none() {
                return Err(Status::invalid_argument(format!(
                    "bootstrap bundle: required for profile https_spiffe, whose endpoint is authenticated with {td}'s X.509 authorities (get them with `hallmark bundle show --format jwks` on a {td} server and pass the file with --trust-bundle)"
                )));
            }
            id.to_string()
        }
        FederationProfile::HttpsWeb => {
            if !f.endpoint_spiffe_id.is_empty() {
                return Err(Status::invalid_argument(
                    "endpoint_spiffe_id: only profile https_spiffe takes one",
                ));
            }
            String::new()
        }
    };
    if !f.web_ca_pem.is_empty() {
        if profile != FederationProfile::HttpsWeb {
            return Err(Status::invalid_argument(
                "web_ca_pem: only profile https_web takes one",
            ));
        }
        let certs = pem_certs(&f.web_ca_pem)
            .map_err(|e| Status::invalid_argument(format!("web_ca_pem: {e}")))?;
        if certs.is_empty() {
            return Err(Status::invalid_argument(
                "web_ca_pem: holds no CERTIFICATE block",
            ));
        }
    }
    let now = unix_secs(SystemTime::now());
    let (bundle, bundle_sequence) = match bundle {
        Some(b) => (b.to_jwks_json(), b.sequence),
        None => (Vec::new(), 0),
    };
    Ok(FederationRecord {
        trust_domain: td,
        bundle_endpoint_url: f.bundle_endpoint_url,
        profile,
        endpoint_spiffe_id,
        web_ca_pem: f.web_ca_pem,
        bundle,
        bundle_sequence,
        created_at: now,
        last_refresh: 0,
        next_refresh: now,
        last_error: String::new(),
    })
}
