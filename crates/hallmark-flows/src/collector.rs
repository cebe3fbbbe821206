//! NetFlow v5/v9 and IPFIX export datagrams to flows: the pure half of the
//! UDP collector (`hallmark server run --flow-collector-listen ADDR`).
//!
//! The server owns the socket and hands every datagram, with the exporter's
//! address and the time it arrived, to [`Collector::datagram`]. Messages are
//! decoded by the `netflow_parser` crate; this module keeps one parser (and
//! so one template cache) per exporter address and observation domain (v9
//! source ID, IPFIX observation domain ID), as RFC 3954 and RFC 7011 ask:
//! template IDs are only unique within one export stream.
//!
//! Each data record becomes one unidirectional [`Flow`] (biflow IPFIX
//! records also fill the reverse counters). Anything that cannot become a
//! correct flow is a [`Rejection`] naming the exporter and the rule, counted
//! per [`Reason`] in [`CollectorStats`]; nothing doubtful becomes a flow:
//!
//! - times: v5/v9 record times are milliseconds of the exporter's uptime and
//!   are placed with the header's export time and uptime; IPFIX may send
//!   uptime-relative times (placed with `systemInitTimeMilliseconds` from an
//!   options record, as softflowd does), absolute seconds, milliseconds,
//!   NTP micro/nanoseconds, or microseconds before the export time. An
//!   exporter whose export time is far from the time of receipt has a clock
//!   Hallmark cannot trust, and attributing its flows could name the wrong
//!   owner of an IP, so its datagrams are refused whole.
//! - data sets whose template has not been received from that exporter and
//!   domain are refused (`unknown-template`), not guessed at; exporters
//!   resend templates periodically.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;

use netflow_parser::scoped_parser::{extract_scoping_info, ScopingInfo};
use netflow_parser::static_versions::v5::V5;
use netflow_parser::variable_versions::ipfix::lookup::{IANAIPFixField, IPFixField};
use netflow_parser::variable_versions::ipfix::{FlowSetBody as IpfixBody, IPFix};
use netflow_parser::variable_versions::v9::{FlowSetBody as V9Body, V9};
use netflow_parser::{NetflowPacket, NetflowParser};
use serde::Serialize;

use crate::flow::{Flow, FlowError};
use records::{ipfix_fields, v9_fields, Clock, Fields, Time};

/// Limits of a [`Collector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorConfig {
    /// Export streams (exporter address and observation domain) whose
    /// templates are kept; past it the least recently heard is forgotten.
    pub max_exporters: usize,
    /// Templates kept per export stream.
    pub max_templates: usize,
    /// How far a message's export time may be from its time of receipt.
    pub max_clock_skew_ms: i64,
    /// How long before its export a flow may have started (softflowd's
    /// longest flow lifetime is 7 days).
    pub max_flow_age_ms: i64,
    /// How far after the export time a flow may end: export times have
    /// one-second resolution.
    pub max_future_ms: i64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            max_exporters: 1024,
            max_templates: 256,
            max_clock_skew_ms: 10_000,
            max_flow_age_ms: 7 * 24 * 3600 * 1000,
            max_future_ms: 1_000,
        }
    }
}

/// A setting of [`CollectorConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectorConfigError {
    #[error("collector setting `{0}` must be at least 1")]
    Zero(&'static str),
    #[error("collector setting `{0}` must not be negative")]
    Negative(&'static str),
}

/// Why a datagram, data set or record was refused. Stable kebab-case names
/// (`as_str`) for stats, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Shorter than its headers say.
    Truncated,
    /// Not NetFlow v5, v9 or IPFIX (v10).
    UnsupportedVersion,
    /// The decoder refused the message's structure.
    Malformed,
    /// Bytes after the end of the message.
    TrailingBytes,
    /// A data set for a template this export stream has not sent.
    UnknownTemplate,
    /// The exporter's clock is too far from the collector's.
    ClockSkew,
    /// Uptime-relative times with no system init time known yet (IPFIX).
    NoTimeBase,
    /// A record lacking what a flow needs (addresses, protocol, counters,
    /// times).
    BadRecord,
    /// A TCP/UDP flow with port 0.
    PortZero,
    /// A time that cannot be right: before 2000, after 2100, after the
    /// message was exported, or too long before it.
    AbsurdTime,
    /// A flow that ends before it starts.
    TimeBackwards,
    /// The decoder could not be set up (a collector fault, not the input's).
    Parser,
}

