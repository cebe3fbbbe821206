//! What the flow end-to-end tests share: a Docker bridge network, the
//! `flows list` / `whois` calls, and readers of their JSON.

// A failed unwrap is the calling test's failure report.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::containers::{docker, unique_name, DockerContainer, BUSYBOX_IMAGE};
use super::TestServer;

pub fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A user-defined bridge network, removed when dropped.
pub struct Network {
    pub name: String,
    pub id: String,
}

impl Network {
    pub fn create(subnet: &str) -> Self {
        let name = unique_name("hm-flows");
        let out = docker(&["network", "create", "--subnet", subnet, &name]).ok();
        Network {
            name,
            id: out.stdout.trim().to_string(),
        }
    }

    /// A busybox container on this network at `ip`, named `prefix-<random>`,
    /// with the labels `k=v` given, running `sh -c script`; removed when
    /// dropped.
    pub fn busybox(
        &self,
        prefix: &str,
        ip: &str,
        labels: &[&str],
        script: &str,
    ) -> DockerContainer {
        let mut args = vec!["--network", &self.name, "--ip", ip];
        for l in labels {
            args.extend(["-l", l]);
        }
        args.extend([BUSYBOX_IMAGE, "sh", "-c", script]);
        DockerContainer::run_detached(&unique_name(prefix), &args)
    }

    /// The Linux bridge behind it.
    pub fn bridge(&self) -> String {
        format!("br-{}", &self.id[..12])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// A subnet no other test run is likely to hold.
pub fn subnet(n: u32) -> (String, String) {
    let n = 16 + (std::process::id() + n) % 200;
    (format!("172.29.{n}.0/24"), format!("172.29.{n}"))
}

pub fn flows(server: &TestServer, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["flows", "list", "--since", "1h", "--limit", "10000"];
    all.extend_from_slice(args);
    let v = server.json(&all);
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .clone()
}

pub fn end_container(end: &Value) -> Option<&str> {
    (end["kind"] == "workload").then(|| end["container_id"].as_str().unwrap())
}

pub fn has_id(end: &Value, id: &str) -> bool {
    end["spiffe_ids"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|v| v == id))
}

pub fn whois(server: &TestServer, ip: &str, at_ms: i64) -> Value {
    let at = format!("{}", at_ms as f64 / 1000.0);
    server.json(&["flows", "whois", ip, "--at", &at])
}

/// The range of `container` on `ip` as `whois` shows it.
pub fn range_of(answer: &Value, container: &str) -> Option<(i64, i64)> {
    answer["ranges"].as_array()?.iter().find_map(|r| {
        (end_container(&r["owner"]) == Some(container)).then(|| {
            (
                r["first_ms"].as_i64().unwrap(),
                r["last_ms"].as_i64().unwrap(),
            )
        })
    })
}
