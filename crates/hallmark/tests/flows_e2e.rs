//! Flow attribution end to end: a real server and agent, real Docker
//! containers on a user-defined bridge network, and an exporter nobody
//! here wrote (Debian's softflowd).
//!
//! Container A (`app=alpha`) fetches a page from container B (`app=beta`).
//! The traffic is captured on the bridge with tcpdump; softflowd replays the
//! capture to the server's collector as NetFlow v9 and as IPFIX, and the
//! same conversation is written as an AWS VPC flow log and ingested. Every
//! flow must name A and B, with their SPIFFE IDs, on the right ends, and
//! the packet and byte counts must match the capture's.
//!
//! Then A stops and C takes A's IP (`docker run --ip`): flows in A's time
//! name A, flows in C's time name C, flows in the gap name nobody, and no
//! flow ever names C for A's time.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::containers::*;
use common::flows::*;
use common::pcap::{self, Counts, Tuple};
use common::*;
use serde_json::Value;

const TD: &str = "flows.test";

fn ensure_flow_tools() {
    let script = repo_root().join("scripts/setup.d/30-flow-tools.sh");
    let out = run(Command::new("bash").arg(&script), Duration::from_secs(600));
    assert!(out.success(), "{} failed:\n{out}", script.display());
}

/// Sums packets and bytes of the stored flows per direction, for flows
/// reported by `reporter_kind` (`exporter` or `file`) with that name filter.
fn sums(
    list: &[Value],
    reporter: impl Fn(&Value) -> bool,
) -> BTreeMap<(String, String), (u64, u64)> {
    let mut out = BTreeMap::new();
    for f in list.iter().filter(|f| reporter(&f["flow"]["reporter"])) {
        let flow = &f["flow"];
        let key = (
            flow["src"].as_str().unwrap().to_string(),
            flow["dst"].as_str().unwrap().to_string(),
        );
        let e = out.entry(key).or_insert((0, 0));
        e.0 += flow["packets_sent"].as_u64().unwrap_or(0);
        e.1 += flow["bytes_sent"].as_u64().unwrap_or(0);
    }
    out
}

fn expected(capture: &BTreeMap<Tuple, Counts>) -> BTreeMap<(String, String), (u64, u64)> {
    capture
        .iter()
        .filter(|(t, _)| t.protocol == 6)
        .map(|(t, c)| ((t.src.to_string(), t.dst.to_string()), (c.packets, c.bytes)))
        .collect()
}

/// Replays the capture to the collector with softflowd, NetFlow `version`.
fn softflowd(capture: &Path, collector: &str, version: &str) {
    let mut cmd = Command::new("softflowd");
    cmd.args(["-r"])
        .arg(capture)
        .args(["-n", collector, "-v", version, "-d", "-c", "none"]);
    let out = run(&mut cmd, Duration::from_secs(60));
    assert!(out.success(), "softflowd -v {version} failed:\n{out}");
}

/// An AWS VPC flow log (default v2 format) of the capture's TCP directions.
fn vpc_log(capture: &BTreeMap<Tuple, Counts>, path: &Path) {
    let mut text = String::new();
    for (t, c) in capture.iter().filter(|(t, _)| t.protocol == 6) {
        text.push_str(&format!(
            "2 123456789012 eni-0a1b2c3d4e5f60718 {} {} {} {} 6 {} {} {} {} ACCEPT OK\n",
            t.src.ip(),
            t.dst.ip(),
            t.src.port(),
            t.dst.port(),
            c.packets,
            c.bytes,
            c.first_ms / 1000,
            c.last_ms / 1000 + 1,
        ));
    }
    // A NODATA row is counted and skipped.
    text.push_str(
        "2 123456789012 eni-0a1b2c3d4e5f60718 - - - - - - - 1700000000 1700000060 - NODATA\n",
    );
    std::fs::write(path, text).unwrap();
}

fn start_tcpdump(bridge: &str, out: &Path) -> Child {
    let child = Command::new("tcpdump")
        // Immediate mode: without it packets wait in the kernel ring for
        // its timeout, and a capture stopped before then records none.
        .args([
            "-i",
            bridge,
            "--immediate-mode",
            "-U",
            "-n",
            "-s",
            "0",
            "-w",
        ])
        .arg(out)
        .arg("ip")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning tcpdump");
    // tcpdump writes the file header once it listens.
    wait_until("tcpdump to start capturing", WAIT, || {
        std::fs::metadata(out)
            .ok()
            .filter(|m| m.len() >= 24)
            .map(|_| ())
    });
    child
}

