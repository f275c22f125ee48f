//! The pure planner: from what the node looks like (its labels, the ColdModels, what the local
//! ports report) and `now`, what to do next. No async, no I/O, no clock: the loop gathers the
//! inputs, calls [`plan`] and executes the [`Plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{ColdModel, ColdNodeStatus, ModelStatus, PartPhase, PartStatus, Phase};

mod selector;
#[cfg(test)]
mod tests;

pub use selector::matches;

/// Reason of `ColdstartModelsWarm=True`.
pub const REASON_WARM: &str = "ModelsWarm";
/// Reason of `ColdstartModelsWarm=False` while work is in progress.
pub const REASON_WARMING: &str = "Warming";
/// Reason of `ColdstartModelsWarm=False` when a model failed (before the deadline).
pub const REASON_FAILED: &str = "ModelFailed";
/// Reason of `ColdstartModelsWarm=False` past the warming deadline.
pub const REASON_DEADLINE: &str = "WarmingDeadlineExceeded";

/// State of an image in containerd, as the images port reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ImageState {
    /// Not there.
    #[default]
    Absent,
    /// A pull is in flight.
    Pulling,
    /// Present; `pinned` when protected from kubelet GC.
    Present {
        /// Carries the pinned label.
        pinned: bool,
    },
    /// The last pull failed for this reason (a metric label); the loop backs off.
    Failed(String),
}

/// State of a model's weights in the cache, as the weights port reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WeightsState {
    /// No snapshot.
    #[default]
    Absent,
    /// A sync is in flight.
    Syncing,
    /// A snapshot exists but is not verified against its digests.
    Present,
    /// A snapshot exists and is verified.
    Verified,
    /// The last sync failed for this reason (a metric label); the loop backs off.
    Failed(String),
}

/// What the local ports report.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Images the agent manages, by reference.
    pub images: BTreeMap<String, ImageState>,
    /// Weights held or in flight, by ColdModel name.
    pub weights: BTreeMap<String, WeightsState>,
    /// Since when each model whose weights are held has been unselected (kept by the loop from
    /// [`Plan::unselected`]: the first time a name appears there, until it leaves it).
    pub unselected_since: BTreeMap<String, Timestamp>,
}

/// Inputs of one planning pass.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// This node's labels.
    pub node_labels: &'a BTreeMap<String, String>,
    /// Every ColdModel.
    pub models: &'a [ColdModel],
    /// What the ColdNode says now; its GPU part is carried into the new status.
    pub current: Option<&'a ColdNodeStatus>,
    /// What the local ports report.
    pub local: &'a Local,
    /// GPU health; `true` until the GPU module provides it.
    pub gpu_healthy: bool,
    /// While the startup taint is on: when warming must be done; `None` once it is off.
    pub warming_deadline: Option<Timestamp>,
    /// The time of the pass.
    pub now: Timestamp,
}

/// Limits on concurrent work and on removal.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Image pulls at once (images are large: one keeps the disk and the link for one).
    pub image_pulls: usize,
    /// Weight syncs at once.
    pub weight_syncs: usize,
    /// How long unselected weights stay before eviction (a model may come back).
    pub eviction_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            image_pulls: 1,
            weight_syncs: 2,
            eviction_grace: Duration::from_secs(3600),
        }
    }
}

/// A node condition we own, without timestamps (the node surface keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `ColdstartModelsWarm` or `ColdstartGPUHealthy`.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Names of the ColdModels selected for this node.
    pub selected: BTreeSet<String>,
    /// Image pulls to start, by reference.
    pub pull_images: Vec<String>,
    /// Present images to pin.
    pub pin_images: Vec<String>,
    /// Pinned images no selected model wants any more.
    pub unpin_images: Vec<String>,
    /// Weight syncs to start, by model name: (name, Hub repo, revision).
    pub sync_weights: Vec<(String, String, Option<String>)>,
    /// Models whose weights are held but which are not selected.
    pub unselected: Vec<String>,
    /// Weights to evict (unselected for longer than the grace period).
    pub evict_weights: Vec<String>,
    /// Names of the Ready models: the node gets `coldstart.dev/model.<name>=ready` for each and
    /// loses every other label under our prefix.
    pub ready_labels: BTreeSet<String>,
    /// Remove the startup taint: every selected model is Ready and the GPU is healthy.
    pub remove_warming_taint: bool,
    /// `ColdstartModelsWarm`.
    pub models_warm: Condition,
    /// The ColdNode status to report.
    pub status: ColdNodeStatus,
}