impl Reason {
    /// Every reason, in order.
    pub const ALL: [Reason; 12] = [
        Reason::Truncated,
        Reason::UnsupportedVersion,
        Reason::Malformed,
        Reason::TrailingBytes,
        Reason::UnknownTemplate,
        Reason::ClockSkew,
        Reason::NoTimeBase,
        Reason::BadRecord,
        Reason::PortZero,
        Reason::AbsurdTime,
        Reason::TimeBackwards,
        Reason::Parser,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Truncated => "truncated",
            Reason::UnsupportedVersion => "unsupported-version",
            Reason::Malformed => "malformed",
            Reason::TrailingBytes => "trailing-bytes",
            Reason::UnknownTemplate => "unknown-template",
            Reason::ClockSkew => "clock-skew",
            Reason::NoTimeBase => "no-time-base",
            Reason::BadRecord => "bad-record",
            Reason::PortZero => "port-zero",
            Reason::AbsurdTime => "absurd-time",
            Reason::TimeBackwards => "time-backwards",
            Reason::Parser => "parser",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One variant per rule a datagram or record breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectorError {
    #[error("datagram of {got} bytes is shorter than its {what} ({need} bytes)")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("version {0} is not NetFlow v5, v9 or IPFIX (10)")]
    UnsupportedVersion(u16),
    #[error("NetFlow v{version} message does not decode: {detail}")]
    Malformed { version: u16, detail: String },
    #[error("{0} bytes follow the end of the message")]
    TrailingBytes(usize),
    #[error("data set for template {template_id}, which this exporter and domain have not sent (data before its template, or an unknown template ID)")]
    UnknownTemplate { template_id: u16 },
    #[error("export time {export_ms} ms is {skew_ms} ms from the time of receipt {received_ms} ms, more than the {max_ms} ms allowed: the exporter's clock cannot be trusted")]
    ClockSkew {
        export_ms: i64,
        received_ms: i64,
        skew_ms: i64,
        max_ms: i64,
    },
    #[error("record times are relative to the exporter's uptime, but no systemInitTimeMilliseconds has been received from this exporter and domain")]
    NoTimeBase,
    #[error("record has no {0}")]
    Missing(&'static str),
    #[error("record field {field} holds {value}, not {rule}")]
    BadField {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("flow {which} time {ms} ms is {rule} (export time {export_ms} ms)")]
    OutsideExport {
        which: &'static str,
        ms: i64,
        export_ms: i64,
        rule: &'static str,
    },
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error("cannot set up the NetFlow decoder: {0}")]
    Parser(String),
}

impl CollectorError {
    /// The counted reason.
    pub fn reason(&self) -> Reason {
        match self {
            CollectorError::Truncated { .. } => Reason::Truncated,
            CollectorError::UnsupportedVersion(_) => Reason::UnsupportedVersion,
            CollectorError::Malformed { .. } => Reason::Malformed,
            CollectorError::TrailingBytes(_) => Reason::TrailingBytes,
            CollectorError::UnknownTemplate { .. } => Reason::UnknownTemplate,
            CollectorError::ClockSkew { .. } => Reason::ClockSkew,
            CollectorError::NoTimeBase => Reason::NoTimeBase,
            CollectorError::Missing(_) | CollectorError::BadField { .. } => Reason::BadRecord,
            CollectorError::OutsideExport { .. } => Reason::AbsurdTime,
            CollectorError::Flow(e) => match e {
                FlowError::AbsurdTime { .. } => Reason::AbsurdTime,
                FlowError::EndBeforeStart { .. } => Reason::TimeBackwards,
                FlowError::PortZero { .. } => Reason::PortZero,
                FlowError::BadProtocol(_)
                | FlowError::MixedFamilies { .. }
                | FlowError::OutcomeNotTcp(_)
                | FlowError::BadUnit { .. } => Reason::BadRecord,
            },
            CollectorError::Parser(_) => Reason::Parser,
        }
    }
}

/// The export stream a message belongs to, within one exporter address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "id")]
pub enum Domain {
    /// NetFlow v5: no templates, no domain.
    V5,
    /// NetFlow v9 source ID.
    V9SourceId(u32),
    /// IPFIX observation domain ID.
    IpfixDomain(u32),
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::V5 => f.write_str("v5"),
            Domain::V9SourceId(id) => write!(f, "v9 source {id}"),
            Domain::IpfixDomain(id) => write!(f, "ipfix domain {id}"),
        }
    }
}

