//! `hallmark workloads`: the workload inventory as the server keeps it,
//! read through the admin API.
//!
//! Filters are parsed here with the same rules the server applies, so a bad
//! one fails before any connection with a message naming the flag.

use std::time::SystemTime;

use anyhow::{anyhow, Result};
use clap::Args;
use hallmark_core::time::unix_millis;
use hallmark_core::{SpiffeId, Workload, WorkloadState};
use hallmark_proto::hallmark as pb;
use hallmark_store::{ImageMatch, LabelMatch, StateFilter};
use serde::Serialize;

use crate::connect::{admin_client, admin_error, AdminArgs};
use crate::output::{age, or_dash, out, outln, print_json, table, timestamp};

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only workloads of this context (cluster or site name).
    #[arg(long)]
    pub context: Option<String>,
    /// Only workloads of this node: a node name or the agent's SPIFFE ID.
    #[arg(long)]
    pub node: Option<String>,
    /// Only workloads in this pod namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only this image: name with or without tag, image ID or digest.
    #[arg(long)]
    pub image: Option<String>,
    /// Only workloads with this container or pod label: `key=value`, or
    /// `key` for any value (repeat: all must match).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// `current` (not stopped) or one state: created, running, paused,
    /// stopped, unknown.
    #[arg(long)]
    pub state: Option<String>,
    #[command(flatten)]
    pub conn: AdminArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The container ID, or a unique prefix of at least 4 characters.
    pub container_id: String,
    #[command(flatten)]
    pub conn: AdminArgs,
}

