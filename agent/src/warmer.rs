//! The local half of a reconcile pass, shared by cluster and standalone mode: runs image pulls
//! and weight syncs as background tasks through the [`Images`] and [`Weights`] ports, reports
//! what the ports hold as the planner's [`Local`], executes a [`Plan`]'s local actions (start,
//! pin, unpin, evict) and writes the progress of each part into the status the planner made.
//! It decides nothing: retries, re-syncs and evictions are the planner's.
//!
//! A pass never waits for a pull or a sync: it starts them and returns; the next pass reaps
//! them. Tasks are aborted when their model stops wanting them (deselected, or its spec
//! changed) and on shutdown: both ports publish atomically, so an aborted task leaves only
//! resumable partial files, never a half-visible snapshot or image.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::api::{ColdModel, ColdNodeStatus, name_of};
use crate::gpu::{self, GpuReport};
use crate::images::{ImageRef, Images, RegistryAuth};
use crate::metrics::{Metrics, Part};
use crate::plan::{self, Inputs, Limits, Mono, Plan};
use crate::prepull;
use crate::weights::filter::Filter;
use crate::weights::{self, RepoId, SyncJob, Weights};

mod observe;
mod records;
mod state;
mod status;
mod tasks;
#[cfg(test)]
mod tests;

use records::{Failure, Record};
use state::ManagedImages;
use tasks::Running;
pub use tasks::{LiveBytes, LiveTarget, LiveTask};

/// Where the credentials a model names come from: Secrets in the agent's namespace in
/// cluster mode, the configured files in standalone mode.
#[allow(async_fn_in_trait)]
pub trait Credentials {
    /// The Hub token for `model`, if it names or the agent has one.
    async fn hub_token(&self, model: &ColdModel) -> Result<Option<String>, CredentialError>;
    /// Registry credentials for `image` of `model`.
    async fn pull_auth(
        &self,
        model: &ColdModel,
        image: &ImageRef,
    ) -> Result<Option<RegistryAuth>, CredentialError>;
}

/// A credential could not be read; the message names the secret or file and the cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// What one local pass is given besides the models.
#[derive(Debug, Clone, Copy)]
pub struct PassInputs<'a> {
    /// This node's labels (empty in standalone mode: every model is selected).
    pub labels: &'a BTreeMap<String, String>,
    /// Every ColdModel.
    pub models: &'a [ColdModel],
    /// The status last reported (transition times carry over from it).
    pub current: Option<&'a ColdNodeStatus>,
    /// GPU health, where a monitor runs.
    pub gpu: Option<&'a GpuReport>,
    /// While the startup taint is on: when warming must be done.
    pub warming_deadline: Option<Timestamp>,
    /// Wall time of the pass.
    pub now: Timestamp,
}

/// Runs and tracks the local work through the images port `I` and the weights port `W`.
pub struct Warmer<I, W> {
    images: Arc<I>,
    weights: Arc<W>,
    prepull: prepull::Options,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    /// The agent's start: [`Mono`] readings count from it.
    started: Instant,
    managed: ManagedImages,
    pulls: BTreeMap<String, Running>,
    syncs: BTreeMap<String, Running>,
    image_records: BTreeMap<String, Record>,
    /// CRI's manifest digest per present image: `resolved` when no pull of ours recorded one.
    present_digests: BTreeMap<String, String>,
    weight_records: BTreeMap<String, Record>,
    /// Models held in the cache, by ColdModel name.
    held: BTreeMap<String, RepoId>,
    unselected_since: BTreeMap<String, Timestamp>,
}