/// Something refused, with who sent it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub exporter: SocketAddr,
    /// Unknown when the datagram is refused before its header is read.
    pub domain: Option<Domain>,
    pub error: CollectorError,
}

impl fmt::Display for Rejection {
    /// `exporter ADDR (DOMAIN): REASON: what was wrong`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exporter {}", self.exporter)?;
        if let Some(domain) = self.domain {
            write!(f, " ({domain})")?;
        }
        write!(f, ": {}: {}", self.reason(), self.error)
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    /// The counted reason.
    pub fn reason(&self) -> Reason {
        self.error.reason()
    }
}

/// What one datagram gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Datagram {
    pub flows: Vec<Flow>,
    pub rejected: Vec<Rejection>,
}

/// Counters since the collector started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CollectorStats {
    pub datagrams: u64,
    pub flows: u64,
    /// Rejections by reason (a datagram, a data set or a record each).
    pub rejected: BTreeMap<Reason, u64>,
    /// Export streams whose templates are kept now.
    pub exporters: usize,
    /// Export streams forgotten to stay within `max_exporters`.
    pub exporters_evicted: u64,
}

impl CollectorStats {
    /// Rejections of one reason.
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }
}

/// One export stream (exporter address and domain), for `flows stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    pub exporter: SocketAddr,
    pub domain: Domain,
    /// When it was last heard, unix ms (collector clock).
    pub last_ms: i64,
    pub datagrams: u64,
    pub flows: u64,
    pub rejected: u64,
    /// Template IDs it has sent that are kept (data and options).
    pub templates: Vec<u16>,
}

/// One export stream's decoder and what it has told us.
#[derive(Debug)]
struct Stream {
    parser: NetflowParser,
    /// When it was last heard (collector clock), for eviction.
    last_ms: i64,
    /// IPFIX `systemInitTimeMilliseconds`, from an options record.
    system_init_ms: Option<i64>,
    datagrams: u64,
    flows: u64,
    rejected: u64,
}

/// Decodes export datagrams from any number of exporters into flows.
#[derive(Debug)]
pub struct Collector {
    config: CollectorConfig,
    streams: HashMap<(SocketAddr, Domain), Stream>,
    stats: CollectorStats,
}