/// Plans one pass.
pub fn plan(inp: &Inputs<'_>, limits: &Limits) -> Plan {
    let selected: Vec<&ColdModel> = inp
        .models
        .iter()
        .filter(|m| matches(m.spec.node_selector.as_ref(), inp.node_labels))
        .filter(|m| m.metadata.name.is_some())
        .collect();
    let names: BTreeSet<String> = selected.iter().map(|m| name(m).to_string()).collect();
    let wanted_images: BTreeSet<&str> = selected
        .iter()
        .filter_map(|m| m.spec.image.as_deref())
        .collect();
    let statuses: Vec<ModelStatus> = selected.iter().map(|m| model_status(m, inp)).collect();
    let ready_labels: BTreeSet<String> = statuses
        .iter()
        .filter(|s| s.phase == Phase::Ready)
        .map(|s| s.name.clone())
        .collect();
    let mut plan = Plan {
        selected: names.clone(),
        pull_images: Vec::new(),
        pin_images: Vec::new(),
        unpin_images: Vec::new(),
        sync_weights: Vec::new(),
        unselected: Vec::new(),
        evict_weights: Vec::new(),
        remove_warming_taint: inp.gpu_healthy && ready_labels.len() == statuses.len(),
        models_warm: warm_condition(&statuses, ready_labels.len(), inp),
        ready_labels,
        status: ColdNodeStatus {
            phase: overall(&statuses),
            models: statuses,
            gpu: inp.current.and_then(|c| c.gpu.clone()),
            updated_at: None,
        },
    };
    plan_images(inp, limits, &wanted_images, &mut plan);
    plan_weights(inp, limits, &selected, &names, &mut plan);
    plan
}

fn name(m: &ColdModel) -> &str {
    m.metadata.name.as_deref().unwrap_or_default()
}

fn plan_images(inp: &Inputs<'_>, limits: &Limits, wanted: &BTreeSet<&str>, plan: &mut Plan) {
    let state = |r: &str| inp.local.images.get(r).cloned().unwrap_or_default();
    let pulling = inp
        .local
        .images
        .values()
        .filter(|s| **s == ImageState::Pulling)
        .count();
    let mut free = limits.image_pulls.saturating_sub(pulling);
    for image in wanted {
        match state(image) {
            ImageState::Absent | ImageState::Failed(_) if free > 0 => {
                free -= 1;
                plan.pull_images.push(image.to_string());
            }
            ImageState::Present { pinned: false } => plan.pin_images.push(image.to_string()),
            _ => {}
        }
    }
    for (image, s) in &inp.local.images {
        if *s == (ImageState::Present { pinned: true }) && !wanted.contains(image.as_str()) {
            plan.unpin_images.push(image.clone());
        }
    }
}

fn plan_weights(
    inp: &Inputs<'_>,
    limits: &Limits,
    selected: &[&ColdModel],
    names: &BTreeSet<String>,
    plan: &mut Plan,
) {
    let weights = &inp.local.weights;
    let syncing = weights
        .values()
        .filter(|s| **s == WeightsState::Syncing)
        .count();
    let mut free = limits.weight_syncs.saturating_sub(syncing);
    for m in selected {
        let state = weights.get(name(m)).cloned().unwrap_or_default();
        let start = matches!(
            state,
            WeightsState::Absent | WeightsState::Present | WeightsState::Failed(_)
        );
        if start && free > 0 {
            free -= 1;
            let spec = &m.spec;
            let job = (
                name(m).to_string(),
                spec.repo.clone(),
                spec.revision.clone(),
            );
            plan.sync_weights.push(job);
        }
    }
    let grace = SignedDuration::try_from(limits.eviction_grace).unwrap_or(SignedDuration::MAX);
    for (model, state) in weights {
        if names.contains(model) || *state == WeightsState::Syncing {
            continue;
        }
        plan.unselected.push(model.clone());
        let since = inp.local.unselected_since.get(model);
        if since.is_some_and(|t| inp.now.duration_since(*t) >= grace) {
            plan.evict_weights.push(model.clone());
        }
    }
}

