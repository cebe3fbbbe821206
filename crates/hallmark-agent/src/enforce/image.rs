//! Inputs → the kernel's [`PolicyImage`]: each local workload's and each
//! peer's groups, compiled by `hallmark_policy::compile_kernel` into
//! identities, peer prefixes and per-pair port segments, then converted to
//! the `hallmark_bpf` records.

use std::net::IpAddr;

use hallmark_bpf::{Mode, PolicyImage};
use hallmark_policy::{GroupSet, Policy};

use super::inputs::{peer_set, Inputs};

/// A compiled image and the names of its rules (index = rule id; 0 is the
/// default).
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

/// The policy compiled for these locals and peers.
fn kernel(
    _policy: &Policy,
    _locals: &[(u64, GroupSet)],
    _peers: &[(IpAddr, GroupSet)],
) -> Result<(PolicyImage, Vec<String>), String> {
    Err("this agent build has no kernel policy compiler (hallmark_policy::compile_kernel)".into())
}
