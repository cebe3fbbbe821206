#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::io::Cursor;

use super::*;

const HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status tcp-flags pkt-srcaddr pkt-dstaddr flow-direction";

/// Reads `text` as `format`, collecting the flows sent.
fn ingest(format: IngestFormat, text: &str) -> (Tally, Option<String>, Vec<(u64, pb::FlowRecord)>) {
    let (tx, mut rx) = mpsc::channel(10_000);
    let lines = AtomicU64::new(0);
    let (tally, err) = read_all(
        Cursor::new(text.as_bytes().to_vec()),
        Parser::new(format, "test.log"),
        &tx,
        &lines,
    );
    drop(tx);
    let mut sent = Vec::new();
    while let Ok(x) = rx.try_recv() {
        sent.push(x);
    }
    assert_eq!(lines.load(Ordering::Relaxed), tally.lines);
    (tally, err.map(|e| format!("{e:#}")), sent)
}

#[test]
fn vpc_default_and_custom_formats_with_bad_lines() {
    let text = [
        // 1: default v2 record
        "2 123456789010 eni-1235b8ca 10.0.1.5 10.0.2.7 49761 443 6 20 4249 1700000000 1700000060 ACCEPT OK",
        // 2: NODATA
        "2 123456789010 eni-1235b8ca - - - - - - - 1700000000 1700000060 - NODATA",
        // 3: truncated
        "2 123456789010 eni-1235b8ca 10.0.1.5 10.0.2.7 49761",
        // 4: a header switches to a custom format
        HEADER,
        // 5: custom record whose packet addresses win
        "3 123456789010 eni-1 10.0.0.9 10.0.0.8 40000 5432 6 3 180 1700000100 1700000101 ACCEPT OK 2 10.0.1.5 10.0.2.9 egress",
        // 6: port 0 on TCP
        "3 123456789010 eni-1 10.0.0.9 10.0.0.8 0 5432 6 3 180 1700000100 1700000101 ACCEPT OK 2 - - egress",
        // 7: end before start
        "3 123456789010 eni-1 10.0.0.9 10.0.0.8 40000 5432 6 3 180 1700000100 1700000000 ACCEPT OK 2 - - egress",
        // 8: milliseconds where seconds belong
        "3 123456789010 eni-1 10.0.0.9 10.0.0.8 40000 5432 6 3 180 1700000100000 1700000100000 ACCEPT OK 2 - - egress",
        // 9: SKIPDATA
        "3 123456789010 eni-1 - - - - - - - 1700000100 1700000101 - SKIPDATA - - - -",
        // 10: blank, 11: comment
        "",
        "# exported by hand",
        // 12: not an address
        "3 123456789010 eni-1 10.0.0.300 10.0.0.8 40000 5432 6 3 180 1700000100 1700000101 ACCEPT OK 2 - - egress",
        // 13: mixed IP versions
        "3 123456789010 eni-1 10.0.0.9 fd00::8 40000 5432 6 3 180 1700000100 1700000101 ACCEPT OK 2 - - egress",
    ]
    .join("\n");
    let (tally, err, sent) = ingest(IngestFormat::AwsVpc, &text);
    assert_eq!(err, None);
    assert_eq!(tally.lines, 13);
    assert_eq!(tally.flows, 2);
    let lines: Vec<u64> = sent.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, [1, 5]);
    assert_eq!(sent[0].1.dst_port, 443);
    assert_eq!(sent[0].1.bytes_sent, 4249);
    assert_eq!(sent[0].1.start_ms, 1_700_000_000_000);
    assert_eq!(sent[1].1.src_ip, "10.0.1.5", "pkt-srcaddr wins");
    assert_eq!(sent[1].1.dst_ip, "10.0.2.9", "pkt-dstaddr wins");
    assert_eq!(sent[1].1.initiator, "source", "a SYN went from the source");
    let skipped: Vec<(&str, u64)> = tally.skipped.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        skipped,
        [
            ("blank", 1),
            ("comment", 1),
            ("header", 1),
            ("nodata", 1),
            ("skipdata", 1)
        ]
    );
    let rejected: Vec<(&str, u64, Vec<u64>)> = tally
        .rejected
        .values()
        .map(|r| (r.reason.as_str(), r.count, r.first_lines.clone()))
        .collect();
    assert_eq!(
        rejected,
        [
            ("absurd-time", 1, vec![8]),
            ("bad-srcaddr", 1, vec![12]),
            ("field-count", 1, vec![3]),
            ("mixed-families", 1, vec![13]),
            ("port-zero", 1, vec![6]),
            ("time-backwards", 1, vec![7]),
        ]
    );
    let example = &tally.rejected["field-count"].example;
    assert_eq!(example, "line 3: record has 6 fields, the format has 14");
}

