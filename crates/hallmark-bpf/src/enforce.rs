//! Identity policy enforcement: the programs of `bpf/enforce.bpf.c`
//! (committed as `bpf/enforce.bpf.o`), their loader and the policy maps.
//!
//! [`Enforcer::load`] attaches `cgroup/connect4|6`, `cgroup/sendmsg4|6` and a
//! `cgroup_skb/ingress` program to one cgroup2 directory (children
//! inherit). Cgroup bpf_links are multi-attach, so this coexists with the
//! capture programs on the same cgroup.
//!
//! A policy arrives as a [`PolicyImage`]; [`Enforcer::install`] writes it
//! into the inactive generation of the maps, flips the generation with one
//! array write and then clears the old one, so a decision sees either the
//! old image or the new one, never a mix. An image that does not fit is
//! refused before anything is written.
//!
//! With a pin directory the maps and links live on in bpffs after the
//! [`Enforcer`] is dropped (enforcement continues without the agent), and
//! the next [`Enforcer::load`] with that directory takes them over without
//! a gap and without loading a second set of programs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, ProgramError,
};
use aya::Pod;
use aya::{Btf, Ebpf, EbpfLoader};

use crate::enforce_plan::Plan;
use crate::enforce_records::{
    self as rec, Exempt, Mode, PairKey, Peer, Segment, Verdict, CONFIG_SIZE, EXEMPT_KEY_SIZE,
    LOCAL_KEY_SIZE, PAIR_KEY_SIZE, PEER4_DATA, PEER6_DATA, TABLE_KEY_SIZE, TABLE_VAL_SIZE,
};
use crate::error::{CaptureError, EnforceError};
use crate::sys;
use crate::EnforceEvent;

/// The compiled, stripped enforcement programs.
static OBJECT: &[u8] = include_bytes!("../bpf/enforce.bpf.o");

/// Local identities (cgroups) one image may hold (`hm_enf_local` holds two
/// generations).
pub const LOCAL_CAPACITY: usize = 4096;
/// IPv4 peer prefixes one image may hold (`hm_enf_peer4`).
pub const PEER4_CAPACITY: usize = 32_768;
/// IPv6 peer prefixes one image may hold (`hm_enf_peer6`).
pub const PEER6_CAPACITY: usize = 32_768;
/// Identity pairs one image may hold (`hm_enf_pairs`; each names a table).
pub const PAIR_CAPACITY: usize = 262_144;
/// Distinct port-segment tables one image may hold (`hm_enf_tables`).
pub const TABLE_CAPACITY: usize = 32_768;
/// Exemptions (`hm_enf_exempt`; not generational, so old and new together).
pub const EXEMPT_CAPACITY: usize = 1024;
/// UDP exchanges remembered for replies (`hm_enf_udp_ok`, LRU).
pub const UDP_OK_CAPACITY: usize = 65_536;
/// Size of the event ring buffer (`hm_enf_events`), 1 MiB.
pub const EVENT_RING_BYTES: usize = 1 << 20;

const MAP_CONFIG: &str = "hm_enf_config";
pub(crate) const MAP_LOCAL: &str = "hm_enf_local";
pub(crate) const MAP_PEER4: &str = "hm_enf_peer4";
pub(crate) const MAP_PEER6: &str = "hm_enf_peer6";
pub(crate) const MAP_PAIRS: &str = "hm_enf_pairs";
pub(crate) const MAP_TABLES: &str = "hm_enf_tables";
const MAP_EXEMPT: &str = "hm_enf_exempt";
const MAP_UDP_OK: &str = "hm_enf_udp_ok";
const MAP_EVENTS: &str = "hm_enf_events";
const MAP_DROPS: &str = "hm_enf_drops";
const MAP_DECISIONS: &str = "hm_enf_decisions";
const MAP_RULE_HITS: &str = "hm_enf_rule_hits";
const MAPS: [&str; 12] = [
    MAP_CONFIG,
    MAP_LOCAL,
    MAP_PEER4,
    MAP_PEER6,
    MAP_PAIRS,
    MAP_TABLES,
    MAP_EXEMPT,
    MAP_UDP_OK,
    MAP_EVENTS,
    MAP_DROPS,
    MAP_DECISIONS,
    MAP_RULE_HITS,
];

