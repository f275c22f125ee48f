//! Cluster mode: the reconcile pass of an agent on a Kubernetes node. Desired state comes from
//! watches (this node by field selector, every ColdModel, this node's ColdNode) kept in
//! reflector stores; the pure planner decides; the [`Warmer`] does the local work; the
//! [`NodeSurface`] reports (labels, conditions, ColdNode status, the startup taint) and
//! Kubernetes Events mark phase changes.
//!
//! The API server may be away for a while: the stores keep the last state they saw, local work
//! goes on from it, and the surface writes fail (counted, retried next pass) until it returns.
//! Nothing is decided before every watch has listed once: an empty store is not "no models",
//! and deciding from it would drop the startup taint of a node that was never warmed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod announce;
mod compile;
mod credentials;
mod events;
mod snapshot;
mod watched;

use crate::caches::runner::PassContext;
pub use crate::caches::runner::Settings as CompileSettings;
use compile::CompileCaches;
pub use compile::{LeaseClaim, claim_name, recorded_digests};
use credentials::SecretCredentials;
use events::NodeEvents;
pub use snapshot::SnapshotSettings;
use snapshot::{SnapshotView, Snapshots};
use watched::{Watched, watch};

use crate::agent::{Error, Reconcile};
use crate::api::{ColdModel, ColdNode, Condition, Phase, WARMING_TAINT_KEY};
use crate::gpu;
use crate::images::{DockerConfig, Images};
use crate::node::{self, DeadlineAction, NodeSurface};
use crate::plan::{Limits, Plan};
use crate::warmer::{PassInputs, Warmer};
use crate::weights::Weights;

/// Key of the Hub token in a token secret when the ColdModel names none.
pub const DEFAULT_TOKEN_KEY: &str = "token";
/// Key of registry credentials in a `kubernetes.io/dockerconfigjson` secret.
pub const DOCKERCONFIGJSON_KEY: &str = ".dockerconfigjson";
/// The extended resource the NVIDIA device plugin advertises: how many GPUs to expect.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The controller name on our Events.
pub const REPORTER: &str = "coldstart-agent";

/// Settings of cluster mode.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name.
    pub node: String,
    /// The agent's namespace: where secrets are read (none are read anywhere else).
    pub namespace: Option<String>,
    /// Concurrency and removal limits.
    pub limits: Limits,
    /// Time from the node's creation by which it should be warm; past it, the condition
    /// turns False with `WarmingDeadlineExceeded` and a Warning event.
    pub warming_deadline: Duration,
    /// Node-surface tuning.
    pub surface: node::Settings,
    /// Registry credentials used when a ColdModel names no pull secret.
    pub pull_secret: Option<DockerConfig>,
    /// What happens past the warming deadline besides the condition and the Event.
    pub deadline_action: DeadlineAction,
    /// Compile caches: where, and their budget.
    pub compile: CompileSettings,
    /// Process snapshots: where, and containerd.
    pub snapshots: SnapshotSettings,
}

/// The Kubernetes clients: one for watches (long reads, the client's own retries) and one for
/// requests (short timeouts, no retries of its own: the loop retries next pass, instead of a
/// request waiting minutes on a down API server).
#[derive(Clone)]
pub struct Clients {
    /// For watches.
    pub watch: kube::Client,
    /// For gets and writes.
    pub request: kube::Client,
}

impl Clients {
    /// Both clients from the in-cluster service account or the kubeconfig.
    pub async fn infer() -> Result<Clients, kube::Error> {
        let cfg = kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?;
        let watch = kube::Client::try_from(cfg.clone())?;
        let mut req = cfg;
        req.default_retry = false;
        req.read_timeout = Some(Duration::from_secs(15));
        req.connect_timeout = Some(Duration::from_secs(5));
        let request = kube::Client::try_from(req)?;
        Ok(Clients { watch, request })
    }
}

/// What one pass decided.
struct Planned {
    plan: Plan,
    /// `ColdstartModelsWarm` and `ColdstartGPUHealthy`.
    conditions: Vec<Condition>,
    /// The node carries the startup taint.
    has_taint: bool,
    /// The node's creation, when the API says it (the start of `coldstart_node_warm_seconds`).
    created: Option<Timestamp>,
    /// The node as the watch store held it for this pass (labels and conditions are
    /// compared against it: no read before those writes).
    node: Arc<Node>,
    /// Snapshot labels and Events.
    snapshots: SnapshotView,
}

