//! `issuance`: how fast the server turns CSRs into X509-SVIDs, against the
//! raw signing rate of the same library and key type, and how long an
//! agent takes to obtain SVIDs for many entries end to end.
//!
//! The per-certificate work of `BatchNewX509Svid` is
//! [`X509Authority::sign_x509_svid`]: verify the CSR's self-signature,
//! build the leaf, sign it. Each part is also timed alone so that the gap
//! to the raw signature rate can be attributed.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};
use clap::Args;
use hallmark_ca::{generate_key_and_csr, verify_csr, X509Authority};
use hallmark_core::{SpiffeId, TrustDomain};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use serde::Serialize;
use x509_parser::prelude::FromDer;

use crate::cluster::{Cluster, SETUP_TIMEOUT, TRUST_DOMAIN};
use crate::report::{num, verdict, Table};
use crate::stats;

/// The target: signing SVIDs at no less than this share of the raw
/// signature rate.
pub const TARGET_SHARE_OF_RAW: f64 = 0.6;
/// Lifetime of the benchmark's SVIDs (the server's entry default).
const SVID_TTL: Duration = Duration::from_secs(3_600);
/// The first `unix:uid` of the end-to-end entries: far from real users, so
/// they match no process.
const FIRST_FAKE_UID: u32 = 100_000;

#[derive(Args, Debug, Clone)]
pub struct IssuanceArgs {
    /// CSRs per round, and entries in each end-to-end run (the node API
    /// takes at most 1000 CSRs per call).
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Rounds of each single-threaded measurement; the median round is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

/// One single-threaded operation, timed over every round.
#[derive(Debug, Clone, Serialize)]
pub struct OpRate {
    pub name: &'static str,
    /// Median over rounds.
    pub per_sec: f64,
    pub us_per_op: f64,
    pub per_round: Vec<f64>,
}

/// Where the time of one `sign_x509_svid` goes.
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    pub sign_x509_svid_us: f64,
    pub verify_csr_us: f64,
    pub build_leaf_us: f64,
    pub raw_sign_us: f64,
    /// What the three parts leave unexplained (copies, chain assembly, noise).
    pub other_us: f64,
}

/// The agent's first sync with N entries registered before it started.
#[derive(Debug, Clone, Serialize)]
pub struct FirstSync {
    pub entries: usize,
    /// `hallmark_agent::start`: join-token attestation, before any sync.
    pub attest_ms: f64,
    /// From attested to N SVIDs in the snapshot: Sync stream, N keys and
    /// CSRs, one BatchNewX509Svid, snapshot publication.
    pub sync_ms: f64,
    pub svids_per_sec: f64,
}

/// N entries created one by one while the agent runs.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSync {
    pub entries: usize,
    /// Creating all entries through the admin API, one after another.
    pub create_all_ms: f64,
    /// From the last CreateEntry answer until the agent holds N SVIDs.
    pub last_create_to_all_svids_ms: f64,
    /// From the first CreateEntry call until the agent holds N SVIDs.
    pub first_create_to_all_svids_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct IssuanceReport {
    pub batch: usize,
    pub rounds: usize,
    /// Size of the signed part of one issued leaf: the raw signatures are
    /// over messages of this size.
    pub tbs_bytes: usize,
    pub leaf_bytes: usize,
    pub ops: Vec<OpRate>,
    pub certs_per_sec: f64,
    pub raw_signatures_per_sec: f64,
    pub share_of_raw: Option<f64>,
    pub target_share: f64,
    pub met: bool,
    /// The most any design that verifies each CSR can reach: one raw
    /// verification plus one raw signature per certificate.
    pub verify_plus_sign_per_sec: f64,
    pub share_of_verify_plus_sign: Option<f64>,
    pub breakdown: Breakdown,
    pub first_sync: FirstSync,
    pub live_sync: LiveSync,
}

