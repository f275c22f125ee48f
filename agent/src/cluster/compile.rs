//! Compile caches in cluster mode. The pods on this node (a watch with the field selector
//! `spec.nodeName`) say which models are in use and when a pod became Ready; a pod belongs to
//! the model its label `coldstart.dev/model` names, or whose per-model cache path it mounts
//! (a hostPath volume). The keeper ([`crate::caches::keeper`]) walks and hashes trees, so it
//! runs on a blocking thread and the pass never waits for it: each pass collects the last
//! run's report and starts the next one. The startup taint never waits for compile caches (a
//! pod can still compile).
//!
//! Across nodes ([`crate::caches::ship`]): a model whose policy names a registry has its sealed
//! scopes pushed there and imported by the other nodes of the scope. Imports trust only digests
//! a node recorded as exported in its ColdNode status (the admission policy lets an agent write
//! only its own ColdNode); "the tag is absent, so push" is made one step across the fleet by a
//! `coordination.k8s.io` Lease per tag in the agent's namespace ([`LeaseClaim`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tracing::warn;

use super::credentials::SecretCredentials;
use super::watched::{Watched, watch};
use crate::api::{ColdNode, CompileCacheStatus, POD_MODEL_LABEL, name_of};
use crate::caches::keeper::{Inputs, PodUse};
use crate::caches::runner::{self, PassContext, Runner, Settings};
use crate::caches::ship::{Claim, NoClaim, Trust};
use crate::caches::shipper::{ShipSettings, Shipper};
use crate::caches::{CacheRoot, Error as CacheError};
use crate::gpu::GpuReport;
use crate::images::RegistryClient;

/// How long a push claim holds before another node may take it over (a crashed pusher).
const CLAIM_SECONDS: i32 = 600;

/// The compile caches of this node.
pub(super) struct CompileCaches {
    settings: Settings,
    pods: Watched<Pod>,
    runner: Runner,
    shipper: Shipper,
    coldnodes: Api<ColdNode>,
}

impl CompileCaches {
    /// Starts the pods watch for `node`.
    pub(super) fn new(
        settings: Settings,
        client: kube::Client,
        request: kube::Client,
        namespace: Option<&str>,
        node: &str,
        wake: Arc<Notify>,
    ) -> CompileCaches {
        let on_node = format!("spec.nodeName={node}");
        let pods = watch(
            Api::all(client),
            watcher::Config::default().fields(&on_node),
            wake,
        );
        let claim: Arc<dyn Claim> = match namespace {
            Some(ns) => Arc::new(LeaseClaim {
                api: Api::namespaced(request.clone(), ns),
                holder: node.to_string(),
            }),
            None => Arc::new(NoClaim),
        };
        let shipper = Shipper::new(
            &settings.cache_root,
            ShipSettings {
                node: node.to_string(),
                import_only: settings.import_only,
                claim,
            },
        );
        CompileCaches {
            runner: Runner::new(&settings.cache_root),
            settings,
            pods,
            shipper,
            coldnodes: Api::all(request),
        }
    }

    /// The pods on this node, once the watch has listed them.
    pub(super) fn pods(&self) -> Option<Vec<Arc<Pod>>> {
        self.pods
            .synced
            .load(Ordering::Acquire)
            .then(|| self.pods.store.state())
    }

    /// Stops the watch.
    pub(super) fn stop(&self) {
        self.pods.task.abort();
    }

    /// Starts a keeper run (once the pods watch has listed) and returns the scopes of the last
    /// finished one.
    pub(super) async fn pass(
        &mut self,
        ctx: PassContext<'_, SecretCredentials>,
        gpu: &GpuReport,
        registry: impl Future<Output = RegistryClient>,
    ) -> Vec<CompileCacheStatus> {
        let (models, plan, now) = (ctx.models, ctx.plan, ctx.now);
        let synced = self.pods.synced.load(Ordering::Acquire);
        let (settings, pods) = (&self.settings, &self.pods);
        let inputs = || {
            let names: BTreeSet<String> = models.iter().map(|m| name_of(m).to_string()).collect();
            let root = CacheRoot::new(&settings.cache_root);
            let pods: Vec<Pod> = pods.store.state().iter().map(|p| (**p).clone()).collect();
            Inputs {
                wants: runner::wants(models, plan),
                gpu_product: runner::gpu_product(Some(gpu)),
                pods: pod_uses(&pods, &names, &root),
                held: BTreeSet::new(),
                proc_root: None,
                budget: Some(settings.budget),
                now: runner::nanos(now),
            }
        };
        let mut statuses = self.runner.pass(synced, inputs, ctx.metrics).await;
        let coldnodes = &self.coldnodes;
        runner::ship(
            &mut self.shipper,
            &mut statuses,
            &ctx,
            registry,
            async || fleet_trust(coldnodes).await,
        )
        .await;
        statuses
    }
}

