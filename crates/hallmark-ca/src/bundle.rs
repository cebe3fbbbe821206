//! Trust bundles in the SPIFFE bundle format: a JWK Set whose keys are
//! X.509 authorities (`use` = `x509-svid`, one `x5c` certificate) and JWT
//! authorities (`use` = `jwt-svid`, with a `kid`), plus `spiffe_sequence` and
//! `spiffe_refresh_hint`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hallmark_core::TrustDomain;
use serde_json::{Map, Value};

use crate::jwk::{jwk_from_spki, JwkError, VerifyKey, KEY_MEMBERS, PRIVATE_MEMBERS};
use crate::verify::parse_cert;

const X509_USE: &str = "x509-svid";
const JWT_USE: &str = "jwt-svid";

/// A trust domain's bundle: what a verifier needs to trust its SVIDs.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    pub trust_domain: TrustDomain,
    /// Root certificates (DER).
    pub x509_authorities: Vec<Vec<u8>>,
    pub jwt_authorities: Vec<JwtKey>,
    /// Increases whenever the contents change.
    pub sequence: u64,
    /// How often consumers should refetch; 0 = unset (omitted from JSON).
    pub refresh_hint_secs: u64,
}

/// A JWT authority: the public JWK (which carries `kid` too) under its kid.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtKey {
    pub kid: String,
    pub jwk: Value,
}

/// Why a bundle document was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    /// The document is not JSON.
    #[error("bundle: not JSON: {0}")]
    NotJson(String),
    /// The document is JSON but not an object.
    #[error("bundle: the document must be a JSON object")]
    NotAnObject,
    /// The `keys` member is absent or not an array.
    #[error("bundle: `keys` must be present and an array")]
    MissingKeys,
    /// `spiffe_sequence` or `spiffe_refresh_hint` is not a non-negative integer.
    #[error("bundle: `{0}` must be a non-negative integer")]
    BadNumber(&'static str),
    /// An element of `keys` is not an object.
    #[error("bundle: keys[{index}] is not a JSON object")]
    KeyNotObject { index: usize },
    /// A key carries private key members.
    #[error("bundle: keys[{index}] contains private key material")]
    PrivateKeyMaterial { index: usize },
    /// An x509-svid key does not have exactly one `x5c` certificate.
    #[error(
        "bundle: x509-svid keys[{index}] must have exactly one x5c certificate, found {count}"
    )]
    X5cCount { index: usize, count: usize },
    /// An x509-svid key's certificate is unreadable.
    #[error("bundle: x509-svid keys[{index}]: {reason}")]
    BadX5c { index: usize, reason: String },
    /// An x509-svid key's JWK members disagree with its certificate's key.
    #[error("bundle: x509-svid keys[{index}]: member `{member}` does not match the x5c certificate's key")]
    KeyParamsMismatch { index: usize, member: &'static str },
    /// A jwt-svid key has no `kid`.
    #[error("bundle: jwt-svid keys[{index}] has no kid")]
    MissingKid { index: usize },
    /// A jwt-svid key cannot be used to verify signatures.
    #[error("bundle: jwt-svid keys[{index}] (kid `{kid}`): {source}")]
    BadJwtKey {
        index: usize,
        kid: String,
        source: JwkError,
    },
    /// Two jwt-svid keys share a kid, so tokens naming it are ambiguous.
    #[error("bundle: kid `{0}` appears more than once")]
    DuplicateKid(String),
}

