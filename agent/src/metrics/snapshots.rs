//! The snapshot series of [`Metrics`]: captures by result, snapshots offered for restore
//! (the node label is set), bytes held, evictions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use super::{Families, Metrics};
use crate::api::SnapshotStatus;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ModelLabels {
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    model: String,
    /// `captured` or an error's metric label.
    result: String,
}

/// The snapshot families.
#[derive(Debug)]
pub(super) struct SnapshotFamilies {
    captures: Family<ResultLabels, Counter>,
    offered: Family<ModelLabels, Gauge>,
    bytes: Family<ModelLabels, Gauge>,
    evictions: Family<ModelLabels, Counter>,
}

impl SnapshotFamilies {
    pub(super) fn register(families: &mut Families) -> SnapshotFamilies {
        let captures = Family::<ResultLabels, Counter>::default();
        families.add(
            "snapshot_captures",
            "Process snapshots the policy took (result captured) or failed to take (result \
             names the error), by model",
            None,
            captures.clone(),
        );
        let offered = Family::<ModelLabels, Gauge>::default();
        families.add(
            "snapshot_restores_offered",
            "1 while this node offers restores of the model (it carries the \
             coldstart.dev/snapshot.<model> label), else 0",
            None,
            offered.clone(),
        );
        let bytes = Family::<ModelLabels, Gauge>::default();
        families.add(
            "snapshot",
            "Bytes of the model's process snapshots on this node",
            Some(Unit::Bytes),
            bytes.clone(),
        );
        let evictions = Family::<ModelLabels, Counter>::default();
        families.add(
            "snapshot_evictions",
            "Snapshots removed by the policy (keep, size, a new key, the policy off), by model",
            None,
            evictions.clone(),
        );
        SnapshotFamilies {
            captures,
            offered,
            bytes,
            evictions,
        }
    }
}

impl Metrics {
    /// Records the snapshots held now and the models offered for restore.
    pub fn snapshots(&self, held: &[SnapshotStatus], offered: &[&str], policies: &[&str]) {
        let s = &self.snapshots;
        s.bytes.clear();
        s.offered.clear();
        for model in policies {
            let labels = ModelLabels {
                model: model.to_string(),
            };
            s.offered
                .get_or_create(&labels)
                .set(i64::from(offered.contains(model)));
            s.bytes.get_or_create(&labels).set(0);
        }
        for h in held.iter().filter(|h| !h.model.is_empty()) {
            let labels = ModelLabels {
                model: h.model.clone(),
            };
            s.bytes
                .get_or_create(&labels)
                .inc_by(i64::try_from(h.bytes).unwrap_or(i64::MAX));
        }
    }

    /// Records a capture's outcome: `captured` or an error's metric label.
    pub fn snapshot_capture(&self, model: &str, result: &str) {
        self.snapshots
            .captures
            .get_or_create(&ResultLabels {
                model: model.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Records an eviction.
    pub fn snapshot_evicted(&self, model: &str) {
        self.snapshots
            .evictions
            .get_or_create(&ModelLabels {
                model: model.to_string(),
            })
            .inc();
    }
}
