//! AWS VPC Flow Logs: the default (version 2) format and custom formats
//! announced by a header line.
//!
//! A record is one direction of traffic seen on one network interface in an
//! aggregation interval: `packets`/`bytes` went from the source to the
//! destination. Fields are space separated, `-` stands for "not available".
//! The default format is, in order: `version account-id interface-id srcaddr
//! dstaddr srcport dstport protocol packets bytes start end action
//! log-status`. A custom format starts with a header naming its fields (in
//! the order chosen at creation); fields Hallmark does not use are skipped.
//! `pkt-srcaddr`/`pkt-dstaddr` (the packet's own addresses, which differ
//! from `srcaddr`/`dstaddr` behind NAT or for secondary interfaces) win when
//! present. Records with `log-status` NODATA or SKIPDATA carry no flow and
//! are counted, not parsed.

use std::net::{IpAddr, SocketAddr};

use crate::flow::{Flow, FlowError, Initiator, Protocol, Reporter};

/// The default format's fields, in order.
pub const DEFAULT_FIELDS: &[&str] = &[
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
];

/// The fields later versions (3-8) added, so a header is told from a
/// record and a misspelt field is named.
const LATER_FIELDS: &[&str] = &[
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
    "region",
    "az-id",
    "sublocation-type",
    "sublocation-id",
    "pkt-src-aws-service",
    "pkt-dst-aws-service",
    "flow-direction",
    "traffic-path",
    "ecs-cluster-arn",
    "ecs-cluster-name",
    "ecs-container-instance-arn",
    "ecs-container-instance-id",
    "ecs-container-id",
    "ecs-second-container-id",
    "ecs-service-name",
    "ecs-task-definition-arn",
    "ecs-task-arn",
    "ecs-task-id",
    "reject-reason",
];

/// Whether AWS documents a field of this name (versions 2-8).
fn is_known(field: &str) -> bool {
    DEFAULT_FIELDS.contains(&field) || LATER_FIELDS.contains(&field)
}

/// Fields a format must have for Hallmark to make a flow of its records.
const REQUIRED: &[&str] = &[
    "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "packets", "bytes", "start", "end",
];