impl Bundle {
    /// An empty bundle for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Bundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: 0,
            refresh_hint_secs: 0,
        }
    }

    /// The bundle as a SPIFFE bundle document.
    pub fn to_jwks_json(&self) -> Vec<u8> {
        let mut keys = Vec::with_capacity(self.x509_authorities.len() + self.jwt_authorities.len());
        for der in &self.x509_authorities {
            let mut key = parse_cert(der, "bundle X.509 authority")
                .map_err(|e| e.to_string())
                .and_then(|c| jwk_from_spki(c.public_key()).map_err(|e| e.to_string()))
                .unwrap_or_else(|reason| {
                    // Publishing the certificate alone still lets consumers
                    // report a precise error; dropping it would hide one.
                    tracing::warn!(%reason, "bundle: X.509 authority has no JWK form");
                    Map::new()
                });
            key.insert("use".into(), X509_USE.into());
            key.insert(
                "x5c".into(),
                Value::Array(vec![STANDARD.encode(der).into()]),
            );
            keys.push(Value::Object(key));
        }
        for k in &self.jwt_authorities {
            let mut key = k.jwk.as_object().cloned().unwrap_or_default();
            for m in PRIVATE_MEMBERS {
                key.remove(m);
            }
            key.insert("use".into(), JWT_USE.into());
            key.insert("kid".into(), k.kid.clone().into());
            keys.push(Value::Object(key));
        }
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        doc.insert("spiffe_sequence".into(), self.sequence.into());
        if self.refresh_hint_secs > 0 {
            doc.insert("spiffe_refresh_hint".into(), self.refresh_hint_secs.into());
        }
        Value::Object(doc).to_string().into_bytes()
    }

    /// Parses a SPIFFE bundle document for `td`. Keys whose `use` is absent
    /// or unknown are ignored, as the bundle specification requires.
    pub fn from_jwks_json(td: &TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| BundleError::NotJson(e.to_string()))?;
        let Value::Object(doc) = doc else {
            return Err(BundleError::NotAnObject);
        };
        let Some(Value::Array(keys)) = doc.get("keys") else {
            return Err(BundleError::MissingKeys);
        };
        let mut bundle = Bundle::new(td.clone());
        bundle.sequence = optional_u64(&doc, "spiffe_sequence")?;
        bundle.refresh_hint_secs = optional_u64(&doc, "spiffe_refresh_hint")?;
        for (index, key) in keys.iter().enumerate() {
            let Value::Object(key) = key else {
                return Err(BundleError::KeyNotObject { index });
            };
            if PRIVATE_MEMBERS.iter().any(|m| key.contains_key(*m)) {
                return Err(BundleError::PrivateKeyMaterial { index });
            }
            match key.get("use").and_then(Value::as_str) {
                Some(X509_USE) => {
                    let der = x509_authority(index, key)?;
                    if !bundle.x509_authorities.contains(&der) {
                        bundle.x509_authorities.push(der);
                    }
                }
                Some(JWT_USE) => {
                    let kid = key
                        .get("kid")
                        .and_then(Value::as_str)
                        .filter(|k| !k.is_empty())
                        .ok_or(BundleError::MissingKid { index })?;
                    VerifyKey::from_jwk(key).map_err(|source| BundleError::BadJwtKey {
                        index,
                        kid: kid.to_string(),
                        source,
                    })?;
                    if bundle.jwt_authorities.iter().any(|k| k.kid == kid) {
                        return Err(BundleError::DuplicateKid(kid.to_string()));
                    }
                    bundle.jwt_authorities.push(JwtKey {
                        kid: kid.to_string(),
                        jwk: Value::Object(key.clone()),
                    });
                }
                _ => {}
            }
        }
        Ok(bundle)
    }

    /// The X.509 authorities as concatenated DER, the Workload API's
    /// `bundle` field format.
    pub fn x509_der_concat(&self) -> Vec<u8> {
        self.x509_authorities.concat()
    }

    /// The X.509 authorities as PEM CERTIFICATE blocks.
    pub fn x509_pem(&self) -> String {
        let blocks: Vec<pem::Pem> = self
            .x509_authorities
            .iter()
            .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
            .collect();
        pem::encode_many(&blocks)
    }
}

