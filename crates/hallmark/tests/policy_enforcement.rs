//! `hallmark policy enforcement [off|on]` against real `hallmark server
//! run` processes: the switch, its text and JSON, a refusal, a restart
//! that keeps it, and two servers sharing one PostgreSQL that follow each
//! other's switch within a second.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::postgres::*;
use common::*;

#[test]
fn off_on_and_the_state_in_text_and_json() {
    let mut server = TestServer::start("pe.test");

    let out = server.cli(&["policy", "enforcement"]).ok();
    assert_eq!(out.stdout.trim(), "policy enforcement: on", "{out}");
    let state = server.json(&["policy", "enforcement"]);
    assert_eq!(
        state,
        serde_json::json!({"enforcement": "on", "changed": false})
    );
    assert_eq!(server.json(&["policy", "show"])["enforcement"], "on");

    let out = server.cli(&["policy", "enforcement", "off"]).ok();
    assert!(
        out.stdout.contains("policy enforcement turned off")
            && out
                .stdout
                .contains("`hallmark policy enforcement on` puts it back"),
        "{out}"
    );
    let out = server.cli(&["policy", "enforcement", "off"]).ok();
    assert_eq!(
        out.stdout.trim(),
        "unchanged: policy enforcement is already off",
        "{out}"
    );
    let out = server.cli(&["policy", "enforcement"]).ok();
    assert!(out.stdout.starts_with("policy enforcement: off"), "{out}");
    assert_eq!(server.json(&["policy", "show"])["enforcement"], "off");

    // Only on and off exist; clap names the choices.
    let out = server.cli(&["policy", "enforcement", "maybe"]).fails();
    assert!(
        out.stderr.contains("maybe") && out.stderr.contains("on") && out.stderr.contains("off"),
        "{out}"
    );

    // Kept across a restart.
    server.restart();
    assert_eq!(
        server.json(&["policy", "enforcement"])["enforcement"],
        "off"
    );

    let answer = server.json(&["policy", "enforcement", "on"]);
    assert_eq!(
        answer,
        serde_json::json!({"enforcement": "on", "changed": true})
    );
    assert_eq!(
        server.json(&["policy", "enforcement", "on"]),
        serde_json::json!({"enforcement": "on", "changed": false})
    );
}

#[test]
fn two_servers_on_one_postgresql_follow_each_others_switch() {
    let db = Database::create("hm_enforce");
    let url = db.url();
    let (a_port, b_port) = (free_port(), free_port());
    let a_health = format!("127.0.0.1:{a_port}");
    let b_health = format!("127.0.0.1:{b_port}");
    let a = TestServer::start_with(
        "pe.test",
        &["--datastore", &url, "--health-listen", &a_health],
    );
    let b = TestServer::start_with(
        "pe.test",
        &["--datastore", &url, "--health-listen", &b_health],
    );
    assert_eq!(enforcement_metric(&b_health), Some(1));

    a.cli(&["policy", "enforcement", "off"]).ok();
    wait_until(
        "B to follow the switch turned off through A",
        Duration::from_secs(1),
        || (enforcement_metric(&b_health) == Some(0)).then_some(()),
    );
    assert_eq!(b.json(&["policy", "enforcement"])["enforcement"], "off");

    b.cli(&["policy", "enforcement", "on"]).ok();
    wait_until(
        "A to follow the switch turned on through B",
        Duration::from_secs(1),
        || (enforcement_metric(&a_health) == Some(1)).then_some(()),
    );
}

/// `hallmark_server_policy_enforcement` from a server's /metrics.
fn enforcement_metric(health: &str) -> Option<i64> {
    let mut s = TcpStream::connect(health).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {health}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("hallmark_server_policy_enforcement "))
        .and_then(|v| v.trim().parse().ok())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
