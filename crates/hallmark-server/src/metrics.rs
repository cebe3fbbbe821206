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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `current` or `stopped`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `agent`, `collector` or `file`.
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// `allowed`, `denied`, `would-deny` or `no-decision`.
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrustDomainLabels {
    pub trust_domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthorityLabels {
    /// `x509`, `jwt` or `oidc`.
    pub kind: String,
    /// `prepared`, `active`, `retired`, `tainted` or `revoked`.
    pub state: String,
}

pub struct ServerMetrics {
    /// Signing authorities by kind and state, read at each scrape.
    pub authorities: Family<AuthorityLabels, Gauge>,
    /// The trust bundle's `spiffe_sequence`.
    pub bundle_sequence: Gauge,
    registry: Registry,
    pub federation_refreshes_ok: Counter,
    pub federation_refreshes_failed: Counter,
    /// Seconds since each foreign bundle was last fetched, as of the last
    /// refresh loop tick.
    pub federation_bundle_age: Family<TrustDomainLabels, Gauge>,
    pub x509_svids_signed: Counter,
    pub x509_sign_failures: Counter,
    /// Admin calls over mTLS refused (no SVID, foreign, or not an admin entry).
    pub admin_mtls_refused: Counter,
    /// Console logins by result (`ok`, `refused`).
    pub console_logins: Family<ResultLabels, Counter>,
    /// Console API requests refused, by reason (`unauthenticated`, `csrf`,
    /// `cross-site`).
    pub console_refused: Family<ReasonLabels, Counter>,
    pub jwt_svids_minted: Counter,
    pub oidc_tokens_minted: Counter,
    pub attestations: Family<ResultLabels, Counter>,
    pub entries: Gauge,
    pub agents_connected: Gauge,
    /// Listed workloads by state, read from the datastore at each scrape.
    pub workloads: Family<StateLabels, Gauge>,
    pub inventory_reports: Counter,
    pub inventory_events: Counter,
    pub inventory_reports_rejected: Family<ReasonLabels, Counter>,
    /// Sum over agents of the events each says it dropped: one series, since
    /// a series per agent is too many for a large fleet.
    pub agent_dropped_events: Gauge,
    pub workloads_pruned: Counter,
    /// Flows received, by source.
    pub flows_ingested: Family<SourceLabels, Counter>,
    /// Flows and flow records refused, by reason.
    pub flows_rejected: Family<ReasonLabels, Counter>,
    /// Flow ends by result: `attributed`, `external`, `no-owner`,
    /// `ambiguous`, `late`.
    pub flow_ends: Family<ResultLabels, Counter>,
    pub flows_stored: Counter,
    /// Reports merged into the stored flow of the same connection.
    pub flows_merged: Counter,
    pub flow_store_errors: Counter,
    /// Flows stored, by the verdict of the policy in force.
    pub flow_verdicts: Family<VerdictLabels, Counter>,
    /// Flows waiting for ownership evidence.
    pub flows_held: Gauge,
    pub ownership_ranges: Gauge,
    pub ownership_addresses: Gauge,
    /// Heartbeats accepted from agents.
    pub ownership_heartbeats: Counter,
    /// Current members of each policy group (workloads and nodes).
    pub policy_group_members: Family<GroupLabels, Gauge>,
    /// The identity policy revision in force on this server (0: none).
    pub policy_revision: Gauge,
    /// Policy documents applied here as new revisions (rollbacks included).
    pub policy_applies: Counter,
    /// Stored policy revisions that failed to parse when loaded, so the
    /// previous one stayed in force.
    pub policy_load_failures: Counter,
    /// The fleet-wide enforcement switch: 1 on, 0 off.
    pub policy_enforcement: Gauge,
    /// Addresses in the peer map pushed to agents.
    pub policy_peer_addresses: Gauge,
    /// Addresses held by one owner that the last peer map left out (over
    /// its bound).
    pub policy_peer_addresses_cut: Gauge,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hallmark_server");
        let m = ServerMetrics {
            registry: Registry::default(),
            authorities: Family::default(),
            bundle_sequence: Gauge::default(),
            federation_refreshes_ok: Counter::default(),
            federation_refreshes_failed: Counter::default(),
            federation_bundle_age: Family::default(),
            x509_svids_signed: Counter::default(),
            x509_sign_failures: Counter::default(),
            admin_mtls_refused: Counter::default(),
            console_logins: Family::default(),
            console_refused: Family::default(),
            jwt_svids_minted: Counter::default(),
            oidc_tokens_minted: Counter::default(),
            attestations: Family::default(),
            entries: Gauge::default(),
            agents_connected: Gauge::default(),
            workloads: Family::default(),
            inventory_reports: Counter::default(),
            inventory_events: Counter::default(),
            inventory_reports_rejected: Family::default(),
            agent_dropped_events: Gauge::default(),
            workloads_pruned: Counter::default(),
            flows_ingested: Family::default(),
            flows_rejected: Family::default(),
            flow_ends: Family::default(),
            flows_stored: Counter::default(),
            flows_merged: Counter::default(),
            flow_store_errors: Counter::default(),
            flow_verdicts: Family::default(),
            flows_held: Gauge::default(),
            ownership_ranges: Gauge::default(),
            ownership_addresses: Gauge::default(),
            ownership_heartbeats: Counter::default(),
            policy_group_members: Family::default(),
            policy_revision: Gauge::default(),
            policy_applies: Counter::default(),
            policy_load_failures: Counter::default(),
            policy_enforcement: Gauge::default(),
            policy_peer_addresses: Gauge::default(),
            policy_peer_addresses_cut: Gauge::default(),
        };
        m.policy_enforcement.set(1);
        registry.register(
            "policy_enforcement",
            "the fleet-wide enforcement switch (`hallmark policy enforcement`): 1 on, 0 off",
            m.policy_enforcement.clone(),
        );
        registry.register(
            "policy_peer_addresses",
            "addresses in the peer map pushed to agents (held now by exactly one owner)",
            m.policy_peer_addresses.clone(),
        );
        registry.register(
            "policy_peer_addresses_cut",
            "addresses held by one owner that the last peer map left out (over its bound of 32768)",
            m.policy_peer_addresses_cut.clone(),
        );
        registry.register(
            "policy_group_members",
            "current members of each policy group (workloads and nodes)",
            m.policy_group_members.clone(),
        );
        registry.register(
            "policy_revision",
            "identity policy revision in force (0: none applied)",
            m.policy_revision.clone(),
        );
        registry.register(
            "policy_applies",
            "policy documents applied through this server as new revisions, rollbacks included",
            m.policy_applies.clone(),
        );
        registry.register(
            "policy_load_failures",
            "stored policy revisions that no longer parse; the previous revision stayed in force",
            m.policy_load_failures.clone(),
        );
        registry.register(
            "flows_ingested",
            "flows received, by source (agent, collector, file)",
            m.flows_ingested.clone(),
        );
        registry.register(
            "flows_rejected",
            "flows and flow records refused, by reason",
            m.flows_rejected.clone(),
        );
        registry.register(
            "flow_ends",
            "flow ends by attribution result (attributed, external, no-owner, ambiguous, late)",
            m.flow_ends.clone(),
        );
        registry.register(
            "flows_stored",
            "attributed flows written to the datastore",
            m.flows_stored.clone(),
        );
        registry.register(
            "flows_merged",
            "flow reports merged into the stored flow of the same connection (an agent's interim records, both ends' agents)",
            m.flows_merged.clone(),
        );
        registry.register(
            "flow_store_errors",
            "flow batches the datastore refused (submitters were told to retry)",
            m.flow_store_errors.clone(),
        );
        registry.register(
            "flow_verdicts",
            "flows stored, by the verdict of the policy in force (allowed, denied, would-deny, no-decision)",
            m.flow_verdicts.clone(),
        );
        registry.register(
            "flows_held",
            "flows waiting for ownership evidence (the hold-back queue)",
            m.flows_held.clone(),
        );
        registry.register(
            "ownership_ranges",
            "time ranges of IP ownership in the in-memory index",
            m.ownership_ranges.clone(),
        );
        registry.register(
            "ownership_addresses",
            "addresses with ownership evidence in the in-memory index",
            m.ownership_addresses.clone(),
        );
        registry.register(
            "ownership_heartbeats",
            "ownership heartbeats accepted from agents",
            m.ownership_heartbeats.clone(),
        );
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
            "admin_mtls_refused",
            "admin API calls over mTLS refused before reaching the service",
            m.admin_mtls_refused.clone(),
        );
        registry.register(
            "console_logins",
            "console logins by result (ok, refused)",
            m.console_logins.clone(),
        );
        registry.register(
            "console_refused",
            "console API requests refused, by reason (unauthenticated, csrf, cross-site)",
            m.console_refused.clone(),
        );
        registry.register(
            "jwt_svids_minted",
            "JWT-SVIDs minted",
            m.jwt_svids_minted.clone(),
        );
        registry.register(
            "oidc_tokens_minted",
            "OIDC-profile tokens minted for cloud federation",
            m.oidc_tokens_minted.clone(),
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
        registry.register(
            "workloads",
            "workloads in the inventory by state (current, or stopped within the retention window)",
            m.workloads.clone(),
        );
        registry.register(
            "inventory_reports",
            "inventory reports accepted from agents",
            m.inventory_reports.clone(),
        );
        registry.register(
            "inventory_events",
            "workload lifecycle events received in accepted reports",
            m.inventory_events.clone(),
        );
        registry.register(
            "inventory_reports_rejected",
            "inventory reports refused, by reason",
            m.inventory_reports_rejected.clone(),
        );
        registry.register(
            "agent_dropped_events",
            "inventory events agents report having dropped, summed over agents",
            m.agent_dropped_events.clone(),
        );
        registry.register(
            "federation_refreshes_ok",
            "foreign bundles fetched and accepted",
            m.federation_refreshes_ok.clone(),
        );
        registry.register(
            "federation_refreshes_failed",
            "foreign bundle fetches that failed or were refused",
            m.federation_refreshes_failed.clone(),
        );
        registry.register(
            "federation_bundle_age_seconds",
            "seconds since the foreign bundle was last fetched, by trust domain",
            m.federation_bundle_age.clone(),
        );
        registry.register(
            "workloads_pruned",
            "stopped workloads deleted after the retention window",
            m.workloads_pruned.clone(),
        );
        registry.register(
            "authorities",
            "signing authorities by kind and state",
            m.authorities.clone(),
        );
        registry.register(
            "bundle_sequence",
            "spiffe_sequence of the trust bundle in force",
            m.bundle_sequence.clone(),
        );
        ServerMetrics { registry, ..m }
    }
}

