//! `verify_csr` on arbitrary bytes: the first thing the server does with
//! what an agent sends to get an X509-SVID.
//!
//! An accepted request yields the public key the certificate will carry, so
//! it must be a non-empty, well-formed SubjectPublicKeyInfo taken verbatim
//! from the request. The answer must not depend on anything but the bytes,
//! and a request followed by anything is refused.

#![no_main]

use hallmark_ca::{verify_csr, CsrError};
use hallmark_fuzz::hex;
use libfuzzer_sys::fuzz_target;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

fuzz_target!(|data: &[u8]| {
    let Ok(spki) = verify_csr(data) else {
        return;
    };
    assert!(
        !spki.is_empty(),
        "accepted CSR {} gave an empty SPKI",
        hex(data)
    );
    assert!(
        data.windows(spki.len()).any(|w| w == spki.as_slice()),
        "SPKI {} is not part of CSR {}",
        hex(&spki),
        hex(data)
    );
    match SubjectPublicKeyInfo::from_der(&spki) {
        Ok((rest, _)) => assert!(rest.is_empty(), "SPKI of {} has trailing bytes", hex(data)),
        Err(e) => panic!("SPKI of accepted CSR {} does not parse: {e}", hex(data)),
    }
    assert_eq!(
        verify_csr(data).as_ref(),
        Ok(&spki),
        "second verification of {}",
        hex(data)
    );

    let mut trailing = data.to_vec();
    trailing.push(0);
    assert_eq!(
        verify_csr(&trailing),
        Err(CsrError::TrailingData(1)),
        "{}",
        hex(data)
    );
});
