//! Runs [`super::ship`] for the daemon's loop: at most one transfer per scope, on the async
//! runtime, never waited for. Each pass collects finished transfers, starts the ones the scopes
//! call for, and sets each scope's `transfer` line.
//!
//! - Import: the model's current scope holds no file, no pod or process uses it, it was never
//!   imported, and the caller says which digests it trusts (cluster mode: those a node
//!   recorded as exported). Retried after
//!   [`RETRY`] while the registry has no artifact, the digest is not trusted or a step failed.
//! - Export: the scope's newest generation is sealed and this node has not pushed it (nor
//!   found it settled: the tag names another node's artifact), and the node is not import-only.
//!
//! Imports never hold the startup taint: the pod can always compile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::layout::{CacheRoot, Owner};
use super::scope::Scope;
use super::ship::{self, Claim, Exported, Imported, Target, Trust};
use super::{Error, UnixNanos};
use crate::api::CompileCacheStatus;
use crate::images::RegistryClient;
use crate::metrics::Metrics;

/// Wait before trying a scope again after nothing to import, an untrusted digest or a failure.
pub const RETRY: Duration = Duration::from_secs(60);

/// Where a model's scopes travel, and who owns an imported tree.
#[derive(Debug, Clone)]
pub struct ShipTarget {
    /// The repository and its credentials.
    pub target: Target,
    /// The scope's owner (the policy's uid/gid).
    pub owner: Owner,
}

/// How the node takes part.
pub struct ShipSettings {
    /// This node's name (recorded in pushed artifacts).
    pub node: String,
    /// Never push (an import-only node pool).
    pub import_only: bool,
    /// Makes "tag absent, so push" one step across nodes.
    pub claim: Arc<dyn Claim>,
}

enum Outcome {
    Export(Result<Exported, Error>),
    Import(Result<Imported, Error>),
}

struct Running {
    what: String,
    task: JoinHandle<Outcome>,
}

/// The transfers of the node's scopes.
pub struct Shipper {
    root: CacheRoot,
    settings: ShipSettings,
    running: BTreeMap<String, Running>,
    /// The last outcome per scope, for its status.
    last: BTreeMap<String, String>,
    /// No import before this time (nanoseconds), per scope.
    import_retry_at: BTreeMap<String, UnixNanos>,
    /// No export before this time (nanoseconds), per scope.
    export_retry_at: BTreeMap<String, UnixNanos>,
    /// Generation whose export is settled (pushed, or the tag is another node's), per scope.
    settled: BTreeMap<String, u64>,
    /// Scopes imported by this agent (the keeper's report may not show it yet).
    imported: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// A shipper of the caches under `cache_root`.
    pub fn new(cache_root: &std::path::Path, settings: ShipSettings) -> Shipper {
        Shipper {
            root: CacheRoot::new(cache_root),
            settings,
            running: BTreeMap::new(),
            last: BTreeMap::new(),
            import_retry_at: BTreeMap::new(),
            export_retry_at: BTreeMap::new(),
            settled: BTreeMap::new(),
            imported: Default::default(),
        }
    }

    fn import_due(&self, s: &CompileCacheStatus, now: UnixNanos) -> bool {
        s.current
            && !s.in_use
            && s.files == 0
            && s.imported.is_none()
            && !self.imported.contains(&s.scope)
            && !self.running.contains_key(&s.scope)
            && self.import_retry_at.get(&s.scope).is_none_or(|t| *t <= now)
    }

    /// Whether a pass would start an import given trust: the caller then finds out which
    /// digests it trusts (a list of ColdNodes) only when it matters.
    pub fn wants_trust(
        &self,
        statuses: &[CompileCacheStatus],
        targets: &BTreeMap<String, ShipTarget>,
        now: UnixNanos,
    ) -> bool {
        statuses
            .iter()
            .any(|s| targets.contains_key(&s.model) && self.import_due(s, now))
    }

    /// Collects finished transfers, starts due ones, and sets `transfer` on `statuses`.
    pub fn pass(
        &mut self,
        statuses: &mut [CompileCacheStatus],
        targets: &BTreeMap<String, ShipTarget>,
        trust: Option<&Trust>,
        client: &RegistryClient,
        metrics: &Metrics,
        now: UnixNanos,
    ) {
        self.collect(statuses, metrics, now);
        for s in statuses.iter_mut() {
            let Some(t) = targets.get(&s.model) else {
                continue;
            };
            if let Some(trust) = trust
                && self.import_due(s, now)
            {
                self.start_import(s, t, trust.clone(), client.clone(), now);
            } else if !self.settings.import_only
                && let Some(generation) = s.generation
                && s.sealed
                && !self.running.contains_key(&s.scope)
                && s.exported
                    .as_ref()
                    .is_none_or(|e| e.generation < generation)
                && self.settled.get(&s.scope) != Some(&generation)
                && self.export_retry_at.get(&s.scope).is_none_or(|t| *t <= now)
            {
                self.start_export(s, t, client.clone(), now);
            }
            s.transfer = match self.running.get(&s.scope) {
                Some(r) => Some(r.what.clone()),
                None => self.last.get(&s.scope).cloned(),
            };
        }
    }

