//! Real capture on this kernel: loads the programs, makes loopback traffic
//! and checks the records. Needs root (BPF); without it each test says
//! "skipped: needs root" and returns, the only allowed skip.
#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use hallmark_bpf::{
    cgroup2_mount, monotonic_now_ns, Capture, CaptureOptions, Drops, Outcome, TcpAttach, TcpEvent,
    Tuning,
};

/// Captures see every socket on the host: one test at a time keeps their
/// traffic and their program counts apart.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    println!("skipped: needs root");
    false
}

fn load() -> Capture {
    Capture::load(&CaptureOptions::default()).unwrap()
}

/// The inode of this process's cgroup2 directory: what BPF reports as its
/// cgroup id.
fn own_cgroup_id() -> u64 {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 (0::) line in /proc/self/cgroup");
    let dir: PathBuf = cgroup2_mount().unwrap().join(rel.trim_start_matches('/'));
    std::fs::metadata(&dir).unwrap().ino()
}

/// Drains until `done` holds for the events collected, or `within` passes.
fn collect(
    cap: &mut Capture,
    within: Duration,
    done: impl Fn(&[TcpEvent]) -> bool,
) -> Vec<TcpEvent> {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    loop {
        cap.drain_tcp(&mut all);
        if done(&all) || Instant::now() > deadline {
            return all;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn between(events: &[TcpEvent], a: SocketAddr, b: SocketAddr) -> Vec<TcpEvent> {
    events
        .iter()
        .filter(|e| (e.local == a && e.remote == b) || (e.local == b && e.remote == a))
        .cloned()
        .collect()
}

/// Client sends 100,000 bytes to a server at `bind`, the server answers
/// 5,000, both close; returns (client address, server address as the client
/// saw it).
fn exchange(bind: &str) -> (SocketAddr, SocketAddr) {
    let listener = TcpListener::bind(bind).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&[7u8; 5_000]).unwrap();
        got.len()
    });
    let connect_to: SocketAddr = if bind.starts_with("[::]") {
        ([127, 0, 0, 1], port).into()
    } else {
        let mut a: SocketAddr = bind.parse().unwrap();
        a.set_port(port);
        a
    };
    let mut c = TcpStream::connect(connect_to).unwrap();
    let client_addr = c.local_addr().unwrap();
    c.write_all(&[1u8; 100_000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    drop(c);
    assert_eq!(server.join().unwrap(), 100_000);
    assert_eq!(back.len(), 5_000);
    (client_addr, connect_to)
}

/// Checks the two closed events of an [`exchange`].
fn assert_exchange(cap: &mut Capture, client_addr: SocketAddr, server_addr: SocketAddr) {
    let events = collect(cap, Duration::from_secs(2), |all| {
        between(all, client_addr, server_addr).len() >= 2
    });
    let ours = between(&events, client_addr, server_addr);
    assert_eq!(ours.len(), 2, "{ours:#?}");
    let cg = own_cgroup_id();
    let client = ours
        .iter()
        .find(|e| e.initiated)
        .expect("the client's event");
    let server = ours
        .iter()
        .find(|e| !e.initiated)
        .expect("the server's event");
    assert_eq!((client.local, client.remote), (client_addr, server_addr));
    assert_eq!((server.local, server.remote), (server_addr, client_addr));
    assert_eq!((client.bytes_sent, client.bytes_received), (100_000, 5_000));
    assert_eq!((server.bytes_sent, server.bytes_received), (5_000, 100_000));
    for e in [client, server] {
        assert_eq!(e.cgroup_id, cg);
        assert_eq!(e.outcome, Outcome::Established);
        assert!(e.start_ns <= e.end_ns && e.end_ns <= monotonic_now_ns());
        assert!(e.packets_sent > 0 && e.packets_received > 0);
        assert_ne!(e.sock, 0);
    }
    assert_ne!(client.sock, server.sock);
    assert_eq!(cap.drops(), Drops::default());
    assert_eq!(cap.malformed_records(), 0);
}

#[test]
fn loopback_tcp_gives_one_closed_event_per_side() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let mut cap = load();
    assert_eq!(cap.tcp_attach(), TcpAttach::BtfTracePoint);
    let (client, server) = exchange("127.0.0.1:0");
    assert_exchange(&mut cap, client, server);

    // Again from a cgroup of its own, so the id is not the root's.
    let cg = ChildCgroup::enter();
    assert_ne!(own_cgroup_id(), 1);
    assert_eq!(own_cgroup_id(), cg.id);
    let (client, server) = exchange("127.0.0.1:0");
    assert_exchange(&mut cap, client, server);
}

/// Moves this process into a fresh cgroup2 child for its lifetime.
struct ChildCgroup {
    dir: PathBuf,
    back_to: PathBuf,
    id: u64,
}

impl ChildCgroup {
    fn enter() -> ChildCgroup {
        let root = cgroup2_mount().unwrap();
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let back_to = root.join(rel.trim_start_matches('/'));
        let dir = root.join(format!("hallmark-bpf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).unwrap();
        let id = std::fs::metadata(&dir).unwrap().ino();
        ChildCgroup { dir, back_to, id }
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.back_to.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn raw_tracepoint_fallback_gives_the_same_events() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let tuning = Tuning {
        force_raw_tp: true,
        ..Tuning::default()
    };
    let mut cap = Capture::load_tuned(&CaptureOptions::default(), &tuning).unwrap();
    assert_eq!(cap.tcp_attach(), TcpAttach::RawTracePoint);
    assert_eq!(cap.tcp_attach().as_str(), "raw_tp");
    let (client, server) = exchange("127.0.0.1:0");
    assert_exchange(&mut cap, client, server);
}

#[test]
fn ipv6_and_v4_mapped_connections() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let mut cap = load();
    let (client, server) = exchange("[::1]:0");
    assert!(client.is_ipv6() && server.is_ipv6());
    assert_exchange(&mut cap, client, server);
    // A dual-stack listener accepting an IPv4 client: the accepted socket
    // is AF_INET6 with v4-mapped addresses, reported as IPv4.
    let (client, server) = exchange("[::]:0");
    assert!(client.is_ipv4() && server.is_ipv4());
    assert_exchange(&mut cap, client, server);
}

#[test]
fn refused_connect_gives_a_failed_event() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let mut cap = load();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let events = collect(&mut cap, Duration::from_secs(2), |all| {
        all.iter().any(|e| e.remote.port() == port)
    });
    let ours: Vec<_> = events.iter().filter(|e| e.remote.port() == port).collect();
    assert_eq!(ours.len(), 1, "{ours:#?}");
    let e = ours[0];
    assert_eq!(e.outcome, Outcome::Refused);
    assert!(e.initiated);
    assert_eq!(e.remote, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_ne!(e.local.port(), 0, "the bound port survives inet_put_port");
    assert_eq!(e.cgroup_id, own_cgroup_id());
    assert_eq!((e.bytes_sent, e.bytes_received), (0, 0));
}

#[test]
fn unanswered_connect_gives_a_timed_out_event() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let mut cap = load();
    // A listener whose accept queue (backlog 0) is full drops further SYNs,
    // so a second connect stays in SYN_SENT until it is given up.
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let listener = TcpListener::from(fd);
    let addr = listener.local_addr().unwrap();
    let _queued = TcpStream::connect(addr).unwrap();
    thread::sleep(Duration::from_millis(50));
    let err = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");

    let events = collect(&mut cap, Duration::from_secs(2), |all| {
        all.iter()
            .any(|e| e.remote == addr && e.outcome == Outcome::TimedOut)
    });
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.remote == addr && e.outcome == Outcome::TimedOut)
        .collect();
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert!(failed[0].initiated);
    assert_eq!(failed[0].cgroup_id, own_cgroup_id());
    assert!(
        failed[0].end_ns - failed[0].start_ns >= 250_000_000,
        "{:?}",
        failed[0]
    );
}

#[test]
fn linger_zero_close_resets_the_peer() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let mut cap = load();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = listener.local_addr().unwrap();
    let mut c = TcpStream::connect(server_addr).unwrap();
    let client_addr = c.local_addr().unwrap();
    let (s, _) = listener.accept().unwrap();
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &linger).unwrap();
    drop(s); // sends RST
    let mut buf = [0u8; 16];
    let err = c.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    drop(c);

    let events = collect(&mut cap, Duration::from_secs(2), |all| {
        between(all, client_addr, server_addr).len() >= 2
    });
    let ours = between(&events, client_addr, server_addr);
    let client = ours
        .iter()
        .find(|e| e.initiated)
        .expect("the client's event");
    assert_eq!(client.outcome, Outcome::Reset);
    // The side that aborted closes without an error of its own.
    let server = ours
        .iter()
        .find(|e| !e.initiated)
        .expect("the server's event");
    assert_eq!(server.outcome, Outcome::Established);
}

