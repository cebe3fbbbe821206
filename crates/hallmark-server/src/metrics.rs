//! The server's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

pub struct ServerMetrics {
    registry: Registry,
    pub x509_svids_signed: Counter,
    pub x509_sign_failures: Counter,
    pub jwt_svids_minted: Counter,
    pub attestations: Family<ResultLabels, Counter>,
    pub entries: Gauge,
    pub agents_connected: Gauge,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hallmark_server");
        let m = ServerMetrics {
            registry: Registry::default(),
            x509_svids_signed: Counter::default(),
            x509_sign_failures: Counter::default(),
            jwt_svids_minted: Counter::default(),
            attestations: Family::default(),
            entries: Gauge::default(),
            agents_connected: Gauge::default(),
        };
        registry.register(
            "x509_svids_signed",
            "X509-SVIDs signed for workloads",
            m.x509_svids_signed.clone(),
        );
        registry.register(
            "x509_sign_failures",
            "workload CSRs refused (bad CSR or unauthorized entry)",
            m.x509_sign_failures.clone(),
        );
        registry.register(
            "jwt_svids_minted",
            "JWT-SVIDs minted",
            m.jwt_svids_minted.clone(),
        );
        registry.register(
            "attestations",
            "join-token attestations by result",
            m.attestations.clone(),
        );
        registry.register(
            "entries",
            "registration entries in the datastore",
            m.entries.clone(),
        );
        registry.register(
            "agents_connected",
            "agents with an open entry stream",
            m.agents_connected.clone(),
        );
        ServerMetrics { registry, ..m }
    }
}

impl ServerMetrics {
    pub fn attestation(&self, result: &str) {
        self.attestations
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
