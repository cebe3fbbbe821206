//! `propagation`: how long a registration change takes to reach a workload
//! that is watching its X509-SVIDs.
//!
//! One FetchX509SVID stream stays open for the whole run. Each iteration
//! registers a new SPIFFE ID for this process through the admin API and
//! waits until the stream delivers a response containing it (the server
//! pushes the entry to the agent, the agent mints the SVID, the stream
//! resends the full state), then deletes the entry and waits until a
//! response no longer contains it. The admin call alone (a committed
//! datastore write) is the baseline: what is left is the push, the minting
//! and the stream.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use hallmark_proto::hallmark::admin_client::AdminClient;
use hallmark_proto::workload::{X509svidRequest, X509svidResponse};
use serde::Serialize;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::cluster::{
    delete_entry, own_uid_selector, workload_client, workload_request, Cluster, SETUP_TIMEOUT,
};
use crate::report::{num, verdict, Table};
use crate::stats::{Samples, Summary};

/// The target: a new registration is served within this time at p99.
pub const TARGET_P99: Duration = Duration::from_millis(200);
/// One change not visible after this long fails the run.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first `unix:uid` of background entries: far from real users.
const FIRST_BACKGROUND_UID: u32 = 300_000;

#[derive(Args, Debug, Clone)]
pub struct PropagationArgs {
    /// Entries to create (and then delete), one at a time.
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
    /// Other entries registered on the agent first (matching no process):
    /// every change resends the agent's whole entry set, so this shows how
    /// propagation scales with it.
    #[arg(long, default_value_t = 0)]
    pub background: usize,
}

