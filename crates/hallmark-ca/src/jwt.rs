//! JWT-SVIDs: minting with a [`JwtAuthority`] and validating against trust
//! bundles, per the SPIFFE JWT-SVID specification.
//!
//! Signing and verification call aws-lc-rs directly instead of going through
//! jsonwebtoken: the SPIFFE rules need the raw header (refusing `none`/HS*
//! and odd `typ` values by name), time must come from the caller, and each
//! broken rule needs its own error. What is left after those checks is one
//! signature primitive, which aws-lc-rs already provides.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hallmark_core::time::unix_secs;
use hallmark_core::{SpiffeId, TrustDomain};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::bundle::Bundle;
use crate::jwk::{members, VerifyFailure, VerifyKey};
use crate::CaError;

/// The JWS algorithms the JWT-SVID specification allows.
const ALLOWED_ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
];
/// Claims a caller's `extra` map may not set.
const RESERVED_CLAIMS: [&str; 4] = ["sub", "aud", "exp", "iat"];
const MAX_KID_LEN: usize = 128;

/// Key algorithm of a JWT signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlg {
    /// ECDSA P-256, signing ES256.
    #[default]
    EcP256,
    /// RSA 2048, signing RS256: the one algorithm every cloud's OIDC
    /// federation accepts.
    Rsa2048,
}

impl KeyAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::EcP256 => "ec-p256",
            KeyAlg::Rsa2048 => "rsa-2048",
        }
    }

    /// The JWS `alg` this key signs with.
    pub fn jws_alg(self) -> &'static str {
        match self {
            KeyAlg::EcP256 => "ES256",
            KeyAlg::Rsa2048 => "RS256",
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlg {
    type Err = CaError;
    fn from_str(s: &str) -> Result<Self, CaError> {
        match s {
            "ec-p256" => Ok(KeyAlg::EcP256),
            "rsa-2048" => Ok(KeyAlg::Rsa2048),
            other => Err(CaError::UnknownKeyAlg(other.to_string())),
        }
    }
}

impl Serialize for KeyAlg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KeyAlg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything needed to rebuild a [`JwtAuthority`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredJwtKey {
    pub kid: String,
    pub alg: KeyAlg,
    pub key_pkcs8: Vec<u8>,
    pub created_at_unix: i64,
}

impl fmt::Debug for StoredJwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredJwtKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("key_pkcs8", &"<redacted>")
            .field("created_at_unix", &self.created_at_unix)
            .finish()
    }
}

enum SigningKey {
    Ec(EcdsaKeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// A JWT-SVID signing key.
pub struct JwtAuthority {
    kid: String,
    alg: KeyAlg,
    key_pkcs8: Vec<u8>,
    created_at_unix: i64,
    key: SigningKey,
    jwk: Map<String, Value>,
}

impl fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at_unix", &self.created_at_unix)
            .finish_non_exhaustive()
    }
}

