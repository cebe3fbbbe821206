//! Writes the seed corpora under `fuzz/seeds/<target>/` (and, the first
//! time, the fixture keys in `fuzz/fixtures/keys.json`).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`
//!
//! Seeds are small valid and invalid inputs that get each target past its
//! first checks; libFuzzer mutates from there. Text seeds are listed here so
//! they can be read; binary ones (CSRs, certificates, tokens) are made with
//! the fixture keys so they verify in the targets.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hallmark_core::{Entry, EntryId, EntrySpec, RawEntrySpec};
use hallmark_fuzz::{Fixtures, StoredFixtures, AUDIENCE, WORKLOAD_ID};
use hallmark_proto::hallmark as pb;
use prost::Message;
use serde_json::{json, Value};

type Seeds = Vec<(String, Vec<u8>)>;

fn main() -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let keys_path = root.join("fixtures/keys.json");
    if !keys_path.exists() {
        let stored = StoredFixtures::generate()?;
        let json = serde_json::to_string(&stored).map_err(|e| e.to_string())?;
        fs::write(&keys_path, json + "\n").map_err(|e| format!("{}: {e}", keys_path.display()))?;
        println!("wrote {}", keys_path.display());
    }
    let json =
        fs::read_to_string(&keys_path).map_err(|e| format!("{}: {e}", keys_path.display()))?;
    let fixtures = Fixtures::from_json(&json)?;

    let targets: Vec<(&str, Seeds)> = vec![
        ("spiffe_id", text(SPIFFE_IDS)),
        ("selector", text(SELECTORS)),
        ("duration", text(DURATIONS)),
        (
            "entry_spec",
            ENTRY_SPECS
                .iter()
                .map(|(name, fields)| (name.to_string(), fields.join("\0").into_bytes()))
                .collect(),
        ),
        ("proto_entry", proto_entries()?),
        ("csr", csrs(&root, &fixtures)?),
        ("csr_mutation", csr_edits()),
        ("x509_cert", certificates(&fixtures)),
        ("bundle", bundles(&fixtures)),
        ("jwt", tokens(&fixtures)?),
        ("policy_document", text(POLICY_DOCUMENTS)),
    ];
    for (target, seeds) in targets {
        let dir = root.join("seeds").join(target);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, bytes) in &seeds {
            write(&dir.join(name), bytes)?;
        }
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn text(cases: &[(&str, &str)]) -> Seeds {
    cases
        .iter()
        .map(|(name, s)| (name.to_string(), s.as_bytes().to_vec()))
        .collect()
}

const SPIFFE_IDS: &[(&str, &str)] = &[
    ("valid-td-only", "spiffe://example.org"),
    ("valid-workload", "spiffe://example.org/ns/prod/sa/web"),
    ("valid-odd-chars", "spiffe://a-b_c.9/x.y-z_W/1"),
    ("valid-bare-trust-domain", "example.org"),
    ("invalid-uppercase-td", "spiffe://Example.org/web"),
    ("invalid-trailing-slash", "spiffe://example.org/web/"),
    ("invalid-empty-segment", "spiffe://example.org//web"),
    ("invalid-dot-segment", "spiffe://example.org/./web"),
    ("invalid-dotdot-segment", "spiffe://example.org/a/../web"),
    ("invalid-port", "spiffe://example.org:443/web"),
    ("invalid-userinfo", "spiffe://user@example.org/web"),
    ("invalid-query", "spiffe://example.org/web?x=1"),
    ("invalid-fragment", "spiffe://example.org/web#x"),
    ("invalid-scheme", "https://example.org/web"),
    ("invalid-no-td", "spiffe:///web"),
    ("invalid-percent", "spiffe://example.org/w%20b"),
    ("invalid-unicode", "spiffe://exämple.org/web"),
];

