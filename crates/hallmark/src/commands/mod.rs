//! The operator and workload commands, one module per command. They share
//! only the plumbing in [`crate::connect`], [`crate::output`],
//! [`crate::files`] and [`crate::config`], never each other.

pub mod agent_status;
pub mod agents;
pub mod authority;
pub mod bundle;
pub mod console;
pub mod entry;
pub mod federation;
pub mod flows;
pub mod group;
pub mod inventory;
pub mod policy;
pub mod policy_enforcement;
pub mod policy_query;
pub mod policy_versions;
pub mod status;
pub mod svid;
pub mod token;
