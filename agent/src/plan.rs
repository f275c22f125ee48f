//! The pure planner: from what the node looks like (its labels, the ColdModels, what the local
//! ports report) and the time of the pass, what to do next. No async, no I/O, no clock: the
//! loop gathers the inputs, calls [`plan`] and executes the [`Plan`]. Every decision lives
//! here, retries and periodic re-syncs included ([`retry`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{ColdModel, ColdNodeStatus, Condition, SkippedModel, model_name_problem, name_of};

pub mod retry;
mod status;
#[cfg(test)]
mod tests;

pub use crate::api::matches;
pub use retry::{Backoff, Failed, Mono};
pub use status::{REASON_DEADLINE, REASON_FAILED, REASON_WARM, REASON_WARMING};

/// An image in containerd, as the images port and the warmer's records report it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalImage {
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
    /// The last pull failed (or containerd could not say: then with no failures counted).
    Failed(Failed),
}

/// A model's weights in the cache, as the weights port and the warmer's records report them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalWeights {
    /// No snapshot of the model's current spec.
    #[default]
    Absent,
    /// A sync is in flight.
    Syncing,
    /// A snapshot the agent did not verify in this run (found in the cache at start-up).
    Present,
    /// Synced and verified for the model's current spec, and still in the cache.
    Verified {
        /// When the last sync of it ended, successful or not (a failed periodic re-sync
        /// leaves the verified snapshot in place).
        last_attempt: Mono,
    },
    /// The last sync of the current spec failed and nothing verified is held.
    Failed(Failed),
}

/// What the local ports report.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Images the agent manages, by reference.
    pub images: BTreeMap<String, LocalImage>,
    /// Weights held or in flight, by ColdModel name.
    pub weights: BTreeMap<String, LocalWeights>,
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
    /// Whether the GPUs are healthy (always true where no GPU monitor runs).
    pub gpu_healthy: bool,
    /// While the startup taint is on: when warming must be done; `None` once it is off.
    pub warming_deadline: Option<Timestamp>,
    /// Wall time of the pass: for status and the warming deadline.
    pub now: Timestamp,
    /// Monotonic time of the pass: for retries and re-syncs.
    pub clock: Mono,
}

/// Limits on concurrent work, retries and removal.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Image pulls at once (images are large: one keeps the disk and the link for one).
    pub image_pulls: usize,
    /// Weight syncs at once.
    pub weight_syncs: usize,
    /// How long unselected weights stay before eviction (a model may come back).
    pub eviction_grace: Duration,
    /// Wait before trying a failed pull or sync again.
    pub backoff: Backoff,
    /// A Ready model is synced again (listing plus fingerprints; downloads only what changed
    /// or went missing) this long after its last sync ended, one model at a time.
    pub resync_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            image_pulls: 1,
            weight_syncs: 2,
            eviction_grace: Duration::from_secs(3600),
            backoff: Backoff::DEFAULT,
            resync_interval: Duration::from_secs(6 * 3600),
        }
    }
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
    /// Weight syncs to start, by ColdModel name.
    pub sync_weights: Vec<String>,
    /// A periodic re-sync of a Ready model to start (at most one, when no sync runs).
    pub resync_weights: Option<String>,
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

/// The ColdModels of `models` selected for a node with `labels` (named ones, and only names
/// that make a node label: see [`skipped`]).
pub fn selected<'a>(
    models: &'a [ColdModel],
    labels: &BTreeMap<String, String>,
) -> Vec<&'a ColdModel> {
    models
        .iter()
        .filter(|m| m.metadata.name.is_some())
        .filter(|m| model_name_problem(name_of(m)).is_none())
        .filter(|m| matches(m.spec.node_selector.as_ref(), labels))
        .collect()
}

/// The ColdModels that select a node with `labels` but cannot be served there, and why: a
/// name that cannot make the node label (the CRD refuses such names now; older objects may
/// still carry one). Skipping them keeps the node's other labels and its taint working.
pub fn skipped(models: &[ColdModel], labels: &BTreeMap<String, String>) -> Vec<SkippedModel> {
    models
        .iter()
        .filter(|m| m.metadata.name.is_some())
        .filter(|m| matches(m.spec.node_selector.as_ref(), labels))
        .filter_map(|m| {
            let reason = model_name_problem(name_of(m))?;
            Some(SkippedModel {
                name: name_of(m).to_string(),
                reason,
            })
        })
        .collect()
}

