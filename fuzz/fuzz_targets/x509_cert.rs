//! Peer certificates: `spiffe_id_from_cert` and `verify_x509_svid` on
//! arbitrary DER.
//!
//! The SPIFFE ID read from a certificate must be a valid ID spelled exactly
//! as in the certificate's bytes (a URI SAN is stored verbatim). A chain of
//! one arbitrary certificate may only verify against the fixture root if
//! the root signed its contents, and the only such certificate is the
//! fixture SVID: a verified certificate must carry the fixture SVID's
//! TBSCertificate (a different valid ECDSA signature over it is allowed)
//! and name the same SPIFFE ID.

#![no_main]

use std::sync::OnceLock;

use hallmark_ca::{spiffe_id_from_cert, verify_x509_svid};
use hallmark_core::SpiffeId;
use hallmark_fuzz::{hex, validation_time, Fixtures};
use libfuzzer_sys::fuzz_target;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

struct Trusted {
    roots: Vec<Vec<u8>>,
    svid_tbs: Vec<u8>,
    svid_id: SpiffeId,
}

fn trusted() -> &'static Trusted {
    static TRUSTED: OnceLock<Trusted> = OnceLock::new();
    TRUSTED.get_or_init(|| {
        let fixtures = Fixtures::from_json(include_str!("../fixtures/keys.json"))
            .unwrap_or_else(|e| panic!("loading fixtures: {e}"));
        let roots = vec![fixtures.x509_root.trust_anchor_der().to_vec()];
        let svid_id = verify_x509_svid(
            std::slice::from_ref(&fixtures.svid_der),
            &roots,
            validation_time(),
        )
        .unwrap_or_else(|e| panic!("fixture SVID does not verify: {e}"));
        Trusted {
            roots,
            svid_tbs: tbs(&fixtures.svid_der)
                .unwrap_or_else(|| panic!("fixture SVID does not parse")),
            svid_id,
        }
    })
}

fn tbs(der: &[u8]) -> Option<Vec<u8>> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, cert)| cert.tbs_certificate.as_ref().to_vec())
}

fuzz_target!(|data: &[u8]| {
    let from_cert = spiffe_id_from_cert(data);
    if let Ok(id) = &from_cert {
        assert_eq!(
            SpiffeId::new(id.as_str()).as_ref(),
            Ok(id),
            "ID from {}",
            hex(data)
        );
        let text = id.as_str().as_bytes();
        assert!(
            data.windows(text.len()).any(|w| w == text),
            "ID {id} is not spelled in certificate {}",
            hex(data)
        );
    }

    let trusted = trusted();
    let Ok(verified) = verify_x509_svid(&[data.to_vec()], &trusted.roots, validation_time()) else {
        return;
    };
    assert_eq!(
        tbs(data).as_ref(),
        Some(&trusted.svid_tbs),
        "a certificate the fixture root did not sign verified: {}",
        hex(data)
    );
    assert_eq!(verified, trusted.svid_id, "verified ID of {}", hex(data));
    assert_eq!(
        from_cert.as_ref().ok(),
        Some(&verified),
        "ID of verified {}",
        hex(data)
    );
});
