//! `policy`: identity policy decisions beside the `cedar-policy` crate.
//!
//! One generated world (workloads with realistic attributes, groups over
//! every kind of condition, rules between groups with port ranges and both
//! actions, all at one priority) is written as a Hallmark YAML document,
//! which goes through the real parser, and as a Cedar policy set. At one
//! priority the two semantics coincide: Hallmark's deny wins ties and its
//! `default: deny`; Cedar's forbid overrides permit and it denies by
//! default. So both engines must give the same answer to every question,
//! and the benchmark fails if they do not.
//!
//! - Decisions: Hallmark's `Policy::decide` on the endpoints' precomputed
//!   `GroupSet`s vs Cedar's `Authorizer::is_authorized` on prebuilt
//!   requests whose entities carry their groups as parents (the same
//!   precomputation). Throughput is decisions over the thread's CPU time on
//!   one core: Hallmark's best of several rounds, Cedar's one pass over the
//!   questions (at about a millisecond a decision, a pass is minutes).
//!   p50/p99 time each decision alone: Hallmark's by the monotonic clock,
//!   the clock reads included; Cedar's by thread CPU time, so that being
//!   preempted on a shared machine does not count against it.
//! - Membership: the groups of one workload by `Policy::groups_of` vs Cedar
//!   evaluating one policy per group for that workload, and all workloads'
//!   groups. Cedar's membership is computed from the attributes alone and
//!   must equal Hallmark's for every workload. Then the membership index
//!   (`Membership`) holding every workload: one workload starting
//!   (`upsert`), stopping (`remove`), and a new policy (`set_policy`).

#[path = "policy_bench_world.rs"]
pub(crate) mod world;

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use cedar_policy::{Authorizer, Context, Decision, PolicySet, Request, Response};
use clap::Args;
use hallmark_policy::{GroupSet, Membership, Outcome, Policy};
use serde::Serialize;

use crate::report::{num, ratio_cell, verdict, Table};
use crate::stats::{median, ratio, thread_cpu, Clock, Samples, Summary};
use world::{Question, Rng, World};

/// The version the Cargo manifest asks for, named in the output.
const CEDAR: &str = "cedar-policy 4.14";
/// The targets.
const TARGET_RATIO: f64 = 10.0;
const TARGET_P99_US: f64 = 5.0;
/// `set_policy` runs measured.
const RECOMPUTES: usize = 5;

#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// Workloads in the inventory.
    #[arg(long, default_value_t = 10_000)]
    pub workloads: usize,
    /// Groups in the policy.
    #[arg(long, default_value_t = 200)]
    pub groups: usize,
    /// Rules in the policy.
    #[arg(long, default_value_t = 1_000)]
    pub rules: usize,
    /// Questions (initiator, acceptor, protocol, port) asked of both engines.
    #[arg(long, default_value_t = 100_000)]
    pub questions: usize,
    /// Hallmark throughput rounds (Cedar answers each question once); the
    /// best counts.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Workloads started (and stopped) in the membership index.
    #[arg(long, default_value_t = 10_000)]
    pub starts: usize,
    /// Seed of the generated world and questions.
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
}

#[derive(Debug, Serialize)]
pub struct PolicyReport {
    pub workloads: usize,
    pub groups: usize,
    pub rules: usize,
    pub questions: usize,
    pub rounds: usize,
    pub cedar: &'static str,
    /// How Cedar sees groups in the decision run.
    pub cedar_groups: &'static str,
    /// How the throughput's seconds were measured: `thread-cpu` or `wall`.
    pub clock: &'static str,
    pub setup: Setup,
    pub mix: Mix,
    pub hallmark_decide: EngineRow,
    pub cedar_is_authorized: EngineRow,
    /// Median cost of the clock reads around each timed decision.
    pub clock_read_ns: f64,
    pub throughput_ratio: Option<f64>,
    pub throughput_target_met: bool,
    pub p99_target_met: bool,
    pub membership: MembershipRow,
}