fn image_part(m: &ColdModel, inp: &Inputs<'_>) -> Option<PartStatus> {
    let image = m.spec.image.as_deref()?;
    let (phase, reason) = match inp.local.images.get(image).cloned().unwrap_or_default() {
        ImageState::Absent => (PartPhase::Pending, None),
        ImageState::Pulling => (PartPhase::Pulling, None),
        ImageState::Present { .. } => (PartPhase::Ready, None),
        ImageState::Failed(r) => (PartPhase::Failed, Some(r)),
    };
    Some(part(phase, reason))
}

fn weights_part(m: &ColdModel, inp: &Inputs<'_>) -> PartStatus {
    let (phase, reason) = match inp.local.weights.get(name(m)).cloned().unwrap_or_default() {
        WeightsState::Absent => (PartPhase::Pending, None),
        WeightsState::Syncing => (PartPhase::Syncing, None),
        WeightsState::Present => (PartPhase::Verifying, None),
        WeightsState::Verified => (PartPhase::Ready, None),
        WeightsState::Failed(r) => (PartPhase::Failed, Some(r)),
    };
    part(phase, reason)
}

fn part(phase: PartPhase, reason: Option<String>) -> PartStatus {
    PartStatus {
        phase,
        reason,
        ..PartStatus::default()
    }
}

fn model_status(m: &ColdModel, inp: &Inputs<'_>) -> ModelStatus {
    let image = image_part(m, inp);
    let weights = weights_part(m, inp);
    let parts: Vec<PartPhase> = image.iter().chain([&weights]).map(|p| p.phase).collect();
    let phase = if parts.contains(&PartPhase::Failed) {
        Phase::Failed
    } else if parts.iter().all(|p| *p == PartPhase::Ready) {
        Phase::Ready
    } else if parts.iter().all(|p| *p == PartPhase::Pending) {
        Phase::Pending
    } else {
        Phase::Warming
    };
    ModelStatus {
        name: name(m).to_string(),
        phase,
        observed_generation: m.metadata.generation,
        image,
        weights: Some(weights),
    }
}

fn overall(models: &[ModelStatus]) -> Phase {
    let phases: Vec<Phase> = models.iter().map(|m| m.phase).collect();
    if phases.contains(&Phase::Failed) {
        Phase::Failed
    } else if phases.iter().all(|p| *p == Phase::Ready) {
        Phase::Ready
    } else if phases.iter().all(|p| *p == Phase::Pending) {
        Phase::Pending
    } else {
        Phase::Warming
    }
}

fn warm_condition(models: &[ModelStatus], ready: usize, inp: &Inputs<'_>) -> Condition {
    let total = models.len();
    let waiting: Vec<&str> = models
        .iter()
        .filter(|m| m.phase != Phase::Ready)
        .map(|m| m.name.as_str())
        .collect();
    let mut message = format!("{ready} of {total} models warm");
    if !waiting.is_empty() {
        message.push_str(&format!("; waiting for {}", waiting.join(", ")));
    }
    let failed = models.iter().any(|m| m.phase == Phase::Failed);
    let late = inp.warming_deadline.is_some_and(|d| inp.now >= d);
    let (status, reason) = match () {
        () if waiting.is_empty() => (true, REASON_WARM),
        () if late => (false, REASON_DEADLINE),
        () if failed => (false, REASON_FAILED),
        () => (false, REASON_WARMING),
    };
    Condition {
        type_: crate::api::CONDITION_MODELS_WARM,
        status,
        reason,
        message,
    }
}
