//! The stored form of flows, graph buckets, evidence and their
//! dictionaries: a batch encoded into column values before any transaction
//! opens, and rows decoded back through `hallmark_flows`' types.
//!
//! Endpoint and owner texts are their serde JSON; a dictionary keys each by
//! its SHA-256, so one text has one row and collisions are out of reach.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hallmark_flows::network::Cidr;
use hallmark_flows::verdict::{
    outcome_word, parse_mode_word, parse_outcome_word, VerdictCounts, OUTCOMES,
};
use hallmark_flows::{
    Endpoint, Evidence, EvidenceKind, Flow, FlowStatus, GraphBucket, Initiator, LocalSide, Owner,
    OwnershipKey, Protocol, Reporter, StoredFlow, TcpOutcome, GRAPH_BUCKET_MS,
};
use sha2::{Digest, Sha256};

use crate::codec::u64_column;
use crate::flows::FlowWrite;
use crate::{Result, StoreError};

/// The SHA-256 of a dictionary text.
pub(super) type Hash = [u8; 32];

/// Texts to keep in one dictionary, by hash, with the latest time each
/// kind of row refers to them (one slot per `used` column).
pub(super) type Entries = BTreeMap<Hash, Entry>;

#[derive(Debug)]
pub(super) struct Entry {
    pub text: String,
    pub used: [Option<i64>; 2],
}

/// A table of texts keyed by hash, with the columns recording when rows of
/// each kind last referred to an entry.
pub(super) struct Dictionary {
    pub table: &'static str,
    pub text: &'static str,
    pub used: &'static [&'static str],
}

/// Workload, node, network and unattributed descriptions: the ends of
/// stored flows (slot 0, by flow start) and graph keys (slot 1, by graph
/// minute; flows refer to their keys too, in slot 0).
pub(super) const ENDPOINTS: Dictionary = Dictionary {
    table: "flow_endpoints",
    text: "endpoint",
    used: &["flow_used_ms", "graph_used_ms"],
};

/// Owners named by evidence (slot 0, by evidence time).
pub(super) const OWNERS: Dictionary = Dictionary {
    table: "flow_owners",
    text: "owner",
    used: &["used_ms"],
};

fn hash(text: &str) -> Hash {
    Sha256::digest(text.as_bytes()).into()
}

/// Adds `text` to `entries`, raising its time in `slot` to `at_ms`.
fn note(entries: &mut Entries, text: String, slot: usize, at_ms: i64) -> Hash {
    let h = hash(&text);
    let entry = entries.entry(h).or_insert(Entry {
        text,
        used: [None, None],
    });
    let used = &mut entry.used[slot];
    *used = Some(used.map_or(at_ms, |u| u.max(at_ms)));
    h
}

fn json<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| {
        StoreError::Database(sqlx::Error::Encode(
            format!("encoding {what} as JSON: {e}").into(),
        ))
    })
}

/// An IP as stored: its family (4 or 6), then its bytes.
pub(super) fn ip_column(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => [&[4u8][..], &a.octets()].concat(),
        IpAddr::V6(a) => [&[6u8][..], &a.octets()].concat(),
    }
}

fn parse_ip_column(b: &[u8]) -> Option<IpAddr> {
    match b {
        [4, rest @ ..] => <[u8; 4]>::try_from(rest)
            .ok()
            .map(|o| Ipv4Addr::from(o).into()),
        [6, rest @ ..] => <[u8; 16]>::try_from(rest)
            .ok()
            .map(|o| Ipv6Addr::from(o).into()),
        _ => None,
    }
}

/// The first and last stored IP of a block.
pub(super) fn cidr_range(c: &Cidr) -> (Vec<u8>, Vec<u8>) {
    match c.addr() {
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(u32::from(c.prefix_len())).unwrap_or(0);
            let lo = u32::from(a) & !host;
            (
                ip_column(Ipv4Addr::from(lo).into()),
                ip_column(Ipv4Addr::from(lo | host).into()),
            )
        }
        IpAddr::V6(a) => {
            let host = u128::MAX
                .checked_shr(u32::from(c.prefix_len()))
                .unwrap_or(0);
            let lo = u128::from(a) & !host;
            (
                ip_column(Ipv6Addr::from(lo).into()),
                ip_column(Ipv6Addr::from(lo | host).into()),
            )
        }
    }
}

fn initiator_column(i: Initiator) -> &'static str {
    match i {
        Initiator::Source => "source",
        Initiator::Destination => "destination",
        Initiator::Unknown => "unknown",
    }
}

