//! What the `enforce` benchmark puts into the kernel: the `policy`
//! benchmark's generated world (1,000 rules, 200 groups, 10,000 workloads)
//! compiled for one node the way the agent compiles it (each local
//! workload's groups, each peer's groups by name plus what its address
//! alone matches, then `compile_kernel` with the kernel maps' limits and
//! the agent's conversion to `hallmark_bpf` records).
//!
//! The benchmark process plays one workload of that world, at 127.0.0.1:
//! it is a local workload (its own cgroup) and 127.0.0.1 is one of the
//! peers, and it listens on ports where a rule of the policy allows that
//! workload to reach itself over TCP. Every measured connect is therefore
//! an allowed decision of a real rule, on egress (`connect4`) and on
//! ingress (the listener's SYN).
//!
//! The pair map does not hold what this world needs: the generated
//! workloads fall into thousands of distinct combinations of groups, and
//! `compile_kernel` needs a pair per (local identity, remote identity,
//! protocol, direction) that does not take the default, so with 10,000
//! peers even one local workload needs more pairs than
//! [`hallmark_bpf::PAIR_CAPACITY`]. [`build`] therefore compiles without
//! the pair bound, records how many pairs the image needs, and when they do
//! not fit keeps [`hallmark_bpf::PAIR_CAPACITY`] of them, those of the
//! benchmark's own peer identity first: the lookups a connect makes are the
//! same (the maps are as full as they can be), but flows to the peers whose
//! pairs were dropped would take the default. The report says so.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use hallmark_agent::enforce::image::{convert, limits};
use hallmark_agent::enforce::inputs::peer_set;
use hallmark_bpf::{Mode, PolicyImage, PAIR_CAPACITY};
use hallmark_policy::{compile_kernel, Attributes, GroupSet, Outcome, Policy, Protocol};

use crate::policy_bench::world::World;

/// The address the benchmark's workload has.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Cgroup ids of the made-up local workloads: far above any inode a
/// cgroup2 directory of this machine has, so none is a real cgroup.
pub const FAKE_CGROUP_BASE: u64 = 1 << 48;
/// Ports of one rule range tried when looking for listener ports.
const PORTS_PER_RANGE: u16 = 16;
/// Workloads tried when looking for the benchmark's role.
const ROLE_CANDIDATES: usize = 2_000;

/// The world's Hallmark document through the real parser, compiled.
pub fn policy_of(world: &World) -> Result<Policy> {
    let yaml = world.hallmark_yaml();
    let parsed = hallmark_policy::parse("bench-policy.yaml", &yaml)
        .map_err(|e| anyhow!("the generated policy document was refused:\n{e}"))?;
    Ok(Policy::compile(&parsed.document))
}

/// The workload the benchmark process plays.
#[derive(Debug, Clone)]
pub struct Role {
    /// Index into the world's workloads.
    pub workload: usize,
    /// Its attributes, with 127.0.0.1 as its address.
    pub attrs: Attributes,
    /// Ports where the policy allows it to reach itself over TCP, each
    /// with the deciding rule, ports of 1024 and above first.
    pub ports: Vec<(u16, String)>,
}

/// A peer's group names, as the server sends them with the ownership
/// index: the groups its owner is in.
pub fn peer_names(policy: &Policy, attrs: &Attributes) -> Vec<String> {
    let set = policy.groups_of(attrs);
    policy.names_in(&set).map(str::to_string).collect()
}

/// The first workload (of the first [`ROLE_CANDIDATES`]) that the policy
/// lets connect to itself at 127.0.0.1 by a rule on the most ports, up
/// to `want` ports; `None` when no workload is allowed on any port.
pub fn pick_role(policy: &Policy, world: &World, want: usize) -> Option<Role> {
    let mut best: Option<Role> = None;
    for (i, w) in world.workloads.iter().enumerate().take(ROLE_CANDIDATES) {
        let mut attrs = w.attrs.clone();
        attrs.addr = Some(LOOPBACK);
        let local = policy.groups_of(&attrs);
        let peer = peer_set(policy, LOOPBACK, &peer_names(policy, &attrs));
        let ports = allowed_ports(policy, world, &local, &peer, want);
        if ports.len() > best.as_ref().map_or(0, |b| b.ports.len()) {
            let done = ports.len() >= want;
            best = Some(Role {
                workload: i,
                attrs,
                ports,
            });
            if done {
                break;
            }
        }
    }
    best
}

