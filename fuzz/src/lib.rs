//! Fixtures shared by the fuzz targets and the seed generator
//! (`examples/make_seeds.rs`).
//!
//! Targets that check "nothing verifies unless it was signed" need keys that
//! are the same in every run, so a crash reproduces and the checked-in seeds
//! (tokens, certificates) are signed by the keys the target trusts. The keys
//! live in `fixtures/keys.json`; they protect nothing and exist only for
//! fuzzing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_ca::{
    generate_key_and_csr, Bundle, JwtAuthority, KeyAlg, StoredAuthority, StoredJwtKey,
    X509Authority,
};
use hallmark_core::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The trust domain every fixture belongs to.
pub const TRUST_DOMAIN: &str = "example.org";
/// The audience the `jwt` target validates for.
pub const AUDIENCE: &str = "aud";
/// The instant fixtures are minted at; targets validate a second later.
pub const MINTED_AT_UNIX: u64 = 1_700_000_000;
/// The workload ID in the fixture CSR, tokens and certificate.
pub const WORKLOAD_ID: &str = "spiffe://example.org/fuzz/web";

/// `MINTED_AT_UNIX` as a `SystemTime`.
pub fn minted_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(MINTED_AT_UNIX)
}

/// The instant targets validate at.
pub fn validation_time() -> SystemTime {
    minted_at() + Duration::from_secs(1)
}

/// What `fixtures/keys.json` holds.
#[derive(Serialize, Deserialize)]
pub struct StoredFixtures {
    pub x509_root: StoredAuthority,
    pub jwt_keys: Vec<StoredJwtKey>,
    /// A CSR made by `hallmark_ca::generate_key_and_csr` for [`WORKLOAD_ID`].
    pub csr_der: Vec<u8>,
    /// An X509-SVID for [`WORKLOAD_ID`] signed by `x509_root`.
    pub svid_der: Vec<u8>,
}

/// The loaded fixtures.
pub struct Fixtures {
    pub x509_root: X509Authority,
    pub jwt_keys: Vec<JwtAuthority>,
    pub csr_der: Vec<u8>,
    pub svid_der: Vec<u8>,
    /// The trust domain's bundle: the root and every JWT key.
    pub bundle: Bundle,
}

impl StoredFixtures {
    /// New keys, a CSR and an SVID (for the first run of the seed generator).
    pub fn generate() -> Result<Self, String> {
        let td = trust_domain()?;
        let root =
            X509Authority::generate_root(&td, Duration::from_secs(10 * 365 * 86400), minted_at())
                .map_err(|e| e.to_string())?;
        let jwt_keys = [KeyAlg::EcP256, KeyAlg::Rsa2048]
            .into_iter()
            .map(|alg| JwtAuthority::generate(alg, minted_at()).map(|k| k.to_stored()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let id = workload_id()?;
        let (_, csr_der) = generate_key_and_csr(&id).map_err(|e| e.to_string())?;
        let chain = root
            .sign_x509_svid(&csr_der, &id, &[], Duration::from_secs(3600), minted_at())
            .map_err(|e| e.to_string())?;
        let svid_der = chain
            .into_iter()
            .next()
            .ok_or("signing returned an empty chain")?;
        Ok(StoredFixtures {
            x509_root: root.to_stored(),
            jwt_keys,
            csr_der,
            svid_der,
        })
    }

    pub fn load(&self) -> Result<Fixtures, String> {
        let x509_root = X509Authority::from_stored(&self.x509_root).map_err(|e| e.to_string())?;
        let jwt_keys = self
            .jwt_keys
            .iter()
            .map(JwtAuthority::from_stored)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut bundle = Bundle::new(trust_domain()?);
        bundle
            .x509_authorities
            .push(x509_root.trust_anchor_der().to_vec());
        bundle.jwt_authorities = jwt_keys.iter().map(JwtAuthority::jwt_key).collect();
        bundle.sequence = 1;
        Ok(Fixtures {
            x509_root,
            jwt_keys,
            csr_der: self.csr_der.clone(),
            svid_der: self.svid_der.clone(),
            bundle,
        })
    }
}

impl Fixtures {
    /// Parses `fixtures/keys.json` (targets pass it in with `include_str!`).
    pub fn from_json(json: &str) -> Result<Self, String> {
        let stored: StoredFixtures =
            serde_json::from_str(json).map_err(|e| format!("fixtures/keys.json: {e}"))?;
        stored.load()
    }

    /// Every JWT-SVID the fixture keys sign: each template with each key.
    /// Some are valid at [`validation_time`], the others break one claim
    /// rule with a correct signature.
    pub fn minted_tokens(&self) -> Result<Vec<MintedToken>, String> {
        let mut out = Vec::new();
        for key in &self.jwt_keys {
            for t in jwt_templates() {
                let id = SpiffeId::new(t.sub).map_err(|e| format!("{}: {e}", t.sub))?;
                let audience: Vec<String> = t.audience.iter().map(|a| a.to_string()).collect();
                let token = key
                    .mint(
                        &id,
                        &audience,
                        Duration::from_secs(t.ttl_secs),
                        t.minted_at,
                        t.extra.as_ref(),
                    )
                    .map_err(|e| format!("minting {}: {e}", t.name))?;
                out.push(MintedToken {
                    name: format!("{}-{}", t.name, key.alg()),
                    token,
                    valid: t.valid,
                });
            }
        }
        Ok(out)
    }
}

/// A JWT-SVID the fixture keys signed.
pub struct MintedToken {
    pub name: String,
    pub token: String,
    /// Whether it validates for [`AUDIENCE`] at [`validation_time`].
    pub valid: bool,
}

struct JwtTemplate {
    name: &'static str,
    sub: &'static str,
    audience: &'static [&'static str],
    ttl_secs: u64,
    minted_at: SystemTime,
    extra: Option<Map<String, Value>>,
    valid: bool,
}

fn jwt_templates() -> Vec<JwtTemplate> {
    let now = MINTED_AT_UNIX;
    let claims = |pairs: &[(&str, Value)]| {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<Map<_, _>>(),
        )
    };
    let base = |name, valid| JwtTemplate {
        name,
        sub: WORKLOAD_ID,
        audience: &[AUDIENCE],
        ttl_secs: 300,
        minted_at: minted_at(),
        extra: None,
        valid,
    };
    vec![
        base("valid", true),
        JwtTemplate {
            audience: &["other", AUDIENCE],
            extra: claims(&[("nbf", (now - 5).into()), ("team", "payments".into())]),
            ..base("valid-extra-claims", true)
        },
        JwtTemplate {
            minted_at: minted_at() - Duration::from_secs(3600),
            ..base("expired", false)
        },
        JwtTemplate {
            audience: &["other"],
            ..base("wrong-audience", false)
        },
        JwtTemplate {
            extra: claims(&[("nbf", (now + 100).into())]),
            ..base("not-yet-valid", false)
        },
        JwtTemplate {
            sub: "spiffe://other.org/fuzz/web",
            ..base("foreign-trust-domain", false)
        },
    ]
}

fn trust_domain() -> Result<TrustDomain, String> {
    TrustDomain::new(TRUST_DOMAIN).map_err(|e| format!("{TRUST_DOMAIN}: {e}"))
}

fn workload_id() -> Result<SpiffeId, String> {
    SpiffeId::new(WORKLOAD_ID).map_err(|e| format!("{WORKLOAD_ID}: {e}"))
}

/// Lowercase hex, for putting inputs into assertion messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
