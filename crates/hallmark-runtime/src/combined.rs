//! Two runtimes on one node, followed as one: a CRI runtime (the pods) and a
//! Docker Engine beside it (plain containers), as on a host where both run.
//! The primary's word wins for a container both know (cri-dockerd serves
//! Docker's own containers over CRI), so no container is listed twice.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use hallmark_core::{RuntimeSource, Workload};

use crate::{Listing, Runtime, RuntimeError, RuntimeEvent};

pub struct Combined {
    primary: Arc<dyn Runtime>,
    secondary: Arc<dyn Runtime>,
    endpoint: String,
}

impl Combined {
    pub fn new(primary: Arc<dyn Runtime>, secondary: Arc<dyn Runtime>) -> Self {
        let endpoint = format!("{} + {}", primary.endpoint(), secondary.endpoint());
        Combined {
            primary,
            secondary,
            endpoint,
        }
    }
}

/// `events`, then one error when it ends: the merged stream must end (so the
/// consumer resyncs and subscribes again) as soon as either side breaks.
fn ending(rt: &Arc<dyn Runtime>) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
    let runtime = rt.source().as_str();
    rt.events()
        .chain(stream::once(async move {
            Err(RuntimeError::Events {
                runtime,
                reason: "stream ended".into(),
            })
        }))
        .boxed()
}

impl Runtime for Combined {
    fn source(&self) -> RuntimeSource {
        self.primary.source()
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>> {
        Box::pin(async move {
            let (a, b) = futures::join!(self.primary.version(), self.secondary.version());
            Ok(format!("{} + {}", a?, b?))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RuntimeError>> {
        Box::pin(async move {
            let (a, b) = futures::join!(self.primary.list(), self.secondary.list());
            let (mut a, b) = (a?, b?);
            let known: HashSet<String> =
                a.workloads.iter().map(|w| w.container_id.clone()).collect();
            a.workloads.extend(
                b.workloads
                    .into_iter()
                    .filter(|w| !known.contains(&w.container_id)),
            );
            a.calls += b.calls;
            a.failures += b.failures;
            Ok(a)
        })
    }

    fn inspect<'a>(
        &'a self,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Workload>, RuntimeError>> {
        Box::pin(async move {
            match self.primary.inspect(container_id).await {
                Ok(Some(w)) => Ok(Some(w)),
                Ok(None) => self.secondary.inspect(container_id).await,
                Err(e) => match self.secondary.inspect(container_id).await {
                    Ok(Some(w)) => Ok(Some(w)),
                    _ => Err(e),
                },
            }
        })
    }

    fn events(&self) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
        stream::select(ending(&self.primary), ending(&self.secondary)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hallmark_core::Confidence;

    /// A fixed list of containers: a test double for merging, which needs
    /// two runtimes listing overlapping containers at once.
    struct Fixed {
        source: RuntimeSource,
        ids: Vec<&'static str>,
    }

    fn record(id: &str, source: RuntimeSource) -> Workload {
        let mut w = Workload::partial(id, source, "");
        w.confidence = Confidence::Full;
        w
    }

    impl Runtime for Fixed {
        fn source(&self) -> RuntimeSource {
            self.source
        }
        fn endpoint(&self) -> &str {
            match self.source {
                RuntimeSource::Cri => "/cri.sock",
                RuntimeSource::Docker => "/docker.sock",
            }
        }
        fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>> {
            Box::pin(async move { Ok(self.source.to_string()) })
        }
        fn list(&self) -> BoxFuture<'_, Result<Listing, RuntimeError>> {
            Box::pin(async move {
                Ok(Listing {
                    workloads: self.ids.iter().map(|id| record(id, self.source)).collect(),
                    calls: 1,
                    failures: 0,
                })
            })
        }
        fn inspect<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<Workload>, RuntimeError>> {
            Box::pin(async move { Ok(self.ids.contains(&id).then(|| record(id, self.source))) })
        }
        fn events(&self) -> BoxStream<'static, Result<RuntimeEvent, RuntimeError>> {
            stream::empty().boxed()
        }
    }

    fn combined() -> Combined {
        Combined::new(
            Arc::new(Fixed {
                source: RuntimeSource::Cri,
                ids: vec!["a", "shared"],
            }),
            Arc::new(Fixed {
                source: RuntimeSource::Docker,
                ids: vec!["shared", "b"],
            }),
        )
    }

    #[tokio::test]
    async fn lists_each_container_once_primary_first() {
        let c = combined();
        let l = c.list().await.unwrap();
        let got: Vec<(String, RuntimeSource)> = l
            .workloads
            .iter()
            .map(|w| (w.container_id.clone(), w.source))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), RuntimeSource::Cri),
                ("shared".into(), RuntimeSource::Cri),
                ("b".into(), RuntimeSource::Docker),
            ]
        );
        assert_eq!(l.calls, 2);
        assert_eq!(c.endpoint(), "/cri.sock + /docker.sock");
        assert_eq!(c.version().await.unwrap(), "cri + docker");
    }

    #[tokio::test]
    async fn inspect_asks_the_second_runtime_when_the_first_does_not_know() {
        let c = combined();
        assert_eq!(
            c.inspect("b").await.unwrap().unwrap().source,
            RuntimeSource::Docker
        );
        assert_eq!(
            c.inspect("shared").await.unwrap().unwrap().source,
            RuntimeSource::Cri
        );
        assert!(c.inspect("zzz").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn events_end_with_an_error_when_a_side_ends() {
        let c = combined();
        let mut ev = c.events();
        assert!(matches!(
            ev.next().await,
            Some(Err(RuntimeError::Events { .. }))
        ));
    }
}
