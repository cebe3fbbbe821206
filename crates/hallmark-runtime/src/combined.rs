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
    let runtime = match rt.source() {
        RuntimeSource::Docker => "docker",
        RuntimeSource::Cri => "cri",
    };
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
