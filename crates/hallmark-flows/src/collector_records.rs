//! The fields of a NetFlow v9 or IPFIX data record that make a flow,
//! whatever template carried them, and the rules each value must follow.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netflow_parser::variable_versions::field_value::FieldValue;
use netflow_parser::variable_versions::ipfix::lookup::{
    IANAIPFixField, IPFixField, ReverseInformationElement,
};
use netflow_parser::variable_versions::v9::lookup::V9Field;

use super::{CollectorConfig, CollectorError};
use crate::flow::{Flow, Initiator, Protocol, Reporter};

/// Milliseconds from the NTP epoch (1900) to the unix epoch (1970), for
/// IPFIX `dateTimeMicroseconds`/`dateTimeNanoseconds` fields.
const NTP_UNIX_OFFSET_MS: u64 = 2_208_988_800_000;

/// A record's fields that make a flow, from any version.
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub(super) src4: Option<Ipv4Addr>,
    pub(super) dst4: Option<Ipv4Addr>,
    pub(super) src6: Option<Ipv6Addr>,
    pub(super) dst6: Option<Ipv6Addr>,
    pub(super) src_port: Option<u16>,
    pub(super) dst_port: Option<u16>,
    pub(super) protocol: Option<u8>,
    pub(super) octets: Option<u64>,
    pub(super) packets: Option<u64>,
    pub(super) octets_total: Option<u64>,
    pub(super) packets_total: Option<u64>,
    pub(super) reverse_octets: Option<u64>,
    pub(super) reverse_packets: Option<u64>,
    pub(super) start: Option<Time>,
    pub(super) end: Option<Time>,
}

/// A record time as sent.
#[derive(Debug, Clone, Copy)]
pub(super) enum Time {
    /// Exporter uptime, ms.
    Uptime(u32),
    /// Unix ms.
    Unix(i64),
    /// Microseconds before the export time.
    BeforeExport(u64),
}

/// Where a message's record times are anchored.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) export_ms: i64,
    /// The exporter's uptime at export, in ms (mod 2^32), when known.
    pub(super) uptime_ms: Option<u32>,
}

impl Clock {
    /// The unix time of an uptime-relative record time. Uptime counters wrap
    /// at 2^32 ms, so the record time is taken as the one within 2^31 ms of
    /// the export; a time "after" the export comes out negative-aged and is
    /// refused later.
    pub(super) fn at_uptime(&self, t: u32) -> Result<i64, CollectorError> {
        let uptime = self.uptime_ms.ok_or(CollectorError::NoTimeBase)?;
        // Reinterpreting the wrapped difference as signed is the point:
        // it picks the nearest of the candidate times.
        let age = i64::from(uptime.wrapping_sub(t) as i32);
        Ok(self.export_ms - age)
    }
}

impl Fields {
    /// The flow this record describes, if it follows every rule.
    pub(super) fn flow(
        &self,
        clock: Clock,
        exporter: SocketAddr,
        config: &CollectorConfig,
    ) -> Result<Flow, CollectorError> {
        let f = self;
        let protocol =
            Protocol::from_number(f.protocol.ok_or(CollectorError::Missing("protocol"))?);
        let (src_ip, dst_ip): (IpAddr, IpAddr) = match (f.src4, f.dst4, f.src6, f.dst6) {
            (Some(s), Some(d), _, _) => (s.into(), d.into()),
            (_, _, Some(s), Some(d)) => (s.into(), d.into()),
            _ => return Err(CollectorError::Missing("source and destination address")),
        };
        let (src_port, dst_port) = if protocol.has_ports() {
            (
                f.src_port.ok_or(CollectorError::Missing("source port"))?,
                f.dst_port
                    .ok_or(CollectorError::Missing("destination port"))?,
            )
        } else {
            // ICMP type/code travel in the port fields of v5; they are not
            // ports.
            (0, 0)
        };
        let bytes_sent = f
            .octets
            .or(f.octets_total)
            .ok_or(CollectorError::Missing("octet count"))?;
        let packets_sent = f
            .packets
            .or(f.packets_total)
            .ok_or(CollectorError::Missing("packet count"))?;
        if packets_sent == 0 {
            return Err(CollectorError::BadField {
                field: "packet count",
                value: "0".into(),
                rule: "at least one packet",
            });
        }
        let start_ms = time(f.start, "start", clock)?;
        let end_ms = time(f.end, "end", clock)?;
        let flow = Flow {
            start_ms,
            end_ms,
            protocol,
            src: SocketAddr::new(src_ip, src_port),
            dst: SocketAddr::new(dst_ip, dst_port),
            initiator: Initiator::Unknown,
            bytes_sent,
            packets_sent,
            bytes_received: f.reverse_octets.unwrap_or(0),
            packets_received: f.reverse_packets.unwrap_or(0),
            outcome: None,
            retransmits: 0,
            rtt_us: None,
            reporter: Reporter::Exporter(exporter),
            local: None,
            enforced: None,
        };
        flow.validate()?;
        if end_ms > clock.export_ms.saturating_add(config.max_future_ms) {
            return Err(CollectorError::OutsideExport {
                which: "end",
                ms: end_ms,
                export_ms: clock.export_ms,
                rule: "after the message was exported",
            });
        }
        if start_ms < clock.export_ms.saturating_sub(config.max_flow_age_ms) {
            return Err(CollectorError::OutsideExport {
                which: "start",
                ms: start_ms,
                export_ms: clock.export_ms,
                rule: "longer before the export than any flow lives",
            });
        }
        Ok(flow)
    }
}

