//! eBPF flow capture and policy enforcement for the Hallmark agent. Capture:
//! the compiled programs (`bpf/flows.bpf.c`, committed as `bpf/flows.bpf.o`)
//! and their loader.
//!
//! [`Capture::load`] attaches:
//! - TCP lifecycle tracking on `inet_sock_set_state` (`tp_btf`, or `raw_tp`
//!   where BTF tracepoints cannot attach). Each connection this host opens
//!   or accepts yields one [`TcpEvent`] on the ring buffer when it closes or
//!   fails; the initiator comes from the state transition, the cgroup from
//!   the socket.
//! - An `iter/tcp` program behind [`Capture::snapshot`]: open tracked
//!   connections with their counters so far, and every listening socket.
//! - UDP accounting with `cgroup_skb` ingress/egress on the cgroup2 root,
//!   aggregated per (cgroup, 5-tuple) and collected by [`Capture::sweep_udp`].
//!
//! Everything is bounded (ring buffer 4 MiB, 262,144 tracked connections,
//! 65,536 UDP flows) and every drop is counted ([`Capture::drops`]).
//! Dropping the [`Capture`] detaches and unloads everything. Timestamps are
//! CLOCK_MONOTONIC nanoseconds ([`monotonic_now_ns`]).
//!
//! [`Enforcer`] (module `enforce`) is the other half: identity policy
//! enforcement with `cgroup/connect*`, `cgroup/sendmsg*` and
//! `cgroup_skb/ingress` programs from `bpf/enforce.bpf.c`, driven by
//! generation-switched policy maps ([`PolicyImage`]).
//!
//! The objects are embedded with `include_bytes!`, so building this crate
//! needs only cargo; `bpf/build.sh` rebuilds them with clang.
#![forbid(unsafe_code)]

mod enforce;
mod enforce_plan;
mod enforce_records;
mod error;
mod records;
mod sys;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, Iter, RawTracePoint,
};
use aya::{Btf, Ebpf, EbpfLoader};

pub use enforce::{
    Decisions, EnforceDrops, EnforceOptions, EnforceUsage, Enforcer, InstallReport, PolicyImage,
    Usage, EVENT_RING_BYTES, EXEMPT_CAPACITY, LOCAL_CAPACITY, PAIR_CAPACITY, PEER4_CAPACITY,
    PEER6_CAPACITY, RULE_COUNTERS, TABLE_CAPACITY, UDP_OK_CAPACITY,
};
pub use enforce_records::{
    Direction, EnforceEvent, Exempt, Mode, PairKey, Peer, Protocol, Segment, Verdict, MAX_SEGS,
};
pub use error::{CaptureError, EnforceError, Source};
pub use records::{Listener, Outcome, RecordError, TcpEvent, UdpFlow};
pub use sys::{cgroup2_mount, monotonic_now_ns, probe};

use records::{Record, CONN_SIZE, UDP_KEY_SIZE, UDP_VAL_SIZE};

/// The compiled, stripped programs.
static OBJECT: &[u8] = include_bytes!("../bpf/flows.bpf.o");

const PROG_TCP_BTF: &str = "hm_tcp_btf";
const PROG_TCP_RAW: &str = "hm_tcp_raw";
const PROG_TCP_ITER: &str = "hm_tcp_iter";
const PROG_UDP_EGRESS: &str = "hm_udp_egress";
const PROG_UDP_INGRESS: &str = "hm_udp_ingress";
const TRACEPOINT: &str = "inet_sock_set_state";

/// Capacity of the tracked-connection map (`conns` in the C source).
pub const CONN_MAP_MAX: usize = 262_144;
/// Capacity of the UDP flow map (`udp_flows`).
pub const UDP_MAP_MAX: usize = 65_536;
/// Size of the TCP event ring buffer (`events`), 4 MiB.
pub const RING_BYTES: u32 = 4 << 20;

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOptions {
    /// cgroup2 directory the UDP programs attach to (children inherit).
    /// `None`: the cgroup2 mount found in `/proc/self/mountinfo`.
    pub cgroup_root: Option<PathBuf>,
    /// Whether to capture UDP.
    pub udp: bool,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            cgroup_root: None,
            udp: true,
        }
    }
}