#[derive(Debug, Serialize)]
pub struct Phase {
    /// From the admin call until the workload's stream shows the change.
    pub end_to_end: Summary,
    /// The admin call alone (CreateEntry / DeleteEntry): the baseline.
    pub admin_call: Summary,
    pub target_p99_ms: f64,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct PropagationReport {
    pub iterations: usize,
    pub background_entries: usize,
    pub create: Phase,
    pub delete: Phase,
}

pub async fn run(args: &PropagationArgs) -> Result<PropagationReport> {
    let mut cluster = Cluster::start().await?;
    let admin = cluster.admin().await?;
    let report = measure(&mut cluster, admin, args).await;
    cluster.shutdown().await;
    report
}

/// Measures on a running cluster, making registration changes through
/// `admin` (which may be another server than the agent's).
pub async fn measure(
    cluster: &mut Cluster,
    mut admin: AdminClient<Channel>,
    args: &PropagationArgs,
) -> Result<PropagationReport> {
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let selectors = [own_uid_selector()];
    for i in 0..args.background {
        let id = cluster.spiffe_id(&format!("bench/propagation/background/{i}"));
        let uid = FIRST_BACKGROUND_UID as usize + i;
        cluster
            .create_entry(&mut admin, &id, &[format!("unix:uid:{uid}")])
            .await?;
    }
    // Without an identity the stream would end at once with PermissionDenied.
    let base = cluster.spiffe_id("bench/propagation/base");
    cluster.create_entry(&mut admin, &base, &selectors).await?;
    cluster
        .wait_for_svids(args.background + 1, SETUP_TIMEOUT)
        .await?;
    let mut client = workload_client(&cluster.workload_socket()?).await?;
    let mut stream = client
        .fetch_x509svid(workload_request(X509svidRequest {}))
        .await
        .map_err(|s| anyhow!("FetchX509SVID: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    wait_until(&mut stream, |r| holds(r, &base)).await?;

    let n = args.iterations;
    let (mut create, mut create_call) = (Samples::with_capacity(n), Samples::with_capacity(n));
    let (mut delete, mut delete_call) = (Samples::with_capacity(n), Samples::with_capacity(n));
    for i in 0..n {
        let id = cluster.spiffe_id(&format!("bench/propagation/{i}"));
        let t = Instant::now();
        let entry = cluster.create_entry(&mut admin, &id, &selectors).await?;
        create_call.push(t.elapsed());
        wait_until(&mut stream, |r| holds(r, &id)).await?;
        create.push(t.elapsed());

        let t = Instant::now();
        delete_entry(&mut admin, &entry.id).await?;
        delete_call.push(t.elapsed());
        wait_until(&mut stream, |r| !holds(r, &id)).await?;
        delete.push(t.elapsed());
    }
    drop(stream);
    Ok(PropagationReport {
        iterations: n,
        background_entries: args.background,
        create: phase(&create, &create_call)?,
        delete: phase(&delete, &delete_call)?,
    })
}

fn phase(end_to_end: &Samples, call: &Samples) -> Result<Phase> {
    let none = || anyhow!("no change was measured");
    let end_to_end = end_to_end.summary().ok_or_else(none)?;
    let target_ms = TARGET_P99.as_secs_f64() * 1_000.0;
    Ok(Phase {
        end_to_end,
        admin_call: call.summary().ok_or_else(none)?,
        target_p99_ms: target_ms,
        met: end_to_end.p99_us / 1_000.0 < target_ms,
    })
}

fn holds(resp: &X509svidResponse, spiffe_id: &str) -> bool {
    resp.svids.iter().any(|s| s.spiffe_id == spiffe_id)
}

/// Reads the stream until a response satisfies `done`.
async fn wait_until(
    stream: &mut Streaming<X509svidResponse>,
    done: impl Fn(&X509svidResponse) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| anyhow!("the change did not reach the stream within {CHANGE_TIMEOUT:?}"))?
            .map_err(|s| anyhow!("FetchX509SVID stream: {} ({:?})", s.message(), s.code()))?
            .ok_or_else(|| anyhow!("the FetchX509SVID stream ended"))?;
        if done(&msg) {
            return Ok(());
        }
    }
}

pub fn print(r: &PropagationReport) {
    println!(
        "Propagation: {} entries created then deleted, one at a time, with {} other entries on the agent",
        r.iterations, r.background_entries
    );
    let ms = |us: f64| num(us / 1_000.0);
    let mut t = Table::new(&[
        "change",
        "p50 ms",
        "p99 ms",
        "max ms",
        "target p99",
        "verdict",
    ]);
    for (name, p) in [
        ("create -> served", &r.create),
        ("delete -> gone", &r.delete),
    ] {
        t.row(vec![
            name.into(),
            ms(p.end_to_end.p50_us),
            ms(p.end_to_end.p99_us),
            ms(p.end_to_end.max_us),
            format!("< {:.0} ms", p.target_p99_ms),
            verdict(p.met),
        ]);
    }
    for (name, p) in [
        ("baseline: CreateEntry call", &r.create),
        ("baseline: DeleteEntry call", &r.delete),
    ] {
        t.row(vec![
            name.into(),
            ms(p.admin_call.p50_us),
            ms(p.admin_call.p99_us),
            ms(p.admin_call.max_us),
            String::new(),
            String::new(),
        ]);
    }
    print!("{}", t.render());
}

#[cfg(test)]
mod tests {
    use super::*;
    use hallmark_proto::workload::X509svid;

    fn resp(ids: &[&str]) -> X509svidResponse {
        X509svidResponse {
            svids: ids
                .iter()
                .map(|id| X509svid {
                    spiffe_id: id.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn holds_matches_whole_ids_only() {
        let r = resp(&["spiffe://td/a", "spiffe://td/b/1"]);
        assert!(holds(&r, "spiffe://td/a"));
        assert!(!holds(&r, "spiffe://td/b"));
        assert!(!holds(&resp(&[]), "spiffe://td/a"));
    }

    #[test]
    fn a_phase_meets_the_target_only_below_200_ms_at_p99() {
        let mut fast = Samples::default();
        let mut slow = Samples::default();
        for _ in 0..99 {
            fast.push(Duration::from_millis(5));
            slow.push(Duration::from_millis(5));
        }
        fast.push(Duration::from_millis(500));
        slow.push(Duration::from_millis(500));
        slow.push(Duration::from_millis(500));
        assert!(
            phase(&fast, &fast).unwrap().met,
            "one outlier in 100 is above p99"
        );
        assert!(!phase(&slow, &slow).unwrap().met);
        assert!(phase(&Samples::default(), &fast).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_sees_every_change() {
        let r = run(&PropagationArgs {
            iterations: 3,
            background: 5,
        })
        .await
        .unwrap();
        assert_eq!(r.background_entries, 5);
        assert_eq!(r.create.end_to_end.count, 3);
        assert_eq!(r.delete.end_to_end.count, 3);
        assert!(r.create.end_to_end.p50_us >= r.create.admin_call.p50_us);
    }
}
