//! Identity policy enforced in the kernel, end to end: a real server, an
//! agent with `--enforcement on`, real eBPF and real Docker containers.
//!
//! - A (`app=web`) connects to B (`payments-db`) on 5432: allowed.
//! - A connects to B on 22: the policy's default denies; `connect()`
//!   fails with EPERM.
//! - C (no group) connects to B on 5432: denied.
//! - A watch-mode deny rule in front of an allow lets A → B:8080 through,
//!   and the kernel counts it as would-deny.
//! - Those two are flows with the kernel's verdict and rule (`denied`,
//!   `refused` with 0 bytes; `would-deny` by the watch rule).
//! - Ingress: the node (in no group) connecting into B is dropped; B's
//!   own allowed connection to A gets its answers.
//! - UDP: a datagram the policy denies is not delivered; an allowed one is.
//! - A policy change is in force at the next connect: p99 over 100
//!   changes under a second.
//! - IP reuse: B stops, D (`cache`) starts on B's address; A's permission
//!   for B never carries over to D, and D's own rules apply.
//! - `hallmark policy enforcement off` lifts it within a second; `on`
//!   puts it back.
//! - `agent status` shows the mode, the revision in the kernel and that
//!   the maps are pinned.
//!
//! A second test kills an agent that pins (`--on-agent-exit keep`): the
//! policy stays enforced while no agent runs, a denied connect tried every
//! few milliseconds never gets through, and the restarted agent takes the
//! pinned programs over (one set of programs in the kernel afterwards).

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::time::{Duration, Instant};

use common::containers::*;
use common::flows::*;
use common::*;

const TD: &str = "enforce.test";

