//! Pods full of sleeping containers on the CRI runtime, for the resync
//! benchmark.

use std::collections::HashMap;

use anyhow::{Context, Result};
use hallmark_runtime::cri::pods::{ContainerSpec, HostPod, PodSpec};

/// Containers per pod.
const PER_POD: usize = 20;
const IMAGE: &str = "hallmark-test/busybox:1";

pub struct CriPods {
    pods: Vec<HostPod>,
}

impl CriPods {
    /// `containers` running containers, spread over pods of [`PER_POD`].
    pub async fn start(socket: &str, containers: usize) -> Result<CriPods> {
        let mut pods = CriPods { pods: Vec::new() };
        let mut left = containers;
        let mut p = 0;
        while left > 0 {
            let uid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), p);
            let spec = PodSpec {
                name: format!("bench-{p}"),
                namespace: "bench".into(),
                uid: uid.clone(),
                labels: HashMap::from([("app".to_string(), "bench".to_string())]),
                annotations: HashMap::new(),
                cgroup_parent: format!("/hallmark-bench/pod{uid}"),
            };
            let pod = match HostPod::run(socket, spec).await {
                Ok(pod) => pod,
                Err(e) => {
                    pods.stop().await;
                    return Err(e).context("creating a benchmark pod");
                }
            };
            pods.pods.push(pod);
            let pod = pods.pods.last_mut().context("the pod just added")?;
            for c in 0..PER_POD.min(left) {
                pod.spawn(ContainerSpec {
                    name: format!("c{c}"),
                    image: IMAGE.into(),
                    args: vec!["sleep".into(), "3600".into()],
                    ..Default::default()
                })
                .await
                .context("starting a benchmark container")?;
            }
            left -= PER_POD.min(left);
            p += 1;
        }
        Ok(pods)
    }

    pub async fn stop(self) {
        for pod in self.pods {
            let id = pod.id.clone();
            if let Err(e) = pod.remove().await {
                eprintln!("removing benchmark pod {id}: {e}");
            }
        }
    }
}