/// A workload as `--json` prints it: the record's fields, then where and
/// when the server saw it.
#[derive(Debug, Serialize)]
struct WorkloadOut {
    #[serde(flatten)]
    workload: Workload,
    context_name: String,
    agent_id: String,
    first_seen_ms: i64,
    last_seen_ms: i64,
    /// `null` while current.
    stopped_at_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
struct EventOut {
    kind: String,
    at_ms: i64,
    record: Workload,
}

/// `workloads show --json`: the workload, its events, and the other agents
/// or contexts that report the same container.
#[derive(Debug, Serialize)]
struct ShowOut {
    #[serde(flatten)]
    workload: WorkloadOut,
    events: Vec<EventOut>,
    also_reported_by: Vec<String>,
}

pub async fn list(a: ListArgs) -> Result<()> {
    let req = list_request(&a)?;
    let mut c = admin_client(&a.conn).await?;
    let resp = c
        .list_workloads(req)
        .await
        .map_err(admin_error)?
        .into_inner();
    let workloads = resp
        .workloads
        .iter()
        .map(workload_out)
        .collect::<Result<Vec<_>>>()?;
    if a.conn.json {
        return print_json(&workloads);
    }
    if workloads.is_empty() {
        outln!("No workloads match.")?;
        return Ok(());
    }
    let now = now_ms();
    let rows = workloads.iter().map(|w| list_row(w, now)).collect();
    out!(
        "{}",
        table(
            &[
                "CONTEXT",
                "NODE",
                "CONTAINER",
                "NAME",
                "IMAGE",
                "POD",
                "STATE",
                "SINCE"
            ],
            rows
        )
    )?;
    Ok(())
}

pub async fn show(a: ShowArgs) -> Result<()> {
    let mut c = admin_client(&a.conn).await?;
    let resp = c
        .get_workload(pb::GetWorkloadRequest {
            container_id: a.container_id.clone(),
        })
        .await
        .map_err(admin_error)?;
    let also_reported_by: Vec<String> = resp
        .metadata()
        .get(hallmark_server::ALSO_REPORTED_BY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(", ").map(str::to_string).collect())
        .unwrap_or_default();
    let stored = resp.into_inner();
    let events = stored
        .events
        .iter()
        .map(|e| {
            let record = e
                .record
                .as_ref()
                .ok_or_else(|| anyhow!("server sent an event without its record"))?;
            Ok(EventOut {
                kind: e.kind.clone(),
                at_ms: e.at_ms,
                record: record_of(record)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let out = ShowOut {
        workload: workload_out(&stored)?,
        events,
        also_reported_by,
    };
    if a.conn.json {
        return print_json(&out);
    }
    out!("{}", render_show(&out, now_ms()))?;
    Ok(())
}

/// The request for `workloads list`, with every filter checked first.
fn list_request(a: &ListArgs) -> Result<pb::ListWorkloadsRequest> {
    if let Some(s) = &a.state {
        StateFilter::parse(s).map_err(|e| anyhow!("--state: {e}"))?;
    }
    for l in &a.labels {
        LabelMatch::parse(l).map_err(|e| anyhow!("--label: {e}"))?;
    }
    if let Some(i) = &a.image {
        ImageMatch::parse(i).map_err(|e| anyhow!("--image: {e}"))?;
    }
    if let Some(c) = &a.context {
        hallmark_server::inventory::validate_context_name(c)
            .map_err(|e| anyhow!("--context: {e}"))?;
    }
    if a.node.as_deref() == Some("") {
        return Err(anyhow!("--node: give a node name or an agent SPIFFE ID"));
    }
    if a.namespace.as_deref() == Some("") {
        return Err(anyhow!("--namespace: give a pod namespace"));
    }
    Ok(pb::ListWorkloadsRequest {
        context_name: a.context.clone().unwrap_or_default(),
        node: a.node.clone().unwrap_or_default(),
        namespace: a.namespace.clone().unwrap_or_default(),
        image: a.image.clone().unwrap_or_default(),
        labels: a.labels.clone(),
        state: a.state.clone().unwrap_or_default(),
    })
}

fn record_of(r: &pb::WorkloadRecord) -> Result<Workload> {
    Workload::try_from(r).map_err(|e| anyhow!("server sent an invalid workload record: {e}"))
}

fn workload_out(s: &pb::StoredWorkload) -> Result<WorkloadOut> {
    let record = s.record.as_ref().ok_or_else(|| {
        anyhow!(
            "server sent a workload of agent {} without its record",
            s.agent_id
        )
    })?;
    Ok(WorkloadOut {
        workload: record_of(record)?,
        context_name: s.context_name.clone(),
        agent_id: s.agent_id.clone(),
        first_seen_ms: s.first_seen_ms,
        last_seen_ms: s.last_seen_ms,
        stopped_at_ms: (s.stopped_at_ms != 0).then_some(s.stopped_at_ms),
    })
}

/// The node name of an agent ID (`spiffe://td/hallmark/agent/<node>`), or
/// the whole ID for any other.
fn node_name(agent_id: &str) -> String {
    SpiffeId::new(agent_id)
        .ok()
        .and_then(|id| id.agent_node().map(str::to_string))
        .unwrap_or_else(|| agent_id.to_string())
}

/// `ns/name` of a pod, or `project/service` of a Compose container.
fn pod_column(w: &Workload) -> String {
    if let Some(p) = &w.pod {
        format!("{}/{}", p.namespace, p.name)
    } else if let Some(c) = &w.compose {
        format!("{}/{}", c.project, c.service)
    } else {
        "-".into()
    }
}

fn since_column(w: &WorkloadOut, now: i64) -> String {
    match w.stopped_at_ms {
        Some(at) => format!("stopped {} ago", age(now - at)),
        None => {
            let from = if w.workload.started_at_ms > 0 {
                w.workload.started_at_ms
            } else {
                w.first_seen_ms
            };
            age(now - from)
        }
    }
}

fn list_row(w: &WorkloadOut, now: i64) -> Vec<String> {
    vec![
        w.context_name.clone(),
        node_name(&w.agent_id),
        w.workload.short_id().to_string(),
        or_dash(&w.workload.name),
        or_dash(&w.workload.image),
        pod_column(&w.workload),
        w.workload.state.to_string(),
        since_column(w, now),
    ]
}

/// A time with its age, or `-` when unknown (0).
fn when(ms: i64, now: i64) -> String {
    if ms <= 0 {
        "-".into()
    } else if ms <= now {
        format!("{} ({} ago)", timestamp(ms), age(now - ms))
    } else {
        timestamp(ms)
    }
}

fn render_show(s: &ShowOut, now: i64) -> String {
    let o = &s.workload;
    let w = &o.workload;
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: String| lines.push((k.to_string(), v));

    add("Container ID", w.container_id.clone());
    add("Context", o.context_name.clone());
    add(
        "Node",
        format!("{} ({})", node_name(&o.agent_id), o.agent_id),
    );
    add("Source", w.source.to_string());
    add("Name", or_dash(&w.name));
    add("Image", or_dash(&w.image));
    add("Image ID", or_dash(&w.image_id));
    add("Image digest", or_dash(&w.image_digest));
    let state = match (w.state, o.stopped_at_ms, w.exit_code) {
        (WorkloadState::Stopped, Some(at), Some(code)) => {
            format!("stopped {} ago, exit code {code}", age(now - at))
        }
        (WorkloadState::Stopped, Some(at), None) => format!("stopped {} ago", age(now - at)),
        (state, _, _) => state.to_string(),
    };
    add("State", state);
    let confidence = if w.degraded_reason.is_empty() {
        w.confidence.as_str().to_string()
    } else {
        format!("{} ({})", w.confidence.as_str(), w.degraded_reason)
    };
    add("Confidence", confidence);
    add("PID", w.pid.map_or("-".into(), |p| p.to_string()));
    add("Cgroup", or_dash(&w.cgroup));
    add("Network mode", or_dash(&w.network_mode));
    add(
        "IPs",
        if w.ips.is_empty() {
            "-".into()
        } else {
            w.ips.join(", ")
        },
    );
    for (k, v) in &w.labels {
        add("Label", format!("{k}={v}"));
    }
    if let Some(c) = &w.compose {
        let oneoff = if c.oneoff { " (one-off run)" } else { "" };
        add("Compose", format!("{}/{}{oneoff}", c.project, c.service));
    }
    if let Some(p) = &w.pod {
        add("Pod", format!("{}/{}", p.namespace, p.name));
        add("Pod UID", or_dash(&p.uid));
        add("Pod sandbox", or_dash(&p.sandbox_id));
        if !p.ips.is_empty() {
            add("Pod IPs", p.ips.join(", "));
        }
        for (k, v) in &p.labels {
            add("Pod label", format!("{k}={v}"));
        }
        for (k, v) in &p.annotations {
            add("Pod annotation", format!("{k}={v}"));
        }
    }
    add("Created", when(w.created_at_ms, now));
    add("Started", when(w.started_at_ms, now));
    add("Finished", when(w.finished_at_ms, now));
    add("First seen", when(o.first_seen_ms, now));
    add("Last seen", when(o.last_seen_ms, now));
    add(
        "Stopped at",
        o.stopped_at_ms
            .map_or("- (current)".into(), |at| when(at, now)),
    );
    for other in &s.also_reported_by {
        add(
            "Also reported by",
            format!("{other} (showing the most recently seen copy)"),
        );
    }

    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in &lines {
        out.push_str(&format!("{k:<width$} : {v}\n"));
    }
    out.push('\n');
    if s.events.is_empty() {
        out.push_str("No recorded events (they are kept for the retention window).\n");
        return out;
    }
    out.push_str(&format!("Events ({}):\n", s.events.len()));
    // Events of every agent reporting the container, in the order they
    // happened; the IPs say who held which address when.
    let rows = s.events.iter().map(event_row).collect();
    for line in table(&["TIME", "KIND", "STATE", "IPS"], rows).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn event_row(e: &EventOut) -> Vec<String> {
    let r = &e.record;
    let mut ips: Vec<&str> = r.ips.iter().map(String::as_str).collect();
    if let Some(p) = &r.pod {
        ips.extend(p.ips.iter().map(String::as_str));
    }
    let state = match r.exit_code {
        Some(code) if r.state == WorkloadState::Stopped => format!("stopped ({code})"),
        _ => r.state.to_string(),
    };
    vec![
        timestamp(e.at_ms),
        e.kind.clone(),
        state,
        if ips.is_empty() {
            "-".into()
        } else {
            ips.join(", ")
        },
    ]
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use std::collections::BTreeMap;

    use hallmark_core::{Compose, Confidence, PodInfo, RuntimeSource};

    use super::*;

    fn args() -> ListArgs {
        ListArgs {
            context: None,
            node: None,
            namespace: None,
            image: None,
            labels: vec![],
            state: None,
            conn: AdminArgs {
                admin_socket: None,
                admin_addr: None,
                admin_credentials: None,
                json: false,
            },
        }
    }

    #[test]
    fn bad_filters_name_the_flag_and_rule() {
        type Mutate = fn(&mut ListArgs);
        let cases: &[(Mutate, &str)] = &[
            (
                |a| a.state = Some("gone".into()),
                "--state: state `gone` is not one of current, created",
            ),
            (
                |a| a.labels = vec!["a=b".into(), "=x".into()],
                "--label: label `=x` has an empty key",
            ),
            (
                |a| a.image = Some("a b".into()),
                "--image: image `a b` must be",
            ),
            (
                |a| a.context = Some("prod/eu".into()),
                "--context: context_name `prod/eu` must be 1 to 63 characters",
            ),
            (|a| a.node = Some(String::new()), "--node:"),
        ];
        for (mutate, want) in cases {
            let mut a = args();
            mutate(&mut a);
            let msg = format!("{:#}", list_request(&a).unwrap_err());
            assert!(msg.contains(want), "want `{want}` in: {msg}");
        }
        let mut a = args();
        a.state = Some("current".into());
        a.labels = vec!["app".into(), "tier=web".into()];
        a.node = Some("n1".into());
        let req = list_request(&a).unwrap();
        assert_eq!(req.state, "current");
        assert_eq!(req.labels, vec!["app", "tier=web"]);
        assert_eq!(req.node, "n1");
    }

    #[test]
    fn node_names_and_pod_columns() {
        assert_eq!(node_name("spiffe://example.org/hallmark/agent/n1"), "n1");
        assert_eq!(
            node_name("spiffe://example.org/other/x"),
            "spiffe://example.org/other/x"
        );
        let mut w = Workload::partial("c", RuntimeSource::Docker, "");
        assert_eq!(pod_column(&w), "-");
        w.compose = Some(Compose {
            project: "shop".into(),
            service: "web".into(),
            oneoff: false,
        });
        assert_eq!(pod_column(&w), "shop/web");
        w.pod = Some(PodInfo {
            namespace: "payments".into(),
            name: "pay-0".into(),
            ..PodInfo::default()
        });
        assert_eq!(pod_column(&w), "payments/pay-0");
    }

    fn out(stopped_at_ms: Option<i64>) -> WorkloadOut {
        let mut w = Workload::partial(&"ab".repeat(32), RuntimeSource::Docker, "");
        w.confidence = Confidence::Full;
        w.name = "web".into();
        w.image = "shop/web:1".into();
        w.state = if stopped_at_ms.is_some() {
            WorkloadState::Stopped
        } else {
            WorkloadState::Running
        };
        w.started_at_ms = 1_000_000;
        w.exit_code = stopped_at_ms.map(|_| 137);
        w.labels.insert("app".into(), "web".into());
        WorkloadOut {
            workload: w,
            context_name: "prod".into(),
            agent_id: "spiffe://example.org/hallmark/agent/n1".into(),
            first_seen_ms: 2_000_000,
            last_seen_ms: 2_500_000,
            stopped_at_ms,
        }
    }

    #[test]
    fn list_rows_and_table() {
        let now = 1_000_000 + 300_000;
        let row = list_row(&out(None), now);
        assert_eq!(
            row,
            vec![
                "prod",
                "n1",
                "abababababab",
                "web",
                "shop/web:1",
                "-",
                "running",
                "5m"
            ]
        );
        let row = list_row(&out(Some(now - 180_000)), now);
        assert_eq!(row[6], "stopped");
        assert_eq!(row[7], "stopped 3m ago");
    }

    #[test]
    fn show_prints_every_field_and_the_events() {
        let mut o = out(Some(2_400_000));
        o.workload.pod = Some(PodInfo {
            uid: "u-1".into(),
            name: "pay-0".into(),
            namespace: "payments".into(),
            sandbox_id: "sb".into(),
            labels: BTreeMap::from([("team".into(), "money".into())]),
            annotations: BTreeMap::from([("note".into(), "x".into())]),
            ips: vec!["10.0.0.9".into()],
        });
        o.workload.pid = Some(4242);
        o.workload.cgroup = "/docker/abab".into();
        o.workload.network_mode = "bridge".into();
        o.workload.ips = vec!["172.17.0.2".into()];
        o.workload.confidence = Confidence::Partial;
        o.workload.degraded_reason = "inspect failed".into();
        let record = o.workload.clone();
        let s = ShowOut {
            workload: o,
            events: vec![EventOut {
                kind: "stopped".into(),
                at_ms: 2_400_000,
                record,
            }],
            also_reported_by: vec!["lab spiffe://example.org/hallmark/agent/n2".into()],
        };
        let text = render_show(&s, 2_460_000);
        for needle in [
            &format!("Container ID     : {}", "ab".repeat(32)),
            "Node             : n1 (spiffe://example.org/hallmark/agent/n1)",
            "State            : stopped 1m ago, exit code 137",
            "Confidence       : partial (inspect failed)",
            "PID              : 4242",
            "Cgroup           : /docker/abab",
            "Network mode     : bridge",
            "IPs              : 172.17.0.2",
            "Label            : app=web",
            "Pod              : payments/pay-0",
            "Pod label        : team=money",
            "Pod annotation   : note=x",
            "Pod IPs          : 10.0.0.9",
            "Stopped at       : 1970-01-01T00:40:00.000Z (1m ago)",
            "Also reported by : lab spiffe://example.org/hallmark/agent/n2",
            "Events (1):",
            "1970-01-01T00:40:00.000Z  stopped  stopped (137)  172.17.0.2, 10.0.0.9",
        ] {
            assert!(text.contains(needle), "want `{needle}` in:\n{text}");
        }
    }

    #[test]
    fn json_is_flat_with_server_fields() {
        let v = serde_json::to_value(out(None)).unwrap();
        assert_eq!(v["container_id"], "ab".repeat(32));
        assert_eq!(v["context_name"], "prod");
        assert_eq!(v["agent_id"], "spiffe://example.org/hallmark/agent/n1");
        assert_eq!(v["first_seen_ms"], 2_000_000);
        assert!(v["stopped_at_ms"].is_null());
        assert_eq!(v["labels"]["app"], "web");
        assert_eq!(v["state"], "running");
    }
}
