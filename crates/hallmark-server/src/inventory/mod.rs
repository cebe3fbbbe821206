//! The server side of the workload inventory: validating agents' reports
//! into store types, the admin API's filters and lookups, and the pruner
//! that deletes stopped workloads once the retention window has passed.
//!
//! Reports are untrusted input from a node: everything is checked here,
//! before the datastore sees it, and a refusal names the field, the value
//! and the rule so the agent's log says what to fix.
//!
//! - `report`: agents' reports into the store's form;
//! - `query`: the admin API's workload filters and lookups;
//! - `prune`: the pruner.

mod prune;
mod query;
mod report;
#[cfg(test)]
mod tests;

pub use prune::{prune_loop, prune_period};
pub use query::{
    also_reported_by, event_to_pb, parse_filter, pick_workload, runtime_to_pb, stored_to_pb,
    validate_container_prefix, QueryError,
};
pub use report::{parse_report, validate_context_name, ReportError};

/// Most workload records one report may carry (a snapshot page).
pub const MAX_REPORT_WORKLOADS: usize = 1000;
/// Most lifecycle events one report may carry.
pub const MAX_REPORT_EVENTS: usize = 1000;
/// Longest context name; it is also a DNS-label-sized selector value.
pub const MAX_CONTEXT_NAME_LEN: usize = 63;
/// Shortest container ID prefix `GetWorkload` accepts.
pub const MIN_CONTAINER_PREFIX_LEN: usize = 4;
/// How much of an untrusted value an error message repeats.
const ECHO_LEN: usize = 64;
/// Response metadata of `GetWorkload` when other agents or contexts report
/// the same container: their `context agent_id` pairs, comma-separated.
pub const ALSO_REPORTED_BY_HEADER: &str = "hallmark-also-reported-by";

/// Repeats at most [`ECHO_LEN`] characters of an untrusted value.
fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_LEN {
        s.to_string()
    } else {
        let head: String = s.chars().take(ECHO_LEN).collect();
        format!("{head}...")
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}
