//! Real enforcement on this kernel: loads the programs on the cgroup2 root,
//! puts this process into a fresh enforced cgroup and checks what connect,
//! sendto and inbound traffic do. Needs root (BPF); without it each test says
//! "skipped: needs root" and returns, the only allowed skip.
#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use hallmark_bpf::{
    cgroup2_mount, Capture, CaptureOptions, Direction, EnforceError, EnforceEvent, EnforceOptions,
    Enforcer, Exempt, Mode, PairKey, Peer, PolicyImage, Protocol, Segment, Verdict, LOCAL_CAPACITY,
    TABLE_CAPACITY,
};

/// Enforcement applies host-wide by cgroup: one test at a time.
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

const LOCAL: u32 = 1;
const LOOPBACK: u32 = 100;
const CIDR: u32 = 200;
const EPERM: i32 = 1;

/// A fresh cgroup2 child; `enter` moves this process into it until the
/// guard drops.
struct Cgroup {
    dir: PathBuf,
    id: u64,
}

struct Inside<'a> {
    _cg: &'a Cgroup,
    back_to: PathBuf,
}

impl Cgroup {
    fn new(tag: &str) -> Cgroup {
        let dir = cgroup2_mount()
            .unwrap()
            .join(format!("hallmark-enf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = std::fs::metadata(&dir).unwrap().ino();
        Cgroup { dir, id }
    }

    fn enter(&self) -> Inside<'_> {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let back_to = cgroup2_mount().unwrap().join(rel.trim_start_matches('/'));
        std::fs::write(
            self.dir.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .unwrap();
        Inside { _cg: self, back_to }
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        std::fs::write(
            self.back_to.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A TCP listener outside any enforced cgroup that accepts (and closes)
/// connections in the background.
fn listener(bind: &str) -> u16 {
    let l = TcpListener::bind(bind).unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || for _ in l.incoming() {});
    port
}

fn connect(addr: &str, port: u16) -> std::io::Result<TcpStream> {
    let ip: IpAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_millis(800))
}

fn assert_eperm<T: std::fmt::Debug>(r: std::io::Result<T>) {
    match r {
        Err(e) => assert_eq!(e.raw_os_error(), Some(EPERM), "{e}"),
        Ok(v) => panic!("expected EPERM, got {v:?}"),
    }
}

fn seg(start: u16, verdict: Verdict, rule: u32) -> Segment {
    Segment {
        start,
        verdict,
        rule,
    }
}

/// Segments: every port allowed (rule 7) except `port`, which gets
/// `verdict` with `rule`.
fn only_port(port: u16, verdict: Verdict, rule: u32) -> Vec<Segment> {
    let mut v = vec![seg(0, Verdict::Allow, 7), seg(port, verdict, rule)];
    if let Some(next) = port.checked_add(1) {
        v.push(seg(next, Verdict::Allow, 7));
    }
    v
}

fn pair(remote: u32, protocol: Protocol, direction: Direction) -> PairKey {
    PairKey {
        local: LOCAL,
        remote,
        protocol,
        direction,
    }
}

fn peer(addr: &str, prefix_len: u8, ident: u32) -> Peer {
    Peer {
        addr: addr.parse().unwrap(),
        prefix_len,
        ident,
    }
}

fn image(cg: &Cgroup, default: Verdict, pairs: Vec<(PairKey, Vec<Segment>)>) -> PolicyImage {
    PolicyImage {
        mode: Mode::On,
        default_verdict: default,
        locals: vec![(cg.id, LOCAL)],
        peers: vec![peer("127.0.0.1", 32, LOOPBACK), peer("::1", 128, LOOPBACK)],
        pairs,
        exempt: Vec::new(),
    }
}

fn events(enf: &mut Enforcer) -> Vec<EnforceEvent> {
    let mut out = Vec::new();
    enf.drain_events(&mut out);
    out
}

#[test]
fn egress_tcp_connects_follow_the_policy() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let allowed = listener("0.0.0.0:0");
    let denied = listener("0.0.0.0:0");
    let mut enf = Enforcer::load(&EnforceOptions::default()).unwrap();
    let cg = Cgroup::new("egress");
    let tcp_out = pair(LOOPBACK, Protocol::Tcp, Direction::Egress);
    enf.install(&image(
        &cg,
        Verdict::Allow,
        vec![(tcp_out, only_port(denied, Verdict::Deny, 9))],
    ))
    .unwrap();

    {
        let _in = cg.enter();
        connect("127.0.0.1", allowed).unwrap();
        assert_eperm(connect("127.0.0.1", denied));
        // No peer entry for 127.0.0.2: identity 0, default allow.
        connect("127.0.0.2", denied).unwrap();
    }
    let ev = events(&mut enf);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let e = &ev[0];
    assert_eq!(e.verdict, Verdict::Deny);
    assert_eq!(
        (e.local_ident, e.remote_ident, e.rule),
        (LOCAL, LOOPBACK, 9)
    );
    assert_eq!(e.remote, SocketAddr::from(([127, 0, 0, 1], denied)));
    assert_eq!(
        (e.protocol, e.direction),
        (Protocol::Tcp, Direction::Egress)
    );
    assert_eq!(e.cgroup_id, cg.id);

    // Default deny: the unknown peer is refused with rule 0.
    enf.install(&image(&cg, Verdict::Deny, vec![])).unwrap();
    {
        let _in = cg.enter();
        assert_eperm(connect("127.0.0.2", allowed));
    }
    let ev = events(&mut enf);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!((ev[0].remote_ident, ev[0].rule), (0, 0));

    // A CIDR prefix gives its identity; the /32 inside it still wins.
    let mut img = image(
        &cg,
        Verdict::Deny,
        vec![
            (
                pair(CIDR, Protocol::Tcp, Direction::Egress),
                vec![seg(0, Verdict::Deny, 11)],
            ),
            (tcp_out, vec![seg(0, Verdict::Allow, 12)]),
        ],
    );
    img.peers.push(peer("127.0.0.0", 8, CIDR));
    enf.install(&img).unwrap();
    {
        let _in = cg.enter();
        assert_eperm(connect("127.0.0.3", allowed));
        connect("127.0.0.1", allowed).unwrap();
    }
    let ev = events(&mut enf);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!((ev[0].remote_ident, ev[0].rule), (CIDR, 11));

    // Would-deny lets it through and reports the rule.
    enf.install(&image(
        &cg,
        Verdict::Allow,
        vec![(tcp_out, only_port(denied, Verdict::WouldDeny, 21))],
    ))
    .unwrap();
    {
        let _in = cg.enter();
        connect("127.0.0.1", denied).unwrap();
    }
    let ev = events(&mut enf);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!((ev[0].verdict, ev[0].rule), (Verdict::WouldDeny, 21));

    // Watch turns denies into would-deny; off allows all, silently.
    let deny_img = image(
        &cg,
        Verdict::Allow,
        vec![(tcp_out, only_port(denied, Verdict::Deny, 9))],
    );
    enf.install(&PolicyImage {
        mode: Mode::Watch,
        ..deny_img.clone()
    })
    .unwrap();
    {
        let _in = cg.enter();
        connect("127.0.0.1", denied).unwrap();
    }
    let ev = events(&mut enf);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!((ev[0].verdict, ev[0].rule), (Verdict::WouldDeny, 9));
    enf.set_mode(Mode::Off).unwrap();
    assert_eq!(enf.mode().unwrap(), Mode::Off);
    {
        let _in = cg.enter();
        connect("127.0.0.1", denied).unwrap();
    }
    assert!(events(&mut enf).is_empty());
    enf.set_mode(Mode::On).unwrap();
    {
        let _in = cg.enter();
        assert_eperm(connect("127.0.0.1", denied));
    }
    // A cgroup absent from the locals (this process outside `cg`, as the
    // agent itself is) is never affected.
    connect("127.0.0.1", denied).unwrap();
    assert_eq!(events(&mut enf).len(), 1);
    let d = enf.decisions();
    assert!(
        d.denied >= 4 && d.would_deny >= 2 && d.allowed >= 3,
        "{d:?}"
    );
    // ... and per rule: the default (0), the deny (9, also would-deny in
    // watch mode), the CIDR deny (11), the watch rule (21).
    let r = enf.rule_decisions(22);
    assert_eq!(r.len(), 22);
    assert!(r[0].denied >= 1, "{:?}", r[0]);
    assert!(r[9].denied >= 2 && r[9].would_deny >= 1, "{:?}", r[9]);
    assert!(r[11].denied >= 1 && r[12].allowed >= 1, "{r:?}");
    assert!(r[21].would_deny >= 1 && r[21].denied == 0, "{:?}", r[21]);
    assert_eq!(
        r.iter().map(|d| d.denied).sum::<u64>(),
        d.denied,
        "every decision is counted under its rule"
    );
    assert_eq!(enf.drops().ringbuf_full, 0);
    assert_eq!(enf.malformed_records(), 0);
}

#[test]
fn udp_sendto_replies_and_inbound_datagrams() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_port = server.local_addr().unwrap().port();
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    let mut enf = Enforcer::load(&EnforceOptions::default()).unwrap();
    let cg = Cgroup::new("udp");
    enf.install(&image(
        &cg,
        Verdict::Deny,
        vec![
            (
                pair(LOOPBACK, Protocol::Udp, Direction::Egress),
                only_port(closed_port, Verdict::Deny, 31),
            ),
            (
                pair(LOOPBACK, Protocol::Udp, Direction::Ingress),
                vec![seg(0, Verdict::Deny, 32)],
            ),
        ],
    ))
    .unwrap();
    let (client, connected) = {
        let _in = cg.enter();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        (c, connected)
    };
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let client_addr = client.local_addr().unwrap();

    client.send_to(b"ping", ("127.0.0.1", server_port)).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    server.send_to(b"pong", from).unwrap();
    // The reply passes although ingress from this peer is denied.
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
    assert!(events(&mut enf).is_empty());

    assert_eperm(client.send_to(b"x", ("127.0.0.1", closed_port)));
    assert_eperm(connected.connect(("127.0.0.1", closed_port)));
    // A datagram the client never asked for is dropped.
    stranger.send_to(b"unasked", client_addr).unwrap();
    let err = client.recv_from(&mut buf).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    let ev = events(&mut enf);
    let rules: Vec<_> = ev.iter().map(|e| (e.direction, e.rule)).collect();
    assert_eq!(
        rules,
        vec![
            (Direction::Egress, 31),
            (Direction::Egress, 31),
            (Direction::Ingress, 32)
        ],
        "{ev:#?}"
    );
    assert_eq!(ev[2].local.port(), client_addr.port());
    assert_eq!(ev[2].remote, stranger.local_addr().unwrap());
    assert!(enf.map_usage().unwrap().udp_ok.used >= 1);

    // A dual-stack v6 socket talking to the v4 server through a mapped
    // address: sendto is decided as v4, and the (IPv4) reply passes.
    let dual = {
        let _in = cg.enter();
        UdpSocket::bind("[::]:0").unwrap()
    };
    dual.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    dual.send_to(b"ping6", ("::ffff:127.0.0.1", server_port))
        .unwrap();
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping6");
    server.send_to(b"pong6", from).unwrap();
    let (n, _) = dual.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong6");
    assert_eperm(dual.send_to(b"x", ("::ffff:127.0.0.1", closed_port)));
    let ev = events(&mut enf);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        ev[0].remote,
        SocketAddr::from(([127, 0, 0, 1], closed_port))
    );
}

