//! The server's workload inventory as the datastore keeps it: the current
//! workload per (context, agent, container), exited ones for a retention
//! window, the lifecycle events agents reported, and each agent's runtime
//! status.
//!
//! Agents send reports ([`InventoryReport`]) made of snapshot pages and
//! lifecycle events; [`InventoryStore::apply_inventory`] applies one report in
//! one transaction. Listing filters ([`WorkloadFilter`]) are parsed here from
//! operator text once, so the admin API and the CLI refuse the same inputs
//! with the same words.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use hallmark_core::RuntimeStatus;
use hallmark_core::{SpiffeId, Workload, WorkloadState};

use crate::Result as StoreResult;

/// The workload inventory agents report. Every method is atomic on its own.
#[async_trait::async_trait]
pub trait InventoryStore: Send + Sync + 'static {
    /// Applies one agent's inventory report received at server time
    /// `now_ms`, all of it or (on error) none of it, in this order:
    ///
    /// 1. The snapshot page's records are upserted (first and last seen at
    ///    `now_ms`, tagged with the snapshot ID). A record in state
    ///    `stopped` stops the workload (at its `finished_at_ms` when that is
    ///    known and not after `now_ms`, else at `now_ms`; an earlier stop
    ///    time is kept); any other state makes it current again.
    /// 2. On the last page, if every page of the snapshot arrived (pages
    ///    count from 0), every workload of this (agent, context)
    ///    that is current, was not listed by this snapshot and was not seen
    ///    since its first page arrived, is stopped at `now_ms`. With a page
    ///    missing, nothing is stopped ([`SnapshotOutcome::Incomplete`]). A
    ///    page of another snapshot ID abandons the one in progress.
    /// 3. Events are upserted and recorded in order: `started`/`updated`
    ///    like snapshot records (stop time reckoned from `at_ms`), `stopped`
    ///    stops the workload at exactly `at_ms` with the final record.
    /// 4. The agent's context, runtime status (when given) and dropped
    ///    event count replace the stored ones.
    async fn apply_inventory(
        &self,
        report: &InventoryReport,
        now_ms: i64,
    ) -> StoreResult<InventoryApplied>;

    /// Workloads matching `filter` ([`WorkloadFilter::matches`]) that are
    /// current, or stopped no longer than `retention` before `now_ms` (older
    /// ones are hidden even before [`InventoryStore::prune_workloads`] deletes them).
    /// Ordered by `(context_name, agent_id, container_id)` bytewise.
    async fn list_workloads(
        &self,
        filter: &WorkloadFilter,
        now_ms: i64,
        retention: Duration,
    ) -> StoreResult<Vec<StoredWorkload>>;

    /// Visible workloads (as for [`InventoryStore::list_workloads`]) whose container
    /// ID starts with `prefix`, under every agent and context. Ordered by
    /// `(container_id, context_name, agent_id)`.
    async fn find_workloads_by_prefix(
        &self,
        prefix: &str,
        now_ms: i64,
        retention: Duration,
    ) -> StoreResult<Vec<StoredWorkload>>;

    /// The recorded events of one container (exact ID), from every agent
    /// and context, ordered by `at_ms` and then by arrival.
    async fn workload_events(&self, container_id: &str) -> StoreResult<Vec<StoredWorkloadEvent>>;

    /// How many workloads [`InventoryStore::list_workloads`] would show, by state.
    async fn count_workloads(
        &self,
        now_ms: i64,
        retention: Duration,
    ) -> StoreResult<WorkloadCounts>;

    /// Deletes workloads stopped before `before_ms` and events received
    /// before it, in one transaction.
    async fn prune_workloads(&self, before_ms: i64) -> StoreResult<PrunedWorkloads>;

    /// The agent's latest inventory report; `None` before its first one.
    async fn agent_inventory(&self, agent_id: &SpiffeId) -> StoreResult<Option<AgentInventory>>;

    /// Every agent's latest inventory report, ordered by agent ID.
    async fn list_agent_inventories(&self) -> StoreResult<Vec<AgentInventory>>;
}

/// What an agent said happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadEventKind {
    Started,
    Updated,
    Stopped,
}