impl JwtAuthority {
    /// A fresh key with a random 32-character URL-safe kid.
    pub fn generate(alg: KeyAlg, now: SystemTime) -> Result<Self, CaError> {
        let what = "JWT key";
        let key_pkcs8 = match alg {
            KeyAlg::EcP256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|doc| doc.as_ref().to_vec()),
            KeyAlg::Rsa2048 => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .and_then(|k| AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k))
                .map(|der| der.as_ref().to_vec()),
        }
        .map_err(|_| CaError::KeyGeneration { what })?;
        let mut kid = [0u8; 24];
        SystemRandom::new()
            .fill(&mut kid)
            .map_err(|_| CaError::KeyGeneration { what })?;
        Self::from_stored(&StoredJwtKey {
            kid: URL_SAFE_NO_PAD.encode(kid),
            alg,
            key_pkcs8,
            created_at_unix: unix_secs(now),
        })
    }

    pub fn to_stored(&self) -> StoredJwtKey {
        StoredJwtKey {
            kid: self.kid.clone(),
            alg: self.alg,
            key_pkcs8: self.key_pkcs8.clone(),
            created_at_unix: self.created_at_unix,
        }
    }

    pub fn from_stored(s: &StoredJwtKey) -> Result<Self, CaError> {
        let kid_ok = !s.kid.is_empty()
            && s.kid.len() <= MAX_KID_LEN
            && s.kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !kid_ok {
            return Err(CaError::BadKid(s.kid.clone()));
        }
        let bad = |reason: &str| CaError::BadKey {
            what: format!("JWT key {} ({})", s.kid, s.alg),
            reason: reason.to_string(),
        };
        let (key, mut jwk) = match s.alg {
            KeyAlg::EcP256 => {
                let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &s.key_pkcs8)
                    .map_err(|_| bad("not a PKCS#8 EC P-256 private key"))?;
                let (x, y) = match k.public_key().as_ref().split_first() {
                    Some((0x04, coords)) if coords.len() == 64 => coords.split_at(32),
                    _ => return Err(bad("public key is not an uncompressed P-256 point")),
                };
                let jwk = members([
                    ("kty", "EC".into()),
                    ("crv", "P-256".into()),
                    ("x", URL_SAFE_NO_PAD.encode(x)),
                    ("y", URL_SAFE_NO_PAD.encode(y)),
                ]);
                (SigningKey::Ec(k), jwk)
            }
            KeyAlg::Rsa2048 => {
                let k = aws_lc_rs::rsa::KeyPair::from_pkcs8(&s.key_pkcs8)
                    .map_err(|_| bad("not a PKCS#8 RSA private key"))?;
                if k.public_modulus_len() * 8 < 2048 {
                    return Err(bad("RSA key is shorter than 2048 bits"));
                }
                let public = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                let jwk = members([
                    ("kty", "RSA".into()),
                    (
                        "n",
                        URL_SAFE_NO_PAD.encode(crate::csr::strip_leading_zeros(&public.n)),
                    ),
                    (
                        "e",
                        URL_SAFE_NO_PAD.encode(crate::csr::strip_leading_zeros(&public.e)),
                    ),
                ]);
                (SigningKey::Rsa(k), jwk)
            }
        };
        jwk.insert("kid".into(), Value::String(s.kid.clone()));
        jwk.insert("use".into(), Value::String("jwt-svid".into()));
        jwk.insert("alg".into(), Value::String(s.alg.jws_alg().into()));
        Ok(JwtAuthority {
            kid: s.kid.clone(),
            alg: s.alg,
            key_pkcs8: s.key_pkcs8.clone(),
            created_at_unix: s.created_at_unix,
            key,
            jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    pub fn created_at(&self) -> SystemTime {
        hallmark_core::time::from_unix_secs(self.created_at_unix)
    }

    /// The public JWK: key members plus `kid`, `use` = `jwt-svid` and `alg`.
    pub fn public_jwk(&self) -> Value {
        Value::Object(self.jwk.clone())
    }

    /// This key as a bundle entry.
    pub fn jwt_key(&self) -> crate::JwtKey {
        crate::JwtKey {
            kid: self.kid.clone(),
            jwk: self.public_jwk(),
        }
    }

    /// Mints a compact JWS JWT-SVID. `aud` is a string for one audience and
    /// an array for several; `iat` is `now`, `exp` is `now` + `ttl`. `extra`
    /// claims are added but never replace `sub`, `aud`, `exp` or `iat`.
    pub fn mint(
        &self,
        spiffe_id: &SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: SystemTime,
        extra: Option<&Map<String, Value>>,
    ) -> Result<String, CaError> {
        if spiffe_id.path().is_empty() {
            return Err(CaError::IdWithoutPath {
                what: "JWT-SVID",
                id: spiffe_id.clone(),
            });
        }
        if audience.is_empty() {
            return Err(CaError::BadAudience("audience must not be empty"));
        }
        if audience.iter().any(String::is_empty) {
            return Err(CaError::BadAudience(
                "audience values must not be empty strings",
            ));
        }
        let ttl = match ttl.as_secs() {
            0 => return Err(CaError::InvalidTtl { what: "JWT-SVID" }),
            s => i64::try_from(s).unwrap_or(i64::MAX),
        };
        let iat = unix_secs(now);
        let mut claims: Map<String, Value> = extra
            .into_iter()
            .flatten()
            .filter(|(k, _)| !RESERVED_CLAIMS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        claims.insert("sub".into(), Value::String(spiffe_id.to_string()));
        claims.insert(
            "aud".into(),
            match audience {
                [one] => Value::String(one.clone()),
                many => Value::Array(many.iter().cloned().map(Value::String).collect()),
            },
        );
        claims.insert("iat".into(), iat.into());
        claims.insert("exp".into(), iat.saturating_add(ttl).into());
        let header = members([
            ("alg", self.alg.jws_alg().into()),
            ("kid", self.kid.clone()),
            ("typ", "JWT".into()),
        ]);
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        let failed = || CaError::SigningFailed {
            what: format!("JWT key {}", self.kid),
        };
        let rng = SystemRandom::new();
        match &self.key {
            SigningKey::Ec(k) => k
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| failed()),
            SigningKey::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| failed())?;
                Ok(sig)
            }
        }
    }
}