/// One-time costs.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub document_bytes: usize,
    pub parse_warnings: usize,
    pub hallmark_parse_ms: f64,
    pub hallmark_compile_ms: f64,
    pub cedar_policy_bytes: usize,
    pub cedar_parse_ms: f64,
    pub cedar_entities_ms: f64,
}

/// What the questions' answers were (both engines agreed on each).
#[derive(Debug, Default, Serialize)]
pub struct Mix {
    pub allowed: usize,
    pub denied: usize,
    pub decided_by_rule: usize,
    pub decided_by_default: usize,
}

#[derive(Debug, Serialize)]
pub struct EngineRow {
    pub decisions_per_sec: f64,
    pub latency: Option<Summary>,
}

#[derive(Debug, Serialize)]
pub struct MembershipRow {
    pub groups_per_workload: f64,
    /// One workload's groups (a workload starting).
    pub hallmark_groups_of: Option<Summary>,
    pub cedar_membership: Option<Summary>,
    /// Every workload's groups (a policy change), in thread CPU time.
    pub hallmark_all_ms: f64,
    pub cedar_all_ms: f64,
    /// `Membership` holding every workload.
    pub index: IndexRow,
}

/// The membership index (`hallmark_policy::Membership`) with the whole
/// inventory in it.
#[derive(Debug, Serialize)]
pub struct IndexRow {
    /// One workload starting: `upsert` of a new key.
    pub upsert: Option<Summary>,
    /// One workload stopping: `remove`.
    pub remove: Option<Summary>,
    /// A new policy: `set_policy`, median of a few, in thread CPU time.
    pub set_policy_ms: f64,
}

