//! Federation with other trust domains: the SPIFFE bundle endpoint this
//! server serves, the relationships operators create, and the refresh of
//! foreign bundles.

use hallmark_core::Entry;
use hallmark_proto::hallmark as pb;
use tonic::Status;

use crate::Shared;

/// The foreign bundles that `entries` federate with, one per trust domain,
/// ordered by trust domain name.
pub(crate) async fn bundles_for(_shared: &Shared, _entries: &[Entry]) -> Vec<pb::Bundle> {
    Vec::new()
}

pub(crate) async fn create(
    _shared: &Shared,
    _req: pb::CreateFederationRequest,
) -> Result<pb::Federation, Status> {
    Err(Status::unimplemented("federation is not available yet"))
}

pub(crate) async fn list(_shared: &Shared) -> Result<pb::ListFederationsResponse, Status> {
    Err(Status::unimplemented("federation is not available yet"))
}

pub(crate) async fn get(_shared: &Shared, _trust_domain: &str) -> Result<pb::Federation, Status> {
    Err(Status::unimplemented("federation is not available yet"))
}

pub(crate) async fn delete(_shared: &Shared, _trust_domain: &str) -> Result<(), Status> {
    Err(Status::unimplemented("federation is not available yet"))
}

pub(crate) async fn refresh(
    _shared: &Shared,
    _trust_domain: &str,
) -> Result<pb::Federation, Status> {
    Err(Status::unimplemented("federation is not available yet"))
}

/// The bundle endpoint this server serves to other trust domains.
#[derive(Debug, Clone, Default)]
pub struct FederationConfig {}