const SELECTORS: &[(&str, &str)] = &[
    ("valid-uid", "unix:uid:1000"),
    ("valid-path", "unix:path:/usr/bin/web"),
    (
        "valid-sha256",
        "unix:sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
    ("valid-docker-label", "docker:label:app:web:v2"),
    ("valid-docker-image", "docker:image_id:sha256:abc"),
    ("valid-k8s-ns", "k8s:ns:payments"),
    ("valid-k8s-pod-label", "k8s:pod-label:app:web"),
    ("valid-hallmark", "hallmark:context:ci"),
    ("invalid-uid-text", "unix:uid:root"),
    ("invalid-uid-overflow", "unix:uid:4294967296"),
    ("invalid-relative-path", "unix:path:bin/web"),
    (
        "invalid-sha256-upper",
        "unix:sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ),
    ("invalid-label-no-name", "docker:label::web"),
    ("invalid-type", "aws:region:eu-west-1"),
    ("invalid-key", "unix:pid:1"),
    ("invalid-no-value", "unix:uid:"),
    ("invalid-one-colon", "unix:uid"),
    ("invalid-control", "unix:user:a\tb"),
];

const DURATIONS: &[(&str, &str)] = &[
    ("valid-bare", "90"),
    ("valid-seconds", "90s"),
    ("valid-minutes", "15m"),
    ("valid-compound", "2h30m"),
    ("valid-all-units", "1d2h3m4s"),
    ("valid-unnormalised", "90m120s"),
    ("valid-padded", " 1h "),
    ("valid-max", "18446744073709551615"),
    ("invalid-zero", "0s"),
    ("invalid-negative", "-5s"),
    ("invalid-unit", "5x"),
    ("invalid-no-unit", "5h3"),
    ("invalid-overflow", "99999999999999999999d"),
    ("invalid-mul-overflow", "213503982334601d"),
    ("invalid-space-inside", "1h 30m"),
];

/// Fields of `RawEntrySpec` in the `entry_spec` target's order: spiffe_id,
/// parent_id, selectors, x509_ttl, jwt_ttl, dns_names, hint, admin (lists
/// newline-separated). The target reads them NUL-separated.
const ENTRY_SPECS: &[(&str, &[&str])] = &[
    (
        "valid-minimal",
        &[
            "spiffe://example.org/web",
            "spiffe://example.org/hallmark/agent/node1",
            "unix:uid:1000",
        ],
    ),
    (
        "valid-full",
        &[
            "spiffe://example.org/web",
            "spiffe://example.org/hallmark/agent/node1",
            "docker:label:app:web\nunix:uid:1000\nunix:uid:1000",
            "3600",
            "300",
            "Web.Example.org\n*.svc.example.org",
            "web",
            "1",
        ],
    ),
    (
        "valid-ttl-bounds",
        &[
            "spiffe://example.org/db",
            "spiffe://example.org/agent",
            "k8s:ns:db",
            "10",
            "2592000",
        ],
    ),
    (
        "invalid-foreign-domain",
        &[
            "spiffe://other.org/web",
            "spiffe://example.org/agent",
            "unix:uid:1000",
        ],
    ),
    (
        "invalid-parent-no-path",
        &[
            "spiffe://example.org/web",
            "spiffe://example.org",
            "unix:uid:1000",
        ],
    ),
    (
        "invalid-no-selectors",
        &["spiffe://example.org/web", "spiffe://example.org/agent", ""],
    ),
    (
        "invalid-ttl-low",
        &[
            "spiffe://example.org/web",
            "spiffe://example.org/agent",
            "unix:uid:1000",
            "9",
        ],
    ),
    (
        "invalid-ttl-high",
        &[
            "spiffe://example.org/web",
            "spiffe://example.org/agent",
            "unix:uid:1000",
            "",
            "2592001",
        ],
    ),
    (
        "invalid-dns",
        &[
            "spiffe://example.org/web",
            "spiffe://example.org/agent",
            "unix:uid:1000",
            "",
            "",
            "-bad-.example.org",
        ],
    ),
    (
        "invalid-hint",
        &[
            "spiffe://example.org/web",
            "spiffe://example.org/agent",
            "unix:uid:1000",
            "",
            "",
            "",
            "tab\there",
        ],
    ),
];

fn proto_entries() -> Result<Seeds, String> {
    let raw = RawEntrySpec {
        spiffe_id: "spiffe://example.org/web",
        parent_id: "spiffe://example.org/hallmark/agent/node1",
        selectors: vec!["unix:uid:1000", "docker:label:app:web"],
        dns_names: vec!["web.example.org"],
        hint: "web",
        ..Default::default()
    };
    let spec = EntrySpec::parse(&raw, "example.org").map_err(|e| e.to_string())?;
    let entry = Entry {
        id: EntryId::parse("7f3c2a4e-1b2c-4d5e-8f90-123456789abc").map_err(|e| e.to_string())?,
        spec,
        created_at: 1_700_000_000,
        revision: 3,
    };
    let valid = pb::Entry::from(&entry);
    let upper_id = pb::Entry {
        id: "7F3C2A4E-1B2C-4D5E-8F90-123456789ABC".into(),
        ..valid.clone()
    };
    let bad_selector = pb::Entry {
        selectors: vec!["unix:uid:x".into()],
        ..valid.clone()
    };
    let bad_id = pb::Entry {
        id: "entry-1".into(),
        ..valid.clone()
    };
    Ok(vec![
        ("valid".into(), valid.encode_to_vec()),
        ("valid-uppercase-id".into(), upper_id.encode_to_vec()),
        ("invalid-selector".into(), bad_selector.encode_to_vec()),
        ("invalid-id".into(), bad_id.encode_to_vec()),
        ("invalid-empty".into(), Vec::new()),
    ])
}

fn csrs(root: &Path, fixtures: &Fixtures) -> Result<Seeds, String> {
    let mut seeds: Seeds = vec![("valid-p256-fixture.der".into(), fixtures.csr_der.clone())];
    for (name, alg) in [
        ("valid-p384.der", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("valid-rsa2048.der", &rcgen::PKCS_RSA_SHA256),
        ("valid-ed25519.der", &rcgen::PKCS_ED25519),
    ] {
        let key = rcgen::KeyPair::generate_for(alg).map_err(|e| format!("{name}: {e}"))?;
        let csr = rcgen::CertificateParams::new(vec!["web.example.org".to_string()])
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| format!("{name}: {e}"))?;
        seeds.push((name.into(), csr.der().to_vec()));
    }
    let pem_path = root.join("../crates/hallmark-ca/tests/fixtures/rsa1024.csr.pem");
    let pem_text =
        fs::read_to_string(&pem_path).map_err(|e| format!("{}: {e}", pem_path.display()))?;
    let rsa1024 = pem::parse(pem_text).map_err(|e| e.to_string())?;
    seeds.push(("invalid-rsa1024.der".into(), rsa1024.into_contents()));

    let good = &fixtures.csr_der;
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut trailing = good.clone();
    trailing.push(0);
    seeds.extend([
        ("invalid-tampered.der".into(), tampered),
        ("invalid-trailing.der".into(), trailing),
        (
            "invalid-truncated.der".into(),
            good[..good.len() / 2].to_vec(),
        ),
        ("invalid-garbage".into(), b"not a csr".to_vec()),
    ]);
    Ok(seeds)
}

fn csr_edits() -> Seeds {
    vec![
        ("noop-empty".into(), Vec::new()),
        ("noop-zero-mask".into(), vec![0, 40, 0]),
        ("noop-twice".into(), vec![0, 40, 0x55, 0, 40, 0x55]),
        ("outer-tag".into(), vec![0, 0, 0x01]),
        ("outer-length".into(), vec![0, 2, 0x01]),
        ("info-byte".into(), vec![0, 60, 0x20]),
        ("last-byte".into(), vec![0xff, 0xff, 0x01]),
        ("many".into(), vec![0, 10, 0x80, 0, 90, 0x01, 0, 150, 0x10]),
        // Tags outside the signed request: the outer SEQUENCE made primitive
        // (0x30 -> 0x10), and the signature algorithm's OID tag changed
        // (positions fit the fixture CSR's layout).
        ("outer-tag-primitive".into(), vec![0, 0, 0x20]),
        ("signature-oid-tag".into(), vec![0, 165, 0x01]),
    ]
}

fn certificates(fixtures: &Fixtures) -> Seeds {
    let svid = &fixtures.svid_der;
    let mut tampered = svid.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    vec![
        ("valid-svid.der".into(), svid.clone()),
        (
            "valid-root.der".into(),
            fixtures.x509_root.trust_anchor_der().to_vec(),
        ),
        ("invalid-tampered.der".into(), tampered),
        (
            "invalid-truncated.der".into(),
            svid[..svid.len() / 2].to_vec(),
        ),
        ("invalid-garbage".into(), b"not a certificate".to_vec()),
    ]
}

fn bundles(fixtures: &Fixtures) -> Seeds {
    let full = fixtures.bundle.to_jwks_json();
    let doc: Value = serde_json::from_slice(&full).unwrap_or(Value::Null);
    let keys = doc["keys"].as_array().cloned().unwrap_or_default();
    let x509 = keys.first().cloned().unwrap_or(Value::Null);
    let jwt = keys.get(1).cloned().unwrap_or(Value::Null);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = jwt.clone();
        f(&mut v);
        v
    };
    let seeds = [
        ("valid-full", doc.clone()),
        ("valid-empty", json!({"keys": []})),
        (
            "valid-refresh-hint",
            json!({"keys": [jwt], "spiffe_sequence": 9, "spiffe_refresh_hint": 300}),
        ),
        (
            "valid-unknown-use",
            json!({"keys": [{"kty": "oct", "use": "enc"}, x509]}),
        ),
        ("invalid-not-object", json!([1, 2])),
        ("invalid-no-keys", json!({"spiffe_sequence": 1})),
        (
            "invalid-negative-sequence",
            json!({"keys": [], "spiffe_sequence": -1}),
        ),
        (
            "invalid-private-member",
            json!({"keys": [with(&|v| v["d"] = json!("AAAA"))]}),
        ),
        ("invalid-duplicate-kid", json!({"keys": [jwt, jwt]})),
        (
            "invalid-missing-kid",
            json!({"keys": [with(&|v| { v.as_object_mut().map(|o| o.remove("kid")); })]}),
        ),
        (
            "invalid-bad-curve",
            json!({"keys": [with(&|v| v["crv"] = json!("P-192"))]}),
        ),
        (
            "invalid-x5c-two",
            json!({"keys": [{"use": "x509-svid", "x5c": [x509["x5c"][0], x509["x5c"][0]]}]}),
        ),
        (
            "invalid-x5c-base64",
            json!({"keys": [{"use": "x509-svid", "x5c": ["***"]}]}),
        ),
        (
            "invalid-x5c-key-mismatch",
            json!({"keys": [{"use": "x509-svid", "x5c": x509["x5c"], "kty": "RSA"}]}),
        ),
    ];
    let mut out: Seeds = seeds
        .into_iter()
        .map(|(name, v)| (format!("{name}.json"), v.to_string().into_bytes()))
        .collect();
    out.push(("invalid-not-json".into(), b"{\"keys\": [".to_vec()));
    out.push((
        "valid-x5c-standard-base64.json".into(),
        json!({"keys": [{"use": "x509-svid", "x5c": [STANDARD.encode(fixtures.x509_root.trust_anchor_der())]}]})
            .to_string()
            .into_bytes(),
    ));
    out
}

fn tokens(fixtures: &Fixtures) -> Result<Seeds, String> {
    let minted = fixtures.minted_tokens()?;
    let mut seeds: Seeds = minted
        .iter()
        .map(|t| (format!("{}.jwt", t.name), t.token.clone().into_bytes()))
        .collect();
    let valid = minted
        .iter()
        .find(|t| t.valid)
        .ok_or("no valid fixture token")?
        .token
        .clone();
    let parts: Vec<&str> = valid.split('.').collect();
    let [_, payload, signature] = parts.as_slice() else {
        return Err("minted token is not three parts".into());
    };
    let kid = fixtures
        .jwt_keys
        .first()
        .map(|k| k.kid().to_string())
        .unwrap_or_default();
    let header = |h: Value| URL_SAFE_NO_PAD.encode(h.to_string());
    let claims = |c: Value| URL_SAFE_NO_PAD.encode(c.to_string());
    let good_claims = json!({"sub": WORKLOAD_ID, "aud": AUDIENCE, "exp": 1_700_000_300u64});
    let forged = [
        (
            "invalid-alg-none",
            format!("{}.{payload}.", header(json!({"alg": "none", "kid": kid}))),
        ),
        (
            "invalid-alg-hs256",
            format!(
                "{}.{payload}.{signature}",
                header(json!({"alg": "HS256", "kid": kid}))
            ),
        ),
        (
            "invalid-typ",
            format!(
                "{}.{payload}.{signature}",
                header(json!({"alg": "ES256", "kid": kid, "typ": "at+jwt"}))
            ),
        ),
        (
            "invalid-crit",
            format!(
                "{}.{payload}.{signature}",
                header(json!({"alg": "ES256", "kid": kid, "crit": ["x"]}))
            ),
        ),
        (
            "invalid-no-kid",
            format!("{}.{payload}.{signature}", header(json!({"alg": "ES256"}))),
        ),
        (
            "invalid-unknown-kid",
            format!(
                "{}.{payload}.{signature}",
                header(json!({"alg": "ES256", "kid": "nope"}))
            ),
        ),
        (
            "invalid-alg-mismatch",
            format!(
                "{}.{payload}.{signature}",
                header(json!({"alg": "RS256", "kid": kid}))
            ),
        ),
        (
            "invalid-forged-claims",
            format!(
                "{}.{}.{signature}",
                parts[0],
                claims(
                    json!({"sub": WORKLOAD_ID, "aud": [AUDIENCE, "x"], "exp": 4_000_000_000u64})
                )
            ),
        ),
        (
            "invalid-sub-no-path",
            format!(
                "{}.{}.{signature}",
                parts[0],
                claims(
                    json!({"sub": "spiffe://example.org", "aud": AUDIENCE, "exp": 1_700_000_300u64})
                )
            ),
        ),
        (
            "invalid-claims-not-object",
            format!("{}.{}.{signature}", parts[0], claims(json!([good_claims]))),
        ),
        ("invalid-two-parts", format!("{}.{payload}", parts[0])),
        (
            "invalid-signature-base64",
            format!("{}.{payload}.@@@", parts[0]),
        ),
        ("invalid-empty", String::new()),
    ];
    seeds.extend(
        forged
            .into_iter()
            .map(|(n, t)| (format!("{n}.jwt"), t.into_bytes())),
    );
    Ok(seeds)
}

/// Policy documents: valid ones (the issue's example, every condition, a
/// suggestion as written) and refused ones, so mutation starts from both.
const POLICY_DOCUMENTS: &[(&str, &str)] = &[
    (
        "issue-example",
        r#"groups:
  web:
    - selector: docker:label:app:web
  payments-db:
    - spiffe_id: spiffe://example.org/payments/db/*
    - namespace: payments
      labels: {tier: db}
  corp:
    - cidr: 10.8.0.0/16
rules:
  - name: web-to-db
    from: [web]
    to: [payments-db]
    protocol: tcp
    ports: ["5432", "8000-8100"]
    action: allow
    mode: enforce
    priority: 100
default: allow
"#,
    ),
    (
        "every-condition",
        r#"groups:
  g:
    - spiffe_id: spiffe://example.org/ns/*/sa/db
      selector: k8s:ns:payments
      namespace: payments
      labels: {app.kubernetes.io/name: db}
      match_expressions:
        - {key: env, operator: NotIn, values: [dev]}
        - {key: team, operator: Exists}
        - {key: x, operator: DoesNotExist}
        - {key: tier, operator: In, values: [db, cache]}
      image: "nginx:*"
      context: prod
      node: n1
      cidr: "fd00::/8"
rules:
  - {name: w, from: [any], to: [g], protocol: udp, ports: [53], action: deny, mode: watch, priority: 0}
  - {name: e, from: [g], to: [any], action: allow}
default: deny
"#,
    ),
    (
        "contradiction",
        r#"groups:
  never:
    - match_expressions: [{key: a, operator: Exists}, {key: a, operator: DoesNotExist}]
rules: [{name: r, from: [never], to: [any], action: allow}]
"#,
    ),
    (
        "errors",
        r#"groups:
  any: [{}]
  web: [{cidr: 10.0.0.1/8, selectors: x}]
rules:
  - {name: r, from: [nope], to: [], ports: ['0', '9-1'], action: permit}
  - {name: r}
default: maybe
"#,
    ),
    (
        "suggested",
        r#"groups:
  "shop":
    - namespace: "shop"
rules:
  - name: "shop-to-shop-tcp"
    from: ["shop"]
    to: ["shop"]
    protocol: tcp
    ports: ["8080", "9090"]
    action: allow
    mode: watch
    priority: 1000
  - name: "unobserved-traffic"
    from: ["any"]
    to: ["any"]
    protocol: any
    action: deny
    mode: watch
    priority: 4294967295
default: allow
"#,
    ),
];
