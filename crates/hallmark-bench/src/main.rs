//! `hallmark-bench`: benchmarks of Hallmark's identity plane.
//!
//! Every benchmark measures its baseline in the same run, on the same
//! machine, so the figures it prints are comparisons rather than absolute
//! numbers that depend on the day. Each prints a table and, with
//! `--json FILE`, writes the same figures (plus the machine) as JSON.
//! docs/PERFORMANCE.md records the results and how to reproduce them.
//!
//! - `workload-api`: Workload API latency under concurrent clients vs a
//!   no-op gRPC service on the same transport.
//! - `issuance`: X509-SVID signing vs raw ECDSA signing, and end-to-end
//!   minting for many entries.
//! - `propagation`: registration change to workload, vs the admin call.
//! - `agent-memory`: agent memory holding N SVIDs vs none.
//! - `token-endpoint`: the agent's HTTP token endpoint vs FetchJWTSVID.
//! - `attribution`: the flow attribution engine vs a plain IP lookup, and
//!   graded against ground truth beside two naive baselines.
//! - `flow-ingest`: flows into the store with attribution (file and UDP
//!   collector) vs raw batched inserts of the same rows.
//! - `flow-graph`: `flows graph --since 24h` over a day of stored flows vs
//!   the plain SQL aggregate over the flows table.
//! - `capture`: eBPF flow capture attached vs not (connection rate, bulk
//!   throughput), the agent's CPU per flow and memory with 100,000 open
//!   connections, and close -> `flows list`.
//! - `policy`: identity policy decisions and group membership vs the
//!   `cedar-policy` crate deciding the same questions from the same policy.
//! - `policy-push`: an applied policy revision in force on every agent, vs
//!   the apply call.
//! - `enforce`: identity policy enforcement in the kernel (connect rate and
//!   `connect()` latency) vs no programs attached, and a new policy
//!   revision's install into the kernel maps.

#![forbid(unsafe_code)]

mod attribution;
mod capture;
mod cluster;
mod console_api;
mod containers;
mod cri_pods;
mod enforce_bench;
mod flow_graph;
mod flow_ingest;
mod ha;
mod issuance;
mod memory;
mod noop;
mod policy_bench;
mod policy_push;
mod procfs;
mod propagation;
mod report;
mod stats;
mod token_endpoint;
mod workload_api;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::report::Machine;

