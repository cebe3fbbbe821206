//! The policy admin RPCs: a JSON request in, a JSON answer out (see
//! [`super::api`]), errors as gRPC statuses naming the input and the rule.

use tonic::Status;

use crate::Shared;

macro_rules! not_yet {
    ($($name:ident),*) => {$(
        pub(crate) async fn $name(_shared: &Shared, _json: &str) -> Result<String, Status> {
            Err(Status::unimplemented(concat!(stringify!($name), " is not served yet")))
        }
    )*};
}

not_yet!(apply_policy, get_policy, policy_history, rollback_policy);

pub(crate) use super::queries::{check_policy, group_members, list_groups};
pub(crate) use super::review::{audit_policy, dry_run_policy, suggest_policy};