fn parse_initiator(s: &str) -> Option<Initiator> {
    match s {
        "source" => Some(Initiator::Source),
        "destination" => Some(Initiator::Destination),
        "unknown" => Some(Initiator::Unknown),
        _ => None,
    }
}

pub(super) fn outcome_column(o: TcpOutcome) -> &'static str {
    match o {
        TcpOutcome::Established => "established",
        TcpOutcome::Refused => "refused",
        TcpOutcome::Reset => "reset",
        TcpOutcome::TimedOut => "timed-out",
    }
}

fn parse_outcome(s: &str) -> Option<TcpOutcome> {
    match s {
        "established" => Some(TcpOutcome::Established),
        "refused" => Some(TcpOutcome::Refused),
        "reset" => Some(TcpOutcome::Reset),
        "timed-out" => Some(TcpOutcome::TimedOut),
        _ => None,
    }
}

fn reporter_column(r: &Reporter) -> String {
    r.to_string()
}

fn parse_reporter(s: &str) -> Option<Reporter> {
    match s.split_once(':')? {
        ("agent", node) => Some(Reporter::Agent(node.to_string())),
        ("exporter", addr) => addr.parse::<SocketAddr>().ok().map(Reporter::Exporter),
        ("file", name) => Some(Reporter::File(name.to_string())),
        _ => None,
    }
}

/// The start of the minute holding `ms`.
pub(super) fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(GRAPH_BUCKET_MS) * GRAPH_BUCKET_MS
}

/// The first minute not before `ms`.
pub(super) fn minute_ceil(ms: i64) -> i64 {
    let m = minute_of(ms);
    if m == ms {
        m
    } else {
        m.saturating_add(GRAPH_BUCKET_MS)
    }
}

/// The span of one `flow_graph_hourly` row: an hour.
pub(super) const GRAPH_HOUR_MS: i64 = 3_600_000;

/// The start of the hour holding `ms`.
pub(super) fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(GRAPH_HOUR_MS) * GRAPH_HOUR_MS
}

/// The first hour not before `ms`.
pub(super) fn hour_ceil(ms: i64) -> i64 {
    let h = hour_of(ms);
    if h == ms {
        h
    } else {
        h.saturating_add(GRAPH_HOUR_MS)
    }
}

/// One flow's columns, its ends and graph keys as dictionary hashes.
pub(super) struct FlowColumns {
    pub start_ms: i64,
    pub end_ms: i64,
    pub protocol: i64,
    pub src_ip: Vec<u8>,
    pub src_port: i64,
    pub dst_ip: Vec<u8>,
    pub dst_port: i64,
    pub initiator: &'static str,
    pub bytes_sent: i64,
    pub packets_sent: i64,
    pub bytes_received: i64,
    pub packets_received: i64,
    pub outcome: Option<String>,
    pub retransmits: i64,
    pub rtt_us: Option<i64>,
    /// Set for flows whose reports are merged per connection.
    pub conn_key: Option<Vec<u8>>,
    pub reporter: String,
    pub local_side: Option<String>,
    pub status: &'static str,
    pub attributed_ms: i64,
    pub verdict: Option<String>,
    pub verdict_rule: Option<String>,
    pub verdict_mode: Option<String>,
    pub policy_revision: Option<i64>,
    pub src_endpoint: Hash,
    pub dst_endpoint: Hash,
    pub src_key: Hash,
    pub dst_key: Hash,
}

/// Columns of `flows` in [`FlowColumns`]' order, after which the four
/// dictionary ids follow.
pub(super) const FLOW_INSERT_COLUMNS: &str = "start_ms, end_ms, protocol, src_ip, src_port, dst_ip, dst_port, initiator, \
     bytes_sent, packets_sent, bytes_received, packets_received, outcome, retransmits, rtt_us, conn_key, \
     reporter, local_side, status, attributed_ms, verdict, verdict_rule, verdict_mode, policy_revision, \
     src_endpoint, dst_endpoint, src_key, dst_key";
pub(super) const FLOW_INSERT_WIDTH: usize = 28;

/// The key of a connection whose reports are merged: the first 16 bytes
/// of the SHA-256 of its protocol, source and destination; `None` for a
/// flow that is not merged ([`Flow::is_mergeable`]).
pub(super) fn conn_key(f: &Flow) -> Option<Vec<u8>> {
    if !f.is_mergeable() {
        return None;
    }
    let mut h = Sha256::new();
    h.update([f.protocol.number()]);
    for a in [f.src, f.dst] {
        h.update(ip_column(a.ip()));
        h.update(a.port().to_be_bytes());
    }
    Some(h.finalize()[..16].to_vec())
}