#[derive(Parser, Debug)]
#[command(
    name = "hallmark-bench",
    version,
    about = "Benchmarks of Hallmark's identity plane"
)]
struct Cli {
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Workload API latency and throughput vs a no-op service.
    WorkloadApi(workload_api::WorkloadApiArgs),
    /// X509-SVID signing rate vs raw ECDSA signing; end-to-end minting.
    Issuance(issuance::IssuanceArgs),
    /// Time from a registration change to the workload's stream.
    Propagation(propagation::PropagationArgs),
    /// Propagation with two servers on PostgreSQL vs one on SQLite.
    PropagationHa(ha::PropagationHaArgs),
    /// Server start to ready with N entries in the datastore.
    ServerStart(ha::ServerStartArgs),
    /// Agent resident memory with N SVIDs vs none (child processes).
    AgentMemory(memory::AgentMemoryArgs),
    /// Container start -> inventory at the server and -> SVID inside (Docker).
    ContainerStart(containers::ContainerStartArgs),
    /// Full runtime listing cost with N running containers (Docker, CRI).
    Resync(containers::ResyncArgs),
    /// Inventory memory with N synthetic workload records.
    InventoryMemory(containers::InventoryMemoryArgs),
    /// The agent's HTTP token endpoint vs FetchJWTSVID, warm, same run.
    TokenEndpoint(token_endpoint::TokenEndpointArgs),
    /// Flow attribution: engine throughput vs a HashMap lookup, ground-truth
    /// grades beside two baselines, index memory.
    Attribution(attribution::AttributionArgs),
    /// Flows into the store with attribution (IngestFlows, NetFlow v9 over
    /// UDP) vs raw batched inserts of the same rows, each on a fresh store.
    FlowIngest(flow_ingest::FlowIngestArgs),
    /// `flows graph --since 24h` over N stored flows (p50/p99) vs the plain
    /// SQL aggregate over the flows table.
    FlowGraph(flow_graph::FlowGraphArgs),
    /// The console's map query over HTTP (`GET /api/v1/graph`) on a stored
    /// flow history vs the admin call behind it.
    ConsoleApi(console_api::ConsoleApiArgs),
    /// eBPF flow capture attached vs not: connection rate, bulk throughput,
    /// agent CPU and memory, close -> `flows list` (needs root).
    Capture(capture::CaptureArgs),
    /// Policy decisions (1,000 rules, 200 groups, 10,000 workloads) and
    /// group membership vs cedar-policy on the same questions.
    Policy(policy_bench::PolicyArgs),
    /// Identity policy enforcement on vs no programs attached: connect rate
    /// and latency; policy revision install time (needs root).
    Enforce(enforce_bench::EnforceArgs),
    /// Holds loopback connections open for `capture` until stdin closes.
    #[command(hide = true)]
    CaptureHold(capture::HoldArgs),
    /// Policy apply -> the revision in force on every connected agent, vs
    /// the ApplyPolicy call alone.
    PolicyPush(policy_push::PolicyPushArgs),
    /// Runs inside a benchmark container: fetches its SVID, prints when.
    #[command(hide = true)]
    ProbeSvid(containers::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALLMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    raise_fd_limit()?;
    println!("machine: {}", Machine::detect());
    let json = cli.json.as_deref();
    match cli.bench {
        Bench::WorkloadApi(args) => {
            let r = workload_api::run(&args).await?;
            workload_api::print(&r);
            if let Some(p) = json {
                report::write_json(p, "workload-api", &r)?;
            }
        }
        Bench::Issuance(args) => {
            let r = issuance::run(&args).await?;
            issuance::print(&r);
            if let Some(p) = json {
                report::write_json(p, "issuance", &r)?;
            }
        }
        Bench::Propagation(args) => {
            let r = propagation::run(&args).await?;
            propagation::print(&r);
            if let Some(p) = json {
                report::write_json(p, "propagation", &r)?;
            }
        }
        Bench::PolicyPush(args) => {
            let r = policy_push::run(&args).await?;
            policy_push::print(&r);
            if let Some(p) = json {
                report::write_json(p, "policy-push", &r)?;
            }
        }
        Bench::PropagationHa(args) => {
            let r = ha::propagation_ha(&args).await?;
            ha::print_propagation_ha(&r);
            if let Some(p) = json {
                report::write_json(p, "propagation-ha", &r)?;
            }
        }
        Bench::ServerStart(args) => {
            let r = ha::server_start(&args).await?;
            ha::print_server_start(&r);
            if let Some(p) = json {
                report::write_json(p, "server-start", &r)?;
            }
        }
        Bench::AgentMemory(args) => {
            let r = memory::run(&args).await?;
            memory::print(&r);
            if let Some(p) = json {
                report::write_json(p, "agent-memory", &r)?;
            }
        }
        Bench::ContainerStart(args) => {
            let r = containers::container_start(&args).await?;
            containers::print_container_start(&r);
            if let Some(p) = json {
                report::write_json(p, "container-start", &r)?;
            }
        }
        Bench::Resync(args) => {
            let r = containers::resync(&args).await?;
            containers::print_resync(&r);
            if let Some(p) = json {
                report::write_json(p, "resync", &r)?;
            }
        }
        Bench::InventoryMemory(args) => {
            let r = containers::inventory_memory(&args).await?;
            containers::print_inventory_memory(&r);
            if let Some(p) = json {
                report::write_json(p, "inventory-memory", &r)?;
            }
        }
        Bench::TokenEndpoint(args) => {
            let r = token_endpoint::run(&args).await?;
            token_endpoint::print(&r);
            if let Some(p) = json {
                report::write_json(p, "token-endpoint", &r)?;
            }
        }
        Bench::Attribution(args) => {
            let r = attribution::run(&args)?;
            attribution::print(&r);
            if let Some(p) = json {
                report::write_json(p, "attribution", &r)?;
            }
        }
        Bench::FlowIngest(args) => {
            let r = flow_ingest::run(&args).await?;
            flow_ingest::print(&r);
            if let Some(p) = json {
                report::write_json(p, "flow-ingest", &r)?;
            }
        }
        Bench::ConsoleApi(args) => {
            let r = console_api::run(&args).await?;
            console_api::print(&r);
            if let Some(p) = json {
                report::write_json(p, "console-api", &r)?;
            }
        }
        Bench::FlowGraph(args) => {
            let r = flow_graph::run(&args).await?;
            flow_graph::print(&r);
            if let Some(p) = json {
                report::write_json(p, "flow-graph", &r)?;
            }
        }
        Bench::Capture(args) => {
            let r = capture::run(&args).await?;
            capture::print(&r);
            if let Some(p) = json {
                report::write_json(p, "capture", &r)?;
            }
        }
        Bench::Policy(args) => {
            let r = policy_bench::run(&args)?;
            policy_bench::print(&r);
            if let Some(p) = json {
                report::write_json(p, "policy", &r)?;
            }
        }
        Bench::Enforce(args) => {
            let r = enforce_bench::run(&args)?;
            enforce_bench::print(&r);
            if let Some(p) = json {
                report::write_json(p, "enforce", &r)?;
            }
        }
        Bench::CaptureHold(args) => capture::hold(&args)?,
        Bench::ProbeSvid(args) => containers::probe_svid(&args).await?,
    }
    Ok(())
}

/// A thousand clients in this process hold a thousand connections on each
/// side, plus the agent's pidfds: lift the soft open-file limit to the hard one.
fn raise_fd_limit() -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_levels_are_comma_separated() {
        let cli = Cli::parse_from([
            "hallmark-bench",
            "workload-api",
            "--clients",
            "1,100,1000",
            "--requests",
            "50",
            "--json",
            "/tmp/x.json",
        ]);
        match cli.bench {
            Bench::WorkloadApi(a) => {
                assert_eq!(a.clients, [1, 100, 1000]);
                assert_eq!(a.requests, 50);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert_eq!(cli.json, Some(PathBuf::from("/tmp/x.json")));
    }

    #[test]
    fn policy_sizes_default_to_the_issue_and_can_be_set() {
        let cli = Cli::parse_from(["hallmark-bench", "policy"]);
        match cli.bench {
            Bench::Policy(a) => {
                assert_eq!((a.workloads, a.groups, a.rules), (10_000, 200, 1_000));
                assert_eq!(a.questions, 100_000);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::parse_from([
            "hallmark-bench",
            "policy",
            "--workloads",
            "500",
            "--groups",
            "30",
            "--rules",
            "100",
            "--questions",
            "2000",
        ]);
        match cli.bench {
            Bench::Policy(a) => {
                assert_eq!((a.workloads, a.groups, a.rules), (500, 30, 100));
                assert_eq!(a.questions, 2_000);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{getrlimit, Resource};
        raise_fd_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
    }
}
