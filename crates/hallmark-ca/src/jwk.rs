//! Public keys as JSON Web Keys (RFC 7517/7518): built from certificates for
//! bundles, and read back from bundles to verify JWT signatures.

use aws_lc_rs::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::csr::{big_endian_bits, strip_leading_zeros, MIN_RSA_BITS};

/// Why a key cannot be turned into a JWK or a JWK into a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// A required JWK member is absent or not a string.
    #[error("JWK: member `{0}` is missing or not a string")]
    MissingMember(&'static str),
    /// A JWK member is not unpadded base64url.
    #[error("JWK: member `{0}` is not base64url")]
    BadBase64(&'static str),
    /// The `kty` is not EC or RSA (OKP is only described, never verified with).
    #[error("JWK: key type `{0}` is not supported for JWT-SVIDs (use EC or RSA)")]
    UnsupportedKty(String),
    /// The EC curve is not P-256, P-384 or P-521.
    #[error("JWK: curve `{0}` is not supported (use P-256, P-384 or P-521)")]
    UnsupportedCurve(String),
    /// An EC coordinate has the wrong length for its curve.
    #[error("JWK: coordinate `{member}` is {found} bytes, {crv} needs {expected}")]
    BadCoordinate {
        member: &'static str,
        crv: &'static str,
        expected: usize,
        found: usize,
    },
    /// An RSA modulus below 2048 bits.
    #[error("JWK: RSA modulus is {0} bits; at least 2048 are required")]
    RsaTooSmall(usize),
    /// A certificate's public key has a type or encoding JWK cannot express.
    #[error("public key: {0}")]
    UnsupportedSpki(String),
}

/// A public key usable to verify JWT-SVID signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VerifyKey {
    /// `point` is the uncompressed SEC1 point `04 || x || y`.
    Ec {
        crv: Curve,
        point: Vec<u8>,
    },
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// Why a signature was not accepted by [`VerifyKey::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerifyFailure {
    /// The key cannot be used with this `alg` (e.g. ES256 with an RSA key).
    KeyAlgMismatch,
    BadSignature,
}

impl VerifyKey {
    /// Reads the key members of a JWK; `use`, `kid` and other metadata are
    /// the caller's business.
    pub(crate) fn from_jwk(jwk: &Map<String, Value>) -> Result<Self, JwkError> {
        match member(jwk, "kty")? {
            "EC" => {
                let crv = match member(jwk, "crv")? {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    "P-521" => Curve::P521,
                    other => return Err(JwkError::UnsupportedCurve(other.to_string())),
                };
                let mut point = vec![0x04];
                for name in ["x", "y"] {
                    let c = b64_member(jwk, name)?;
                    if c.len() != crv.coordinate_len() {
                        return Err(JwkError::BadCoordinate {
                            member: name,
                            crv: crv.name(),
                            expected: crv.coordinate_len(),
                            found: c.len(),
                        });
                    }
                    point.extend_from_slice(&c);
                }
                Ok(VerifyKey::Ec { crv, point })
            }
            "RSA" => {
                let n = strip_leading_zeros(&b64_member(jwk, "n")?).to_vec();
                let e = strip_leading_zeros(&b64_member(jwk, "e")?).to_vec();
                let bits = big_endian_bits(&n);
                if bits < MIN_RSA_BITS {
                    return Err(JwkError::RsaTooSmall(bits));
                }
                Ok(VerifyKey::Rsa { n, e })
            }
            other => Err(JwkError::UnsupportedKty(other.to_string())),
        }
    }

    /// Verifies a JWS signature for one of the asymmetric algorithms the
    /// JWT-SVID specification allows. The caller has already refused others.
    pub(crate) fn verify(&self, alg: &str, msg: &[u8], sig: &[u8]) -> Result<(), VerifyFailure> {
        let ok = match self {
            VerifyKey::Ec { crv, point } => {
                let alg: &'static signature::EcdsaVerificationAlgorithm = match (alg, crv) {
                    ("ES256", Curve::P256) => &signature::ECDSA_P256_SHA256_FIXED,
                    ("ES384", Curve::P384) => &signature::ECDSA_P384_SHA384_FIXED,
                    ("ES512", Curve::P521) => &signature::ECDSA_P521_SHA512_FIXED,
                    _ => return Err(VerifyFailure::KeyAlgMismatch),
                };
                UnparsedPublicKey::new(alg, point).verify(msg, sig).is_ok()
            }
            VerifyKey::Rsa { n, e } => {
                let params: &'static RsaParameters = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return Err(VerifyFailure::KeyAlgMismatch),
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(VerifyFailure::BadSignature)
        }
    }
}

