//! eBPF flow capture end to end: a real server, an agent with capture on,
//! real Docker containers, and the flows as `hallmark flows list --json`
//! shows them.
//!
//! - A (`app=alpha`) sends 100,000 bytes to B (`app=beta`) on 5432: one
//!   flow, A the initiator, both SPIFFE IDs, byte counts within 1%, though
//!   the agent saw the connection from both sockets.
//! - A connects to a port of B nobody listens on: a `refused` flow.
//! - A asks a host process (in its own systemd-style unit cgroup) over UDP
//!   and gets an answer: a UDP flow with bytes both ways, the node's end
//!   named with the unit.
//! - A talks to a host-network container H serving on the node's address:
//!   the flow names H, by (IP, port).
//! - A stops and C starts on A's IP at once: A's flows stay A's, C's are
//!   C's.
//!
//! A second test runs an agent without BPF permission: identities are
//! served, and the reason capture is off is reported.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::containers::*;
use common::flows::*;
use common::*;
use serde_json::Value;

const TD: &str = "capture.test";
const SENT: u64 = 100_000;
/// A server answering each connection with the number of bytes it brought.
const COUNTER_5432: &str = "nc -ll -p 5432 -e /busybox wc -c";

/// Sends `SENT` bytes to `to` and checks the server counted them.
fn send_counted(c: &DockerContainer, to: &str) {
    let out = exec(c, &format!("head -c {SENT} /dev/zero | nc {to}"));
    assert!(
        out.success() && out.stdout.trim() == SENT.to_string(),
        "sending {SENT} bytes from {} to {to}:\n{out}",
        c.name
    );
}

/// Every agent's capture sees every socket of the machine, so these tests
/// run one at a time: the storm would otherwise flood the others' agents.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loads eBPF programs and runs Docker: run it as root (scripts/test.sh does)"
    );
}

fn src_ip(f: &Value) -> String {
    let s: SocketAddr = f["flow"]["src"].as_str().unwrap().parse().unwrap();
    s.ip().to_string()
}

fn dst(f: &Value) -> SocketAddr {
    f["flow"]["dst"].as_str().unwrap().parse().unwrap()
}

/// The agent-captured flows from `ip` to `to` (an `ip:…` filter).
fn captured(server: &TestServer, from_ip: &str, to: &str, protocol: &str) -> Vec<Value> {
    flows(
        server,
        &[
            "--from",
            &format!("ip:{from_ip}"),
            "--to",
            to,
            "--protocol",
            protocol,
        ],
    )
    .into_iter()
    .filter(|f| f["flow"]["reporter"]["kind"] == "agent")
    .collect()
}

fn within_1pct(got: u64, want: u64) -> bool {
    got.abs_diff(want) * 100 <= want
}

/// The cgroup2 hierarchy's mount point.
fn cgroup2() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next() == Some("cgroup2"))
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 mount")
}

/// A host process in a cgroup of its own, named like a systemd unit,
/// removed when dropped.
struct HostUnit {
    child: Child,
    cgroup: PathBuf,
}

impl HostUnit {
    /// A UDP echo server on `addr`, in unit `unit`.
    fn udp_echo(unit: &str, addr: &str) -> Self {
        let cgroup = cgroup2().join("system.slice").join(unit);
        std::fs::create_dir_all(&cgroup).unwrap();
        let (host, port) = addr.rsplit_once(':').unwrap();
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{host}',{port}))\nprint('ready',flush=True)\nwhile True:\n    d,a=s.recvfrom(4096)\n    s.sendto(d+b'-answer',a)\n"
        );
        let (child, line) = python_in_cgroup(&cgroup, None, &script);
        assert_eq!(line, "ready", "the UDP echo server did not start");
        HostUnit { child, cgroup }
    }
}

impl Drop for HostUnit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// A Python program run in `cgroup` (and in network namespace `netns`),
/// once it printed its first line; that line, trimmed.
fn python_in_cgroup(cgroup: &Path, netns: Option<&str>, script: &str) -> (Child, String) {
    let enter = netns
        .map(|ns| format!("nsenter --net=/run/netns/{ns} "))
        .unwrap_or_default();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec {enter}python3 -c \"$0\"",
            cgroup.join("cgroup.procs").display()
        ))
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    (child, line.trim().to_string())
}