/// Sizes and attach choices beyond [`CaptureOptions`], for tests and
/// benchmarks that need small maps (to provoke drops) or the fallback path.
/// The defaults are the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Skip `tp_btf` and attach the raw tracepoint directly.
    pub force_raw_tp: bool,
    /// Capacity of the tracked-connection map.
    pub conn_max: u32,
    /// Capacity of the UDP flow map.
    pub udp_max: u32,
    /// Ring buffer size in bytes: a power of two and a multiple of the page
    /// size.
    pub ring_bytes: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            force_raw_tp: false,
            conn_max: CONN_MAP_MAX as u32,
            udp_max: UDP_MAP_MAX as u32,
            ring_bytes: RING_BYTES,
        }
    }
}

/// How the TCP lifecycle program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpAttach {
    /// A BTF-enabled tracepoint (`tp_btf`), the preferred form.
    BtfTracePoint,
    /// A raw tracepoint (`raw_tp`), the fallback.
    RawTracePoint,
}

impl TcpAttach {
    /// `tp_btf` or `raw_tp`.
    pub fn as_str(self) -> &'static str {
        match self {
            TcpAttach::BtfTracePoint => "tp_btf",
            TcpAttach::RawTracePoint => "raw_tp",
        }
    }
}

/// Cumulative drops by reason, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// TCP events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Connections not tracked because the connection map was full.
    pub conn_map_full: u64,
    /// UDP packets not accounted because the UDP map was full.
    pub udp_map_full: u64,
}

/// Entries in the bounded maps, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapUsage {
    /// Tracked TCP connections.
    pub conn: usize,
    /// Capacity of the connection map.
    pub conn_max: usize,
    /// Live UDP flows.
    pub udp: usize,
    /// Capacity of the UDP map.
    pub udp_max: usize,
}

/// A point-in-time view from the TCP socket iterator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Tracked connections still open: counters so far, `end_ns` = time of
    /// the snapshot, outcome [`Outcome::Established`].
    pub open: Vec<TcpEvent>,
    /// Every listening TCP socket on the host.
    pub listening: Vec<Listener>,
}

type UdpMap = HashMap<MapData, [u8; UDP_KEY_SIZE], [u8; UDP_VAL_SIZE]>;

/// Loaded and attached capture programs and their maps. Dropping it detaches
/// every link and unloads the programs.
pub struct Capture {
    events: RingBuf<MapData>,
    conns: HashMap<MapData, u64, [u8; CONN_SIZE]>,
    udp: UdpMap,
    drops: PerCpuArray<MapData, u64>,
    tcp_attach: TcpAttach,
    udp_enabled: bool,
    tuning: Tuning,
    malformed: u64,
    // Owns the programs and their links: dropped last, detaching them.
    ebpf: Ebpf,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("tcp_attach", &self.tcp_attach)
            .field("udp_enabled", &self.udp_enabled)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Loads and attaches: tp_btf, else raw_tp; the iterator; UDP programs if
    /// `opts.udp`.
    pub fn load(opts: &CaptureOptions) -> Result<Capture, CaptureError> {
        Capture::load_tuned(opts, &Tuning::default())
    }