fn time(t: Option<Time>, which: &'static str, clock: Clock) -> Result<i64, CollectorError> {
    match t {
        None => Err(CollectorError::Missing(if which == "start" {
            "flow start time"
        } else {
            "flow end time"
        })),
        Some(Time::Uptime(t)) => clock.at_uptime(t),
        Some(Time::Unix(ms)) => Ok(ms),
        Some(Time::BeforeExport(us)) => {
            let ms = i64::try_from(us / 1000).unwrap_or(i64::MAX);
            Ok(clock.export_ms.saturating_sub(ms))
        }
    }
}

/// A field's value as the integer type a flow needs.
fn int<T: TryFrom<u64>>(
    value: &FieldValue,
    field: &'static str,
    rule: &'static str,
) -> Result<T, CollectorError> {
    value
        .as_u64()
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| CollectorError::BadField {
            field,
            value: format!("{value:?}"),
            rule,
        })
}

fn ipv4(value: &FieldValue, field: &'static str) -> Result<Ipv4Addr, CollectorError> {
    match value {
        FieldValue::Ip4Addr(ip) => Ok(*ip),
        other => Err(CollectorError::BadField {
            field,
            value: format!("{other:?}"),
            rule: "an IPv4 address",
        }),
    }
}

fn ipv6(value: &FieldValue, field: &'static str) -> Result<Ipv6Addr, CollectorError> {
    match value {
        FieldValue::Ip6Addr(ip) => Ok(*ip),
        other => Err(CollectorError::BadField {
            field,
            value: format!("{other:?}"),
            rule: "an IPv6 address",
        }),
    }
}

fn protocol(value: &FieldValue) -> Result<u8, CollectorError> {
    value.as_u8().ok_or_else(|| CollectorError::BadField {
        field: "protocol",
        value: format!("{value:?}"),
        rule: "an IP protocol number",
    })
}

/// The flow fields of a v9 record.
pub(super) fn v9_fields(record: &[(V9Field, FieldValue)]) -> Result<Fields, CollectorError> {
    let mut f = Fields::default();
    for (field, value) in record {
        match field {
            V9Field::Ipv4SrcAddr => f.src4 = Some(ipv4(value, "IPV4_SRC_ADDR")?),
            V9Field::Ipv4DstAddr => f.dst4 = Some(ipv4(value, "IPV4_DST_ADDR")?),
            V9Field::Ipv6SrcAddr => f.src6 = Some(ipv6(value, "IPV6_SRC_ADDR")?),
            V9Field::Ipv6DstAddr => f.dst6 = Some(ipv6(value, "IPV6_DST_ADDR")?),
            V9Field::L4SrcPort => f.src_port = Some(int(value, "L4_SRC_PORT", "a port")?),
            V9Field::L4DstPort => f.dst_port = Some(int(value, "L4_DST_PORT", "a port")?),
            V9Field::Protocol => f.protocol = Some(protocol(value)?),
            V9Field::InBytes => f.octets = Some(int(value, "IN_BYTES", "a count")?),
            V9Field::InPkts => f.packets = Some(int(value, "IN_PKTS", "a count")?),
            V9Field::FirstSwitched => {
                f.start = Some(Time::Uptime(int(
                    value,
                    "FIRST_SWITCHED",
                    "32-bit uptime ms",
                )?))
            }
            V9Field::LastSwitched => {
                f.end = Some(Time::Uptime(int(
                    value,
                    "LAST_SWITCHED",
                    "32-bit uptime ms",
                )?))
            }
            _ => {}
        }
    }
    Ok(f)
}

