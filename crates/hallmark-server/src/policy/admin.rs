//! The policy admin RPCs: a JSON request in, a JSON answer out (see
//! [`super::api`] and [`super::api_queries`]), errors as gRPC statuses
//! naming the input and the rule.

pub(crate) use super::enforcement::set_enforcement;
pub(crate) use super::queries::{check_policy, group_members, list_groups};
pub(crate) use super::review::{audit_policy, dry_run_policy, suggest_policy};
pub(crate) use super::versions::{apply_policy, get_policy, policy_history, rollback_policy};
