//! The admin API's authority calls: listing the signing authorities and
//! rotating them by hand, with [`AuthorityError`]s mapped to statuses.

use std::time::SystemTime;

use hallmark_proto::hallmark as pb;
use hallmark_store::{AuthorityKind, AuthorityRecord};
use tonic::Status;

use crate::authority::AuthorityError;
use crate::rotation::retire_window;
use crate::Shared;

fn status(e: AuthorityError) -> Status {
    match e {
        AuthorityError::Rule { .. } => Status::failed_precondition(e.to_string()),
        AuthorityError::NotFound { .. } => Status::not_found(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn parse_kind(kind: &str, required: bool) -> Result<Option<AuthorityKind>, Status> {
    if kind.is_empty() && !required {
        return Ok(None);
    }
    AuthorityKind::from_name(kind).map(Some).ok_or_else(|| {
        Status::invalid_argument(format!(
            "authority kind `{kind}` is not one of x509, jwt, oidc"
        ))
    })
}

fn required_kind(kind: &str) -> Result<AuthorityKind, Status> {
    parse_kind(kind, true)?.ok_or_else(|| Status::invalid_argument("an authority kind is required"))
}

/// The kind named in the request, or, when it names none, the kind of the
/// authority with the requested ID (IDs do not repeat across kinds).
async fn kind_of(shared: &Shared, req: &pb::AuthorityRequest) -> Result<AuthorityKind, Status> {
    if !req.kind.is_empty() || req.id.is_empty() {
        return required_kind(&req.kind);
    }
    let records = shared.ca.list(None).await.map_err(status)?;
    let mut kinds = records.iter().filter(|r| r.id == req.id).map(|r| r.kind);
    match (kinds.next(), kinds.next()) {
        (Some(kind), None) => Ok(kind),
        (None, _) => Err(Status::not_found(format!(
            "no authority `{}`; list them with `hallmark authority show`",
            req.id
        ))),
        (Some(_), Some(_)) => Err(Status::invalid_argument(format!(
            "authority ID `{}` exists for several kinds; name the kind",
            req.id
        ))),
    }
}

fn required_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "an authority ID is required; list them with `hallmark authority show`",
        ));
    }
    Ok(id)
}

/// The admin API's view: never the private key.
fn to_pb(r: &AuthorityRecord) -> pb::Authority {
    pb::Authority {
        kind: r.kind.as_str().into(),
        id: r.id.clone(),
        state: r.state.clone(),
        alg: r.alg.clone(),
        created_at: r.created_at,
        not_after: r.not_after,
        cert_der: r.cert_der.clone(),
    }
}

pub(super) async fn list(
    shared: &Shared,
    req: pb::ListAuthoritiesRequest,
) -> Result<pb::ListAuthoritiesResponse, Status> {
    let kind = parse_kind(&req.kind, false)?;
    let records = shared.ca.list(kind).await.map_err(status)?;
    Ok(pb::ListAuthoritiesResponse {
        authorities: records.iter().map(to_pb).collect(),
    })
}

pub(super) async fn prepare(
    shared: &Shared,
    req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    let kind = required_kind(&req.kind)?;
    let r = shared
        .ca
        .prepare(kind, SystemTime::now())
        .await
        .map_err(status)?;
    Ok(to_pb(&r))
}

pub(super) async fn activate(
    shared: &Shared,
    req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    let kind = kind_of(shared, &req).await?;
    let id = (!req.id.is_empty()).then_some(req.id.as_str());
    let window = retire_window(shared, kind).await.map_err(status)?;
    let r = shared
        .ca
        .activate(kind, id, window, SystemTime::now())
        .await
        .map_err(status)?;
    Ok(to_pb(&r))
}

pub(super) async fn taint(
    shared: &Shared,
    req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    let kind = kind_of(shared, &req).await?;
    let r = shared
        .ca
        .taint(kind, required_id(&req.id)?, SystemTime::now())
        .await
        .map_err(status)?;
    Ok(to_pb(&r))
}

pub(super) async fn revoke(
    shared: &Shared,
    req: pb::AuthorityRequest,
) -> Result<pb::Authority, Status> {
    let kind = kind_of(shared, &req).await?;
    let r = shared
        .ca
        .revoke(kind, required_id(&req.id)?, SystemTime::now())
        .await
        .map_err(status)?;
    Ok(to_pb(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_outside_the_list_are_refused() {
        assert!(parse_kind("x509", true).is_ok());
        assert_eq!(parse_kind("", false).ok(), Some(None));
        let e = required_kind("").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = required_kind("rsa").unwrap_err();
        assert!(e.message().contains("`rsa`"), "{}", e.message());
        assert_eq!(
            required_id("").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