/// A JWT-SVID that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJwt {
    pub spiffe_id: SpiffeId,
    pub claims: Map<String, Value>,
}

/// One variant per JWT-SVID rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JwtError {
    /// The token is not a well-formed compact JWS with JSON header and claims.
    #[error("JWT-SVID: malformed: {0}")]
    Malformed(&'static str),
    /// `alg` is not an asymmetric algorithm the JWT-SVID spec allows (this
    /// refuses `none` and the HMAC family).
    #[error("JWT-SVID: algorithm `{0}` is not allowed (use RS/ES/PS 256/384/512)")]
    UnsupportedAlg(String),
    /// `typ` is set to something other than `JWT` or `JOSE`.
    #[error("JWT-SVID: header typ {0} is not allowed (must be absent, \"JWT\" or \"JOSE\")")]
    BadTyp(String),
    /// The header lists critical extensions, none of which are understood.
    #[error("JWT-SVID: header has a `crit` parameter; no critical extensions are supported")]
    UnsupportedCrit,
    /// The header has no `kid`, so no bundle key can be chosen.
    #[error("JWT-SVID: header has no `kid`")]
    MissingKid,
    /// The caller asked to validate for an empty audience.
    #[error("JWT-SVID: the audience to validate for must not be empty")]
    EmptyAudience,
    /// A required claim is absent.
    #[error("JWT-SVID: required claim `{0}` is missing")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type.
    #[error("JWT-SVID: claim `{claim}` {reason}")]
    BadClaim {
        claim: &'static str,
        reason: &'static str,
    },
    /// `sub` is not a SPIFFE ID with a path.
    #[error("JWT-SVID: sub `{sub}` is not a workload SPIFFE ID: {reason}")]
    BadSubject { sub: String, reason: String },
    /// No bundle is known for the subject's trust domain.
    #[error("JWT-SVID: no trust bundle for trust domain `{0}`")]
    NoBundle(TrustDomain),
    /// The bundle has no JWT authority with this `kid`.
    #[error("JWT-SVID: key `{kid}` is not in the bundle of trust domain `{trust_domain}`")]
    UnknownKey {
        kid: String,
        trust_domain: TrustDomain,
    },
    /// The bundle's key for this `kid` cannot be used.
    #[error("JWT-SVID: bundle key `{kid}` is unusable: {reason}")]
    UnusableKey { kid: String, reason: String },
    /// The token's `alg` does not fit the type or curve of its key.
    #[error("JWT-SVID: algorithm {alg} does not match the type of key `{kid}`")]
    KeyAlgMismatch { kid: String, alg: String },
    /// The signature does not verify.
    #[error("JWT-SVID: signature does not verify")]
    BadSignature,
    /// `aud` does not contain the expected audience.
    #[error("JWT-SVID: audience {found:?} does not include `{expected}`")]
    WrongAudience {
        expected: String,
        found: Vec<String>,
    },
    /// `exp` is at or before `now`.
    #[error("JWT-SVID: expired at unix time {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    /// `nbf` is after `now`.
    #[error("JWT-SVID: not valid before unix time {nbf} (now {now})")]
    NotYetValid { nbf: i64, now: i64 },
}