#[test]
fn ingress_tcp_denies_new_connections_not_established_ones() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let mut enf = Enforcer::load(&EnforceOptions::default()).unwrap();
    let cg = Cgroup::new("ingress");
    let l = {
        let _in = cg.enter();
        TcpListener::bind("127.0.0.1:0").unwrap()
    };
    let port = l.local_addr().unwrap().port();
    let tcp_in = pair(LOOPBACK, Protocol::Tcp, Direction::Ingress);
    let allow = image(
        &cg,
        Verdict::Deny,
        vec![(tcp_in, vec![seg(0, Verdict::Allow, 41)])],
    );
    let deny = image(
        &cg,
        Verdict::Allow,
        vec![(tcp_in, only_port(port, Verdict::Deny, 42))],
    );

    enf.install(&deny).unwrap();
    let err = connect("127.0.0.1", port).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    let ev = events(&mut enf);
    assert!(!ev.is_empty(), "SYN and its retransmissions");
    assert!(ev
        .iter()
        .all(|e| e.rule == 42 && e.direction == Direction::Ingress));
    assert_eq!(ev[0].local.port(), port);

    enf.install(&allow).unwrap();
    let mut c = connect("127.0.0.1", port).unwrap();
    let (mut s, _) = l.accept().unwrap();
    c.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    // Denying new connections leaves this one flowing both ways.
    enf.install(&deny).unwrap();
    for _ in 0..3 {
        c.write_all(b"again").unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"again");
        s.write_all(b"reply").unwrap();
        c.read_exact(&mut buf).unwrap();
    }
    assert!(connect("127.0.0.1", port).is_err());
}