/// One identity-graph bucket to add, keyed as the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct BucketKey {
    pub minute_ms: i64,
    pub src_key: Hash,
    pub dst_key: Hash,
    pub dst_port: i64,
    pub protocol: i64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct BucketSums {
    pub flows: i64,
    pub bytes: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub refused: i64,
    pub reset: i64,
    /// Flows per verdict, in [`OUTCOMES`]' order.
    pub verdicts: [i64; 4],
}

pub(super) struct EvidenceColumns {
    pub ip: Vec<u8>,
    pub port: Option<i64>,
    pub owner: Hash,
    pub at_ms: i64,
    pub kind: &'static str,
}

/// A batch in column form.
pub(super) struct EncodedWrite {
    pub endpoints: Entries,
    pub owners: Entries,
    pub flows: Vec<FlowColumns>,
    /// Stored rows a report was merged into, by id, as they are now.
    pub updates: Vec<(i64, FlowColumns)>,
    pub buckets: BTreeMap<BucketKey, BucketSums>,
    pub evidence: Vec<EvidenceColumns>,
    pub pending: Vec<String>,
}

impl EncodedWrite {
    /// Encodes the batch: `w`'s evidence and pending flows, the flows to
    /// `insert`, and the stored rows to `update` (their id, the row as
    /// stored, the row merged), whose stored graph contributions are taken
    /// back and merged ones added. Refuses values no column can hold
    /// (counters past `i64::MAX`) before anything is written.
    pub fn new(
        w: &FlowWrite,
        insert: &[&StoredFlow],
        update: &[(i64, &StoredFlow, &StoredFlow)],
    ) -> Result<Self> {
        let mut endpoints = Entries::new();
        let mut owners = Entries::new();
        // One batch names few endpoints many times: each is encoded once.
        let mut seen: HashMap<String, (Hash, String)> = HashMap::new();
        let mut ends = |e: &Endpoint, start_ms: i64| -> Result<(Hash, Hash)> {
            let text = json("a flow endpoint", e)?;
            let minute = minute_of(start_ms);
            let (full, key_text) = match seen.get(&text) {
                Some((h, key)) => (*h, key.clone()),
                None => {
                    let key = json("a graph key", &e.graph_key())?;
                    let h = hash(&text);
                    seen.insert(text.clone(), (h, key.clone()));
                    (h, key)
                }
            };
            note(&mut endpoints, text, 0, start_ms);
            let key = note(&mut endpoints, key_text.clone(), 0, start_ms);
            note(&mut endpoints, key_text, 1, minute);
            Ok((full, key))
        };
        let mut buckets: BTreeMap<BucketKey, BucketSums> = BTreeMap::new();
        let mut encode = |s: &StoredFlow| -> Result<FlowColumns> {
            let f = &s.flow;
            let (src_endpoint, src_key) = ends(&s.src, f.start_ms)?;
            let (dst_endpoint, dst_key) = ends(&s.dst, f.start_ms)?;
            Ok(FlowColumns {
                start_ms: f.start_ms,
                end_ms: f.end_ms,
                protocol: i64::from(f.protocol.number()),
                src_ip: ip_column(f.src.ip()),
                src_port: i64::from(f.src.port()),
                dst_ip: ip_column(f.dst.ip()),
                dst_port: i64::from(f.dst.port()),
                initiator: initiator_column(f.initiator),
                bytes_sent: u64_column("bytes_sent", f.bytes_sent)?,
                packets_sent: u64_column("packets_sent", f.packets_sent)?,
                bytes_received: u64_column("bytes_received", f.bytes_received)?,
                packets_received: u64_column("packets_received", f.packets_received)?,
                outcome: f.outcome.map(|o| outcome_column(o).to_string()),
                retransmits: u64_column("retransmits", f.retransmits)?,
                rtt_us: f.rtt_us.map(i64::from),
                conn_key: conn_key(f),
                reporter: reporter_column(&f.reporter),
                local_side: f
                    .local
                    .as_ref()
                    .map(|l| json("a flow's local side", l))
                    .transpose()?,
                status: s.status.as_str(),
                attributed_ms: s.attributed_ms,
                verdict: s.verdict.map(|v| outcome_word(v).to_string()),
                verdict_rule: s.verdict_rule.clone(),
                verdict_mode: s.verdict_mode.map(|m| m.as_str().to_string()),
                policy_revision: s.policy_revision,
                src_endpoint,
                dst_endpoint,
                src_key,
                dst_key,
            })
        };
        let mut flows = Vec::with_capacity(insert.len());
        for s in insert {
            let cols = encode(s)?;
            add_to_bucket(&mut buckets, &cols, 1)?;
            flows.push(cols);
        }
        let mut updates = Vec::with_capacity(update.len());
        for (id, stored, merged) in update {
            add_to_bucket(&mut buckets, &encode(stored)?, -1)?;
            let cols = encode(merged)?;
            add_to_bucket(&mut buckets, &cols, 1)?;
            updates.push((*id, cols));
        }
        let mut evidence = Vec::with_capacity(w.evidence.len());
        for ev in &w.evidence {
            let owner = note(&mut owners, json("an owner", &ev.owner)?, 0, ev.at_ms);
            evidence.push(EvidenceColumns {
                ip: ip_column(ev.key.ip),
                port: ev.key.port.map(i64::from),
                owner,
                at_ms: ev.at_ms,
                kind: ev.kind.as_str(),
            });
        }
        let pending = w
            .pending_add
            .iter()
            .map(|f| json("a held-back flow", f))
            .collect::<Result<Vec<_>>>()?;
        Ok(EncodedWrite {
            endpoints,
            owners,
            flows,
            updates,
            buckets,
            evidence,
            pending,
        })
    }
}