impl WorkloadEventKind {
    /// The name on the wire and in the datastore.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadEventKind::Started => "started",
            WorkloadEventKind::Updated => "updated",
            WorkloadEventKind::Stopped => "stopped",
        }
    }

    /// Inverse of [`WorkloadEventKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "started" => Some(WorkloadEventKind::Started),
            "updated" => Some(WorkloadEventKind::Updated),
            "stopped" => Some(WorkloadEventKind::Stopped),
            _ => None,
        }
    }
}

impl fmt::Display for WorkloadEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lifecycle event of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEvent {
    pub kind: WorkloadEventKind,
    /// Unix milliseconds at which the agent saw the change.
    pub at_ms: i64,
    /// The full record after the change.
    pub workload: Workload,
}

/// One page of a full snapshot of an agent's workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPage {
    /// Shared by every page of one snapshot; never 0.
    pub snapshot_id: u64,
    /// Position of the page in its snapshot, counted from 0.
    pub page: u32,
    pub last_page: bool,
    pub workloads: Vec<Workload>,
}

/// One inventory report of one agent, as validated by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryReport {
    pub agent_id: SpiffeId,
    pub context_name: String,
    pub snapshot: Option<SnapshotPage>,
    /// In the order the agent saw them; applied after the snapshot page, so
    /// an event is taken as newer than a page of the same report.
    pub events: Vec<WorkloadEvent>,
    /// `None` keeps the runtime status stored from an earlier report.
    pub runtime: Option<RuntimeStatus>,
    /// Events the agent had to drop since it started.
    pub dropped_events: u64,
}

/// What became of a report's snapshot page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// The report carried no snapshot page.
    None,
    /// A page was stored; more are to come.
    Page,
    /// The last page arrived after every earlier one: workloads the snapshot
    /// did not list were marked stopped.
    Completed { marked_stopped: u64 },
    /// The last page arrived but earlier pages of the snapshot are missing
    /// (refused or lost), so nothing was marked stopped: a container on a
    /// missing page must not be declared gone.
    Incomplete { missing_pages: u64 },
}

/// What [`InventoryStore::apply_inventory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InventoryApplied {
    /// Workload rows inserted or updated (snapshot records and events).
    pub upserted: u64,
    /// Events recorded in the event history.
    pub events: u64,
    pub snapshot: SnapshotOutcome,
}

/// A workload as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWorkload {
    pub context_name: String,
    /// The reporting agent.
    pub agent_id: SpiffeId,
    /// The record as last reported; its state reads [`WorkloadState::Stopped`]
    /// once the server considers the workload stopped, whatever the last
    /// record said.
    pub workload: Workload,
    /// Server time (unix ms) of the first and latest report listing it.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// When it stopped (unix ms); `None` while current.
    pub stopped_at_ms: Option<i64>,
}

/// A recorded lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWorkloadEvent {
    pub context_name: String,
    pub agent_id: SpiffeId,
    pub kind: WorkloadEventKind,
    /// Agent time of the change (unix ms).
    pub at_ms: i64,
    /// Server time the report arrived (unix ms); retention counts from it.
    pub received_ms: i64,
    pub workload: Workload,
}

/// An agent's latest inventory report, minus the workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInventory {
    pub agent_id: SpiffeId,
    pub context_name: String,
    pub runtime: RuntimeStatus,
    pub dropped_events: u64,
    /// Server time (unix ms) of the latest report.
    pub reported_at_ms: i64,
}

/// Visible workloads by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadCounts {
    pub current: u64,
    pub stopped: u64,
}

/// What [`InventoryStore::prune_workloads`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedWorkloads {
    pub workloads: u64,
    pub events: u64,
}

/// Which workloads [`InventoryStore::list_workloads`] returns. Every set field
/// must match; the default matches every visible workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadFilter {
    pub context_name: Option<String>,
    pub agent_id: Option<SpiffeId>,
    /// The pod's namespace (CRI workloads only).
    pub namespace: Option<String>,
    pub image: Option<ImageMatch>,
    /// Every one must match a container label or a pod label.
    pub labels: Vec<LabelMatch>,
    pub state: Option<StateFilter>,
}

/// `--state`: `current` (anything not stopped) or one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    Current,
    Is(WorkloadState),
}

/// `--label`: `key=value`, or `key` for presence with any value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatch {
    pub key: String,
    pub value: Option<String>,
}

/// `--image`: an image name with or without tag, an image ID or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMatch(String);

