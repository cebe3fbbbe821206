//! `hallmark policy validate`: a policy document checked where it is
//! written, every finding with its file, line and group or rule.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

mod common;

use std::time::Duration;

use common::*;

const GOOD: &str = "\
groups:
  web:
    - selector: docker:label:app:web
  payments-db:
    - spiffe_id: spiffe://example.org/payments/db/*
    - namespace: payments
      labels: {tier: db}
  corp:
    - cidr: 10.8.0.0/16
rules:
  - name: web-to-db
    from: [web]
    to: [payments-db]
    protocol: tcp
    ports: [\"5432\", \"8000-8100\"]
    action: allow
    mode: enforce
    priority: 100
default: allow
";

fn validate(dir: &std::path::Path, text: &str, extra: &[&str]) -> Output {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = hallmark_cmd(&["policy", "validate", "-f"]);
    cmd.arg(&path).args(extra);
    run(&mut cmd, Duration::from_secs(30))
}

#[test]
fn a_good_document_is_summed_up_and_a_bad_one_refused_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), GOOD, &[]).ok();
    assert!(
        out.stdout
            .contains("valid: 3 groups, 1 rule, default allow"),
        "{out}"
    );

    let bad = GOOD
        .replace("to: [payments-db]", "to: [pay-db]")
        .replace("8000-8100", "8100-8000")
        .replace("cidr: 10.8.0.0/16", "cidr: 10.8.0.0/33");
    let file = dir.path().join("policy.yaml").display().to_string();
    validate(dir.path(), &bad, &[]).fails().stderr_has(&[
        &format!("{file}:9: group `corp`: "),
        &format!("{file}:13: rule `web-to-db`: unknown group `pay-db` in to"),
        &format!("{file}:15: rule `web-to-db`: ports: range 8100-8000 is reversed"),
        "policy refused: 3 errors",
    ]);

    let out = validate(dir.path(), &bad, &["--json"]).fails();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    let lines: Vec<u64> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [9, 13, 15], "{v}");
    assert_eq!(v["errors"][1]["subject"]["name"], "web-to-db", "{v}");

    // Not YAML at all: the line of the fault.
    validate(dir.path(), "groups:\n  web: [\n", &[])
        .fails()
        .stderr_has(&[&format!("{file}:")]);
}