pub fn run(args: &PolicyArgs) -> Result<PolicyReport> {
    if args.workloads == 0 || args.groups == 0 || args.rules == 0 || args.questions == 0 {
        bail!("--workloads, --groups, --rules and --questions must be at least 1");
    }
    let world = World::generate(args.workloads, args.groups, args.rules, args.seed);

    // The Hallmark document through the real parser.
    let yaml = world.hallmark_yaml();
    // One-time costs are in thread CPU time, like the throughputs.
    let (parsed, hallmark_parse) = on_cpu(|| hallmark_policy::parse("bench-policy.yaml", &yaml));
    let parsed = parsed.map_err(|e| anyhow::anyhow!("the generated document was refused:\n{e}"))?;
    let (policy, hallmark_compile) = on_cpu(|| Policy::compile(&parsed.document));

    // Membership: Hallmark, each workload timed alone, then all at once.
    let mut hallmark_member = Samples::with_capacity(world.workloads.len());
    let mut sets: Vec<GroupSet> = Vec::with_capacity(world.workloads.len());
    for w in &world.workloads {
        let t = Instant::now();
        let set = policy.groups_of(&w.attrs);
        hallmark_member.push(t.elapsed());
        sets.push(set);
    }
    let ((), hallmark_all) = on_cpu(|| {
        for w in &world.workloads {
            black_box(policy.groups_of(black_box(&w.attrs)));
        }
    });

    // Membership: Cedar, from the workloads' attributes alone.
    let (cedar_member, cedar_all, cedar_groups) = cedar_membership(&world)?;
    check_membership(&world, &policy, &sets, &cedar_groups)?;

    // Decisions: Cedar's store carries each workload's groups as parents.
    let group_refs: Vec<Vec<&str>> = cedar_groups
        .iter()
        .map(|g| g.iter().map(String::as_str).collect())
        .collect();
    let (entities, cedar_entities) = on_cpu(|| world::cedar_entities(&world, &group_refs));
    let entities = entities?;
    let cedar_text = world.cedar_rules();
    let (cedar_policies, cedar_parse) =
        on_cpu(|| PolicySet::from_str(&cedar_text).map_err(|e| e.to_string()));
    let cedar_policies = cedar_policies
        .map_err(|e| anyhow::anyhow!("the generated Cedar policies do not parse: {e}"))?;

    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, set) in sets.iter().enumerate() {
        for name in policy.names_in(set) {
            members.entry(name).or_default().push(i);
        }
    }
    let mut rng = Rng::new(args.seed ^ 0x5157_4e5f_0000_0013);
    let questions = world::questions(&world, &members, args.questions, &mut rng);
    let connect = world::action_uid("connect")?;
    let requests: Vec<Request> = questions
        .iter()
        .map(|q| world::cedar_request(&world, q, &connect))
        .collect::<Result<_>>()?;
    let clock = Clock::detect();

    // Cedar answers every question once, each timed alone; the pass's CPU
    // time gives its throughput (the clock reads are noise beside a
    // millisecond decision). Then the answers are compared.
    let authorizer = Authorizer::new();
    let mut cedar_latency = Samples::with_capacity(requests.len());
    let mut cedar_answers = Vec::with_capacity(requests.len());
    let mark = clock.now();
    for r in &requests {
        let (response, took) = on_cpu(|| authorizer.is_authorized(r, &cedar_policies, &entities));
        cedar_latency.push(took);
        cedar_answers.push(response);
    }
    let cedar_rate = requests.len() as f64 / clock.since(mark);
    let mix = agree(
        &policy,
        &sets,
        &questions,
        &requests,
        &cedar_answers,
        &cedar_policies,
    )?;
    drop(cedar_answers);

    // Hallmark's throughput: alternating rounds of at least a quarter of a
    // second each (the questions repeated), the best counts.
    let mut hallmark_rate = 0.0f64;
    let mut repeat = 1usize;
    for _ in 0..args.rounds.max(1) {
        let mark = clock.now();
        for _ in 0..repeat {
            for q in &questions {
                black_box(policy.decide(&sets[q.from], &sets[q.to], q.protocol, q.port));
            }
        }
        let secs = clock.since(mark);
        hallmark_rate = hallmark_rate.max((questions.len() * repeat) as f64 / secs);
        if secs < 0.25 {
            repeat = (repeat as f64 * 0.25 / secs).ceil().min(1e6) as usize;
        }
    }

    // Hallmark's latency: each decision timed alone.
    let mut hallmark_latency = Samples::with_capacity(questions.len());
    for q in &questions {
        let t = Instant::now();
        black_box(policy.decide(&sets[q.from], &sets[q.to], q.protocol, q.port));
        hallmark_latency.push(t.elapsed());
    }
    let clock_read_ns = clock_read_ns(questions.len());
    let index = membership_index(&world, &policy, args.starts)?;

    let hallmark_latency = hallmark_latency.summary();
    let throughput_ratio = ratio(hallmark_rate, cedar_rate);
    let groups_total: usize = cedar_groups.iter().map(BTreeSet::len).sum();
    Ok(PolicyReport {
        workloads: args.workloads,
        groups: args.groups,
        rules: args.rules,
        questions: questions.len(),
        rounds: args.rounds.max(1),
        cedar: CEDAR,
        cedar_groups:
            "entity parents = each workload's groups, precomputed as Hallmark's GroupSet is",
        clock: clock.name(),
        setup: Setup {
            document_bytes: yaml.len(),
            parse_warnings: parsed.warnings.len(),
            hallmark_parse_ms: ms(hallmark_parse),
            hallmark_compile_ms: ms(hallmark_compile),
            cedar_policy_bytes: cedar_text.len(),
            cedar_parse_ms: ms(cedar_parse),
            cedar_entities_ms: ms(cedar_entities),
        },
        mix,
        hallmark_decide: EngineRow {
            decisions_per_sec: hallmark_rate,
            latency: hallmark_latency,
        },
        cedar_is_authorized: EngineRow {
            decisions_per_sec: cedar_rate,
            latency: cedar_latency.summary(),
        },
        clock_read_ns,
        throughput_ratio,
        throughput_target_met: throughput_ratio.is_some_and(|r| r >= TARGET_RATIO),
        p99_target_met: hallmark_latency.is_some_and(|s| s.p99_us < TARGET_P99_US),
        membership: MembershipRow {
            groups_per_workload: groups_total as f64 / world.workloads.len() as f64,
            hallmark_groups_of: hallmark_member.summary(),
            cedar_membership: cedar_member.summary(),
            hallmark_all_ms: ms(hallmark_all),
            cedar_all_ms: ms(cedar_all),
            index,
        },
    })
}

