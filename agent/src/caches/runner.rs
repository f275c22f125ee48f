//! Runs the [`Keeper`] for the daemon's loop (cluster or standalone): on a blocking thread,
//! never waited for. Each pass collects the last run's report (statuses, metrics, logs) and
//! starts the next run; the pass reports the scopes of the last finished run.

use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use std::collections::BTreeMap;

use super::UnixNanos;
use super::keeper::{Inputs, Keeper, Report, Want};
use super::layout::Owner;
use super::ship::Target;
use super::ship::Trust;
use super::shipper::{ShipTarget, Shipper};
use crate::api::{ColdModel, CompileCacheStatus, PartPhase, name_of};
use crate::gpu::GpuReport;
use crate::images::ImageRef;
use crate::images::RegistryClient;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::warmer::Credentials;

/// GPU product recorded in the scope key of a node without GPUs (a CPU-only node, a node
/// whose driver is not up yet): the key still says what compiled the caches.
pub const NO_GPU: &str = "no-gpu";

/// Where the compile caches are, and their budget.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent's cache root (`<root>/compile` holds the caches).
    pub cache_root: std::path::PathBuf,
    /// `--compile-cache-budget`, bytes.
    pub budget: u64,
    /// `--compile-cache-import-only`: never push.
    pub import_only: bool,
}

/// The keeper and its run in flight.
pub struct Runner {
    keeper: Arc<Mutex<Keeper>>,
    running: Option<JoinHandle<Report>>,
    statuses: Vec<CompileCacheStatus>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for the caches under `cache_root`.
    pub fn new(cache_root: &Path) -> Runner {
        Runner {
            keeper: Arc::new(Mutex::new(Keeper::new(cache_root))),
            running: None,
            statuses: Vec::new(),
        }
    }

    /// Collects a finished run, starts a new one with `inputs()` when none is running (and
    /// `ready`: the caller knows what it needs), and returns the scopes to report.
    pub async fn pass(
        &mut self,
        ready: bool,
        inputs: impl FnOnce() -> Inputs,
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
        if self.running.is_none() && ready {
            let inputs = inputs();
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
        for (model, hit) in &report.import_uses {
            metrics.compile_cache_import_use(model, *hit);
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
}

/// The models of `plan` that keep compile caches: selected, policy not disabled, image
/// pulled (its digest is part of the scope's key).
pub fn wants(models: &[ColdModel], plan: &Plan) -> Vec<Want> {
    models
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
        .collect()
}

/// The GPU product of the scope keys: the first device's NVML name, else [`NO_GPU`].
pub fn gpu_product(gpu: Option<&GpuReport>) -> String {
    gpu.into_iter()
        .flat_map(|g| g.devices.iter())
        .map(|d| d.info.name.clone())
        .find(|n| !n.trim().is_empty())
        .unwrap_or_else(|| NO_GPU.to_string())
}

/// `now` as the keeper's clock.
pub fn nanos(now: Timestamp) -> UnixNanos {
    now.as_nanosecond().try_into().unwrap_or(i64::MAX)
}

/// What the daemon's compile-cache pass is given (cluster or standalone).
pub struct PassContext<'a, C> {
    /// Every ColdModel.
    pub models: &'a [ColdModel],
    /// The warmer's plan (selected models, resolved images).
    pub plan: &'a Plan,
    /// Now.
    pub now: Timestamp,
    /// The agent's metrics.
    pub metrics: &'a Metrics,
    /// Credentials for the models' registries, as for their images.
    pub creds: &'a C,
}

/// Per model whose policy names a registry: where its scopes travel. A registry that does not
/// parse or credentials that cannot be read are returned by model, for its scopes' status.
pub async fn ship_targets<C: Credentials>(
    models: &[ColdModel],
    wants: &[Want],
    creds: &C,
) -> (BTreeMap<String, ShipTarget>, BTreeMap<String, String>) {
    let mut targets = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for w in wants {
        let Some(registry) = w.policy.registry.as_deref().filter(|r| !r.is_empty()) else {
            continue;
        };
        let Some(model) = models.iter().find(|m| name_of(m) == w.model) else {
            continue;
        };
        let target = async {
            let repo = ImageRef::parse(registry).map_err(|e| e.to_string())?;
            let auth = creds
                .pull_auth(model, &repo)
                .await
                .map_err(|e| e.to_string())?;
            Target::new(registry, auth).map_err(|e| e.to_string())
        };
        match target.await {
            Ok(target) => {
                let owner = Owner {
                    uid: w.policy.uid.unwrap_or(0),
                    gid: w.policy.gid.unwrap_or(0),
                };
                targets.insert(w.model.clone(), ShipTarget { target, owner });
            }
            Err(e) => {
                errors.insert(w.model.clone(), format!("compile-cache registry: {e}"));
            }
        }
    }
    (targets, errors)
}

/// The registry step of a pass, cluster or standalone: the targets of the models whose policy
/// names a registry; when an import is due, `trust()` says which digests may be imported
/// (`None`: none); then the shipper's pass over `statuses`, whose `transfer` lines it sets.
pub async fn ship<C: Credentials>(
    shipper: &mut Shipper,
    statuses: &mut [CompileCacheStatus],
    ctx: &PassContext<'_, C>,
    registry: impl Future<Output = RegistryClient>,
    trust: impl AsyncFnOnce() -> Option<Trust>,
) {
    let wants = wants(ctx.models, ctx.plan);
    let (targets, errors) = ship_targets(ctx.models, &wants, ctx.creds).await;
    if !targets.is_empty() {
        let now = nanos(ctx.now);
        let trust = if shipper.wants_trust(statuses, &targets, now) {
            trust().await
        } else {
            None
        };
        let client = registry.await;
        shipper.pass(
            statuses,
            &targets,
            trust.as_ref(),
            &client,
            ctx.metrics,
            now,
        );
    }
    mark_target_errors(statuses, &errors);
}

/// Sets the `transfer` line of the scopes of models whose target failed.
fn mark_target_errors(statuses: &mut [CompileCacheStatus], errors: &BTreeMap<String, String>) {
    for s in statuses.iter_mut().filter(|s| s.current) {
        if let Some(e) = errors.get(&s.model) {
            s.transfer = Some(e.clone());
        }
    }
}