/// Unix ms of an absolute IPFIX time, whose decoded value is ms since the
/// unix epoch (seconds, milliseconds) or since the NTP epoch (micro- and
/// nanoseconds).
fn unix_ms(value: &FieldValue, field: &'static str, ntp: bool) -> Result<Time, CollectorError> {
    let ms: u64 = int(value, field, "a time")?;
    let ms = if ntp {
        ms.checked_sub(NTP_UNIX_OFFSET_MS)
            .ok_or_else(|| CollectorError::BadField {
                field,
                value: format!("{value:?}"),
                rule: "a time after 1970",
            })?
    } else {
        ms
    };
    Ok(Time::Unix(i64::try_from(ms).unwrap_or(i64::MAX)))
}

/// The flow fields of an IPFIX record.
pub(super) fn ipfix_fields(record: &[(IPFixField, FieldValue)]) -> Result<Fields, CollectorError> {
    use IANAIPFixField as I;
    let mut f = Fields::default();
    for (field, value) in record {
        match field {
            IPFixField::IANA(iana) => match iana {
                I::SourceIpv4address => f.src4 = Some(ipv4(value, "sourceIPv4Address")?),
                I::DestinationIpv4address => f.dst4 = Some(ipv4(value, "destinationIPv4Address")?),
                I::SourceIpv6address => f.src6 = Some(ipv6(value, "sourceIPv6Address")?),
                I::DestinationIpv6address => f.dst6 = Some(ipv6(value, "destinationIPv6Address")?),
                I::SourceTransportPort => {
                    f.src_port = Some(int(value, "sourceTransportPort", "a port")?)
                }
                I::DestinationTransportPort => {
                    f.dst_port = Some(int(value, "destinationTransportPort", "a port")?)
                }
                I::ProtocolIdentifier => f.protocol = Some(protocol(value)?),
                I::OctetDeltaCount => f.octets = Some(int(value, "octetDeltaCount", "a count")?),
                I::PacketDeltaCount => f.packets = Some(int(value, "packetDeltaCount", "a count")?),
                I::OctetTotalCount => {
                    f.octets_total = Some(int(value, "octetTotalCount", "a count")?)
                }
                I::PacketTotalCount => {
                    f.packets_total = Some(int(value, "packetTotalCount", "a count")?)
                }
                I::FlowStartSysUpTime => {
                    f.start = Some(Time::Uptime(int(
                        value,
                        "flowStartSysUpTime",
                        "32-bit uptime ms",
                    )?))
                }
                I::FlowEndSysUpTime => {
                    f.end = Some(Time::Uptime(int(
                        value,
                        "flowEndSysUpTime",
                        "32-bit uptime ms",
                    )?))
                }
                I::FlowStartSeconds => f.start = Some(unix_ms(value, "flowStartSeconds", false)?),
                I::FlowEndSeconds => f.end = Some(unix_ms(value, "flowEndSeconds", false)?),
                I::FlowStartMilliseconds => {
                    f.start = Some(unix_ms(value, "flowStartMilliseconds", false)?)
                }
                I::FlowEndMilliseconds => {
                    f.end = Some(unix_ms(value, "flowEndMilliseconds", false)?)
                }
                I::FlowStartMicroseconds => {
                    f.start = Some(unix_ms(value, "flowStartMicroseconds", true)?)
                }
                I::FlowEndMicroseconds => {
                    f.end = Some(unix_ms(value, "flowEndMicroseconds", true)?)
                }
                I::FlowStartNanoseconds => {
                    f.start = Some(unix_ms(value, "flowStartNanoseconds", true)?)
                }
                I::FlowEndNanoseconds => f.end = Some(unix_ms(value, "flowEndNanoseconds", true)?),
                I::FlowStartDeltaMicroseconds => {
                    f.start = Some(Time::BeforeExport(int(
                        value,
                        "flowStartDeltaMicroseconds",
                        "a count of microseconds",
                    )?))
                }
                I::FlowEndDeltaMicroseconds => {
                    f.end = Some(Time::BeforeExport(int(
                        value,
                        "flowEndDeltaMicroseconds",
                        "a count of microseconds",
                    )?))
                }
                _ => {}
            },
            // RFC 5103 biflow: the reverse direction's counters.
            IPFixField::ReverseInformationElement(rev) => match rev {
                ReverseInformationElement::ReverseOctetDeltaCount => {
                    f.reverse_octets = Some(int(value, "reverseOctetDeltaCount", "a count")?)
                }
                ReverseInformationElement::ReversePacketDeltaCount => {
                    f.reverse_packets = Some(int(value, "reversePacketDeltaCount", "a count")?)
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(f)
}
