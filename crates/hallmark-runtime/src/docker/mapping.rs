//! Engine records to [`Workload`]s: a container inspect (or, when that
//! failed, its listing summary) mapped field by field, and the cgroup path
//! dockerd gives a container. Pure functions, no I/O.

use std::collections::BTreeMap;

use bollard::models::{ContainerInspectResponse, ContainerSummary, NetworkSettings};
use hallmark_core::cgroup::systemd;
use hallmark_core::{Compose, Confidence, RuntimeSource, Workload, WorkloadState};

use super::CgroupDriver;

/// Docker Compose labels.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";

/// Go's zero `time.Time`, which the engine prints for "never".
const GO_ZERO_TIME_PREFIX: &str = "0001-01-01T00:00:00";

/// The record for an inspected container, except the image digest and the
/// `/proc` cgroup, which take further I/O.
pub(super) fn map_inspect(
    c: &ContainerInspectResponse,
    driver: CgroupDriver,
) -> Result<Workload, String> {
    let id =
        c.id.clone()
            .filter(|id| !id.is_empty())
            .ok_or("inspect: container without an Id")?;
    let mut w = Workload::partial(&id, RuntimeSource::Docker, "");
    w.confidence = Confidence::Full;
    w.name = c
        .name
        .as_deref()
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .unwrap_or_default();
    w.image_id = c.image.clone().unwrap_or_default();
    if let Some(config) = &c.config {
        w.image = config.image.clone().unwrap_or_default();
        w.labels = config
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
    }
    w.compose = compose_from_labels(&w.labels);
    if let Some(hc) = &c.host_config {
        w.network_mode = hc.network_mode.clone().unwrap_or_default();
        w.cgroup = derive_cgroup(driver, hc.cgroup_parent.as_deref().unwrap_or(""), &id);
    } else {
        w.cgroup = derive_cgroup(driver, "", &id);
    }
    if let Some(ns) = &c.network_settings {
        w.ips = collect_ips(ns);
    }
    w.created_at_ms = parse_docker_time("Created", c.created.as_deref().unwrap_or(""))?;
    if let Some(st) = &c.state {
        w.state = map_state(st.status.as_ref().map_or("", |s| s.as_ref()));
        if st.running == Some(true) {
            w.pid = st
                .pid
                .filter(|p| *p > 0)
                .and_then(|p| u32::try_from(p).ok());
        }
        w.started_at_ms =
            parse_docker_time("State.StartedAt", st.started_at.as_deref().unwrap_or(""))?;
        if w.state == WorkloadState::Stopped {
            w.finished_at_ms =
                parse_docker_time("State.FinishedAt", st.finished_at.as_deref().unwrap_or(""))?;
            w.exit_code = st.exit_code;
        }
    }
    Ok(w)
}

/// What the listing alone says about a container whose inspect failed.
pub(super) fn partial_from_summary(s: &ContainerSummary, reason: &str) -> Workload {
    let id = s.id.clone().unwrap_or_default();
    let mut w = Workload::partial(&id, RuntimeSource::Docker, reason);
    w.name = s
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .unwrap_or_default();
    w.image = s.image.clone().unwrap_or_default();
    w.image_id = s.image_id.clone().unwrap_or_default();
    w.labels = s
        .labels
        .as_ref()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    w.compose = compose_from_labels(&w.labels);
    w.state = map_state(s.state.as_ref().map_or("", |st| st.as_ref()));
    w
}

/// Engine state → record state. `stopping` still has a process.
fn map_state(status: &str) -> WorkloadState {
    match status {
        "created" => WorkloadState::Created,
        "running" | "restarting" | "stopping" => WorkloadState::Running,
        "paused" => WorkloadState::Paused,
        "exited" | "dead" | "removing" => WorkloadState::Stopped,
        _ => WorkloadState::Unknown,
    }
}

