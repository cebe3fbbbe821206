//! `hallmark flows ingest`: stream a flow log file (or standard input) to
//! the server's `IngestFlows`, line by line, in batches.
//!
//! A reader thread turns lines into flows (or skips, or rejects them with
//! the line number and the rule) while the async side sends batches, so a
//! large file is never held in memory and a slow server slows the reader
//! down instead of growing a queue. Bad lines never stop the run: they are
//! counted by reason and the first line numbers of each are kept for the
//! summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use hallmark_flows::jsonl::{self, JsonlError, JsonlRecord};
use hallmark_flows::{Flow, VpcError, VpcFormat, VpcRecord};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_client::AdminClient;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::client;
use crate::connect::{admin_error, AdminArgs};
use crate::output::{out, print_json, table};

/// `--help` for `ingest`: what is read, and what the exit status means.
pub const LONG_ABOUT: &str = "\
Read a flow log and send its flows to the server, which attributes both ends
of each by IP ownership (flow logs carry no local identity).

--format aws-vpc reads AWS VPC Flow Logs: the default (version 2) format, or a
custom format announced by a header line naming its fields (v3-v5 fields such
as tcp-flags, pkt-srcaddr, pkt-dstaddr and flow-direction are understood). A
header may appear again further on (concatenated files). NODATA and SKIPDATA
records are counted and skipped. Compressed files are not read: use
`zcat FILE.gz | hallmark flows ingest --format aws-vpc -`.

--format jsonl reads Hallmark's own flow schema, one JSON object a line:
start_ms, end_ms, protocol, src, dst (IP:PORT) and optionally initiator,
bytes_sent, packets_sent, bytes_received, packets_received and outcome. The
file is the flows' reporter; a line with `local` is refused (a file cannot
know which end was local).

Blank lines and lines starting with # are skipped. A line that breaks a rule
(malformed, truncated, port 0, end before start, a time outside 2000-2100,
mixed IP versions, ...) is rejected and counted by reason; the summary names
the first line numbers of each reason. Flows are sent in batches of 1000 (or
after a second without new lines, for a live pipe); on a terminal, progress
is shown on stderr.

Exit status: 0 when the whole input was read and the server took every
batch, even if some lines were rejected (the summary lists them; the good
lines are stored, so running again would store them twice). 1 when the
input cannot be read (missing file, compressed, bad header), the server
cannot be reached or refuses a batch (the summary says up to which line
flows were acknowledged), or the input held flow lines and none was
accepted (probably the wrong --format).";

/// Flows per `IngestFlows` request.
const BATCH: usize = 1000;
/// A partial batch is sent after this long without a new flow, so a live
/// pipe (`tail -F … |`) does not wait for a thousand lines.
const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// Longest line read; a longer one is rejected and skipped, so a file
/// without newlines cannot exhaust memory.
const MAX_LINE: usize = 64 * 1024;
/// Line numbers kept per rejection reason.
const FIRST_LINES: usize = 5;
/// Server error messages kept for the summary.
const SERVER_ERRORS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IngestFormat {
    /// AWS VPC Flow Logs (default v2 format, or a header line).
    AwsVpc,
    /// Hallmark's flow schema, one JSON object a line.
    Jsonl,
}

impl IngestFormat {
    fn as_str(self) -> &'static str {
        match self {
            IngestFormat::AwsVpc => "aws-vpc",
            IngestFormat::Jsonl => "jsonl",
        }
    }
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// The flow log to read, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// The file's format.
    #[arg(long, value_enum)]
    pub format: IngestFormat,
    #[command(flatten)]
    pub conn: AdminArgs,
}

/// What one line turned out to be.
#[derive(Debug, PartialEq)]
enum Line {
    Flow(Box<Flow>),
    /// Counted under this name and skipped.
    Skip(&'static str),
    /// Refused: the reason's short name and the rule in words.
    Reject(String, String),
    /// The rest of the input cannot be read (a bad header).
    Fatal(String),
}

/// Turns lines into flows for one input.
struct Parser {
    source: String,
    kind: IngestFormat,
    vpc: VpcFormat,
}

impl Parser {
    fn new(kind: IngestFormat, source: &str) -> Self {
        Parser {
            source: source.to_string(),
            kind,
            vpc: VpcFormat::default(),
        }
    }

