//! The agent's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub code: String,
}

/// Which container runtime a call went to (`docker`, `cri`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    pub runtime: String,
}

/// Which runtime call failed (`version`, `list`, `inspect`, `events`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub call: String,
}

/// A runtime event's action (`created`, `started`, `died`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

/// Why flows were dropped (`spool-full`, `sink-full`, `invalid`, `shutdown`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// What a capture record was (`tcp`, `tcp-failed`, `udp`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// A capture map (`tcp`, `udp`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: String,
}

/// A policy verdict (`allowed`, `denied`, `would-deny`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub verdict: String,
}

/// A policy rule (`default` when none matched) and a verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleVerdictLabels {
    pub rule: String,
    pub verdict: String,
}

/// An enforcement mode (`off`, `watch`, `on`, `unavailable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: String,
}

/// A histogram family needs a plain constructor to build one per label set.
pub type LatencyFamily = Family<RuntimeLabels, Histogram, fn() -> Histogram>;

/// Runtime calls take from well under a millisecond (inspect on a local
/// socket) to seconds (listing a busy node): 0.5 ms doubling up to ~16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct AgentMetrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub svids_minted: Counter,
    pub svid_mint_failures: Counter,
    pub svids_cached: Gauge,
    pub server_connected: Gauge,
    pub ready: Gauge,
    /// Workload API callers in a container the runtime could not describe.
    pub unknown_container_calls: Counter,
    pub runtime_list_seconds: LatencyFamily,
    pub runtime_inspect_seconds: LatencyFamily,
    pub runtime_call_failures: Family<CallLabels, Counter>,
    pub runtime_events: Family<ActionLabels, Counter>,
    pub runtime_degraded: Gauge,
    pub inventory_workloads: Gauge,
    pub inventory_partial_workloads: Gauge,
    pub inventory_snapshot_records: Gauge,
    pub inventory_dropped_events: Counter,
    pub inventory_resyncs: Counter,
    pub inventory_reports_sent: Counter,
    pub inventory_reports_failed: Counter,
    /// Running workloads whose process was attested, so that their
    /// selectors and SPIFFE IDs go with the inventory.
    pub workload_identities: Gauge,
    /// Attestations of a workload's process that gave no identity (the
    /// process exited, or is not that container's).
    pub workload_identity_failures: Counter,
    pub flows_reported: Counter,
    pub flows_rejected: Counter,
    pub flows_dropped: Family<ReasonLabels, Counter>,
    pub flow_batches_sent: Counter,
    pub flow_batches_failed: Counter,
    pub flow_spool_batches: Gauge,
    pub flow_spool_flows: Gauge,
    pub heartbeats_sent: Counter,
    pub heartbeats_failed: Counter,
    pub heartbeat_addresses: Gauge,
    /// Capture events lost before they became flows, by reason: in the
    /// kernel (`ringbuf-full`, `conn-map-full`, `udp-map-full`) or on the
    /// way to the reporter (`sink-full`, `invalid`, `shutdown`).
    pub flow_events_dropped: Family<ReasonLabels, Counter>,
    /// Capture records turned into flows, by kind (`tcp`, `tcp-failed`,
    /// `tcp-interim`, `udp`, `udp-interim`).
    pub flow_capture_records: Family<KindLabels, Counter>,
    /// 1 while eBPF capture is attached.
    pub flow_capture_up: Gauge,
    /// 1 for the reason capture is not running (`off`, `no-permission`,
    /// `no-btf`, ...), while it is not.
    pub flow_capture_unavailable: Family<ReasonLabels, Gauge>,
    /// Entries in the capture's kernel maps (`tcp`, `udp`).
    pub flow_capture_map_entries: Family<MapLabels, Gauge>,
    /// Capacity of those maps.
    pub flow_capture_map_capacity: Family<MapLabels, Gauge>,
    /// The policy revision this agent decides with (0: none applied).
    pub policy_revision: Gauge,
    /// Policy revisions from the server that this agent could not read.
    pub policy_errors: Counter,
    /// `POST /v1/authorize` answers, by verdict.
    pub authorize_decisions: Family<VerdictLabels, Counter>,
    /// 1 for the kernel enforcement mode in force (`off`, `watch`, `on`,
    /// `unavailable`).
    pub enforcement_mode: Family<ModeLabels, Gauge>,
    /// Kernel enforcement decisions for enforced workloads, by verdict
    /// (`allowed`, `denied`, `would-deny`).
    pub enforcement_decisions: Family<VerdictLabels, Counter>,
    /// The same decisions by the rule that decided (`default` when none).
    pub enforcement_rule_decisions: Family<RuleVerdictLabels, Counter>,
    /// Enforcement events lost before they became flows (ring full, or no
    /// room in the flow reporter).
    pub enforcement_events_dropped: Counter,
    /// Entries of each enforcement map in use (`locals`, `peers4`, ...).
    pub enforcement_map_entries: Family<MapLabels, Gauge>,
    /// What one policy image may use of each.
    pub enforcement_map_capacity: Family<MapLabels, Gauge>,
    /// Policy images the kernel refused or that could not be compiled (the
    /// previous image stays in force).
    pub enforcement_install_errors: Counter,
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
        let unknown_container_calls = Counter::default();
        registry.register(
            "unknown_container_calls",
            "Workload API callers in a container the runtime could not describe (unix selectors only)",
            unknown_container_calls.clone(),
        );
        let runtime_list_seconds = LatencyFamily::new_with_constructor(latency_histogram);
        registry.register(
            "runtime_list_seconds",
            "Time to list every container from the runtime (a full resync)",
            runtime_list_seconds.clone(),
        );
        let runtime_inspect_seconds = LatencyFamily::new_with_constructor(latency_histogram);
        registry.register(
            "runtime_inspect_seconds",
            "Time to inspect one container",
            runtime_inspect_seconds.clone(),
        );
        let runtime_call_failures = Family::<CallLabels, Counter>::default();
        registry.register(
            "runtime_call_failures",
            "Container runtime calls that failed, by call",
            runtime_call_failures.clone(),
        );
        let runtime_events = Family::<ActionLabels, Counter>::default();
        registry.register(
            "runtime_events",
            "Container lifecycle events received from the runtime, by action",
            runtime_events.clone(),
        );
        let runtime_degraded = Gauge::default();
        registry.register(
            "runtime_degraded",
            "1 while the container runtime is missing or not answering",
            runtime_degraded.clone(),
        );
        let inventory_workloads = Gauge::default();
        registry.register(
            "inventory_workloads",
            "Containers in the workload inventory (running and stopped)",
            inventory_workloads.clone(),
        );
        let inventory_partial_workloads = Gauge::default();
        registry.register(
            "inventory_partial_workloads",
            "Inventory records without runtime metadata (the inspect failed)",
            inventory_partial_workloads.clone(),
        );
        let inventory_snapshot_records = Gauge::default();
        registry.register(
            "inventory_snapshot_records",
            "Records in the last inventory snapshot sent to the server",
            inventory_snapshot_records.clone(),
        );
        let inventory_dropped_events = Counter::default();
        registry.register(
            "inventory_dropped_events",
            "Inventory events dropped because the report queue was full",
            inventory_dropped_events.clone(),
        );
        let inventory_resyncs = Counter::default();
        registry.register(
            "inventory_resyncs",
            "Full inventory resyncs (listings) that completed",
            inventory_resyncs.clone(),
        );
        let inventory_reports_sent = Counter::default();
        registry.register(
            "inventory_reports_sent",
            "ReportInventory calls the server accepted",
            inventory_reports_sent.clone(),
        );
        let inventory_reports_failed = Counter::default();
        registry.register(
            "inventory_reports_failed",
            "ReportInventory calls that failed (retried)",
            inventory_reports_failed.clone(),
        );
        let workload_identities = Gauge::default();
        registry.register(
            "workload_identities",
            "Running workloads whose process was attested (selectors and SPIFFE IDs reported with the inventory)",
            workload_identities.clone(),
        );
        let workload_identity_failures = Counter::default();
        registry.register(
            "workload_identity_failures",
            "Attestations of a workload's process that gave no identity (exited, or not that container's process)",
            workload_identity_failures.clone(),
        );
        let flows_reported = Counter::default();
        registry.register(
            "flows_reported",
            "Flows the server acknowledged",
            flows_reported.clone(),
        );
        let flows_rejected = Counter::default();
        registry.register(
            "flows_rejected",
            "Flows the server acknowledged but refused as malformed",
            flows_rejected.clone(),
        );
        let flows_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "flows_dropped",
            "Flows dropped before reaching the server, by reason",
            flows_dropped.clone(),
        );
        let flow_batches_sent = Counter::default();
        registry.register(
            "flow_batches_sent",
            "ReportFlows batches the server acknowledged",
            flow_batches_sent.clone(),
        );
        let flow_batches_failed = Counter::default();
        registry.register(
            "flow_batches_failed",
            "ReportFlows calls that failed (the batch stays spooled and is resent)",
            flow_batches_failed.clone(),
        );
        let flow_spool_batches = Gauge::default();
        registry.register(
            "flow_spool_batches",
            "Flow batches waiting for the server's acknowledgement",
            flow_spool_batches.clone(),
        );
        let flow_spool_flows = Gauge::default();
        registry.register(
            "flow_spool_flows",
            "Flows waiting for the server's acknowledgement",
            flow_spool_flows.clone(),
        );
        let heartbeats_sent = Counter::default();
        registry.register(
            "heartbeats_sent",
            "Ownership heartbeats the server acknowledged",
            heartbeats_sent.clone(),
        );
        let heartbeats_failed = Counter::default();
        registry.register(
            "heartbeats_failed",
            "Ownership heartbeats not delivered (skipped, never queued)",
            heartbeats_failed.clone(),
        );
        let heartbeat_addresses = Gauge::default();
        registry.register(
            "heartbeat_addresses",
            "Addresses asserted in the last ownership heartbeat",
            heartbeat_addresses.clone(),
        );
        let flow_events_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "flow_events_dropped",
            "Capture events lost before they became flows, by reason",
            flow_events_dropped.clone(),
        );
        let flow_capture_records = Family::<KindLabels, Counter>::default();
        registry.register(
            "flow_capture_records",
            "Capture records turned into flows, by kind",
            flow_capture_records.clone(),
        );
        let flow_capture_up = Gauge::default();
        registry.register(
            "flow_capture_up",
            "1 while eBPF flow capture is attached",
            flow_capture_up.clone(),
        );
        let flow_capture_unavailable = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "flow_capture_unavailable",
            "1 for the reason flow capture is not running",
            flow_capture_unavailable.clone(),
        );
        let flow_capture_map_entries = Family::<MapLabels, Gauge>::default();
        registry.register(
            "flow_capture_map_entries",
            "Entries in the capture's kernel maps",
            flow_capture_map_entries.clone(),
        );
        let flow_capture_map_capacity = Family::<MapLabels, Gauge>::default();
        registry.register(
            "flow_capture_map_capacity",
            "Capacity of the capture's kernel maps",
            flow_capture_map_capacity.clone(),
        );
        let policy_revision = Gauge::default();
        registry.register(
            "policy_revision",
            "The policy revision this agent decides with (0: none applied)",
            policy_revision.clone(),
        );
        let policy_errors = Counter::default();
        registry.register(
            "policy_errors",
            "Policy revisions from the server that this agent could not read",
            policy_errors.clone(),
        );
        let authorize_decisions = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "authorize_decisions",
            "Answers of POST /v1/authorize, by verdict",
            authorize_decisions.clone(),
        );
        let enforcement_mode = Family::<ModeLabels, Gauge>::default();
        registry.register(
            "enforcement_mode",
            "1 for the kernel enforcement mode in force (off, watch, on, unavailable)",
            enforcement_mode.clone(),
        );
        let enforcement_decisions = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "enforcement_decisions",
            "Kernel enforcement decisions for enforced workloads, by verdict",
            enforcement_decisions.clone(),
        );
        let enforcement_rule_decisions = Family::<RuleVerdictLabels, Counter>::default();
        registry.register(
            "enforcement_rule_decisions",
            "Kernel enforcement decisions by deciding rule (default: none matched) and verdict",
            enforcement_rule_decisions.clone(),
        );
        let enforcement_events_dropped = Counter::default();
        registry.register(
            "enforcement_events_dropped",
            "Enforcement events lost before they became flows",
            enforcement_events_dropped.clone(),
        );
        let enforcement_map_entries = Family::<MapLabels, Gauge>::default();
        registry.register(
            "enforcement_map_entries",
            "Entries in use in each enforcement map",
            enforcement_map_entries.clone(),
        );
        let enforcement_map_capacity = Family::<MapLabels, Gauge>::default();
        registry.register(
            "enforcement_map_capacity",
            "Entries one policy image may use in each enforcement map",
            enforcement_map_capacity.clone(),
        );
        let enforcement_install_errors = Counter::default();
        registry.register(
            "enforcement_install_errors",
            "Policy images not installed (not compiled, or refused by the kernel); the previous one stays",
            enforcement_install_errors.clone(),
        );
        AgentMetrics {
            registry,
            requests,
            svids_minted,
            svid_mint_failures,
            svids_cached,
            server_connected,
            ready,
            unknown_container_calls,
            runtime_list_seconds,
            runtime_inspect_seconds,
            runtime_call_failures,
            runtime_events,
            runtime_degraded,
            inventory_workloads,
            inventory_partial_workloads,
            inventory_snapshot_records,
            inventory_dropped_events,
            inventory_resyncs,
            inventory_reports_sent,
            inventory_reports_failed,
            workload_identities,
            workload_identity_failures,
            flows_reported,
            flows_rejected,
            flows_dropped,
            flow_batches_sent,
            flow_batches_failed,
            flow_spool_batches,
            flow_spool_flows,
            heartbeats_sent,
            heartbeats_failed,
            heartbeat_addresses,
            flow_events_dropped,
            flow_capture_records,
            flow_capture_up,
            flow_capture_unavailable,
            flow_capture_map_entries,
            flow_capture_map_capacity,
            policy_revision,
            policy_errors,
            authorize_decisions,
            enforcement_mode,
            enforcement_decisions,
            enforcement_events_dropped,
            enforcement_map_entries,
            enforcement_map_capacity,
            enforcement_install_errors,
            enforcement_rule_decisions,
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

    /// Counts one failed runtime call.
    pub fn runtime_failure(&self, call: &str) {
        self.runtime_call_failures
            .get_or_create(&CallLabels {
                call: call.to_string(),
            })
            .inc();
    }

    /// Counts `n` flows dropped for `reason`.
    pub fn flows_dropped(&self, reason: &str, n: u64) {
        self.flows_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc_by(n);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_metrics_are_exposed_with_their_labels() {
        let m = AgentMetrics::default();
        m.runtime_list_seconds
            .get_or_create(&RuntimeLabels {
                runtime: "docker".into(),
            })
            .observe(0.002);
        m.runtime_inspect_seconds
            .get_or_create(&RuntimeLabels {
                runtime: "cri".into(),
            })
            .observe(0.0004);
        m.runtime_failure("inspect");
        m.runtime_failure("inspect");
        m.runtime_events
            .get_or_create(&ActionLabels {
                action: "died".into(),
            })
            .inc();
        m.runtime_degraded.set(1);
        m.inventory_workloads.set(12);
        m.inventory_partial_workloads.set(2);
        m.inventory_snapshot_records.set(11);
        m.inventory_dropped_events.inc_by(5);
        m.inventory_resyncs.inc();
        m.inventory_reports_sent.inc();
        m.inventory_reports_failed.inc();
        m.unknown_container_calls.inc();
        let text = m.render();
        for line in [
            "hallmark_agent_runtime_list_seconds_count{runtime=\"docker\"} 1",
            "hallmark_agent_runtime_call_failures_total{call=\"inspect\"} 2",
            "hallmark_agent_runtime_events_total{action=\"died\"} 1",
            "hallmark_agent_runtime_degraded 1",
            "hallmark_agent_inventory_workloads 12",
            "hallmark_agent_inventory_partial_workloads 2",
            "hallmark_agent_inventory_snapshot_records 11",
            "hallmark_agent_inventory_dropped_events_total 5",
            "hallmark_agent_inventory_resyncs_total 1",
            "hallmark_agent_inventory_reports_sent_total 1",
            "hallmark_agent_inventory_reports_failed_total 1",
            "hallmark_agent_unknown_container_calls_total 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        m.flows_dropped("spool-full", 3);
        m.flows_reported.inc_by(40);
        m.flows_rejected.inc();
        m.flow_batches_sent.inc();
        m.flow_batches_failed.inc();
        m.flow_spool_batches.set(2);
        m.flow_spool_flows.set(20);
        m.heartbeats_sent.inc();
        m.heartbeats_failed.inc();
        m.heartbeat_addresses.set(4);
        m.workload_identities.set(5);
        m.workload_identity_failures.inc();
        let text = m.render();
        for line in [
            "hallmark_agent_flows_dropped_total{reason=\"spool-full\"} 3",
            "hallmark_agent_flows_reported_total 40",
            "hallmark_agent_flows_rejected_total 1",
            "hallmark_agent_flow_batches_sent_total 1",
            "hallmark_agent_flow_batches_failed_total 1",
            "hallmark_agent_flow_spool_batches 2",
            "hallmark_agent_flow_spool_flows 20",
            "hallmark_agent_heartbeats_sent_total 1",
            "hallmark_agent_heartbeats_failed_total 1",
            "hallmark_agent_heartbeat_addresses 4",
            "hallmark_agent_workload_identities 5",
            "hallmark_agent_workload_identity_failures_total 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        // 0.4 ms falls in the first bucket (0.5 ms).
        assert!(
            text.lines().any(
                |l| l.starts_with("hallmark_agent_runtime_inspect_seconds_bucket{")
                    && l.contains("runtime=\"cri\"")
                    && l.contains("le=\"0.0005\"")
                    && l.ends_with(" 1")
            ),
            "{text}"
        );
    }

    #[test]
    fn policy_metrics_are_exposed() {
        let m = AgentMetrics::default();
        m.policy_revision.set(7);
        m.policy_errors.inc();
        m.authorize_decisions
            .get_or_create(&VerdictLabels {
                verdict: "would-deny".into(),
            })
            .inc();
        let text = m.render();
        for line in [
            "hallmark_agent_policy_revision 7",
            "hallmark_agent_policy_errors_total 1",
            "hallmark_agent_authorize_decisions_total{verdict=\"would-deny\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }
}