#[test]
fn a_bad_header_stops_the_run_naming_the_line() {
    let text = format!(
        "{}\nversion srcaddr dstaddr bogus-field\n{}",
        "2 1 eni-1 10.0.1.5 10.0.2.7 49761 443 6 20 4249 1700000000 1700000060 ACCEPT OK",
        "2 1 eni-1 10.0.1.5 10.0.2.7 49761 443 6 20 4249 1700000000 1700000060 ACCEPT OK",
    );
    let (tally, err, sent) = ingest(IngestFormat::AwsVpc, &text);
    assert_eq!(sent.len(), 1, "the line before the header was read");
    assert_eq!(tally.lines, 2);
    let err = err.unwrap();
    assert!(err.contains("test.log line 2: header"), "{err}");
    assert!(err.contains("bogus-field"), "{err}");
}

#[test]
fn jsonl_lines_and_their_rules() {
    let good = r#"{"start_ms":1700000000000,"end_ms":1700000000500,"protocol":"udp","src":"10.0.0.1:5353","dst":"10.0.0.2:53","bytes_sent":80,"packets_sent":1}"#;
    let text = [
        good,
        "{\"start_ms\":1700000000000",
        r#"{"start_ms":1700000000000,"end_ms":1700000000500,"protocol":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:2","outcome":"refused","local":{"side":"source","owner":{"kind":"node","context":"c","node":"n"}}}"#,
        r#"{"start_ms":1700000000000,"end_ms":1700000000500,"protocol":"udp","src":"10.0.0.1:5353","dst":"10.0.0.2:0"}"#,
        "   ",
        "# comment",
    ]
    .join("\r\n");
    let (tally, err, sent) = ingest(IngestFormat::Jsonl, &text);
    assert_eq!(err, None);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.protocol, 17);
    assert_eq!(sent[0].1.dst_port, 53);
    let reasons: Vec<&str> = tally.rejected.keys().map(String::as_str).collect();
    assert_eq!(reasons, ["json", "local-side", "port-zero"]);
    assert_eq!(tally.rejected["json"].first_lines, [2]);
    assert!(
        tally.rejected["port-zero"]
            .example
            .contains("line 4: destination port is 0"),
        "{:?}",
        tally.rejected["port-zero"]
    );
}

#[test]
fn long_lines_and_binary_are_rejected_not_fatal() {
    let mut text = "x".repeat(MAX_LINE + 10).into_bytes();
    text.extend_from_slice(b"\n\xff\xfe garbage\n");
    text.extend_from_slice(
        b"2 1 eni-1 10.0.1.5 10.0.2.7 49761 443 6 20 4249 1700000000 1700000060 ACCEPT OK",
    );
    let (tx, mut rx) = mpsc::channel(10);
    let lines = AtomicU64::new(0);
    let (tally, err) = read_all(
        Cursor::new(text),
        Parser::new(IngestFormat::AwsVpc, "bin"),
        &tx,
        &lines,
    );
    assert!(err.is_none());
    assert_eq!(tally.lines, 3);
    assert_eq!(tally.flows, 1, "the last line has no newline and is read");
    assert!(rx.try_recv().is_ok());
    assert_eq!(tally.rejected["line-too-long"].first_lines, [1]);
    assert_eq!(tally.rejected["not-utf8"].first_lines, [2]);
}

#[test]
fn first_lines_are_bounded_and_counts_are_not() {
    let bad = "2 1 eni-1 10.0.1.5\n".repeat(12);
    let (tally, _, _) = ingest(IngestFormat::AwsVpc, &bad);
    let r = &tally.rejected["field-count"];
    assert_eq!(r.count, 12);
    assert_eq!(r.first_lines, [1, 2, 3, 4, 5]);
}

