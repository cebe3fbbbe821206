//! Flow records as the node and admin APIs carry them, read into flows.

use std::net::{IpAddr, SocketAddr};

use hallmark_flows::{Flow, FlowError, Initiator, LocalSide, Owner, Protocol, Reporter, Side, TcpOutcome};
use hallmark_proto::hallmark as pb;

/// Why a record is not a flow.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("{field} `{value}`: {rule}")]
    Field {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error(transparent)]
    Flow(#[from] FlowError),
}

impl RecordError {
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Field { field, .. } => match *field {
                "src_ip" | "dst_ip" => "bad-ip",
                "src_port" | "dst_port" => "bad-port",
                "protocol" => "bad-protocol",
                "local_container_id" => "bad-container",
                _ => "bad-field",
            },
            RecordError::Flow(e) => e.reason(),
        }
    }
}

fn field(field: &'static str, value: impl ToString, rule: &'static str) -> RecordError {
    RecordError::Field {
        field,
        value: value.to_string(),
        rule,
    }
}

fn addr(ip_field: &'static str, ip: &str, port_field: &'static str, port: u32) -> Result<SocketAddr, RecordError> {
    let ip: IpAddr = ip.parse().map_err(|_| field(ip_field, ip, "must be an IPv4 or IPv6 address"))?;
    let port = u16::try_from(port).map_err(|_| field(port_field, port, "must be 0-65535"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Reads one record. `local_owner` turns the record's local container ID
/// (empty: the node) into an owner; it is called only when the record
/// names a local side.
pub(crate) fn flow_from_record(
    r: &pb::FlowRecord,
    reporter: Reporter,
    local_owner: impl FnOnce(&str) -> Owner,
) -> Result<Flow, RecordError> {
    let protocol = u8::try_from(r.protocol)
        .map(Protocol::from_number)
        .map_err(|_| field("protocol", r.protocol, "must be an IP protocol number 0-255"))?;
    let initiator = match r.initiator.as_str() {
        "" | "unknown" => Initiator::Unknown,
        "source" => Initiator::Source,
        "destination" => Initiator::Destination,
        other => return Err(field("initiator", other, "must be source, destination or unknown")),
    };
    let outcome = match r.outcome.as_str() {
        "" => None,
        "established" => Some(TcpOutcome::Established),
        "refused" => Some(TcpOutcome::Refused),
        "reset" => Some(TcpOutcome::Reset),
        "timed-out" => Some(TcpOutcome::TimedOut),
        other => {
            return Err(field(
                "outcome",
                other,
                "must be established, refused, reset or timed-out",
            ))
        }
    };
    let side = match r.local_side.as_str() {
        "" => None,
        "source" => Some(Side::Source),
        "destination" => Some(Side::Destination),
        other => return Err(field("local_side", other, "must be source, destination or empty")),
    };
    if side.is_none() && (!r.local_container_id.is_empty() || r.local_by_port) {
        return Err(field(
            "local_container_id",
            &r.local_container_id,
            "a local workload needs local_side",
        ));
    }
    if !r.local_container_id.is_empty() && !super::evidence::valid_container_id(&r.local_container_id) {
        return Err(field(
            "local_container_id",
            &r.local_container_id,
            "must be 1-128 characters of a-z, A-Z, 0-9, `-`, `_` or `.`",
        ));
    }
    let flow = Flow {
        start_ms: r.start_ms,
        end_ms: r.end_ms,
        protocol,
        src: addr("src_ip", &r.src_ip, "src_port", r.src_port)?,
        dst: addr("dst_ip", &r.dst_ip, "dst_port", r.dst_port)?,
        initiator,
        bytes_sent: r.bytes_sent,
        packets_sent: r.packets_sent,
        bytes_received: r.bytes_received,
        packets_received: r.packets_received,
        outcome,
        reporter,
        local: side.map(|side| LocalSide {
            side,
            owner: local_owner(&r.local_container_id),
            by_port: r.local_by_port,
        }),
    };
    flow.validate()?;
    Ok(flow)
}
