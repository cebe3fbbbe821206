//! Hallmark's domain types, shared by every other crate.
//!
//! Everything here is pure data with one validating constructor per type:
//! untrusted text (CLI flags, config files, admin requests, agent messages)
//! is parsed once at the edge into these types and passed around typed.
//! Errors carry one variant per rule so a message can name the input and the
//! rule it broke.

#![forbid(unsafe_code)]

pub mod cgroup;
pub mod duration;
pub mod entry;
pub mod error;
pub mod selector;
pub mod spiffe_id;
pub mod time;
pub mod timearg;
pub mod workload;

pub use duration::{format_duration, parse_duration, DurationError};
pub use entry::{Entry, EntryError, EntryId, EntrySpec, RawEntrySpec, OIDC_CLAIM_NAMES};
pub use error::error_chain;
pub use selector::{Selector, SelectorError, SelectorSet, HOST_SELECTOR};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
pub use workload::{
    Compose, Confidence, PodInfo, RuntimeSource, RuntimeStatus, Workload, WorkloadState,
};