/// Rule ids the kernel counts decisions for one by one; higher ids share
/// the last counter (`RULE_COUNTERS` in enforce.bpf.c).
pub const RULE_COUNTERS: u32 = 4096;
/// Verdicts counted per rule: allow, deny, would-deny (`VERDICTS`).
const VERDICTS: u32 = 3;

/// The programs, with the hook each one takes.
const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "hm_enf_connect4",
    "hm_enf_connect6",
    "hm_enf_sendmsg4",
    "hm_enf_sendmsg6",
];
const PROG_INGRESS: &str = "hm_enf_ingress";

/// bpffs's `f_type` (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where and how to enforce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnforceOptions {
    /// cgroup2 directory the programs attach to (children inherit).
    /// `None`: the cgroup2 mount found in `/proc/self/mountinfo`.
    pub cgroup: Option<PathBuf>,
    /// A directory on bpffs to pin maps and links in, so enforcement
    /// outlives this process and a later load takes it over. bpffs is
    /// mounted at `/sys/fs/bpf` if nothing is mounted there yet.
    pub pin_dir: Option<PathBuf>,
}

/// A whole policy, as the kernel tables hold it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyImage {
    /// Mode after the install.
    pub mode: Mode,
    /// Verdict for a pair with no entry (rule 0).
    pub default_verdict: Verdict,
    /// Enforced cgroups: (cgroup id, local identity). Sockets of other
    /// cgroups are never affected.
    pub locals: Vec<(u64, u32)>,
    /// Peer identities by address prefix; no match is identity 0.
    pub peers: Vec<Peer>,
    /// Port segments per pair, sorted by `start`, at most
    /// [`MAX_SEGS`](crate::MAX_SEGS).
    pub pairs: Vec<(PairKey, Vec<Segment>)>,
    /// Traffic never blocked.
    pub exempt: Vec<Exempt>,
}

/// What an install wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstallReport {
    /// The generation now in force (0 or 1).
    pub generation: u32,
    /// Local entries written.
    pub locals: usize,
    /// IPv4 and IPv6 peer prefixes written.
    pub peers: usize,
    /// Pairs written.
    pub pairs: usize,
    /// Distinct port tables written (pairs with the same ports share one).
    pub tables: usize,
    /// Exemptions in force.
    pub exempt: usize,
    /// Entries of the previous generation removed.
    pub cleared: usize,
}

/// Entries in use and capacity of one map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Entries of the generation in force (all entries for exempt and
    /// udp_ok).
    pub used: usize,
    /// What one image may use.
    pub capacity: usize,
}

/// Use of each bounded map, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnforceUsage {
    /// `hm_enf_local`.
    pub locals: Usage,
    /// `hm_enf_peer4`.
    pub peers4: Usage,
    /// `hm_enf_peer6`.
    pub peers6: Usage,
    /// `hm_enf_pairs`.
    pub pairs: Usage,
    /// `hm_enf_tables`.
    pub tables: Usage,
    /// `hm_enf_exempt`.
    pub exempt: Usage,
    /// `hm_enf_udp_ok`.
    pub udp_ok: Usage,
}

/// Decisions made by the programs for enforced cgroups, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decisions {
    /// Let through without an event (exemptions included).
    pub allowed: u64,
    /// Blocked.
    pub denied: u64,
    /// Let through and reported.
    pub would_deny: u64,
}

/// Events lost, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnforceDrops {
    /// Events lost because the ring buffer was full (`ringbuf-full`).
    pub ringbuf_full: u64,
}

type LocalMap = HashMap<MapData, [u8; LOCAL_KEY_SIZE], u32>;
type PairMap = HashMap<MapData, [u8; PAIR_KEY_SIZE], u32>;
type TableMap = HashMap<MapData, [u8; TABLE_KEY_SIZE], [u8; TABLE_VAL_SIZE]>;

