#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hallmark_bpf::{Outcome, TcpEvent, UdpFlow};
use hallmark_core::{PodInfo, Workload, WorkloadState};
use hallmark_flows::{Initiator, Owner, Protocol, Side, TcpOutcome};

use super::cgroups::{tag_of_path, unit_of_path, CgroupResolver, ContainerLookup, LocalTag};
use super::convert::{tcp_flow, udp_flow, Clock};
use super::*;

const A: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
const B: &str = "bbbb000000000000000000000000000000000000000000000000000000000002";
const C: &str = "cccc000000000000000000000000000000000000000000000000000000000003";

#[derive(Default)]
struct Fake(HashMap<String, Workload>);

impl Fake {
    fn with(mut self, id: &str, mode: &str, pod: Option<&str>) -> Self {
        let mut w = crate::inventory::scripted::running(id);
        w.network_mode = mode.into();
        w.state = WorkloadState::Running;
        w.ips = vec!["10.0.0.5".into()];
        w.pod = pod.map(|uid| PodInfo {
            uid: uid.into(),
            ..Default::default()
        });
        self.0.insert(id.into(), w);
        self
    }
}

impl ContainerLookup for Fake {
    fn workload(&self, id: &str) -> Option<Workload> {
        self.0.get(id).cloned()
    }
    fn pod_workloads(&self, uid: &str) -> Vec<Workload> {
        self.0
            .values()
            .filter(|w| w.pod.as_ref().is_some_and(|p| p.uid == uid))
            .cloned()
            .collect()
    }
}

fn container(id: &str, by_port: bool) -> LocalTag {
    LocalTag {
        container_id: Some(id.into()),
        unit: String::new(),
        by_port,
    }
}

#[test]
fn a_cgroup_path_names_its_container_or_the_node_and_unit() {
    let inv = Fake::default()
        .with(A, "bridge", None)
        .with(B, "host", None)
        .with(C, &format!("container:{A}"), None);
    assert_eq!(
        tag_of_path(&format!("/docker/{A}"), &inv),
        container(A, false)
    );
    // Host network: only its ports of the node's address are its own.
    assert_eq!(
        tag_of_path(&format!("/docker/{B}"), &inv),
        container(B, true)
    );
    // In another container's network namespace: that container's address.
    assert_eq!(
        tag_of_path(&format!("/docker/{C}"), &inv),
        container(A, false)
    );
    // A container the inventory does not know yet is still a container.
    let unknown = "dddd000000000000000000000000000000000000000000000000000000000004";
    assert_eq!(
        tag_of_path(&format!("/system.slice/docker-{unknown}.scope"), &inv),
        container(unknown, false)
    );
    assert_eq!(
        tag_of_path("/system.slice/ssh.service", &inv),
        LocalTag::node("ssh.service".into())
    );
    assert_eq!(tag_of_path("/", &inv), LocalTag::node(String::new()));
    assert_eq!(
        unit_of_path("/user.slice/user-0.slice/session-4.scope"),
        "session-4.scope"
    );
    assert_eq!(unit_of_path("/system.slice"), "");
}

#[test]
fn a_pods_containers_are_tagged_as_the_container_speaking_for_its_ip() {
    let inv = Fake::default()
        .with(B, "pod", Some("u1"))
        .with(A, "pod", Some("u1"))
        .with(C, "pod", Some("u2"));
    let path = |id: &str| format!("/kubepods/besteffort/podu1/{id}");
    // The lowest running container ID of the pod, as the heartbeat says.
    assert_eq!(tag_of_path(&path(B), &inv), container(A, false));
    assert_eq!(tag_of_path(&path(A), &inv), container(A, false));
    assert_eq!(
        tag_of_path(&format!("/kubepods/besteffort/podu2/{C}"), &inv),
        container(C, false)
    );
}

