//! Which held snapshots stay (the policy's `keep` and `maxSize`; none of a model whose policy
//! is off), and which can restore here now: the node label per model and its Events.

use std::collections::BTreeMap;

use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::{SnapshotView, Snapshots};
use crate::api::{SnapshotPolicy, snapshot_label_key};
use crate::metrics::Metrics;
use crate::snapshots::Managed;
use crate::snapshots::Snapshot;
use crate::snapshots::policy::{self, HereFacts, ModelNow};

impl Snapshots {
    /// Evicts what the policies do not keep (none while a capture runs); returns what stays.
    pub(super) async fn retain(
        &mut self,
        m: &Managed,
        held: Vec<Snapshot>,
        policies: &BTreeMap<String, SnapshotPolicy>,
        now_unix: u64,
        metrics: &Metrics,
        view: &mut SnapshotView,
    ) -> Vec<Snapshot> {
        if self.task.is_some() {
            return held;
        }
        let mut evict: Vec<(String, String)> = Vec::new();
        let mut by_model: BTreeMap<&str, Vec<(String, u64, u64)>> = BTreeMap::new();
        for s in &held {
            let model = s.record.meta.model.as_str();
            if model.is_empty() {
                continue; // taken by hand: `coldctl snapshot delete` removes it
            }
            match policies.get(model) {
                None => evict.push((s.record.name.clone(), "its model's policy is off".into())),
                Some(_) => by_model.entry(model).or_default().push((
                    s.record.name.clone(),
                    s.record.meta.created_unix,
                    s.bytes(),
                )),
            }
        }
        for (model, list) in by_model {
            let policy = &policies[model];
            let max = policy
                .max_size
                .as_deref()
                .and_then(|t| crate::weights::budget::parse_size(t).ok());
            for name in policy::evictions(&list, policy.keep(), max) {
                let why = format!("keep {} / maxSize {:?}", policy.keep(), policy.max_size);
                evict.push((name, why));
            }
        }
        let mut kept = Vec::new();
        for s in held {
            let Some((_, why)) = evict.iter().find(|(n, _)| *n == s.record.name) else {
                kept.push(s);
                continue;
            };
            match m.evict(&s, now_unix).await {
                Ok(()) => {
                    metrics.snapshot_evicted(&s.record.meta.model);
                    let msg = format!("snapshot {} evicted: {why}", s.record.name);
                    info!(snapshot = %s.record.name, %why, "snapshot evicted");
                    view.events
                        .push((EventType::Normal, "SnapshotEvicted", msg));
                }
                Err(e) => {
                    warn!(snapshot = %s.record.name, error = %e, "evicting a snapshot");
                    kept.push(s);
                }
            }
        }
        kept
    }

    /// Restorable or not, per snapshot; the label per model (its newest restorable snapshot);
    /// an Event when a model's label comes or goes.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn offer(
        &mut self,
        m: &Managed,
        held: &[Snapshot],
        support: &Result<(), String>,
        here: &HereFacts,
        nows: &BTreeMap<String, ModelNow>,
        policies: &BTreeMap<String, SnapshotPolicy>,
        view: &mut SnapshotView,
    ) {
        let mut newest: BTreeMap<String, (u64, String)> = BTreeMap::new();
        let mut reasons: BTreeMap<String, String> = BTreeMap::new();
        for s in held {
            let r = &s.record;
            let present = m.image_present(s).await.unwrap_or(false);
            let mut verdict =
                policy::restorable(r, support, here, nows.get(&r.meta.model), present);
            if verdict.is_ok() && !policies.contains_key(&r.meta.model) {
                verdict = Err(format!("model {}: snapshot policy off", r.meta.model));
            }
            if verdict.is_ok() && snapshot_label_key(&r.meta.model).is_none() {
                verdict = Err("the model's name is too long for the snapshot label".into());
            }
            match &verdict {
                Ok(()) => {
                    let e = newest.entry(r.meta.model.clone()).or_default();
                    if r.meta.created_unix >= e.0 {
                        *e = (r.meta.created_unix, r.key.hash());
                    }
                }
                Err(why) => {
                    reasons.insert(r.meta.model.clone(), why.clone());
                }
            }
            view.statuses.push(s.status(verdict));
        }
        view.labels = newest.into_iter().map(|(k, (_, h))| (k, h)).collect();
        for (model, hash) in &view.labels {
            if self.offered.get(model) != Some(hash) {
                let msg = format!("restores of model {model} offered here (key {hash})");
                view.events
                    .push((EventType::Normal, "SnapshotOffered", msg));
            }
        }
        for (model, hash) in &self.offered {
            if !view.labels.contains_key(model) {
                let why = reasons
                    .get(model)
                    .cloned()
                    .unwrap_or_else(|| "its snapshot is gone".into());
                let msg =
                    format!("restores of model {model} (key {hash}) no longer offered here: {why}");
                self.withdrawn_reason.insert(model.clone(), why);
                view.events
                    .push((EventType::Warning, "SnapshotWithdrawn", msg));
            }
        }
        self.offered = view.labels.clone();
    }
}
