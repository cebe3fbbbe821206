//! The world the `policy` benchmark decides in: workloads with the
//! attributes attribution knows, groups over every kind of condition, rules
//! between them, and the questions asked. One description is written twice,
//! as a Hallmark YAML document and as Cedar policies, so both engines answer
//! the same question from the same policy.
//!
//! Everything is drawn from a fixed-seed generator, so every run (and both
//! engines) sees the same world.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result};
use cedar_policy::{
    Context, Entities, Entity, EntityUid, Policy as CedarPolicy, PolicyId, PolicySet, Request,
    RestrictedExpression,
};
use hallmark_policy::{Attributes, Protocol};

const TRUST_DOMAIN: &str = "bench.example";
const REGISTRY: &str = "registry.bench.example";
const TIERS: [&str; 6] = ["web", "api", "worker", "db", "cache", "queue"];
const TEAMS: usize = 20;
const CONTEXTS: usize = 4;
const NODES: usize = 200;
/// Replicas per service: 10,000 workloads are 500 services.
const REPLICAS: usize = 20;
/// Services per namespace.
const SERVICES_PER_NS: usize = 10;
/// Ports services listen on; most rules name some of them.
const COMMON_PORTS: [u16; 10] = [53, 80, 443, 3306, 5432, 6379, 8080, 8443, 9000, 9090];

/// splitmix64: small, fast, and the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is far below what matters here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// One workload: its Hallmark attributes and the names it is built from.
pub struct Workload {
    pub attrs: Attributes,
    pub uid: String,
}

/// One condition block of a group (the conditions are ANDed).
#[derive(Default, Clone)]
pub struct BlockSpec {
    selector: Option<String>,
    spiffe_id: Option<String>,
    namespace: Option<String>,
    labels: Vec<(String, String)>,
    /// (key, operator, values)
    expressions: Vec<(String, &'static str, Vec<String>)>,
    image: Option<String>,
    cidr: Option<(Ipv4Addr, u8)>,
}

pub struct GroupSpec {
    pub name: String,
    /// Any block matches (OR).
    blocks: Vec<BlockSpec>,
}

pub struct RuleSpec {
    name: String,
    /// Group names; `any` for every endpoint.
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// None = any protocol.
    pub protocol: Option<Protocol>,
    /// Inclusive ranges; empty = every port.
    pub ports: Vec<(u16, u16)>,
    pub deny: bool,
}

/// The whole world.
pub struct World {
    pub workloads: Vec<Workload>,
    pub groups: Vec<GroupSpec>,
    pub rules: Vec<RuleSpec>,
}

fn service_name(s: usize) -> String {
    format!("svc-{s:03}")
}

fn namespace_name(n: usize) -> String {
    format!("ns-{n:02}")
}

fn team_name(t: usize) -> String {
    format!("team-{t:02}")
}

/// Addresses are handed out in order from 10.0.0.1.
pub fn workload_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32 + 1 + i as u32)
}

impl World {
    pub fn generate(workloads: usize, groups: usize, rules: usize, seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let services = workloads.div_ceil(REPLICAS).max(1);
        let namespaces = services.div_ceil(SERVICES_PER_NS).max(1);
        let workloads: Vec<Workload> = (0..workloads)
            .map(|i| workload(i, services, namespaces))
            .collect();
        let groups: Vec<GroupSpec> = (0..groups)
            .map(|g| group(g, &mut rng, services, namespaces, workloads.len()))
            .collect();
        let rules = (0..rules).map(|r| rule(r, &mut rng, &groups)).collect();
        World {
            workloads,
            groups,
            rules,
        }
    }