/// Stops the capture; returns what tcpdump said (its packet counts).
fn stop_tcpdump(child: Child) -> String {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().expect("waiting for tcpdump");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn containers_are_named_on_both_ends_of_exported_and_logged_flows() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs Docker, tcpdump and softflowd: run it as root (scripts/test.sh does)"
    );
    ensure_runtimes();
    ensure_flow_tools();
    let server = TestServer::start_with(
        TD,
        &[
            "--flow-collector-listen",
            "127.0.0.1:0",
            "--ownership-heartbeat",
            "1s",
            "--attribution-holdback",
            "15s",
        ],
    );
    let agent = TestAgent::start_with(
        &server,
        "n1",
        &["--runtime", "docker", "--ownership-heartbeat", "1s"],
    );
    let alpha = server.id("alpha");
    let beta = server.id("beta");
    let gamma = server.id("gamma");
    for (id, app) in [(&alpha, "alpha"), (&beta, "beta"), (&gamma, "gamma")] {
        server.create_entry(
            id,
            &agent.spiffe_id,
            &[&format!("docker:label:app:{app}")],
            &[],
        );
    }
    let (subnet, prefix) = subnet(0);
    let net = Network::create(&subnet);
    let ip_a = format!("{prefix}.10");
    let ip_b = format!("{prefix}.20");
    let a = DockerContainer::run_detached(
        &unique_name("hm-flows-a"),
        &[
            "--network",
            &net.name,
            "--ip",
            &ip_a,
            "-l",
            "app=alpha",
            BUSYBOX_IMAGE,
            "sleep",
            "3600",
        ],
    );
    let b = DockerContainer::run_detached(
        &unique_name("hm-flows-b"),
        &[
            "--network",
            &net.name,
            "--ip",
            &ip_b,
            "-l",
            "app=beta",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "mkdir -p /www && head -c 20000 /dev/zero > /www/index.html && httpd -f -p 8080 -h /www",
        ],
    );
    // The agent has reported both and heartbeats prove them.
    for (ip, c) in [(&ip_a, &a), (&ip_b, &b)] {
        wait_until(&format!("{ip} to be owned by {}", c.name), WAIT, || {
            let w = whois(&server, ip, now_ms() - 3000);
            (w["verdict"] == "owned" && end_container(&w["owners"][0]) == Some(c.id.as_str()))
                .then_some(())
        });
    }

    // The conversation, captured on the bridge.
    let capture_path = server.dir.path().join("bridge.pcap");
    let tcpdump = start_tcpdump(&net.bridge(), &capture_path);
    for _ in 0..3 {
        let out = docker(&[
            "exec",
            &a.name,
            "/busybox",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            &format!("http://{ip_b}:8080/index.html"),
        ]);
        assert!(out.success(), "wget from A to B failed:\n{out}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let said = stop_tcpdump(tcpdump);
    let capture = pcap::directions(&capture_path);
    let want = expected(&capture);
    assert_eq!(
        want.len(),
        6,
        "3 connections, two directions each: {want:?}; tcpdump on {} said: {said}",
        net.bridge()
    );

    // NetFlow v9 and IPFIX from softflowd, and a VPC flow log of the same.
    let collector = std::fs::read_to_string(server.data_dir.join("flow-collector.addr")).unwrap();
    let collector = collector.trim().to_string();
    softflowd(&capture_path, &collector, "9");
    softflowd(&capture_path, &collector, "10");
    let log = server.dir.path().join("vpc.log");
    vpc_log(&capture, &log);
    let ingest = server.json(&[
        "flows",
        "ingest",
        "--format",
        "aws-vpc",
        log.to_str().unwrap(),
    ]);
    assert_eq!(ingest["rejected"], 0, "{ingest}");

    let is_exporter = |r: &Value| r["kind"] == "exporter";
    let is_file = |r: &Value| r["kind"] == "file";
    let list = wait_until("every flow to be stored", Duration::from_secs(60), || {
        let list = flows(&server, &["--from", &format!("ip:{prefix}.0/24")]);
        let files = sums(&list, is_file);
        let exported = list
            .iter()
            .filter(|f| is_exporter(&f["flow"]["reporter"]))
            .count();
        (files == want && exported >= 2 * want.len()).then_some(list)
    });

    // Both exporters' counts match the capture (each export is one run of
    // softflowd, from its own source port).
    let mut by_exporter: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for f in list.iter().filter(|f| is_exporter(&f["flow"]["reporter"])) {
        by_exporter
            .entry(f["flow"]["reporter"]["name"].to_string())
            .or_default()
            .push(f.clone());
    }
    assert_eq!(
        by_exporter.len(),
        2,
        "one exporter address per softflowd run"
    );
    for (exporter, list) in &by_exporter {
        assert_eq!(
            sums(list, |_| true),
            want,
            "counts from exporter {exporter}"
        );
    }

    // Every end is A or B, with its SPIFFE ID, on the right side.
    let sock_a = |s: &str| s.parse::<SocketAddrV4>().unwrap().ip().to_string() == ip_a;
    for f in &list {
        let (src, dst) = (&f["src"], &f["dst"]);
        let from_a = sock_a(f["flow"]["src"].as_str().unwrap());
        let (a_end, b_end) = if from_a { (src, dst) } else { (dst, src) };
        assert_eq!(end_container(a_end), Some(a.id.as_str()), "A's end of {f}");
        assert_eq!(end_container(b_end), Some(b.id.as_str()), "B's end of {f}");
        assert!(
            has_id(a_end, &alpha) && !has_id(a_end, &beta),
            "A's IDs in {f}"
        );
        assert!(
            has_id(b_end, &beta) && !has_id(b_end, &alpha),
            "B's IDs in {f}"
        );
        assert_eq!(f["status"], "attributed", "{f}");
    }

    // The identity graph has the edge alpha → beta on 8080.
    let graph = server.json(&["flows", "graph", "--since", "1h", "--format", "json"]);
    let edge = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["src"] == alpha.as_str() && e["dst"] == beta.as_str() && e["dst_port"] == 8080)
        .unwrap_or_else(|| panic!("no alpha → beta:8080 edge in {graph}"));
    assert!(edge["flows"].as_u64().unwrap() >= 9, "{edge}");

    // --- IP reuse: A stops, C takes its IP --------------------------------
    let a_id = a.id.clone();
    drop(a);
    let stopped_ms = now_ms();
    std::thread::sleep(Duration::from_secs(3));
    let c = DockerContainer::run_detached(
        &unique_name("hm-flows-c"),
        &[
            "--network",
            &net.name,
            "--ip",
            &ip_a,
            "-l",
            "app=gamma",
            BUSYBOX_IMAGE,
            "sleep",
            "3600",
        ],
    );
    let w = wait_until("C to own A's IP", WAIT, || {
        let w = whois(&server, &ip_a, now_ms() - 3000);
        (w["verdict"] == "owned" && end_container(&w["owners"][0]) == Some(c.id.as_str()))
            .then_some(w)
    });
    let (a_first, a_last) = range_of(&whois(&server, &ip_a, stopped_ms - 1000), &a_id)
        .unwrap_or_else(|| panic!("no range of A in {w}"));
    let (c_first, c_last) = range_of(&w, &c.id).unwrap();
    assert!(
        a_last < c_first,
        "A's range ends before C's begins: {a_last} < {c_first}"
    );
    let t_a = (a_first + a_last) / 2;
    let t_gap = (a_last + c_first) / 2;
    let t_c = (c_first + c_last) / 2;
    let jsonl = server.dir.path().join("reuse.jsonl");
    let mut text = String::new();
    for (t, port) in [(t_a, 41001), (t_gap, 41002), (t_c, 41003)] {
        text.push_str(&format!(
            "{{\"start_ms\":{t},\"end_ms\":{},\"protocol\":\"tcp\",\"src\":\"{ip_a}:{port}\",\"dst\":\"{ip_b}:8080\",\"bytes_sent\":100,\"packets_sent\":1}}\n",
            t + 10
        ));
    }
    std::fs::write(&jsonl, text).unwrap();
    server
        .cli(&[
            "flows",
            "ingest",
            "--format",
            "jsonl",
            jsonl.to_str().unwrap(),
        ])
        .ok();
    let reuse = wait_until("the three reuse flows", Duration::from_secs(60), || {
        let list = flows(
            &server,
            &[
                "--to",
                &format!("ip:{ip_b}"),
                "--from",
                &format!("ip:{ip_a}"),
            ],
        );
        let mine: Vec<Value> = list
            .into_iter()
            .filter(|f| {
                let src = f["flow"]["src"].as_str().unwrap();
                f["flow"]["reporter"]["kind"] == "file"
                    && [":41001", ":41002", ":41003"]
                        .iter()
                        .any(|p| src.ends_with(p))
            })
            .collect();
        (mine.len() == 3).then_some(mine)
    });
    for f in &reuse {
        let src = f["flow"]["src"].as_str().unwrap();
        let end = &f["src"];
        if src.ends_with(":41001") {
            assert_eq!(
                end_container(end),
                Some(a_id.as_str()),
                "before the switch: A, {f}"
            );
        } else if src.ends_with(":41003") {
            assert_eq!(
                end_container(end),
                Some(c.id.as_str()),
                "after the switch: C, {f}"
            );
        } else {
            assert_eq!(end["kind"], "unattributed", "in the gap: nobody, {f}");
        }
    }
    // Never C for A's time, in anything stored.
    for f in flows(&server, &["--from", &format!("ip:{ip_a}")]) {
        if end_container(&f["src"]) == Some(c.id.as_str()) {
            assert!(
                f["flow"]["start_ms"].as_i64().unwrap() >= c_first,
                "C named for A's time: {f}"
            );
        }
    }
    let stats = server.json(&["flows", "stats"]);
    assert!(
        stats["ingested"]["collector"].as_u64().unwrap() >= 12,
        "{stats}"
    );
    assert!(stats["rejected"].as_object().is_some(), "{stats}");
    drop(c);
    drop(b);
}