/// A filter text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The state is neither `current` nor a workload state.
    #[error("state `{0}` is not one of current, created, running, paused, stopped, unknown")]
    UnknownState(String),
    /// A label filter with nothing before its `=` (or nothing at all).
    #[error("label `{0}` has an empty key; write key=value or key")]
    EmptyLabelKey(String),
    /// An image filter that is empty or holds whitespace or control
    /// characters, which no image reference does.
    #[error("image `{0}` must be a non-empty image reference without whitespace")]
    BadImage(String),
}

impl StateFilter {
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        if s == "current" {
            return Ok(StateFilter::Current);
        }
        WorkloadState::parse(s)
            .map(StateFilter::Is)
            .ok_or_else(|| FilterError::UnknownState(s.to_string()))
    }

    pub fn matches(self, state: WorkloadState) -> bool {
        match self {
            StateFilter::Current => state != WorkloadState::Stopped,
            StateFilter::Is(want) => state == want,
        }
    }
}

impl fmt::Display for StateFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateFilter::Current => f.write_str("current"),
            StateFilter::Is(s) => f.write_str(s.as_str()),
        }
    }
}

impl LabelMatch {
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (s, None),
        };
        if key.is_empty() {
            return Err(FilterError::EmptyLabelKey(s.to_string()));
        }
        Ok(LabelMatch {
            key: key.to_string(),
            value,
        })
    }

    fn matches_map(&self, labels: &BTreeMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            (None, _) => false,
        }
    }

    /// Whether the container's labels or its pod's labels carry this label.
    pub fn matches(&self, w: &Workload) -> bool {
        self.matches_map(&w.labels) || w.pod.as_ref().is_some_and(|p| self.matches_map(&p.labels))
    }
}

impl fmt::Display for LabelMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

impl ImageMatch {
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(FilterError::BadImage(s.to_string()));
        }
        Ok(ImageMatch(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the pattern names the workload's image: the reference as
    /// created (`web:1.2`), its repository without tag (`web`, also written
    /// `docker.io/library/web`), the image ID with or without `sha256:`, or
    /// the repository digest (`repo@sha256:…` or just `sha256:…`).
    pub fn matches(&self, w: &Workload) -> bool {
        let want = self.0.as_str();
        let want_repo = normalize_repository(want);
        let image_refs = [w.image.as_str(), w.image_digest.as_str()];
        for reference in image_refs.into_iter().filter(|r| !r.is_empty()) {
            if reference == want {
                return true;
            }
            let (repo, tag, digest) = split_reference(reference);
            let repo = normalize_repository(repo);
            if repo == want_repo {
                return true;
            }
            // `web:1.2` against `docker.io/library/web:1.2`.
            if let Some(tag) = tag {
                if format!("{repo}:{tag}") == normalize_repository_and_tag(want) {
                    return true;
                }
            }
            if digest.is_some_and(|d| d == want) {
                return true;
            }
        }
        let id = w.image_id.as_str();
        !id.is_empty() && (id == want || id.strip_prefix("sha256:") == Some(want))
    }
}

impl fmt::Display for ImageMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `repo[:tag][@digest]`. A `:` belongs to the tag only after the
/// last `/`, since a registry host may carry a port (`reg:5000/app`).
fn split_reference(r: &str) -> (&str, Option<&str>, Option<&str>) {
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..]), digest),
        None => (name, None, digest),
    }
}

/// Docker Hub's implicit names: `busybox` is `docker.io/library/busybox`.
fn normalize_repository(repo: &str) -> &str {
    for prefix in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
        "library/",
    ] {
        if let Some(rest) = repo.strip_prefix(prefix) {
            return rest;
        }
    }
    repo
}

fn normalize_repository_and_tag(reference: &str) -> String {
    let (repo, tag, _) = split_reference(reference);
    match tag {
        Some(t) => format!("{}:{t}", normalize_repository(repo)),
        None => normalize_repository(repo).to_string(),
    }
}

impl WorkloadFilter {
    /// The whole filter, field by field. Back ends may narrow in SQL first,
    /// but the result must be exactly the workloads this accepts.
    pub fn matches(&self, s: &StoredWorkload) -> bool {
        let w = &s.workload;
        self.context_name
            .as_ref()
            .is_none_or(|c| *c == s.context_name)
            && self.agent_id.as_ref().is_none_or(|a| *a == s.agent_id)
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| w.pod.as_ref().is_some_and(|p| p.namespace == *ns))
            && self.image.as_ref().is_none_or(|i| i.matches(w))
            && self.labels.iter().all(|l| l.matches(w))
            && self.state.is_none_or(|st| st.matches(w.state))
    }
}