/// The public key members of a JWK for a certificate's SubjectPublicKeyInfo:
/// `kty` plus `crv`/`x`/`y` (EC, OKP) or `n`/`e` (RSA).
pub(crate) fn jwk_from_spki(
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<Map<String, Value>, JwkError> {
    let alg = &spki.algorithm.algorithm;
    let key = spki.subject_public_key.data.as_ref();
    let value = if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| JwkError::UnsupportedSpki("EC key without a named curve".into()))?;
        let crv = if curve == OID_EC_P256 {
            Curve::P256
        } else if curve == OID_NIST_EC_P384 {
            Curve::P384
        } else if curve == OID_NIST_EC_P521 {
            Curve::P521
        } else {
            return Err(JwkError::UnsupportedSpki(format!(
                "EC curve {}",
                curve.to_id_string()
            )));
        };
        let len = crv.coordinate_len();
        if key.len() != 1 + 2 * len || key[0] != 0x04 {
            return Err(JwkError::UnsupportedSpki(
                "EC point is not in uncompressed form".into(),
            ));
        }
        members([
            ("kty", "EC".into()),
            ("crv", crv.name().into()),
            ("x", URL_SAFE_NO_PAD.encode(&key[1..1 + len])),
            ("y", URL_SAFE_NO_PAD.encode(&key[1 + len..])),
        ])
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(JwkError::UnsupportedSpki("malformed RSA public key".into()));
        };
        members([
            ("kty", "RSA".into()),
            (
                "n",
                URL_SAFE_NO_PAD.encode(strip_leading_zeros(rsa.modulus)),
            ),
            (
                "e",
                URL_SAFE_NO_PAD.encode(strip_leading_zeros(rsa.exponent)),
            ),
        ])
    } else if *alg == OID_SIG_ED25519 {
        members([
            ("kty", "OKP".into()),
            ("crv", "Ed25519".into()),
            ("x", URL_SAFE_NO_PAD.encode(key)),
        ])
    } else {
        return Err(JwkError::UnsupportedSpki(format!(
            "key algorithm {}",
            alg.to_id_string()
        )));
    };
    Ok(value)
}

pub(crate) fn members<const N: usize>(pairs: [(&str, String); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect()
}

/// The JWK members that describe a public key, for comparing two JWKs.
pub(crate) const KEY_MEMBERS: [&str; 6] = ["kty", "crv", "x", "y", "n", "e"];

/// Members that only a private JWK has; a bundle carrying them leaks a key.
pub(crate) const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

fn member<'a>(jwk: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, JwkError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or(JwkError::MissingMember(name))
}

fn b64_member(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JwkError> {
    URL_SAFE_NO_PAD
        .decode(member(jwk, name)?)
        .map_err(|_| JwkError::BadBase64(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn spki_to_jwk_to_key_for_ec_and_rsa() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_RSA_SHA256,
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let der = key.public_key_der();
            let (_, spki) =
                <SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&der).unwrap();
            let jwk = jwk_from_spki(&spki).unwrap();
            let vk = VerifyKey::from_jwk(&jwk).unwrap();
            match vk {
                VerifyKey::Ec { point, .. } => assert_eq!(point, key.public_key_raw()),
                VerifyKey::Rsa { n, .. } => assert_eq!(big_endian_bits(&n), 2048),
            }
        }
    }

    #[test]
    fn jwk_rules() {
        let x32 = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let x31 = URL_SAFE_NO_PAD.encode([1u8; 31]);
        let small_n = URL_SAFE_NO_PAD.encode([0xffu8; 128]);
        let cases: Vec<(Value, JwkError)> = vec![
            (json!({}), JwkError::MissingMember("kty")),
            (
                json!({"kty": "oct", "k": "AA"}),
                JwkError::UnsupportedKty("oct".into()),
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": x32}),
                JwkError::UnsupportedKty("OKP".into()),
            ),
            (
                json!({"kty": "EC", "crv": "P-192", "x": x32, "y": x32}),
                JwkError::UnsupportedCurve("P-192".into()),
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "y": x32}),
                JwkError::MissingMember("x"),
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": "!!", "y": x32}),
                JwkError::BadBase64("x"),
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": x32, "y": x31}),
                JwkError::BadCoordinate {
                    member: "y",
                    crv: "P-256",
                    expected: 32,
                    found: 31,
                },
            ),
            (
                json!({"kty": "RSA", "n": small_n, "e": "AQAB"}),
                JwkError::RsaTooSmall(1024),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                VerifyKey::from_jwk(&obj(input.clone())).unwrap_err(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn key_and_alg_must_agree() {
        let key = VerifyKey::Ec {
            crv: Curve::P256,
            point: vec![4; 65],
        };
        for alg in ["ES384", "RS256", "PS256", "HS256", "none"] {
            assert_eq!(
                key.verify(alg, b"m", b"s"),
                Err(VerifyFailure::KeyAlgMismatch),
                "{alg}"
            );
        }
        assert_eq!(
            key.verify("ES256", b"m", &[0; 64]),
            Err(VerifyFailure::BadSignature)
        );
    }
}
