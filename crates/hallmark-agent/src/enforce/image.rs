//! Inputs → the kernel's [`PolicyImage`]: each local workload's and each
//! peer's groups, compiled by [`compile_kernel`] into identities, peer
//! prefixes and per-pair port segments, then converted to the
//! `hallmark_bpf` records.

use std::net::IpAddr;

use hallmark_bpf::{self as bpf, Mode, Peer, PolicyImage, Verdict};
use hallmark_policy::{
    compile_kernel, Direction, GroupSet, KernelImage, KernelLimits, KernelVerdict, Policy,
};

use super::inputs::{peer_set, Inputs};

/// A compiled image and the names of its rules (index = rule id; 0 is
/// `default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub image: PolicyImage,
    pub rules: Vec<String>,
}

impl Compiled {
    /// The name of rule `id` (`default` for 0 or an unknown id).
    pub fn rule_name(&self, id: u32) -> &str {
        match self.rules.get(id as usize) {
            Some(n) if id != 0 => n,
            _ => "default",
        }
    }
}

/// Compiles `inputs` under `policy` into an image of kernel mode `mode`.
/// The error says what did not fit.
pub fn compile(policy: &Policy, inputs: &Inputs, mode: Mode) -> Result<Compiled, String> {
    let locals: Vec<(u64, GroupSet)> = inputs
        .locals
        .iter()
        .map(|l| (l.cgroup_id, policy.groups_of(&l.attributes)))
        .collect();
    let peers: Vec<(IpAddr, GroupSet)> = inputs
        .peers
        .iter()
        .map(|(ip, groups)| (*ip, peer_set(policy, *ip, groups)))
        .collect();
    let (mut image, rules) = kernel(policy, &locals, &peers)?;
    image.mode = mode;
    image.exempt = inputs.exempt.clone();
    Ok(Compiled { image, rules })
}

/// What the kernel maps hold, for the compiler.
pub fn limits() -> KernelLimits {
    KernelLimits {
        max_segs: hallmark_bpf::MAX_SEGS,
        max_locals: hallmark_bpf::LOCAL_CAPACITY,
        // Both families together; the kernel refuses an image with more
        // of one family than its map holds.
        max_peers: hallmark_bpf::PEER4_CAPACITY.min(hallmark_bpf::PEER6_CAPACITY),
        max_pairs: hallmark_bpf::PAIR_CAPACITY,
    }
}

/// The policy compiled for these locals and peers, as `hallmark_bpf`
/// records, and the rule names (index = rule id).
fn kernel(
    policy: &Policy,
    locals: &[(u64, GroupSet)],
    peers: &[(IpAddr, GroupSet)],
) -> Result<(PolicyImage, Vec<String>), String> {
    let k = compile_kernel(policy, locals, peers, &limits()).map_err(|e| e.to_string())?;
    Ok(convert(k))
}

/// A [`KernelImage`] as `hallmark_bpf` writes it (mode and exemptions left
/// at their defaults), and its rule names with `default` at id 0.
pub fn convert(k: KernelImage<u64>) -> (PolicyImage, Vec<String>) {
    let verdict = |v: KernelVerdict| match v {
        KernelVerdict::Allow => Verdict::Allow,
        KernelVerdict::Deny => Verdict::Deny,
        KernelVerdict::WouldDeny => Verdict::WouldDeny,
    };
    let image = PolicyImage {
        mode: Mode::Off,
        default_verdict: verdict(KernelVerdict::of_action(k.default)),
        locals: k.locals,
        peers: k
            .peers
            .into_iter()
            .map(|(addr, prefix_len, ident)| Peer {
                addr,
                prefix_len,
                ident,
            })
            .collect(),
        pairs: k
            .pairs
            .into_iter()
            .map(|(key, segs)| {
                (
                    bpf::PairKey {
                        local: key.local,
                        remote: key.remote,
                        protocol: match key.protocol {
                            hallmark_policy::Protocol::Tcp => bpf::Protocol::Tcp,
                            hallmark_policy::Protocol::Udp => bpf::Protocol::Udp,
                        },
                        direction: match key.direction {
                            Direction::Egress => bpf::Direction::Egress,
                            Direction::Ingress => bpf::Direction::Ingress,
                        },
                    },
                    segs.into_iter()
                        .map(|s| bpf::Segment {
                            start: s.start,
                            verdict: verdict(s.verdict),
                            rule: s.rule,
                        })
                        .collect(),
                )
            })
            .collect(),
        exempt: Vec::new(),
    };
    let mut rules = vec!["default".to_string()];
    rules.extend(k.rules);
    (image, rules)
}
