//! JWT-SVIDs end to end: minted by a JwtAuthority, published in a bundle,
//! validated rule by rule. Hostile tokens are built by hand.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hallmark_ca::{validate_jwt_svid, Bundle, JwtAuthority, JwtError, KeyAlg, ValidatedJwt};
use hallmark_core::{SpiffeId, TrustDomain};
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const TTL: Duration = Duration::from_secs(300);

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn workload() -> SpiffeId {
    SpiffeId::new("spiffe://example.org/web").unwrap()
}

struct Fixture {
    key: JwtAuthority,
    bundle: Bundle,
}

impl Fixture {
    fn new(alg: KeyAlg) -> Self {
        let key = JwtAuthority::generate(alg, at(NOW)).unwrap();
        let mut bundle = Bundle::new(td());
        bundle.jwt_authorities.push(key.jwt_key());
        // Go through the wire format, as a relying party would.
        let bundle = Bundle::from_jwks_json(&td(), &bundle.to_jwks_json()).unwrap();
        Fixture { key, bundle }
    }

    fn validate(&self, token: &str, audience: &str, now: u64) -> Result<ValidatedJwt, JwtError> {
        let lookup =
            |t: &TrustDomain| (t == &self.bundle.trust_domain).then(|| self.bundle.clone());
        validate_jwt_svid(token, audience, &lookup, at(now))
    }

    /// A token with arbitrary header and claims, correctly signed by the
    /// fixture's EC key.
    fn forge(&self, header: Value, claims: Value) -> String {
        let stored = self.key.to_stored();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &stored.key_pkcs8).unwrap();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn header(&self) -> Value {
        json!({"alg": "ES256", "typ": "JWT", "kid": self.key.kid()})
    }
}

fn claims() -> Value {
    json!({"sub": "spiffe://example.org/web", "aud": "db", "iat": NOW, "exp": NOW + 300})
}

#[test]
fn mint_then_validate_for_both_key_algorithms() {
    for alg in [KeyAlg::EcP256, KeyAlg::Rsa2048] {
        let f = Fixture::new(alg);
        let mut extra = serde_json::Map::new();
        extra.insert("iss".into(), json!("https://oidc.example.org"));
        let token = f
            .key
            .mint(
                &workload(),
                &["db".into(), "cache".into()],
                TTL,
                at(NOW),
                Some(&extra),
            )
            .unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], alg.jws_alg());

        let v = f.validate(&token, "cache", NOW + 1).unwrap();
        assert_eq!(v.spiffe_id, workload());
        assert_eq!(v.claims["iss"], "https://oidc.example.org");
        assert_eq!(v.claims["aud"], json!(["db", "cache"]));
        // Valid until the last second before exp, with no leeway after.
        assert!(f.validate(&token, "db", NOW + 299).is_ok());
        assert!(matches!(
            f.validate(&token, "db", NOW + 300),
            Err(JwtError::Expired { exp, now }) if exp == (NOW + 300) as i64 && now == (NOW + 300) as i64
        ));
    }
}