    /// The Hallmark document: every rule at one priority and in enforce
    /// mode, deny wins at equal priority, `default: deny`.
    pub fn hallmark_yaml(&self) -> String {
        let mut y = String::from("groups:\n");
        for g in &self.groups {
            let _ = writeln!(y, "  {}:", g.name);
            for b in &g.blocks {
                let mut first = true;
                let mut key = |y: &mut String, text: &str| {
                    let lead = if first { "    - " } else { "      " };
                    first = false;
                    let _ = writeln!(y, "{lead}{text}");
                };
                if let Some(s) = &b.selector {
                    key(&mut y, &format!("selector: \"{s}\""));
                }
                if let Some(s) = &b.spiffe_id {
                    key(&mut y, &format!("spiffe_id: \"{s}\""));
                }
                if let Some(s) = &b.namespace {
                    key(&mut y, &format!("namespace: \"{s}\""));
                }
                if !b.labels.is_empty() {
                    let pairs: Vec<String> = b
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}: \"{v}\""))
                        .collect();
                    key(&mut y, &format!("labels: {{{}}}", pairs.join(", ")));
                }
                if !b.expressions.is_empty() {
                    key(&mut y, "match_expressions:");
                    for (k, op, values) in &b.expressions {
                        let vals: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                        let values = if vals.is_empty() {
                            String::new()
                        } else {
                            format!(", values: [{}]", vals.join(", "))
                        };
                        let _ = writeln!(y, "        - {{key: {k}, operator: {op}{values}}}");
                    }
                }
                if let Some(s) = &b.image {
                    key(&mut y, &format!("image: \"{s}\""));
                }
                if let Some((net, len)) = &b.cidr {
                    key(&mut y, &format!("cidr: \"{net}/{len}\""));
                }
            }
        }
        y.push_str("rules:\n");
        for r in &self.rules {
            let _ = writeln!(y, "  - name: {}", r.name);
            let _ = writeln!(y, "    from: [{}]", r.from.join(", "));
            let _ = writeln!(y, "    to: [{}]", r.to.join(", "));
            let protocol = match r.protocol {
                Some(Protocol::Tcp) => "tcp",
                Some(Protocol::Udp) => "udp",
                None => "any",
            };
            let _ = writeln!(y, "    protocol: {protocol}");
            if !r.ports.is_empty() {
                let ports: Vec<String> = r
                    .ports
                    .iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            format!("\"{lo}\"")
                        } else {
                            format!("\"{lo}-{hi}\"")
                        }
                    })
                    .collect();
                let _ = writeln!(y, "    ports: [{}]", ports.join(", "));
            }
            let action = if r.deny { "deny" } else { "allow" };
            let _ = writeln!(y, "    action: {action}");
        }
        y.push_str("default: deny\n");
        y
    }

    /// The same rules in Cedar: `permit` for allow, `forbid` for deny
    /// (forbid overrides permit, as deny wins at one priority in Hallmark),
    /// and Cedar's default deny. Groups are entity parents of workloads.
    pub fn cedar_rules(&self) -> String {
        let mut c = String::new();
        for r in &self.rules {
            let effect = if r.deny { "forbid" } else { "permit" };
            let (principal, from_cond) = scope("principal", &r.from);
            let (resource, to_cond) = scope("resource", &r.to);
            let mut conds: Vec<String> = from_cond.into_iter().chain(to_cond).collect();
            match r.protocol {
                Some(Protocol::Tcp) => conds.push("context.protocol == \"tcp\"".into()),
                Some(Protocol::Udp) => conds.push("context.protocol == \"udp\"".into()),
                None => {}
            }
            if !r.ports.is_empty() {
                let ports: Vec<String> = r
                    .ports
                    .iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            format!("context.port == {lo}")
                        } else {
                            format!("(context.port >= {lo} && context.port <= {hi})")
                        }
                    })
                    .collect();
                conds.push(format!("({})", ports.join(" || ")));
            }
            let _ = write!(
                c,
                "@id(\"{}\")\n{effect}({principal}, action == Action::\"connect\", {resource})",
                r.name
            );
            if conds.is_empty() {
                c.push_str(";\n");
            } else {
                let _ = writeln!(c, "\nwhen {{ {} }};", conds.join(" && "));
            }
        }
        c
    }

    /// Group membership in Cedar: one `permit` per group whose condition is
    /// the group's blocks, asked once per workload; the satisfied policies
    /// (the response's reasons) are the workload's groups. This is the same
    /// work as `Policy::groups_of`: every group evaluated once.
    pub fn cedar_membership(&self) -> Result<PolicySet> {
        let mut set = PolicySet::new();
        for g in &self.groups {
            let blocks: Vec<String> = g.blocks.iter().map(cedar_block).collect();
            let text = format!(
                "permit(principal, action == Action::\"member\", resource) when {{ {} }};",
                blocks.join(" || ")
            );
            let policy = CedarPolicy::parse(Some(PolicyId::new(&g.name)), &text)
                .with_context(|| format!("Cedar membership policy of {}: {text}", g.name))?;
            set.add(policy)
                .with_context(|| format!("adding the membership of {}", g.name))?;
        }
        Ok(set)
    }
}

/// A Cedar scope element for a rule side, plus a condition when the side
/// names several groups (a scope holds one `in`).
fn scope(var: &str, groups: &[String]) -> (String, Option<String>) {
    let named: Vec<&String> = groups.iter().filter(|g| *g != "any").collect();
    if named.len() < groups.len() || named.is_empty() {
        return (var.to_string(), None);
    }
    if let [one] = named.as_slice() {
        return (format!("{var} in Group::\"{one}\""), None);
    }
    let list: Vec<String> = named.iter().map(|g| format!("Group::\"{g}\"")).collect();
    (
        var.to_string(),
        Some(format!("{var} in [{}]", list.join(", "))),
    )
}