    /// As [`Capture::load`], with map sizes and the attach path from
    /// `tuning`.
    pub fn load_tuned(opts: &CaptureOptions, tuning: &Tuning) -> Result<Capture, CaptureError> {
        sys::check_btf()?;
        sys::check_permission()?;
        let cgroup = if opts.udp {
            let root = match &opts.cgroup_root {
                Some(p) => p.clone(),
                None => cgroup2_mount().ok_or_else(|| {
                    CaptureError::NoCgroup2("no cgroup2 entry in /proc/self/mountinfo".into())
                })?,
            };
            Some(sys::open_cgroup(&root)?)
        } else {
            None
        };
        let btf = Btf::from_sys_fs().map_err(|e| CaptureError::NoBtf(e.to_string()))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries("conns", tuning.conn_max)
            .map_max_entries("udp_flows", tuning.udp_max)
            .map_max_entries("events", tuning.ring_bytes)
            .load(OBJECT)
            .map_err(|e| CaptureError::load("object", e))?;

        let tcp_attach = attach_tcp(&mut ebpf, &btf, tuning.force_raw_tp)?;
        let iter: &mut Iter = program(&mut ebpf, PROG_TCP_ITER)?;
        iter.load("tcp", &btf)
            .map_err(|e| CaptureError::load(PROG_TCP_ITER, e))?;
        if let Some(cgroup) = &cgroup {
            for (name, kind) in [
                (PROG_UDP_EGRESS, CgroupSkbAttachType::Egress),
                (PROG_UDP_INGRESS, CgroupSkbAttachType::Ingress),
            ] {
                let prog: &mut CgroupSkb = program(&mut ebpf, name)?;
                prog.load().map_err(|e| CaptureError::load(name, e))?;
                // As a bpf_link (kernel >= 5.7) a cgroup attachment always
                // coexists with others (BPF_F_ALLOW_MULTI is implied), and the
                // kernel rejects any flag: the mode here must be `Single`.
                prog.attach(cgroup, kind, CgroupAttachMode::Single)
                    .map_err(|e| CaptureError::attach(name, e))?;
            }
        }

        let events =
            RingBuf::try_from(take_map(&mut ebpf, "events")?).map_err(map_err("events"))?;
        let conns = HashMap::try_from(take_map(&mut ebpf, "conns")?).map_err(map_err("conns"))?;
        let udp =
            HashMap::try_from(take_map(&mut ebpf, "udp_flows")?).map_err(map_err("udp_flows"))?;
        let drops =
            PerCpuArray::try_from(take_map(&mut ebpf, "drops")?).map_err(map_err("drops"))?;
        Ok(Capture {
            events,
            conns,
            udp,
            drops,
            tcp_attach,
            udp_enabled: cgroup.is_some(),
            tuning: *tuning,
            malformed: 0,
            ebpf,
        })
    }

    /// How the TCP program is attached.
    pub fn tcp_attach(&self) -> TcpAttach {
        self.tcp_attach
    }

    /// Whether UDP capture is attached.
    pub fn udp_enabled(&self) -> bool {
        self.udp_enabled
    }