/// An engine timestamp (RFC 3339, nanoseconds) in unix milliseconds; empty
/// or Go's zero time means "never" and gives 0.
fn parse_docker_time(field: &str, value: &str) -> Result<i64, String> {
    if value.is_empty() || value.starts_with(GO_ZERO_TIME_PREFIX) {
        return Ok(0);
    }
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{field} `{value}`: not an RFC 3339 time ({e})"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{field} `{value}`: out of range"))
}

/// Compose markers, when either the project or the service label is set.
fn compose_from_labels(labels: &BTreeMap<String, String>) -> Option<Compose> {
    let project = labels.get(COMPOSE_PROJECT);
    let service = labels.get(COMPOSE_SERVICE);
    if project.is_none() && service.is_none() {
        return None;
    }
    Some(Compose {
        project: project.cloned().unwrap_or_default(),
        service: service.cloned().unwrap_or_default(),
        oneoff: labels
            .get(COMPOSE_ONEOFF)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    })
}

/// Every network's IPv4 and global IPv6 address, networks in name order
/// (the engine's map has none), without duplicates.
fn collect_ips(ns: &NetworkSettings) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(networks) = &ns.networks else {
        return out;
    };
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    for name in names {
        let ep = &networks[name];
        for ip in [&ep.ip_address, &ep.global_ipv6_address]
            .into_iter()
            .flatten()
        {
            if !ip.is_empty() && !out.contains(ip) {
                out.push(ip.clone());
            }
        }
    }
    out
}

/// The cgroup path dockerd gives a container, from its driver and the
/// container's `CgroupParent`.
fn derive_cgroup(driver: CgroupDriver, parent: &str, id: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => {
            let parent = parent.trim_end_matches('/');
            let parent = if parent.is_empty() { "/docker" } else { parent };
            if parent.starts_with('/') {
                format!("{parent}/{id}")
            } else {
                format!("/{parent}/{id}")
            }
        }
        CgroupDriver::Systemd => {
            let slice = if parent.is_empty() {
                "system.slice"
            } else {
                parent
            };
            // dockerd refuses a parent that is not a valid slice name under
            // this driver, so an invalid one names no cgroup.
            systemd::unit_path(slice, &format!("docker-{id}.scope")).unwrap_or_default()
        }
        CgroupDriver::Unknown => String::new(),
    }
}