fn cedar_block(b: &BlockSpec) -> String {
    let mut conds = Vec::new();
    if let Some(s) = &b.selector {
        conds.push(format!("principal.selectors.contains(\"{s}\")"));
    }
    if let Some(s) = &b.spiffe_id {
        // `like`'s `*` also crosses `/`; every ID here has the same shape
        // (`/ns/N/sa/S`), so on these workloads it matches what Hallmark's
        // segment glob matches. The membership check below proves it.
        if s.contains('*') {
            conds.push(format!("principal.spiffe_id like \"{s}\""));
        } else {
            conds.push(format!("principal.spiffe_id == \"{s}\""));
        }
    }
    if let Some(s) = &b.namespace {
        conds.push(format!("principal.namespace == \"{s}\""));
    }
    for (k, v) in &b.labels {
        conds.push(format!(
            "(principal.labels has \"{k}\" && principal.labels[\"{k}\"] == \"{v}\")"
        ));
    }
    for (k, op, values) in &b.expressions {
        let set: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
        let set = set.join(", ");
        conds.push(match *op {
            "In" => format!(
                "(principal.labels has \"{k}\" && [{set}].contains(principal.labels[\"{k}\"]))"
            ),
            "NotIn" => format!(
                "(!(principal.labels has \"{k}\") || !([{set}].contains(principal.labels[\"{k}\"])))"
            ),
            "Exists" => format!("principal.labels has \"{k}\""),
            _ => format!("!(principal.labels has \"{k}\")"),
        });
    }
    if let Some(s) = &b.image {
        conds.push(format!("principal.image like \"{s}\""));
    }
    if let Some((net, len)) = &b.cidr {
        conds.push(format!("principal.addr.isInRange(ip(\"{net}/{len}\"))"));
    }
    format!("({})", conds.join(" && "))
}