/// One variant per rule a header or record breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VpcError {
    #[error("header names unknown field `{0}` (see the AWS VPC Flow Logs field list)")]
    UnknownField(String),
    #[error("header names field `{0}` twice")]
    DuplicateField(String),
    #[error("header lacks field `{0}`, which Hallmark needs to make a flow")]
    MissingField(&'static str),
    #[error("record has {got} fields, the format has {want}")]
    FieldCount { got: usize, want: usize },
    #[error("field `{field}`: `{value}` is not {rule}")]
    BadValue {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("field `{0}` is `-` (not available) but a flow needs it")]
    Unavailable(&'static str),
    #[error(transparent)]
    Flow(#[from] FlowError),
}

/// What one line turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VpcRecord {
    Flow(Box<Flow>),
    /// `log-status` NODATA: no traffic in the interval.
    NoData,
    /// `log-status` SKIPDATA: records were lost in the interval.
    SkipData,
}

/// A parser for one file's format.
#[derive(Debug, Clone)]
pub struct VpcFormat {
    /// Column of each field Hallmark reads.
    cols: Columns,
    width: usize,
}

#[derive(Debug, Clone, Default)]
struct Columns {
    srcaddr: usize,
    dstaddr: usize,
    srcport: usize,
    dstport: usize,
    protocol: usize,
    packets: usize,
    bytes: usize,
    start: usize,
    end: usize,
    log_status: Option<usize>,
    tcp_flags: Option<usize>,
    pkt_srcaddr: Option<usize>,
    pkt_dstaddr: Option<usize>,
}

impl Default for VpcFormat {
    fn default() -> Self {
        // The default field list satisfies every requirement.
        match VpcFormat::from_fields(DEFAULT_FIELDS) {
            Ok(f) => f,
            Err(_) => unreachable!("the default format is valid"),
        }
    }
}

impl VpcFormat {
    /// Whether `line` is a header (its first word is a field name) rather
    /// than a record (whose first word is a version number).
    pub fn is_header(line: &str) -> bool {
        line.split_whitespace()
            .next()
            .is_some_and(|w| is_known(w) || w.starts_with("${"))
    }

    /// The format a header line announces. `${field}` (the form the AWS
    /// console shows) is accepted too.
    pub fn from_header(line: &str) -> Result<Self, VpcError> {
        let fields: Vec<&str> = line
            .split_whitespace()
            .map(|w| {
                w.strip_prefix("${")
                    .and_then(|w| w.strip_suffix('}'))
                    .unwrap_or(w)
            })
            .collect();
        Self::from_fields(&fields)
    }

    fn from_fields(fields: &[&str]) -> Result<Self, VpcError> {
        for (i, f) in fields.iter().enumerate() {
            if !is_known(f) {
                return Err(VpcError::UnknownField((*f).to_string()));
            }
            if fields[..i].contains(f) {
                return Err(VpcError::DuplicateField((*f).to_string()));
            }
        }
        let col = |name: &str| fields.iter().position(|f| *f == name);
        let need = |name: &'static str| col(name).ok_or(VpcError::MissingField(name));
        for name in REQUIRED {
            need(name)?;
        }
        Ok(VpcFormat {
            cols: Columns {
                srcaddr: need("srcaddr")?,
                dstaddr: need("dstaddr")?,
                srcport: need("srcport")?,
                dstport: need("dstport")?,
                protocol: need("protocol")?,
                packets: need("packets")?,
                bytes: need("bytes")?,
                start: need("start")?,
                end: need("end")?,
                log_status: col("log-status"),
                tcp_flags: col("tcp-flags"),
                pkt_srcaddr: col("pkt-srcaddr"),
                pkt_dstaddr: col("pkt-dstaddr"),
            },
            width: fields.len(),
        })
    }

    /// Parses one record; `source` names the file in the flow's reporter.
    pub fn parse(&self, line: &str, source: &str) -> Result<VpcRecord, VpcError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() != self.width {
            return Err(VpcError::FieldCount {
                got: words.len(),
                want: self.width,
            });
        }
        let c = &self.cols;
        if let Some(i) = c.log_status {
            match words[i] {
                "NODATA" => return Ok(VpcRecord::NoData),
                "SKIPDATA" => return Ok(VpcRecord::SkipData),
                "OK" | "-" => {}
                other => {
                    return Err(bad("log-status", other, "OK, NODATA or SKIPDATA"));
                }
            }
        }
        let addr = |field: &'static str, i: usize| -> Result<IpAddr, VpcError> {
            present(field, words[i])?
                .parse()
                .map_err(|_| bad(field, words[i], "an IPv4 or IPv6 address"))
        };
        let packet_addr = |field: &'static str, i: Option<usize>| match i {
            Some(i) if words[i] != "-" => addr(field, i).map(Some),
            _ => Ok(None),
        };
        let src_ip = match packet_addr("pkt-srcaddr", c.pkt_srcaddr)? {
            Some(ip) => ip,
            None => addr("srcaddr", c.srcaddr)?,
        };
        let dst_ip = match packet_addr("pkt-dstaddr", c.pkt_dstaddr)? {
            Some(ip) => ip,
            None => addr("dstaddr", c.dstaddr)?,
        };
        let protocol = Protocol::from_number(number::<u8>("protocol", words[c.protocol])?);
        // ICMP and other portless protocols log `-` or 0 for ports.
        let port = |field: &'static str, w: &str| -> Result<u16, VpcError> {
            if w == "-" && !protocol.has_ports() {
                Ok(0)
            } else {
                number::<u16>(field, w)
            }
        };
        let src_port = port("srcport", words[c.srcport])?;
        let dst_port = port("dstport", words[c.dstport])?;
        let seconds = |field: &'static str, w: &str| -> Result<i64, VpcError> {
            number::<i64>(field, w)?
                .checked_mul(1000)
                .ok_or_else(|| bad(field, w, "a unix time in seconds"))
        };
        let initiator = match c.tcp_flags.map(|i| words[i]) {
            Some(w) if w != "-" && protocol == Protocol::Tcp => {
                let flags = number::<u16>("tcp-flags", w)?;
                // SYN without ACK went from the source: it connected; a
                // SYN-ACK (18) went from the side that accepted.
                if flags & 0x12 == 0x12 {
                    Initiator::Destination
                } else if flags & 0x02 != 0 {
                    Initiator::Source
                } else {
                    Initiator::Unknown
                }
            }
            _ => Initiator::Unknown,
        };
        let flow = Flow {
            start_ms: seconds("start", words[c.start])?,
            end_ms: seconds("end", words[c.end])?,
            protocol,
            src: SocketAddr::new(src_ip, src_port),
            dst: SocketAddr::new(dst_ip, dst_port),
            initiator,
            bytes_sent: number("bytes", words[c.bytes])?,
            packets_sent: number("packets", words[c.packets])?,
            bytes_received: 0,
            packets_received: 0,
            outcome: None,
            retransmits: 0,
            rtt_us: None,
            reporter: Reporter::File(source.to_string()),
            local: None,
            enforced: None,
        };
        flow.validate()?;
        Ok(VpcRecord::Flow(Box::new(flow)))
    }
}

fn bad(field: &'static str, value: &str, rule: &'static str) -> VpcError {
    VpcError::BadValue {
        field,
        value: value.chars().take(64).collect(),
        rule,
    }
}

fn present<'a>(field: &'static str, w: &'a str) -> Result<&'a str, VpcError> {
    if w == "-" {
        Err(VpcError::Unavailable(field))
    } else {
        Ok(w)
    }
}

fn number<T: std::str::FromStr>(field: &'static str, w: &str) -> Result<T, VpcError> {
    present(field, w)?
        .parse()
        .map_err(|_| bad(field, w, "a non-negative whole number in range"))
}

#[cfg(test)]
#[path = "vpc_tests.rs"]
mod tests;
