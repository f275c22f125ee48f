//! The local half of a reconcile pass, shared by cluster and standalone mode: runs image pulls
//! and weight syncs as background tasks, reports what the ports hold as the planner's
//! [`Local`], executes a [`Plan`]'s local actions (start, pin, unpin, evict) and fills the
//! progress of each part into the status the planner produced.
//!
//! A pass never waits for a pull or a sync: it starts them and returns; the next pass reaps
//! them. Failures back off exponentially per part. Tasks are aborted when their model stops
//! wanting them (deselected, or its spec changed) and on shutdown: both ports publish
//! atomically, so an aborted task leaves only resumable partial files, never a half-visible
//! snapshot or image.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::api::{ColdModel, ColdNodeStatus, PartPhase, PartStatus, model_name};
use crate::images::{ImageRef, Images, RegistryAuth};
use crate::metrics::{Metrics, Part};
use crate::plan::{self, ImageState, Local, Plan, WeightsState};
use crate::prepull;
use crate::weights::cache::HubCache;
use crate::weights::filter::Filter;
use crate::weights::hub::{HubClient, HubOptions};
use crate::weights::sync::{SyncOptions, Syncer};
use crate::weights::transfer::TransferOptions;
use crate::weights::{self, RepoId};

mod state;
#[cfg(test)]
mod tests;

use state::ManagedImages;

/// Settings of the local work.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Hub endpoint and request tuning; the token is set per model.
    pub hub: HubOptions,
    /// Transfer engine tuning.
    pub transfer: TransferOptions,
    /// Files of one model downloaded at once.
    pub files_at_once: usize,
    /// Free space to leave on the cache's filesystem.
    pub margin_bytes: u64,
    /// Byte budget of the whole Hub cache.
    pub budget_bytes: Option<u64>,
    /// Pre-pull tuning.
    pub prepull: prepull::Options,
    /// First wait after a failed part; doubles per failure.
    pub retry_initial: Duration,
    /// Longest wait after a failed part.
    pub retry_max: Duration,
    /// A Ready model is synced again (listing plus fingerprints; downloads only what changed
    /// or went missing) this long after its last sync.
    pub resync_interval: Duration,
}

impl Settings {
    /// Defaults for a Hub `endpoint`.
    pub fn new(endpoint: &str) -> Settings {
        Settings {
            hub: HubOptions::new(endpoint),
            transfer: TransferOptions::default(),
            files_at_once: 4,
            margin_bytes: 1 << 30,
            budget_bytes: None,
            prepull: prepull::Options::default(),
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(600),
            resync_interval: Duration::from_secs(6 * 3600),
        }
    }
}

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

/// A credential could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// Bytes moved by a running task and when it started.
#[derive(Debug, Default)]
struct Progress {
    done: u64,
    total: Option<u64>,
    resolved: Option<String>,
    sample: Option<(Instant, u64)>,
    rate: Option<u64>,
    /// Bytes already added to the transferred-bytes metric.
    counted: u64,
}

struct Running {
    key: String,
    /// The model it works for (metrics are per model).
    model: String,
    started: Timestamp,
    progress: Arc<Mutex<Progress>>,
    handle: JoinHandle<Result<Done, Failure>>,
}

/// What a finished task left.
#[derive(Debug, Clone)]
struct Done {
    resolved: Option<String>,
    bytes: u64,
}

/// Why a task failed: a stable label and the message.
#[derive(Debug, Clone)]
struct Failure {
    kind: &'static str,
    message: String,
}

/// The last outcome of a part.
#[derive(Debug, Clone)]
struct Outcome {
    key: String,
    result: Result<Done, Failure>,
    at: Instant,
    started: Timestamp,
    failures: u32,
}

/// Runs and tracks the local work. `I` is the images port.
pub struct Warmer<I> {
    images: Arc<I>,
    cache: Arc<HubCache>,
    settings: Settings,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    managed: ManagedImages,
    pulls: BTreeMap<String, Running>,
    syncs: BTreeMap<String, Running>,
    image_outcomes: BTreeMap<String, Outcome>,
    weight_outcomes: BTreeMap<String, Outcome>,
    /// Cached models held in the cache, by ColdModel name.
    held: BTreeMap<String, RepoId>,
    unselected_since: BTreeMap<String, Timestamp>,
}