/// Validates a JWT-SVID for `audience` at `now`, taking verification keys
/// from the bundle of the trust domain in its `sub`. No clock leeway is
/// applied.
pub fn validate_jwt_svid(
    token: &str,
    audience: &str,
    bundle_for: &dyn Fn(&TrustDomain) -> Option<Bundle>,
    now: SystemTime,
) -> Result<ValidatedJwt, JwtError> {
    if audience.is_empty() {
        return Err(JwtError::EmptyAudience);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "not three base64url parts separated by `.`",
        ));
    };

    let header = decode_object(h64, "header is not base64url JSON object")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed("header has no string `alg`"))?;
    if !ALLOWED_ALGS.contains(&alg) {
        return Err(JwtError::UnsupportedAlg(alg.to_string()));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t == "JWT" || t == "JOSE" => {}
        Some(other) => return Err(JwtError::BadTyp(other.to_string())),
    }
    if header.contains_key("crit") {
        return Err(JwtError::UnsupportedCrit);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or(JwtError::MissingKid)?;

    let claims = decode_object(p64, "payload is not base64url JSON object")?;
    let sub = match claims.get("sub") {
        None => return Err(JwtError::MissingClaim("sub")),
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(JwtError::BadClaim {
                claim: "sub",
                reason: "must be a string",
            })
        }
    };
    let spiffe_id = SpiffeId::new_workload(sub).map_err(|e| JwtError::BadSubject {
        sub: sub.clone(),
        reason: e.to_string(),
    })?;
    let trust_domain = spiffe_id.trust_domain();
    let bundle =
        bundle_for(&trust_domain).ok_or_else(|| JwtError::NoBundle(trust_domain.clone()))?;
    let entry = bundle
        .jwt_authorities
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| JwtError::UnknownKey {
            kid: kid.to_string(),
            trust_domain,
        })?;
    let unusable = |reason: String| JwtError::UnusableKey {
        kid: kid.to_string(),
        reason,
    };
    let jwk = entry
        .jwk
        .as_object()
        .ok_or_else(|| unusable("not a JSON object".into()))?;
    let key = VerifyKey::from_jwk(jwk).map_err(|e| unusable(e.to_string()))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let signing_input = &token[..h64.len() + 1 + p64.len()];
    key.verify(alg, signing_input.as_bytes(), &signature)
        .map_err(|f| match f {
            VerifyFailure::KeyAlgMismatch => JwtError::KeyAlgMismatch {
                kid: kid.to_string(),
                alg: alg.to_string(),
            },
            VerifyFailure::BadSignature => JwtError::BadSignature,
        })?;

    let found: Vec<String> = match claims.get("aud") {
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or(JwtError::BadClaim {
                claim: "aud",
                reason: "must be a string or an array of strings",
            })?,
        Some(_) => {
            return Err(JwtError::BadClaim {
                claim: "aud",
                reason: "must be a string or an array of strings",
            })
        }
    };
    if !found.iter().any(|a| a == audience) {
        return Err(JwtError::WrongAudience {
            expected: audience.to_string(),
            found,
        });
    }
    let now = unix_secs(now);
    let exp = numeric_date(&claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if exp <= now as f64 {
        return Err(JwtError::Expired {
            exp: exp as i64,
            now,
        });
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if nbf > now as f64 {
            return Err(JwtError::NotYetValid {
                nbf: nbf as i64,
                now,
            });
        }
    }
    Ok(ValidatedJwt { spiffe_id, claims })
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(what)),
    }
}

