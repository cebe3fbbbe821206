//! `hallmark policy apply|show|history|rollback` against real `hallmark
//! server run` processes: on SQLite with an agent connected, and two
//! servers sharing one PostgreSQL that see each other's revisions.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::postgres::*;
use common::*;

const WEB_DB: &str = "\
groups:
  web:
    - selector: docker:label:app:web
  db:
    - spiffe_id: spiffe://pv.test/db
rules:
  - name: web-to-db
    from: [web]
    to: [db]
    protocol: tcp
    ports: [\"5432\"]
    action: allow
default: deny
";

const OPEN: &str = "# every flow allowed while we look\ndefault: allow\n";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn apply_show_history_rollback_and_a_refused_document() {
    let server = TestServer::start("pv.test");
    let agent = TestAgent::start_with(&server, "pv-node", &["--runtime", "none"]);
    let dir = tempfile::tempdir().unwrap();

    // Nothing applied: show says so on stderr, prints nothing.
    let out = server.cli(&["policy", "show"]).ok();
    assert_eq!(out.stdout, "", "{out}");
    assert!(out.stderr.contains("no policy applied yet"), "{out}");
    assert_eq!(server.json(&["policy", "show"])["revision"], 0);

    let web_db = write(dir.path(), "web-db.yaml", WEB_DB);
    let out = server.cli(&["policy", "apply", "-f", &web_db]).ok();
    assert!(
        out.stdout
            .contains("applied policy revision 1: 2 groups, 1 rule, default deny"),
        "{out}"
    );
    let out = server.cli(&["policy", "show"]).ok();
    assert_eq!(out.stdout, WEB_DB, "show prints the document as applied");

    // show > file && apply -f file round-trips, and is unchanged.
    let shown = write(dir.path(), "shown.yaml", &out.stdout);
    let out = server.cli(&["policy", "apply", "-f", &shown]).ok();
    assert_eq!(
        out.stdout.trim(),
        "unchanged: revision 1 is already in force",
        "{out}"
    );

    let open = write(dir.path(), "open.yaml", OPEN);
    let answer = server.json(&["policy", "apply", "-f", &open]);
    assert_eq!(answer["revision"], 2);
    assert_eq!(answer["unchanged"], false);
    assert_eq!(answer["groups"], 0);
    assert_eq!(answer["default"], "allow");

    // A bad document: refused before reaching the server, naming file,
    // line and rule, and nothing changes.
    let bad = write(
        dir.path(),
        "bad.yaml",
        &WEB_DB.replace("to: [db]", "to: [pay-db]"),
    );
    let out = server.cli(&["policy", "apply", "-f", &bad]).fails();
    assert!(
        out.stderr.contains(&format!(
            "{bad}:9: rule `web-to-db`: unknown group `pay-db` in to"
        )),
        "{out}"
    );
    assert!(out.stderr.contains("nothing was applied"), "{out}");
    let out = server
        .cli(&["policy", "apply", "-f", &bad, "--json"])
        .fails();
    let refusal = out.json();
    assert_eq!(refusal["valid"], false, "{out}");
    assert_eq!(refusal["errors"][0]["line"], 9, "{out}");
    assert_eq!(server.json(&["policy", "show"])["revision"], 2);

    // Rollback: a new revision holding the old text.
    let out = server.cli(&["policy", "rollback", "1"]).ok();
    assert!(out.stdout.contains("applied policy revision 3"), "{out}");
    let shown = server.json(&["policy", "show"]);
    assert_eq!(shown["revision"], 3);
    assert_eq!(shown["document"], WEB_DB);
    assert_eq!(shown["rolled_back_from"], 1);
    assert_eq!(shown["source"], "rollback to 1");
    let out = server.cli(&["policy", "show", "--revision", "2"]).ok();
    assert_eq!(out.stdout, OPEN);
    let out = server.cli(&["policy", "show", "--revision", "9"]).fails();
    assert!(
        out.stderr
            .contains("policy revision 9 does not exist; `hallmark policy history` lists them"),
        "{out}"
    );
    server.cli(&["policy", "rollback", "9"]).fails();

    // History: newest first, with the source of each.
    let out = server.cli(&["policy", "history"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for header in [
        "REVISION", "APPLIED", "SOURCE", "GROUPS", "RULES", "DEFAULT",
    ] {
        assert!(lines[0].contains(header), "{out}");
    }
    assert!(
        lines[1].starts_with("3 ") && lines[1].contains("rollback to 1"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("2 ") && lines[2].contains("cli:"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("1 ") && lines[3].ends_with("deny"),
        "{out}"
    );
    let history = server.json(&["policy", "history"]);
    let revisions: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revisions, vec![3, 2, 1]);
    assert_eq!(history[2]["source"], format!("cli:{web_db}"), "{history}");

    // Standard input works as a file: the text in force again is unchanged.
    let mut cmd = hallmark_cmd(&["policy", "apply", "-f", "-"]);
    cmd.env("HALLMARK_ADMIN_SOCKET", &server.admin_socket)
        .stdin(std::fs::File::open(&web_db).unwrap());
    let out = run(&mut cmd, CLI_TIMEOUT).ok();
    assert_eq!(
        out.stdout.trim(),
        "unchanged: revision 3 is already in force",
        "{out}"
    );

    // The agent's stream carries the policy alongside entries, and entries
    // still reach it.
    let id = server.id("/after-policy");
    server.create_entry(&id, &agent.spiffe_id, &["unix:uid:0"], &[]);
    agent.wait_for_ids(&[&id], WAIT);
}

#[test]
fn two_servers_on_one_postgresql_follow_each_others_revisions() {
    let db = Database::create("hm_policy");
    let url = db.url();
    let (a_port, b_port) = (free_port(), free_port());
    let a_health = format!("127.0.0.1:{a_port}");
    let b_health = format!("127.0.0.1:{b_port}");
    let a = TestServer::start_with(
        "pv.test",
        &["--datastore", &url, "--health-listen", &a_health],
    );
    let b = TestServer::start_with(
        "pv.test",
        &["--datastore", &url, "--health-listen", &b_health],
    );
    let dir = tempfile::tempdir().unwrap();

    let web_db = write(dir.path(), "web-db.yaml", WEB_DB);
    a.cli(&["policy", "apply", "-f", &web_db]).ok();
    // B holds the revision applied through A within a second.
    wait_until(
        "B to put revision 1 in force",
        Duration::from_secs(1),
        || (policy_revision(&b_health) == Some(1)).then_some(()),
    );
    assert_eq!(b.cli(&["policy", "show"]).ok().stdout, WEB_DB);

    let open = write(dir.path(), "open.yaml", OPEN);
    let answer = b.json(&["policy", "apply", "-f", &open]);
    assert_eq!(answer["revision"], 2, "B numbers after A's revision");
    wait_until(
        "A to put revision 2 in force",
        Duration::from_secs(1),
        || (policy_revision(&a_health) == Some(2)).then_some(()),
    );
    // The same text through the other server: unchanged.
    let again = a.json(&["policy", "apply", "-f", &open]);
    assert_eq!(again["unchanged"], true);
    assert_eq!(again["revision"], 2);
    let history = a.json(&["policy", "history"]);
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
}

/// `hallmark_server_policy_revision` from a server's /metrics.
fn policy_revision(health: &str) -> Option<i64> {
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
        .find_map(|l| l.strip_prefix("hallmark_server_policy_revision "))
        .and_then(|v| v.trim().parse().ok())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