    fn line(&mut self, text: &str) -> Line {
        let t = text.trim();
        if t.is_empty() {
            return Line::Skip("blank");
        }
        if t.starts_with('#') {
            return Line::Skip("comment");
        }
        match self.kind {
            IngestFormat::AwsVpc => {
                if VpcFormat::is_header(t) {
                    return match VpcFormat::from_header(t) {
                        Ok(f) => {
                            self.vpc = f;
                            Line::Skip("header")
                        }
                        Err(e) => Line::Fatal(format!("header: {e}")),
                    };
                }
                match self.vpc.parse(t, &self.source) {
                    Ok(VpcRecord::Flow(f)) => Line::Flow(f),
                    Ok(VpcRecord::NoData) => Line::Skip("nodata"),
                    Ok(VpcRecord::SkipData) => Line::Skip("skipdata"),
                    Err(e) => Line::Reject(vpc_reason(&e), e.to_string()),
                }
            }
            IngestFormat::Jsonl => match jsonl::parse_line(t, &self.source) {
                Ok(JsonlRecord::Flow(f)) if f.local.is_some() => Line::Reject(
                    "local-side".into(),
                    "`local` is set, but a flow from a file has no local side: both ends are \
                     attributed by IP ownership"
                        .into(),
                ),
                Ok(JsonlRecord::Flow(f)) => Line::Flow(f),
                Ok(JsonlRecord::Skip) => Line::Skip("blank"),
                Err(JsonlError::Syntax(e)) => {
                    Line::Reject("json".into(), format!("not a flow object: {e}"))
                }
                Err(JsonlError::Flow(e)) => Line::Reject(e.reason().into(), e.to_string()),
            },
        }
    }
}

fn vpc_reason(e: &VpcError) -> String {
    match e {
        VpcError::FieldCount { .. } => "field-count".into(),
        VpcError::BadValue { field, .. } => format!("bad-{field}"),
        VpcError::Unavailable(field) => format!("missing-{field}"),
        VpcError::Flow(f) => f.reason().into(),
        VpcError::UnknownField(_) | VpcError::DuplicateField(_) | VpcError::MissingField(_) => {
            "header".into()
        }
    }
}

/// The lines of one rejection reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct Rejects {
    reason: String,
    count: u64,
    /// The first few line numbers (1-based).
    first_lines: Vec<u64>,
    /// The first one, in words.
    example: String,
}

/// What the reader saw.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    lines: u64,
    flows: u64,
    skipped: BTreeMap<&'static str, u64>,
    rejected: BTreeMap<String, Rejects>,
}

impl Tally {
    fn reject(&mut self, line_no: u64, reason: String, rule: String) {
        let r = self
            .rejected
            .entry(reason.clone())
            .or_insert_with(|| Rejects {
                reason,
                example: format!("line {line_no}: {rule}"),
                ..Rejects::default()
            });
        r.count += 1;
        if r.first_lines.len() < FIRST_LINES {
            r.first_lines.push(line_no);
        }
    }

    fn rejected_lines(&self) -> u64 {
        self.rejected.values().map(|r| r.count).sum()
    }
}

/// One line as read: its bytes, or the fact that it was too long.
enum RawLine {
    Text(Vec<u8>),
    TooLong(usize),
}

/// Reads the next line (without its `\n` or `\r\n`), at most `max` bytes
/// of it kept; `None` at the end of input.
fn read_line(r: &mut impl BufRead, max: usize) -> io::Result<Option<RawLine>> {
    let mut buf = Vec::new();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        len += part.len();
        if len <= max {
            buf.extend_from_slice(part);
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if len > max {
        return Ok(Some(RawLine::TooLong(len)));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(RawLine::Text(buf)))
}

/// Reads every line of `input`, sending each flow (with its line number)
/// to `tx`; stops early at a fatal line or when the receiver is gone.
fn read_all(
    mut input: impl BufRead,
    mut parser: Parser,
    tx: &mpsc::Sender<(u64, pb::FlowRecord)>,
    lines_read: &AtomicU64,
) -> (Tally, Option<anyhow::Error>) {
    let mut tally = Tally::default();
    loop {
        let raw = match read_line(&mut input, MAX_LINE) {
            Ok(Some(raw)) => raw,
            Ok(None) => return (tally, None),
            Err(e) => {
                let at = tally.lines + 1;
                return (
                    tally,
                    Some(anyhow!("reading {} at line {at}: {e}", parser.source)),
                );
            }
        };
        tally.lines += 1;
        let n = tally.lines;
        lines_read.store(n, Ordering::Relaxed);
        let text = match raw {
            RawLine::TooLong(len) => {
                tally.reject(
                    n,
                    "line-too-long".into(),
                    format!("{len} bytes, more than the {MAX_LINE} a flow line may have"),
                );
                continue;
            }
            RawLine::Text(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    tally.reject(
                        n,
                        "not-utf8".into(),
                        format!(
                            "not UTF-8 text (invalid byte at column {})",
                            e.utf8_error().valid_up_to() + 1
                        ),
                    );
                    continue;
                }
            },
        };
        match parser.line(&text) {
            Line::Flow(f) => {
                tally.flows += 1;
                if tx.blocking_send((n, pb::FlowRecord::from(&*f))).is_err() {
                    // The sender stopped (the server refused a batch); it
                    // reports why.
                    return (tally, None);
                }
            }
            Line::Skip(what) => *tally.skipped.entry(what).or_default() += 1,
            Line::Reject(reason, rule) => tally.reject(n, reason, rule),
            Line::Fatal(msg) => {
                return (tally, Some(anyhow!("{} line {n}: {msg}", parser.source)));
            }
        }
    }
}

