//! `policy-push`: how long an applied policy revision takes to be in force
//! on every connected agent.
//!
//! One server and `--agents` in-process agents, each attested with a join
//! token of its own and holding its own Sync stream. Each iteration applies
//! a new document through the admin API (`ApplyPolicy`, the call `hallmark
//! policy apply` makes) and waits until every agent's policy cell holds that
//! revision, compiled. The admin call alone (a validated, committed
//! datastore write) is the baseline: what is left is the push, the agents'
//! parse and compile.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hallmark_agent::capture::{CaptureConfig, CaptureMode};
use hallmark_agent::{AgentConfig, AgentHandle, ServerTrustSource};
use hallmark_proto::hallmark as pb;
use hallmark_proto::hallmark::admin_client::AdminClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::cluster::{generate_token, Cluster, SETUP_TIMEOUT};
use crate::report::{num, verdict, Table};
use crate::stats::{Samples, Summary};

/// The target: every agent holds a new revision within this time at p99.
pub const TARGET_P99: Duration = Duration::from_secs(1);
/// One revision not in force everywhere after this long fails the run.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug, Clone)]
pub struct PolicyPushArgs {
    /// Revisions to apply, one at a time.
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
    /// Connected agents that must all hold each revision.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Rules in each document (groups: one per ten rules, at least two).
    #[arg(long, default_value_t = 100)]
    pub rules: usize,
}

#[derive(Debug, Serialize)]
pub struct PolicyPushReport {
    pub iterations: usize,
    pub agents: usize,
    pub rules: usize,
    pub document_bytes: usize,
    /// From the admin call until the last agent holds the revision.
    pub all_agents: Summary,
    /// From the admin call until the first agent holds it.
    pub first_agent: Summary,
    /// `ApplyPolicy` alone: the baseline.
    pub admin_call: Summary,
    pub target_p99_ms: f64,
    pub met: bool,
}

/// A document with `rules` rules whose ports depend on `iteration`, so
/// every iteration is a new revision of the same size.
pub fn document(rules: usize, iteration: usize) -> String {
    let groups = (rules / 10).max(2);
    let mut doc = String::from("groups:\n");
    for g in 0..groups {
        doc.push_str(&format!(
            "  g{g}:\n    - selector: docker:label:app:svc-{g}\n"
        ));
    }
    doc.push_str("rules:\n");
    for r in 0..rules {
        let port = 1_000 + (r * 7 + iteration) % 60_000;
        doc.push_str(&format!(
            "  - name: r{r}\n    from: [g{}]\n    to: [g{}]\n    protocol: tcp\n    ports: [\"{port}\"]\n    action: {}\n",
            r % groups,
            (r * 3 + 1) % groups,
            if r % 5 == 0 { "deny" } else { "allow" },
        ));
    }
    doc.push_str("default: allow\n");
    doc
}

pub async fn run(args: &PolicyPushArgs) -> Result<PolicyPushReport> {
    if args.iterations == 0 || args.agents == 0 {
        bail!("--iterations and --agents must be at least 1");
    }
    let cluster = Cluster::start_server().await?;
    let mut admin = cluster.admin().await?;
    let mut agents = Vec::with_capacity(args.agents);
    let result = async {
        for i in 0..args.agents {
            agents.push(start_agent(&cluster, &mut admin, i).await?);
        }
        for a in &mut agents {
            tokio::time::timeout(SETUP_TIMEOUT, a.ready())
                .await
                .map_err(|_| anyhow!("an agent did not sync within {SETUP_TIMEOUT:?}"))?;
        }
        measure(&mut admin, &mut agents, args).await
    }
    .await;
    for a in agents {
        a.shutdown().await;
    }
    cluster.shutdown().await;
    result
}

async fn start_agent(
    cluster: &Cluster,
    admin: &mut AdminClient<Channel>,
    i: usize,
) -> Result<AgentHandle> {
    let node = format!("policy-{i}");
    let token = generate_token(admin, &node).await?;
    let dir = cluster.scratch_dir().join(&node);
    hallmark_agent::start(AgentConfig {
        enforcement: hallmark_agent::enforce::EnforceConfig::off(),
        trust_domain: cluster.trust_domain.clone(),
        socket_path: dir.join("workload.sock"),
        data_dir: dir,
        servers: vec![cluster.server.listen_addr.to_string()],
        join_token: Some(token.token.clone()),
        trust: ServerTrustSource::Fingerprint(token.ca_fingerprint.clone()),
        inventory: hallmark_agent::inventory::InventoryConfig {
            discovery: hallmark_runtime::discovery::DiscoveryConfig {
                choice: hallmark_runtime::discovery::RuntimeChoice::None,
                ..Default::default()
            },
            ..Default::default()
        },
        flows: Default::default(),
        capture: CaptureConfig {
            mode: CaptureMode::Off,
            ..Default::default()
        },
    })
    .await
    .with_context(|| format!("starting agent {node}"))
}