/// The cgroup v2 path in `/proc/<pid>/cgroup` (the `0::` line).
pub(super) fn unified_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|p| p.starts_with('/') && *p != "/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerState, ContainerStateStatusEnum, EndpointSettings, HostConfig,
    };
    use std::collections::HashMap;

    const ID: &str = "8b448499c04181d4d612cb5389fbc5d09a1249b3b59a4967771033c7d2ec5314";

    #[test]
    fn state_mapping() {
        let cases = [
            ("created", WorkloadState::Created),
            ("running", WorkloadState::Running),
            ("restarting", WorkloadState::Running),
            ("stopping", WorkloadState::Running),
            ("paused", WorkloadState::Paused),
            ("exited", WorkloadState::Stopped),
            ("dead", WorkloadState::Stopped),
            ("removing", WorkloadState::Stopped),
            ("", WorkloadState::Unknown),
            ("Running", WorkloadState::Unknown),
        ];
        for (input, want) in cases {
            assert_eq!(map_state(input), want, "{input:?}");
        }
        // The bollard enums print the engine's words.
        assert_eq!(
            map_state(ContainerStateStatusEnum::RESTARTING.as_ref()),
            WorkloadState::Running
        );
    }

    #[test]
    fn timestamps() {
        let cases: [(&str, Result<i64, ()>); 8] = [
            ("", Ok(0)),
            ("0001-01-01T00:00:00Z", Ok(0)),
            ("1970-01-01T00:00:01Z", Ok(1000)),
            ("2026-11-23T22:03:40.34473771Z", Ok(1_795_471_420_344)),
            ("2026-11-23T22:03:40.572864319Z", Ok(1_795_471_420_572)),
            ("2026-11-23T23:03:40.5+01:00", Ok(1_795_471_420_500)),
            ("yesterday", Err(())),
            ("2026-11-23 22:03:40", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_docker_time("Created", input);
            match want {
                Ok(ms) => assert_eq!(got, Ok(ms), "{input:?}"),
                Err(()) => {
                    let e = got.expect_err(input);
                    assert!(e.contains("Created") && e.contains(input), "{e}");
                }
            }
        }
    }

    #[test]
    fn compose_labels() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let compose = |p: &str, s: &str, o: bool| {
            Some(Compose {
                project: p.into(),
                service: s.into(),
                oneoff: o,
            })
        };
        let cases = [
            (labels(&[("app", "web")]), None),
            (
                labels(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "web")]),
                compose("shop", "web", false),
            ),
            (
                labels(&[
                    (COMPOSE_PROJECT, "shop"),
                    (COMPOSE_SERVICE, "web"),
                    (COMPOSE_ONEOFF, "True"),
                ]),
                compose("shop", "web", true),
            ),
            (
                labels(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_ONEOFF, "False")]),
                compose("shop", "", false),
            ),
            (labels(&[(COMPOSE_SERVICE, "db")]), compose("", "db", false)),
            (labels(&[(COMPOSE_ONEOFF, "True")]), None),
        ];
        for (input, want) in cases {
            assert_eq!(compose_from_labels(&input), want, "{input:?}");
        }
    }

    fn endpoint(v4: &str, v6: &str) -> EndpointSettings {
        EndpointSettings {
            ip_address: Some(v4.into()),
            global_ipv6_address: Some(v6.into()),
            ..Default::default()
        }
    }

    #[test]
    fn ip_collection() {
        let ns = NetworkSettings {
            networks: Some(HashMap::from([
                ("zeta".to_string(), endpoint("10.0.2.5", "")),
                ("alpha".to_string(), endpoint("10.0.1.5", "fd00::5")),
                ("none".to_string(), endpoint("", "")),
                ("dup".to_string(), endpoint("10.0.1.5", "")),
                (
                    "unset".to_string(),
                    EndpointSettings {
                        ip_address: None,
                        ..Default::default()
                    },
                ),
            ])),
            ..Default::default()
        };
        assert_eq!(collect_ips(&ns), vec!["10.0.1.5", "fd00::5", "10.0.2.5"]);
        assert!(collect_ips(&NetworkSettings::default()).is_empty());
    }

    #[test]
    fn cgroup_derivation() {
        let cases = [
            (CgroupDriver::Cgroupfs, "", format!("/docker/{ID}")),
            (CgroupDriver::Cgroupfs, "/custom/", format!("/custom/{ID}")),
            (CgroupDriver::Cgroupfs, "custom", format!("/custom/{ID}")),
            (
                CgroupDriver::Systemd,
                "",
                format!("/system.slice/docker-{ID}.scope"),
            ),
            (
                CgroupDriver::Systemd,
                "shop-web.slice",
                format!("/shop.slice/shop-web.slice/docker-{ID}.scope"),
            ),
            (
                CgroupDriver::Systemd,
                "-.slice",
                format!("/docker-{ID}.scope"),
            ),
            // Not a slice dockerd accepts under this driver: no guess.
            (CgroupDriver::Systemd, "shop--web.slice", String::new()),
            (CgroupDriver::Systemd, "/custom", String::new()),
            (CgroupDriver::Unknown, "/docker", String::new()),
        ];
        for (driver, parent, want) in cases {
            assert_eq!(
                derive_cgroup(driver, parent, ID),
                want,
                "{driver:?} {parent:?}"
            );
        }
    }

    #[test]
    fn unified_cgroup_line() {
        let hybrid = format!("9:name=systemd:/docker/{ID}\n1:cpu:/docker/{ID}\n0::/docker/{ID}\n");
        assert_eq!(
            unified_cgroup(&hybrid),
            Some(format!("/docker/{ID}").as_str())
        );
        assert_eq!(unified_cgroup("0::/\n"), None);
        assert_eq!(unified_cgroup("4:memory:/x\n"), None);
        assert_eq!(unified_cgroup(""), None);
    }

    fn inspected(status: ContainerStateStatusEnum, running: bool) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some(ID.into()),
            name: Some("/web-1".into()),
            image: Some("sha256:c8ad".into()),
            created: Some("2026-11-23T22:03:40.34473771Z".into()),
            config: Some(ContainerConfig {
                image: Some("shop/web:1".into()),
                labels: Some(HashMap::from([
                    (COMPOSE_PROJECT.to_string(), "shop".to_string()),
                    (COMPOSE_SERVICE.to_string(), "web".to_string()),
                    ("app".to_string(), "web".to_string()),
                ])),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            state: Some(ContainerState {
                status: Some(status),
                running: Some(running),
                pid: Some(if running { 880 } else { 0 }),
                exit_code: Some(3),
                started_at: Some("2026-11-23T22:03:40.572864319Z".into()),
                finished_at: Some("2026-11-23T22:04:00Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn inspect_mapping_running() {
        let w = map_inspect(
            &inspected(ContainerStateStatusEnum::RUNNING, true),
            CgroupDriver::Cgroupfs,
        )
        .unwrap();
        assert_eq!(w.container_id, ID);
        assert_eq!(w.name, "web-1");
        assert_eq!(w.image, "shop/web:1");
        assert_eq!(w.image_id, "sha256:c8ad");
        assert_eq!(w.labels.len(), 3);
        assert_eq!(w.compose.as_ref().map(|c| c.service.as_str()), Some("web"));
        assert_eq!(w.pid, Some(880));
        assert_eq!(w.cgroup, format!("/docker/{ID}"));
        assert_eq!(w.network_mode, "none");
        assert_eq!(w.state, WorkloadState::Running);
        assert_eq!(w.created_at_ms, 1_795_471_420_344);
        assert_eq!(w.started_at_ms, 1_795_471_420_572);
        // A running container's FinishedAt is a previous run's.
        assert_eq!(w.finished_at_ms, 0);
        assert_eq!(w.exit_code, None);
        assert_eq!(w.confidence, Confidence::Full);
        assert!(w.degraded_reason.is_empty());
    }

    #[test]
    fn inspect_mapping_stopped_and_malformed() {
        let w = map_inspect(
            &inspected(ContainerStateStatusEnum::EXITED, false),
            CgroupDriver::Unknown,
        )
        .unwrap();
        assert_eq!(w.state, WorkloadState::Stopped);
        assert_eq!(w.pid, None);
        assert_eq!(w.exit_code, Some(3));
        assert_eq!(w.finished_at_ms, 1_795_471_440_000);
        assert_eq!(w.cgroup, "");

        let mut bad = inspected(ContainerStateStatusEnum::EXITED, false);
        bad.created = Some("not a time".into());
        let e = map_inspect(&bad, CgroupDriver::Cgroupfs).unwrap_err();
        assert!(e.contains("Created `not a time`"), "{e}");

        let mut no_id = inspected(ContainerStateStatusEnum::EXITED, false);
        no_id.id = None;
        assert!(map_inspect(&no_id, CgroupDriver::Cgroupfs).is_err());
    }

    #[test]
    fn partial_from_listing() {
        let s = ContainerSummary {
            id: Some(ID.into()),
            names: Some(vec!["/web-1".into()]),
            image: Some("shop/web:1".into()),
            labels: Some(HashMap::from([(
                COMPOSE_PROJECT.to_string(),
                "shop".to_string(),
            )])),
            state: Some(bollard::models::ContainerSummaryStateEnum::EXITED),
            ..Default::default()
        };
        let w = partial_from_summary(&s, "docker inspect container: 500: boom");
        assert_eq!(w.confidence, Confidence::Partial);
        assert_eq!(w.degraded_reason, "docker inspect container: 500: boom");
        assert_eq!(w.name, "web-1");
        assert_eq!(w.state, WorkloadState::Stopped);
        assert_eq!(w.compose.as_ref().map(|c| c.project.as_str()), Some("shop"));
        assert!(w.selectors().is_empty());
    }
}