/// The digests the fleet's agents recorded as exported (every ColdNode's status); `None` when
/// they cannot be listed (then nothing is imported).
async fn fleet_trust(coldnodes: &Api<ColdNode>) -> Option<Trust> {
    match coldnodes.list(&ListParams::default()).await {
        Ok(list) => Some(Trust::Recorded(recorded_digests(&list.items))),
        Err(e) => {
            warn!(error = %e, "listing ColdNodes for compile-cache trust failed; no import");
            None
        }
    }
}

/// Every artifact digest a ColdNode status records as exported.
pub fn recorded_digests(nodes: &[ColdNode]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter_map(|n| n.status.as_ref())
        .flat_map(|s| s.compile_caches.iter())
        .filter_map(|c| c.exported.as_ref())
        .map(|e| e.digest.clone())
        .collect()
}

/// A push claim: a Lease named after the repository and tag, held by this node.
pub struct LeaseClaim {
    /// Leases in the agent's namespace.
    pub api: Api<Lease>,
    /// This node's name.
    pub holder: String,
}

/// The Lease name of a claim on `tag` of `repository`.
pub fn claim_name(repository: &str, tag: &str) -> String {
    let hash = Sha256::digest(format!("{repository}:{tag}").as_bytes());
    let hex: String = hash.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("coldstart-cache-push-{hex}")
}

impl LeaseClaim {
    fn lease(&self, name: &str, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        super::REPORTER.to_string(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(CLAIM_SECONDS),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                ..LeaseSpec::default()
            }),
        }
    }

    async fn take(&self, name: &str) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        match self
            .api
            .create(&PostParams::default(), &self.lease(name, now))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
        let current = self.api.get(name).await?;
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() == Some(self.holder.as_str()) {
            return Ok(true);
        }
        let expires = spec.renew_time.map(|t| t.0).and_then(|t| {
            let secs = spec.lease_duration_seconds.unwrap_or(CLAIM_SECONDS);
            t.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs.into()))
                .ok()
        });
        if expires.is_some_and(|e| e > now) {
            return Ok(false);
        }
        // Expired: take it over, unless another node did first (the resourceVersion check).
        let mut taken = self.lease(name, now);
        taken.metadata.resource_version = current.metadata.resource_version;
        match self.api.replace(name, &PostParams::default(), &taken).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Claim for LeaseClaim {
    fn claim<'a>(
        &'a self,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            self.take(&claim_name(repository, tag))
                .await
                .map_err(|e| CacheError::Task {
                    reason: format!("push claim (Lease) for {repository}:{tag}: {e}"),
                })
        })
    }

    fn release<'a>(&'a self, repository: &'a str, tag: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let name = claim_name(repository, tag);
            if let Err(e) = self.api.delete(&name, &DeleteParams::default()).await {
                warn!(lease = %name, error = %e, "releasing the push claim failed; it expires");
            }
        })
    }
}

/// The model a pod serves: its `coldstart.dev/model` label, else the model whose per-model
/// cache path one of its hostPath volumes names.
fn model_of(pod: &Pod, models: &BTreeSet<String>, root: &CacheRoot) -> Option<String> {
    if let Some(m) = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_MODEL_LABEL))
        .filter(|m| models.contains(*m))
    {
        return Some(m.clone());
    }
    let volumes = pod.spec.as_ref()?.volumes.as_ref()?;
    volumes.iter().find_map(|v| {
        let path = PathBuf::from(&v.host_path.as_ref()?.path);
        models
            .iter()
            .find(|m| path.starts_with(root.model_link(m)))
            .cloned()
    })
}

/// Per model: whether a pod of it runs, and which of them are Ready.
pub fn pod_uses(
    pods: &[Pod],
    models: &BTreeSet<String>,
    root: &CacheRoot,
) -> BTreeMap<String, PodUse> {
    let mut out: BTreeMap<String, PodUse> = BTreeMap::new();
    for pod in pods {
        let Some(model) = model_of(pod, models, root) else {
            continue;
        };
        let status = pod.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let e = out.entry(model).or_default();
        e.running |= running;
        if running && ready {
            e.ready.insert(pod.metadata.uid.clone().unwrap_or_default());
        }
    }
    out
}

#[cfg(test)]
mod tests;