    fn start_import(
        &mut self,
        s: &CompileCacheStatus,
        t: &ShipTarget,
        trust: Trust,
        client: RegistryClient,
        now: UnixNanos,
    ) {
        let key = match super::ScopeKey::new(&s.model, &s.image_digest, &s.gpu_product) {
            Ok(k) => k,
            Err(e) => {
                self.last
                    .insert(s.scope.clone(), format!("import failed: {e}"));
                return;
            }
        };
        let scope = Scope::new(key);
        let (root, target, owner) = (self.root.clone(), t.target.clone(), t.owner);
        let what = format!("importing from {}", target.reference(&s.scope));
        let task = tokio::spawn(async move {
            Outcome::Import(ship::import(&root, &scope, owner, &client, &target, &trust, now).await)
        });
        self.running.insert(s.scope.clone(), Running { what, task });
    }

    fn start_export(
        &mut self,
        s: &CompileCacheStatus,
        t: &ShipTarget,
        client: RegistryClient,
        now: UnixNanos,
    ) {
        let (root, target, scope) = (self.root.clone(), t.target.clone(), s.scope.clone());
        let (claim, node) = (self.settings.claim.clone(), self.settings.node.clone());
        let what = format!("exporting to {}", target.reference(&s.scope));
        let generation = s.generation.unwrap_or_default();
        let task = tokio::spawn(async move {
            Outcome::Export(
                ship::export(&root, &scope, &client, &target, claim.as_ref(), &node, now).await,
            )
        });
        self.settled.remove(&s.scope);
        self.running.insert(
            s.scope.clone(),
            Running {
                what: format!("{what} (generation {generation})"),
                task,
            },
        );
    }

    /// Takes the outcomes of finished transfers.
    fn collect(&mut self, statuses: &[CompileCacheStatus], metrics: &Metrics, now: UnixNanos) {
        let done: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        let retry = now.saturating_add(i64::try_from(RETRY.as_nanos()).unwrap_or(i64::MAX));
        for scope in done {
            let Some(r) = self.running.remove(&scope) else {
                continue;
            };
            let model = statuses
                .iter()
                .find(|s| s.scope == scope)
                .map(|s| s.model.clone())
                .unwrap_or_default();
            let outcome = match futures::FutureExt::now_or_never(r.task) {
                Some(Ok(o)) => o,
                Some(Err(e)) => {
                    self.last
                        .insert(scope.clone(), format!("transfer task failed: {e}"));
                    self.import_retry_at.insert(scope.clone(), retry);
                    self.export_retry_at.insert(scope, retry);
                    continue;
                }
                None => continue,
            };
            let line = match outcome {
                Outcome::Import(Ok(Imported::Done(a))) => {
                    info!(%scope, reference = %a.reference, digest = %a.digest, bytes = a.bytes,
                        "compile cache imported");
                    metrics.compile_cache_transfer(
                        &model,
                        "import",
                        "imported",
                        a.transferred_bytes,
                    );
                    self.imported.insert(scope.clone());
                    format!("imported {}@{}", a.reference, a.digest)
                }
                Outcome::Import(Ok(Imported::NoArtifact)) => {
                    self.import_retry_at.insert(scope.clone(), retry);
                    "no artifact in the registry yet".to_string()
                }
                Outcome::Import(Ok(Imported::NotTrusted { digest })) => {
                    self.import_retry_at.insert(scope.clone(), retry);
                    metrics.compile_cache_transfer(&model, "import", "untrusted", 0);
                    format!(
                        "artifact {digest} not imported: no node of the fleet recorded it as \
                         exported"
                    )
                }
                Outcome::Import(Err(e)) => {
                    self.import_retry_at.insert(scope.clone(), retry);
                    let error = crate::errors::chain(&e);
                    warn!(%scope, %error, "compile cache import failed; the pod compiles");
                    let result = match e {
                        Error::BadArtifact { .. } => "refused",
                        Error::ScopeNotEmpty { .. } => "skipped",
                        _ => "failed",
                    };
                    metrics.compile_cache_transfer(&model, "import", result, 0);
                    format!("import {result}: {error}")
                }
                Outcome::Export(Ok(Exported::Pushed(a))) => {
                    info!(%scope, reference = %a.reference, digest = %a.digest,
                        generation = a.generation, "compile cache exported");
                    metrics.compile_cache_transfer(&model, "export", "pushed", a.transferred_bytes);
                    self.settled.insert(scope.clone(), a.generation);
                    format!("exported {}@{}", a.reference, a.digest)
                }
                Outcome::Export(Ok(Exported::AlreadyExported(a))) => {
                    self.settled.insert(scope.clone(), a.generation);
                    format!("exported {}@{}", a.reference, a.digest)
                }
                Outcome::Export(Ok(Exported::Present { digest })) => {
                    if let Some(g) = statuses
                        .iter()
                        .find(|s| s.scope == scope)
                        .and_then(|s| s.generation)
                    {
                        self.settled.insert(scope.clone(), g);
                    }
                    metrics.compile_cache_transfer(&model, "export", "present", 0);
                    format!("not pushed: the registry holds {digest} for this scope")
                }
                Outcome::Export(Ok(Exported::ClaimedElsewhere)) => {
                    self.export_retry_at.insert(scope.clone(), retry);
                    "not pushed: another node is pushing this scope".to_string()
                }
                Outcome::Export(Ok(Exported::NothingSealed)) => String::new(),
                Outcome::Export(Err(e)) => {
                    self.export_retry_at.insert(scope.clone(), retry);
                    let error = crate::errors::chain(&e);
                    warn!(%scope, %error, "compile cache export failed; retrying");
                    metrics.compile_cache_transfer(&model, "export", "failed", 0);
                    format!("export failed: {error}")
                }
            };
            if line.is_empty() {
                self.last.remove(&scope);
            } else {
                self.last.insert(scope, line);
            }
        }
    }
}