#[test]
fn the_resolver_learns_cgroup_ids_from_the_directory_inodes() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("system.slice/web.service");
    std::fs::create_dir_all(&unit).unwrap();
    let mut r = CgroupResolver::new(dir.path().to_path_buf(), &["/".to_string()]);
    let ino = std::fs::metadata(&unit).unwrap().ino();
    assert_eq!(r.path(ino), Some("/system.slice/web.service"));
    let root = std::fs::metadata(dir.path()).unwrap().ino();
    assert_eq!(r.path(root), Some("/"));
    assert_eq!(
        r.tag(ino, &Fake::default()),
        Some(LocalTag::node("web.service".into()))
    );
    // A cgroup made later is found by a walk once one is due; an ID that
    // is nowhere costs at most one walk per interval.
    let docker = dir.path().join(format!("docker/{A}"));
    std::fs::create_dir_all(&docker).unwrap();
    let ino = std::fs::metadata(&docker).unwrap().ino();
    std::thread::sleep(cgroups::RESCAN_EVERY);
    assert_eq!(r.tag(ino, &Fake::default()), Some(container(A, false)));
    let scans = r.scans();
    assert_eq!(r.path(u64::MAX), None);
    assert_eq!(r.path(u64::MAX - 1), None);
    assert!(r.scans() <= scans + 1, "{} walks", r.scans() - scans);

    // An agent speaking for one subtree claims only its sockets.
    let mut sub = CgroupResolver::new(
        dir.path().to_path_buf(),
        &["/system.slice/".to_string(), "/nowhere".to_string()],
    );
    let web = std::fs::metadata(&unit).unwrap().ino();
    assert_eq!(
        sub.resolve(web, &Fake::default()),
        cgroups::Resolved::Tag(LocalTag::node("web.service".into()))
    );
    assert_eq!(
        sub.resolve(ino, &Fake::default()),
        cgroups::Resolved::Outside
    );
    assert_eq!(
        sub.resolve(root, &Fake::default()),
        cgroups::Resolved::Outside
    );
    assert_eq!(
        sub.resolve(u64::MAX, &Fake::default()),
        cgroups::Resolved::Outside
    );
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp_event(initiated: bool) -> TcpEvent {
    TcpEvent {
        cgroup_id: 7,
        local: addr(if initiated {
            "10.0.0.1:40000"
        } else {
            "10.0.0.2:5432"
        }),
        remote: addr(if initiated {
            "10.0.0.2:5432"
        } else {
            "10.0.0.1:40000"
        }),
        initiated,
        start_ns: 1_000_000_000,
        end_ns: 3_500_000_000,
        bytes_sent: if initiated { 100_000 } else { 5_000 },
        bytes_received: if initiated { 5_000 } else { 100_000 },
        packets_sent: 10,
        packets_received: 20,
        retransmits: 2,
        srtt_us: 150,
        outcome: Outcome::Established,
        sock: 1,
    }
}

#[test]
fn both_ends_of_a_connection_report_the_same_oriented_flow() {
    let clock = Clock::with_offset_ns(1_700_000_000_000_000_000);
    let tag = container(A, false);
    let client = tcp_flow(&tcp_event(true), Some(&tag), "ctx", &clock);
    let server = tcp_flow(&tcp_event(false), Some(&tag), "ctx", &clock);
    for f in [&client, &server] {
        assert_eq!(f.src, addr("10.0.0.1:40000"));
        assert_eq!(f.dst, addr("10.0.0.2:5432"));
        assert_eq!(f.initiator, Initiator::Source);
        assert_eq!(f.protocol, Protocol::Tcp);
        assert_eq!(f.bytes_sent, 100_000, "initiator to acceptor");
        assert_eq!(f.bytes_received, 5_000);
        assert_eq!(f.start_ms, 1_700_000_001_000);
        assert_eq!(f.end_ms, 1_700_000_003_500);
        assert_eq!(f.outcome, Some(TcpOutcome::Established));
        assert_eq!(f.retransmits, 2);
        assert_eq!(f.rtt_us, Some(150));
        f.validate().unwrap();
    }
    assert_eq!(client.packets_sent, 10);
    assert_eq!(server.packets_sent, 20);
    assert_eq!(client.local.as_ref().unwrap().side, Side::Source);
    assert_eq!(server.local.as_ref().unwrap().side, Side::Destination);
    assert_eq!(
        client.local.as_ref().unwrap().owner,
        Owner::Workload {
            context: "ctx".into(),
            node: String::new(),
            container_id: A.into()
        }
    );
    // No tag (a cgroup gone before it was read): the flow still counts,
    // with both ends left to the ownership index.
    assert!(tcp_flow(&tcp_event(true), None, "ctx", &clock)
        .local
        .is_none());
    let mut refused = tcp_event(true);
    refused.outcome = Outcome::Refused;
    refused.srtt_us = 0;
    let f = tcp_flow(
        &refused,
        Some(&LocalTag::node("a.service".into())),
        "ctx",
        &clock,
    );
    assert_eq!(f.outcome, Some(TcpOutcome::Refused));
    assert_eq!(f.rtt_us, None);
    let local = f.local.unwrap();
    assert_eq!(local.unit, "a.service");
    assert!(matches!(local.owner, Owner::Node { .. }));
}