#[test]
fn each_rule_has_its_own_error() {
    let f = Fixture::new(KeyAlg::EcP256);
    let good = f
        .key
        .mint(&workload(), &["db".into()], TTL, at(NOW), None)
        .unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());

    let tampered = {
        let mut c = claims();
        c["sub"] = json!("spiffe://example.org/admin");
        format!("{}.{}.{}", parts[0], b64(c), parts[2])
    };
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims())
    );
    let hs256 = {
        // Key confusion: HMAC keyed with the public JWK, which anyone has.
        let header = b64(json!({"alg": "HS256", "typ": "JWT", "kid": f.key.kid()}));
        let input = format!("{header}.{}", b64(claims()));
        let secret = f.key.public_jwk().to_string();
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes()),
            input.as_bytes(),
        );
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
    };
    let with_header = |patch: Value| {
        let mut h = f.header();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                h.as_object_mut().unwrap().remove(k);
            } else {
                h[k] = v.clone();
            }
        }
        f.forge(h, claims())
    };
    let with_claims = |patch: Value| {
        let mut c = claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        f.forge(f.header(), c)
    };
    let other_td = TrustDomain::new("other.org").unwrap();

    let cases: Vec<(&str, String, &str, JwtError)> = vec![
        (
            "wrong audience",
            good.clone(),
            "web",
            JwtError::WrongAudience {
                expected: "web".into(),
                found: vec!["db".into()],
            },
        ),
        ("tampered payload", tampered, "db", JwtError::BadSignature),
        (
            "alg none",
            alg_none,
            "db",
            JwtError::UnsupportedAlg("none".into()),
        ),
        (
            "HS256",
            hs256,
            "db",
            JwtError::UnsupportedAlg("HS256".into()),
        ),
        (
            "EdDSA",
            with_header(json!({"alg": "EdDSA"})),
            "db",
            JwtError::UnsupportedAlg("EdDSA".into()),
        ),
        (
            "typ foo",
            with_header(json!({"typ": "foo"})),
            "db",
            JwtError::BadTyp("\"foo\"".into()),
        ),
        (
            "crit",
            with_header(json!({"crit": ["exp"]})),
            "db",
            JwtError::UnsupportedCrit,
        ),
        (
            "no kid",
            with_header(json!({"kid": null})),
            "db",
            JwtError::MissingKid,
        ),
        (
            "unknown kid",
            with_header(json!({"kid": "nope"})),
            "db",
            JwtError::UnknownKey {
                kid: "nope".into(),
                trust_domain: td(),
            },
        ),
        (
            "alg does not fit key",
            with_header(json!({"alg": "RS256"})),
            "db",
            JwtError::KeyAlgMismatch {
                kid: f.key.kid().into(),
                alg: "RS256".into(),
            },
        ),
        (
            "no sub",
            with_claims(json!({"sub": null})),
            "db",
            JwtError::MissingClaim("sub"),
        ),
        (
            "numeric sub",
            with_claims(json!({"sub": 5})),
            "db",
            JwtError::BadClaim {
                claim: "sub",
                reason: "must be a string",
            },
        ),
        (
            "other trust domain",
            with_claims(json!({"sub": "spiffe://other.org/web"})),
            "db",
            JwtError::NoBundle(other_td),
        ),
        (
            "no aud",
            with_claims(json!({"aud": null})),
            "db",
            JwtError::MissingClaim("aud"),
        ),
        (
            "aud not strings",
            with_claims(json!({"aud": [1]})),
            "db",
            JwtError::BadClaim {
                claim: "aud",
                reason: "must be a string or an array of strings",
            },
        ),
        (
            "no exp",
            with_claims(json!({"exp": null})),
            "db",
            JwtError::MissingClaim("exp"),
        ),
        (
            "string exp",
            with_claims(json!({"exp": "soon"})),
            "db",
            JwtError::BadClaim {
                claim: "exp",
                reason: "must be a number (seconds since the epoch)",
            },
        ),
        (
            "expired",
            with_claims(json!({"exp": NOW - 1})),
            "db",
            JwtError::Expired {
                exp: NOW as i64 - 1,
                now: NOW as i64,
            },
        ),
        (
            "nbf in future",
            with_claims(json!({"nbf": NOW + 5})),
            "db",
            JwtError::NotYetValid {
                nbf: NOW as i64 + 5,
                now: NOW as i64,
            },
        ),
        (
            "empty audience asked",
            good.clone(),
            "",
            JwtError::EmptyAudience,
        ),
        (
            "two parts",
            "a.b".into(),
            "db",
            JwtError::Malformed("not three base64url parts separated by `.`"),
        ),
        (
            "four parts",
            format!("{good}.x"),
            "db",
            JwtError::Malformed("not three base64url parts separated by `.`"),
        ),
        (
            "header not JSON",
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("nope"),
                parts[1],
                parts[2]
            ),
            "db",
            JwtError::Malformed("header is not base64url JSON object"),
        ),
        (
            "padded signature",
            format!("{good}="),
            "db",
            JwtError::Malformed("signature is not base64url"),
        ),
    ];
    for (name, token, audience, want) in cases {
        assert_eq!(
            f.validate(&token, audience, NOW).unwrap_err(),
            want,
            "{name}"
        );
    }

    let bad_sub = f
        .validate(
            &with_claims(json!({"sub": "spiffe://example.org"})),
            "db",
            NOW,
        )
        .unwrap_err();
    assert!(matches!(bad_sub, JwtError::BadSubject { .. }), "{bad_sub}");
}

#[test]
fn accepted_variants() {
    let f = Fixture::new(KeyAlg::EcP256);
    for header in [
        json!({"alg": "ES256", "kid": f.key.kid()}),
        json!({"alg": "ES256", "kid": f.key.kid(), "typ": "JOSE"}),
    ] {
        assert!(
            f.validate(&f.forge(header.clone(), claims()), "db", NOW)
                .is_ok(),
            "{header}"
        );
    }
    let mut c = claims();
    c["nbf"] = json!(NOW);
    c["exp"] = json!(NOW as f64 + 0.5);
    assert!(f.validate(&f.forge(f.header(), c), "db", NOW).is_ok());
}

#[test]
fn a_key_rotated_out_of_the_bundle_no_longer_validates() {
    let f = Fixture::new(KeyAlg::EcP256);
    let token = f
        .key
        .mint(&workload(), &["db".into()], TTL, at(NOW), None)
        .unwrap();
    let newer = JwtAuthority::generate(KeyAlg::EcP256, at(NOW)).unwrap();
    let mut bundle = Bundle::new(td());
    bundle.jwt_authorities.push(newer.jwt_key());
    let lookup = |_: &TrustDomain| Some(bundle.clone());
    assert!(matches!(
        validate_jwt_svid(&token, "db", &lookup, at(NOW)),
        Err(JwtError::UnknownKey { .. })
    ));
    // Same kid, different key material: the signature decides.
    let mut impostor = Bundle::new(td());
    impostor.jwt_authorities.push(hallmark_ca::JwtKey {
        kid: f.key.kid().to_string(),
        jwk: {
            let mut jwk = newer.public_jwk();
            jwk["kid"] = json!(f.key.kid());
            jwk
        },
    });
    let lookup = |_: &TrustDomain| Some(impostor.clone());
    assert_eq!(
        validate_jwt_svid(&token, "db", &lookup, at(NOW)).unwrap_err(),
        JwtError::BadSignature
    );
}