/// Cedar's membership of every workload: one policy per group, one request
/// per workload, the satisfied policies are its groups. Returns the
/// per-workload times, the time for all, and the groups.
fn cedar_membership(world: &World) -> Result<(Samples, Duration, Vec<BTreeSet<String>>)> {
    let set = world.cedar_membership()?;
    let no_groups = vec![Vec::new(); world.workloads.len()];
    let entities = world::cedar_entities(world, &no_groups)?;
    let member = world::action_uid("member")?;
    let requests: Vec<Request> = world
        .workloads
        .iter()
        .map(|w| {
            Request::new(
                world::workload_uid(&w.uid)?,
                member.clone(),
                world::group_uid("membership")?,
                Context::empty(),
                None,
            )
            .context("Cedar membership request")
        })
        .collect::<Result<_>>()?;
    let authorizer = Authorizer::new();
    let mut samples = Samples::with_capacity(requests.len());
    let mut groups = Vec::with_capacity(requests.len());
    for (w, r) in world.workloads.iter().zip(&requests) {
        let (response, took) = on_cpu(|| authorizer.is_authorized(r, &set, &entities));
        samples.push(took);
        if let Some(e) = response.diagnostics().errors().next() {
            bail!("Cedar failed evaluating the groups of {}: {e}", w.uid);
        }
        groups.push(
            response
                .diagnostics()
                .reason()
                .map(|id| id.to_string())
                .collect(),
        );
    }
    let ((), all) = on_cpu(|| {
        for r in &requests {
            black_box(authorizer.is_authorized(r, &set, &entities));
        }
    });
    Ok((samples, all, groups))
}

/// Fails unless Cedar and Hallmark put every workload in the same groups.
fn check_membership(
    world: &World,
    policy: &Policy,
    sets: &[GroupSet],
    cedar: &[BTreeSet<String>],
) -> Result<()> {
    let mut wrong = Vec::new();
    for ((w, set), cedar) in world.workloads.iter().zip(sets).zip(cedar) {
        let ours: BTreeSet<String> = policy
            .names_in(set)
            .filter(|n| *n != hallmark_policy::ANY_GROUP)
            .map(str::to_string)
            .collect();
        if &ours != cedar {
            wrong.push(format!(
                "{} ({:?}): hallmark {ours:?}, cedar {cedar:?}",
                w.uid, w.attrs.spiffe_ids
            ));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "the engines disagree on the groups of {} of {} workloads (a translation or engine bug), first: {}",
            wrong.len(),
            world.workloads.len(),
            wrong[..wrong.len().min(5)].join("; ")
        );
    }
    Ok(())
}

/// Compares Cedar's answers with Hallmark's for every question; fails
/// unless they agree on each.
fn agree(
    policy: &Policy,
    sets: &[GroupSet],
    questions: &[Question],
    requests: &[Request],
    answers: &[Response],
    cedar: &PolicySet,
) -> Result<Mix> {
    let mut mix = Mix::default();
    let mut wrong = Vec::new();
    for ((q, r), response) in questions.iter().zip(requests).zip(answers) {
        let v = policy.decide(&sets[q.from], &sets[q.to], q.protocol, q.port);
        if let Some(e) = response.diagnostics().errors().next() {
            bail!("Cedar failed deciding {r}: {e}");
        }
        // Every rule is in enforce mode, so would-deny cannot occur.
        let hallmark_allows = v.outcome == Outcome::Allowed;
        let cedar_allows = response.decision() == Decision::Allow;
        if hallmark_allows != cedar_allows {
            let reasons: Vec<String> = response
                .diagnostics()
                .reason()
                .map(|p| {
                    cedar
                        .policy(p)
                        .and_then(|p| p.annotation("id").map(str::to_string))
                        .unwrap_or_else(|| p.to_string())
                })
                .collect();
            wrong.push(format!(
                "{r}: hallmark {:?} by {:?}, cedar {:?} by {reasons:?}",
                v.outcome,
                v.rule(),
                response.decision()
            ));
        }
        if hallmark_allows {
            mix.allowed += 1;
        } else {
            mix.denied += 1;
        }
        if v.rule().is_some() {
            mix.decided_by_rule += 1;
        } else {
            mix.decided_by_default += 1;
        }
    }
    if !wrong.is_empty() {
        bail!(
            "the engines disagree on {} of {} questions (a translation or engine bug), first: {}",
            wrong.len(),
            questions.len(),
            wrong[..wrong.len().min(5)].join("; ")
        );
    }
    Ok(mix)
}

