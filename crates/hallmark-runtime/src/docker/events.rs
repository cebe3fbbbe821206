//! The engine's container event stream, mapped to [`RuntimeEvent`]s.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::errors::Error as BollardError;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use futures::stream::{self, BoxStream};
use futures::StreamExt;

use super::client::map_error;
use super::{Inner, RUNTIME};
use crate::{now_ms, EventAction, RuntimeError, RuntimeEvent};

/// The container events the stream subscribes to. `kill` and `oom` are left
/// out on purpose: neither changes a field of the record by itself, and a
/// process that dies of either is followed by `die`.
const EVENTS: &[&str] = &[
    "create", "start", "die", "destroy", "rename", "update", "pause", "unpause",
];

/// Subscribes to container events when the stream is first polled.
pub(super) fn subscribe(
    inner: Arc<Inner>,
) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            EVENTS.iter().map(|e| e.to_string()).collect(),
        ),
    ]);
    let options = EventsOptions {
        filters: Some(filters),
        ..Default::default()
    };
    // The subscription starts when the stream is first polled; the state
    // is `Done` once the stream has reported its end: one error, then
    // nothing.
    stream::unfold(EventsState::Start(inner, options), |state| async move {
        let (mut events, endpoint) = match state {
            EventsState::Done => return None,
            EventsState::Reading(events, endpoint) => (events, endpoint),
            EventsState::Start(inner, options) => match inner.session().await {
                Ok(s) => (
                    s.docker.events(Some(options)).boxed(),
                    inner.endpoint.clone(),
                ),
                Err(e) => {
                    let reason = format!("{}: {e}", inner.endpoint);
                    return Some((
                        Err(RuntimeError::Events {
                            runtime: RUNTIME,
                            reason,
                        }),
                        EventsState::Done,
                    ));
                }
            },
        };
        loop {
            let reason = match events.next().await {
                Some(Ok(msg)) => match map_event(&msg) {
                    Some(ev) => return Some((Ok(ev), EventsState::Reading(events, endpoint))),
                    None => continue,
                },
                Some(Err(e)) => match map_error(&endpoint, "events", e) {
                    RuntimeError::Unreachable { reason, .. } => {
                        format!("{endpoint}: {reason}")
                    }
                    other => format!("{endpoint}: {other}"),
                },
                None => format!("{endpoint}: dockerd closed the stream"),
            };
            return Some((
                Err(RuntimeError::Events {
                    runtime: RUNTIME,
                    reason,
                }),
                EventsState::Done,
            ));
        }
    })
    .boxed()
}

/// Where an event stream is.
enum EventsState {
    /// Not yet subscribed.
    Start(Arc<Inner>, EventsOptions),
    Reading(
        BoxStream<'static, Result<EventMessage, BollardError>>,
        String,
    ),
    Done,
}

/// Engine event action → record change. Docker suffixes some actions
/// (`exec_start: sh`, `health_status: healthy`); those are not subscribed.
fn event_action(action: &str) -> Option<EventAction> {
    Some(match action {
        "create" => EventAction::Created,
        "start" => EventAction::Started,
        "die" => EventAction::Died,
        "destroy" => EventAction::Destroyed,
        "rename" => EventAction::Renamed,
        "update" | "pause" | "unpause" => EventAction::Updated,
        _ => return None,
    })
}

fn map_event(msg: &EventMessage) -> Option<RuntimeEvent> {
    let action = event_action(msg.action.as_deref()?)?;
    let container_id = msg.actor.as_ref()?.id.clone().filter(|id| !id.is_empty())?;
    let at_ms = match (msg.time_nano, msg.time) {
        (Some(ns), _) if ns > 0 => ns / 1_000_000,
        (_, Some(s)) if s > 0 => s.saturating_mul(1000),
        _ => now_ms(),
    };
    Some(RuntimeEvent {
        container_id,
        action,
        at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    const ID: &str = "8b448499c04181d4d612cb5389fbc5d09a1249b3b59a4967771033c7d2ec5314";

    #[test]
    fn event_actions() {
        let cases = [
            ("create", Some(EventAction::Created)),
            ("start", Some(EventAction::Started)),
            ("die", Some(EventAction::Died)),
            ("destroy", Some(EventAction::Destroyed)),
            ("rename", Some(EventAction::Renamed)),
            ("update", Some(EventAction::Updated)),
            ("pause", Some(EventAction::Updated)),
            ("unpause", Some(EventAction::Updated)),
            ("kill", None),
            ("oom", None),
            ("exec_start: sh -c true", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(event_action(input), want, "{input:?}");
        }
    }

    #[test]
    fn event_mapping() {
        let msg =
            |action: &str, id: Option<&str>, time: Option<i64>, nano: Option<i64>| EventMessage {
                action: Some(action.into()),
                actor: Some(EventActor {
                    id: id.map(Into::into),
                    attributes: None,
                }),
                time,
                time_nano: nano,
                ..Default::default()
            };
        let ev = map_event(&msg(
            "start",
            Some(ID),
            Some(1_700_000_000),
            Some(1_700_000_000_123_456_789),
        ));
        assert_eq!(
            ev,
            Some(RuntimeEvent {
                container_id: ID.into(),
                action: EventAction::Started,
                at_ms: 1_700_000_000_123,
            })
        );
        let ev = map_event(&msg("die", Some(ID), Some(1_700_000_000), None));
        assert_eq!(ev.map(|e| e.at_ms), Some(1_700_000_000_000));
        let before = now_ms();
        let ev = map_event(&msg("destroy", Some(ID), None, None));
        assert!(ev.is_some_and(|e| e.at_ms >= before));
        assert_eq!(map_event(&msg("start", None, None, None)), None);
        assert_eq!(map_event(&msg("start", Some(""), None, None)), None);
        assert_eq!(map_event(&msg("kill", Some(ID), None, None)), None);
    }
}