#[test]
fn snapshot_shows_open_connections_and_listeners() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let mut cap = load();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = listener.local_addr().unwrap();
    let mut c = TcpStream::connect(server_addr).unwrap();
    let client_addr = c.local_addr().unwrap();
    let (mut s, _) = listener.accept().unwrap();
    c.write_all(&[3u8; 1_000]).unwrap();
    let mut buf = vec![0u8; 1_000];
    s.read_exact(&mut buf).unwrap();

    let cg = own_cgroup_id();
    let deadline = Instant::now() + Duration::from_secs(2);
    let snap = loop {
        let snap = cap.snapshot().unwrap();
        let acked = snap
            .open
            .iter()
            .any(|e| e.local == client_addr && e.bytes_sent == 1_000);
        if acked || Instant::now() > deadline {
            break snap;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let ours = between(&snap.open, client_addr, server_addr);
    assert_eq!(ours.len(), 2, "{ours:#?}");
    let usage = cap.map_usage();
    assert!(usage.conn >= 2, "{usage:?}");
    assert_eq!((usage.conn_max, usage.udp_max), (262_144, 65_536));
    let client = ours.iter().find(|e| e.initiated).expect("client side");
    let server = ours.iter().find(|e| !e.initiated).expect("server side");
    assert_eq!(client.local, client_addr);
    assert_eq!(client.bytes_sent, 1_000);
    assert_eq!(server.bytes_received, 1_000);
    for e in [client, server] {
        assert_eq!(e.outcome, Outcome::Established);
        assert_eq!(e.cgroup_id, cg);
        assert!(e.start_ns <= e.end_ns);
    }
    let l = snap
        .listening
        .iter()
        .find(|l| l.local == server_addr)
        .expect("the listener");
    assert_eq!(l.cgroup_id, cg);

    // Closing afterwards still yields the final records, same keys.
    drop(c);
    drop(s);
    let events = collect(&mut cap, Duration::from_secs(2), |all| {
        between(all, client_addr, server_addr).len() >= 2
    });
    let closed: HashSet<u64> = between(&events, client_addr, server_addr)
        .iter()
        .map(|e| e.sock)
        .collect();
    let open: HashSet<u64> = ours.iter().map(|e| e.sock).collect();
    assert_eq!(closed, open);
}

/// A 300-byte request from `a` and a 40-byte reply, swept as two flows.
fn udp_request_reply(cap: &mut Capture, bind: &str) {
    let a = UdpSocket::bind(bind).unwrap();
    let b = UdpSocket::bind(bind).unwrap();
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    a.send_to(&[1u8; 300], ba).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!((n, from), (300, aa));
    b.send_to(&[2u8; 40], aa).unwrap();
    assert_eq!(a.recv(&mut buf).unwrap(), 40);

    let ours = |flows: &[hallmark_bpf::UdpFlow]| -> Vec<hallmark_bpf::UdpFlow> {
        flows
            .iter()
            .filter(|f| (f.local == aa && f.remote == ba) || (f.local == ba && f.remote == aa))
            .cloned()
            .collect()
    };
    // Interim: reported, not removed.
    let now = monotonic_now_ns();
    let interim = ours(&cap.sweep_udp(now, Duration::from_secs(3600), Duration::ZERO));
    assert_eq!(interim.len(), 2, "{interim:#?}");
    assert!(interim.iter().all(|f| !f.closed));
    assert!(ours(&cap.sweep_udp(now, Duration::from_secs(3600), Duration::MAX)).is_empty());

    let flows = ours(&cap.sweep_udp(monotonic_now_ns(), Duration::ZERO, Duration::MAX));
    assert_eq!(flows.len(), 2, "{flows:#?}");
    let cg = own_cgroup_id();
    let sender = flows
        .iter()
        .find(|f| f.local == aa)
        .expect("the sender's flow");
    let replier = flows
        .iter()
        .find(|f| f.local == ba)
        .expect("the replier's flow");
    assert!(sender.initiated);
    assert!(!replier.initiated);
    assert_eq!((sender.bytes_sent, sender.packets_sent), (300, 1));
    assert_eq!((sender.bytes_received, sender.packets_received), (40, 1));
    assert_eq!((replier.bytes_sent, replier.bytes_received), (40, 300));
    for f in [sender, replier] {
        assert!(f.closed);
        assert_eq!(f.cgroup_id, cg);
        assert!(f.first_ns <= f.last_ns);
    }
    // Removed: a second sweep no longer has them.
    assert!(ours(&cap.sweep_udp(monotonic_now_ns(), Duration::ZERO, Duration::MAX)).is_empty());
    assert_eq!(cap.drops().udp_map_full, 0);
}

#[test]
fn udp_request_reply_gives_one_flow_per_socket_side() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let mut cap = load();
    assert!(cap.udp_enabled());
    udp_request_reply(&mut cap, "127.0.0.1:0");
    udp_request_reply(&mut cap, "[::1]:0");
}

