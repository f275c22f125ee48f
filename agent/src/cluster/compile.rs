//! Compile caches in cluster mode. The pods on this node (a watch with the field selector
//! `spec.nodeName`) say which models are in use and when a pod became Ready; a pod belongs to
//! the model its label `coldstart.dev/model` names, or whose per-model cache path it mounts
//! (a hostPath volume). The keeper ([`crate::caches::keeper`]) walks and hashes trees, so it
//! runs on a blocking thread and the pass never waits for it: each pass collects the last
//! run's report and starts the next one. The startup taint never waits for compile caches (a
//! pod can still compile).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::Notify;

use super::watched::{Watched, watch};
use crate::api::{ColdModel, CompileCacheStatus, POD_MODEL_LABEL, name_of};
use crate::caches::CacheRoot;
use crate::caches::keeper::{Inputs, PodUse};
use crate::caches::runner::{self, Runner, Settings};
use crate::gpu::GpuReport;
use crate::metrics::Metrics;
use crate::plan::Plan;

/// The compile caches of this node.
pub(super) struct CompileCaches {
    settings: Settings,
    pods: Watched<Pod>,
    runner: Runner,
}

impl CompileCaches {
    /// Starts the pods watch for `node`.
    pub(super) fn new(
        settings: Settings,
        client: kube::Client,
        node: &str,
        wake: Arc<Notify>,
    ) -> CompileCaches {
        let on_node = format!("spec.nodeName={node}");
        let pods = watch(
            Api::all(client),
            watcher::Config::default().fields(&on_node),
            wake,
        );
        CompileCaches {
            runner: Runner::new(&settings.cache_root),
            settings,
            pods,
        }
    }

    /// Stops the watch.
    pub(super) fn stop(&self) {
        self.pods.task.abort();
    }

    /// Starts a keeper run (once the pods watch has listed) and returns the scopes of the last
    /// finished one.
    pub(super) async fn pass(
        &mut self,
        models: &[ColdModel],
        plan: &Plan,
        gpu: &GpuReport,
        now: Timestamp,
        metrics: &Metrics,
    ) -> Vec<CompileCacheStatus> {
        let synced = self.pods.synced.load(Ordering::Acquire);
        let (settings, pods) = (&self.settings, &self.pods);
        let inputs = || {
            let names: BTreeSet<String> = models.iter().map(|m| name_of(m).to_string()).collect();
            let root = CacheRoot::new(&settings.cache_root);
            let pods: Vec<Pod> = pods.store.state().iter().map(|p| (**p).clone()).collect();
            Inputs {
                wants: runner::wants(models, plan),
                gpu_product: runner::gpu_product(Some(gpu)),
                pods: pod_uses(&pods, &names, &root),
                held: BTreeSet::new(),
                proc_root: None,
                budget: Some(settings.budget),
                now: runner::nanos(now),
            }
        };
        self.runner.pass(synced, inputs, metrics).await
    }
}

/// The model a pod serves: its `coldstart.dev/model` label, else the model whose per-model
/// cache path one of its hostPath volumes names.
fn model_of(pod: &Pod, models: &BTreeSet<String>, root: &CacheRoot) -> Option<String> {
    if let Some(m) = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_MODEL_LABEL))
        .filter(|m| models.contains(*m))
    {
        return Some(m.clone());
    }
    let volumes = pod.spec.as_ref()?.volumes.as_ref()?;
    volumes.iter().find_map(|v| {
        let path = PathBuf::from(&v.host_path.as_ref()?.path);
        models
            .iter()
            .find(|m| path.starts_with(root.model_link(m)))
            .cloned()
    })
}

/// Per model: whether a pod of it runs, and which of them are Ready.
pub fn pod_uses(
    pods: &[Pod],
    models: &BTreeSet<String>,
    root: &CacheRoot,
) -> BTreeMap<String, PodUse> {
    let mut out: BTreeMap<String, PodUse> = BTreeMap::new();
    for pod in pods {
        let Some(model) = model_of(pod, models, root) else {
            continue;
        };
        let status = pod.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let e = out.entry(model).or_default();
        e.running |= running;
        if running && ready {
            e.ready.insert(pod.metadata.uid.clone().unwrap_or_default());
        }
    }
    out
}

#[cfg(test)]
mod tests;
