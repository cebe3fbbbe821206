//! Hallmark's JSON-lines flow files come from anyone who can hand a file to
//! `hallmark flows ingest --format jsonl`. Whatever the bytes: no panic; a
//! line parses the same way twice; blank and `#` lines are skipped and
//! nothing else is; an accepted flow passes the flow rules, is reported by
//! the file unless the line names a reporter, and what it serializes to
//! parses back to the same flow.
#![no_main]

use hallmark_flows::jsonl::{parse_line, JsonlRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let once = parse_line(line, "fuzz");
        assert_eq!(once, parse_line(line, "fuzz"), "not deterministic");
        let trimmed = line.trim();
        let skip = trimmed.is_empty() || trimmed.starts_with('#');
        match once {
            Ok(JsonlRecord::Skip) => assert!(skip),
            Ok(JsonlRecord::Flow(flow)) => {
                assert!(!skip);
                assert_eq!(flow.validate(), Ok(()));
                let named = serde_json::from_str::<serde_json::Value>(trimmed)
                    .ok()
                    .and_then(|v| v.get("reporter").cloned())
                    .is_some();
                if !named {
                    assert_eq!(flow.reporter, hallmark_flows::Reporter::File("fuzz".into()));
                }
                let Ok(again) = serde_json::to_string(&*flow) else {
                    panic!("a parsed flow serializes");
                };
                assert_eq!(
                    parse_line(&again, "other"),
                    Ok(JsonlRecord::Flow(flow)),
                    "{again}"
                );
            }
            Err(e) => {
                assert!(!skip);
                assert!(!e.to_string().is_empty());
            }
        }
    }
});
