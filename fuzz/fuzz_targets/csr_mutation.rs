//! A valid CSR with bytes flipped must no longer verify.
//!
//! The input is a list of 3-byte edits `[pos_hi, pos_lo, mask]`: the byte at
//! `pos % len` is XORed with `mask` (a trailing partial edit is ignored).
//! The CSR is the fixture one, made once by `generate_key_and_csr`.
//!
//! A CSR's signature covers the CertificationRequestInfo, so any change
//! there must fail, and so must any change to the outer structure: DER has
//! exactly one encoding per value, so changed tags or lengths around the
//! signed part make a different, invalid document, never the same request.
//! The one change that may verify is a different valid signature over the
//! same request: ECDSA (r, s) and (r, n - s) both verify, so edits confined
//! to the signature's contents that keep it valid are the key holder's
//! signature, not a forgery. Everything else that verifies is reported with
//! both DERs.

#![no_main]

use std::ops::Range;
use std::sync::OnceLock;

use hallmark_ca::verify_csr;
use hallmark_fuzz::{hex, Fixtures};
use libfuzzer_sys::fuzz_target;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

struct Original {
    der: Vec<u8>,
    spki: Vec<u8>,
    /// Where the signature BIT STRING's contents (the ECDSA-Sig-Value) lie.
    signature: Range<usize>,
}

fn original() -> &'static Original {
    static ORIGINAL: OnceLock<Original> = OnceLock::new();
    ORIGINAL.get_or_init(|| {
        let fixtures = Fixtures::from_json(include_str!("../fixtures/keys.json"))
            .unwrap_or_else(|e| panic!("loading fixtures: {e}"));
        let der = fixtures.csr_der;
        let spki = verify_csr(&der).unwrap_or_else(|e| panic!("fixture CSR: {e}"));
        let (_, csr) = X509CertificationRequest::from_der(&der)
            .unwrap_or_else(|e| panic!("fixture CSR does not parse: {e}"));
        // The signature is the last element of the request, so its contents
        // are the last bytes of the DER.
        let sig_len = csr.signature_value.data.len();
        let signature = der.len() - sig_len..der.len();
        Original {
            der,
            spki,
            signature,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let original = original();
    let mut csr = original.der.clone();
    for edit in data.chunks_exact(3) {
        let pos = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % csr.len();
        csr[pos] ^= edit[2];
    }
    let result = verify_csr(&csr);
    if csr == original.der {
        assert_eq!(
            result.as_ref(),
            Ok(&original.spki),
            "unmodified fixture CSR"
        );
        return;
    }
    let Ok(spki) = result else {
        return;
    };
    let changed: Vec<usize> = (0..csr.len())
        .filter(|&i| csr[i] != original.der[i])
        .collect();
    let only_signature = changed.iter().all(|i| original.signature.contains(i));
    assert!(
        only_signature,
        "a modified CSR verified (changed positions {changed:?}, signature at {:?})\noriginal {}\nmodified {}",
        original.signature,
        hex(&original.der),
        hex(&csr)
    );
    assert_eq!(
        spki,
        original.spki,
        "re-signed CSR {} reports another key",
        hex(&csr)
    );
});