#[test]
fn installs_switch_whole_images_and_overflow_is_refused() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let port = listener("127.0.0.1:0");
    let mut enf = Enforcer::load(&EnforceOptions::default()).unwrap();
    let cg = Cgroup::new("atomic");
    let tcp_out = pair(LOOPBACK, Protocol::Tcp, Direction::Egress);
    let allow = image(
        &cg,
        Verdict::Deny,
        vec![(tcp_out, vec![seg(0, Verdict::Allow, 51)])],
    );
    let deny = image(
        &cg,
        Verdict::Allow,
        vec![(tcp_out, vec![seg(0, Verdict::Deny, 52)])],
    );
    let _in = cg.enter();

    // A background connector: every result is one image's, never another error.
    let stop = Arc::new(AtomicBool::new(false));
    let bg = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut seen = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match connect("127.0.0.1", port) {
                    Ok(_) => seen.0 += 1,
                    Err(e) => {
                        assert_eq!(e.raw_os_error(), Some(EPERM), "{e}");
                        seen.1 += 1;
                    }
                }
                // Paced so the accept queue never overflows on a busy host.
                thread::sleep(Duration::from_millis(1));
            }
            seen
        })
    };
    for i in 0..100 {
        let allowing = i % 2 == 0;
        let r = enf.install(if allowing { &allow } else { &deny }).unwrap();
        assert_eq!(r.generation, (i as u32 + 1) % 2);
        assert_eq!((r.locals, r.pairs), (1, 1));
        let res = connect("127.0.0.1", port);
        if allowing {
            res.unwrap();
        } else {
            assert_eperm(res);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = bg.join().unwrap();
    println!("background connects allowed/denied: {seen:?}");
    let ev = events(&mut enf);
    assert!(
        ev.iter().all(|e| e.rule == 52),
        "only the deny image's rule"
    );

    // In force now: `deny` (the 100th install). Refused images change nothing.
    let segs: Vec<_> = (0..65).map(|p| seg(p * 10, Verdict::Allow, 1)).collect();
    let err = enf
        .install(&image(&cg, Verdict::Allow, vec![(tcp_out, segs)]))
        .unwrap_err();
    assert!(
        matches!(err, EnforceError::TooManySegments { segments: 65, .. }),
        "{err}"
    );
    let mut big = allow.clone();
    big.locals = (0..LOCAL_CAPACITY as u64 + 1)
        .map(|i| (1_000_000 + i, 2))
        .collect();
    let err = enf.install(&big).unwrap_err();
    assert_eq!(err.reason(), "capacity", "{err}");
    let err = enf
        .install(&image(
            &cg,
            Verdict::Allow,
            vec![(
                tcp_out,
                vec![seg(5, Verdict::Allow, 1), seg(5, Verdict::Deny, 1)],
            )],
        ))
        .unwrap_err();
    assert_eq!(err.reason(), "bad-segments", "{err}");
    assert_eperm(connect("127.0.0.1", port));
    let usage = enf.map_usage().unwrap();
    assert_eq!(
        (usage.locals.used, usage.pairs.used, usage.peers4.used),
        (1, 1, 1)
    );
    assert_eq!(usage.locals.capacity, LOCAL_CAPACITY);
}

#[test]
fn pairs_share_port_tables_beyond_one_table_per_pair() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let port = listener("127.0.0.1:0");
    let mut enf = Enforcer::load(&EnforceOptions::default()).unwrap();
    let cg = Cgroup::new("tables");
    // 100 000 pairs (far more than tables could be stored one per pair)
    // over three port tables; the loopback pair uses the one that denies
    // this port with rule 61.
    let tables = [
        only_port(port, Verdict::Deny, 61),
        only_port(22, Verdict::Deny, 62),
        vec![seg(0, Verdict::Allow, 63)],
    ];
    let mut pairs: Vec<_> = (0..100_000u32)
        .map(|i| {
            let remote = 1_000 + i / 2;
            let protocol = if i % 2 == 0 {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            let key = pair(remote, protocol, Direction::Egress);
            (key, tables[(i % 3) as usize].clone())
        })
        .collect();
    let tcp_out = pair(LOOPBACK, Protocol::Tcp, Direction::Egress);
    pairs.push((tcp_out, tables[0].clone()));
    let report = enf.install(&image(&cg, Verdict::Allow, pairs)).unwrap();
    assert_eq!((report.pairs, report.tables), (100_001, 3));
    let usage = enf.map_usage().unwrap();
    assert_eq!((usage.pairs.used, usage.tables.used), (100_001, 3));
    {
        let _in = cg.enter();
        assert_eperm(connect("127.0.0.1", port));
    }
    let ev = events(&mut enf);
    assert!(ev.iter().any(|e| e.rule == 61), "{ev:?}");

    // One table more than the map holds is refused whole, by map name.
    let many: Vec<_> = (0..=TABLE_CAPACITY as u32)
        .map(|i| {
            let key = pair(1_000 + i, Protocol::Tcp, Direction::Egress);
            (key, vec![seg(0, Verdict::Allow, i + 1)])
        })
        .collect();
    let err = enf.install(&image(&cg, Verdict::Allow, many)).unwrap_err();
    assert!(
        matches!(err, EnforceError::Capacity { map: "hm_enf_tables", needed, .. } if needed == TABLE_CAPACITY + 1),
        "{err}"
    );
    // The image in force is untouched.
    let _in = cg.enter();
    assert_eperm(connect("127.0.0.1", port));
    let usage = enf.map_usage().unwrap();
    assert_eq!((usage.pairs.used, usage.tables.used), (100_001, 3));
}

#[test]
fn exemptions_v6_and_v4_mapped() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let v4 = listener("127.0.0.1:0");
    let other = listener("127.0.0.1:0");
    let v6 = listener("[::]:0");
    let mut enf = Enforcer::load(&EnforceOptions::default()).unwrap();
    let cg = Cgroup::new("v6");
    let mut img = image(&cg, Verdict::Deny, vec![]);
    img.exempt.push(Exempt {
        addr: "127.0.0.1".parse().unwrap(),
        port: v4,
        protocol: Protocol::Tcp,
        direction: Direction::Egress,
    });
    enf.install(&img).unwrap();
    {
        let _in = cg.enter();
        connect("127.0.0.1", v4).unwrap();
        assert_eperm(connect("127.0.0.1", other));
        assert_eperm(connect("::1", v6));
        // A v6 socket to ::ffff:127.0.0.1 is decided as the v4 peer: the
        // exemption for 127.0.0.1 applies.
        connect("::ffff:127.0.0.1", v4).unwrap();
        assert_eperm(connect("::ffff:127.0.0.1", other));
    }
    let ev = events(&mut enf);
    assert_eq!(ev.len(), 3, "{ev:#?}");
    assert_eq!(ev[1].remote, SocketAddr::new("::1".parse().unwrap(), v6));
    assert_eq!(ev[1].remote_ident, LOOPBACK);
    assert_eq!(ev[2].remote, SocketAddr::from(([127, 0, 0, 1], other)));
    assert_eq!(ev[2].remote_ident, LOOPBACK);

    // Port 0: every port of the address; allow v6 to ::1 by a pair.
    img.exempt[0].port = 0;
    img.pairs.push((
        pair(LOOPBACK, Protocol::Tcp, Direction::Egress),
        vec![seg(0, Verdict::Allow, 61)],
    ));
    img.exempt.push(Exempt {
        addr: "::1".parse().unwrap(),
        port: 1,
        protocol: Protocol::Tcp,
        direction: Direction::Egress,
    });
    let r = enf.install(&img).unwrap();
    assert_eq!(r.exempt, 2);
    {
        let _in = cg.enter();
        connect("127.0.0.1", other).unwrap();
        connect("::1", v6).unwrap();
    }
    assert!(events(&mut enf).is_empty());
    assert_eq!(enf.map_usage().unwrap().exempt.used, 2);
}