/// What `ingest` prints at the end (`--json`: this document).
#[derive(Debug, Default, Serialize)]
struct Summary {
    source: String,
    format: &'static str,
    /// Lines read.
    lines: u64,
    /// Lines that held a valid flow.
    flows_read: u64,
    /// Flows the server took.
    accepted: u64,
    /// Lines skipped, by kind: header, nodata, skipdata, comment, blank.
    skipped: BTreeMap<&'static str, u64>,
    /// Lines refused here, and why.
    rejected: u64,
    rejected_by_reason: Vec<Rejects>,
    /// Flows the server refused, and its reasons (the first few).
    server_rejected: u64,
    server_errors: Vec<String>,
    /// The last line whose flows the server acknowledged.
    acknowledged_through_line: u64,
    /// The whole input was read and every batch acknowledged.
    complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(a: IngestArgs) -> Result<()> {
    let input = open(&a.file)?;
    let mut c = client(&a.conn).await?;
    let source = a.file.clone();
    let parser = Parser::new(a.format, &source);
    let lines_read = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<(u64, pb::FlowRecord)>(4 * BATCH);
    let reader = {
        let lines_read = lines_read.clone();
        tokio::task::spawn_blocking(move || read_all(input, parser, &tx, &lines_read))
    };
    let mut summary = Summary {
        source: source.clone(),
        format: a.format.as_str(),
        ..Summary::default()
    };
    let progress = std::io::stderr().is_terminal().then_some(&*lines_read);
    let send_error = send_all(&mut c, &source, rx, &mut summary, progress)
        .await
        .err();
    let (tally, read_error) = reader
        .await
        .map_err(|e| anyhow!("the reader thread failed: {e}"))?;
    summary.lines = tally.lines;
    summary.flows_read = tally.flows;
    summary.rejected = tally.rejected_lines();
    summary.skipped = tally.skipped;
    summary.rejected_by_reason = tally.rejected.into_values().collect();
    // A refused batch stops the reader, so its error is the cause.
    let error = send_error.or(read_error);
    summary.complete = error.is_none();
    summary.error = error.as_ref().map(|e| format!("{e:#}"));
    if a.conn.json {
        print_json(&summary)?;
    } else {
        out!("{}", render(&summary))?;
    }
    if let Some(e) = error {
        return Err(e.context(format!(
            "ingesting {source} stopped; {}",
            acknowledged(&summary)
        )));
    }
    if summary.accepted == 0 && summary.rejected + summary.server_rejected > 0 {
        bail!(
            "no flow of {source} was accepted ({} lines rejected): is --format {} right?",
            summary.rejected + summary.server_rejected,
            summary.format
        );
    }
    Ok(())
}

/// Opens FILE or standard input; refuses a compressed file by its magic
/// bytes rather than reporting every line of it as malformed. Standard
/// input is not peeked at: it may have nothing to say yet (a
/// live pipe), and the connection is checked first.
fn open(file: &str) -> Result<Box<dyn BufRead + Send>> {
    if file == "-" {
        return Ok(Box::new(BufReader::with_capacity(256 * 1024, io::stdin())));
    }
    let f = File::open(file).with_context(|| format!("opening {file}"))?;
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let head = r.fill_buf().with_context(|| format!("reading {file}"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        bail!("{file} is gzip-compressed: decompress it first (`zcat {file} | hallmark flows ingest --format … -`)");
    }
    if head.starts_with(b"\x28\xb5\x2f\xfd") {
        bail!("{file} is zstd-compressed: decompress it first (`zstdcat {file} | hallmark flows ingest --format … -`)");
    }
    Ok(Box::new(r))
}

/// Where batches go: the admin API, or a test's stand-in.
trait Sink {
    async fn ingest(
        &mut self,
        req: pb::IngestFlowsRequest,
    ) -> Result<pb::IngestFlowsResponse, tonic::Status>;
}

impl Sink for AdminClient<Channel> {
    async fn ingest(
        &mut self,
        req: pb::IngestFlowsRequest,
    ) -> Result<pb::IngestFlowsResponse, tonic::Status> {
        self.ingest_flows(req)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Receives flows from the reader and sends them in batches, folding the
/// server's answers into `summary`.
async fn send_all(
    c: &mut impl Sink,
    source: &str,
    mut rx: mpsc::Receiver<(u64, pb::FlowRecord)>,
    summary: &mut Summary,
    progress: Option<&AtomicU64>,
) -> Result<()> {
    let mut batch: Vec<pb::FlowRecord> = Vec::with_capacity(BATCH);
    let mut lines = (0u64, 0u64);
    let flush = tokio::time::sleep(FLUSH_AFTER);
    tokio::pin!(flush);
    // The first progress line after half a second: a short file shows none.
    let every = Duration::from_millis(500);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut sent = 0u64;
    let result = loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some((line, rec)) => {
                    if batch.is_empty() {
                        lines.0 = line;
                        flush.as_mut().reset(tokio::time::Instant::now() + FLUSH_AFTER);
                    }
                    lines.1 = line;
                    batch.push(rec);
                    if batch.len() >= BATCH {
                        sent += batch.len() as u64;
                        if let Err(e) = send(c, source, &mut batch, lines, summary).await {
                            break Err(e);
                        }
                    }
                }
                None => {
                    break send(c, source, &mut batch, lines, summary).await;
                }
            },
            () = &mut flush, if !batch.is_empty() => {
                sent += batch.len() as u64;
                if let Err(e) = send(c, source, &mut batch, lines, summary).await {
                    break Err(e);
                }
            }
            _ = tick.tick(), if progress.is_some() => {
                if let Some(read) = progress {
                    eprint!("\r{} lines read, {sent} flows sent", read.load(Ordering::Relaxed));
                    let _ = io::stderr().flush();
                }
            }
        }
    };
    if progress.is_some() {
        // Clear the progress line.
        eprint!("\r\x1b[K");
    }
    result
}

/// Sends one batch (if any) and empties it.
async fn send(
    c: &mut impl Sink,
    source: &str,
    batch: &mut Vec<pb::FlowRecord>,
    lines: (u64, u64),
    summary: &mut Summary,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let flows = std::mem::take(batch);
    let resp = c
        .ingest(pb::IngestFlowsRequest {
            source: source.to_string(),
            flows,
        })
        .await
        .map_err(|s| {
            admin_error(s).context(format!(
                "sending the flows of lines {}-{}",
                lines.0, lines.1
            ))
        })?;
    summary.accepted += resp.accepted;
    summary.server_rejected += resp.rejected;
    for e in resp.errors {
        if summary.server_errors.len() < SERVER_ERRORS {
            summary
                .server_errors
                .push(format!("lines {}-{}: {e}", lines.0, lines.1));
        }
    }
    summary.acknowledged_through_line = lines.1;
    Ok(())
}

fn render(s: &Summary) -> String {
    let mut out = format!(
        "Read {} lines of {} ({}): {} flows, {} accepted by the server.\n",
        s.lines, s.source, s.format, s.flows_read, s.accepted
    );
    let skipped: u64 = s.skipped.values().sum();
    if skipped > 0 {
        let parts: Vec<String> = s.skipped.iter().map(|(k, n)| format!("{n} {k}")).collect();
        out.push_str(&format!("Skipped {skipped} lines: {}.\n", parts.join(", ")));
    }
    if s.rejected > 0 {
        out.push_str(&format!("Rejected {} lines:\n", s.rejected));
        let rows = s
            .rejected_by_reason
            .iter()
            .map(|r| {
                let mut lines: Vec<String> = r.first_lines.iter().map(u64::to_string).collect();
                if r.count > r.first_lines.len() as u64 {
                    lines.push("…".into());
                }
                vec![
                    r.reason.clone(),
                    r.count.to_string(),
                    lines.join(","),
                    r.example.clone(),
                ]
            })
            .collect();
        for line in table(&["REASON", "COUNT", "LINES", "FIRST"], rows).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if s.server_rejected > 0 {
        out.push_str(&format!(
            "The server refused {} flows:\n",
            s.server_rejected
        ));
        for e in &s.server_errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    if !s.complete {
        out.push_str(&format!("Stopped early: {}.\n", acknowledged(s)));
    }
    out
}

/// How far the server acknowledged, for a run that stopped early.
fn acknowledged(s: &Summary) -> String {
    match s.acknowledged_through_line {
        0 => "the server acknowledged no flow".to_string(),
        n => format!("the server acknowledged the flows through line {n}"),
    }
}

#[cfg(test)]
#[path = "ingest_tests.rs"]
mod tests;