fn workload(i: usize, services: usize, namespaces: usize) -> Workload {
    let s = i % services;
    let svc = service_name(s);
    let ns = namespace_name(s % namespaces);
    let team = team_name(s % TEAMS);
    let mut labels = BTreeMap::from([
        ("app".to_string(), svc.clone()),
        ("tier".to_string(), TIERS[s % TIERS.len()].to_string()),
        ("team".to_string(), team.clone()),
    ]);
    // Every tenth replica is a canary, so `Exists`/`DoesNotExist` split.
    if (i / services).is_multiple_of(10) {
        labels.insert("track".into(), "canary".into());
    }
    let attrs = Attributes {
        spiffe_ids: vec![format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{svc}")],
        selectors: vec![
            format!("docker:label:app:{svc}"),
            format!("k8s:ns:{ns}"),
            format!("k8s:sa:{svc}"),
            format!("unix:uid:{}", 1000 + s % 50),
        ],
        namespace: ns,
        labels,
        image: format!("{REGISTRY}/{team}/{svc}:1.{}", i % 3),
        context: format!("cluster-{}", (i / 7) % CONTEXTS),
        node: format!("node-{:03}", i % NODES),
        addr: Some(IpAddr::V4(workload_addr(i))),
    };
    Workload {
        attrs,
        uid: format!("w{i:05}"),
    }
}

/// Group `g`: its kind cycles through selector, SPIFFE ID glob, namespace
/// + labels, match expressions, image glob and CIDR; some have two blocks.
fn group(
    g: usize,
    rng: &mut Rng,
    services: usize,
    namespaces: usize,
    workloads: usize,
) -> GroupSpec {
    let kind = g % 6;
    let blocks = if rng.chance(20) { 2 } else { 1 };
    let blocks = (0..blocks)
        .map(|_| block(kind, rng, services, namespaces, workloads))
        .collect();
    let prefix = ["sel", "id", "nslab", "expr", "img", "net"][kind];
    GroupSpec {
        name: format!("{prefix}-{g:03}"),
        blocks,
    }
}

fn block(
    kind: usize,
    rng: &mut Rng,
    services: usize,
    namespaces: usize,
    workloads: usize,
) -> BlockSpec {
    let tier = |rng: &mut Rng| TIERS[rng.below(TIERS.len())].to_string();
    match kind {
        0 => BlockSpec {
            selector: Some(format!(
                "docker:label:app:{}",
                service_name(rng.below(services))
            )),
            ..BlockSpec::default()
        },
        1 => {
            let id = if rng.chance(50) {
                format!(
                    "spiffe://{TRUST_DOMAIN}/ns/{}/*",
                    namespace_name(rng.below(namespaces))
                )
            } else {
                // svc-12* is svc-120 .. svc-129.
                let stem = service_name(rng.below(services));
                format!(
                    "spiffe://{TRUST_DOMAIN}/ns/*/sa/{}*",
                    &stem[..stem.len() - 1]
                )
            };
            BlockSpec {
                spiffe_id: Some(id),
                ..BlockSpec::default()
            }
        }
        2 => BlockSpec {
            namespace: Some(namespace_name(rng.below(namespaces))),
            labels: vec![("tier".into(), tier(rng))],
            ..BlockSpec::default()
        },
        3 => {
            let mut expressions = vec![("tier", "In", vec![tier(rng), tier(rng)])];
            match rng.below(3) {
                0 => expressions.push(("team", "NotIn", vec![team_name(rng.below(TEAMS))])),
                1 => expressions.push(("track", "Exists", vec![])),
                _ => expressions.push(("track", "DoesNotExist", vec![])),
            }
            BlockSpec {
                expressions: expressions
                    .into_iter()
                    .map(|(k, op, mut v)| {
                        v.dedup();
                        (k.to_string(), op, v)
                    })
                    .collect(),
                ..BlockSpec::default()
            }
        }
        4 => {
            let image = if rng.chance(50) {
                format!("{REGISTRY}/{}/*", team_name(rng.below(TEAMS)))
            } else {
                format!(
                    "{REGISTRY}/*/{}:1.{}",
                    service_name(rng.below(services)),
                    rng.below(3)
                )
            };
            BlockSpec {
                image: Some(image),
                ..BlockSpec::default()
            }
        }
        _ => {
            // A /24 or /22 inside the workloads' addresses.
            let last = workload_addr(workloads.saturating_sub(1));
            let third = usize::from(last.octets()[2]) + 1;
            let len = if rng.chance(70) { 24 } else { 22 };
            let mut octet = rng.below(third) as u8;
            if len == 22 {
                octet &= !3;
            }
            let second = last.octets()[1];
            BlockSpec {
                cidr: Some((Ipv4Addr::new(10, second, octet, 0), len)),
                ..BlockSpec::default()
            }
        }
    }
}

fn rule(r: usize, rng: &mut Rng, groups: &[GroupSpec]) -> RuleSpec {
    let side = |rng: &mut Rng, any_percent: usize| -> Vec<String> {
        if rng.chance(any_percent) {
            return vec!["any".into()];
        }
        let n = if rng.chance(15) { 2 } else { 1 };
        let mut names: Vec<String> = (0..n)
            .map(|_| groups[rng.below(groups.len())].name.clone())
            .collect();
        names.dedup();
        names
    };
    let from = side(rng, 5);
    let to = side(rng, 0);
    let protocol = match rng.below(100) {
        0..70 => Some(Protocol::Tcp),
        70..85 => Some(Protocol::Udp),
        _ => None,
    };
    let ports = if rng.chance(10) {
        Vec::new()
    } else {
        (0..1 + rng.below(3))
            .map(|_| {
                if rng.chance(70) {
                    let p = COMMON_PORTS[rng.below(COMMON_PORTS.len())];
                    (p, p)
                } else {
                    let lo = 1024 + rng.below(59_000) as u16;
                    (lo, lo + rng.below(1000) as u16)
                }
            })
            .collect()
    };
    RuleSpec {
        name: format!("r-{r:04}"),
        from,
        to,
        protocol,
        ports,
        deny: rng.chance(15),
    }
}

/// A Cedar `Workload` entity with the workload's attributes, its groups as
/// parents. Cedar cannot apply `like` to the members of a set, so the one
/// SPIFFE ID is also an attribute of its own.
pub fn cedar_entity(w: &Workload, groups: &[&str]) -> Result<Entity> {
    let a = &w.attrs;
    let s = |v: &str| RestrictedExpression::new_string(v.to_string());
    let labels = RestrictedExpression::new_record(a.labels.iter().map(|(k, v)| (k.clone(), s(v))))
        .context("labels record")?;
    let addr = a.addr.map_or_else(String::new, |ip| ip.to_string());
    let attrs = HashMap::from([
        (
            "spiffe_id".to_string(),
            s(a.spiffe_ids.first().map_or("", String::as_str)),
        ),
        (
            "spiffe_ids".to_string(),
            RestrictedExpression::new_set(a.spiffe_ids.iter().map(|v| s(v))),
        ),
        (
            "selectors".to_string(),
            RestrictedExpression::new_set(a.selectors.iter().map(|v| s(v))),
        ),
        ("namespace".to_string(), s(&a.namespace)),
        ("labels".to_string(), labels),
        ("image".to_string(), s(&a.image)),
        ("context".to_string(), s(&a.context)),
        ("node".to_string(), s(&a.node)),
        ("addr".to_string(), RestrictedExpression::new_ip(addr)),
    ]);
    let parents: HashSet<EntityUid> = groups.iter().map(|g| group_uid(g)).collect::<Result<_>>()?;
    Entity::new(workload_uid(&w.uid)?, attrs, parents)
        .with_context(|| format!("Cedar entity of {}", w.uid))
}

pub fn workload_uid(uid: &str) -> Result<EntityUid> {
    format!("Workload::\"{uid}\"")
        .parse()
        .with_context(|| format!("entity uid of {uid}"))
}

pub fn group_uid(name: &str) -> Result<EntityUid> {
    format!("Group::\"{name}\"")
        .parse()
        .with_context(|| format!("entity uid of group {name}"))
}

pub fn action_uid(name: &str) -> Result<EntityUid> {
    format!("Action::\"{name}\"")
        .parse()
        .with_context(|| format!("action uid {name}"))
}

/// One question: initiator and acceptor (workload indices), protocol, the
/// acceptor's port.
#[derive(Clone, Copy)]
pub struct Question {
    pub from: usize,
    pub to: usize,
    pub protocol: Protocol,
    pub port: u16,
}

/// `count` questions: half aimed at a random rule (an initiator from its
/// `from`, an acceptor from its `to`, a port and protocol it names), so
/// rules of both actions decide many of them; half entirely at random.
/// `members[g]` lists the workloads of group `g`, by name.
pub fn questions(
    world: &World,
    members: &HashMap<&str, Vec<usize>>,
    count: usize,
    rng: &mut Rng,
) -> Vec<Question> {
    let n = world.workloads.len();
    let pick = |rng: &mut Rng, side: &[String]| -> usize {
        let g = &side[rng.below(side.len())];
        match members.get(g.as_str()) {
            Some(m) if !m.is_empty() => m[rng.below(m.len())],
            _ => rng.below(n),
        }
    };
    (0..count)
        .map(|_| {
            if rng.chance(50) && !world.rules.is_empty() {
                let r = &world.rules[rng.below(world.rules.len())];
                let protocol = r.protocol.unwrap_or(if rng.chance(80) {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                });
                let port = match r.ports.as_slice() {
                    [] => 1 + rng.below(65535) as u16,
                    ports => {
                        let (lo, hi) = ports[rng.below(ports.len())];
                        lo + rng.below(usize::from(hi - lo) + 1) as u16
                    }
                };
                Question {
                    from: pick(rng, &r.from),
                    to: pick(rng, &r.to),
                    protocol,
                    port,
                }
            } else {
                Question {
                    from: rng.below(n),
                    to: rng.below(n),
                    protocol: if rng.chance(80) {
                        Protocol::Tcp
                    } else {
                        Protocol::Udp
                    },
                    port: if rng.chance(70) {
                        COMMON_PORTS[rng.below(COMMON_PORTS.len())]
                    } else {
                        1 + rng.below(65535) as u16
                    },
                }
            }
        })
        .collect()
}

/// The Cedar request for a question, built before timing starts (Hallmark's
/// question is in hand too).
pub fn cedar_request(world: &World, q: &Question, connect: &EntityUid) -> Result<Request> {
    let protocol = match q.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    let context = Context::from_pairs([
        (
            "protocol".to_string(),
            RestrictedExpression::new_string(protocol.into()),
        ),
        (
            "port".to_string(),
            RestrictedExpression::new_long(i64::from(q.port)),
        ),
    ])
    .context("Cedar request context")?;
    Request::new(
        workload_uid(&world.workloads[q.from].uid)?,
        connect.clone(),
        workload_uid(&world.workloads[q.to].uid)?,
        context,
        None,
    )
    .context("Cedar request")
}

/// Cedar's entity store: every workload with its groups, and the groups.
pub fn cedar_entities(world: &World, groups_of: &[Vec<&str>]) -> Result<Entities> {
    let mut entities = Vec::with_capacity(world.workloads.len() + world.groups.len());
    for (w, groups) in world.workloads.iter().zip(groups_of) {
        entities.push(cedar_entity(w, groups)?);
    }
    for g in &world.groups {
        entities.push(Entity::new_no_attrs(group_uid(&g.name)?, HashSet::new()));
    }
    Entities::from_entities(entities, None).context("building Cedar's entity store")
}