/// Adds one flow to its bucket (`sign` 1), by the rules of
/// `hallmark_flows::buckets_of`, or takes a stored one back (`sign` -1).
/// A flow taken back leaves the bucket's first and last times as they
/// are: they bound the flows in it.
fn add_to_bucket(
    buckets: &mut BTreeMap<BucketKey, BucketSums>,
    f: &FlowColumns,
    sign: i64,
) -> Result<()> {
    let key = BucketKey {
        minute_ms: minute_of(f.start_ms),
        src_key: f.src_key,
        dst_key: f.dst_key,
        dst_port: f.dst_port,
        protocol: f.protocol,
    };
    let b = buckets.entry(key).or_insert(BucketSums {
        flows: 0,
        bytes: 0,
        first_ms: f.start_ms,
        last_ms: f.end_ms,
        refused: 0,
        reset: 0,
        verdicts: [0; 4],
    });
    let bytes = f
        .bytes_sent
        .checked_add(f.bytes_received)
        .and_then(|n| n.checked_mul(sign))
        .and_then(|n| n.checked_add(b.bytes))
        .ok_or_else(|| {
            StoreError::Database(sqlx::Error::Encode(
                format!(
                    "graph bucket bytes exceed the largest storable integer ({})",
                    i64::MAX
                )
                .into(),
            ))
        })?;
    b.flows += sign;
    b.bytes = bytes;
    if sign > 0 {
        b.first_ms = b.first_ms.min(f.start_ms);
        b.last_ms = b.last_ms.max(f.end_ms);
    }
    match f.outcome.as_deref() {
        Some("refused") => b.refused += sign,
        Some("reset") => b.reset += sign,
        _ => {}
    }
    if let Some(slot) = f
        .verdict
        .as_deref()
        .and_then(|v| OUTCOMES.iter().position(|o| outcome_word(*o) == v))
    {
        b.verdicts[slot] += sign;
    }
    Ok(())
}

fn corrupt(table: &str, id: i64, column: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("table {table}, id {id}: column {column}: {why}"))
}

fn count(table: &str, id: i64, column: &str, n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| corrupt(table, id, column, format!("negative ({n})")))
}

fn port(table: &str, id: i64, column: &str, n: i64) -> Result<u16> {
    u16::try_from(n).map_err(|_| corrupt(table, id, column, format!("{n} is not a port")))
}

fn protocol(table: &str, id: i64, n: i64) -> Result<Protocol> {
    u8::try_from(n)
        .map(Protocol::from_number)
        .map_err(|_| corrupt(table, id, "protocol", format!("{n} is not 0-255")))
}

/// Parses a dictionary text, naming the row that referred to it.
pub(super) fn parse_endpoint(
    table: &str,
    id: i64,
    column: &str,
    text: Option<&str>,
) -> Result<Endpoint> {
    let text = text.ok_or_else(|| corrupt(table, id, column, "no such flow_endpoints row"))?;
    serde_json::from_str(text).map_err(|e| corrupt(table, id, column, e))
}