/// The membership index holding every workload: `starts` new replicas
/// each upserted (timed) and removed again (timed), so the index holds the
/// full inventory for each; then the whole index recomputed under a new
/// policy revision (the same groups, as `set_policy` cannot tell), a few
/// times.
fn membership_index(world: &World, policy: &Policy, starts: usize) -> Result<IndexRow> {
    let policy = Arc::new(policy.clone());
    let mut index: Membership<usize> = Membership::new(Arc::clone(&policy));
    let n = world.workloads.len();
    for (i, w) in world.workloads.iter().enumerate() {
        index.upsert(i, w.attrs.clone());
    }
    let mut upsert = Samples::with_capacity(starts);
    let mut remove = Samples::with_capacity(starts);
    for j in 0..starts {
        // A new replica of an existing service: same identity and labels,
        // its own address.
        let mut attrs = world.workloads[j % n].attrs.clone();
        attrs.addr = Some(world::workload_addr(n + j).into());
        let t = Instant::now();
        let changed = index.upsert(n + j, attrs);
        upsert.push(t.elapsed());
        let t = Instant::now();
        let removed = index.remove(&(n + j));
        remove.push(t.elapsed());
        if !changed || !removed || index.len() != n {
            bail!("the membership index lost track of workload {}", n + j);
        }
    }
    let mut recompute = Vec::new();
    for _ in 0..RECOMPUTES {
        let next = Arc::new(policy.as_ref().clone());
        let ((), took) = on_cpu(|| index.set_policy(next));
        recompute.push(ms(took));
    }
    Ok(IndexRow {
        upsert: upsert.summary(),
        remove: remove.summary(),
        set_policy_ms: median(&recompute).unwrap_or(0.0),
    })
}

/// The median cost of the two clock reads around a timed decision.
fn clock_read_ns(n: usize) -> f64 {
    let mut s = Samples::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.push(black_box(t).elapsed());
    }
    s.summary().map_or(0.0, |s| s.p50_us * 1_000.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Runs `f`, timed by this thread's CPU time where the kernel gives it,
/// else by wall time. For Cedar's calls, which last long enough that on a
/// shared machine preemption inside them would otherwise set the p99; the
/// read costs a system call, which is noise beside them.
fn on_cpu<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    match thread_cpu() {
        Some(then) => {
            let out = f();
            let took = thread_cpu().map_or(Duration::ZERO, |now| now.saturating_sub(then));
            (out, took)
        }
        None => {
            let t = Instant::now();
            let out = f();
            (out, t.elapsed())
        }
    }
}