pub async fn run(args: &IssuanceArgs) -> Result<IssuanceReport> {
    if args.batch == 0 || args.rounds == 0 {
        anyhow::bail!("--batch and --rounds must be at least 1");
    }
    let micro = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || micro_benchmarks(&args))
            .await
            .context("signing benchmark task")??
    };
    eprintln!("  single-threaded measurements done; end to end next");
    let first_sync = first_sync(args.batch)
        .await
        .context("end-to-end first sync")?;
    eprintln!(
        "  first sync of {} entries: {} ms",
        first_sync.entries,
        num(first_sync.sync_ms)
    );
    let live_sync = live_sync(args.batch)
        .await
        .context("end-to-end live sync")?;

    let get = |name: &str| {
        micro
            .ops
            .iter()
            .find(|o| o.name == name)
            .cloned()
            .ok_or_else(|| anyhow!("no measurement named {name}"))
    };
    let full = get(OP_SIGN_SVID)?;
    let raw = get(OP_RAW_SIGN)?;
    let verify = get(OP_VERIFY_CSR)?;
    let build = get(OP_BUILD_LEAF)?;
    let raw_verify = get(OP_RAW_VERIFY)?;
    let share = stats::ratio(full.per_sec, raw.per_sec);
    let ceiling = stats::ratio(1e6, raw.us_per_op + raw_verify.us_per_op).unwrap_or(0.0);
    Ok(IssuanceReport {
        batch: args.batch,
        rounds: args.rounds,
        tbs_bytes: micro.tbs_bytes,
        leaf_bytes: micro.leaf_bytes,
        certs_per_sec: full.per_sec,
        raw_signatures_per_sec: raw.per_sec,
        share_of_raw: share,
        target_share: TARGET_SHARE_OF_RAW,
        met: share.is_some_and(|s| s >= TARGET_SHARE_OF_RAW),
        verify_plus_sign_per_sec: ceiling,
        share_of_verify_plus_sign: stats::ratio(full.per_sec, ceiling),
        breakdown: Breakdown {
            sign_x509_svid_us: full.us_per_op,
            verify_csr_us: verify.us_per_op,
            build_leaf_us: build.us_per_op,
            raw_sign_us: raw.us_per_op,
            other_us: full.us_per_op - verify.us_per_op - build.us_per_op - raw.us_per_op,
        },
        ops: micro.ops,
        first_sync,
        live_sync,
    })
}

const OP_SIGN_SVID: &str = "sign_x509_svid (verify CSR + build + sign)";
const OP_VERIFY_CSR: &str = "verify_csr alone";
const OP_BUILD_LEAF: &str = "build leaf alone (no signature)";
const OP_RAW_SIGN: &str = "raw ECDSA P-256 sign (baseline)";
const OP_RAW_VERIFY: &str = "raw ECDSA P-256 verify";
const OP_KEY_AND_CSR: &str = "agent: key + CSR (generate_key_and_csr)";

struct Micro {
    ops: Vec<OpRate>,
    tbs_bytes: usize,
    leaf_bytes: usize,
}

/// Everything single-threaded, rounds interleaved so that a disturbance
/// (another process taking the CPU) hits every operation alike.
fn micro_benchmarks(args: &IssuanceArgs) -> Result<Micro> {
    let now = SystemTime::now();
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let ca = X509Authority::generate_root(&td, Duration::from_secs(86_400), now)?;
    let ids: Vec<SpiffeId> = (0..args.batch)
        .map(|i| td.id_with_path(&format!("/bench/issuance/{i}")))
        .collect::<Result<_, _>>()?;

    // Agent side, timed once: the CSRs everything below works on.
    let t = Instant::now();
    let csrs: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| generate_key_and_csr(id).map(|(_, csr)| csr))
        .collect::<Result<_, _>>()?;
    let keygen_rate = stats::rate(args.batch, t.elapsed());
    let spkis: Vec<Vec<u8>> = csrs
        .iter()
        .map(|c| verify_csr(c))
        .collect::<Result<_, _>>()?;

    let sample = ca.sign_x509_svid(&csrs[0], &ids[0], &[], SVID_TTL, now)?;
    let leaf = sample
        .first()
        .ok_or_else(|| anyhow!("sign_x509_svid returned an empty chain"))?;
    let tbs_bytes = tbs_len(leaf)?;
    let builder = LeafBuilder::new(&ca)?;

    let rng = SystemRandom::new();
    let raw_key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| anyhow!("generating the raw ECDSA P-256 key"))?;
    let message = vec![0x5a_u8; tbs_bytes];
    let raw_sig = raw_key
        .sign(&rng, &message)
        .map_err(|_| anyhow!("raw ECDSA signing"))?;
    let raw_pub = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, raw_key.public_key().as_ref());

    let names = [
        OP_SIGN_SVID,
        OP_VERIFY_CSR,
        OP_BUILD_LEAF,
        OP_RAW_SIGN,
        OP_RAW_VERIFY,
    ];
    let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let n = args.batch;
    for _ in 0..args.rounds {
        per_round[0].push(timed(n, |i| {
            ca.sign_x509_svid(&csrs[i], &ids[i], &[], SVID_TTL, now)
                .map(drop)
                .map_err(anyhow::Error::from)
        })?);
        per_round[1].push(timed(n, |i| {
            verify_csr(&csrs[i]).map(drop).map_err(anyhow::Error::from)
        })?);
        per_round[2].push(timed(n, |i| {
            builder.build(&spkis[i], &ids[i], now).map(drop)
        })?);
        per_round[3].push(timed(n, |_| {
            raw_key
                .sign(&rng, &message)
                .map(drop)
                .map_err(|_| anyhow!("raw ECDSA signing"))
        })?);
        per_round[4].push(timed(n, |_| {
            raw_pub
                .verify(&message, raw_sig.as_ref())
                .map_err(|_| anyhow!("raw ECDSA verification"))
        })?);
    }
    let mut ops: Vec<OpRate> = names
        .into_iter()
        .zip(per_round)
        .map(|(name, rounds)| op_rate(name, rounds))
        .collect();
    ops.push(op_rate(OP_KEY_AND_CSR, vec![keygen_rate]));
    Ok(Micro {
        ops,
        tbs_bytes,
        leaf_bytes: leaf.len(),
    })
}