/// Attached enforcement programs and their maps. Dropping it detaches
/// everything, unless it was loaded with a pin directory.
pub struct Enforcer {
    config: Array<MapData, [u8; CONFIG_SIZE]>,
    locals: LocalMap,
    peer4: LpmTrie<MapData, [u8; PEER4_DATA], u32>,
    peer6: LpmTrie<MapData, [u8; PEER6_DATA], u32>,
    pairs: PairMap,
    tables: TableMap,
    exempt: HashMap<MapData, [u8; EXEMPT_KEY_SIZE], u8>,
    udp_ok: HashMap<MapData, [u8; 32], u64>,
    events: RingBuf<MapData>,
    drops: PerCpuArray<MapData, u64>,
    decisions: PerCpuArray<MapData, u64>,
    rule_hits: PerCpuArray<MapData, u64>,
    pin_dir: Option<PathBuf>,
    taken_over: bool,
    program_ids: Vec<u32>,
    malformed: u64,
    // Owns the programs and (unpinned) links: dropped last, detaching them.
    _ebpf: Option<Ebpf>,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("pin_dir", &self.pin_dir)
            .field("taken_over", &self.taken_over)
            .field("program_ids", &self.program_ids)
            .finish_non_exhaustive()
    }
}

impl Enforcer {
    /// Loads and attaches the programs, or takes over pinned ones when
    /// `opts.pin_dir` already holds them. A fresh load starts in
    /// [`Mode::Off`] with empty tables.
    pub fn load(opts: &EnforceOptions) -> Result<Enforcer, EnforceError> {
        sys::check_btf()?;
        sys::check_permission()?;
        if let Some(dir) = &opts.pin_dir {
            ensure_bpffs(dir)?;
            if dir.join(MAP_CONFIG).exists() {
                return Enforcer::take_over(dir);
            }
        }
        let root = match &opts.cgroup {
            Some(p) => p.clone(),
            None => sys::cgroup2_mount().ok_or_else(|| {
                CaptureError::NoCgroup2("no cgroup2 entry in /proc/self/mountinfo".into())
            })?,
        };
        let cgroup = sys::open_cgroup(&root)?;
        let btf = Btf::from_sys_fs().map_err(|e| CaptureError::NoBtf(e.to_string()))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(OBJECT)
            .map_err(|e| CaptureError::load("object", e))?;

        let mut links: Vec<(&'static str, FdLink)> = Vec::new();
        for name in SOCK_ADDR_PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(|e| CaptureError::load(name, e))?;
            // As a bpf_link the attachment is always multi (see Capture).
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|e| CaptureError::attach(name, e))?;
            if opts.pin_dir.is_some() {
                let link = prog
                    .take_link(id)
                    .map_err(|e| CaptureError::attach(name, e))?;
                links.push((name, link_fd(name, link)?));
            }
        }
        let ingress: &mut CgroupSkb = program(&mut ebpf, PROG_INGRESS)?;
        ingress
            .load()
            .map_err(|e| CaptureError::load(PROG_INGRESS, e))?;
        let id = ingress
            .attach(
                &cgroup,
                CgroupSkbAttachType::Ingress,
                CgroupAttachMode::Single,
            )
            .map_err(|e| CaptureError::attach(PROG_INGRESS, e))?;
        if opts.pin_dir.is_some() {
            let link = ingress
                .take_link(id)
                .map_err(|e| CaptureError::attach(PROG_INGRESS, e))?;
            links.push((PROG_INGRESS, link_fd(PROG_INGRESS, link)?));
        }
        let program_ids = ebpf
            .programs()
            .filter_map(|(_, p)| p.info().ok())
            .map(|i| i.id())
            .collect();

