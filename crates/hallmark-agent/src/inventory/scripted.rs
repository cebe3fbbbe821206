//! A scripted in-memory [`Runtime`] for the inventory's unit tests.
//!
//! This is a fault and ordering double, not a stand-in for a real daemon:
//! the inventory's own behaviour with a real Docker Engine is tested in
//! `tests/inventory_docker.rs`. What this double adds is what no real
//! daemon does on demand: an inspect that answers late (to race a `start`
//! against the `die` that follows it), an inspect that fails or answers for
//! another container, an event stream that breaks, a runtime that is down
//! and comes back, and a record of the order of calls.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use hallmark_core::{Confidence, RuntimeSource, Workload, WorkloadState};
use hallmark_runtime::{EventAction, Listing, Runtime, RuntimeError, RuntimeEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

type EventSender = mpsc::UnboundedSender<Result<RuntimeEvent, RuntimeError>>;

#[derive(Default)]
struct Script {
    containers: HashMap<String, Workload>,
    /// Delays for the next inspects of a container, one per call.
    inspect_delays: HashMap<String, VecDeque<Duration>>,
    /// Containers whose inspect fails.
    inspect_fails: HashSet<String>,
    /// Containers whose inspect answers with another container's record.
    impostors: HashMap<String, String>,
    inspect_calls: HashMap<String, usize>,
    /// `version`, `list`, `events`, in the order they were called.
    calls: Vec<&'static str>,
    /// While true, every call fails as if the socket were gone.
    down: bool,
    sender: Option<EventSender>,
}

/// The double. Clone-free: share it as `Arc<Scripted>`.
#[derive(Default)]
pub struct Scripted {
    script: Mutex<Script>,
}

pub const ENDPOINT: &str = "/test/scripted.sock";

/// A full, running Docker record with one label.
pub fn running(id: &str) -> Workload {
    let mut w = Workload::partial(id, RuntimeSource::Docker, "");
    w.confidence = Confidence::Full;
    w.degraded_reason.clear();
    w.name = format!("name-{id}");
    w.image = "hallmark-test/busybox:1".into();
    w.labels.insert("app".into(), id.into());
    w.state = WorkloadState::Running;
    w.pid = Some(4242);
    w.started_at_ms = 1_000;
    w
}

/// The same container after its process exited.
pub fn exited(id: &str, code: i64) -> Workload {
    let mut w = running(id);
    w.state = WorkloadState::Stopped;
    w.pid = None;
    w.finished_at_ms = 2_000;
    w.exit_code = Some(code);
    w
}

impl Scripted {
    pub fn new(containers: Vec<Workload>) -> Arc<Self> {
        let s = Scripted::default();
        {
            let mut sc = s.lock();
            for w in containers {
                sc.containers.insert(w.container_id.clone(), w);
            }
        }
        Arc::new(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes what the runtime knows, without telling anyone.
    pub fn set(&self, w: Workload) {
        self.lock().containers.insert(w.container_id.clone(), w);
    }

    pub fn remove(&self, id: &str) {
        self.lock().containers.remove(id);
    }

    /// Sends an event on the current stream.
    pub fn emit(&self, id: &str, action: EventAction) {
        let sc = self.lock();
        let sender = sc.sender.as_ref().expect("nobody subscribed to events");
        sender
            .send(Ok(RuntimeEvent {
                container_id: id.into(),
                action,
                at_ms: 0,
            }))
            .expect("the event stream was dropped");
    }

    /// Breaks the current event stream with an error.
    pub fn break_stream(&self) {
        if let Some(s) = self.lock().sender.take() {
            let _ = s.send(Err(RuntimeError::Events {
                runtime: "docker",
                reason: "scripted break".into(),
            }));
        }
    }

    pub fn delay_next_inspect(&self, id: &str, d: Duration) {
        self.lock()
            .inspect_delays
            .entry(id.into())
            .or_default()
            .push_back(d);
    }

    pub fn fail_inspect(&self, id: &str, fail: bool) {
        let mut sc = self.lock();
        if fail {
            sc.inspect_fails.insert(id.into());
        } else {
            sc.inspect_fails.remove(id);
        }
    }

    /// Makes an inspect of `asked` answer with the record of `answered`.
    pub fn impostor(&self, asked: &str, answered: &str) {
        self.lock().impostors.insert(asked.into(), answered.into());
    }

    pub fn set_down(&self, down: bool) {
        let mut sc = self.lock();
        sc.down = down;
        if down {
            sc.sender = None;
        }
    }

    pub fn inspect_calls(&self, id: &str) -> usize {
        self.lock().inspect_calls.get(id).copied().unwrap_or(0)
    }

    pub fn calls(&self) -> Vec<&'static str> {
        self.lock().calls.clone()
    }

    fn unreachable() -> RuntimeError {
        RuntimeError::Unreachable {
            runtime: "docker",
            endpoint: ENDPOINT.into(),
            reason: "connection refused (scripted)".into(),
        }
    }
}

impl Runtime for Scripted {
    fn source(&self) -> RuntimeSource {
        RuntimeSource::Docker
    }

    fn endpoint(&self) -> &str {
        ENDPOINT
    }

    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>> {
        async move {
            let mut sc = self.lock();
            sc.calls.push("version");
            if sc.down {
                return Err(Self::unreachable());
            }
            Ok("scripted 1.0".to_string())
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RuntimeError>> {
        async move {
            let mut sc = self.lock();
            sc.calls.push("list");
            if sc.down {
                return Err(Self::unreachable());
            }
            Ok(Listing {
                workloads: sc.containers.values().cloned().collect(),
                calls: 1,
                failures: 0,
            })
        }
        .boxed()
    }

    /// Reads the record when called and answers after the scripted delay,
    /// so a delayed answer is a stale one, as with a real slow daemon.
    fn inspect<'a>(
        &'a self,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Workload>, RuntimeError>> {
        async move {
            let (delay, answer) = {
                let mut sc = self.lock();
                *sc.inspect_calls.entry(container_id.into()).or_default() += 1;
                let delay = sc
                    .inspect_delays
                    .get_mut(container_id)
                    .and_then(VecDeque::pop_front);
                let answer = if sc.down {
                    Err(Self::unreachable())
                } else if sc.inspect_fails.contains(container_id) {
                    Err(RuntimeError::Api {
                        runtime: "docker",
                        call: "inspect",
                        reason: "scripted failure".into(),
                    })
                } else {
                    let id = sc
                        .impostors
                        .get(container_id)
                        .map_or(container_id, String::as_str);
                    Ok(sc.containers.get(id).cloned())
                };
                (delay, answer)
            };
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            answer
        }
        .boxed()
    }

    fn events(&self) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut sc = self.lock();
        sc.calls.push("events");
        if sc.down {
            let _ = tx.send(Err(Self::unreachable()));
        } else {
            sc.sender = Some(tx);
        }
        UnboundedReceiverStream::new(rx).boxed()
    }
}