/// The test's policy: `gateway` is the Docker network's gateway (the
/// node, as the containers see it).
fn policy(gateway: &str, extra_rule: &str) -> String {
    format!(
        "groups:
  web:
    - selector: docker:label:app:web
  payments-db:
    - selector: docker:label:app:payments-db
  cache:
    - selector: docker:label:app:cache
  gateway:
    - cidr: {gateway}/32
rules:
  - name: web-to-db
    from: [web]
    to: [payments-db]
    protocol: tcp
    ports: [\"5432\"]
    action: allow
  - name: web-to-db-admin-allowed
    from: [web]
    to: [payments-db]
    protocol: tcp
    ports: [\"8080\"]
    action: allow
    priority: 2000
  - name: web-to-db-admin
    from: [web]
    to: [payments-db]
    protocol: tcp
    ports: [\"8080\"]
    action: deny
    mode: watch
  - name: db-calls-web
    from: [payments-db]
    to: [web]
    protocol: tcp
    ports: [\"7000\"]
    action: allow
  - name: web-to-cache
    from: [web]
    to: [cache]
    protocol: tcp
    ports: [\"6379\"]
    action: allow
  - name: web-logs-to-gateway
    from: [web]
    to: [gateway]
    protocol: udp
    ports: [\"{UDP_ALLOWED}\"]
    action: allow
{extra_rule}default: deny
"
    )
}

/// A rule that opens web → payments-db on 22.
const SSH_RULE: &str = "  - name: web-to-db-ssh
    from: [web]
    to: [payments-db]
    protocol: tcp
    ports: [\"22\"]
    action: allow
";

/// UDP ports on the node: the policy lets web send to the first only.
const UDP_ALLOWED: u16 = 16969;
const UDP_DENIED: u16 = 16970;

/// The kernel programs see every container of the machine: the tests
/// that enforce run one at a time (the capture tests do not enforce).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn exec(c: &DockerContainer, script: &str) -> Output {
    docker(&["exec", &c.name, "/busybox", "sh", "-c", script])
}

/// One connect from `c` to `to` (`IP PORT`): `Ok` when it connected,
/// `Err` with the output when not.
fn connect(c: &DockerContainer, to: &str) -> Result<(), Output> {
    let out = exec(c, &format!("echo hi | nc -w 2 {to}"));
    if out.success() {
        Ok(())
    } else {
        Err(out)
    }
}

/// A shell kept open in a container: a connect from it costs a fork, not
/// a `docker exec`, so it can be repeated every few milliseconds.
struct Shell {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Shell {
    fn open(c: &DockerContainer) -> Shell {
        use std::process::{Command, Stdio};
        let mut child = Command::new("docker")
            .args(["exec", "-i", &c.name, "/busybox", "sh"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Shell { child, stdin, out }
    }

    /// Connects to `to` (`IP PORT`), sends a line and reads it back:
    /// whether the answer came (the connection and its replies passed).
    fn echo(&mut self, to: &str) -> bool {
        use std::io::{BufRead, Write};
        writeln!(
            self.stdin,
            "if echo hi | nc -w 1 {to} 2>/dev/null | grep -q hi; then echo OK; else echo NO; fi"
        )
        .unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        match line.trim() {
            "OK" => true,
            "NO" => false,
            other => panic!("the shell in the container answered {other:?}"),
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a TCP connection from this (host) process to `addr` opens.
fn host_connects(addr: &str) -> std::io::Result<()> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).map(drop)
}

/// Sends one TFTP request (a UDP datagram; busybox's nc has no UDP) from
/// `c` to `ip:port`.
fn send_udp(c: &DockerContainer, ip: &str, port: u16) -> Output {
    exec(
        c,
        &format!("timeout 2 tftp -g -r hm-probe -l /dev/null {ip} {port}; true"),
    )
}

/// The first datagram `socket` receives within `wait`.
fn received(socket: &std::net::UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1500];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

fn apply(server: &TestServer, text: &str) {
    let file = server.dir.path().join("policy.yaml");
    std::fs::write(&file, text).unwrap();
    server
        .cli(&["policy", "apply", "-f", file.to_str().unwrap()])
        .ok();
}

fn status(agent: &TestAgent) -> serde_json::Value {
    let out = agent
        .cli(&[
            "agent",
            "status",
            "--json",
            "--data-dir",
            agent.data_dir.to_str().unwrap(),
        ])
        .ok();
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn the_policy_is_enforced_in_the_kernel() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loads eBPF programs and runs Docker: run it as root"
    );
    let _serial = one_at_a_time();
    ensure_runtimes();
    let server = TestServer::start_with(
        TD,
        &[
            "--ownership-heartbeat",
            "1s",
            "--attribution-holdback",
            "5s",
        ],
    );
    // A node name of its own: pins live under /sys/fs/bpf/hallmark/<node>.
    let node = format!("enf-{}", std::process::id());
    let health = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let agent = TestAgent::start_with(
        &server,
        &node,
        &[
            "--health-listen",
            &health,
            "--runtime",
            "docker",
            "--enforcement",
            "on",
            "--on-agent-exit",
            "detach",
            "--ownership-heartbeat",
            "1s",
        ],
    );
    for app in ["web", "payments-db", "other", "cache"] {
        let id = server.id(app);
        server.create_entry(
            &id,
            &agent.spiffe_id,
            &[&format!("docker:label:app:{app}")],
            &[],
        );
    }
    let (subnet, prefix) = subnet(140);
    let net = Network::create(&subnet);
    let gateway = format!("{prefix}.1");
    let run = |name: &str, ip: &str, app: &str, cmd: &str| {
        net.busybox(name, ip, &[&format!("app={app}")], cmd)
    };
    let ip_a = format!("{prefix}.10");
    let ip_b = format!("{prefix}.20");
    let a = run(
        "hm-enf-a",
        &ip_a,
        "web",
        "nc -ll -p 7000 -e /busybox cat & sleep 3600",
    );
    let b = run(
        "hm-enf-b",
        &ip_b,
        "payments-db",
        "for p in 5432 22 8080 9000; do nc -ll -p $p -e /busybox cat & done; wait",
    );
    let c = run("hm-enf-c", &format!("{prefix}.30"), "other", "sleep 3600");
    let udp_allowed = std::net::UdpSocket::bind(("0.0.0.0", UDP_ALLOWED)).unwrap();
    let udp_denied = std::net::UdpSocket::bind(("0.0.0.0", UDP_DENIED)).unwrap();
    // Before any policy: everything connects, the node included.
    wait_until("A → B:22 before the policy", WAIT, || {
        connect(&a, &format!("{ip_b} 22")).ok()
    });
    if let Err(e) = host_connects(&format!("{ip_b}:5432")) {
        panic!("the node reaches B before any policy: {e}");
    }

    apply(&server, &policy(&gateway, ""));
    // The agent has the workloads' identities and the revision in the
    // kernel once A → B:22 is refused.
    let refused = wait_until("A → B:22 to be denied", Duration::from_secs(60), || {
        connect(&a, &format!("{ip_b} 22")).err()
    });
    assert!(
        refused.stderr.contains("not permitted") || refused.stdout.contains("not permitted"),
        "a denied connect fails with EPERM:\n{refused}"
    );
    let mut shell_a = Shell::open(&a);
    assert!(
        shell_a.echo(&format!("{ip_b} 5432")),
        "web → payments-db:5432 is allowed, and B's answers reach A"
    );
    let Err(e) = connect(&c, &format!("{ip_b} 5432")) else {
        panic!("C is in no group: denied");
    };
    assert!(
        e.stderr.contains("not permitted") || e.stdout.contains("not permitted"),
        "{e}"
    );
    // The watch-mode deny lets the connection through.
    if let Err(e) = connect(&a, &format!("{ip_b} 8080")) {
        panic!("a watch rule never blocks:\n{e}");
    }

    // --- ingress ------------------------------------------------------------
    // The node is in no group: its connection into B is dropped at B.
    let e = host_connects(&format!("{ip_b}:5432")).expect_err("the node may not reach B");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::TimedOut,
        "dropped on the way in, not refused: {e}"
    );
    // B's own allowed connection to A: its answers flow back into B.
    let mut shell_b = Shell::open(&b);
    assert!(
        shell_b.echo(&format!("{ip_a} 7000")),
        "payments-db → web:7000 is allowed and its replies reach B"
    );
    assert!(
        !shell_b.echo(&format!("{ip_a} 7001")),
        "payments-db → web:7001 is denied"
    );

    // --- UDP ----------------------------------------------------------------
    let out = send_udp(&a, &gateway, UDP_DENIED);
    let _ = send_udp(&a, &gateway, UDP_ALLOWED);
    let got = received(&udp_allowed, Duration::from_secs(3));
    assert!(
        got.is_some_and(|d| d.windows(8).any(|w| w == b"hm-probe")),
        "the allowed datagram arrives"
    );
    assert_eq!(
        received(&udp_denied, Duration::from_millis(500)),
        None,
        "a datagram the policy denies is not delivered (tftp said:\n{out})"
    );

    // The status file is rewritten every second.
    let st = wait_until("agent status to show revision 1", WAIT, || {
        let st = status(&agent);
        (st["enforcement"]["revision"] == 1).then_some(st)
    });
    let enf = &st["enforcement"];
    assert_eq!(enf["state"], "running", "{st:#}");
    assert_eq!(enf["mode"], "on", "{enf:#}");
    assert_eq!(enf["revision"], 1, "{enf:#}");
    assert!(enf["workloads"].as_u64().unwrap() >= 3, "{enf:#}");
    assert!(
        enf["maps"]["peers4"]["capacity"].as_u64().unwrap() > 0,
        "{enf:#}"
    );
    let would = wait_until("the would-deny to be counted", WAIT, || {
        let st = status(&agent);
        let n = st["enforcement"]["decisions"]["would-deny"]
            .as_u64()
            .unwrap_or(0);
        (n > 0).then_some(n)
    });
    assert!(would >= 1);
    // Counted by the rule that decided, in the status and the metrics;
    // every event became a flow.
    wait_until("decisions counted per rule", WAIT, || {
        let st = status(&agent);
        let r = &st["enforcement"]["rule_decisions"];
        let n = |rule: &str, verdict: &str| r[rule][verdict].as_u64().unwrap_or(0);
        (n("web-to-db-admin", "would-deny") >= 1
            && n("default", "denied") >= 2
            && n("web-to-db", "allowed") >= 1)
            .then_some(())
    });
    let metrics = common::run(
        std::process::Command::new("curl").args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://{health}/metrics"),
        ]),
        WAIT,
    )
    .ok()
    .stdout;
    for line in [
        "hallmark_agent_enforcement_rule_decisions_total{rule=\"web-to-db-admin\",verdict=\"would-deny\"} ",
        "hallmark_agent_enforcement_rule_decisions_total{rule=\"default\",verdict=\"denied\"} ",
        "hallmark_agent_enforcement_map_entries{map=\"locals\"} ",
        "hallmark_agent_enforcement_mode{mode=\"on\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let human = agent
        .cli(&[
            "agent",
            "status",
            "--data-dir",
            agent.data_dir.to_str().unwrap(),
        ])
        .ok();
    assert!(
        human.stdout.contains("by rule: ") && human.stdout.contains(", locals "),
        "{human}"
    );
    assert_eq!(
        status(&agent)["enforcement"]["events_dropped"],
        0,
        "every kernel event became a flow"
    );

    // The kernel's events are flows with its verdicts, kept by the server.
    let to_b = format!("ip:{ip_b}");
    let event = |port: u16, verdict: &str| {
        flows(&server, &["--from", &format!("ip:{ip_a}"), "--to", &to_b])
            .into_iter()
            .find(|f| {
                f["flow"]["dst"]
                    .as_str()
                    .is_some_and(|d| d.ends_with(&format!(":{port}")))
                    && f["verdict"] == verdict
            })
    };
    let watched = wait_until(
        "the would-deny flow A → B:8080",
        Duration::from_secs(30),
        || event(8080, "would-deny"),
    );
    assert_eq!(watched["verdict_rule"], "web-to-db-admin", "{watched:#}");
    assert_eq!(watched["verdict_mode"], "watch", "{watched:#}");
    assert_eq!(watched["policy_revision"], 1, "{watched:#}");
    // One flow for the one connection: B's inbound decision, with both
    // ports (A's outbound one had no source port yet).
    let watched_all: Vec<_> = flows(&server, &["--from", &format!("ip:{ip_a}"), "--to", &to_b])
        .into_iter()
        .filter(|f| f["verdict"] == "would-deny")
        .collect();
    assert_eq!(watched_all.len(), 1, "{watched_all:#?}");
    assert_ne!(watched["flow"]["src"], format!("{ip_a}:0"), "{watched:#}");
    let denied = wait_until(
        "the denied flow A → B:22",
        Duration::from_secs(30),
        || event(22, "denied"),
    );
    assert_eq!(denied["flow"]["outcome"], "refused", "{denied:#}");
    assert_eq!(denied["flow"]["bytes_sent"], 0, "{denied:#}");
    // The node's dropped connection into B: one flow, however many times
    // its SYN was sent.
    let from_node = wait_until(
        "the dropped connection from the node",
        Duration::from_secs(30),
        || {
            let all: Vec<_> = flows(
                &server,
                &["--from", &format!("ip:{gateway}"), "--to", &to_b],
            )
            .into_iter()
            .filter(|f| {
                f["verdict"] == "denied" && f["flow"]["dst"] == format!("{ip_b}:5432").as_str()
            })
            .collect();
            (!all.is_empty()).then_some(all)
        },
    );
    assert_eq!(from_node.len(), 1, "{from_node:#?}");
    assert!(
        status(&agent)["enforcement"]["events_coalesced"]
            .as_u64()
            .unwrap()
            >= 1,
        "the retransmitted SYN was decided again and left out"
    );

    // --- a policy change is in force at the next connect: p99 over 100 ------
    let open = policy(&gateway, SSH_RULE);
    let closed = policy(&gateway, "");
    let to_b22 = format!("{ip_b} 22");
    let mut took = Vec::with_capacity(100);
    for i in 0..100 {
        let (doc, want) = if i % 2 == 0 {
            (&open, true)
        } else {
            (&closed, false)
        };
        let started = Instant::now();
        apply(&server, doc);
        while shell_a.echo(&to_b22) != want {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "change {i} not in force after 10 s"
            );
        }
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "policy change → next connect (100 changes, apply included): p50 {:?}, p99 {:?}, max {:?}",
        took[49], took[98], took[99]
    );
    assert!(took[98] < Duration::from_secs(1), "p99 {:?}", took[98]);

    // --- IP reuse: B stops, D (cache) starts on B's address -----------------
    drop(shell_b);
    let stopped = Instant::now();
    drop(b);
    let d = run(
        "hm-enf-d",
        &ip_b,
        "cache",
        "for p in 5432 6379; do nc -ll -p $p -e /busybox cat & done; wait",
    );
    let reused = stopped.elapsed();
    assert!(
        reused < Duration::from_secs(2),
        "D started after {reused:?}"
    );
    let started = Instant::now();
    let mut cache_reached = None;
    while started.elapsed() < Duration::from_secs(6) {
        assert!(
            !shell_a.echo(&format!("{ip_b} 5432")),
            "A's permission for B carried over to D ({:?} after D started)",
            started.elapsed()
        );
        if cache_reached.is_none() && shell_a.echo(&format!("{ip_b} 6379")) {
            cache_reached = Some(started.elapsed());
        }
    }
    let reached = cache_reached.expect("web → cache:6379 is allowed once D is known");
    println!("D on B's address after {reused:?}; web → cache allowed after {reached:?}");
    let listening = exec(&d, "netstat -ltn");
    assert!(
        listening.stdout.contains(":5432"),
        "D listens on 5432 (denied by policy, not unreachable):\n{listening}"
    );

    // --- the fleet switch lifts enforcement, and puts it back ---------------
    // Timed to the start of the first connect that sees the new mode: a
    // connect that straddles the flip (its SYN let out, then dropped at D)
    // waits out nc's one-second timeout after the switch took effect.
    let mut shell_c = Shell::open(&c);
    let to_d = format!("{ip_b} 5432");
    assert!(!shell_c.echo(&to_d), "C → D:5432 is denied");
    let mut switch = |word: &str, passes: bool| {
        let started = Instant::now();
        server.cli(&["policy", "enforcement", word]).ok();
        loop {
            let at = started.elapsed();
            if shell_c.echo(&to_d) == passes {
                return at;
            }
            assert!(
                at < Duration::from_secs(10),
                "enforcement not {word} 10 s after the switch"
            );
        }
    };
    let took = switch("off", true);
    println!("fleet switch off → C's connect passes after {took:?}");
    assert!(took < Duration::from_secs(1), "switching off took {took:?}");
    let st = wait_until("agent status to show the switch", WAIT, || {
        let st = status(&agent);
        (st["enforcement"]["mode"] == "off").then_some(st)
    });
    assert_eq!(st["enforcement"]["fleet_off"], true, "{st:#}");
    let took = switch("on", false);
    println!("fleet switch on → C's connect denied after {took:?}");
    assert!(took < Duration::from_secs(1), "switching on took {took:?}");
    drop(shell_c);
    drop((shell_a, a, c, d));
}

/// Removes a node's pinned enforcement when dropped (unpinning the links
/// detaches the programs).
struct Pins(std::path::PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pinned_enforcement_outlives_the_agent_and_is_taken_over() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loads eBPF programs and runs Docker: run it as root"
    );
    let _serial = one_at_a_time();
    ensure_runtimes();
    let server = TestServer::start(TD);
    let node = format!("enf-keep-{}", std::process::id());
    let _pins = Pins(std::path::Path::new("/sys/fs/bpf/hallmark").join(&node));
    let mut agent = TestAgent::start_with(
        &server,
        &node,
        &[
            "--runtime",
            "docker",
            "--enforcement",
            "on",
            "--on-agent-exit",
            "keep",
        ],
    );
    for app in ["web", "payments-db"] {
        let id = server.id(app);
        server.create_entry(
            &id,
            &agent.spiffe_id,
            &[&format!("docker:label:app:{app}")],
            &[],
        );
    }
    let (subnet, prefix) = subnet(141);
    let net = Network::create(&subnet);
    let run = |name: &str, ip: &str, app: &str, cmd: &str| {
        net.busybox(name, ip, &[&format!("app={app}")], cmd)
    };
    let ip_b = format!("{prefix}.20");
    let a = run("hm-enf-ka", &format!("{prefix}.10"), "web", "sleep 3600");
    let b = run(
        "hm-enf-kb",
        &ip_b,
        "payments-db",
        "for p in 5432 22; do nc -ll -p $p -e /busybox cat & done; wait",
    );
    wait_until("B to listen", WAIT, || {
        connect(&a, &format!("{ip_b} 22")).ok()
    });
    apply(&server, &policy(&format!("{prefix}.1"), ""));
    wait_until("A → B:22 to be denied", Duration::from_secs(60), || {
        connect(&a, &format!("{ip_b} 22")).err()
    });
    let st = wait_until("agent status to show revision 1", WAIT, || {
        let st = status(&agent);
        (st["enforcement"]["revision"] == 1).then_some(st)
    });
    assert_eq!(st["enforcement"]["taken_over"], false, "{st:#}");
    assert!(
        st["enforcement"]["pin_dir"]
            .as_str()
            .unwrap()
            .ends_with(&node),
        "{st:#}"
    );

    // From here until the new agent has taken over, a connect the policy
    // denies is tried every few milliseconds: it never gets through.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let mut shell = Shell::open(&a);
        let stop = stop.clone();
        let to = format!("{ip_b} 22");
        std::thread::spawn(move || {
            let (mut tries, mut passed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tries += 1;
                passed += u32::from(shell.echo(&to));
            }
            (tries, passed)
        })
    };

    // --- the agent dies: the policy stays enforced ---------------------------
    agent.kill();
    for _ in 0..3 {
        assert!(
            connect(&a, &format!("{ip_b} 22")).is_err(),
            "denied while no agent runs"
        );
        if let Err(e) = connect(&a, &format!("{ip_b} 5432")) {
            panic!("allowed while no agent runs:\n{e}");
        }
    }

    // --- a new agent takes the pinned programs over ---------------------------
    agent.restart();
    let st = wait_until("the new agent to take over", WAIT, || {
        let st = status(&agent);
        (st["enforcement"]["taken_over"] == true && st["enforcement"]["revision"] == 1)
            .then_some(st)
    });
    assert_eq!(st["enforcement"]["mode"], "on", "{st:#}");
    // Past the new agent's first install from its own inventory.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (tries, passed) = prober.join().unwrap();
    println!("denied connects tried across the restart: {tries}, got through: {passed}");
    assert_eq!(passed, 0, "a denied connect got through during the restart");
    assert!(tries >= 20, "only {tries} tries");
    assert!(connect(&a, &format!("{ip_b} 22")).is_err(), "still denied");
    if let Err(e) = connect(&a, &format!("{ip_b} 5432")) {
        panic!("still allowed:\n{e}");
    }
    // One set of programs in the kernel: taken over, not loaded again.
    let loaded = enforcement_programs();
    assert_eq!(loaded.len(), 5, "{loaded:?}");
    drop((a, b));
}

/// The names of the enforcement programs (`hm_enf_…`) loaded in the
/// kernel.
fn enforcement_programs() -> Vec<String> {
    let out = run(
        std::process::Command::new("bpftool").args(["prog", "show", "--json"]),
        WAIT,
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| n.starts_with("hm_enf"))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[test]
fn hallmark_up_enforces_by_default_and_denies_nothing_without_a_policy() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loads eBPF programs: run it as root"
    );
    let _serial = one_at_a_time();
    // The default `--enforcement on`; detached on exit so nothing outlives
    // the test.
    let up = TestUp::start_with(&["--on-agent-exit", "detach"]);
    let line = wait_until("the banner's policy line", WAIT, || {
        up.printed()
            .lines()
            .find(|l| l.starts_with("  policy "))
            .map(str::to_string)
    });
    assert!(
        line.contains("enforced in this kernel (--enforcement on)"),
        "{line}\n{}",
        up.printed()
    );
    let data_dir = up.home.join("agent");
    let st = wait_until("enforcement running", WAIT, || {
        let out = up
            .cli(&[
                "agent",
                "status",
                "--json",
                "--data-dir",
                data_dir.to_str().unwrap(),
            ])
            .ok();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        (v["enforcement"]["state"] == "running" && v["enforcement"]["mode"] == "on").then_some(v)
    });
    let enf = &st["enforcement"];
    assert_eq!(enf["configured"], "on", "{enf:#}");
    assert_eq!(enf["mode"], "on", "{enf:#}");
    assert_eq!(enf["pin_dir"], serde_json::Value::Null, "{enf:#}");
    // No policy: no image, nothing decided against anyone.
    assert_eq!(enf["revision"], 0, "{enf:#}");
    assert_eq!(
        enf["decisions"]["denied"].as_u64().unwrap_or(0),
        0,
        "{enf:#}"
    );
    assert_eq!(
        enforcement_programs().len(),
        5,
        "{:?}",
        enforcement_programs()
    );
    drop(up);
}
