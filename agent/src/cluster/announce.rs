//! What the cluster pass announces: an Event when a model's phase changes, when a ColdModel is
//! skipped, when the warming deadline passes; and the NodeClaim deletion of
//! `--deadline-action replace`.

use std::collections::{BTreeMap, BTreeSet};

use kube::runtime::events::EventType;
use tracing::{debug, warn};

use super::Cluster;
use crate::api::Phase;
use crate::images::Images;
use crate::node::DeadlineAction;
use crate::plan::{self, Plan};
use crate::weights::Weights;

impl<I: Images + Send + Sync + 'static, W: Weights> Cluster<I, W> {
    /// Events and logs for what changed since the last pass: model phases, skipped
    /// ColdModels, the warming deadline (and `--deadline-action replace`).
    pub(super) async fn announce(&mut self, plan: &Plan) {
        let mut phases = BTreeMap::new();
        for m in &plan.status.models {
            phases.insert(m.name.clone(), m.phase);
            if self.phases.get(&m.name) == Some(&m.phase) {
                continue;
            }
            let reasons: Vec<String> = [&m.image, &m.weights]
                .into_iter()
                .flatten()
                .filter_map(|p| p.message.clone().or_else(|| p.reason.clone()))
                .collect();
            match m.phase {
                Phase::Ready => {
                    let msg = format!("model {} is warm on this node", m.name);
                    self.event(EventType::Normal, "ModelReady", "Warm", msg)
                        .await;
                }
                Phase::Failed => {
                    let msg = format!("model {}: {}", m.name, reasons.join("; "));
                    self.event(EventType::Warning, "ModelFailed", "Warm", msg)
                        .await;
                }
                Phase::Warming => {
                    let msg = format!("warming model {}", m.name);
                    self.event(EventType::Normal, "ModelWarming", "Warm", msg)
                        .await;
                }
                Phase::Pending => {}
            }
        }
        self.phases = phases;
        let skipped: BTreeSet<String> =
            plan.status.skipped.iter().map(|s| s.name.clone()).collect();
        for s in &plan.status.skipped {
            if !self.skipped.contains(&s.name) {
                warn!(model = %s.name, reason = %s.reason, "skipping a ColdModel");
                let msg = format!("model {} skipped: {}", s.name, s.reason);
                self.event(EventType::Warning, "ModelSkipped", "Warm", msg)
                    .await;
            }
        }
        self.skipped = skipped;
        let late = plan.models_warm.reason == plan::REASON_DEADLINE;
        self.warmer.metrics().set_warming_deadline_exceeded(late);
        if late && !self.deadline_reported {
            let msg = plan.models_warm.message.clone();
            self.event(EventType::Warning, plan::REASON_DEADLINE, "Warm", msg)
                .await;
        }
        self.deadline_reported = late;
        if late && self.settings.deadline_action == DeadlineAction::Replace && !self.replaced {
            self.replace_node().await;
        }
    }

    /// Deletes this node's NodeClaim so that Karpenter replaces the node; once. No NodeClaim
    /// naming the node (not a Karpenter node, or not registered yet) is tried again next pass.
    async fn replace_node(&mut self) {
        match self.surface.delete_own_nodeclaim().await {
            Ok(Some(claim)) => {
                self.replaced = true;
                let msg = format!(
                    "past the warming deadline: deleted NodeClaim {claim} so that Karpenter \
                     replaces this node"
                );
                warn!(%claim, "deleted this node's NodeClaim (--deadline-action replace)");
                self.event(EventType::Warning, "ReplacingNode", "Replace", msg)
                    .await;
            }
            Ok(None) => debug!("no NodeClaim names this node; nothing to replace yet"),
            Err(e) => {
                let error = crate::errors::chain(&e);
                warn!(%error, "cannot delete this node's NodeClaim; retrying next pass");
            }
        }
    }
}