pub fn print(r: &PolicyReport) {
    println!(
        "{} workloads, {} groups, {} rules (one priority, default deny); {} questions",
        r.workloads, r.groups, r.rules, r.questions
    );
    let mut t = Table::new(&[
        "decisions (1 core)",
        "decisions/s",
        "p50 us",
        "p99 us",
        "vs Cedar",
        "target",
    ]);
    let lat =
        |s: &Option<Summary>, f: fn(&Summary) -> f64| s.as_ref().map_or("-".into(), |s| num(f(s)));
    t.row(vec![
        format!("{} Authorizer::is_authorized", r.cedar),
        num(r.cedar_is_authorized.decisions_per_sec),
        lat(&r.cedar_is_authorized.latency, |s| s.p50_us),
        lat(&r.cedar_is_authorized.latency, |s| s.p99_us),
        "1.00x".into(),
        String::new(),
    ]);
    t.row(vec![
        "hallmark Policy::decide".into(),
        num(r.hallmark_decide.decisions_per_sec),
        lat(&r.hallmark_decide.latency, |s| s.p50_us),
        lat(&r.hallmark_decide.latency, |s| s.p99_us),
        ratio_cell(r.throughput_ratio),
        format!(
            ">= {TARGET_RATIO:.0}x {}, p99 < {TARGET_P99_US:.0} us {}",
            verdict(r.throughput_target_met),
            verdict(r.p99_target_met)
        ),
    ]);
    print!("{}", t.render());
    println!(
        "both engines agree on all {} questions: {} allowed, {} denied; {} decided by a rule, {} by the default",
        r.questions, r.mix.allowed, r.mix.denied, r.mix.decided_by_rule, r.mix.decided_by_default
    );
    println!(
        "throughput: decisions over {} time on one core (Hallmark: best of {} rounds; Cedar: its one pass over the questions)",
        r.clock, r.rounds
    );
    println!(
        "p50/p99: each decision timed alone; Hallmark's by the monotonic clock, a read pair ({:.0} ns) included; Cedar's by thread CPU time, so preemption on a shared machine does not count against it",
        r.clock_read_ns
    );
    println!(
        "Cedar groups: {}; Cedar requests built before timing",
        r.cedar_groups
    );
    println!();

    let m = &r.membership;
    let mut t = Table::new(&["membership", "p50 us", "p99 us", "all workloads ms"]);
    t.row(vec![
        format!("{} (one permit per group)", r.cedar),
        lat(&m.cedar_membership, |s| s.p50_us),
        lat(&m.cedar_membership, |s| s.p99_us),
        num(m.cedar_all_ms),
    ]);
    t.row(vec![
        "hallmark Policy::groups_of".into(),
        lat(&m.hallmark_groups_of, |s| s.p50_us),
        lat(&m.hallmark_groups_of, |s| s.p99_us),
        num(m.hallmark_all_ms),
    ]);
    t.row(vec![
        "hallmark Membership::upsert (a workload starts)".into(),
        lat(&m.index.upsert, |s| s.p50_us),
        lat(&m.index.upsert, |s| s.p99_us),
        String::new(),
    ]);
    t.row(vec![
        "hallmark Membership::remove (a workload stops)".into(),
        lat(&m.index.remove, |s| s.p50_us),
        lat(&m.index.remove, |s| s.p99_us),
        String::new(),
    ]);
    t.row(vec![
        "hallmark Membership::set_policy (a new revision)".into(),
        String::new(),
        String::new(),
        num(m.index.set_policy_ms),
    ]);
    print!("{}", t.render());
    println!(
        "{} workloads in the index; {:.1} groups per workload, the same in both engines; Cedar's from the workloads' attributes, evaluated on its own; all-workload times and set_policy in thread CPU time",
        r.workloads, m.groups_per_workload
    );
    println!();

    let s = &r.setup;
    let mut t = Table::new(&["one-time cost (CPU)", "ms", "input"]);
    t.row(vec![
        "hallmark parse (YAML, validated)".into(),
        num(s.hallmark_parse_ms),
        format!("{} bytes, {} warnings", s.document_bytes, s.parse_warnings),
    ]);
    t.row(vec![
        "hallmark compile".into(),
        num(s.hallmark_compile_ms),
        String::new(),
    ]);
    t.row(vec![
        "cedar PolicySet parse".into(),
        num(s.cedar_parse_ms),
        format!("{} bytes", s.cedar_policy_bytes),
    ]);
    t.row(vec![
        "cedar Entities (with parents)".into(),
        num(s.cedar_entities_ms),
        format!("{} workloads", r.workloads),
    ]);
    print!("{}", t.render());
}

#[cfg(test)]
#[path = "policy_bench_tests.rs"]
mod tests;
