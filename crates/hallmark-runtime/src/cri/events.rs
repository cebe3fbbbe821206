//! CRI container events: the `GetContainerEvents` stream, or where the
//! runtime lacks it, `ListContainers` polled every [`POLL_INTERVAL`] and
//! diffed into events.

use std::collections::BTreeMap;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::mapping::ns_to_ms;
use super::pb;
use super::transport::{status_text, Conn};
use super::{POLL_INTERVAL, RUNTIME};
use crate::{now_ms, EventAction, RuntimeError, RuntimeEvent};

/// Events waiting for a slow consumer before the producer waits too.
const EVENT_BUFFER: usize = 1024;

type EventSender = mpsc::Sender<Result<RuntimeEvent, RuntimeError>>;

/// Starts the subscription on a task of the current Tokio runtime; the task
/// ends when the returned stream is dropped.
pub(super) fn subscribe(conn: Conn) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
    let handle = match tokio::runtime::Handle::try_current() {
        Ok(h) => h,
        Err(_) => {
            let e = RuntimeError::Events {
                runtime: RUNTIME,
                reason: "events() must be called from within a Tokio runtime".into(),
            };
            return stream::once(async move { Err(e) }).boxed();
        }
    };
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    handle.spawn(run_events(conn, tx));
    ReceiverStream::new(rx).boxed()
}

async fn run_events(conn: Conn, tx: EventSender) {
    let mut client = conn.runtime();
    // No timeout on the subscription: a streaming server may hold its
    // response headers until the first event.
    let subscribed = tokio::select! {
        _ = tx.closed() => return,
        r = client.get_container_events(pb::GetEventsRequest {}) => r,
    };
    match subscribed {
        Ok(response) => stream_events(response.into_inner(), tx).await,
        Err(s) if s.code() == Code::Unimplemented => {
            tracing::debug!(
                endpoint = %conn.endpoint,
                "CRI GetContainerEvents unimplemented; polling ListContainers every {POLL_INTERVAL:?}"
            );
            poll_events(conn, tx).await;
        }
        Err(s) => {
            let reason = format!("GetContainerEvents: {}", status_text(&s));
            let _ = tx
                .send(Err(RuntimeError::Events {
                    runtime: RUNTIME,
                    reason,
                }))
                .await;
        }
    }
}

async fn stream_events(mut events: tonic::Streaming<pb::ContainerEventResponse>, tx: EventSender) {
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            m = events.message() => m,
        };
        let reason = match next {
            Ok(Some(e)) => {
                if let Some(ev) = event_from_pb(&e) {
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Ok(None) => "the runtime closed GetContainerEvents".to_string(),
            Err(s) => format!("GetContainerEvents: {}", status_text(&s)),
        };
        let _ = tx
            .send(Err(RuntimeError::Events {
                runtime: RUNTIME,
                reason,
            }))
            .await;
        return;
    }
}

/// The first poll is the baseline: events are for changes after it.
async fn poll_events(conn: Conn, tx: EventSender) {
    let fail = |e: RuntimeError| RuntimeError::Events {
        runtime: RUNTIME,
        reason: format!("polling ListContainers: {e}"),
    };
    let mut prev = match conn.container_states().await {
        Ok(states) => states,
        Err(e) => {
            let _ = tx.send(Err(fail(e))).await;
            return;
        }
    };
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = tick.tick() => {}
        }
        let next = match conn.container_states().await {
            Ok(states) => states,
            Err(e) => {
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
        };
        for ev in diff_states(&prev, &next, now_ms()) {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        prev = next;
    }
}

fn event_from_pb(e: &pb::ContainerEventResponse) -> Option<RuntimeEvent> {
    if e.container_id.is_empty() {
        return None;
    }
    // containerd reports its sandboxes' own lifecycle on the same stream,
    // with the sandbox ID as the container ID; sandboxes are not workloads.
    if e.pod_sandbox_status
        .as_ref()
        .is_some_and(|s| s.id == e.container_id)
    {
        return None;
    }
    let action = match pb::ContainerEventType::try_from(e.container_event_type) {
        Ok(pb::ContainerEventType::ContainerCreatedEvent) => EventAction::Created,
        Ok(pb::ContainerEventType::ContainerStartedEvent) => EventAction::Started,
        Ok(pb::ContainerEventType::ContainerStoppedEvent) => EventAction::Died,
        Ok(pb::ContainerEventType::ContainerDeletedEvent) => EventAction::Destroyed,
        Err(_) => EventAction::Updated,
    };
    let at_ms = if e.created_at > 0 {
        ns_to_ms(e.created_at)
    } else {
        now_ms()
    };
    Some(RuntimeEvent {
        container_id: e.container_id.clone(),
        action,
        at_ms,
    })
}