#[test]
fn udp_can_be_left_out() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let opts = CaptureOptions {
        cgroup_root: None,
        udp: false,
    };
    let mut cap = Capture::load(&opts).unwrap();
    assert!(!cap.udp_enabled());
    assert_eq!(
        cap.program_ids().len(),
        2,
        "TCP lifecycle and iterator only"
    );
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.send_to(b"x", a.local_addr().unwrap()).unwrap();
    assert!(cap
        .sweep_udp(monotonic_now_ns(), Duration::ZERO, Duration::ZERO)
        .is_empty());
    assert_eq!(cap.map_usage().udp, 0);
}

/// Links (not iterator ones) whose program is one of `ids`.
fn links_of(ids: &[u32]) -> usize {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| ids.contains(&l.program_id()))
        .count()
}

/// Waits up to 2 s for `f` to reach zero: the kernel frees links and
/// programs after an RCU grace period, not at the close() itself.
fn settles_to_zero(f: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = f();
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn programs_alive(ids: &[u32]) -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .count()
}

#[test]
fn drop_detaches_everything_and_reload_does_not_duplicate() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let cap = load();
    let first = cap.program_ids();
    // TCP lifecycle + iterator + UDP egress and ingress.
    assert_eq!(first.len(), 4, "{first:?}");
    assert_eq!(programs_alive(&first), 4);
    assert_eq!(links_of(&first), 3, "tcp and two cgroup links");
    // Snapshots attach the iterator for one read each: no link stays.
    let mut cap = cap;
    cap.snapshot().unwrap();
    cap.snapshot().unwrap();
    assert_eq!(settles_to_zero(|| links_of(&first).saturating_sub(3)), 0);
    drop(cap);
    assert_eq!(settles_to_zero(|| links_of(&first)), 0);
    assert_eq!(settles_to_zero(|| programs_alive(&first)), 0);
    if let Ok(out) = Command::new("bpftool").args(["link", "list"]).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        for id in &first {
            assert!(!text.contains(&format!("prog {id} ")), "{text}");
        }
    }

    let cap = load();
    let second = cap.program_ids();
    assert_eq!(links_of(&second), 3);
    assert_eq!(links_of(&first), 0);
    drop(cap);
    assert_eq!(settles_to_zero(|| links_of(&second)), 0);
}