/// The host unit the first test's UDP server runs in.
fn unit_name() -> String {
    format!("hm-capture-{}.service", std::process::id())
}

fn exec(c: &DockerContainer, script: &str) -> Output {
    docker(&["exec", &c.name, "/busybox", "sh", "-c", script])
}

#[test]
fn captured_flows_name_both_ends_at_capture_time() {
    assert_root();
    let _serial = one_at_a_time();
    ensure_runtimes();
    let server = TestServer::start_with(
        TD,
        &[
            "--ownership-heartbeat",
            "1s",
            "--attribution-holdback",
            "10s",
        ],
    );
    let agent = TestAgent::start_with(
        &server,
        "n1",
        &[
            "--runtime",
            "docker",
            "--flows",
            "on",
            "--ownership-heartbeat",
            "1s",
            "--flow-report-interval",
            "2s",
            "--udp-idle",
            "2s",
            // The containers and the host unit below: not whatever else
            // the machine does meanwhile.
            "--flow-cgroup",
            "/docker",
            "--flow-cgroup",
            &format!("/system.slice/{}", unit_name()),
        ],
    );
    let status = agent.cli(&[
        "agent",
        "status",
        "--data-dir",
        agent.data_dir.to_str().unwrap(),
    ]);
    let status = status.ok();
    assert!(
        status.stdout.contains("flow capture   running"),
        "{}",
        status.stdout
    );
    let ids: Vec<String> = ["alpha", "beta", "gamma", "delta"]
        .iter()
        .map(|app| {
            let id = server.id(app);
            server.create_entry(
                &id,
                &agent.spiffe_id,
                &[&format!("docker:label:app:{app}")],
                &[],
            );
            id
        })
        .collect();
    let (alpha, beta, gamma, delta) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let (subnet, prefix) = subnet(100);
    let net = Network::create(&subnet);
    let ip_a = format!("{prefix}.10");
    let ip_b = format!("{prefix}.20");
    let gateway = format!("{prefix}.1");
    let run = |name: &str, ip: &str, app: &str, cmd: &str| {
        net.busybox(name, ip, &[&format!("app={app}")], cmd)
    };
    let a = run("hm-cap-a", &ip_a, "alpha", "sleep 3600");
    // B counts what each connection brings and answers with the count
    // (a server must read until the client closes: busybox's `nc -l`
    // alone quits at its own stdin's end and resets the connection).
    let b = run("hm-cap-b", &ip_b, "beta", COUNTER_5432);
    for (ip, c) in [(&ip_a, &a), (&ip_b, &b)] {
        wait_until(&format!("{ip} to be owned by {}", c.name), WAIT, || {
            let w = whois(&server, ip, now_ms() - 2000);
            (w["verdict"] == "owned" && end_container(&w["owners"][0]) == Some(c.id.as_str()))
                .then_some(())
        });
    }

    // --- A sends 100,000 bytes to B:5432 -----------------------------------
    send_counted(&a, &format!("{ip_b} 5432"));
    let to_b = format!("ip:{ip_b}");
    wait_until("A → B:5432 to be stored", WAIT, || {
        let l: Vec<Value> = captured(&server, &ip_a, &to_b, "tcp")
            .into_iter()
            .filter(|f| dst(f).port() == 5432)
            .collect();
        (!l.is_empty() && l.iter().all(|f| f["status"] == "attributed")).then_some(())
    });
    // Both sockets' reports are in by now; they are one flow.
    std::thread::sleep(Duration::from_secs(2));
    let list: Vec<Value> = captured(&server, &ip_a, &to_b, "tcp")
        .into_iter()
        .filter(|f| dst(f).port() == 5432)
        .collect();
    assert_eq!(list.len(), 1, "one flow per connection: {list:#?}");
    let f = &list[0];
    let flow = &f["flow"];
    assert_eq!(flow["initiator"], "source", "{f}");
    assert_eq!(src_ip(f), ip_a);
    assert_eq!(end_container(&f["src"]), Some(a.id.as_str()), "{f}");
    assert_eq!(end_container(&f["dst"]), Some(b.id.as_str()), "{f}");
    assert!(has_id(&f["src"], alpha) && has_id(&f["dst"], beta), "{f}");
    let bytes = flow["bytes_sent"].as_u64().unwrap();
    assert!(
        within_1pct(bytes, SENT),
        "bytes A → B {bytes}, sent {SENT}: {f}"
    );
    assert_eq!(
        flow["bytes_received"].as_u64().unwrap(),
        SENT.to_string().len() as u64 + 1,
        "B's answer: {f}"
    );
    assert_eq!(flow["outcome"], "established", "{f}");
    assert!(flow["packets_sent"].as_u64().unwrap() > 0, "{f}");

    // --- a refused connect --------------------------------------------------
    let out = exec(&a, &format!("nc {ip_b} 6000 < /dev/null"));
    assert!(!out.success(), "nobody listens on B:6000:\n{out}");
    let refused = wait_until("the refused connect to be stored", WAIT, || {
        captured(&server, &ip_a, &to_b, "tcp")
            .into_iter()
            .find(|f| dst(f).port() == 6000)
    });
    assert_eq!(refused["flow"]["outcome"], "refused", "{refused}");
    assert_eq!(end_container(&refused["src"]), Some(a.id.as_str()));

    // --- UDP request and answer with a host process in a unit ---------------
    let unit = unit_name();
    let echo = HostUnit::udp_echo(&unit, &format!("{gateway}:53"));
    // Busybox's nc has no UDP; nslookup asks port 53 (the answer is not
    // DNS, so it fails; the datagrams went both ways all the same).
    let _ = exec(&a, &format!("nslookup hallmark.test {gateway}; true"));
    let to_gw = format!("ip:{gateway}");
    let udp = wait_until(
        "the UDP flow to the host unit",
        Duration::from_secs(30),
        || {
            captured(&server, &ip_a, &to_gw, "udp")
                .into_iter()
                .find(|f| dst(f).port() == 53 && f["dst"]["unit"] == unit.as_str())
        },
    );
    assert!(udp["flow"]["bytes_sent"].as_u64().unwrap() > 0, "{udp}");
    assert!(
        udp["flow"]["bytes_received"].as_u64().unwrap() > 0,
        "the answer is counted: {udp}"
    );
    assert_eq!(udp["dst"]["kind"], "node", "{udp}");
    assert_eq!(end_container(&udp["src"]), Some(a.id.as_str()), "{udp}");
    drop(echo);

    // --- a host-network container serving on the node's address -------------
    let h = DockerContainer::run_detached(
        &unique_name("hm-cap-h"),
        &[
            "--network",
            "host",
            "-l",
            "app=gamma",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "nc -ll -p 7070 -e /busybox wc -c",
        ],
    );
    // Its listening port is claimed once a report interval has passed.
    std::thread::sleep(Duration::from_secs(3));
    send_counted(&a, &format!("{gateway} 7070"));
    let hf = wait_until("A → H:7070 to name H", WAIT, || {
        captured(&server, &ip_a, &to_gw, "tcp")
            .into_iter()
            .find(|f| dst(f).port() == 7070 && end_container(&f["dst"]) == Some(h.id.as_str()))
    });
    assert!(has_id(&hf["dst"], gamma), "{hf}");
    drop(h);

    // --- IP reuse: A stops, C takes its IP at once ---------------------------
    let a_id = a.id.clone();
    drop(a);
    let c = run("hm-cap-c", &ip_a, "delta", "sleep 3600");
    send_counted(&c, &format!("{ip_b} 5432"));
    let by_c = wait_until("C → B:5432 to be stored", WAIT, || {
        captured(&server, &ip_a, &to_b, "tcp")
            .into_iter()
            .find(|f| dst(f).port() == 5432 && end_container(&f["src"]) == Some(c.id.as_str()))
    });
    assert!(has_id(&by_c["src"], delta), "{by_c}");
    assert_eq!(end_container(&by_c["dst"]), Some(b.id.as_str()), "{by_c}");
    let all: Vec<Value> = captured(&server, &ip_a, &to_b, "tcp")
        .into_iter()
        .filter(|f| dst(f).port() == 5432)
        .collect();
    assert_eq!(all.len(), 2, "A's flow and C's: {all:#?}");
    let first = all
        .iter()
        .min_by_key(|f| f["flow"]["start_ms"].as_i64().unwrap())
        .unwrap();
    assert_eq!(
        end_container(&first["src"]),
        Some(a_id.as_str()),
        "A's flow is still A's after C took the IP: {first}"
    );
    drop(c);
    drop(b);
    drop(net);
}