/// The events that turn the `prev` container states into `next`, in
/// container ID order, each container's in lifecycle order.
fn diff_states(
    prev: &BTreeMap<String, i32>,
    next: &BTreeMap<String, i32>,
    at_ms: i64,
) -> Vec<RuntimeEvent> {
    use pb::ContainerState as S;
    let state = |s: i32| S::try_from(s).unwrap_or(S::ContainerUnknown);
    let mut out = Vec::new();
    let mut push = |id: &str, action: EventAction| {
        out.push(RuntimeEvent {
            container_id: id.to_string(),
            action,
            at_ms,
        });
    };
    for (id, &now) in next {
        let now = state(now);
        let before = match prev.get(id) {
            Some(&b) => state(b),
            None => {
                push(id, EventAction::Created);
                S::ContainerCreated
            }
        };
        match (before, now) {
            (b, n) if b == n => {}
            (_, S::ContainerRunning) => push(id, EventAction::Started),
            (S::ContainerRunning, S::ContainerExited) => push(id, EventAction::Died),
            (S::ContainerCreated, S::ContainerExited) => {
                push(id, EventAction::Started);
                push(id, EventAction::Died);
            }
            _ => push(id, EventAction::Updated),
        }
    }
    for (id, &before) in prev {
        if !next.contains_key(id) {
            if state(before) == S::ContainerRunning {
                push(id, EventAction::Died);
            }
            push(id, EventAction::Destroyed);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(entries: &[(&str, pb::ContainerState)]) -> BTreeMap<String, i32> {
        entries
            .iter()
            .map(|(id, s)| (id.to_string(), *s as i32))
            .collect()
    }

    #[test]
    fn poll_diffs() {
        use pb::ContainerState::*;
        use EventAction::*;
        type States = BTreeMap<String, i32>;
        // (name, previous poll, this poll, expected events)
        type Case<'a> = (&'a str, States, States, Vec<(&'a str, EventAction)>);
        let cases: Vec<Case> = vec![
            (
                "nothing changed",
                states(&[("a", ContainerRunning)]),
                states(&[("a", ContainerRunning)]),
                vec![],
            ),
            (
                "created",
                states(&[]),
                states(&[("a", ContainerCreated)]),
                vec![("a", Created)],
            ),
            (
                "created and started",
                states(&[]),
                states(&[("a", ContainerRunning)]),
                vec![("a", Created), ("a", Started)],
            ),
            (
                "started and exited between polls",
                states(&[]),
                states(&[("a", ContainerExited)]),
                vec![("a", Created), ("a", Started), ("a", Died)],
            ),
            (
                "started",
                states(&[("a", ContainerCreated)]),
                states(&[("a", ContainerRunning)]),
                vec![("a", Started)],
            ),
            (
                "died",
                states(&[("a", ContainerRunning)]),
                states(&[("a", ContainerExited)]),
                vec![("a", Died)],
            ),
            (
                "created then exited",
                states(&[("a", ContainerCreated)]),
                states(&[("a", ContainerExited)]),
                vec![("a", Started), ("a", Died)],
            ),
            (
                "removed after exit",
                states(&[("a", ContainerExited)]),
                states(&[]),
                vec![("a", Destroyed)],
            ),
            (
                "removed while running",
                states(&[("a", ContainerRunning)]),
                states(&[]),
                vec![("a", Died), ("a", Destroyed)],
            ),
            (
                "went unknown",
                states(&[("a", ContainerRunning)]),
                states(&[("a", ContainerUnknown)]),
                vec![("a", Updated)],
            ),
            (
                "several, in id order",
                states(&[("b", ContainerRunning), ("c", ContainerCreated)]),
                states(&[("a", ContainerCreated), ("c", ContainerRunning)]),
                vec![
                    ("a", Created),
                    ("c", Started),
                    ("b", Died),
                    ("b", Destroyed),
                ],
            ),
        ];
        for (name, prev, next, want) in cases {
            let got: Vec<(String, EventAction)> = diff_states(&prev, &next, 77)
                .into_iter()
                .inspect(|e| assert_eq!(e.at_ms, 77))
                .map(|e| (e.container_id, e.action))
                .collect();
            let want: Vec<(String, EventAction)> = want
                .into_iter()
                .map(|(id, a)| (id.to_string(), a))
                .collect();
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn stream_events_map() {
        let ev = |id: &str, ty: i32, sandbox: Option<&str>| pb::ContainerEventResponse {
            container_id: id.into(),
            container_event_type: ty,
            created_at: 1_700_000_000_500_000_000,
            pod_sandbox_status: sandbox.map(|s| pb::PodSandboxStatus {
                id: s.into(),
                ..Default::default()
            }),
            containers_statuses: vec![],
        };
        use pb::ContainerEventType as T;
        let cases = [
            (
                ev("c1", T::ContainerCreatedEvent as i32, Some("sb")),
                Some(EventAction::Created),
            ),
            (
                ev("c1", T::ContainerStartedEvent as i32, Some("sb")),
                Some(EventAction::Started),
            ),
            (
                ev("c1", T::ContainerStoppedEvent as i32, None),
                Some(EventAction::Died),
            ),
            (
                ev("c1", T::ContainerDeletedEvent as i32, None),
                Some(EventAction::Destroyed),
            ),
            (ev("c1", 17, None), Some(EventAction::Updated)),
            (ev("sb", T::ContainerStartedEvent as i32, Some("sb")), None),
            (ev("", T::ContainerStartedEvent as i32, None), None),
        ];
        for (input, want) in cases {
            let got = event_from_pb(&input);
            assert_eq!(got.as_ref().map(|e| e.action), want, "{input:?}");
            if let Some(e) = got {
                assert_eq!(e.at_ms, 1_700_000_000_500);
                assert_eq!(e.container_id, "c1");
            }
        }
    }
}
