//! Generated protocol code.
//!
//! - [`workload`]: the SPIFFE Workload API (`/SpiffeWorkloadAPI/...`), served
//!   by the agent to workloads.
//! - [`hallmark`]: the node API (agent to server, mTLS) and the admin API
//!   (CLI to server, local socket).

#![forbid(unsafe_code)]
#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod workload {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

pub mod hallmark {
    include!(concat!(env!("OUT_DIR"), "/hallmark.v1.rs"));
}

/// The metadata key every Workload API call must carry with value `true`.
pub const WORKLOAD_HEADER: &str = "workload.spiffe.io";

pub mod convert;
