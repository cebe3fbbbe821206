//! Rotation of signing authorities: prepared -> active -> retired, by
//! schedule and by hand, and the admin calls that drive it.

use hallmark_proto::hallmark as pb;
use tonic::Status;

use crate::Shared;

pub(crate) async fn list(
    _shared: &Shared,
    _req: pb::ListAuthoritiesRequest,
) -> Result<pb::ListAuthoritiesResponse, Status> {
    Err(Status::unimplemented(
        "authority rotation is not available yet",
    ))
}

pub(crate) async fn prepare(
    _shared: &Shared,
    _req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    Err(Status::unimplemented(
        "authority rotation is not available yet",
    ))
}

pub(crate) async fn activate(
    _shared: &Shared,
    _req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    Err(Status::unimplemented(
        "authority rotation is not available yet",
    ))
}

pub(crate) async fn taint(
    _shared: &Shared,
    _req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    Err(Status::unimplemented(
        "authority rotation is not available yet",
    ))
}

pub(crate) async fn revoke(
    _shared: &Shared,
    _req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    Err(Status::unimplemented(
        "authority rotation is not available yet",
    ))
}

/// When authorities rotate on their own.
#[derive(Debug, Clone, Default)]
pub struct RotationConfig {}