fn x509_authority(index: usize, key: &Map<String, Value>) -> Result<Vec<u8>, BundleError> {
    let certs = match key.get("x5c") {
        Some(Value::Array(certs)) => certs.as_slice(),
        _ => &[],
    };
    let [cert] = certs else {
        return Err(BundleError::X5cCount {
            index,
            count: certs.len(),
        });
    };
    let bad = |reason: String| BundleError::BadX5c { index, reason };
    let b64 = cert
        .as_str()
        .ok_or_else(|| bad("x5c entry is not a string".into()))?;
    let der = STANDARD
        .decode(b64)
        .map_err(|_| bad("x5c entry is not standard base64".into()))?;
    let derived = {
        let cert = parse_cert(&der, "x5c certificate").map_err(|e| bad(e.to_string()))?;
        jwk_from_spki(cert.public_key()).map_err(|e| bad(e.to_string()))?
    };
    for member in KEY_MEMBERS {
        if let Some(v) = key.get(member) {
            if derived.get(member) != Some(v) {
                return Err(BundleError::KeyParamsMismatch { index, member });
            }
        }
    }
    Ok(der)
}

fn optional_u64(doc: &Map<String, Value>, member: &'static str) -> Result<u64, BundleError> {
    match doc.get(member) {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or(BundleError::BadNumber(member)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use serde_json::json;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn sample() -> Bundle {
        let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let ca =
            crate::X509Authority::generate_root(&td(), std::time::Duration::from_secs(3600), now)
                .unwrap();
        let ec = crate::JwtAuthority::generate(crate::KeyAlg::EcP256, now).unwrap();
        let rsa = crate::JwtAuthority::generate(crate::KeyAlg::Rsa2048, now).unwrap();
        Bundle {
            trust_domain: td(),
            x509_authorities: vec![ca.cert_der().to_vec()],
            jwt_authorities: vec![ec.jwt_key(), rsa.jwt_key()],
            sequence: 7,
            refresh_hint_secs: 300,
        }
    }

    fn doc(b: &Bundle) -> Value {
        serde_json::from_slice(&b.to_jwks_json()).unwrap()
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let json = b.to_jwks_json();
        assert_eq!(Bundle::from_jwks_json(&td(), &json).unwrap(), b);

        let d = doc(&b);
        assert_eq!(d["spiffe_sequence"], 7);
        assert_eq!(d["spiffe_refresh_hint"], 300);
        let x509 = &d["keys"][0];
        assert_eq!(x509["use"], "x509-svid");
        assert_eq!(x509["kty"], "EC");
        assert_eq!(x509["crv"], "P-256");
        assert!(x509.get("kid").is_none());
        assert_eq!(x509["x5c"].as_array().unwrap().len(), 1);
        assert_eq!(d["keys"][1]["use"], "jwt-svid");
        assert_eq!(d["keys"][2]["kty"], "RSA");

        let unset = Bundle {
            refresh_hint_secs: 0,
            ..b.clone()
        };
        assert!(doc(&unset).get("spiffe_refresh_hint").is_none());
        assert_eq!(b.x509_der_concat(), b.x509_authorities[0]);
        assert_eq!(
            pem::parse(b.x509_pem()).unwrap().contents(),
            &b.x509_authorities[0][..]
        );
    }

    #[test]
    fn unknown_uses_are_ignored() {
        let b = sample();
        let mut d = doc(&b);
        let keys = d["keys"].as_array_mut().unwrap();
        keys.push(json!({"use": "enc", "kty": "oct"}));
        keys.push(json!({"kty": "EC"}));
        let parsed = Bundle::from_jwks_json(&td(), d.to_string().as_bytes()).unwrap();
        assert_eq!(parsed, b);
        let minimal = Bundle::from_jwks_json(&td(), br#"{"keys": []}"#).unwrap();
        assert_eq!(minimal, Bundle::new(td()));
    }

    #[test]
    fn malformed_documents_are_refused_by_rule() {
        let b = sample();
        let with = |f: &dyn Fn(&mut Value)| -> Vec<u8> {
            let mut d = doc(&b);
            f(&mut d);
            d.to_string().into_bytes()
        };
        let other_cert = {
            let now =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
            let ca = crate::X509Authority::generate_root(
                &td(),
                std::time::Duration::from_secs(3600),
                now,
            )
            .unwrap();
            STANDARD.encode(ca.cert_der())
        };
        let cases: Vec<(&str, Vec<u8>, BundleError)> = vec![
            ("array document", b"[]".to_vec(), BundleError::NotAnObject),
            ("no keys", b"{}".to_vec(), BundleError::MissingKeys),
            (
                "keys not array",
                br#"{"keys": {}}"#.to_vec(),
                BundleError::MissingKeys,
            ),
            (
                "negative sequence",
                br#"{"keys": [], "spiffe_sequence": -1}"#.to_vec(),
                BundleError::BadNumber("spiffe_sequence"),
            ),
            (
                "string hint",
                br#"{"keys": [], "spiffe_refresh_hint": "5m"}"#.to_vec(),
                BundleError::BadNumber("spiffe_refresh_hint"),
            ),
            (
                "key not object",
                br#"{"keys": [1]}"#.to_vec(),
                BundleError::KeyNotObject { index: 0 },
            ),
            (
                "no x5c",
                with(&|d| {
                    d["keys"][0].as_object_mut().unwrap().remove("x5c");
                }),
                BundleError::X5cCount { index: 0, count: 0 },
            ),
            (
                "two x5c",
                with(&|d| {
                    d["keys"][0]["x5c"] = json!([other_cert, other_cert]);
                }),
                BundleError::X5cCount { index: 0, count: 2 },
            ),
            (
                "x5c other key",
                with(&|d| {
                    d["keys"][0]["x5c"] = json!([other_cert]);
                }),
                BundleError::KeyParamsMismatch {
                    index: 0,
                    member: "x",
                },
            ),
            (
                "jwt no kid",
                with(&|d| {
                    d["keys"][1].as_object_mut().unwrap().remove("kid");
                }),
                BundleError::MissingKid { index: 1 },
            ),
            (
                "private member",
                with(&|d| {
                    d["keys"][1]["d"] = json!("AAAA");
                }),
                BundleError::PrivateKeyMaterial { index: 1 },
            ),
            (
                "duplicate kid",
                with(&|d| {
                    let k = d["keys"][1]["kid"].clone();
                    d["keys"][2]["kid"] = k;
                }),
                BundleError::DuplicateKid(b.jwt_authorities[0].kid.clone()),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(
                Bundle::from_jwks_json(&td(), &input).unwrap_err(),
                want,
                "{name}"
            );
        }
        assert!(matches!(
            Bundle::from_jwks_json(&td(), b"{"),
            Err(BundleError::NotJson(_))
        ));
        let bad_b64 = with(&|d| d["keys"][0]["x5c"] = json!(["%%%"]));
        assert!(matches!(
            Bundle::from_jwks_json(&td(), &bad_b64),
            Err(BundleError::BadX5c { index: 0, .. })
        ));
        let not_cert = with(&|d| d["keys"][0]["x5c"] = json!(["AAAA"]));
        assert!(matches!(
            Bundle::from_jwks_json(&td(), &not_cert),
            Err(BundleError::BadX5c { index: 0, .. })
        ));
        let bad_curve = with(&|d| d["keys"][1]["crv"] = json!("P-999"));
        assert!(matches!(
            Bundle::from_jwks_json(&td(), &bad_curve),
            Err(BundleError::BadJwtKey {
                index: 1,
                source: JwkError::UnsupportedCurve(_),
                ..
            })
        ));
    }

    #[test]
    fn private_members_are_never_published() {
        let mut b = sample();
        b.jwt_authorities[0].jwk["d"] = json!("secret");
        let d = doc(&b);
        assert!(d["keys"][1].get("d").is_none());
    }
}