async fn apply(admin: &mut AdminClient<Channel>, document: &str) -> Result<i64> {
    let json = serde_json::json!({
        "file": "bench.yaml",
        "document": document,
        "source": "hallmark-bench policy-push",
    })
    .to_string();
    let answer = admin
        .apply_policy(pb::PolicyRequest { json })
        .await
        .map_err(|s| anyhow!("ApplyPolicy: {}", s.message()))?
        .into_inner()
        .json;
    let v: serde_json::Value = serde_json::from_str(&answer).context("ApplyPolicy answer")?;
    if v["unchanged"].as_bool() == Some(true) {
        bail!("ApplyPolicy created no revision: the documents must differ");
    }
    v["revision"]
        .as_i64()
        .ok_or_else(|| anyhow!("ApplyPolicy answered no revision: {answer}"))
}

async fn measure(
    admin: &mut AdminClient<Channel>,
    agents: &mut [AgentHandle],
    args: &PolicyPushArgs,
) -> Result<PolicyPushReport> {
    let n = args.iterations;
    let (mut all, mut first, mut call) = (
        Samples::with_capacity(n),
        Samples::with_capacity(n),
        Samples::with_capacity(n),
    );
    let mut bytes = 0;
    for i in 0..n {
        let doc = document(args.rules, i);
        bytes = doc.len();
        let t = Instant::now();
        let revision = apply(admin, &doc).await?;
        call.push(t.elapsed());
        let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
        // Every agent's cell is watched at once: the first and the last to
        // hold the revision are both timed from the same start.
        let waits = agents.iter().map(|a| {
            let mut rx = a.policy.clone();
            async move {
                tokio::time::timeout_at(deadline, rx.wait_for(|p| p.revision >= revision))
                    .await
                    .map_err(|_| {
                        anyhow!("revision {revision} not in force within {APPLY_TIMEOUT:?}")
                    })?
                    .map_err(|_| anyhow!("an agent stopped"))?;
                Ok::<Duration, anyhow::Error>(t.elapsed())
            }
        });
        let times = futures::future::try_join_all(waits).await?;
        let (min, max) = times
            .iter()
            .fold((Duration::MAX, Duration::ZERO), |(lo, hi), d| {
                (lo.min(*d), hi.max(*d))
            });
        first.push(min);
        all.push(max);
        for a in agents.iter() {
            if let Some(e) = &a.policy.borrow().error {
                bail!("an agent could not read revision {revision}: {e}");
            }
        }
    }
    let none = || anyhow!("no revision was measured");
    let all = all.summary().ok_or_else(none)?;
    let target_ms = TARGET_P99.as_secs_f64() * 1_000.0;
    Ok(PolicyPushReport {
        iterations: n,
        agents: agents.len(),
        rules: args.rules,
        document_bytes: bytes,
        met: all.p99_us / 1_000.0 < target_ms,
        all_agents: all,
        first_agent: first.summary().ok_or_else(none)?,
        admin_call: call.summary().ok_or_else(none)?,
        target_p99_ms: target_ms,
    })
}

pub fn print(r: &PolicyPushReport) {
    println!(
        "Policy push: {} revisions of {} rules ({} bytes) applied one at a time, {} agents connected",
        r.iterations, r.rules, r.document_bytes, r.agents
    );
    let ms = |us: f64| num(us / 1_000.0);
    let mut t = Table::new(&[
        "phase",
        "p50 ms",
        "p99 ms",
        "max ms",
        "target p99",
        "verdict",
    ]);
    t.row(vec![
        "apply -> every agent".into(),
        ms(r.all_agents.p50_us),
        ms(r.all_agents.p99_us),
        ms(r.all_agents.max_us),
        format!("< {:.0} ms", r.target_p99_ms),
        verdict(r.met),
    ]);
    for (name, s) in [
        ("apply -> first agent", &r.first_agent),
        ("baseline: ApplyPolicy call", &r.admin_call),
    ] {
        t.row(vec![
            name.into(),
            ms(s.p50_us),
            ms(s.p99_us),
            ms(s.max_us),
            String::new(),
            String::new(),
        ]);
    }
    print!("{}", t.render());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn documents_parse_and_differ_per_iteration() {
        let (a, b) = (document(100, 0), document(100, 1));
        assert_ne!(a, b);
        for d in [&a, &b] {
            let parsed = hallmark_policy::parse("bench.yaml", d).unwrap();
            assert_eq!(parsed.document.rules.len(), 100);
            assert_eq!(parsed.document.groups.len(), 10);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_reaches_every_agent() {
        let r = run(&PolicyPushArgs {
            iterations: 3,
            agents: 3,
            rules: 20,
        })
        .await
        .unwrap();
        assert_eq!((r.iterations, r.agents), (3, 3));
        assert!(r.all_agents.p50_us >= r.first_agent.p50_us);
        assert!(r.all_agents.max_us < APPLY_TIMEOUT.as_micros() as f64);
    }
}
