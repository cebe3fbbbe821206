//! The crate's main error: authorities, keys, X.509 issuance and
//! verification, and TLS configuration. CSR, JWT-SVID validation, JWK and
//! bundle parsing have their own enums because they judge untrusted input
//! rule by rule.

use hallmark_core::{SpiffeId, SpiffeIdError};

use crate::csr::CsrError;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A key algorithm name (config, store) is not one Hallmark supports.
    #[error("key algorithm `{0}` is not supported (allowed: `ec-p256`, `rsa-2048`)")]
    UnknownKeyAlg(String),
    /// The RNG or a key generation primitive failed.
    #[error("{what}: key generation failed")]
    KeyGeneration { what: &'static str },
    /// A private key operation failed (aws-lc-rs gives no detail).
    #[error("{what}: signing failed")]
    SigningFailed { what: String },
    /// Private key material cannot be parsed, converted or used.
    #[error("{what}: {reason}")]
    BadKey { what: String, reason: String },
    /// PEM input is malformed or holds the wrong kind or number of blocks.
    #[error("{what}: {reason}")]
    BadPem { what: &'static str, reason: String },
    /// A certificate cannot be parsed as DER X.509.
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    BadCertificate { what: String, reason: String },
    /// A certificate loaded as a CA does not have basicConstraints cA=true.
    #[error("CA certificate {id}: not a CA certificate (basicConstraints cA is not set)")]
    NotACa { id: String },
    /// A CA certificate has a keyUsage extension without keyCertSign.
    #[error("CA certificate {id}: keyUsage does not allow keyCertSign")]
    CaKeyUsage { id: String },
    /// The private key does not belong to the CA certificate.
    #[error("CA certificate {id}: the private key does not match the certificate's public key")]
    KeyMismatch { id: String },
    /// The CA chain does not end in a self-signed root.
    #[error("CA chain: the last certificate ({id}) is not self-signed, so it is not a root")]
    ChainNotRooted { id: String },
    /// The CA passed every static check but a test issuance did not verify
    /// against its trust anchor (broken chain, or an issuer name that cannot
    /// be reproduced byte for byte).
    #[error(
        "CA certificate {id}: a test X509-SVID does not verify against the trust anchor: {reason}"
    )]
    SelfCheck { id: String, reason: String },
    /// The CA cannot sign at `now` because its validity has ended.
    #[error("CA certificate {id}: expired at unix time {not_after}, cannot sign at {now}")]
    CaExpired {
        id: String,
        not_after: i64,
        now: i64,
    },
    /// A certificate or token lifetime shorter than one second.
    #[error("{what}: TTL must be at least one second")]
    InvalidTtl { what: &'static str },
    /// An instant cannot be written into a certificate.
    #[error("{what}: unix time {secs} is out of range for a certificate")]
    TimeOutOfRange { what: &'static str, secs: i64 },
    /// A workload credential was requested for an ID without a path.
    #[error(
        "{what}: SPIFFE ID `{id}` has no path; workload IDs must be spiffe://<trust-domain>/<path>"
    )]
    IdWithoutPath { what: &'static str, id: SpiffeId },
    /// The CA's certificate names a trust domain and the requested ID is in
    /// another one.
    #[error("X509-SVID: SPIFFE ID `{id}` is not in trust domain `{trust_domain}` of this CA")]
    WrongTrustDomain { id: SpiffeId, trust_domain: String },
    /// A DNS SAN requested for an X509-SVID is not a valid DNS name.
    #[error("X509-SVID: DNS name `{0}` is not a valid DNS name")]
    InvalidDnsName(String),
    /// The CSR was rejected.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// rcgen refused to build a certificate or request.
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
    /// An X509-SVID chain was empty.
    #[error("X509-SVID: the certificate chain is empty")]
    EmptyChain,
    /// An X509-SVID was to be verified against no roots at all.
    #[error("X509-SVID: no trust anchors to verify against")]
    NoTrustAnchors,
    /// A root certificate cannot be used as a trust anchor.
    #[error("trust anchor #{index}: {reason}")]
    BadTrustAnchor { index: usize, reason: String },
    /// Path building or signature checks failed.
    #[error("X509-SVID: chain does not verify against the trust anchors: {0}")]
    ChainInvalid(webpki::Error),
    /// A certificate has no URI SAN or more than one.
    #[error("{what}: must have exactly one URI SAN, found {count}")]
    UriSanCount { what: &'static str, count: usize },
    /// A certificate's URI SAN is not a SPIFFE ID.
    #[error("certificate URI SAN `{uri}` is not a valid SPIFFE ID: {source}")]
    BadSpiffeId { uri: String, source: SpiffeIdError },
    /// An X509-SVID leaf breaks a rule of the X509-SVID specification.
    #[error("X509-SVID for `{id}`: {rule}")]
    SvidRule { id: String, rule: &'static str },
    /// A JWT-SVID audience list is empty or holds an empty string.
    #[error("JWT-SVID: {0}")]
    BadAudience(&'static str),
    /// A stored JWT key's kid is unusable.
    #[error("JWT key: kid `{0}` must be 1-128 characters of [A-Za-z0-9_-]")]
    BadKid(String),
    /// A server trust fingerprint is not a SHA-256 hex digest.
    #[error("server trust fingerprint `{0}` is not a SHA-256 digest (64 hex digits)")]
    BadFingerprint(String),
    /// No certificate the server presented has the pinned fingerprint.
    #[error("TLS: no certificate in the server's chain has the trusted fingerprint {0}")]
    FingerprintNotFound(String),
    /// The TLS peer's SVID names another workload.
    #[error("TLS: peer presented SPIFFE ID `{found}`, expected `{expected}`")]
    UnexpectedPeerId { expected: SpiffeId, found: SpiffeId },
    /// rustls refused a configuration (key, certificate or protocol versions).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}