        let mut maps = BTreeMap::new();
        for name in MAPS {
            let map = ebpf.take_map(name).ok_or_else(|| {
                CaptureError::load("object", format!("map {name} missing from the object"))
            })?;
            maps.insert(name, map);
        }
        if let Some(dir) = &opts.pin_dir {
            // Links, then maps with the config last (BTreeMap order reversed):
            // a directory with a config pin is complete and is taken over.
            for (name, link) in links {
                let path = dir.join(name);
                link.pin(&path).map_err(|e| EnforceError::pin(&path, e))?;
            }
            for (name, map) in maps.iter().rev() {
                let path = dir.join(name);
                map.pin(&path).map_err(|e| EnforceError::pin(&path, e))?;
            }
        }
        let mut enf = Enforcer::from_maps(maps, opts.pin_dir.clone(), program_ids)?;
        enf._ebpf = Some(ebpf);
        Ok(enf)
    }

    /// Opens the pinned maps and links of a previous load: the programs
    /// stay attached throughout.
    fn take_over(dir: &Path) -> Result<Enforcer, EnforceError> {
        let mut program_ids = Vec::new();
        for name in SOCK_ADDR_PROGRAMS.into_iter().chain([PROG_INGRESS]) {
            let path = dir.join(name);
            let link = PinnedLink::from_pin(&path).map_err(|e| EnforceError::pin(&path, e))?;
            let info = FdLink::from(link)
                .info()
                .map_err(|e| EnforceError::pin(&path, e))?;
            program_ids.push(info.program_id());
        }
        let mut maps = BTreeMap::new();
        for name in MAPS {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|e| EnforceError::pin(&path, e))?;
            let map = Map::from_map_data(data).map_err(|e| EnforceError::pin(&path, e))?;
            maps.insert(name, map);
        }
        let mut enf = Enforcer::from_maps(maps, Some(dir.to_path_buf()), program_ids)?;
        enf.taken_over = true;
        Ok(enf)
    }

    fn from_maps(
        mut maps: BTreeMap<&'static str, Map>,
        pin_dir: Option<PathBuf>,
        program_ids: Vec<u32>,
    ) -> Result<Enforcer, EnforceError> {
        let mut take = |name: &'static str| {
            maps.remove(name)
                .ok_or_else(|| EnforceError::map(name, "opening", "missing"))
        };
        let bad = |name: &'static str| move |e| EnforceError::map(name, "opening", e);
        Ok(Enforcer {
            config: Array::try_from(take(MAP_CONFIG)?).map_err(bad(MAP_CONFIG))?,
            locals: HashMap::try_from(take(MAP_LOCAL)?).map_err(bad(MAP_LOCAL))?,
            peer4: LpmTrie::try_from(take(MAP_PEER4)?).map_err(bad(MAP_PEER4))?,
            peer6: LpmTrie::try_from(take(MAP_PEER6)?).map_err(bad(MAP_PEER6))?,
            pairs: HashMap::try_from(take(MAP_PAIRS)?).map_err(bad(MAP_PAIRS))?,
            tables: HashMap::try_from(take(MAP_TABLES)?).map_err(bad(MAP_TABLES))?,
            exempt: HashMap::try_from(take(MAP_EXEMPT)?).map_err(bad(MAP_EXEMPT))?,
            udp_ok: HashMap::try_from(take(MAP_UDP_OK)?).map_err(bad(MAP_UDP_OK))?,
            events: RingBuf::try_from(take(MAP_EVENTS)?).map_err(bad(MAP_EVENTS))?,
            drops: PerCpuArray::try_from(take(MAP_DROPS)?).map_err(bad(MAP_DROPS))?,
            decisions: PerCpuArray::try_from(take(MAP_DECISIONS)?).map_err(bad(MAP_DECISIONS))?,
            rule_hits: PerCpuArray::try_from(take(MAP_RULE_HITS)?).map_err(bad(MAP_RULE_HITS))?,
            pin_dir,
            taken_over: false,
            program_ids,
            malformed: 0,
            _ebpf: None,
        })
    }

    /// Whether this took over programs pinned by an earlier load.
    pub fn taken_over(&self) -> bool {
        self.taken_over
    }

    /// Kernel ids of the enforcement programs.
    pub fn program_ids(&self) -> Vec<u32> {
        self.program_ids.clone()
    }

    /// Removes the pinned links and maps: the programs detach once no
    /// process holds them. Without a pin directory this is a plain drop.
    pub fn unpin_and_detach(self) -> Result<(), EnforceError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(());
        };
        drop(self);
        let mut first_err = None;
        for name in SOCK_ADDR_PROGRAMS.into_iter().chain([PROG_INGRESS]) {
            let path = dir.join(name);
            let res = PinnedLink::from_pin(&path)
                .map_err(|e| EnforceError::pin(&path, e))
                .and_then(|l| l.unpin().map_err(|e| EnforceError::pin(&path, e)));
            // The FdLink returned by unpin closes here, releasing the link.
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        for name in MAPS {
            let path = dir.join(name);
            if let Err(e) = std::fs::remove_file(&path) {
                first_err.get_or_insert(EnforceError::pin(&path, e));
            }
        }
        // Only if empty: the directory may be shared with other pins.
        let _ = std::fs::remove_dir(&dir);
        first_err.map_or(Ok(()), Err)
    }

    /// (mode, generation in force, default verdict bytes per generation).
    fn read_config(&self) -> Result<(Mode, u32, [u8; 2]), EnforceError> {
        let raw = self
            .config
            .get(&0, 0)
            .map_err(|e| EnforceError::map(MAP_CONFIG, "reading", e))?;
        Ok(rec::parse_config(&raw))
    }

    /// The mode in force.
    pub fn mode(&self) -> Result<Mode, EnforceError> {
        Ok(self.read_config()?.0)
    }

    /// Sets the mode with one array write (the kill switch: [`Mode::Off`]
    /// lets everything through from the next decision on).
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), EnforceError> {
        let (_, generation, defaults) = self.read_config()?;
        let defaults = defaults.map(rec::verdict_from_raw);
        self.config
            .set(0, rec::config(mode, generation, defaults), 0)
            .map_err(|e| EnforceError::map(MAP_CONFIG, "writing", e))
    }

    /// Installs `image` atomically: fills the inactive generation, flips to
    /// it with one write, clears the old one. A refused or failed install
    /// leaves the image in force untouched.
    pub fn install(&mut self, image: &PolicyImage) -> Result<InstallReport, EnforceError> {
        let plan = Plan::new(image)?;
        let exempt_union = self
            .exempt_keys()
            .into_iter()
            .chain(plan.exempt.iter().copied())
            .collect::<BTreeSet<_>>()
            .len();
        if exempt_union > EXEMPT_CAPACITY {
            return Err(EnforceError::Capacity {
                map: MAP_EXEMPT,
                needed: exempt_union,
                capacity: EXEMPT_CAPACITY,
            });
        }
        let (_, current, defaults) = self.read_config()?;
        let next = current ^ 1;
        // Leftovers of an install that died half way.
        self.clear_generation(next)?;
        if let Err(e) = self.write_generation(next, &plan) {
            let _ = self.clear_generation(next);
            return Err(e);
        }
        for key in &plan.exempt {
            self.exempt
                .insert(key, 1, 0)
                .map_err(|e| EnforceError::map(MAP_EXEMPT, "inserting", e))?;
        }
        let mut new_defaults = defaults.map(rec::verdict_from_raw);
        new_defaults[next as usize] = image.default_verdict;
        self.config
            .set(0, rec::config(image.mode, next, new_defaults), 0)
            .map_err(|e| EnforceError::map(MAP_CONFIG, "flipping", e))?;
        let cleared = self.clear_generation(current)?;
        let keep: BTreeSet<_> = plan.exempt.iter().copied().collect();
        for key in self.exempt_keys() {
            if !keep.contains(&key) {
                let _ = self.exempt.remove(&key);
            }
        }
        Ok(InstallReport {
            generation: next,
            locals: plan.locals.len(),
            peers: plan.peer4.len() + plan.peer6.len(),
            pairs: plan.pairs.len(),
            tables: plan.tables.len(),
            exempt: keep.len(),
            cleared,
        })
    }

    fn write_generation(&mut self, g: u32, plan: &Plan) -> Result<(), EnforceError> {
        for (cg, ident) in &plan.locals {
            self.locals
                .insert(rec::local_key(*cg, g), ident, 0)
                .map_err(|e| EnforceError::map(MAP_LOCAL, "inserting", e))?;
        }
        for ((addr, len), ident) in &plan.peer4 {
            let key = Key::new(32 + u32::from(*len), rec::peer4_data(g, *addr));
            self.peer4
                .insert(&key, ident, 0)
                .map_err(|e| EnforceError::map(MAP_PEER4, "inserting", e))?;
        }
        for ((addr, len), ident) in &plan.peer6 {
            let key = Key::new(32 + u32::from(*len), rec::peer6_data(g, *addr));
            self.peer6
                .insert(&key, ident, 0)
                .map_err(|e| EnforceError::map(MAP_PEER6, "inserting", e))?;
        }
        // Tables first: a pair never names a table that is not there yet
        // (the generation is not in force before the flip anyway).
        for (id, segs) in (0u32..).zip(&plan.tables) {
            self.tables
                .insert(rec::table_key(g, id), rec::table_val(segs), 0)
                .map_err(|e| EnforceError::map(MAP_TABLES, "inserting", e))?;
        }
        for (pair, table) in &plan.pairs {
            self.pairs
                .insert(rec::pair_key(g, pair), table, 0)
                .map_err(|e| EnforceError::map(MAP_PAIRS, "inserting", e))?;
        }
        Ok(())
    }

    /// Removes every entry of generation `g`; returns how many.
    fn clear_generation(&mut self, g: u32) -> Result<usize, EnforceError> {
        let mut n = clear_hash(&mut self.locals, MAP_LOCAL, rec::local_key_generation, g)?;
        let keys: Vec<_> = self.peer4.keys().filter_map(Result::ok).collect();
        for k in keys.iter().filter(|k| rec::peer_generation(&k.data()) == g) {
            self.peer4
                .remove(k)
                .map_err(|e| EnforceError::map(MAP_PEER4, "clearing", e))?;
            n += 1;
        }
        let keys: Vec<_> = self.peer6.keys().filter_map(Result::ok).collect();
        for k in keys.iter().filter(|k| rec::peer_generation(&k.data()) == g) {
            self.peer6
                .remove(k)
                .map_err(|e| EnforceError::map(MAP_PEER6, "clearing", e))?;
            n += 1;
        }
        n += clear_hash(&mut self.pairs, MAP_PAIRS, rec::pair_key_generation, g)?;
        n += clear_hash(&mut self.tables, MAP_TABLES, rec::table_key_generation, g)?;
        Ok(n)
    }

    fn exempt_keys(&self) -> Vec<[u8; EXEMPT_KEY_SIZE]> {
        self.exempt.keys().filter_map(Result::ok).collect()
    }

    /// Drains the event ring buffer without blocking, appending events;
    /// returns how many were appended.
    pub fn drain_events(&mut self, out: &mut Vec<EnforceEvent>) -> usize {
        let before = out.len();
        while let Some(item) = self.events.next() {
            match rec::parse_event(&item) {
                Ok(e) => out.push(e),
                Err(_) => self.malformed += 1,
            }
        }
        out.len() - before
    }

    /// The ring buffer's fd, borrowed (for `poll(2)`: readable when events
    /// wait).
    pub fn ring(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.events)
    }

    /// Ring buffer records that could not be read (zero in a consistent
    /// build).
    pub fn malformed_records(&self) -> u64 {
        self.malformed
    }

    /// Cumulative event drops.
    pub fn drops(&self) -> EnforceDrops {
        EnforceDrops {
            ringbuf_full: per_cpu_sum(&self.drops, 0),
        }
    }

    /// Cumulative decisions by verdict.
    pub fn decisions(&self) -> Decisions {
        Decisions {
            allowed: per_cpu_sum(&self.decisions, 0),
            denied: per_cpu_sum(&self.decisions, 1),
            would_deny: per_cpu_sum(&self.decisions, 2),
        }
    }

    /// Cumulative decisions of rule ids `0..rules` (0: the default), by
    /// verdict; one lookup per id, so call it at metric-scrape pace. Ids
    /// from [`RULE_COUNTERS`] − 1 up share the last counter.
    pub fn rule_decisions(&self, rules: u32) -> Vec<Decisions> {
        (0..rules.min(RULE_COUNTERS))
            .map(|r| Decisions {
                allowed: per_cpu_sum(&self.rule_hits, r * VERDICTS),
                denied: per_cpu_sum(&self.rule_hits, r * VERDICTS + 1),
                would_deny: per_cpu_sum(&self.rule_hits, r * VERDICTS + 2),
            })
            .collect()
    }

    /// Entries in use per map. Counting walks the keys (one syscall each):
    /// call it at metric-scrape pace.
    pub fn map_usage(&self) -> Result<EnforceUsage, EnforceError> {
        let (_, g, _) = self.read_config()?;
        let count_gen = |n: usize, capacity| Usage { used: n, capacity };
        Ok(EnforceUsage {
            locals: count_gen(
                generation_keys(&self.locals, rec::local_key_generation, g).count(),
                LOCAL_CAPACITY,
            ),
            peers4: count_gen(
                self.peer4
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| rec::peer_generation(&k.data()) == g)
                    .count(),
                PEER4_CAPACITY,
            ),
            peers6: count_gen(
                self.peer6
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| rec::peer_generation(&k.data()) == g)
                    .count(),
                PEER6_CAPACITY,
            ),
            pairs: count_gen(
                generation_keys(&self.pairs, rec::pair_key_generation, g).count(),
                PAIR_CAPACITY,
            ),
            tables: count_gen(
                generation_keys(&self.tables, rec::table_key_generation, g).count(),
                TABLE_CAPACITY,
            ),
            exempt: count_gen(self.exempt_keys().len(), EXEMPT_CAPACITY),
            udp_ok: count_gen(
                self.udp_ok.keys().filter(Result::is_ok).count(),
                UDP_OK_CAPACITY,
            ),
        })
    }
}

