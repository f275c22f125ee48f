//! The status the planner reports: a phase per part and model, the node's overall phase, and
//! the `ColdstartModelsWarm` condition.

use std::collections::BTreeSet;

use super::{Inputs, LocalImage, LocalWeights};
use crate::api::{
    CONDITION_MODELS_WARM, ColdModel, Condition, ModelStatus, PartPhase, PartStatus, Phase, name_of,
};

/// Reason of `ColdstartModelsWarm=True`.
pub const REASON_WARM: &str = "ModelsWarm";
/// Reason of `ColdstartModelsWarm=False` while work is in progress.
pub const REASON_WARMING: &str = "Warming";
/// Reason of `ColdstartModelsWarm=False` when a model failed (before the deadline).
pub const REASON_FAILED: &str = "ModelFailed";
/// Reason of `ColdstartModelsWarm=False` past the warming deadline.
pub const REASON_DEADLINE: &str = "WarmingDeadlineExceeded";

/// One status per selected model.
pub(super) fn models(selected: &[&ColdModel], inp: &Inputs<'_>) -> Vec<ModelStatus> {
    selected.iter().map(|m| model_status(m, inp)).collect()
}

/// Names of the Ready models.
pub(super) fn ready(statuses: &[ModelStatus]) -> BTreeSet<String> {
    statuses
        .iter()
        .filter(|s| s.phase == Phase::Ready)
        .map(|s| s.name.clone())
        .collect()
}

fn image_part(m: &ColdModel, inp: &Inputs<'_>) -> Option<PartStatus> {
    let image = m.spec.image.as_deref()?;
    let (phase, reason) = match inp.local.images.get(image).cloned().unwrap_or_default() {
        LocalImage::Absent => (PartPhase::Pending, None),
        LocalImage::Pulling => (PartPhase::Pulling, None),
        LocalImage::Present { .. } => (PartPhase::Ready, None),
        LocalImage::Failed(f) => (PartPhase::Failed, Some(f.reason)),
    };
    Some(part(phase, reason))
}

fn weights_part(m: &ColdModel, inp: &Inputs<'_>) -> PartStatus {
    let (phase, reason) = match inp
        .local
        .weights
        .get(name_of(m))
        .cloned()
        .unwrap_or_default()
    {
        LocalWeights::Absent => (PartPhase::Pending, None),
        LocalWeights::Syncing => (PartPhase::Syncing, None),
        LocalWeights::Present => (PartPhase::Verifying, None),
        LocalWeights::Verified { .. } => (PartPhase::Ready, None),
        LocalWeights::Failed(f) => (PartPhase::Failed, Some(f.reason)),
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
        name: name_of(m).to_string(),
        phase,
        observed_generation: m.metadata.generation,
        image,
        weights: Some(weights),
    }
}

/// The node's phase from its models' phases.
pub(super) fn overall(models: &[ModelStatus]) -> Phase {
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

/// `ColdstartModelsWarm`: how many are warm, who is waited for, and why not yet.
pub(super) fn warm_condition(models: &[ModelStatus], ready: usize, inp: &Inputs<'_>) -> Condition {
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
        type_: CONDITION_MODELS_WARM,
        status,
        reason,
        message,
    }
}
