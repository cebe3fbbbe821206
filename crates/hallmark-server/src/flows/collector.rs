//! The NetFlow v5/v9 and IPFIX collector: a UDP socket whose datagrams are
//! decoded by `hallmark_flows::collector` (templates per exporter and
//! observation domain) and offered to the pipeline. UDP has no
//! acknowledgement: when the pipeline is saturated, flows are counted and
//! dropped rather than letting the socket buffer overflow unseen.

use std::net::SocketAddr;
use std::sync::Arc;

use hallmark_flows::collector::{Collector, CollectorConfig};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::pipeline::{now_ms, Source};
use super::{FlowConfigError, FlowEngine};
use crate::metrics::ServerMetrics;

/// Largest datagram read (IPFIX messages are at most 65 535 bytes).
const MAX_DATAGRAM: usize = 65_535;

/// Binds the collector socket.
pub(crate) async fn bind(addr: SocketAddr) -> Result<UdpSocket, FlowConfigError> {
    UdpSocket::bind(addr)
        .await
        .map_err(|source| FlowConfigError::Collector { addr, source })
}

/// Reads datagrams until shutdown.
pub(crate) async fn run(
    socket: UdpSocket,
    engine: FlowEngine,
    metrics: Arc<ServerMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut collector = match Collector::new(CollectorConfig::default()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "flow collector settings refused; not collecting");
            return;
        }
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, exporter) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "flow collector: reading a datagram failed");
                    continue;
                }
            },
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        let out = collector.datagram(exporter, &buf[..n], now_ms());
        for e in &out.rejected {
            let reason = e.reason().as_str();
            engine.counters.reject(reason, 1);
            metrics.flow_rejected(reason, 1);
            tracing::debug!(exporter = %exporter, error = %e, "flow collector: record refused");
        }
        if !out.flows.is_empty() {
            engine.offer(out.flows, Source::Collector);
        }
    }
}
