//! Compile caches in cluster mode. The pods on this node (a watch with the field selector
//! `spec.nodeName`) say which models are in use and when a pod became Ready; a pod belongs to
//! the model its label `coldstart.dev/model` names, or whose per-model cache path it mounts
//! (a hostPath volume). The keeper ([`crate::caches::keeper`]) walks and hashes trees, so it
//! runs on a blocking thread and the pass never waits for it: each pass collects the last
//! run's report and starts the next one. The startup taint never waits for compile caches (a
//! pod can still compile).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::watched::{Watched, watch};
use crate::api::{ColdModel, CompileCacheStatus, POD_MODEL_LABEL, PartPhase, name_of};
use crate::caches::CacheRoot;
use crate::caches::keeper::{Inputs, Keeper, PodUse, Report, Want};
use crate::gpu::GpuReport;
use crate::metrics::Metrics;
use crate::plan::Plan;

/// GPU product recorded in the scope key of a node without GPUs (CPU-only tests, a node whose
/// driver is not up yet): the key still says what compiled the caches.
pub const NO_GPU: &str = "no-gpu";

/// Settings of the compile caches.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent's cache root (`<root>/compile` holds the caches).
    pub cache_root: PathBuf,
    /// `--compile-cache-budget`, bytes.
    pub budget: u64,
}

/// The compile caches of this node.
pub(super) struct CompileCaches {
    settings: Settings,
    pods: Watched<Pod>,
    keeper: Arc<Mutex<Keeper>>,
    running: Option<JoinHandle<Report>>,
    statuses: Vec<CompileCacheStatus>,
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
            keeper: Arc::new(Mutex::new(Keeper::new(&settings.cache_root))),
            settings,
            pods,
            running: None,
            statuses: Vec::new(),
        }
    }

    /// Whether the pods watch has listed once.
    pub(super) fn synced(&self) -> bool {
        self.pods.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops the watch.
    pub(super) fn stop(&self) {
        self.pods.task.abort();
    }

    /// Collects the last keeper run (when done) and starts the next; the scopes to report.
    pub(super) async fn pass(
        &mut self,
        models: &[ColdModel],
        plan: &Plan,
        gpu: &GpuReport,
        now: Timestamp,
        metrics: &Metrics,
    ) -> Vec<CompileCacheStatus> {
        if self.running.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(task) = self.running.take()
        {
            match task.await {
                Ok(report) => self.take(report, metrics),
                Err(e) => warn!(error = %e, "the compile-cache pass did not finish"),
            }
        }
        if self.running.is_none() && self.synced() {
            let inputs = self.inputs(models, plan, gpu, now);
            let keeper = self.keeper.clone();
            self.running = Some(tokio::task::spawn_blocking(move || {
                let mut k = keeper.lock().unwrap_or_else(|p| p.into_inner());
                k.pass(&inputs)
            }));
        }
        self.statuses.clone()
    }

    fn take(&mut self, report: Report, metrics: &Metrics) {
        let evicted: u64 = report.evicted.iter().map(|(_, b)| b).sum();
        metrics.compile_caches(&report.statuses, &report.sealed, evicted);
        for (scope, generation) in &report.sealed {
            info!(%scope, generation, "compile cache sealed");
        }
        for (scope, bytes) in &report.evicted {
            info!(%scope, bytes, "compile cache evicted (over --compile-cache-budget)");
        }
        for (what, e) in &report.errors {
            let error = crate::errors::chain(e);
            warn!(%what, %error, "compile cache step failed; retrying next pass");
        }
        self.statuses = report.statuses;
    }

    fn inputs(&self, models: &[ColdModel], plan: &Plan, gpu: &GpuReport, now: Timestamp) -> Inputs {
        let wants = models
            .iter()
            .filter(|m| plan.selected.contains(name_of(m)))
            .filter_map(|m| {
                let policy = m.spec.compile_cache.clone().unwrap_or_default();
                if policy.enabled == Some(false) {
                    return None;
                }
                let image = plan
                    .status
                    .models
                    .iter()
                    .find(|s| s.name == name_of(m))?
                    .image
                    .as_ref()?;
                if image.phase != PartPhase::Ready {
                    return None;
                }
                Some(Want {
                    model: name_of(m).to_string(),
                    image_digest: image.resolved.clone()?,
                    policy,
                })
            })
            .collect();
        let gpu_product = gpu
            .devices
            .iter()
            .map(|d| d.info.name.clone())
            .find(|n| !n.trim().is_empty())
            .unwrap_or_else(|| NO_GPU.to_string());
        let names: BTreeSet<String> = models.iter().map(|m| name_of(m).to_string()).collect();
        let root = CacheRoot::new(&self.settings.cache_root);
        let pods: Vec<Pod> = self
            .pods
            .store
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        Inputs {
            wants,
            gpu_product,
            pods: pod_uses(&pods, &names, &root),
            budget: Some(self.settings.budget),
            now: now.as_nanosecond().try_into().unwrap_or(i64::MAX),
        }
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