/// Columns read from `flows`, aliased to [`FlowRow`]'s fields.
pub(super) const FLOW_SELECT_COLUMNS: &str = "f.id, f.start_ms, f.end_ms, f.protocol, f.src_ip, f.src_port, f.dst_ip, \
     f.dst_port, f.initiator, f.bytes_sent, f.packets_sent, f.bytes_received, f.packets_received, f.outcome, \
     f.retransmits, f.rtt_us, f.reporter, f.local_side, f.status, f.attributed_ms, f.verdict, f.verdict_rule, \
     f.verdict_mode, f.policy_revision, f.src_endpoint, f.dst_endpoint, \
     s.endpoint AS src_text, d.endpoint AS dst_text";

/// The joins [`FLOW_SELECT_COLUMNS`] reads the ends' texts from.
pub(super) const FLOW_JOINS: &str = "LEFT JOIN flow_endpoints s ON s.id = f.src_endpoint \
     LEFT JOIN flow_endpoints d ON d.id = f.dst_endpoint";

#[derive(Debug, sqlx::FromRow)]
pub(super) struct FlowRow {
    pub id: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub protocol: i64,
    pub src_ip: Vec<u8>,
    pub src_port: i64,
    pub dst_ip: Vec<u8>,
    pub dst_port: i64,
    pub initiator: String,
    pub bytes_sent: i64,
    pub packets_sent: i64,
    pub bytes_received: i64,
    pub packets_received: i64,
    pub outcome: Option<String>,
    pub retransmits: i64,
    pub rtt_us: Option<i64>,
    pub reporter: String,
    pub local_side: Option<String>,
    pub status: String,
    pub attributed_ms: i64,
    pub verdict: Option<String>,
    pub verdict_rule: Option<String>,
    pub verdict_mode: Option<String>,
    pub policy_revision: Option<i64>,
    pub src_endpoint: i64,
    pub dst_endpoint: i64,
    pub src_text: Option<String>,
    pub dst_text: Option<String>,
}

impl FlowRow {
    /// The stored flow; `cache` holds endpoints parsed for earlier rows.
    pub fn into_flow(self, cache: &mut HashMap<i64, Endpoint>) -> Result<StoredFlow> {
        const T: &str = "flows";
        let id = self.id;
        let ip = |column: &str, b: &[u8]| {
            parse_ip_column(b).ok_or_else(|| corrupt(T, id, column, "not a stored IP address"))
        };
        let src = SocketAddr::new(
            ip("src_ip", &self.src_ip)?,
            port(T, id, "src_port", self.src_port)?,
        );
        let dst = SocketAddr::new(
            ip("dst_ip", &self.dst_ip)?,
            port(T, id, "dst_port", self.dst_port)?,
        );
        let local: Option<LocalSide> = self
            .local_side
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(T, id, "local_side", e))?;
        let flow = Flow {
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            protocol: protocol(T, id, self.protocol)?,
            src,
            dst,
            initiator: parse_initiator(&self.initiator)
                .ok_or_else(|| corrupt(T, id, "initiator", &self.initiator))?,
            bytes_sent: count(T, id, "bytes_sent", self.bytes_sent)?,
            packets_sent: count(T, id, "packets_sent", self.packets_sent)?,
            bytes_received: count(T, id, "bytes_received", self.bytes_received)?,
            packets_received: count(T, id, "packets_received", self.packets_received)?,
            outcome: self
                .outcome
                .as_deref()
                .map(|o| parse_outcome(o).ok_or_else(|| corrupt(T, id, "outcome", o)))
                .transpose()?,
            retransmits: count(T, id, "retransmits", self.retransmits)?,
            rtt_us: self
                .rtt_us
                .map(|n| {
                    u32::try_from(n)
                        .map_err(|_| corrupt(T, id, "rtt_us", format!("{n} is not 0-{}", u32::MAX)))
                })
                .transpose()?,
            reporter: parse_reporter(&self.reporter)
                .ok_or_else(|| corrupt(T, id, "reporter", &self.reporter))?,
            local,
            enforced: None,
        };
        let mut end = |eid: i64, column: &str, text: Option<&str>| -> Result<Endpoint> {
            if let Some(e) = cache.get(&eid) {
                return Ok(e.clone());
            }
            let e = parse_endpoint(T, id, column, text)?;
            cache.insert(eid, e.clone());
            Ok(e)
        };
        let src_end = end(self.src_endpoint, "src_endpoint", self.src_text.as_deref())?;
        let dst_end = end(self.dst_endpoint, "dst_endpoint", self.dst_text.as_deref())?;
        Ok(StoredFlow {
            id,
            flow,
            src: src_end,
            dst: dst_end,
            status: FlowStatus::parse(&self.status)
                .ok_or_else(|| corrupt(T, id, "status", &self.status))?,
            attributed_ms: self.attributed_ms,
            verdict: self
                .verdict
                .as_deref()
                .map(|v| parse_outcome_word(v).ok_or_else(|| corrupt(T, id, "verdict", v)))
                .transpose()?,
            verdict_rule: self.verdict_rule,
            verdict_mode: self
                .verdict_mode
                .as_deref()
                .map(|m| parse_mode_word(m).ok_or_else(|| corrupt(T, id, "verdict_mode", m)))
                .transpose()?,
            policy_revision: self.policy_revision,
        })
    }
}

