//! X509-SVID minting for the sync task: keys and CSRs made here, signed by
//! the server in batches, and when each SVID is due for renewal. Private
//! keys never leave the process; the server only ever sees CSRs.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_ca::Bundle;
use hallmark_core::time::from_unix_secs;
use hallmark_core::Entry;
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::node_client::NodeClient;
use rand::Rng;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::state::CachedSvid;

/// Validity window of a certificate as (not_before, not_after).
pub(crate) fn validity(der: &[u8]) -> (SystemTime, SystemTime) {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => (
            from_unix_secs(c.validity().not_before.timestamp()),
            from_unix_secs(c.validity().not_after.timestamp()),
        ),
        Err(_) => (UNIX_EPOCH, UNIX_EPOCH),
    }
}

/// How long the certificate `der` stays valid from now.
pub(crate) fn remaining(der: &[u8]) -> Duration {
    validity(der)
        .1
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// When to renew something valid for `lifetime` from now: at about half its
/// lifetime, spread by ±5% so a fleet does not renew in lockstep.
pub(crate) fn renew_after(lifetime: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range(0.45..0.55);
    lifetime.mul_f64(factor)
}

/// The ID (SHA-256 of the DER certificate, as the server names authorities)
/// of the CA that signed `chain`'s leaf: the next certificate of the chain
/// when there is one, else the bundle root whose subject is the leaf's
/// issuer (a self-signed root's SVIDs carry no chain).
fn issuer_id(chain: &[Vec<u8>], bundle: &Bundle) -> Option<String> {
    use sha2::Digest;
    let hex_sha = |der: &[u8]| hex::encode(sha2::Sha256::digest(der));
    if let Some(ca) = chain.get(1) {
        return Some(hex_sha(ca));
    }
    let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    let issuer = leaf.issuer().as_raw();
    bundle
        .x509_authorities
        .iter()
        .find(|root| {
            x509_parser::parse_x509_certificate(root)
                .is_ok_and(|(_, c)| c.subject().as_raw() == issuer)
        })
        .map(|root| hex_sha(root))
}

/// Whether `chain`'s leaf was signed by one of the `tainted` authorities.
pub(crate) fn signed_by_any(chain: &[Vec<u8>], bundle: &Bundle, tainted: &[String]) -> bool {
    issuer_id(chain, bundle).is_some_and(|id| tainted.contains(&id))
}

/// Generates keys and CSRs for `entries` and has the server sign them in one
/// call. Returns the SVIDs that came back and whether any request failed.
pub(crate) async fn mint_batch(
    client: &mut NodeClient<Channel>,
    entries: &[Entry],
) -> Result<(Vec<CachedSvid>, bool), tonic::Status> {
    let owned: Vec<Entry> = entries.to_vec();
    let keyed = tokio::task::spawn_blocking(move || {
        owned
            .into_iter()
            .filter_map(
                |e| match hallmark_ca::generate_key_and_csr(&e.spec.spiffe_id) {
                    Ok((key, csr)) => Some((e, key, csr)),
                    Err(err) => {
                        tracing::error!(entry = %e.id, error = %err, "generating a key failed");
                        None
                    }
                },
            )
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let requests = keyed
        .iter()
        .map(|(e, _, csr)| pb::SvidRequest {
            entry_id: e.id.to_string(),
            csr: csr.clone(),
        })
        .collect();
    let results = client
        .batch_new_x509_svid(pb::BatchNewX509SvidRequest { requests })
        .await?
        .into_inner()
        .results;
    let mut by_id: HashMap<String, pb::SvidResult> = results
        .into_iter()
        .map(|r| (r.entry_id.clone(), r))
        .collect();
    let mut out = Vec::with_capacity(keyed.len());
    let mut failed = false;
    for (entry, key, _) in keyed {
        match by_id.remove(entry.id.as_str()) {
            Some(pb::SvidResult {
                svid: Some(svid), ..
            }) if !svid.cert_chain.is_empty() => {
                let (_, not_after) = validity(&svid.cert_chain[0]);
                let lifetime = not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                out.push(CachedSvid {
                    entry_id: entry.id.clone(),
                    spiffe_id: entry.spec.spiffe_id.clone(),
                    chain: svid.cert_chain,
                    key_pkcs8: key,
                    not_after,
                    entry_revision: entry.revision,
                    renew_at: Instant::now() + renew_after(lifetime),
                });
            }
            Some(r) => {
                tracing::warn!(entry = %entry.id, error = %r.error, "the server refused to sign");
                failed = true;
            }
            None => {
                tracing::warn!(entry = %entry.id, "the server returned no SVID");
                failed = true;
            }
        }
    }
    Ok((out, failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hallmark_core::TrustDomain;

    #[test]
    fn issuer_of_a_chainless_svid_is_found_in_the_bundle() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let now = SystemTime::now();
        let old =
            hallmark_ca::X509Authority::generate_root(&td, Duration::from_secs(3600), now).unwrap();
        let new =
            hallmark_ca::X509Authority::generate_root(&td, Duration::from_secs(3600), now).unwrap();
        let id = td.id_with_path("/w").unwrap();
        let (_, csr) = hallmark_ca::generate_key_and_csr(&id).unwrap();
        let chain = old
            .sign_x509_svid(&csr, &id, &[], Duration::from_secs(60), now)
            .unwrap();
        assert_eq!(chain.len(), 1, "a root's SVIDs carry no chain");
        let mut bundle = Bundle::new(td.clone());
        bundle.x509_authorities = vec![new.cert_der().to_vec(), old.cert_der().to_vec()];
        assert_eq!(issuer_id(&chain, &bundle).as_deref(), Some(old.id()));
        assert!(signed_by_any(&chain, &bundle, &[old.id().to_string()]));
        assert!(!signed_by_any(&chain, &bundle, &[new.id().to_string()]));
        bundle.x509_authorities = vec![new.cert_der().to_vec()];
        assert_eq!(issuer_id(&chain, &bundle), None, "unknown issuer");
    }

    #[test]
    fn renewal_is_about_half_with_jitter() {
        let life = Duration::from_secs(1000);
        for _ in 0..200 {
            let r = renew_after(life);
            assert!(
                r >= Duration::from_secs(450) && r <= Duration::from_secs(550),
                "{r:?}"
            );
        }
    }
}