#[test]
fn compressed_input_is_refused_before_reading() {
    let dir = std::env::temp_dir().join(format!("hm-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gz = dir.join("flows.log.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
    let e = open(gz.to_str().unwrap()).err().unwrap().to_string();
    assert!(e.contains("gzip-compressed") && e.contains("zcat"), "{e}");
    let e = format!(
        "{:#}",
        open(dir.join("missing").to_str().unwrap()).err().unwrap()
    );
    assert!(e.contains("opening") && e.contains("No such file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn summary_text_names_reasons_and_lines() {
    let mut tally = Tally::default();
    for n in [3, 9, 11, 12, 20, 31] {
        tally.reject(
            n,
            "field-count".into(),
            "record has 3 fields, the format has 14".into(),
        );
    }
    let s = Summary {
        source: "vpc.log".into(),
        format: "aws-vpc",
        lines: 40,
        flows_read: 30,
        accepted: 29,
        skipped: [("nodata", 4)].into(),
        rejected: 6,
        rejected_by_reason: tally.rejected.into_values().collect(),
        server_rejected: 1,
        server_errors: vec!["lines 1-40: flow record: field `dst_port`: …".into()],
        acknowledged_through_line: 40,
        complete: true,
        error: None,
    };
    let text = render(&s);
    for needle in [
        "Read 40 lines of vpc.log (aws-vpc): 30 flows, 29 accepted by the server.",
        "Skipped 4 lines: 4 nodata.",
        "Rejected 6 lines:",
        "field-count  6      3,9,11,12,20,…  line 3: record has 3 fields",
        "The server refused 1 flows:",
        "lines 1-40: flow record",
    ] {
        assert!(text.contains(needle), "want `{needle}` in:\n{text}");
    }
    assert!(!text.contains("Stopped early"));
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(
        v["rejected_by_reason"][0]["first_lines"],
        serde_json::json!([3, 9, 11, 12, 20])
    );
    assert_eq!(v["skipped"]["nodata"], 4);
    assert!(v.get("error").is_none());
}

/// A server stand-in: records each batch; refuses the first flow of the
/// second batch, or fails the call `fail_on` (1-based).
#[derive(Default)]
struct FakeSink {
    batches: Vec<pb::IngestFlowsRequest>,
    fail_on: Option<usize>,
}

impl Sink for FakeSink {
    async fn ingest(
        &mut self,
        req: pb::IngestFlowsRequest,
    ) -> Result<pb::IngestFlowsResponse, tonic::Status> {
        self.batches.push(req.clone());
        let n = self.batches.len();
        if self.fail_on == Some(n) {
            return Err(tonic::Status::unavailable("server went away"));
        }
        let rejected = u64::from(n == 2);
        Ok(pb::IngestFlowsResponse {
            accepted: req.flows.len() as u64 - rejected,
            rejected,
            errors: (rejected > 0)
                .then(|| "flow record: field `dst_port`: 0".to_string())
                .into_iter()
                .collect(),
        })
    }
}

/// 2500 flows on lines 2, 4, 6, … (odd lines were skipped).
async fn send_through(sink: &mut FakeSink) -> (Summary, Result<()>) {
    let (tx, rx) = mpsc::channel(4 * BATCH);
    let rec = pb::FlowRecord {
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_000_000,
        protocol: 17,
        src_ip: "10.0.0.1".into(),
        src_port: 1,
        dst_ip: "10.0.0.2".into(),
        dst_port: 2,
        ..pb::FlowRecord::default()
    };
    for i in 1..=2500u64 {
        tx.send((2 * i, rec.clone())).await.unwrap();
    }
    drop(tx);
    let mut summary = Summary::default();
    let r = send_all(sink, "vpc.log", rx, &mut summary, None).await;
    (summary, r)
}

#[tokio::test]
async fn flows_go_in_batches_of_a_thousand_with_their_lines() {
    let mut sink = FakeSink::default();
    let (s, r) = send_through(&mut sink).await;
    r.unwrap();
    let sizes: Vec<usize> = sink.batches.iter().map(|b| b.flows.len()).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert!(sink.batches.iter().all(|b| b.source == "vpc.log"));
    assert_eq!(s.accepted, 2499);
    assert_eq!(s.server_rejected, 1);
    assert_eq!(
        s.server_errors,
        ["lines 2002-4000: flow record: field `dst_port`: 0"]
    );
    assert_eq!(s.acknowledged_through_line, 5000);
}

#[tokio::test]
async fn a_refused_batch_stops_and_says_how_far_it_got() {
    let mut sink = FakeSink {
        fail_on: Some(2),
        ..FakeSink::default()
    };
    let (s, r) = send_through(&mut sink).await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("sending the flows of lines 2002-4000: server went away"),
        "{e}"
    );
    assert_eq!(sink.batches.len(), 2, "nothing is sent after a failure");
    assert_eq!(s.accepted, 1000);
    assert_eq!(s.acknowledged_through_line, 2000);
    let stopped = Summary {
        complete: false,
        ..s
    };
    assert!(render(&stopped)
        .contains("Stopped early: the server acknowledged the flows through line 2000."));
}
