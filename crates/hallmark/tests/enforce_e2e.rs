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
//! - A policy change is in force at the next connect within a second.
//! - `hallmark policy enforcement off` lifts it within a second; `on`
//!   puts it back.
//! - `agent status` shows the mode, the revision in the kernel and that
//!   the maps are pinned.
//!
//! A second test kills an agent that pins (`--on-agent-exit keep`): the
//! policy stays enforced while no agent runs, and the restarted agent
//! takes the pinned programs over.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::time::{Duration, Instant};

use common::containers::*;
use common::flows::*;
use common::*;

const TD: &str = "enforce.test";

fn policy(extra_rule: &str) -> String {
    format!(
        "groups:
  web:
    - selector: docker:label:app:web
  payments-db:
    - selector: docker:label:app:payments-db
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
{extra_rule}default: deny
"
    )
}

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
    let agent = TestAgent::start_with(
        &server,
        &node,
        &[
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
    for app in ["web", "payments-db", "other"] {
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
    let run = |name: &str, ip: &str, app: &str, cmd: &str| {
        DockerContainer::run_detached(
            &unique_name(name),
            &[
                "--network",
                &net.name,
                "--ip",
                ip,
                "-l",
                &format!("app={app}"),
                BUSYBOX_IMAGE,
                "sh",
                "-c",
                cmd,
            ],
        )
    };
    let ip_b = format!("{prefix}.20");
    let a = run("hm-enf-a", &format!("{prefix}.10"), "web", "sleep 3600");
    let b = run(
        "hm-enf-b",
        &ip_b,
        "payments-db",
        "for p in 5432 22 8080 9000; do nc -ll -p $p -e /busybox cat & done; wait",
    );
    let c = run("hm-enf-c", &format!("{prefix}.30"), "other", "sleep 3600");
    // Before any policy: everything connects.
    wait_until("A → B:22 before the policy", WAIT, || {
        connect(&a, &format!("{ip_b} 22")).ok()
    });

    apply(&server, &policy(""));
    // The agent has the workloads' identities and the revision in the
    // kernel once A → B:22 is refused.
    let refused = wait_until("A → B:22 to be denied", Duration::from_secs(60), || {
        connect(&a, &format!("{ip_b} 22")).err()
    });
    assert!(
        refused.stderr.contains("not permitted") || refused.stdout.contains("not permitted"),
        "a denied connect fails with EPERM:\n{refused}"
    );
    if let Err(e) = connect(&a, &format!("{ip_b} 5432")) {
        panic!("web → payments-db:5432 is allowed:\n{e}");
    }
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
    let would = wait_until("the would-deny to be counted", WAIT, || {
        let st = status(&agent);
        let n = st["enforcement"]["decisions"]["would-deny"]
            .as_u64()
            .unwrap_or(0);
        (n > 0).then_some(n)
    });
    assert!(would >= 1);

    // The kernel's events are flows with its verdicts, kept by the server.
    let ip_a = format!("{prefix}.10");
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
    let denied = wait_until(
        "the denied flow A → B:22",
        Duration::from_secs(30),
        || event(22, "denied"),
    );
    assert_eq!(denied["flow"]["outcome"], "refused", "{denied:#}");
    assert_eq!(denied["flow"]["bytes_sent"], 0, "{denied:#}");

    // --- a policy change is in force at the next connect within 1 s ---------
    apply(
        &server,
        &policy(
            "  - name: web-to-db-ssh
    from: [web]
    to: [payments-db]
    protocol: tcp
    ports: [\"22\"]
    action: allow
",
        ),
    );
    let started = Instant::now();
    wait_until("A → B:22 to be allowed", Duration::from_secs(10), || {
        connect(&a, &format!("{ip_b} 22")).ok()
    });
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the change took {took:?} (apply, sync and install)"
    );

    // --- the fleet switch lifts enforcement, and puts it back ---------------
    server.cli(&["policy", "enforcement", "off"]).ok();
    let started = Instant::now();
    wait_until(
        "C → B:5432 to connect with enforcement off",
        Duration::from_secs(10),
        || connect(&c, &format!("{ip_b} 5432")).ok(),
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "switching off took {took:?}");
    let st = wait_until("agent status to show the switch", WAIT, || {
        let st = status(&agent);
        (st["enforcement"]["mode"] == "off").then_some(st)
    });
    assert_eq!(st["enforcement"]["fleet_off"], true, "{st:#}");
    server.cli(&["policy", "enforcement", "on"]).ok();
    wait_until(
        "C → B:5432 to be denied again",
        Duration::from_secs(10),
        || connect(&c, &format!("{ip_b} 5432")).err(),
    );
    drop((a, b, c));
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
        DockerContainer::run_detached(
            &unique_name(name),
            &[
                "--network",
                &net.name,
                "--ip",
                ip,
                "-l",
                &format!("app={app}"),
                BUSYBOX_IMAGE,
                "sh",
                "-c",
                cmd,
            ],
        )
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
    apply(&server, &policy(""));
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
    assert!(connect(&a, &format!("{ip_b} 22")).is_err(), "still denied");
    if let Err(e) = connect(&a, &format!("{ip_b} 5432")) {
        panic!("still allowed:\n{e}");
    }
    drop((a, b));
}