fn numeric_date(claims: &Map<String, Value>, claim: &'static str) -> Result<Option<f64>, JwtError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or(JwtError::BadClaim {
                claim,
                reason: "must be a number (seconds since the epoch)",
            }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn key_alg_parses_and_prints() {
        for (s, alg) in [("ec-p256", KeyAlg::EcP256), ("rsa-2048", KeyAlg::Rsa2048)] {
            assert_eq!(s.parse::<KeyAlg>().unwrap(), alg);
            assert_eq!(alg.to_string(), s);
        }
        for bad in ["", "EC-P256", "es256", "rsa"] {
            let err = bad.parse::<KeyAlg>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{bad}`"))
                    && err.contains("ec-p256")
                    && err.contains("rsa-2048"),
                "{err}"
            );
        }
        assert_eq!(
            serde_json::to_string(&KeyAlg::Rsa2048).unwrap(),
            "\"rsa-2048\""
        );
        assert_eq!(
            serde_json::from_str::<KeyAlg>("\"ec-p256\"").unwrap(),
            KeyAlg::EcP256
        );
    }

    #[test]
    fn generated_keys_have_url_safe_kids_and_survive_storage() {
        for alg in [KeyAlg::EcP256, KeyAlg::Rsa2048] {
            let key =
                JwtAuthority::generate(alg, hallmark_core::time::from_unix_secs(1_700_000_000))
                    .unwrap();
            assert_eq!(key.kid().len(), 32);
            assert!(key
                .kid()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let again = JwtAuthority::from_stored(&key.to_stored()).unwrap();
            assert_eq!(again.public_jwk(), key.public_jwk());
            assert_eq!(unix_secs(again.created_at()), 1_700_000_000);
            let jwk = key.public_jwk();
            assert_eq!(jwk["use"], "jwt-svid");
            assert_eq!(jwk["kid"], key.kid());
            assert_eq!(jwk["alg"], alg.jws_alg());
        }
    }

    #[test]
    fn stored_key_must_match_its_alg_and_kid_rules() {
        let ec = JwtAuthority::generate(KeyAlg::EcP256, SystemTime::UNIX_EPOCH)
            .unwrap()
            .to_stored();
        let as_rsa = StoredJwtKey {
            alg: KeyAlg::Rsa2048,
            ..ec.clone()
        };
        assert!(matches!(
            JwtAuthority::from_stored(&as_rsa),
            Err(CaError::BadKey { .. })
        ));
        for kid in ["", "has space", "a.b", &"k".repeat(129)] {
            let s = StoredJwtKey {
                kid: kid.to_string(),
                ..ec.clone()
            };
            assert!(
                matches!(JwtAuthority::from_stored(&s), Err(CaError::BadKid(_))),
                "{kid:?}"
            );
        }
    }

    #[test]
    fn mint_refuses_bad_audiences_and_ids() {
        let key = JwtAuthority::generate(KeyAlg::EcP256, SystemTime::UNIX_EPOCH).unwrap();
        let id = SpiffeId::new("spiffe://example.org/w").unwrap();
        let ttl = Duration::from_secs(60);
        let now = hallmark_core::time::from_unix_secs(1_700_000_000);
        assert!(matches!(
            key.mint(&id, &[], ttl, now, None),
            Err(CaError::BadAudience(_))
        ));
        assert!(matches!(
            key.mint(&id, &["a".into(), String::new()], ttl, now, None),
            Err(CaError::BadAudience(_))
        ));
        let td_id = SpiffeId::new("spiffe://example.org").unwrap();
        assert!(matches!(
            key.mint(&td_id, &["a".into()], ttl, now, None),
            Err(CaError::IdWithoutPath { .. })
        ));
        assert!(matches!(
            key.mint(&id, &["a".into()], Duration::ZERO, now, None),
            Err(CaError::InvalidTtl { .. })
        ));
    }

    #[test]
    fn minted_claims_and_header() {
        let key = JwtAuthority::generate(KeyAlg::EcP256, SystemTime::UNIX_EPOCH).unwrap();
        let id = SpiffeId::new("spiffe://example.org/w").unwrap();
        let mut extra = Map::new();
        extra.insert("sub".into(), "spiffe://evil.org/x".into());
        extra.insert("exp".into(), 99_999_999_999i64.into());
        extra.insert("iss".into(), "https://issuer.example".into());
        let now = hallmark_core::time::from_unix_secs(1_700_000_000);
        let one = key
            .mint(
                &id,
                &["a".into()],
                Duration::from_secs(300),
                now,
                Some(&extra),
            )
            .unwrap();
        let two = key
            .mint(
                &id,
                &["a".into(), "b".into()],
                Duration::from_secs(300),
                now,
                None,
            )
            .unwrap();
        let part = |t: &str, i: usize| -> Map<String, Value> {
            decode_object(t.split('.').nth(i).unwrap(), "test").unwrap()
        };
        let header = part(&one, 0);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], key.kid());
        let claims = part(&one, 1);
        assert_eq!(claims["sub"], "spiffe://example.org/w");
        assert_eq!(claims["aud"], "a");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_300);
        assert_eq!(claims["iss"], "https://issuer.example");
        assert_eq!(part(&two, 1)["aud"], serde_json::json!(["a", "b"]));
    }
}
