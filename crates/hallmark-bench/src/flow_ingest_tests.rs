use super::*;
use hallmark_flows::collector::{Collector, CollectorConfig};

#[test]
fn flows_run_between_distinct_workloads_within_the_hour() {
    let ws = workloads();
    let now = 1_750_000_000_000;
    let input = flows(&ws, 5_000, now);
    assert_eq!(input.len(), 5_000);
    for (f, a, b) in &input {
        assert_ne!(a, b);
        assert_eq!(f.src.ip(), IpAddr::V4(ws[*a].ip));
        assert_eq!(f.dst.ip(), IpAddr::V4(ws[*b].ip));
        assert!(f.start_ms >= now - 3_600_000 && f.end_ms < now, "{f:?}");
        assert!(f.end_ms >= f.start_ms);
    }
    // Every flow lies inside its owners' heartbeats, with one after it.
    let ev = evidence(&ws, now);
    assert_eq!(
        ev.len(),
        ws.len() * (EVIDENCE_SPAN_MS / HEARTBEAT_MS + 1) as usize
    );
    let first_ev = ev.iter().map(|e| e.at_ms).min().unwrap();
    let last_ev = ev.iter().map(|e| e.at_ms).max().unwrap();
    assert!(input
        .iter()
        .all(|(f, _, _)| f.start_ms > first_ev && f.start_ms < last_ev));
}

#[test]
fn v9_datagrams_decode_to_the_same_flows() {
    let ws = workloads();
    let now = unix_millis(SystemTime::now());
    let input = flows(&ws, 3 * V9_RECORDS + 7, now);
    let mut collector = Collector::new(CollectorConfig::default()).unwrap();
    let exporter: SocketAddr = "192.0.2.9:2055".parse().unwrap();
    let boot = now - 2 * 3_600_000;
    let mut buf = Vec::new();
    let mut decoded = Vec::new();
    for (i, chunk) in input.chunks(V9_RECORDS).enumerate() {
        v9_datagram(
            &mut buf,
            (now / 1000) as u32,
            boot,
            i as u32,
            i == 0,
            chunk.iter().map(|(f, _, _)| f),
        )
        .unwrap();
        assert_eq!(buf.len() % 4, 0, "flowsets are padded to 4 bytes");
        assert!(buf.len() <= 1500, "{} bytes", buf.len());
        let out = collector.datagram(exporter, &buf, now);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        decoded.extend(out.flows);
    }
    assert_eq!(decoded.len(), input.len());
    for (got, (want, _, _)) in decoded.iter().zip(&input) {
        assert_eq!(got.start_ms, want.start_ms);
        assert_eq!(got.end_ms, want.end_ms);
        assert_eq!((got.src, got.dst), (want.src, want.dst));
        assert_eq!(got.protocol, want.protocol);
        assert_eq!(got.bytes_sent, want.bytes_sent);
        assert_eq!(got.packets_sent, want.packets_sent);
    }
}

#[test]
fn data_without_its_template_is_refused_by_the_collector() {
    let ws = workloads();
    let now = unix_millis(SystemTime::now());
    let input = flows(&ws, 3, now);
    let mut buf = Vec::new();
    v9_datagram(
        &mut buf,
        (now / 1000) as u32,
        now - 3_600_000 * 2,
        0,
        false,
        input.iter().map(|(f, _, _)| f),
    )
    .unwrap();
    let mut collector = Collector::new(CollectorConfig::default()).unwrap();
    let out = collector.datagram("192.0.2.9:2055".parse().unwrap(), &buf, now);
    assert!(out.flows.is_empty());
}

#[test]
fn an_unknown_datastore_is_refused_by_name() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(FreshStore::open("mysql://x", scratch().unwrap()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--datastore `mysql://x`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_stores_every_flow_on_every_path() {
    let r = run(&FlowIngestArgs {
        flows: 2_000,
        datastore: "sqlite".into(),
    })
    .await
    .unwrap();
    for p in [&r.raw, &r.file, &r.collector] {
        assert_eq!(p.flows_stored, 2_000, "{p:?}");
        assert_eq!(p.attributed, 2_000, "every end is proven: {p:?}");
        assert!(p.flows_per_sec > 0.0);
    }
    assert!(r.file.share_of_raw.is_some() && r.collector.share_of_raw.is_some());
    assert_eq!(r.collector.socket_drops, 0);
}

#[test]
fn the_collector_socket_is_found_in_proc_net_udp() {
    let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  512: 0100007F:A1B2 00000000:0000 07 00000000:00003400 00:00000000 00000000  1000        0 12345 2 0000000000000000 19\n\
  513: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 12346 2 0000000000000000 0\n";
    assert_eq!(
        parse_proc_net_udp(text, 0xA1B2),
        Some(UdpSocketState {
            rx_queue: 0x3400,
            drops: 19
        })
    );
    assert_eq!(
        parse_proc_net_udp(text, 53),
        Some(UdpSocketState {
            rx_queue: 0,
            drops: 0
        })
    );
    assert_eq!(parse_proc_net_udp(text, 0xB2), None, "ports match whole");
}

#[test]
fn every_workload_is_its_own_graph_identity() {
    // Undescribed workloads are named by their short container ID: equal
    // prefixes would merge them into one identity in the graph.
    let ws = workloads();
    let keys: std::collections::HashSet<String> = ws
        .iter()
        .map(|w| Endpoint::bare(&w.owner).graph_key_text())
        .collect();
    assert_eq!(keys.len(), ws.len());
}