fn op_rate(name: &'static str, per_round: Vec<f64>) -> OpRate {
    let per_sec = stats::median(&per_round).unwrap_or(0.0);
    OpRate {
        name,
        per_sec,
        us_per_op: if per_sec > 0.0 { 1e6 / per_sec } else { 0.0 },
        per_round,
    }
}

/// Runs `op` for 0..n and returns operations per second.
fn timed(n: usize, mut op: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    for i in 0..n {
        op(i)?;
    }
    Ok(stats::rate(n, t.elapsed()))
}

/// Length of the TBSCertificate of a DER certificate.
fn tbs_len(cert_der: &[u8]) -> Result<usize> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow!("parsing an issued SVID: {e}"))?;
    Ok(cert.tbs_certificate.as_ref().len())
}

/// Stands in for the CA key: returns a fixed, well-formed ECDSA signature
/// instead of signing, so that building a leaf can be timed without the
/// signature. rcgen's remote-key hook is the only way to run its
/// certificate encoder with the signing step taken out.
struct NoSignature {
    public_key: Vec<u8>,
}

/// A DER ECDSA-Sig-Value of typical length (two 33-byte INTEGERs).
const FIXED_SIGNATURE: [u8; 72] = {
    let mut s = [0x11_u8; 72];
    s[0] = 0x30;
    s[1] = 70;
    s[2] = 0x02;
    s[3] = 33;
    s[4] = 0x00;
    s[5] = 0x80;
    s[37] = 0x02;
    s[38] = 33;
    s[39] = 0x00;
    s[40] = 0x80;
    s
};

impl rcgen::RemoteKeyPair for NoSignature {
    fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(FIXED_SIGNATURE.to_vec())
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// Builds X509-SVID leaves exactly as `X509Authority::sign_x509_svid` does
/// after CSR verification (SPKI parsing, parameters, serial, DER
/// encoding), with [`NoSignature`] in place of the CA key. The test below
/// checks that it produces a TBS of the same size as the real one, so the
/// two cannot drift apart unnoticed.
struct LeafBuilder {
    issuer: rcgen::Certificate,
    key: rcgen::KeyPair,
    ca_not_after: i64,
}

impl LeafBuilder {
    fn new(ca: &X509Authority) -> Result<Self> {
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der())
            .map_err(|e| anyhow!("parsing the CA certificate: {e}"))?;
        let key = rcgen::KeyPair::from_remote(Box::new(NoSignature {
            public_key: ca_cert.public_key().subject_public_key.data.to_vec(),
        }))?;
        let issuer = CertificateParams::from_ca_cert_der(&rustls_pki_types::CertificateDer::from(
            ca.cert_der(),
        ))?
        .self_signed(&key)?;
        Ok(LeafBuilder {
            issuer,
            key,
            ca_not_after: ca_cert.validity().not_after.timestamp(),
        })
    }

