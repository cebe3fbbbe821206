//! Flow records as the node and admin APIs carry them, read into flows
//! with the one wire conversion, and the counted reason of a refusal.

use hallmark_flows::{Flow, Owner, Reporter};
use hallmark_proto::convert::{flow_from_pb, FlowRecordError};
use hallmark_proto::hallmark as pb;

/// A refused record: the conversion's words and a short reason to count.
#[derive(Debug)]
pub(crate) struct RecordError {
    pub error: FlowRecordError,
    pub reason: &'static str,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl RecordError {
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// The counter name for a refused record, by the field and rule it broke.
fn reason_of(r: &pb::FlowRecord, e: &FlowRecordError) -> &'static str {
    match e.field {
        "start_ms" | "end_ms" if r.end_ms < r.start_ms => "time-backwards",
        "start_ms" | "end_ms" => "absurd-time",
        "src_port" if r.src_port == 0 => "port-zero",
        "dst_port" if r.dst_port == 0 => "port-zero",
        "src_port" | "dst_port" => "bad-port",
        "dst_ip"
            if r.src_ip.parse::<std::net::IpAddr>().is_ok()
                && r.dst_ip.parse::<std::net::IpAddr>().is_ok() =>
        {
            "mixed-families"
        }
        "src_ip" | "dst_ip" => "bad-ip",
        "protocol" => "bad-protocol",
        "outcome" => "bad-outcome",
        "initiator" => "bad-initiator",
        _ => "bad-local-side",
    }
}

/// Reads one record. `local_owner` turns the record's local container ID
/// (empty: the node) into an owner, or `None` where a local side cannot be
/// known (files).
pub(crate) fn flow_from_record(
    r: &pb::FlowRecord,
    reporter: Reporter,
    local_owner: impl FnOnce(&str) -> Option<Owner>,
) -> Result<Flow, RecordError> {
    flow_from_pb(r, reporter, local_owner).map_err(|error| RecordError {
        reason: reason_of(r, &error),
        error,
    })
}