impl<I> std::fmt::Debug for Warmer<I> {
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

fn name_of(m: &ColdModel) -> &str {
    m.metadata.name.as_deref().unwrap_or_default()
}

impl<I: Images + Send + Sync + 'static> Warmer<I> {
    /// A warmer over the images port and the Hub cache; `wake` is notified when a task ends.
    pub fn new(
        images: Arc<I>,
        cache: Arc<HubCache>,
        settings: Settings,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Result<Warmer<I>, weights::Error> {
        let managed = ManagedImages::load(cache.state_dir())?;
        Ok(Warmer {
            images,
            cache,
            settings,
            metrics,
            wake,
            managed,
            pulls: BTreeMap::new(),
            syncs: BTreeMap::new(),
            image_outcomes: BTreeMap::new(),
            weight_outcomes: BTreeMap::new(),
            held: BTreeMap::new(),
            unselected_since: BTreeMap::new(),
        })
    }

    /// The metrics it reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether any pull or sync is running.
    pub fn busy(&self) -> bool {
        !self.pulls.is_empty() || !self.syncs.is_empty()
    }

    /// Reaps finished tasks, aborts those no selected model wants as they are, and reports
    /// what the node holds for the planner. `selected` are the ColdModels selected for this
    /// node.
    pub async fn observe(&mut self, selected: &[&ColdModel]) -> Local {
        self.reap().await;
        self.abort_unwanted(selected).await;
        self.refresh_held().await;
        let mut local = Local {
            unselected_since: self.unselected_since.clone(),
            ..Local::default()
        };
        let wanted: BTreeSet<String> = selected
            .iter()
            .filter_map(|m| m.spec.image.clone())
            .chain(self.managed.refs().iter().cloned())
            .collect();
        let selected_images: BTreeSet<&str> = selected
            .iter()
            .filter_map(|m| m.spec.image.as_deref())
            .collect();
        for image in wanted {
            let state = self.image_state(&image).await;
            // An unwanted image that is gone or no longer pinned needs nothing more from us.
            let done = matches!(
                state,
                ImageState::Absent | ImageState::Present { pinned: false }
            );
            if done && !selected_images.contains(image.as_str()) {
                self.managed.remove(&image);
                continue;
            }
            local.images.insert(image, state);
        }
        if let Err(e) = self.managed.save() {
            warn!(error = %e, "cannot record the managed image list");
        }
        for m in selected {
            let state = self.weights_state(m);
            local.weights.insert(name_of(m).to_string(), state);
        }
        for name in self.held.keys() {
            local
                .weights
                .entry(name.clone())
                .or_insert(WeightsState::Present);
        }
        for name in self.syncs.keys() {
            local
                .weights
                .entry(name.clone())
                .or_insert(WeightsState::Syncing);
        }
        local
    }

    async fn image_state(&mut self, image: &str) -> ImageState {
        if self.pulls.contains_key(image) {
            return ImageState::Pulling;
        }
        let Ok(reference) = ImageRef::parse(image) else {
            return ImageState::Failed("invalid_reference".into());
        };
        match self.images.status(&reference).await {
            Ok(Some(s)) if s.unpacked => ImageState::Present {
                pinned: s.pin_label,
            },
            Ok(_) => match self.image_outcomes.get(image) {
                Some(Outcome { result: Err(f), .. }) => ImageState::Failed(f.kind.into()),
                _ => ImageState::Absent,
            },
            Err(e) => {
                self.metrics.image_error(&e);
                ImageState::Failed(e.metric_label().into())
            }
        }
    }

    fn weights_state(&self, m: &ColdModel) -> WeightsState {
        let name = name_of(m);
        let outcome = self.weight_outcomes.get(name);
        let same = outcome.filter(|o| o.key == weights_key(m));
        // Synced for this spec and still in the cache: Ready, also while a periodic re-sync
        // runs (the snapshot pods read is whole meanwhile; a re-sync only adds or repairs).
        if same.is_some_and(|o| o.result.is_ok()) && self.held.contains_key(name) {
            return WeightsState::Verified;
        }
        if self.syncs.contains_key(name) {
            return WeightsState::Syncing;
        }
        match same {
            Some(Outcome { result: Err(f), .. }) => WeightsState::Failed(f.kind.into()),
            // Another spec, never synced, or synced but gone from the cache (deleted by hand,
            // a wiped disk).
            _ => WeightsState::Absent,
        }
    }

    /// Starts one periodic re-sync (listing plus fingerprints: only what changed or went
    /// missing downloads) of a Ready model last synced `resync_interval` ago, when no other
    /// sync runs.
    async fn resync_one<C: Credentials>(
        &mut self,
        plan: &Plan,
        models: &[ColdModel],
        creds: &C,
        now: Timestamp,
    ) {
        if !self.syncs.is_empty() {
            return;
        }
        let due = models.iter().find(|m| {
            let name = name_of(m);
            plan.selected.contains(name)
                && self.held.contains_key(name)
                && self.weight_outcomes.get(name).is_some_and(|o| {
                    o.key == weights_key(m)
                        && o.result.is_ok()
                        && o.at.elapsed() >= self.settings.resync_interval
                })
        });
        if let Some(m) = due.cloned() {
            info!(model = name_of(&m), "periodic re-sync");
            self.start_sync(&m, creds, now).await;
        }
    }

    /// Executes the plan's local actions. Parts in backoff after a failure are not started
    /// again before their time.
    pub async fn execute<C: Credentials>(
        &mut self,
        plan: &Plan,
        models: &[ColdModel],
        creds: &C,
        now: Timestamp,
    ) {
        for image in &plan.pull_images {
            if self.in_backoff(&self.image_outcomes, image) {
                continue;
            }
            let Some(model) = models
                .iter()
                .find(|m| m.spec.image.as_deref() == Some(image.as_str()))
            else {
                continue;
            };
            self.start_pull(model, image, creds, now).await;
        }
        for image in &plan.pin_images {
            self.pin(image, true).await;
        }
        for image in &plan.unpin_images {
            self.pin(image, false).await;
        }
        for (name, _, _) in &plan.sync_weights {
            if self.in_backoff(&self.weight_outcomes, name) {
                continue;
            }
            if let Some(model) = models.iter().find(|m| name_of(m) == name) {
                self.start_sync(model, creds, now).await;
            }
        }
        self.resync_one(plan, models, creds, now).await;
        self.track_unselected(&plan.unselected, now);
        for name in &plan.evict_weights {
            self.evict(name).await;
        }
    }

    fn in_backoff(&self, outcomes: &BTreeMap<String, Outcome>, key: &str) -> bool {
        let Some(o) = outcomes.get(key) else {
            return false;
        };
        if o.result.is_ok() {
            return false;
        }
        let exp = o.failures.saturating_sub(1).min(16);
        let wait = self
            .settings
            .retry_initial
            .saturating_mul(1 << exp)
            .min(self.settings.retry_max);
        o.at.elapsed() < wait
    }

    async fn start_pull<C: Credentials>(
        &mut self,
        model: &ColdModel,
        image: &str,
        creds: &C,
        now: Timestamp,
    ) {
        let reference = match ImageRef::parse(image) {
            Ok(r) => r,
            Err(e) => {
                let f = Failure {
                    kind: e.metric_label(),
                    message: e.to_string(),
                };
                record(&mut self.image_outcomes, image, image, Err(f), now);
                return;
            }
        };
        let auth = match creds.pull_auth(model, &reference).await {
            Ok(a) => a,
            Err(e) => {
                let f = Failure {
                    kind: "credentials",
                    message: e.0,
                };
                record(&mut self.image_outcomes, image, image, Err(f), now);
                return;
            }
        };
        info!(image, model = name_of(model), "pulling image");
        let progress = Arc::new(Mutex::new(Progress::default()));
        let images = self.images.clone();
        let opts = self.settings.prepull.clone();
        let wake = self.wake.clone();
        let p = progress.clone();
        let handle = tokio::spawn(async move {
            let on_event = |e: prepull::Event| {
                let mut p = lock(&p);
                match e {
                    prepull::Event::Resolved { digest, bytes } => {
                        p.total = Some(bytes);
                        p.resolved = Some(digest);
                    }
                    prepull::Event::Progress(pp) => {
                        p.done = pp.done;
                        if pp.total > 0 {
                            p.total = Some(pp.total.max(p.total.unwrap_or(0)));
                        }
                    }
                    _ => {}
                }
            };
            let r = prepull::prepull(&*images, &reference, auth.as_ref(), &opts, on_event).await;
            wake.notify_one();
            match r {
                Ok(report) => {
                    let bytes = report.compressed_bytes.unwrap_or(report.state.size);
                    if report.attempts > 0 {
                        // The last progress sample may predate the end of the pull.
                        let mut p = lock(&p);
                        p.done = p.done.max(bytes);
                    }
                    Ok(Done {
                        resolved: report.manifest_digest.or(Some(report.state.id)),
                        bytes,
                    })
                }
                Err(e) => Err(Failure {
                    kind: e.metric_label(),
                    message: e.to_string(),
                }),
            }
        });
        self.managed.add(image);
        if let Err(e) = self.managed.save() {
            warn!(error = %e, "cannot record the managed image list");
        }
        self.pulls.insert(
            image.to_string(),
            Running {
                key: image.to_string(),
                model: name_of(model).to_string(),
                started: now,
                progress,
                handle,
            },
        );
    }

    async fn start_sync<C: Credentials>(&mut self, model: &ColdModel, creds: &C, now: Timestamp) {
        let name = name_of(model).to_string();
        let key = weights_key(model);
        let prepared = self.prepare_sync(model, creds).await;
        let (repo, opts, syncer) = match prepared {
            Ok(p) => p,
            Err(f) => {
                record(&mut self.weight_outcomes, &name, &key, Err(f), now);
                return;
            }
        };
        info!(model = %name, repo = %repo, revision = %opts.revision, "syncing weights");
        let progress = Arc::new(Mutex::new(Progress::default()));
        let handles = syncer.progress();
        let p = progress.clone();
        let wake = self.wake.clone();
        let handle = tokio::spawn(async move {
            let sync = syncer.sync(&repo, &opts, std::time::SystemTime::now());
            tokio::pin!(sync);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let sample = || {
                let mut p = lock(&p);
                let total = handles.total.load(Ordering::Relaxed);
                p.total = Some(total);
                p.done = handles
                    .counters
                    .downloaded
                    .load(Ordering::Relaxed)
                    .min(total);
            };
            let r = loop {
                tokio::select! {
                    r = &mut sync => break r,
                    _ = tick.tick() => sample(),
                }
            };
            sample();
            wake.notify_one();
            match r {
                Ok(report) => Ok(Done {
                    resolved: Some(report.commit),
                    bytes: report.bytes,
                }),
                Err(e) => Err(Failure {
                    kind: e.metric_label(),
                    message: e.to_string(),
                }),
            }
        });
        self.unselected_since.remove(&name);
        self.syncs.insert(
            name.clone(),
            Running {
                key,
                model: name,
                started: now,
                progress,
                handle,
            },
        );
    }

    async fn prepare_sync<C: Credentials>(
        &self,
        model: &ColdModel,
        creds: &C,
    ) -> Result<(RepoId, SyncOptions, Syncer), Failure> {
        let bad = |e: weights::Error| Failure {
            kind: e.metric_label(),
            message: e.to_string(),
        };
        let spec = &model.spec;
        let repo = RepoId::parse(&spec.repo).map_err(bad)?;
        let filter = Filter::new(&spec.include, &spec.exclude).map_err(bad)?;
        let token = creds.hub_token(model).await.map_err(|e| Failure {
            kind: "credentials",
            message: e.0,
        })?;
        let mut hub = self.settings.hub.clone();
        if token.is_some() {
            hub.token = token;
        }
        let client = HubClient::new(hub).map_err(bad)?;
        let revision = spec.revision.clone().unwrap_or_else(|| "main".into());
        let mut opts = SyncOptions::new(filter);
        opts.revision = revision;
        opts.files_at_once = self.settings.files_at_once;
        opts.margin_bytes = self.settings.margin_bytes;
        opts.transfer = self.settings.transfer.clone();
        opts.budget_bytes = self.settings.budget_bytes;
        let syncer = Syncer::new(client, self.cache.clone(), opts.transfer.clone());
        Ok((repo, opts, syncer))
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
                if let Err(e) = self.managed.save() {
                    warn!(error = %e, "cannot record the managed image list");
                }
            }
            Err(e) => {
                self.metrics.image_error(&e);
                warn!(image, pinned, error = %e, "cannot set the pin label");
            }
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
        let cache = self.cache.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<u64, weights::Error> {
            let mut freed = 0;
            for usage in cache.inventory()? {
                if usage.repo == repo {
                    freed += cache.evict(&repo, &usage.commit)?;
                }
            }
            Ok(freed)
        })
        .await;
        match r {
            Ok(Ok(freed)) => {
                info!(model = name, freed, "evicted unselected weights");
                self.held.remove(name);
                self.unselected_since.remove(name);
                self.weight_outcomes.remove(name);
                self.metrics.forget_model(name);
            }
            Ok(Err(e)) => {
                self.metrics.weights_error(&e);
                warn!(model = name, error = %e, "eviction failed; retrying next pass");
            }
            Err(e) => warn!(model = name, error = %e, "eviction task failed"),
        }
    }

    /// Models the cache holds, by ColdModel name (re-read every pass: cheap, a directory walk).
    async fn refresh_held(&mut self) {
        let cache = self.cache.clone();
        match tokio::task::spawn_blocking(move || cache.inventory()).await {
            Ok(Ok(inv)) => {
                self.held = inv
                    .into_iter()
                    .map(|u| (model_name(&u.repo), u.repo))
                    .collect();
            }
            Ok(Err(e)) => warn!(error = %e, "cannot read the cache inventory"),
            Err(e) => warn!(error = %e, "cache inventory task failed"),
        }
    }

    async fn reap(&mut self) {
        for (tasks, outcomes, part) in [
            (&mut self.pulls, &mut self.image_outcomes, Part::Image),
            (&mut self.syncs, &mut self.weight_outcomes, Part::Weights),
        ] {
            let finished: Vec<String> = tasks
                .iter()
                .filter(|(_, t)| t.handle.is_finished())
                .map(|(k, _)| k.clone())
                .collect();
            for k in finished {
                let Some(t) = tasks.remove(&k) else { continue };
                {
                    let mut p = lock(&t.progress);
                    self.metrics
                        .add_bytes(&t.model, part, p.done.saturating_sub(p.counted));
                    p.counted = p.done;
                }
                let result = match t.handle.await {
                    Ok(r) => r,
                    Err(e) => Err(Failure {
                        kind: "panic",
                        message: format!("task failed: {e}"),
                    }),
                };
                let ok = result.is_ok();
                match &result {
                    Ok(d) => info!(name = %k, bytes = d.bytes, "part ready"),
                    Err(f) => warn!(name = %k, kind = f.kind, error = %f.message, "part failed"),
                }
                if let Err(f) = &result {
                    self.metrics.error(part.source(), f.kind);
                }
                let secs = (Timestamp::now().duration_since(t.started)).as_secs_f64();
                self.metrics.observe_part(part, ok, secs.max(0.0));
                let good = outcomes
                    .get_mut(&k)
                    .filter(|o| o.key == t.key && o.result.is_ok());
                match (part, result, good) {
                    // A failed periodic re-sync leaves the verified snapshot in place: the
                    // model stays Ready and the next re-sync comes an interval later.
                    (Part::Weights, Err(f), Some(o)) if self.held.contains_key(&k) => {
                        warn!(model = %k, error = %f.message, "re-sync failed; the snapshot stays");
                        o.at = Instant::now();
                    }
                    (_, result, _) => record(outcomes, &k, &t.key, result, t.started),
                }
            }
        }
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
                t.handle.abort();
                let _ = t.handle.await;
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
                t.handle.abort();
                let _ = t.handle.await;
            }
        }
    }

    /// Fills progress, resolved versions, rates, messages and timestamps into the planner's
    /// status, carrying transition times over from `current` where a phase did not change.
    pub fn decorate(
        &self,
        status: &mut ColdNodeStatus,
        current: Option<&ColdNodeStatus>,
        models: &[ColdModel],
        now: Timestamp,
    ) {
        for ms in &mut status.models {
            let old = current.and_then(|c| c.models.iter().find(|o| o.name == ms.name));
            let model = models.iter().find(|m| name_of(m) == ms.name);
            if let (Some(part), Some(image)) = (
                ms.image.as_mut(),
                model.and_then(|m| m.spec.image.as_deref()),
            ) {
                let old = old.and_then(|o| o.image.as_ref());
                self.fill(
                    part,
                    Part::Image,
                    self.pulls.get(image),
                    self.image_outcomes.get(image),
                    old,
                    now,
                );
                self.metrics
                    .set_part_phase(&ms.name, Part::Image, part.phase);
            }
            if let Some(part) = ms.weights.as_mut() {
                let old = old.and_then(|o| o.weights.as_ref());
                let (run, out) = (self.syncs.get(&ms.name), self.weight_outcomes.get(&ms.name));
                self.fill(part, Part::Weights, run, out, old, now);
                self.metrics
                    .set_part_phase(&ms.name, Part::Weights, part.phase);
            }
            self.metrics.set_model_phase(&ms.name, ms.phase);
        }
    }

    fn fill(
        &self,
        part: &mut PartStatus,
        kind: Part,
        running: Option<&Running>,
        outcome: Option<&Outcome>,
        old: Option<&PartStatus>,
        now: Timestamp,
    ) {
        let ready_outcome = outcome.filter(|o| o.result.is_ok() && part.phase == PartPhase::Ready);
        if let (Some(t), None) = (running, ready_outcome) {
            let mut p = lock(&t.progress);
            let at = Instant::now();
            if let Some((then, bytes)) = p.sample {
                let dt = at.duration_since(then).as_secs_f64();
                if dt >= 0.5 {
                    p.rate = Some((p.done.saturating_sub(bytes) as f64 / dt) as u64);
                    p.sample = Some((at, p.done));
                }
            } else {
                p.sample = Some((at, p.done));
            }
            let delta = p.done.saturating_sub(p.counted);
            self.metrics.add_bytes(&t.model, kind, delta);
            p.counted = p.done;
            if let Some(rate) = p.rate {
                self.metrics.set_rate(&t.model, kind, rate as f64);
            }
            part.bytes_done = p.done;
            part.bytes_total = p.total;
            part.bytes_per_second = p.rate;
            part.resolved = p.resolved.clone();
            part.started_at = Some(Time(t.started));
        } else if let Some(o) = outcome {
            part.started_at = Some(Time(o.started));
            match &o.result {
                Ok(d) => {
                    part.resolved = d.resolved.clone();
                    if part.phase == PartPhase::Ready {
                        part.bytes_done = d.bytes;
                        part.bytes_total = Some(d.bytes);
                    }
                }
                Err(f) => {
                    part.message = Some(f.message.clone());
                    if part.reason.is_none() {
                        part.reason = Some(f.kind.to_string());
                    }
                }
            }
        }
        part.last_transition_time = match old {
            Some(o) if o.phase == part.phase => o.last_transition_time.clone(),
            _ => Some(Time(now)),
        };
    }

    /// Stops every task (they leave only resumable partial files) and waits for them.
    pub async fn shutdown(&mut self) {
        for (_, t) in std::mem::take(&mut self.pulls)
            .into_iter()
            .chain(std::mem::take(&mut self.syncs))
        {
            t.handle.abort();
            let _ = t.handle.await;
        }
    }
}

impl Part {
    fn source(self) -> crate::metrics::Source {
        match self {
            Part::Image => crate::metrics::Source::Images,
            Part::Weights => crate::metrics::Source::Weights,
        }
    }
}

fn record(
    outcomes: &mut BTreeMap<String, Outcome>,
    name: &str,
    key: &str,
    result: Result<Done, Failure>,
    started: Timestamp,
) {
    let failures = match (&result, outcomes.get(name)) {
        (Ok(_), _) => 0,
        (Err(_), Some(o)) if o.key == key => o.failures + 1,
        (Err(_), _) => 1,
    };
    outcomes.insert(
        name.to_string(),
        Outcome {
            key: key.to_string(),
            result,
            at: Instant::now(),
            started,
            failures,
        },
    );
}

fn lock(p: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    // A panic while holding this lock only loses a progress sample.
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The models of `models` selected for a node with `labels`.
pub fn selected<'a>(
    models: &'a [ColdModel],
    labels: &BTreeMap<String, String>,
) -> Vec<&'a ColdModel> {
    models
        .iter()
        .filter(|m| m.metadata.name.is_some())
        .filter(|m| plan::matches(m.spec.node_selector.as_ref(), labels))
        .collect()
}