    fn build(&self, spki_der: &[u8], id: &SpiffeId, now: SystemTime) -> Result<Vec<u8>> {
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki_der)?;
        let rsa_key = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
            .map(|(_, spki)| {
                spki.algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION
            })
            .map_err(|e| anyhow!("parsing a public key: {e}"))?;
        let now_s = hallmark_core::time::unix_secs(now);
        let mut params = CertificateParams::default();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(now_s - 10)?;
        params.not_after = time::OffsetDateTime::from_unix_timestamp(
            (now_s + SVID_TTL.as_secs() as i64).min(self.ca_not_after),
        )?;
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| anyhow!("random serial"))?;
        serial[0] = (serial[0] & 0x7f) | 0x40;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, id.trust_domain_name());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        params.is_ca = IsCa::NoCa;
        let mut bc = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
        bc.set_criticality(true);
        params.custom_extensions.push(bc);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if rsa_key {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&public_key, &self.issuer, &self.key)?;
        Ok(cert.der().to_vec())
    }
}

/// Distinct, never-matching selectors for the end-to-end entries.
fn fake_selector(i: usize) -> String {
    format!("unix:uid:{}", FIRST_FAKE_UID as usize + i)
}

async fn first_sync(n: usize) -> Result<FirstSync> {
    let mut cluster = Cluster::start_server().await?;
    let mut admin = cluster.admin().await?;
    for i in 0..n {
        let id = cluster.spiffe_id(&format!("bench/first-sync/{i}"));
        cluster
            .create_entry(&mut admin, &id, &[fake_selector(i)])
            .await?;
    }
    let t = Instant::now();
    cluster.start_agent().await?;
    let attest = t.elapsed();
    let sync = cluster.wait_for_svids(n, SETUP_TIMEOUT).await?;
    cluster.shutdown().await;
    Ok(FirstSync {
        entries: n,
        attest_ms: ms(attest),
        sync_ms: ms(sync),
        svids_per_sec: stats::rate(n, sync),
    })
}

