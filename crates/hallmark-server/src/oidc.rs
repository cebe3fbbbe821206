//! The OIDC issuer profile: tokens cloud providers accept through OIDC
//! discovery, and the discovery document and JWKS they fetch.

use std::collections::HashMap;

use hallmark_core::Entry;
use hallmark_proto::hallmark as pb;
use tonic::Status;

use crate::Shared;

/// Mints an OIDC-profile token for `entry`'s SPIFFE ID.
pub(crate) fn mint_for_entry(
    _shared: &Shared,
    _entry: &Entry,
    _audience: &[String],
    _attributes: &HashMap<String, String>,
) -> Result<pb::NewJwtSvidResponse, Status> {
    Err(Status::unimplemented(
        "the OIDC issuer is not available yet",
    ))
}

/// Where and as whom the OIDC issuer is served.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The public issuer URL (`https://...`, no query or fragment): the
    /// tokens' `iss` and the base of the discovery document.
    pub issuer: String,
}