/// Plans one pass.
pub fn plan(inp: &Inputs<'_>, limits: &Limits) -> Plan {
    let selected = selected(inp.models, inp.node_labels);
    let names: BTreeSet<String> = selected.iter().map(|m| name_of(m).to_string()).collect();
    let wanted_images: BTreeSet<&str> = selected
        .iter()
        .filter_map(|m| m.spec.image.as_deref())
        .collect();
    let statuses = status::models(&selected, inp);
    let ready_labels = status::ready(&statuses);
    let mut plan = Plan {
        selected: names.clone(),
        pull_images: Vec::new(),
        pin_images: Vec::new(),
        unpin_images: Vec::new(),
        sync_weights: Vec::new(),
        resync_weights: None,
        unselected: Vec::new(),
        evict_weights: Vec::new(),
        remove_warming_taint: inp.gpu_healthy && ready_labels.len() == statuses.len(),
        models_warm: status::warm_condition(&statuses, ready_labels.len(), inp),
        ready_labels,
        status: ColdNodeStatus {
            phase: status::overall(&statuses),
            models: statuses,
            skipped: skipped(inp.models, inp.node_labels),
            // The caches keeper reports the scopes after the pass (they are not planned here).
            compile_caches: Vec::new(),
            // So are snapshots (the snapshots port reports them).
            snapshots: Vec::new(),
            snapshot_captures: Vec::new(),
            gpu: inp.current.and_then(|c| c.gpu.clone()),
            updated_at: None,
        },
    };
    plan_images(inp, limits, &wanted_images, &mut plan);
    plan_weights(inp, limits, &selected, &names, &mut plan);
    plan
}

fn plan_images(inp: &Inputs<'_>, limits: &Limits, wanted: &BTreeSet<&str>, plan: &mut Plan) {
    let state = |r: &str| inp.local.images.get(r).cloned().unwrap_or_default();
    let pulling = inp
        .local
        .images
        .values()
        .filter(|s| **s == LocalImage::Pulling)
        .count();
    let mut free = limits.image_pulls.saturating_sub(pulling);
    for image in wanted {
        let start = match state(image) {
            LocalImage::Absent => true,
            LocalImage::Failed(f) => retry::retry_due(&limits.backoff, &f, inp.clock),
            LocalImage::Present { pinned: false } => {
                plan.pin_images.push(image.to_string());
                false
            }
            LocalImage::Pulling | LocalImage::Present { pinned: true } => false,
        };
        if start && free > 0 {
            free -= 1;
            plan.pull_images.push(image.to_string());
        }
    }
    for (image, s) in &inp.local.images {
        if *s == (LocalImage::Present { pinned: true }) && !wanted.contains(image.as_str()) {
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
        .filter(|s| **s == LocalWeights::Syncing)
        .count();
    let mut free = limits.weight_syncs.saturating_sub(syncing);
    let mut resync = None;
    for m in selected {
        let start = match weights.get(name_of(m)).cloned().unwrap_or_default() {
            LocalWeights::Absent | LocalWeights::Present => true,
            LocalWeights::Failed(f) => retry::retry_due(&limits.backoff, &f, inp.clock),
            LocalWeights::Verified { last_attempt } => {
                if resync.is_none()
                    && retry::resync_due(limits.resync_interval, last_attempt, inp.clock)
                {
                    resync = Some(name_of(m).to_string());
                }
                false
            }
            LocalWeights::Syncing => false,
        };
        if start && free > 0 {
            free -= 1;
            plan.sync_weights.push(name_of(m).to_string());
        }
    }
    // Re-syncs only refresh what is already warm: one at a time, and never beside other syncs.
    if syncing == 0 && plan.sync_weights.is_empty() {
        plan.resync_weights = resync;
    }
    let grace = SignedDuration::try_from(limits.eviction_grace).unwrap_or(SignedDuration::MAX);
    for (model, state) in weights {
        if names.contains(model) || *state == LocalWeights::Syncing {
            continue;
        }
        plan.unselected.push(model.clone());
        let since = inp.local.unselected_since.get(model);
        if since.is_some_and(|t| inp.now.duration_since(*t) >= grace) {
            plan.evict_weights.push(model.clone());
        }
    }
}
