//! The compile-cache series of [`Metrics`]: bytes and the inert verdict per model, seals per
//! model, bytes evicted under `--compile-cache-budget`.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use super::{Families, Metrics};
use crate::api::CompileCacheStatus;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ModelLabels {
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TransferLabels {
    model: String,
    /// `import` or `export`.
    direction: String,
    /// `imported`, `refused`, `untrusted`, `skipped`, `failed`; `pushed`, `present`, `failed`.
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DirectionLabels {
    model: String,
    direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UseLabels {
    model: String,
    /// `hit`: the pods added nothing to the imported files; `miss`: they compiled more.
    result: String,
}

/// The compile-cache families.
#[derive(Debug)]
pub(super) struct CompileFamilies {
    bytes: Family<ModelLabels, Gauge>,
    inert: Family<ModelLabels, Gauge>,
    seals: Family<ModelLabels, Counter>,
    evicted: Counter,
    transfers: Family<TransferLabels, Counter>,
    transferred: Family<DirectionLabels, Counter>,
    import_uses: Family<UseLabels, Counter>,
}

impl CompileFamilies {
    pub(super) fn register(families: &mut Families) -> CompileFamilies {
        let bytes = Family::<ModelLabels, Gauge>::default();
        families.add(
            "compile_cache",
            "Bytes of a model's compile-cache scopes on this node",
            Some(Unit::Bytes),
            bytes.clone(),
        );
        let inert = Family::<ModelLabels, Gauge>::default();
        families.add(
            "compile_cache_inert",
            "1 while a model's pods compile into several hash directories (the cache misses: \
             their arguments or environment differ), else 0",
            None,
            inert.clone(),
        );
        let seals = Family::<ModelLabels, Counter>::default();
        families.add(
            "compile_cache_seals",
            "Compile-cache generations sealed since the agent started, by model",
            None,
            seals.clone(),
        );
        let evicted = Counter::default();
        families.add(
            "compile_cache_evicted",
            "Compile-cache bytes evicted to stay under --compile-cache-budget",
            Some(Unit::Bytes),
            evicted.clone(),
        );
        let transfers = Family::<TransferLabels, Counter>::default();
        families.add(
            "compile_cache_transfers",
            "Compile-cache registry transfers finished, by model, direction and result",
            None,
            transfers.clone(),
        );
        let transferred = Family::<DirectionLabels, Counter>::default();
        families.add(
            "compile_cache_transferred",
            "Compile-cache bytes moved to or from the registry (compressed), by model and \
             direction",
            Some(Unit::Bytes),
            transferred.clone(),
        );
        let import_uses = Family::<UseLabels, Counter>::default();
        families.add(
            "compile_cache_import_uses",
            "Seals of an imported scope after its pods were Ready: hit when they compiled \
             nothing new, miss when they did",
            None,
            import_uses.clone(),
        );
        CompileFamilies {
            bytes,
            inert,
            seals,
            evicted,
            transfers,
            transferred,
            import_uses,
        }
    }
}

impl Metrics {
    /// Records a compile-cache pass: the scopes now, the scopes sealed (by name, with their
    /// generation) and the bytes evicted.
    pub fn compile_caches(
        &self,
        scopes: &[CompileCacheStatus],
        sealed: &[(String, u64)],
        evicted_bytes: u64,
    ) {
        let c = &self.compile;
        let mut per_model: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
        for s in scopes {
            let e = per_model.entry(&s.model).or_default();
            e.0 = e.0.saturating_add(s.bytes);
            e.1 |= s.current && s.inert.is_some();
        }
        c.bytes.clear();
        c.inert.clear();
        for (model, (bytes, inert)) in per_model {
            let labels = ModelLabels {
                model: model.to_string(),
            };
            c.bytes
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            c.inert.get_or_create(&labels).set(i64::from(inert));
        }
        for (scope, _) in sealed {
            if let Some(s) = scopes.iter().find(|s| s.scope == *scope) {
                let labels = ModelLabels {
                    model: s.model.clone(),
                };
                c.seals.get_or_create(&labels).inc();
            }
        }
        c.evicted.inc_by(evicted_bytes);
    }

    /// Records a finished registry transfer of `model`'s cache.
    pub fn compile_cache_transfer(&self, model: &str, direction: &str, result: &str, bytes: u64) {
        let c = &self.compile;
        c.transfers
            .get_or_create(&TransferLabels {
                model: model.to_string(),
                direction: direction.to_string(),
                result: result.to_string(),
            })
            .inc();
        c.transferred
            .get_or_create(&DirectionLabels {
                model: model.to_string(),
                direction: direction.to_string(),
            })
            .inc_by(bytes);
    }

    /// Records a seal of an imported scope: `hit` when its pods compiled nothing new.
    pub fn compile_cache_import_use(&self, model: &str, hit: bool) {
        self.compile
            .import_uses
            .get_or_create(&UseLabels {
                model: model.to_string(),
                result: if hit { "hit" } else { "miss" }.to_string(),
            })
            .inc();
    }
}