/// The keys of generation `g` in a generational hash map (one syscall per
/// key walked).
fn generation_keys<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    generation_of: fn(&K) -> u32,
    g: u32,
) -> impl Iterator<Item = K> + '_ {
    map.keys()
        .filter_map(Result::ok)
        .filter(move |k| generation_of(k) == g)
}

/// Removes the entries of generation `g` from a generational hash map;
/// returns how many.
fn clear_hash<K: Pod, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    generation_of: fn(&K) -> u32,
    g: u32,
) -> Result<usize, EnforceError> {
    let keys: Vec<K> = generation_keys(map, generation_of, g).collect();
    for k in &keys {
        map.remove(k)
            .map_err(|e| EnforceError::map(name, "clearing", e))?;
    }
    Ok(keys.len())
}

fn per_cpu_sum(map: &PerCpuArray<MapData, u64>, i: u32) -> u64 {
    map.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0)
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, CaptureError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| CaptureError::load(name, "program missing from the object"))?;
    prog.try_into().map_err(|e| CaptureError::load(name, e))
}

fn link_fd<L>(name: &'static str, link: L) -> Result<FdLink, CaptureError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::error::Error + Send + Sync + 'static,
{
    FdLink::try_from(link).map_err(|e| CaptureError::attach(name, e))
}

/// Makes sure `dir` can hold pins: it must be on bpffs. When nothing is
/// mounted at `/sys/fs/bpf` and `dir` is below it, bpffs is mounted there.
fn ensure_bpffs(dir: &Path) -> Result<(), EnforceError> {
    // f_type's integer type differs between targets, hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let on_bpffs = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
            .unwrap_or(false)
    };
    let default = Path::new("/sys/fs/bpf");
    if dir.starts_with(default) && !on_bpffs(default) {
        nix::mount::mount(
            Some("bpf"),
            default,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| EnforceError::pin(default, format!("mounting bpffs: {e}")))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| EnforceError::pin(dir, e))?;
    if !on_bpffs(dir) {
        return Err(EnforceError::pin(dir, "not on a bpffs mount"));
    }
    Ok(())
}