/// Ports the rules name where `local` → `peer` (egress) and `peer` →
/// `local` (ingress) are both allowed by a rule over TCP.
fn allowed_ports(
    policy: &Policy,
    world: &World,
    local: &GroupSet,
    peer: &GroupSet,
    want: usize,
) -> Vec<(u16, String)> {
    let mut candidates: Vec<u16> = world
        .rules
        .iter()
        .filter(|r| !r.deny && r.protocol != Some(Protocol::Udp))
        .flat_map(|r| r.ports.iter())
        .flat_map(|&(lo, hi)| (lo..=hi).take(usize::from(PORTS_PER_RANGE)))
        .filter(|&p| p > 0)
        .collect();
    candidates.sort_by_key(|&p| (p < 1024, p));
    candidates.dedup();
    let mut out = Vec::new();
    for p in candidates {
        let egress = policy.decide(local, peer, Protocol::Tcp, p);
        let ingress = policy.decide(peer, local, Protocol::Tcp, p);
        let (Outcome::Allowed, Outcome::Allowed) = (egress.outcome, ingress.outcome) else {
            continue;
        };
        if let (Some(rule), Some(_)) = (egress.rule(), ingress.rule()) {
            out.push((p, rule.to_string()));
            if out.len() >= want {
                break;
            }
        }
    }
    out
}

/// What one node's image is compiled from: local workloads (cgroup id,
/// attributes) and peers (address, group names).
#[derive(Debug, Clone, Default)]
pub struct NodeInputs {
    pub locals: Vec<(u64, Attributes)>,
    pub peers: Vec<(IpAddr, Vec<String>)>,
}

/// The node of the connection rounds: the benchmark's cgroup playing
/// `role`, `locals - 1` other workloads of the world under made-up cgroup
/// ids, and `peers` peers: 127.0.0.1 (the role) and the addresses of the
/// other workloads, each with its groups.
pub fn rate_inputs(
    policy: &Policy,
    world: &World,
    role: &Role,
    bench_cgroup: u64,
    locals: usize,
    peers: usize,
) -> NodeInputs {
    let others = || {
        world
            .workloads
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != role.workload)
            .map(|(_, w)| w)
    };
    let mut inputs = NodeInputs::default();
    inputs.locals.push((bench_cgroup, role.attrs.clone()));
    inputs.locals.extend(
        others()
            .take(locals.saturating_sub(1))
            .enumerate()
            .map(|(j, w)| (FAKE_CGROUP_BASE + j as u64, w.attrs.clone())),
    );
    if peers > 0 {
        inputs
            .peers
            .push((LOOPBACK, peer_names(policy, &role.attrs)));
    }
    inputs
        .peers
        .extend(others().take(peers.saturating_sub(1)).filter_map(|w| {
            let addr = w.attrs.addr?;
            Some((addr, peer_names(policy, &w.attrs)))
        }));
    inputs
}

/// The node of the install measurement: the first `locals` workloads of
/// the world under made-up cgroup ids, and the first `peers` workloads'
/// addresses as peers.
pub fn install_inputs(policy: &Policy, world: &World, locals: usize, peers: usize) -> NodeInputs {
    NodeInputs {
        locals: world
            .workloads
            .iter()
            .take(locals)
            .enumerate()
            .map(|(j, w)| (FAKE_CGROUP_BASE + j as u64, w.attrs.clone()))
            .collect(),
        peers: world
            .workloads
            .iter()
            .take(peers)
            .filter_map(|w| Some((w.attrs.addr?, peer_names(policy, &w.attrs))))
            .collect(),
    }
}