async fn live_sync(n: usize) -> Result<LiveSync> {
    let mut cluster = Cluster::start().await?;
    let mut admin = cluster.admin().await?;
    let first = Instant::now();
    for i in 0..n {
        let id = cluster.spiffe_id(&format!("bench/live-sync/{i}"));
        cluster
            .create_entry(&mut admin, &id, &[fake_selector(i)])
            .await?;
    }
    let last = Instant::now();
    cluster.wait_for_svids(n, SETUP_TIMEOUT).await?;
    let done = Instant::now();
    cluster.shutdown().await;
    Ok(LiveSync {
        entries: n,
        create_all_ms: ms(last - first),
        last_create_to_all_svids_ms: ms(done - last),
        first_create_to_all_svids_ms: ms(done - first),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

pub fn print(r: &IssuanceReport) {
    println!(
        "X509-SVID issuance: {} CSRs per round, {} rounds, single thread; leaf {} bytes, TBS {} bytes",
        r.batch, r.rounds, r.leaf_bytes, r.tbs_bytes
    );
    let mut t = Table::new(&["operation", "per second", "us per op"]);
    for op in &r.ops {
        t.row(vec![op.name.into(), num(op.per_sec), num(op.us_per_op)]);
    }
    print!("{}", t.render());
    println!();
    let mut c = Table::new(&["certs/s", "raw sigs/s", "share", "target", "verdict"]);
    c.row(vec![
        num(r.certs_per_sec),
        num(r.raw_signatures_per_sec),
        r.share_of_raw
            .map_or_else(|| "-".into(), |s| format!("{:.0}%", s * 100.0)),
        format!(">= {:.0}%", r.target_share * 100.0),
        verdict(r.met),
    ]);
    print!("{}", c.render());
    println!(
        "ceiling with one CSR verification per certificate (raw verify + raw sign): {}/s; reached {}",
        num(r.verify_plus_sign_per_sec),
        r.share_of_verify_plus_sign
            .map_or_else(|| "-".into(), |s| format!("{:.0}%", s * 100.0))
    );
    println!();
    let b = &r.breakdown;
    println!(
        "one sign_x509_svid = {} us: verify CSR {} + build {} + sign {} + other {}",
        num(b.sign_x509_svid_us),
        num(b.verify_csr_us),
        num(b.build_leaf_us),
        num(b.raw_sign_us),
        num(b.other_us)
    );
    println!();
    let f = &r.first_sync;
    let l = &r.live_sync;
    let mut e = Table::new(&["end to end", "entries", "ms", "SVIDs/s"]);
    e.row(vec![
        "first sync: attest (join token)".into(),
        f.entries.to_string(),
        num(f.attest_ms),
        "-".into(),
    ]);
    e.row(vec![
        "first sync: attested -> all SVIDs".into(),
        f.entries.to_string(),
        num(f.sync_ms),
        num(f.svids_per_sec),
    ]);
    e.row(vec![
        "live: create all entries (admin API)".into(),
        l.entries.to_string(),
        num(l.create_all_ms),
        "-".into(),
    ]);
    e.row(vec![
        "live: last create -> all SVIDs".into(),
        l.entries.to_string(),
        num(l.last_create_to_all_svids_ms),
        "-".into(),
    ]);
    e.row(vec![
        "live: first create -> all SVIDs".into(),
        l.entries.to_string(),
        num(l.first_create_to_all_svids_ms),
        num(l.entries as f64 / (l.first_create_to_all_svids_ms / 1_000.0)),
    ]);
    print!("{}", e.render());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_builder_matches_sign_x509_svid() {
        let now = SystemTime::now();
        let td = TrustDomain::new(TRUST_DOMAIN).unwrap();
        let ca = X509Authority::generate_root(&td, Duration::from_secs(86_400), now).unwrap();
        let id = td.id_with_path("/w").unwrap();
        let (_, csr) = generate_key_and_csr(&id).unwrap();
        let real = ca.sign_x509_svid(&csr, &id, &[], SVID_TTL, now).unwrap();
        let spki = verify_csr(&csr).unwrap();
        let built = LeafBuilder::new(&ca)
            .unwrap()
            .build(&spki, &id, now)
            .unwrap();
        assert_eq!(tbs_len(&built).unwrap(), tbs_len(&real[0]).unwrap());

        let (_, a) = x509_parser::parse_x509_certificate(&real[0]).unwrap();
        let (_, b) = x509_parser::parse_x509_certificate(&built).unwrap();
        assert_eq!(a.subject().to_string(), b.subject().to_string());
        assert_eq!(a.issuer().to_string(), b.issuer().to_string());
        assert_eq!(a.validity().not_before, b.validity().not_before);
        assert_eq!(a.validity().not_after, b.validity().not_after);
        assert_eq!(a.public_key().raw, b.public_key().raw);
        let exts = |c: &x509_parser::certificate::X509Certificate<'_>| {
            c.extensions()
                .iter()
                .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
                .collect::<Vec<_>>()
        };
        assert_eq!(exts(&a), exts(&b));
    }

    #[test]
    fn the_fixed_signature_is_well_formed_der() {
        let (rest, obj) = x509_parser::der_parser::parse_der(&FIXED_SIGNATURE).unwrap();
        assert!(rest.is_empty());
        let seq = obj.as_sequence().unwrap();
        assert_eq!(seq.len(), 2);
    }

    #[test]
    fn micro_benchmarks_time_every_operation() {
        let m = micro_benchmarks(&IssuanceArgs {
            batch: 3,
            rounds: 2,
        })
        .unwrap();
        let names: Vec<&str> = m.ops.iter().map(|o| o.name).collect();
        assert_eq!(
            names,
            [
                OP_SIGN_SVID,
                OP_VERIFY_CSR,
                OP_BUILD_LEAF,
                OP_RAW_SIGN,
                OP_RAW_VERIFY,
                OP_KEY_AND_CSR
            ]
        );
        for op in &m.ops {
            assert!(op.per_sec > 0.0, "{}", op.name);
        }
        assert_eq!(m.ops[0].per_round.len(), 2);
        assert!(m.tbs_bytes > 200 && m.tbs_bytes < m.leaf_bytes);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_to_end_runs_reach_every_svid() {
        let f = first_sync(3).await.unwrap();
        assert_eq!(f.entries, 3);
        assert!(f.sync_ms > 0.0);
        let l = live_sync(3).await.unwrap();
        assert!(l.first_create_to_all_svids_ms >= l.last_create_to_all_svids_ms);
    }
}