#[test]
fn without_bpf_permission_identities_are_still_served() {
    assert_root();
    let _serial = one_at_a_time();
    let server = TestServer::start(TD);
    // `nobody` may not load BPF programs.
    let agent = TestAgent::start_as(
        &server,
        "no-bpf",
        &["--runtime", "none", "--flows", "auto"],
        NOBODY,
    );
    let id = server.id("nobody");
    server.create_entry(&id, &agent.spiffe_id, &[&format!("unix:uid:{NOBODY}")], &[]);
    wait_until("nobody's SVID from the agent without BPF", WAIT, || {
        let out = agent.cli_as(NOBODY, &["svid", "fetch"]);
        (out.success() && out.stdout.contains("BEGIN CERTIFICATE")).then_some(())
    });
    let status = agent
        .cli(&[
            "agent",
            "status",
            "--data-dir",
            agent.data_dir.to_str().unwrap(),
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(status["capture"]["state"], "unavailable", "{status}");
    assert_eq!(
        status["capture"]["reason_code"], "no-permission",
        "{status}"
    );
    let text = agent
        .cli(&[
            "agent",
            "status",
            "--data-dir",
            agent.data_dir.to_str().unwrap(),
        ])
        .ok()
        .stdout;
    assert!(
        text.contains("flow capture   UNAVAILABLE") && text.contains("permit"),
        "{text}"
    );

    // `--flows on` is a promise: without BPF the agent refuses to start,
    // and says what to do.
    let token = server.join_token("no-bpf-on");
    let dir = short_tempdir();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut cmd = hallmark_cmd(&[
        "agent",
        "run",
        "--runtime",
        "none",
        "--flows",
        "on",
        "--enforcement",
        "off",
    ]);
    cmd.arg("--data-dir")
        .arg(dir.path().join("agent"))
        .arg("--socket")
        .arg(dir.path().join("w.sock"))
        .args(["--server", &server.addr.to_string()])
        .args(["--trust-domain", TD])
        .args(["--join-token", &token.token])
        .args(["--ca-fingerprint", &token.ca_fingerprint])
        .current_dir("/");
    std::os::unix::process::CommandExt::uid(&mut cmd, NOBODY);
    std::os::unix::process::CommandExt::gid(&mut cmd, NOBODY);
    run(&mut cmd, WAIT)
        .fails()
        .stderr_has(&["--flows on", "not permitted", "--flows auto"]);
}

fn sh(script: &str) {
    let out = run(Command::new("sh").args(["-c", script]), WAIT);
    assert!(out.success(), "{script}:\n{out}");
}

/// Two nodes on one kernel: a network namespace each, joined by a bridge
/// on which the server listens, and a cgroup subtree each, the one its
/// agent speaks for (`--flow-cgroup`). Removed when dropped.
struct TwoNodes {
    tag: u32,
    prefix: String,
    cgroups: Vec<PathBuf>,
}

impl TwoNodes {
    fn create() -> Self {
        let tag = std::process::id() % 10_000;
        let prefix = format!("10.{}.{}", 100 + tag % 100, tag / 100 % 250);
        let bridge = format!("hmbr{tag}");
        sh(&format!(
            "ip link add {bridge} type bridge && ip addr add {prefix}.1/24 dev {bridge} && ip link set {bridge} up"
        ));
        let mut cgroups = Vec::new();
        for i in 1..=2 {
            let ns = format!("hmn{i}-{tag}");
            sh(&format!(
                "ip netns add {ns} && ip link add hv{i}-{tag} type veth peer name he{i}-{tag} \
                 && ip link set he{i}-{tag} netns {ns} && ip link set hv{i}-{tag} master {bridge} up \
                 && ip -n {ns} addr add {prefix}.1{i}/24 dev he{i}-{tag} \
                 && ip -n {ns} link set he{i}-{tag} up && ip -n {ns} link set lo up"
            ));
            let cg = cgroup2().join(format!("hm-node{i}-{tag}"));
            std::fs::create_dir_all(&cg).unwrap();
            cgroups.push(cg);
        }
        TwoNodes {
            tag,
            prefix,
            cgroups,
        }
    }

    fn netns(&self, i: usize) -> String {
        format!("hmn{i}-{}", self.tag)
    }

    fn ip(&self, i: usize) -> String {
        format!("{}.1{i}", self.prefix)
    }

    /// `--flow-cgroup` of node `i`.
    fn subtree(&self, i: usize) -> String {
        format!("/hm-node{i}-{}", self.tag)
    }

    /// A Python program on node `i`, in unit `unit` of its subtree; its
    /// first line of output is returned once it printed it.
    fn process(&self, i: usize, unit: &str, script: &str) -> (Child, String) {
        let cg = self.cgroups[i - 1].join(unit);
        std::fs::create_dir_all(&cg).unwrap();
        python_in_cgroup(&cg, Some(&self.netns(i)), script)
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        for i in 1..=2 {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("hmbr{}", self.tag)])
            .status();
        for cg in &self.cgroups {
            if let Ok(entries) = std::fs::read_dir(cg) {
                for e in entries.flatten().filter(|e| e.path().is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(cg);
        }
    }
}

#[test]
fn two_nodes_report_one_connection_once() {
    assert_root();
    let _serial = one_at_a_time();
    let nodes = TwoNodes::create();
    let server = TestServer::start_on(
        TD,
        &format!("{}.1:0", nodes.prefix),
        &[
            "--ownership-heartbeat",
            "1s",
            "--attribution-holdback",
            "10s",
        ],
    );
    let agents: Vec<TestAgent> = (1..=2)
        .map(|i| {
            TestAgent::start_in_netns(
                &server,
                &format!("n{i}"),
                &[
                    "--runtime",
                    "none",
                    "--flows",
                    "on",
                    "--flow-cgroup",
                    &nodes.subtree(i),
                    "--ownership-heartbeat",
                    "1s",
                    "--flow-report-interval",
                    "2s",
                ],
                &nodes.netns(i),
            )
        })
        .collect();
    for i in 1..=2 {
        let ip = nodes.ip(i);
        wait_until(&format!("{ip} to be node n{i}'s"), WAIT, || {
            let w = whois(&server, &ip, now_ms() - 2000);
            (w["verdict"] == "owned" && w["owners"][0]["node"] == format!("n{i}").as_str())
                .then_some(())
        });
    }
    let db_ip = nodes.ip(2);
    let (mut db, ready) = nodes.process(
        2,
        "db.service",
        &format!(
            "import socket\nl=socket.create_server(('{db_ip}',5432))\nprint('ready',flush=True)\nc,_=l.accept()\nn=0\nwhile True:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\nc.sendall(str(n).encode())\nc.close()\n"
        ),
    );
    assert_eq!(ready, "ready");
    let (mut app, answer) = nodes.process(
        1,
        "app.service",
        &format!(
            "import socket\nc=socket.create_connection(('{db_ip}',5432))\nc.sendall(b'x'*{SENT})\nc.shutdown(socket.SHUT_WR)\nprint(c.recv(100).decode(),flush=True)\n"
        ),
    );
    assert_eq!(answer, SENT.to_string(), "the db counted what the app sent");
    let _ = app.wait();
    let _ = db.wait();

    let from = format!("ip:{}", nodes.ip(1));
    let to = format!("ip:{db_ip}");
    let pick = |server: &TestServer| -> Vec<Value> {
        flows(server, &["--from", &from, "--to", &to, "--port", "5432"])
    };
    wait_until("both nodes' reports of the connection", WAIT, || {
        let l = pick(&server);
        (l.len() == 1
            && l[0]["dst"]["unit"] == "db.service"
            && l[0]["src"]["unit"] == "app.service")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let list = pick(&server);
    assert_eq!(list.len(), 1, "one flow per connection: {list:#?}");
    let f = &list[0];
    assert_eq!(f["flow"]["initiator"], "source", "{f}");
    assert_eq!(f["flow"]["bytes_sent"].as_u64().unwrap(), SENT, "{f}");
    assert_eq!(f["src"]["kind"], "node", "{f}");
    assert_eq!(f["src"]["node"], "n1", "{f}");
    assert_eq!(f["src"]["spiffe_id"], agents[0].spiffe_id.as_str(), "{f}");
    assert_eq!(f["dst"]["node"], "n2", "{f}");
    assert_eq!(f["dst"]["spiffe_id"], agents[1].spiffe_id.as_str(), "{f}");
    assert_eq!(f["status"], "attributed", "{f}");

    // A connection left open is visible before it closes (interim reports
    // every --flow-report-interval), still as one flow.
    let (mut db, ready) = nodes.process(
        2,
        "db.service",
        &format!(
            "import socket\nl=socket.create_server(('{db_ip}',5433))\nprint('ready',flush=True)\nc,_=l.accept()\nwhile c.recv(65536): pass\n"
        ),
    );
    assert_eq!(ready, "ready");
    let (mut app, sent) = nodes.process(
        1,
        "app.service",
        &format!(
            "import socket,time\nc=socket.create_connection(('{db_ip}',5433))\nc.sendall(b'y'*1000)\nprint('sent',flush=True)\ntime.sleep(30)\n"
        ),
    );
    assert_eq!(sent, "sent");
    let open = wait_until(
        "the open connection's interim report",
        Duration::from_secs(6),
        || {
            flows(&server, &["--from", &from, "--to", &to, "--port", "5433"])
                .into_iter()
                .find(|f| f["flow"]["bytes_sent"] == 1000 && f["dst"]["unit"] == "db.service")
        },
    );
    assert_eq!(open["flow"]["outcome"], "established", "{open}");
    let _ = app.kill();
    let _ = db.kill();
    let _ = app.wait();
    let _ = db.wait();

    // Each agent saw its own end.
    for a in &agents {
        wait_until(
            &format!("agent {} to count its record", a.node),
            WAIT,
            || {
                let s = a
                    .cli(&[
                        "agent",
                        "status",
                        "--data-dir",
                        a.data_dir.to_str().unwrap(),
                        "--json",
                    ])
                    .ok()
                    .json();
                (s["capture"]["records"].as_u64().unwrap_or(0) >= 1).then_some(())
            },
        );
    }
}

/// Connections from `threads` threads to a local listener for `secs`
/// seconds, each closed with a reset (no TIME_WAIT, so ports never run
/// out); the number made and the number the listener accepted (a
/// connection the accept queue had no room for never had a server socket).
fn connection_storm(threads: usize, secs: u64) -> (u64, u64) {
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let listener = deep_listener();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let acceptor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut accepted = 0u64;
            for s in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Reset too: a server socket closed with a FIN can wait in
                // FIN_WAIT for retransmissions long after the storm, and
                // its record comes only when it closes.
                if let Ok(s) = s {
                    let _ = socket2_linger_zero(&s);
                    accepted += 1;
                }
            }
            accepted
        })
    };
    let clients: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, made) = (stop.clone(), made.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(s) = TcpStream::connect(addr) {
                        let _ = socket2_linger_zero(&s);
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let _ = TcpStream::connect(addr);
    let accepted = acceptor.join().unwrap();
    (made.load(Ordering::Relaxed), accepted)
}

/// A listener on 127.0.0.1 with a backlog deep enough for a storm (the
/// standard library's 128 overflows, and a dropped SYN waits a second).
fn deep_listener() -> std::net::TcpListener {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .unwrap();
    listen(&fd, Backlog::MAXCONN).unwrap();
    std::net::TcpListener::from(fd)
}

/// SO_LINGER 0: close() resets the connection.
fn socket2_linger_zero(s: &std::net::TcpStream) -> nix::Result<()> {
    nix::sys::socket::setsockopt(
        s,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
}

fn capture_status(agent: &TestAgent) -> Value {
    agent
        .cli(&[
            "agent",
            "status",
            "--data-dir",
            agent.data_dir.to_str().unwrap(),
            "--json",
        ])
        .ok()
        .json()["capture"]
        .clone()
}

/// Socket events the agent accounted for: records (including those the
/// reporter then had no room for, counted again as `sink-full`) plus the
/// events lost before they became records, by reason.
fn accounted(c: &Value) -> u64 {
    let kernel: u64 = ["ringbuf-full", "conn-map-full", "malformed"]
        .iter()
        .filter_map(|r| c["dropped"][r].as_u64())
        .sum();
    c["records"].as_u64().unwrap_or(0) + kernel
}

#[test]
fn a_connection_storm_loses_nothing_silently_and_identities_keep_flowing() {
    assert_root();
    let _serial = one_at_a_time();
    let server = TestServer::start(TD);
    let mut agent =
        TestAgent::start_with(&server, "storm", &["--runtime", "none", "--flows", "on"]);
    let id = server.id("root");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&id], WAIT);
    let before = accounted(&capture_status(&agent));

    // The Workload API, asked every 200 ms through the storm.
    let socket = agent.socket.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let prober = std::thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        let mut answers = 0;
        while done_rx.try_recv().is_err() {
            let t = std::time::Instant::now();
            let ids = x509_ids(&socket).expect("the Workload API answers during the storm");
            assert!(!ids.is_empty());
            slowest = slowest.max(t.elapsed());
            answers += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        (answers, slowest)
    });
    let (made, accepted) = connection_storm(4, 10);
    done_tx.send(()).unwrap();
    let (answers, slowest) = prober.join().unwrap();
    eprintln!(
        "storm: {made} connections in 10 s ({} /s), {accepted} accepted; Workload API answered {answers} times, slowest {slowest:?}",
        made / 10
    );
    assert!(
        answers >= 25,
        "the Workload API answered {answers} times in 10 s"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "the slowest Workload API answer took {slowest:?}"
    );
    // Every client socket, and every server socket the listener accepted
    // (a connection the accept queue had no room for never had one), is a
    // record or a loss counted by reason (other traffic only adds).
    let status = wait_until(
        "the storm's records to be accounted",
        Duration::from_secs(30),
        || {
            let c = capture_status(&agent);
            let n = accounted(&c) - before;
            eprintln!("storm: accounted {n} of {} ({c})", made + accepted);
            (n >= made + accepted).then_some(c)
        },
    );
    eprintln!("storm: capture status after: {status}");

    // Killed, the agent leaves nothing attached; restarted, it captures
    // again.
    agent.kill();
    wait_until("no capture program outliving its agent", WAIT, || {
        orphaned_programs().is_empty().then_some(())
    });
    agent.restart();
    wait_until("capture running after the restart", WAIT, || {
        (capture_status(&agent)["state"] == "running").then_some(())
    });
}

/// Capture programs (`hm_…`) that no process holds: left attached by an
/// agent that is gone.
fn orphaned_programs() -> Vec<Value> {
    let out = run(
        Command::new("bpftool").args(["prog", "show", "--json"]),
        WAIT,
    )
    .ok();
    let progs: Value = serde_json::from_str(&out.stdout).unwrap();
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["name"].as_str().is_some_and(|n| n.starts_with("hm_"))
                && p["pids"].as_array().is_none_or(|a| a.is_empty())
        })
        .cloned()
        .collect()
}