impl Collector {
    /// A collector with `config`, once its limits are checked.
    pub fn new(config: CollectorConfig) -> Result<Self, CollectorConfigError> {
        if config.max_exporters == 0 {
            return Err(CollectorConfigError::Zero("max_exporters"));
        }
        if config.max_templates == 0 {
            return Err(CollectorConfigError::Zero("max_templates"));
        }
        for (name, v) in [
            ("max_clock_skew_ms", config.max_clock_skew_ms),
            ("max_flow_age_ms", config.max_flow_age_ms),
            ("max_future_ms", config.max_future_ms),
        ] {
            if v < 0 {
                return Err(CollectorConfigError::Negative(name));
            }
        }
        Ok(Collector {
            config,
            streams: HashMap::new(),
            stats: CollectorStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> CollectorStats {
        let mut stats = self.stats.clone();
        stats.exporters = self.streams.len();
        stats
    }

    /// Each export stream whose templates are kept, by exporter and domain.
    pub fn streams(&self) -> Vec<StreamStats> {
        let mut out: Vec<StreamStats> = self
            .streams
            .iter()
            .map(|((exporter, domain), s)| StreamStats {
                exporter: *exporter,
                domain: *domain,
                last_ms: s.last_ms,
                datagrams: s.datagrams,
                flows: s.flows,
                rejected: s.rejected,
                templates: match domain {
                    Domain::V5 => vec![],
                    Domain::V9SourceId(_) => s.parser.v9_template_ids(),
                    Domain::IpfixDomain(_) => s.parser.ipfix_template_ids(),
                },
            })
            .collect();
        out.sort_by_key(|s| (s.exporter, s.domain));
        out
    }

    /// Decodes one datagram from `exporter`, received at `received_ms` (unix
    /// ms, the collector's clock).
    pub fn datagram(&mut self, exporter: SocketAddr, bytes: &[u8], received_ms: i64) -> Datagram {
        let mut out = Datagram::default();
        let mut domain = None;
        if let Err(error) = self.decode(exporter, bytes, received_ms, &mut domain, &mut out) {
            out.rejected.push(Rejection {
                exporter,
                domain,
                error,
            });
        }
        if let Some(stream) = domain.and_then(|d| self.streams.get_mut(&(exporter, d))) {
            stream.datagrams += 1;
            stream.flows += out.flows.len() as u64;
            stream.rejected += out.rejected.len() as u64;
        }
        self.stats.datagrams += 1;
        self.stats.flows += out.flows.len() as u64;
        for r in &out.rejected {
            *self.stats.rejected.entry(r.reason()).or_default() += 1;
        }
        out
    }

    fn decode(
        &mut self,
        exporter: SocketAddr,
        bytes: &[u8],
        received_ms: i64,
        domain_out: &mut Option<Domain>,
        out: &mut Datagram,
    ) -> Result<(), CollectorError> {
        let version = match bytes {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => {
                return Err(CollectorError::Truncated {
                    what: "version field",
                    need: 2,
                    got: bytes.len(),
                })
            }
        };
        let header_len = match version {
            5 => 24,
            9 => 20,
            10 => 16,
            v => return Err(CollectorError::UnsupportedVersion(v)),
        };
        if bytes.len() < header_len {
            return Err(CollectorError::Truncated {
                what: "message header",
                need: header_len,
                got: bytes.len(),
            });
        }
        let domain = match extract_scoping_info(bytes) {
            ScopingInfo::V9 { source_id } => Domain::V9SourceId(source_id),
            ScopingInfo::IPFix {
                observation_domain_id,
            } => Domain::IpfixDomain(observation_domain_id),
            _ => Domain::V5,
        };
        *domain_out = Some(domain);
        let config = self.config;
        let stream = self.stream(exporter, domain, received_ms)?;
        let mut packets = stream.parser.iter_packets(bytes);
        let first = packets.next();
        let trailing = packets.remaining().len();
        let packet = match first {
            Some(Ok(packet)) => packet,
            Some(Err(e)) => {
                return Err(match truncation(version, bytes) {
                    Some(t) => t,
                    None => CollectorError::Malformed {
                        version,
                        detail: e.to_string(),
                    },
                })
            }
            None => {
                return Err(CollectorError::Malformed {
                    version,
                    detail: "no message".into(),
                })
            }
        };
        let mut emit = Emit {
            exporter,
            domain,
            config: &config,
            out,
        };
        if trailing > 0 {
            emit.reject(CollectorError::TrailingBytes(trailing));
        }
        match packet {
            NetflowPacket::V5(v5) => emit.v5(&v5, received_ms),
            NetflowPacket::V9(v9) => emit.v9(&v9, received_ms),
            NetflowPacket::IPFix(ipfix) => emit.ipfix(&ipfix, received_ms, stream),
            // v7 is not allowed by the parser this module builds.
            _ => Err(CollectorError::UnsupportedVersion(version)),
        }
    }

    /// The stream's state, made (and an old one evicted) if new.
    fn stream(
        &mut self,
        exporter: SocketAddr,
        domain: Domain,
        now_ms: i64,
    ) -> Result<&mut Stream, CollectorError> {
        let key = (exporter, domain);
        if !self.streams.contains_key(&key) {
            let version = match domain {
                Domain::V5 => 5,
                Domain::V9SourceId(_) => 9,
                Domain::IpfixDomain(_) => 10,
            };
            let parser = NetflowParser::builder()
                .with_allowed_versions(&[version])
                .with_cache_size(self.config.max_templates)
                .build()
                .map_err(|e| CollectorError::Parser(e.to_string()))?;
            if self.streams.len() >= self.config.max_exporters {
                if let Some(oldest) = self
                    .streams
                    .iter()
                    .min_by_key(|(k, s)| (s.last_ms, **k))
                    .map(|(k, _)| *k)
                {
                    self.streams.remove(&oldest);
                    self.stats.exporters_evicted += 1;
                }
            }
            self.streams.insert(
                key,
                Stream {
                    parser,
                    last_ms: now_ms,
                    system_init_ms: None,
                    datagrams: 0,
                    flows: 0,
                    rejected: 0,
                },
            );
        }
        let stream = self
            .streams
            .get_mut(&key)
            .ok_or_else(|| CollectorError::Parser("stream state vanished".into()))?;
        stream.last_ms = stream.last_ms.max(now_ms);
        Ok(stream)
    }
}

/// Whether a message that did not decode is cut short: its own length
/// fields (v5 record count, IPFIX message length, v9 set lengths) reach
/// past the end of the datagram.
fn truncation(version: u16, bytes: &[u8]) -> Option<CollectorError> {
    let be16 = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *bytes.get(at)?,
            *bytes.get(at + 1)?,
        ])))
    };
    let cut = |what, need: usize| {
        (bytes.len() < need).then_some(CollectorError::Truncated {
            what,
            need,
            got: bytes.len(),
        })
    };
    match version {
        5 => cut("v5 records", 24 + 48 * be16(2)?),
        10 => cut("IPFIX message length", be16(2)?),
        9 => {
            // A message has at least one set.
            let mut at = 20;
            if bytes.len() <= at {
                return cut("v9 flowset header", at + 4);
            }
            while at < bytes.len() {
                if at + 4 > bytes.len() {
                    return cut("v9 flowset header", at + 4);
                }
                let len = be16(at + 2)?;
                if len < 4 {
                    return None;
                }
                at += len;
            }
            cut("v9 flowset", at)
        }
        _ => None,
    }
}