    /// The ring buffer's fd, for readiness polling (tokio `AsyncFd`).
    pub fn ring_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    /// The ring buffer's fd, borrowed for as long as the capture lives
    /// (for `poll(2)`: readable when records wait).
    pub fn ring(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.events)
    }

    /// Drains the ring buffer without blocking, appending events; returns
    /// how many were appended.
    pub fn drain_tcp(&mut self, out: &mut Vec<TcpEvent>) -> usize {
        let before = out.len();
        while let Some(item) = self.events.next() {
            match records::parse_event(&item) {
                Ok(Record::Ended(e)) => out.push(e),
                Ok(_) | Err(_) => self.malformed += 1,
            }
        }
        out.len() - before
    }

    /// Ring buffer records that could not be read (a layout mismatch
    /// between the object and this crate; zero in a consistent build).
    pub fn malformed_records(&self) -> u64 {
        self.malformed
    }

    /// Runs the iterator: open tracked connections and listening sockets.
    pub fn snapshot(&mut self) -> Result<Snapshot, CaptureError> {
        let iter: &mut Iter = program(&mut self.ebpf, PROG_TCP_ITER)?;
        let link = iter
            .attach()
            .and_then(|id| iter.take_link(id))
            .map_err(|e| CaptureError::attach(PROG_TCP_ITER, e))?;
        let mut file: File = link
            .into_file()
            .map_err(|e| CaptureError::attach(PROG_TCP_ITER, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| CaptureError::Snapshot(e.to_string()))?;
        let mut snap = Snapshot::default();
        for rec in
            records::parse_events(&bytes).map_err(|e| CaptureError::Snapshot(e.to_string()))?
        {
            match rec {
                Record::Open(e) => snap.open.push(e),
                Record::Listen(l) => snap.listening.push(l),
                Record::Ended(_) => self.malformed += 1,
            }
        }
        Ok(snap)
    }

    /// UDP flows: removes and returns those idle longer than `idle` at
    /// `now_ns` (`closed = true`); also returns, without removing
    /// (`closed = false`), active ones whose `first_ns` is older than
    /// `now_ns - interim` (`Duration::MAX`: never).
    ///
    /// Before deleting, the entry is read again and kept if `last_ns`
    /// moved; a packet that lands between that re-read and the delete
    /// (a window of one syscall) is lost from the counts.
    pub fn sweep_udp(&mut self, now_ns: u64, idle: Duration, interim: Duration) -> Vec<UdpFlow> {
        let idle_ns = duration_ns(idle);
        let interim_cut = now_ns.checked_sub(duration_ns(interim));
        let entries: Vec<_> = self.udp.iter().filter_map(Result::ok).collect();
        let mut out = Vec::new();
        for (key, val) in entries {
            let last = records::udp_last_ns(&val);
            if now_ns.saturating_sub(last) > idle_ns {
                let Ok(fresh) = self.udp.get(&key, 0) else {
                    continue; // removed meanwhile
                };
                if records::udp_last_ns(&fresh) == last && self.udp.remove(&key).is_ok() {
                    self.push_udp(&mut out, &key, &fresh, true);
                    continue;
                }
            }
            if let Some(cut) = interim_cut {
                if records::parse_udp(&key, &val, false).is_ok_and(|f| f.first_ns < cut) {
                    self.push_udp(&mut out, &key, &val, false);
                }
            }
        }
        out
    }

    fn push_udp(
        &mut self,
        out: &mut Vec<UdpFlow>,
        key: &[u8; UDP_KEY_SIZE],
        val: &[u8; UDP_VAL_SIZE],
        closed: bool,
    ) {
        match records::parse_udp(key, val, closed) {
            Ok(f) => out.push(f),
            Err(_) => self.malformed += 1,
        }
    }

    /// Cumulative drop counts by reason.
    pub fn drops(&self) -> Drops {
        let sum = |i: u32| {
            self.drops
                .get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        Drops {
            ringbuf_full: sum(0),
            conn_map_full: sum(1),
            udp_map_full: sum(2),
        }
    }

    /// Entries in the connection and UDP maps. Counting walks the keys (one
    /// syscall each), so call it at metric-scrape pace, not per event.
    pub fn map_usage(&self) -> MapUsage {
        MapUsage {
            conn: self.conns.keys().filter(Result::is_ok).count(),
            conn_max: self.tuning.conn_max as usize,
            udp: self.udp.keys().filter(Result::is_ok).count(),
            udp_max: self.tuning.udp_max as usize,
        }
    }

    /// Kernel ids of the loaded programs, to check from outside (e.g. with
    /// `bpftool prog`) what this capture has attached.
    pub fn program_ids(&self) -> Vec<u32> {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.info().ok())
            .map(|i| i.id())
            .collect()
    }
}

fn attach_tcp(ebpf: &mut Ebpf, btf: &Btf, force_raw_tp: bool) -> Result<TcpAttach, CaptureError> {
    let btf_err = if force_raw_tp {
        "skipped by request".to_string()
    } else {
        let prog: &mut BtfTracePoint = program(ebpf, PROG_TCP_BTF)?;
        match prog.load(TRACEPOINT, btf).and_then(|()| prog.attach()) {
            Ok(_) => return Ok(TcpAttach::BtfTracePoint),
            Err(e) => {
                // Unload it if it loaded but would not attach; the error
                // that matters is the one above.
                let _ = prog.unload();
                e.to_string()
            }
        }
    };
    let prog: &mut RawTracePoint = program(ebpf, PROG_TCP_RAW)?;
    prog.load()
        .and_then(|()| prog.attach(TRACEPOINT))
        .map(|_| TcpAttach::RawTracePoint)
        .map_err(
            |raw_err| match CaptureError::attach(PROG_TCP_RAW, raw_err) {
                CaptureError::Attach { program, source } => CaptureError::Attach {
                    program,
                    source: format!("{source} (after tp_btf: {btf_err})").into(),
                },
                other => other,
            },
        )
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, CaptureError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| CaptureError::load(name, "program missing from the object"))?;
    prog.try_into().map_err(|e| CaptureError::load(name, e))
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, CaptureError> {
    ebpf.take_map(name)
        .ok_or_else(|| CaptureError::load("object", format!("map {name} missing from the object")))
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> CaptureError {
    move |e| CaptureError::load("object", format!("map {name}: {e}"))
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
