//! Hallmark's own flow schema, one JSON object a line (`hallmark flows
//! ingest --format jsonl`), for any source without a parser of its own.
//!
//! Each line is a [`Flow`] as it serializes: `start_ms`, `end_ms`,
//! `protocol` (`tcp`, `udp`, `icmp`, `icmpv6` or a number), `src` and `dst`
//! (`IP:PORT`, `[IPv6]:PORT`), and optionally `initiator`
//! (`source`/`destination`/`unknown`), `bytes_sent`, `packets_sent`,
//! `bytes_received`, `packets_received`, `outcome` (`established`,
//! `refused`, `reset`, `timed-out`, TCP only), `retransmits`, `rtt_us`
//! (smoothed RTT in microseconds), `reporter` and `local`.
//! Blank lines and lines starting with `#` are skipped. Unknown fields are
//! refused, so a misspelt counter is an error rather than a zero.

use crate::flow::{Flow, FlowError, Reporter};

/// Why a line is not a flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonlError {
    #[error("not a flow object: {0}")]
    Syntax(String),
    #[error(transparent)]
    Flow(#[from] FlowError),
}

/// What a line held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonlRecord {
    Flow(Box<Flow>),
    /// Blank or a `#` comment.
    Skip,
}

/// Parses one line. A line without `reporter` is reported by `source`.
pub fn parse_line(line: &str, source: &str) -> Result<JsonlRecord, JsonlError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(JsonlRecord::Skip);
    }
    let mut value: serde_json::Value =
        serde_json::from_str(trimmed).map_err(|e| JsonlError::Syntax(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        if !obj.contains_key("reporter") {
            let reporter = serde_json::to_value(Reporter::File(source.to_string()))
                .map_err(|e| JsonlError::Syntax(e.to_string()))?;
            obj.insert("reporter".into(), reporter);
        }
    }
    let flow: Flow =
        serde_json::from_value(value).map_err(|e| JsonlError::Syntax(e.to_string()))?;
    flow.validate()?;
    Ok(JsonlRecord::Flow(Box::new(flow)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use crate::flow::{Initiator, Protocol, TcpOutcome};

    #[test]
    fn lines_to_flows() {
        let line = r#"{"start_ms":1700000000000,"end_ms":1700000000500,"protocol":"tcp","src":"10.0.0.1:40000","dst":"10.0.0.2:443","initiator":"source","bytes_sent":1200,"packets_sent":4,"bytes_received":5000,"packets_received":5,"outcome":"established"}"#;
        let JsonlRecord::Flow(f) = parse_line(line, "in.jsonl").unwrap() else {
            panic!("not a flow");
        };
        assert_eq!(f.protocol, Protocol::Tcp);
        assert_eq!(f.initiator, Initiator::Source);
        assert_eq!(f.outcome, Some(TcpOutcome::Established));
        assert_eq!(f.reporter, Reporter::File("in.jsonl".into()));
        // What a flow serializes to parses back to it.
        let again = serde_json::to_string(&*f).unwrap();
        assert_eq!(parse_line(&again, "x").unwrap(), JsonlRecord::Flow(f));
        for skip in ["", "   ", "# a comment"] {
            assert_eq!(parse_line(skip, "x").unwrap(), JsonlRecord::Skip);
        }
    }

    #[test]
    fn bad_lines_say_why() {
        let base = r#""start_ms":1700000000000,"end_ms":1700000000500,"src":"10.0.0.1:40000","dst":"10.0.0.2:443""#;
        for (line, want) in [
            ("{".to_string(), "not a flow object"),
            (format!(r#"{{{base},"protocol":"tcp","bytes_snt":5}}"#), "unknown field `bytes_snt`"),
            (format!(r#"{{{base},"protocol":"sctpx"}}"#), "protocol `sctpx`"),
            (format!(r#"{{{base}}}"#), "missing field `protocol`"),
            (
                r#"{"start_ms":1700000000500,"end_ms":1700000000000,"protocol":"udp","src":"10.0.0.1:1","dst":"10.0.0.2:2"}"#.to_string(),
                "time going backwards",
            ),
            (
                r#"{"start_ms":1,"end_ms":2,"protocol":"udp","src":"10.0.0.1:1","dst":"10.0.0.2:2"}"#.to_string(),
                "outside 2000-01-01",
            ),
            (
                r#"{"start_ms":1700000000000,"end_ms":1700000000000,"protocol":"udp","src":"10.0.0.1:0","dst":"10.0.0.2:2"}"#.to_string(),
                "source port is 0",
            ),
        ] {
            let err = parse_line(&line, "x").unwrap_err().to_string();
            assert!(err.contains(want), "{line}\n  gave {err}\n  want {want}");
        }
    }
}