/// The export time of a header that has whole seconds only (v9, IPFIX): the
/// middle of that second. Record times placed from it are then at most half
/// a second off, which the attribution engine's clock-skew margin (500 ms by
/// default) covers; the start of the second would be up to a second early.
fn whole_seconds_ms(secs: u32) -> i64 {
    i64::from(secs) * 1000 + 500
}

/// Turns one decoded message into flows and rejections.
struct Emit<'a> {
    exporter: SocketAddr,
    domain: Domain,
    config: &'a CollectorConfig,
    out: &'a mut Datagram,
}

impl Emit<'_> {
    fn reject(&mut self, error: CollectorError) {
        self.out.rejected.push(Rejection {
            exporter: self.exporter,
            domain: Some(self.domain),
            error,
        });
    }

    /// Refuses the whole message when the exporter's clock is off.
    fn check_clock(&self, export_ms: i64, received_ms: i64) -> Result<(), CollectorError> {
        let skew_ms = export_ms.saturating_sub(received_ms).saturating_abs();
        if skew_ms > self.config.max_clock_skew_ms {
            return Err(CollectorError::ClockSkew {
                export_ms,
                received_ms,
                skew_ms,
                max_ms: self.config.max_clock_skew_ms,
            });
        }
        Ok(())
    }

    fn record(&mut self, fields: Result<Fields, CollectorError>, clock: Clock) {
        match fields.and_then(|f| f.flow(clock, self.exporter, self.config)) {
            Ok(flow) => self.out.flows.push(flow),
            Err(e) => self.reject(e),
        }
    }

    fn v5(&mut self, v5: &V5, received_ms: i64) -> Result<(), CollectorError> {
        let h = &v5.header;
        let export_ms = i64::from(h.unix_secs) * 1000 + i64::from(h.unix_nsecs / 1_000_000);
        self.check_clock(export_ms, received_ms)?;
        let clock = Clock {
            export_ms,
            uptime_ms: Some(h.sys_up_time),
        };
        for r in &v5.flowsets {
            let fields = Fields {
                src4: Some(r.src_addr),
                dst4: Some(r.dst_addr),
                src_port: Some(r.src_port),
                dst_port: Some(r.dst_port),
                protocol: Some(r.protocol_number),
                octets: Some(u64::from(r.d_octets)),
                packets: Some(u64::from(r.d_pkts)),
                start: Some(Time::Uptime(r.first)),
                end: Some(Time::Uptime(r.last)),
                ..Fields::default()
            };
            self.record(Ok(fields), clock);
        }
        Ok(())
    }

    fn v9(&mut self, v9: &V9, received_ms: i64) -> Result<(), CollectorError> {
        let h = &v9.header;
        let export_ms = whole_seconds_ms(h.unix_secs);
        self.check_clock(export_ms, received_ms)?;
        let clock = Clock {
            export_ms,
            uptime_ms: Some(h.sys_up_time),
        };
        for set in &v9.flowsets {
            match &set.body {
                V9Body::Data(data) => {
                    for record in &data.fields {
                        self.record(v9_fields(record), clock);
                    }
                }
                V9Body::NoTemplate(info) => self.reject(CollectorError::UnknownTemplate {
                    template_id: info.template_id,
                }),
                _ => {}
            }
        }
        Ok(())
    }

    fn ipfix(
        &mut self,
        msg: &IPFix,
        received_ms: i64,
        stream: &mut Stream,
    ) -> Result<(), CollectorError> {
        let export_ms = whole_seconds_ms(msg.header.export_time);
        self.check_clock(export_ms, received_ms)?;
        let mut seen = 16usize;
        for set in &msg.flowsets {
            seen += usize::from(set.header.length);
            // Options records set the base of uptime-relative times for the
            // records after them, so sets are read in order.
            let clock = Clock {
                export_ms,
                uptime_ms: stream.system_init_ms.map(|init| {
                    // The uptime counter's value at export, mod 2^32.
                    (export_ms - init).rem_euclid(1 << 32) as u32
                }),
            };
            match &set.body {
                IpfixBody::Data(data) => {
                    for record in &data.fields {
                        self.record(ipfix_fields(record), clock);
                    }
                }
                IpfixBody::V9Data(data) => {
                    for record in &data.fields {
                        self.record(v9_fields(record), clock);
                    }
                }
                IpfixBody::OptionsData(options) => {
                    for record in &options.fields {
                        for (field, value) in record {
                            if *field
                                == IPFixField::IANA(IANAIPFixField::SystemInitTimeMilliseconds)
                            {
                                if let Some(ms) =
                                    value.as_u64().and_then(|ms| i64::try_from(ms).ok())
                                {
                                    stream.system_init_ms = Some(ms);
                                }
                            }
                        }
                    }
                }
                IpfixBody::NoTemplate(info) => self.reject(CollectorError::UnknownTemplate {
                    template_id: info.template_id,
                }),
                _ => {}
            }
        }
        // The decoder stops at the first set it cannot read and keeps the
        // ones before it; the rest of the message is lost, and said so.
        let declared = usize::from(msg.header.length);
        if seen < declared {
            self.reject(CollectorError::Malformed {
                version: 10,
                detail: format!(
                    "sets from byte {seen} to the message end at {declared} do not decode"
                ),
            });
        }
        Ok(())
    }
}

#[path = "collector_records.rs"]
mod records;

#[cfg(test)]
#[path = "collector_tests.rs"]
mod tests;