/// The cluster-mode pass.
pub struct Cluster<I, W> {
    settings: Settings,
    warmer: Warmer<I, W>,
    surface: NodeSurface,
    creds: SecretCredentials,
    nodes: Watched<Node>,
    models: Watched<ColdModel>,
    coldnodes: Watched<ColdNode>,
    events: NodeEvents,
    compile: CompileCaches,
    snapshots: Snapshots,
    gpu: Arc<gpu::Monitor>,
    phases: BTreeMap<String, Phase>,
    /// ColdModels skipped (and announced) last pass.
    skipped: BTreeSet<String>,
    deadline_reported: bool,
    /// The NodeClaim was deleted (`DeadlineAction::Replace` acts once).
    replaced: bool,
    taint_removed: bool,
}

impl<I, W> std::fmt::Debug for Cluster<I, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<I: Images + Send + Sync + 'static, W: Weights> Cluster<I, W> {
    /// Starts the watches; `wake` is notified on every change they see. `gpu` reads GPU
    /// health (its XID thread runs apart).
    pub fn new(
        clients: Clients,
        settings: Settings,
        warmer: Warmer<I, W>,
        gpu: Arc<gpu::Monitor>,
        wake: Arc<Notify>,
    ) -> Cluster<I, W> {
        let by_name = format!("metadata.name={}", settings.node);
        let nodes = watch(
            Api::all(clients.watch.clone()),
            watcher::Config::default().fields(&by_name),
            wake.clone(),
        );
        let models = watch(
            Api::all(clients.watch.clone()),
            watcher::Config::default(),
            wake.clone(),
        );
        let coldnodes = watch(
            Api::all(clients.watch.clone()),
            watcher::Config::default().fields(&by_name),
            wake.clone(),
        );
        let secrets = settings
            .namespace
            .as_deref()
            .map(|ns| Api::namespaced(clients.request.clone(), ns));
        Cluster {
            surface: NodeSurface::new(clients.request.clone(), settings.surface.clone()),
            events: NodeEvents::new(clients.request.clone(), &settings.node),
            compile: CompileCaches::new(
                settings.compile.clone(),
                clients.watch.clone(),
                clients.request.clone(),
                settings.namespace.as_deref(),
                &settings.node,
                wake,
            ),
            snapshots: Snapshots::new(
                settings.snapshots.clone(),
                clients.request.clone(),
                &settings.node,
            ),
            creds: SecretCredentials {
                secrets,
                fallback: settings.pull_secret.clone(),
            },
            settings,
            warmer,
            nodes,
            models,
            coldnodes,
            gpu,
            phases: BTreeMap::new(),
            skipped: BTreeSet::new(),
            deadline_reported: false,
            replaced: false,
            taint_removed: false,
        }
    }

    fn synced(&self) -> Result<(), Error> {
        for (what, flag) in [
            ("nodes", &self.nodes.synced),
            ("coldmodels", &self.models.synced),
            ("coldnodes", &self.coldnodes.synced),
        ] {
            if !flag.load(Ordering::Acquire) {
                return Err(Error::NotSynced(what));
            }
        }
        Ok(())
    }

    /// GPU health: blocking NVML calls, off the async workers. While the startup taint is on,
    /// no workload should hold GPU memory.
    async fn gpu_report(&self, node: &Node, idle: bool) -> gpu::GpuReport {
        let capacity = node
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get(GPU_RESOURCE))
            .and_then(|q| q.0.parse::<u32>().ok());
        self.gpu.snapshot_async(capacity, idle).await
    }

    /// Plans from what the watches hold and runs the local part of the plan.
    async fn local(&mut self, node: Arc<Node>, now: Timestamp) -> Planned {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let has_taint = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == WARMING_TAINT_KEY));
        let models: Vec<ColdModel> = self
            .models
            .store
            .state()
            .iter()
            .map(|m| (**m).clone())
            .collect();
        let current = self
            .coldnodes
            .store
            .get(&ObjectRef::new(&self.settings.node))
            .and_then(|c| c.status.clone());
        let gpu = self.gpu_report(&node, has_taint).await;
        self.warmer.metrics().set_startup_taint(has_taint);
        let creation = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let created = creation.unwrap_or(now);
        let deadline = SignedDuration::try_from(self.settings.warming_deadline)
            .ok()
            .and_then(|d| created.checked_add(d).ok());
        let inputs = PassInputs {
            labels: &labels,
            models: &models,
            current: current.as_ref(),
            gpu: Some(&gpu),
            warming_deadline: if has_taint { deadline } else { None },
            now,
        };
        let mut plan = self
            .warmer
            .pass(inputs, &self.settings.limits, &self.creds)
            .await;
        let metrics = self.warmer.metrics();
        plan.status.compile_caches = self
            .compile
            .pass(
                PassContext {
                    models: &models,
                    plan: &plan,
                    now,
                    metrics,
                    creds: &self.creds,
                },
                &gpu,
                self.warmer.images().registry_client(),
            )
            .await;
        let pods = self.compile.pods();
        let snapshots = self
            .snapshots
            .pass(
                snapshot::PassInputs {
                    models: &models,
                    plan: &plan,
                    pods: pods.as_deref(),
                    gpu: &gpu,
                    now,
                    metrics,
                    creds: &self.creds,
                },
                self.warmer.images().registry_client(),
            )
            .await;
        plan.status.snapshots = snapshots.statuses.clone();
        plan.status.snapshot_captures = snapshots.captures.clone();
        Planned {
            snapshots,
            conditions: vec![plan.models_warm.clone(), gpu::condition(&gpu)],
            plan,
            has_taint,
            created: creation,
            node,
        }
    }

    /// Writes the plan's view to the API: labels, conditions, status, then the taint (last, so
    /// a pod scheduled the moment it goes finds the labels already there).
    async fn report(&mut self, planned: &Planned, now: Timestamp) -> Result<(), Error> {
        let (plan, has_taint) = (&planned.plan, planned.has_taint);
        let mut first: Option<node::Error> = None;
        let mut keep_first_error = |r: Result<bool, node::Error>| match r {
            Ok(wrote) => wrote,
            Err(e) => {
                let error = crate::errors::chain(&e);
                warn!(%error, "node surface write failed; retrying next pass");
                first.get_or_insert(e);
                false
            }
        };
        let node = &planned.node;
        // A snapshot label that must go goes first (a pod naming a checkpoint image must not
        // land here), then its reason in status and an Event.
        keep_first_error(
            self.surface
                .set_snapshot_labels(node, &planned.snapshots.labels)
                .await,
        );
        keep_first_error(
            self.surface
                .set_model_labels(node, &plan.ready_labels)
                .await,
        );
        keep_first_error(
            self.surface
                .apply_conditions(node, &planned.conditions, now)
                .await,
        );
        keep_first_error(self.surface.write_status(node, &plan.status, now).await);
        let removed = if plan.remove_warming_taint && has_taint {
            keep_first_error(self.surface.remove_warming_taint().await)
        } else {
            false
        };
        if removed && !self.taint_removed {
            self.taint_removed = true;
            let metrics = self.warmer.metrics();
            metrics.set_startup_taint(false);
            if let Some(created) = planned.created {
                let warm = now.duration_since(created).as_secs_f64().max(0.0);
                metrics.observe_node_warm(warm);
            }
            let msg = format!("{}; startup taint removed", plan.models_warm.message);
            self.event(EventType::Normal, "NodeWarm", "RemoveTaint", msg)
                .await;
        }
        for (type_, reason, note) in &planned.snapshots.events {
            self.event(*type_, reason, "Snapshot", note.clone()).await;
        }
        match first {
            Some(e) => Err(Error::Node(e)),
            None => Ok(()),
        }
    }

    pub(super) async fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let uid = self
            .nodes
            .store
            .get(&ObjectRef::new(&self.settings.node))
            .and_then(|n| n.metadata.uid.clone());
        self.events.publish(uid, type_, reason, action, note).await;
    }
}

impl<I: Images + Send + Sync + 'static, W: Weights> Reconcile for Cluster<I, W> {
    async fn reconcile(&mut self, _shutdown: &CancellationToken) -> Result<(), Error> {
        self.synced()?;
        let now = Timestamp::now();
        let Some(node) = self.nodes.store.get(&ObjectRef::new(&self.settings.node)) else {
            return Err(Error::NodeMissing(self.settings.node.clone()));
        };
        let planned = self.local(node, now).await;
        let plan = &planned.plan;
        debug!(
            selected = plan.selected.len(),
            phase = ?plan.status.phase,
            pulls = plan.pull_images.len(),
            syncs = plan.sync_weights.len(),
            "planned"
        );
        self.announce(plan).await;
        self.report(&planned, now).await
    }

    async fn shutdown(&mut self) {
        info!("stopping transfers and watches");
        self.warmer.shutdown().await;
        for task in [&self.nodes.task, &self.models.task, &self.coldnodes.task] {
            task.abort();
        }
        self.compile.stop();
        self.snapshots.stop();
    }
}