#[test]
fn committed_object_matches_its_source() {
    // Runs for everyone: without clang the script says it skipped.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/build.sh");
    let out = Command::new("bash")
        .args([script, "--check"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("up to date") || text.contains("skipped"),
        "{text}"
    );
}

#[test]
fn full_maps_and_ring_buffer_count_their_drops() {
    let _g = serial();
    if !is_root() {
        return;
    }
    // One page of ring buffer holds about 34 events; 2 connection slots.
    let tuning = Tuning {
        conn_max: 2,
        udp_max: 1,
        ring_bytes: 4096,
        ..Tuning::default()
    };
    let cap = Capture::load_tuned(&CaptureOptions::default(), &tuning).unwrap();

    // Three connections open at once need six slots.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held: Vec<_> = (0..3)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            let (s, _) = listener.accept().unwrap();
            (c, s)
        })
        .collect();
    assert!(cap.drops().conn_map_full >= 4, "{:?}", cap.drops());
    drop(held);

    // Two UDP flows, one slot.
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.send_to(b"x", b.local_addr().unwrap()).unwrap();
    b.send_to(b"y", a.local_addr().unwrap()).unwrap();
    assert!(cap.drops().udp_map_full >= 1, "{:?}", cap.drops());

    // Sequential connections (tracked: each closes before the next opens)
    // overflow the undrained ring buffer; every lost event is counted.
    let mut cap = Capture::load_tuned(
        &CaptureOptions::default(),
        &Tuning {
            ring_bytes: 4096,
            ..Tuning::default()
        },
    )
    .unwrap();
    let mut ours = HashSet::new();
    for _ in 0..50 {
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = listener.accept().unwrap();
        ours.insert(c.local_addr().unwrap());
        drop(c);
        drop(s);
    }
    thread::sleep(Duration::from_millis(200));
    let mut events = Vec::new();
    cap.drain_tcp(&mut events);
    let seen = events
        .iter()
        .filter(|e| ours.contains(&e.local) || ours.contains(&e.remote))
        .count() as u64;
    let dropped = cap.drops().ringbuf_full;
    assert!(dropped > 0, "a 4 KiB ring cannot hold 100 events");
    assert!(
        seen + dropped >= 100,
        "seen {seen} + dropped {dropped} < 100"
    );
}