/// A graph aggregate: a bucket with its keys' texts.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct GraphRow {
    pub minute_ms: i64,
    pub src_key: i64,
    pub dst_key: i64,
    pub dst_port: i64,
    pub protocol: i64,
    pub flows: i64,
    pub bytes: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub refused: i64,
    pub reset: i64,
    pub allowed: i64,
    pub denied: i64,
    pub would_deny: i64,
    pub no_decision: i64,
    pub src_text: Option<String>,
    pub dst_text: Option<String>,
}

impl GraphRow {
    /// The bucket, with `minute_ms` rounded down to its minute.
    pub fn into_bucket(self, table: &str) -> Result<(String, String, GraphBucket)> {
        // Named by its minute: graph rows have no id of their own.
        let id = self.minute_ms;
        let key = |column: &str, key_id: i64, text: Option<&str>| {
            parse_endpoint(table, id, column, text).map_err(|e| match e {
                StoreError::Corrupt(m) => StoreError::Corrupt(format!("{m} (key {key_id})")),
                other => other,
            })
        };
        let src = key("src_key", self.src_key, self.src_text.as_deref())?;
        let dst = key("dst_key", self.dst_key, self.dst_text.as_deref())?;
        let (src_text, dst_text) = (
            self.src_text.unwrap_or_default(),
            self.dst_text.unwrap_or_default(),
        );
        let bucket = GraphBucket {
            minute_ms: minute_of(self.minute_ms),
            src,
            dst,
            dst_port: port(table, id, "dst_port", self.dst_port)?,
            protocol: protocol(table, id, self.protocol)?,
            flows: count(table, id, "flows", self.flows)?,
            bytes: count(table, id, "bytes", self.bytes)?,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            refused: count(table, id, "refused", self.refused)?,
            reset: count(table, id, "reset", self.reset)?,
            verdicts: VerdictCounts {
                allowed: count(table, id, "allowed", self.allowed)?,
                denied: count(table, id, "denied", self.denied)?,
                would_deny: count(table, id, "would_deny", self.would_deny)?,
                no_decision: count(table, id, "no_decision", self.no_decision)?,
            },
        };
        Ok((src_text, dst_text, bucket))
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct EvidenceRow {
    pub id: i64,
    pub ip: Vec<u8>,
    pub port: Option<i64>,
    pub at_ms: i64,
    pub kind: String,
    pub owner: Option<String>,
}

/// Columns read from `flow_evidence e` joined to `flow_owners o`.
pub(super) const EVIDENCE_SELECT: &str = "SELECT e.id, e.ip, e.port, e.at_ms, e.kind, o.owner \
     FROM flow_evidence e LEFT JOIN flow_owners o ON o.id = e.owner_id";

impl EvidenceRow {
    pub fn into_evidence(self) -> Result<(i64, Evidence)> {
        const T: &str = "flow_evidence";
        let id = self.id;
        let ip = parse_ip_column(&self.ip)
            .ok_or_else(|| corrupt(T, id, "ip", "not a stored IP address"))?;
        let port = self.port.map(|p| port(T, id, "port", p)).transpose()?;
        let owner_text = self
            .owner
            .ok_or_else(|| corrupt(T, id, "owner_id", "no such flow_owners row"))?;
        let owner: Owner =
            serde_json::from_str(&owner_text).map_err(|e| corrupt(T, id, "owner_id", e))?;
        let kind =
            EvidenceKind::parse(&self.kind).ok_or_else(|| corrupt(T, id, "kind", &self.kind))?;
        Ok((
            id,
            Evidence {
                key: OwnershipKey { ip, port },
                owner,
                at_ms: self.at_ms,
                kind,
            },
        ))
    }
}

#[cfg(test)]
#[path = "flow_rows_tests.rs"]
mod tests;