impl ServerMetrics {
    pub fn flows_ingested(&self, source: &str, n: u64) {
        self.flows_ingested
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc_by(n);
    }

    pub fn flow_verdict(&self, verdict: &str, n: u64) {
        self.flow_verdicts
            .get_or_create(&VerdictLabels {
                verdict: verdict.into(),
            })
            .inc_by(n);
    }

    pub fn flow_rejected(&self, reason: &str, n: u64) {
        self.flows_rejected
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc_by(n);
    }

    pub fn flow_end(&self, end: &hallmark_flows::EndAttribution) {
        use hallmark_flows::EndAttribution as E;
        let result = match end {
            E::Local(_) | E::Owned(_) => "attributed",
            E::External(_) => "external",
            E::Unattributed(r) => r.as_str(),
        };
        self.flow_ends
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The engine's gauges, read now.
    pub fn set_flow_engine(&self, a: &hallmark_flows::Attributor) {
        let g = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.flows_held.set(g(a.held()));
        self.ownership_ranges.set(g(a.index().range_count()));
        self.ownership_addresses.set(g(a.index().ip_count()));
    }

    pub fn attestation(&self, result: &str) {
        self.attestations
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn report_rejected(&self, reason: &str) {
        self.inventory_reports_rejected
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn set_policy_group_members(&self, group: &str, n: usize) {
        self.policy_group_members
            .get_or_create(&GroupLabels {
                group: group.into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_workloads(&self, state: &str, n: u64) {
        self.workloads
            .get_or_create(&StateLabels {
                state: state.into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts authorities by (kind, state); states no longer held read 0.
    pub fn set_authorities<'a>(&self, records: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut counts: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
        for kind in ["x509", "jwt", "oidc"] {
            for state in ["prepared", "active", "retired", "tainted", "revoked"] {
                counts.insert((kind, state), 0);
            }
        }
        for (kind, state) in records {
            *counts.entry((kind, state)).or_default() += 1;
        }
        for ((kind, state), n) in counts {
            self.authorities
                .get_or_create(&AuthorityLabels {
                    kind: kind.into(),
                    state: state.into(),
                })
                .set(n);
        }
    }

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
    fn authorities_are_counted_by_kind_and_state() {
        let m = ServerMetrics::default();
        m.set_authorities([("x509", "active"), ("x509", "retired"), ("x509", "retired")]);
        let text = m.render();
        assert!(
            text.contains(r#"hallmark_server_authorities{kind="x509",state="retired"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hallmark_server_authorities{kind="jwt",state="active"} 0"#),
            "{text}"
        );
        m.set_authorities([("x509", "active")]);
        assert!(m
            .render()
            .contains(r#"hallmark_server_authorities{kind="x509",state="retired"} 0"#));
    }
}