#[test]
fn the_sockets_cgroup_decides_not_the_callers() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let denied = listener("127.0.0.1:0");
    let mut enf = Enforcer::load(&EnforceOptions::default()).unwrap();
    let cg = Cgroup::new("owner");
    enf.install(&image(
        &cg,
        Verdict::Allow,
        vec![(
            pair(LOOPBACK, Protocol::Tcp, Direction::Egress),
            only_port(denied, Verdict::Deny, 91),
        )],
    ))
    .unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], denied));
    let new_socket = || {
        nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::empty(),
            None,
        )
        .unwrap()
    };
    let connect_fd = |fd: &std::os::fd::OwnedFd| {
        use std::os::fd::AsRawFd;
        nix::sys::socket::connect(
            fd.as_raw_fd(),
            &nix::sys::socket::SockaddrIn::from(match to {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => unreachable!(),
            }),
        )
    };
    // Created inside the enforced cgroup, connected from outside: denied.
    let inside = {
        let _in = cg.enter();
        new_socket()
    };
    assert_eq!(connect_fd(&inside), Err(nix::errno::Errno::EPERM));
    // Created outside, connected from inside: not enforced.
    let outside = new_socket();
    {
        let _in = cg.enter();
        connect_fd(&outside).unwrap();
    }
    let ev = events(&mut enf);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!((ev[0].cgroup_id, ev[0].rule), (cg.id, 91));
}

