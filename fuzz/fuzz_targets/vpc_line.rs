//! AWS VPC flow log lines come from files anyone can hand to `hallmark flows
//! ingest`. Whatever the bytes: no panic; a header either gives a format or
//! names the rule it broke; every record parses the same way twice; an
//! accepted flow passes the flow rules and its counters are the fields'.
#![no_main]

use hallmark_flows::vpc::{VpcFormat, VpcRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let mut format = VpcFormat::default();
    if let Some(first) = lines.clone().next() {
        if VpcFormat::is_header(first) {
            lines.next();
            match VpcFormat::from_header(first) {
                Ok(f) => format = f,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    return;
                }
            }
        }
    }
    for line in lines {
        let once = format.parse(line, "fuzz");
        assert_eq!(once, format.parse(line, "fuzz"), "not deterministic");
        match once {
            Ok(VpcRecord::Flow(flow)) => {
                assert_eq!(flow.validate(), Ok(()));
                assert_eq!((flow.bytes_received, flow.packets_received), (0, 0));
            }
            Ok(VpcRecord::NoData | VpcRecord::SkipData) => {}
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