#[test]
fn a_udp_conversation_is_oriented_by_its_first_packet() {
    let clock = Clock::with_offset_ns(1_700_000_000_000_000_000);
    let u = UdpFlow {
        cgroup_id: 1,
        local: addr("10.0.0.2:53"),
        remote: addr("10.0.0.1:33333"),
        initiated: false,
        first_ns: 0,
        last_ns: 2_000_000,
        bytes_sent: 120,
        packets_sent: 1,
        bytes_received: 40,
        packets_received: 1,
        closed: true,
    };
    let f = udp_flow(&u, Some(&container(B, true)), "ctx", &clock);
    assert_eq!(f.src, addr("10.0.0.1:33333"));
    assert_eq!(f.dst, addr("10.0.0.2:53"));
    assert_eq!((f.bytes_sent, f.bytes_received), (40, 120));
    assert_eq!(f.outcome, None);
    let local = f.local.as_ref().unwrap();
    assert_eq!(local.side, Side::Destination);
    assert!(local.by_port);
    f.validate().unwrap();
}

#[test]
fn flags_are_checked_with_their_names() {
    assert_eq!("auto".parse::<CaptureMode>(), Ok(CaptureMode::Auto));
    assert_eq!("off".parse::<CaptureMode>(), Ok(CaptureMode::Off));
    let e = "yes".parse::<CaptureMode>().unwrap_err();
    assert!(e.contains("yes") && e.contains("auto, on or off"), "{e}");
    let c = CaptureConfig {
        udp_idle: Duration::from_millis(10),
        ..CaptureConfig::default()
    };
    assert!(c.validate().unwrap_err().contains("udp_idle"));
    let c = CaptureConfig {
        cgroups: vec!["/a/../b".into()],
        ..CaptureConfig::default()
    };
    assert!(c.validate().unwrap_err().contains("flow_cgroup `/a/../b`"));
    assert_eq!(
        CaptureConfig::default().report_interval,
        Duration::from_secs(30)
    );
    assert_eq!(CaptureConfig::default().udp_idle, Duration::from_secs(30));
    assert_eq!(CaptureConfig::default().mode, CaptureMode::Auto);
}

#[test]
fn host_network_listeners_claim_their_port_on_the_node_addresses() {
    use crate::flows::{port_claim_addresses, PortClaim};
    let node = [
        "192.168.1.5".parse().unwrap(),
        "fd00::5".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
    ];
    let claims = [
        PortClaim {
            ip: "0.0.0.0".parse().unwrap(),
            port: 8080,
            container_id: A.into(),
        },
        PortClaim {
            ip: "127.0.0.1".parse().unwrap(),
            port: 9000,
            container_id: A.into(),
        },
    ];
    let got: Vec<(String, u32)> = port_claim_addresses(&claims, &node)
        .into_iter()
        .map(|a| (a.ip, a.port))
        .collect();
    // v4 wildcard: every usable v4 address; loopback never identifies.
    assert_eq!(got, vec![("192.168.1.5".to_string(), 8080)]);
}