/// Programs named `hm_enf_*` loaded in the kernel.
fn enforcement_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("hm_enf_")))
        .map(|p| p.id())
        .collect()
}

fn settles_to(n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = enforcement_programs().len();
        if now == n || Instant::now() > deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn coexists_with_capture_on_the_same_cgroup() {
    let _g = serial();
    if !is_root() {
        return;
    }
    let port = listener("127.0.0.1:0");
    let denied = listener("127.0.0.1:0");
    let mut cap = Capture::load(&CaptureOptions::default()).unwrap();
    let mut enf = Enforcer::load(&EnforceOptions::default()).unwrap();
    let cg = Cgroup::new("coexist");
    enf.install(&image(
        &cg,
        Verdict::Allow,
        vec![(
            pair(LOOPBACK, Protocol::Tcp, Direction::Egress),
            only_port(denied, Verdict::Deny, 71),
        )],
    ))
    .unwrap();
    let local = {
        let _in = cg.enter();
        assert_eperm(connect("127.0.0.1", denied));
        let c = connect("127.0.0.1", port).unwrap();
        c.local_addr().unwrap()
    };
    assert_eq!(events(&mut enf).len(), 1);
    // Capture still sees the allowed connection close.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut tcp = Vec::new();
    while Instant::now() < deadline
        && !tcp
            .iter()
            .any(|e: &hallmark_bpf::TcpEvent| e.local == local)
    {
        cap.drain_tcp(&mut tcp);
        thread::sleep(Duration::from_millis(10));
    }
    let ours = tcp
        .iter()
        .find(|e| e.local == local)
        .expect("capture's event");
    assert_eq!(ours.cgroup_id, cg.id);
}

#[test]
fn pinned_enforcement_outlives_the_enforcer_and_is_taken_over() {
    let _g = serial();
    if !is_root() {
        return;
    }
    assert_eq!(
        settles_to(0),
        0,
        "no enforcement programs left by other tests"
    );
    let denied = listener("127.0.0.1:0");
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/hallmark-enf-test-{}",
        std::process::id()
    ));
    let opts = EnforceOptions {
        cgroup: None,
        pin_dir: Some(pin_dir.clone()),
    };
    let cg = Cgroup::new("pinned");
    let mut enf = Enforcer::load(&opts).unwrap();
    assert!(!enf.taken_over());
    let first = enf.program_ids();
    assert_eq!(first.len(), 5);
    enf.install(&image(
        &cg,
        Verdict::Allow,
        vec![(
            pair(LOOPBACK, Protocol::Tcp, Direction::Egress),
            only_port(denied, Verdict::Deny, 81),
        )],
    ))
    .unwrap();
    drop(enf);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(settles_to(5), 5, "the pinned links keep the programs");
    {
        let _in = cg.enter();
        assert_eperm(connect("127.0.0.1", denied));
    }

    let mut enf = Enforcer::load(&opts).unwrap();
    assert!(enf.taken_over());
    let mut second = enf.program_ids();
    second.sort_unstable();
    let mut first_sorted = first.clone();
    first_sorted.sort_unstable();
    assert_eq!(second, first_sorted, "the same programs, not a second set");
    assert_eq!(enforcement_programs().len(), 5);
    // The event of the connect made while no Enforcer existed waited in
    // the pinned ring buffer.
    let ev = events(&mut enf);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0].rule, 81);
    assert_eq!(enf.mode().unwrap(), Mode::On);

    enf.unpin_and_detach().unwrap();
    assert_eq!(settles_to(0), 0);
    assert!(!pin_dir.exists());
    let _in = cg.enter();
    connect("127.0.0.1", denied).unwrap();
}
