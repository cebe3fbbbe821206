//! The authorize endpoint's request body comes from any local process.
//! Whatever it is, parsing must not panic; an accepted request names a
//! workload SPIFFE ID as the peer (and as the caller's chosen identity, if
//! any), a port from 1 to 65535, and writes back as a body that parses to
//! the same request; a refusal carries a message; the answer depends on
//! nothing but the bytes.
#![no_main]

use hallmark_agent::authorize::parse_authorize_request;
use hallmark_policy::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = parse_authorize_request(data);
    assert_eq!(first, parse_authorize_request(data), "not deterministic");
    match first {
        Ok(req) => {
            assert!(req.port >= 1);
            assert!(hallmark_core::SpiffeId::new_workload(req.peer.as_str()).is_ok());
            if let Some(id) = &req.spiffe_id {
                assert!(hallmark_core::SpiffeId::new_workload(id.as_str()).is_ok());
            }
            let mut body = serde_json::json!({
                "peer": req.peer.as_str(),
                "port": req.port,
                "protocol": match req.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                },
            });
            if let Some(id) = &req.spiffe_id {
                body["spiffe_id"] = id.as_str().into();
            }
            let again = parse_authorize_request(body.to_string().as_bytes());
            assert_eq!(again, Ok(req), "{body}");
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