/// An image and what building it took.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: PolicyImage,
    /// Distinct combinations of groups (numeric identities).
    pub identities: usize,
    /// Pairs `compile_kernel` produced; more than the image holds when
    /// they did not fit the pair map.
    pub pairs_needed: usize,
    /// The groups of every local and peer (`groups_of`, `peer_set`).
    pub membership: Duration,
    /// `compile_kernel`.
    pub compile: Duration,
    /// The agent's conversion to `hallmark_bpf` records.
    pub convert: Duration,
}

impl Built {
    /// Everything from inputs to the image.
    pub fn total(&self) -> Duration {
        self.membership + self.compile + self.convert
    }
}

/// Compiles `inputs` under `policy` as the agent does, timing each step,
/// but without the pair bound: pairs over [`PAIR_CAPACITY`] are dropped,
/// keeping those whose remote is the identity of peer `keep` (see the
/// module docs). A refusal over another bound names the bound.
pub fn build(
    policy: &Policy,
    inputs: &NodeInputs,
    mode: Mode,
    keep: Option<IpAddr>,
) -> Result<Built> {
    let t = Instant::now();
    let locals: Vec<(u64, GroupSet)> = inputs
        .locals
        .iter()
        .map(|(cg, attrs)| (*cg, policy.groups_of(attrs)))
        .collect();
    let peers: Vec<(IpAddr, GroupSet)> = inputs
        .peers
        .iter()
        .map(|(ip, names)| (*ip, peer_set(policy, *ip, names)))
        .collect();
    let membership = t.elapsed();
    let t = Instant::now();
    let unbounded = hallmark_policy::KernelLimits {
        max_pairs: usize::MAX,
        ..limits()
    };
    let kernel = compile_kernel(policy, &locals, &peers, &unbounded);
    let compile = t.elapsed();
    let kernel = match kernel {
        Ok(k) => k,
        Err(e) => bail!(
            "compile_kernel refused the image for {} local workloads and {} peers: {e}",
            inputs.locals.len(),
            inputs.peers.len()
        ),
    };
    let identities = kernel.identities.len();
    let pairs_needed = kernel.pairs.len();
    let t = Instant::now();
    let (mut image, _rules) = convert(kernel);
    image.mode = mode;
    let convert = t.elapsed();
    fit_pairs(&mut image, keep, PAIR_CAPACITY);
    Ok(Built {
        image,
        identities,
        pairs_needed,
        membership,
        compile,
        convert,
    })
}

/// Cuts `image`'s pairs to `capacity`, keeping those whose remote is the
/// identity of the host entry for `keep` first, the rest in order.
pub fn fit_pairs(image: &mut PolicyImage, keep: Option<IpAddr>, capacity: usize) {
    if image.pairs.len() <= capacity {
        return;
    }
    let kept = keep.and_then(|ip| {
        let host = if ip.is_ipv4() { 32 } else { 128 };
        image
            .peers
            .iter()
            .find(|p| p.addr == ip && p.prefix_len == host)
            .map(|p| p.ident)
    });
    // A stable sort: otherwise in compile order.
    image.pairs.sort_by_key(|(k, _)| Some(k.remote) != kept);
    image.pairs.truncate(capacity);
}

/// Entries of an image, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ImageSize {
    pub locals: usize,
    pub peers: usize,
    pub pairs: usize,
    pub segments: usize,
    pub identities: usize,
    /// Pairs `compile_kernel` produced (over `pairs`: the image was cut
    /// to the pair map's capacity).
    pub pairs_needed: usize,
}

impl ImageSize {
    pub fn of(b: &Built) -> ImageSize {
        ImageSize {
            locals: b.image.locals.len(),
            peers: b.image.peers.len(),
            pairs: b.image.pairs.len(),
            segments: b.image.pairs.iter().map(|(_, s)| s.len()).sum(),
            identities: b.identities,
            pairs_needed: b.pairs_needed,
        }
    }
}