impl StoredWorkload {
    /// Whether the workload is still listed at `now_ms` with `retention`:
    /// current ones always, stopped ones until `retention` after they
    /// stopped.
    pub fn visible_at(&self, now_ms: i64, retention: Duration) -> bool {
        self.stopped_at_ms
            .is_none_or(|at| at >= visible_since_ms(now_ms, retention))
    }
}

/// The earliest stop time still listed at `now_ms` with `retention`.
pub fn visible_since_ms(now_ms: i64, retention: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use hallmark_core::{Confidence, PodInfo, RuntimeSource};

    use super::*;

    fn workload() -> Workload {
        let mut w = Workload::partial(&"a".repeat(64), RuntimeSource::Docker, "");
        w.confidence = Confidence::Full;
        w.state = WorkloadState::Running;
        w.image = "shop/web:1.2".into();
        w.image_id = format!("sha256:{}", "b".repeat(64));
        w.image_digest = format!("shop/web@sha256:{}", "c".repeat(64));
        w.labels.insert("app".into(), "web".into());
        w.labels.insert("empty".into(), String::new());
        w
    }

    #[test]
    fn state_filters_parse() {
        let cases: &[(&str, Option<StateFilter>)] = &[
            ("current", Some(StateFilter::Current)),
            ("running", Some(StateFilter::Is(WorkloadState::Running))),
            ("stopped", Some(StateFilter::Is(WorkloadState::Stopped))),
            ("unknown", Some(StateFilter::Is(WorkloadState::Unknown))),
            ("gone", None),
            ("Running", None),
            ("", None),
        ];
        for (text, want) in cases {
            match (StateFilter::parse(text), want) {
                (Ok(got), Some(want)) => {
                    assert_eq!(got, *want, "{text}");
                    assert_eq!(got.to_string(), *text);
                }
                (Err(e), None) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("`{text}`")), "{msg}");
                    assert!(msg.contains("current, created, running"), "{msg}");
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        assert!(StateFilter::Current.matches(WorkloadState::Paused));
        assert!(!StateFilter::Current.matches(WorkloadState::Stopped));
        assert!(!StateFilter::Is(WorkloadState::Running).matches(WorkloadState::Paused));
    }

    #[test]
    fn label_filters_parse() {
        // (text, parsed key and value, or None for a refusal)
        type Case<'a> = (&'a str, Option<(&'a str, Option<&'a str>)>);
        let cases: &[Case] = &[
            ("app=web", Some(("app", Some("web")))),
            ("app", Some(("app", None))),
            ("app=", Some(("app", Some("")))),
            ("a=b=c", Some(("a", Some("b=c")))),
            ("io.k8s/name=x", Some(("io.k8s/name", Some("x")))),
            ("=x", None),
            ("=", None),
            ("", None),
        ];
        for (text, want) in cases {
            match (LabelMatch::parse(text), want) {
                (Ok(got), Some((k, v))) => {
                    assert_eq!(got.key, *k, "{text}");
                    assert_eq!(got.value.as_deref(), *v, "{text}");
                    assert_eq!(got.to_string(), *text);
                }
                (Err(e), None) => {
                    assert_eq!(e, FilterError::EmptyLabelKey(text.to_string()));
                    assert!(e.to_string().contains("empty key"), "{e}");
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn labels_match_container_or_pod_labels() {
        let mut w = workload();
        let m = |s: &str| LabelMatch::parse(s).unwrap();
        assert!(m("app=web").matches(&w));
        assert!(m("app").matches(&w));
        assert!(m("empty=").matches(&w));
        assert!(m("empty").matches(&w));
        assert!(!m("app=api").matches(&w));
        assert!(!m("team").matches(&w));
        let mut pod = PodInfo::default();
        pod.labels.insert("team".into(), "money".into());
        w.pod = Some(pod);
        assert!(m("team=money").matches(&w));
        assert!(m("team").matches(&w));
        assert!(!m("team=fun").matches(&w));
    }

    #[test]
    fn image_filters() {
        let w = workload();
        let cases: &[(&str, bool)] = &[
            ("shop/web:1.2", true),
            ("shop/web", true),
            ("shop/web:1.3", false),
            ("shop/we", false),
            ("web", false),
            (&format!("sha256:{}", "b".repeat(64)), true),
            (&"b".repeat(64), true),
            (&format!("shop/web@sha256:{}", "c".repeat(64)), true),
            (&format!("sha256:{}", "c".repeat(64)), true),
            ("docker.io/shop/web:1.2", true),
            ("docker.io/shop/web", true),
        ];
        for (pattern, want) in cases {
            let m = ImageMatch::parse(pattern).unwrap();
            assert_eq!(m.matches(&w), *want, "pattern {pattern}");
        }

        let mut hub = workload();
        hub.image = "docker.io/library/busybox:1".into();
        hub.image_id.clear();
        hub.image_digest.clear();
        for (pattern, want) in [
            ("busybox", true),
            ("busybox:1", true),
            ("library/busybox", true),
            ("busybox:2", false),
            ("docker.io/library/busybox:1", true),
        ] {
            let m = ImageMatch::parse(pattern).unwrap();
            assert_eq!(m.matches(&hub), want, "pattern {pattern}");
        }

        let mut port = workload();
        port.image = "reg.local:5000/team/app:7".into();
        for (pattern, want) in [
            ("reg.local:5000/team/app", true),
            ("reg.local:5000/team/app:7", true),
            ("reg.local", false),
        ] {
            let m = ImageMatch::parse(pattern).unwrap();
            assert_eq!(m.matches(&port), want, "pattern {pattern}");
        }

        for bad in ["", "a b", "x\n"] {
            assert!(
                matches!(ImageMatch::parse(bad), Err(FilterError::BadImage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn references_split_at_the_right_colon() {
        type Parts<'a> = (&'a str, Option<&'a str>, Option<&'a str>);
        let cases: &[(&str, Parts)] = &[
            ("web", ("web", None, None)),
            ("web:1", ("web", Some("1"), None)),
            ("reg:5000/web", ("reg:5000/web", None, None)),
            ("reg:5000/web:2", ("reg:5000/web", Some("2"), None)),
            ("web@sha256:ab", ("web", None, Some("sha256:ab"))),
            ("web:1@sha256:ab", ("web", Some("1"), Some("sha256:ab"))),
        ];
        for (text, want) in cases {
            assert_eq!(split_reference(text), *want, "{text}");
        }
    }

    #[test]
    fn whole_filter_and_visibility() {
        let agent = SpiffeId::new("spiffe://example.org/hallmark/agent/n1").unwrap();
        let mut w = workload();
        w.pod = Some(PodInfo {
            namespace: "payments".into(),
            ..PodInfo::default()
        });
        let s = StoredWorkload {
            context_name: "prod".into(),
            agent_id: agent.clone(),
            workload: w,
            first_seen_ms: 1,
            last_seen_ms: 2,
            stopped_at_ms: None,
        };
        assert!(WorkloadFilter::default().matches(&s));
        let f = WorkloadFilter {
            context_name: Some("prod".into()),
            agent_id: Some(agent),
            namespace: Some("payments".into()),
            image: Some(ImageMatch::parse("shop/web").unwrap()),
            labels: vec![LabelMatch::parse("app=web").unwrap()],
            state: Some(StateFilter::Current),
        };
        assert!(f.matches(&s));
        for broken in [
            WorkloadFilter {
                context_name: Some("dev".into()),
                ..f.clone()
            },
            WorkloadFilter {
                namespace: Some("other".into()),
                ..f.clone()
            },
            WorkloadFilter {
                labels: vec![
                    LabelMatch::parse("app=web").unwrap(),
                    LabelMatch::parse("x").unwrap(),
                ],
                ..f.clone()
            },
            WorkloadFilter {
                state: Some(StateFilter::Is(WorkloadState::Stopped)),
                ..f.clone()
            },
        ] {
            assert!(!broken.matches(&s), "{broken:?}");
        }

        let hour = Duration::from_secs(3600);
        assert!(s.visible_at(i64::MAX, hour));
        let stopped = StoredWorkload {
            stopped_at_ms: Some(10_000),
            ..s
        };
        assert!(stopped.visible_at(10_000 + 3_600_000, hour));
        assert!(!stopped.visible_at(10_001 + 3_600_000, hour));
        assert_eq!(visible_since_ms(5, Duration::MAX), 5 - i64::MAX);
    }
}