impl<I, W> std::fmt::Debug for Warmer<I, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warmer")
            .field("pulls", &self.pulls.keys().collect::<Vec<_>>())
            .field("syncs", &self.syncs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What identifies a model's weights work: a change restarts it.
fn weights_key(m: &ColdModel) -> String {
    let s = &m.spec;
    format!(
        "{}@{}|{}|{}",
        s.repo,
        s.revision.as_deref().unwrap_or("main"),
        s.include.join(","),
        s.exclude.join(",")
    )
}

impl<I: Images + Send + Sync + 'static, W: Weights> Warmer<I, W> {
    /// A warmer over both ports; the list of images it pinned lives in `state_dir`; `wake` is
    /// notified when a task ends.
    pub fn new(
        images: Arc<I>,
        weights: Arc<W>,
        state_dir: &Path,
        prepull: prepull::Options,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Result<Warmer<I, W>, crate::fsx::Error> {
        Ok(Warmer {
            managed: ManagedImages::load(state_dir)?,
            images,
            weights,
            prepull,
            metrics,
            wake,
            started: Instant::now(),
            pulls: BTreeMap::new(),
            syncs: BTreeMap::new(),
            image_records: BTreeMap::new(),
            present_digests: BTreeMap::new(),
            weight_records: BTreeMap::new(),
            held: BTreeMap::new(),
            unselected_since: BTreeMap::new(),
        })
    }

    /// The images port.
    pub fn images(&self) -> &Arc<I> {
        &self.images
    }

    /// The metrics it reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether any pull or sync is running.
    pub fn busy(&self) -> bool {
        !self.pulls.is_empty() || !self.syncs.is_empty()
    }

    /// The monotonic clock of the planner: time since the warmer started.
    fn clock(&self) -> Mono {
        Mono(self.started.elapsed())
    }

    /// One local pass, the same in both modes: observe through the ports, plan, execute the
    /// local actions, and write progress into the plan's status. The caller reports the rest
    /// (node surface, status file).
    pub async fn pass<C: Credentials>(
        &mut self,
        inp: PassInputs<'_>,
        limits: &Limits,
        creds: &C,
    ) -> Plan {
        let selected = plan::selected(inp.models, inp.labels);
        let local = self.observe(&selected).await;
        if let Some(report) = inp.gpu {
            self.metrics.gpu(report);
        }
        let inputs = Inputs {
            node_labels: inp.labels,
            models: inp.models,
            current: inp.current,
            local: &local,
            gpu_healthy: inp.gpu.is_none_or(|r| r.healthy),
            warming_deadline: inp.warming_deadline,
            now: inp.now,
            clock: self.clock(),
        };
        let mut plan = plan::plan(&inputs, limits);
        plan.status.gpu = inp.gpu.map(gpu::status);
        self.execute(&plan, inp.models, creds, inp.now).await;
        self.report_progress(&mut plan.status, inp.current, inp.models, inp.now);
        self.forget_gone_models(&plan.status, inp.current);
        plan
    }

    /// The running tasks, for readers between passes (see [`LiveTask`]).
    pub fn live(&self) -> Vec<LiveTask> {
        let pulls = self
            .pulls
            .iter()
            .map(|(image, t)| LiveTask::new(LiveTarget::Image(image.clone()), t.progress.clone()));
        let syncs = self
            .syncs
            .iter()
            .map(|(name, t)| LiveTask::new(LiveTarget::Weights(name.clone()), t.progress.clone()));
        pulls.chain(syncs).collect()
    }

    /// Drops the metric series of models reported last pass and not this one (unselected or
    /// removed): a `Failed` phase series left behind would keep an alert firing forever.
    fn forget_gone_models(&self, status: &ColdNodeStatus, previous: Option<&ColdNodeStatus>) {
        let now: BTreeSet<&str> = status.models.iter().map(|m| m.name.as_str()).collect();
        for old in previous.iter().flat_map(|p| &p.models) {
            if !now.contains(old.name.as_str()) {
                self.metrics.forget_model(&old.name);
            }
        }
    }

    /// Executes the plan's local actions.
    async fn execute<C: Credentials>(
        &mut self,
        plan: &Plan,
        models: &[ColdModel],
        creds: &C,
        now: Timestamp,
    ) {
        for image in &plan.pull_images {
            let wants = |m: &&ColdModel| m.spec.image.as_deref() == Some(image.as_str());
            if let Some(model) = models.iter().find(wants) {
                self.start_pull(model, image, creds, now).await;
            }
        }
        for image in &plan.pin_images {
            self.pin(image, true).await;
        }
        for image in &plan.unpin_images {
            self.pin(image, false).await;
        }
        for name in plan.sync_weights.iter().chain(&plan.resync_weights) {
            if plan.resync_weights.as_ref() == Some(name) {
                info!(model = %name, "periodic re-sync");
            }
            if let Some(model) = models.iter().find(|m| name_of(m) == name) {
                self.start_sync(model, creds, now).await;
            }
        }
        self.track_unselected(&plan.unselected, now);
        for name in &plan.evict_weights {
            self.evict(name).await;
        }
    }

    async fn start_pull<C: Credentials>(
        &mut self,
        model: &ColdModel,
        image: &str,
        creds: &C,
        now: Timestamp,
    ) {
        let prepared = match ImageRef::parse(image) {
            Ok(reference) => match creds.pull_auth(model, &reference).await {
                Ok(auth) => Ok((reference, auth)),
                Err(e) => Err(Failure::of("credentials", &e)),
            },
            Err(e) => Err(Failure::of(e.metric_label(), &e)),
        };
        let (reference, auth) = match prepared {
            Ok(p) => p,
            Err(f) => {
                let at = self.clock();
                records::record(&mut self.image_records, image, image, Err(f), now, at);
                return;
            }
        };
        info!(image, model = name_of(model), "pulling image");
        let (progress, handle) = tasks::spawn_pull(
            self.images.clone(),
            reference,
            auth,
            self.prepull.clone(),
            self.wake.clone(),
        );
        self.managed.add(image);
        self.save_managed().await;
        let running = Running {
            key: image.to_string(),
            model: name_of(model).to_string(),
            started: now,
            progress,
            handle,
        };
        self.pulls.insert(image.to_string(), running);
    }

    async fn start_sync<C: Credentials>(&mut self, model: &ColdModel, creds: &C, now: Timestamp) {
        let name = name_of(model).to_string();
        let key = weights_key(model);
        let job = match sync_job(model, creds).await {
            Ok(job) => job,
            Err(f) => {
                let at = self.clock();
                records::record(&mut self.weight_records, &name, &key, Err(f), now, at);
                return;
            }
        };
        info!(model = %name, repo = %job.repo, revision = %job.revision, "syncing weights");
        let (progress, handle) = tasks::spawn_sync(self.weights.clone(), job, self.wake.clone());
        self.unselected_since.remove(&name);
        let running = Running {
            key,
            model: name.clone(),
            started: now,
            progress,
            handle,
        };
        self.syncs.insert(name, running);
    }

    async fn pin(&mut self, image: &str, pinned: bool) {
        let Ok(reference) = ImageRef::parse(image) else {
            return;
        };
        match self.images.set_pinned(&reference, pinned).await {
            Ok(()) => {
                info!(image, pinned, "image pin label set");
                if pinned {
                    self.managed.add(image);
                } else {
                    self.managed.remove(image);
                }
                self.save_managed().await;
            }
            Err(e) => {
                self.metrics.image_error(&e);
                warn!(image, pinned, error = %crate::errors::chain(&e), "cannot set the pin label");
            }
        }
    }

    /// Writes the pinned-image list when it changed (an fsync: on the blocking pool).
    async fn save_managed(&mut self) {
        if let Err(e) = self.managed.save().await {
            warn!(error = %crate::errors::chain(&e), "cannot record the managed image list");
        }
    }

    fn track_unselected(&mut self, unselected: &[String], now: Timestamp) {
        self.unselected_since
            .retain(|name, _| unselected.contains(name));
        for name in unselected {
            self.unselected_since.entry(name.clone()).or_insert(now);
        }
    }

    async fn evict(&mut self, name: &str) {
        let Some(repo) = self.held.get(name).cloned() else {
            return;
        };
        match self.weights.evict(repo).await {
            Ok(freed) => {
                info!(model = name, freed, "evicted unselected weights");
                self.held.remove(name);
                self.unselected_since.remove(name);
                self.weight_records.remove(name);
                self.metrics.forget_model(name);
            }
            Err(e) => {
                self.metrics.weights_error(&e);
                warn!(model = name, error = %crate::errors::chain(&e), "eviction failed; retrying next pass");
            }
        }
    }

    /// Records the results of finished tasks.
    async fn reap(&mut self) {
        for part in [Part::Image, Part::Weights] {
            let tasks = match part {
                Part::Image => &mut self.pulls,
                Part::Weights => &mut self.syncs,
            };
            let finished: Vec<String> = tasks
                .iter()
                .filter(|(_, t)| t.handle.is_finished())
                .map(|(k, _)| k.clone())
                .collect();
            let finished: Vec<(String, Running)> = finished
                .into_iter()
                .filter_map(|k| tasks.remove(&k).map(|t| (k, t)))
                .collect();
            for (k, t) in finished {
                self.reaped(part, &k, t).await;
            }
        }
    }

    async fn reaped(&mut self, part: Part, name: &str, t: Running) {
        let moved = tasks::lock(&t.progress).uncounted();
        self.metrics.add_bytes(&t.model, part, moved);
        let result = t.handle.await.unwrap_or_else(|e| {
            Err(Failure {
                kind: "panic",
                message: format!("task failed: {e}"),
            })
        });
        match &result {
            Ok(d) => info!(name, bytes = d.bytes, "part ready"),
            Err(f) => {
                warn!(name, kind = f.kind, error = %f.message, "part failed");
                self.metrics.error(part.source(), f.kind);
            }
        }
        let secs = Timestamp::now().duration_since(t.started).as_secs_f64();
        self.metrics
            .observe_part(part, result.is_ok(), secs.max(0.0));
        let at = self.clock();
        let records = match part {
            Part::Image => &mut self.image_records,
            Part::Weights => &mut self.weight_records,
        };
        records::record(records, name, &t.key, result, t.started, at);
    }

    async fn abort_unwanted(&mut self, selected: &[&ColdModel]) {
        let keys: BTreeMap<&str, String> = selected
            .iter()
            .map(|m| (name_of(m), weights_key(m)))
            .collect();
        let images: BTreeSet<&str> = selected
            .iter()
            .filter_map(|m| m.spec.image.as_deref())
            .collect();
        let stale: Vec<String> = self
            .syncs
            .iter()
            .filter(|(name, t)| keys.get(name.as_str()) != Some(&t.key))
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            if let Some(t) = self.syncs.remove(&name) {
                info!(model = %name, "sync no longer wanted as started; stopping it");
                t.abort().await;
            }
        }
        let stale: Vec<String> = self
            .pulls
            .keys()
            .filter(|i| !images.contains(i.as_str()))
            .cloned()
            .collect();
        for image in stale {
            if let Some(t) = self.pulls.remove(&image) {
                info!(image = %image, "pull no longer wanted; stopping it");
                t.abort().await;
            }
        }
    }

    /// Stops every task (they leave only resumable partial files) and waits for them.
    pub async fn shutdown(&mut self) {
        let pulls = std::mem::take(&mut self.pulls);
        let syncs = std::mem::take(&mut self.syncs);
        for (_, t) in pulls.into_iter().chain(syncs) {
            t.abort().await;
        }
    }
}

/// The sync job a ColdModel asks for, with its token.
async fn sync_job<C: Credentials>(model: &ColdModel, creds: &C) -> Result<SyncJob, Failure> {
    let bad = |e: weights::Error| Failure::of(e.metric_label(), &e);
    let spec = &model.spec;
    let repo = RepoId::parse(&spec.repo).map_err(bad)?;
    let filter = Filter::new(&spec.include, &spec.exclude).map_err(bad)?;
    let token = creds
        .hub_token(model)
        .await
        .map_err(|e| Failure::of("credentials", &e))?;
    Ok(SyncJob {
        repo,
        revision: spec.revision.clone().unwrap_or_else(|| "main".into()),
        filter,
        token,
    })
}

impl Part {
    fn source(self) -> crate::metrics::ErrorSource {
        match self {
            Part::Image => crate::metrics::ErrorSource::Images,
            Part::Weights => crate::metrics::ErrorSource::Weights,
        }
    }
}