#[test]
fn without_capabilities_probe_and_load_say_why() {
    const CHILD: &str = "HALLMARK_BPF_PROBE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // The unprivileged child: report, the parent asserts.
        let probe = hallmark_bpf::probe().map_err(|e| e.reason());
        let load = Capture::load(&CaptureOptions::default())
            .map(|_| ())
            .map_err(|e| (e.reason(), e.to_string()));
        println!("probe={probe:?} load={load:?}");
        return;
    }
    let _g = serial();
    if !is_root() {
        return;
    }
    // Root with an empty bounding set keeps no capabilities across exec.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_capabilities_probe_and_load_say_why",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(r#"probe=Err("no-permission")"#), "{text}");
    assert!(
        text.contains(
            r#"load=Err(("no-permission", "BPF not permitted (needs CAP_BPF+CAP_PERFMON or root)"#
        ),
        "{text}"
    );
}

#[test]
fn each_socket_carries_its_own_cgroup_not_the_current_tasks() {
    const CHILD_CG: &str = "HALLMARK_BPF_CLIENT_CGROUP";
    const CHILD_TO: &str = "HALLMARK_BPF_CLIENT_TO";
    if let (Some(cg), Some(to)) = (std::env::var_os(CHILD_CG), std::env::var_os(CHILD_TO)) {
        // The client process: join its cgroup, then connect.
        std::fs::write(
            PathBuf::from(cg).join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .unwrap();
        let to: SocketAddr = to.to_str().unwrap().parse().unwrap();
        let mut c = TcpStream::connect(to).unwrap();
        c.write_all(&[5u8; 1_000]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        println!("client={}", c.local_addr().unwrap());
        return;
    }
    let _g = serial();
    if !is_root() {
        return;
    }
    let mut cap = load();
    let dir = cgroup2_mount()
        .unwrap()
        .join(format!("hallmark-bpf-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let client_cg = std::fs::metadata(&dir).unwrap().ino();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = listener.local_addr().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "each_socket_carries_its_own_cgroup_not_the_current_tasks",
            "--nocapture",
        ])
        .env(CHILD_CG, &dir)
        .env(CHILD_TO, server_addr.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    s.write_all(b"ok").unwrap();
    drop(s);
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let client_addr: SocketAddr = text
        .lines()
        .find_map(|l| l.strip_prefix("client="))
        .expect("the client's address")
        .parse()
        .unwrap();
    assert_eq!(got.len(), 1_000);

    let events = collect(&mut cap, Duration::from_secs(2), |all| {
        between(all, client_addr, server_addr).len() >= 2
    });
    let ours = between(&events, client_addr, server_addr);
    let client = ours
        .iter()
        .find(|e| e.initiated)
        .expect("the client's event");
    let server = ours
        .iter()
        .find(|e| !e.initiated)
        .expect("the server's event");
    assert_ne!(client_cg, own_cgroup_id());
    assert_eq!(client.cgroup_id, client_cg);
    assert_eq!(server.cgroup_id, own_cgroup_id());
    assert_eq!((client.bytes_sent, server.bytes_received), (1_000, 1_000));
}
