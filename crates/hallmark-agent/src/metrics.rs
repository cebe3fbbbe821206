//! The agent's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub code: String,
}

pub struct AgentMetrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub svids_minted: Counter,
    pub svid_mint_failures: Counter,
    pub svids_cached: Gauge,
    pub server_connected: Gauge,
    pub ready: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hallmark_agent");
        let requests = Family::<RequestLabels, Counter>::default();
        let svids_minted = Counter::default();
        let svid_mint_failures = Counter::default();
        let svids_cached = Gauge::default();
        let server_connected = Gauge::default();
        let ready = Gauge::default();
        registry.register(
            "workload_api_requests",
            "Workload API calls by method and gRPC code",
            requests.clone(),
        );
        registry.register(
            "svids_minted",
            "X509-SVIDs obtained from the server",
            svids_minted.clone(),
        );
        registry.register(
            "svid_mint_failures",
            "X509-SVID signing requests that failed",
            svid_mint_failures.clone(),
        );
        registry.register(
            "svids_cached",
            "X509-SVIDs currently cached",
            svids_cached.clone(),
        );
        registry.register(
            "server_connected",
            "1 while the entry stream to the server is open",
            server_connected.clone(),
        );
        registry.register(
            "ready",
            "1 once the agent has synced with the server",
            ready.clone(),
        );
        AgentMetrics {
            registry,
            requests,
            svids_minted,
            svid_mint_failures,
            svids_cached,
            server_connected,
            ready,
        }
    }
}

impl AgentMetrics {
    pub fn record<T>(&self, method: &str, result: &Result<T, tonic::Status>) {
        let code = match result {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code,
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
