//! Managed process snapshots in cluster mode. Each pass: collect a finished capture, list the
//! snapshots held, evict what the policies no longer keep, decide per held snapshot whether a
//! pod can restore from it here now (fail closed: containerd unreachable, restore unsupported,
//! a key field that moved, the image gone: no), label the node
//! `coldstart.dev/snapshot.<model>=<key hash>` only for those, and start one capture when a
//! policy's pod is due. Captures run off the pass (a checkpoint of a large process takes
//! minutes); one at a time per node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::{
    ColdModel, CompileCacheStatus, PartPhase, SNAPSHOT_REQUEST_ANNOTATION, SnapshotCapture,
    SnapshotPolicy, SnapshotStatus, name_of, snapshot_label_key,
};
use crate::gpu::GpuReport;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::snapshots::policy::{self, Due, HereFacts, ModelInputs, ModelNow, PodView};
use crate::snapshots::{ContainerdSnapshots, Error as SnapError, restore_support};
use crate::snapshots::{Managed, NodeFacts, RuntimeConfig, Snapshot, TakeRequest, Taken};

/// How long "can this node restore" is trusted before it is asked again.
const SUPPORT_TTL: Duration = Duration::from_secs(30);
/// How long a pod whose capture failed is left alone.
const RETRY_AFTER: Duration = Duration::from_secs(600);
/// How often retention leases are renewed and orphans released.
const LEASE_RENEW: Duration = Duration::from_secs(3600);
/// The GPU resource a container asks for.
const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Where snapshots live and how containerd is reached.
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    /// The root-only snapshot directory.
    pub dir: std::path::PathBuf,
    /// containerd for snapshots.
    pub runtime: RuntimeConfig,
    /// The compile caches' root (their retention leases).
    pub cache_root: std::path::PathBuf,
}

/// What a pass decided, for the node surface.
#[derive(Debug, Default)]
pub(super) struct SnapshotView {
    /// `coldstart.dev/snapshot.<model>` label values, by model.
    pub labels: BTreeMap<String, String>,
    /// Per snapshot.
    pub statuses: Vec<SnapshotStatus>,
    /// Per model with a policy.
    pub captures: Vec<SnapshotCapture>,
    /// Events to publish after the labels are written.
    pub events: Vec<(EventType, &'static str, String)>,
}

type CaptureTask = JoinHandle<(String, String, Result<Taken, SnapError>)>;

/// The snapshots of this node.
pub(super) struct Snapshots {
    settings: SnapshotSettings,
    managed: Option<Managed>,
    open_error: Option<String>,
    task: Option<CaptureTask>,
    support: Option<(Instant, Result<(), String>, String)>,
    captures: BTreeMap<String, SnapshotCapture>,
    failed: HashMap<String, Instant>,
    /// Pods a snapshot was taken of (by uid).
    taken_from: std::collections::HashSet<String>,
    ready_seen: HashMap<String, i64>,
    offered: BTreeMap<String, String>,
    withdrawn_reason: BTreeMap<String, String>,
    leases_renewed: Option<Instant>,
    kernel: String,
}

impl Snapshots {
    pub(super) fn new(settings: SnapshotSettings) -> Snapshots {
        Snapshots {
            settings,
            managed: None,
            open_error: None,
            task: None,
            support: None,
            captures: BTreeMap::new(),
            failed: HashMap::new(),
            taken_from: std::collections::HashSet::new(),
            ready_seen: HashMap::new(),
            offered: BTreeMap::new(),
            withdrawn_reason: BTreeMap::new(),
            leases_renewed: None,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }

    pub(super) fn stop(&self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }

    /// The store and containerd, opened on first use (a node without any policy never makes
    /// the directory).
    fn managed(&mut self) -> Option<&Managed> {
        if self.managed.is_none() {
            let runtime = ContainerdSnapshots::new(self.settings.runtime.clone());
            match Managed::open(&self.settings.dir, runtime, Some(&self.settings.cache_root)) {
                Ok(m) => {
                    self.managed = Some(m);
                    self.open_error = None;
                }
                Err(e) => self.open_error = Some(crate::errors::chain(&e)),
            }
        }
        self.managed.as_ref()
    }

    /// Whether this node can restore (asked of containerd at most every [`SUPPORT_TTL`]), and
    /// the CRIU version it would run.
    async fn support(&mut self) -> (Result<(), String>, String) {
        if let Some((at, verdict, criu)) = &self.support
            && at.elapsed() < SUPPORT_TTL
        {
            return (verdict.clone(), criu.clone());
        }
        let Some(m) = self.managed() else {
            let why = self.open_error.clone().unwrap_or_default();
            return (Err(why), String::new());
        };
        let (verdict, criu) = match m.runtime.support().await {
            Ok(s) => (
                restore_support(&s).map_err(|e| e.to_string()),
                s.criu.clone().unwrap_or_default(),
            ),
            Err(e) => (Err(e.to_string()), String::new()),
        };
        self.support = Some((Instant::now(), verdict.clone(), criu.clone()));
        (verdict, criu)
    }

    pub(super) async fn pass(
        &mut self,
        models: &[ColdModel],
        plan: &Plan,
        pods: Option<&[Arc<Pod>]>,
        gpu: &GpuReport,
        now: Timestamp,
        metrics: &Metrics,
    ) -> SnapshotView {
        let mut view = SnapshotView::default();
        let policies: BTreeMap<String, SnapshotPolicy> = models
            .iter()
            .filter_map(|m| {
                let p = m.spec.snapshot.clone()?;
                p.is_enabled().then(|| (name_of(m).to_string(), p))
            })
            .collect();
        if policies.is_empty() && self.managed.is_none() && !self.settings.dir.exists() {
            return view;
        }
        let now_unix = u64::try_from(now.as_second()).unwrap_or(0);
        self.collect(now, metrics, &mut view).await;
        let (support, criu) = self.support().await;
        let Some(m) = self.managed().cloned() else {
            return view;
        };
        let held = match m.store.list() {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %crate::errors::chain(&e), "cannot list snapshots");
                Vec::new()
            }
        };
        let held = self
            .retain(&m, held, &policies, now_unix, metrics, &mut view)
            .await;
        if self
            .leases_renewed
            .is_none_or(|t| t.elapsed() >= LEASE_RENEW)
        {
            for s in &held {
                if let Err(e) = m.hold(s, now_unix) {
                    warn!(snapshot = %s.record.name, error = %e, "renewing a retention lease");
                }
            }
            let _ = m.release_orphans(&held, now_unix);
            self.leases_renewed = Some(Instant::now());
        }
        let here = HereFacts {
            gpu_product: gpu_product(gpu),
            gpus: u32::try_from(gpu.devices.len()).unwrap_or(u32::MAX),
            driver: gpu.driver_version.clone().unwrap_or_default(),
            kernel: self.kernel.clone(),
            criu: criu.clone(),
        };
        let nows = model_nows(plan);
        self.offer(&m, &held, &support, &here, &nows, &policies, &mut view)
            .await;
        let statuses = &view.statuses;
        let offered: Vec<&str> = view.labels.keys().map(String::as_str).collect();
        let names: Vec<&str> = policies.keys().map(String::as_str).collect();
        metrics.snapshots(statuses, &offered, &names);
        let views = pods.map(|p| self.pod_views(p, now));
        for (model, policy) in &policies {
            let newest = held
                .iter()
                .filter(|s| s.record.meta.model == *model)
                .map(|s| s.record.meta.created_unix)
                .max()
                .unwrap_or(0);
            let inputs = ModelInputs {
                model,
                policy,
                requested_at: requested_at(models, model),
                newest_created: newest,
                offered: view.labels.contains_key(model),
                support: support.clone(),
            };
            let compile = &plan.status.compile_caches;
            let capture = self.decide(&m, &inputs, views.as_deref(), &nows, compile, &here, now);
            self.captures.insert(model.clone(), capture);
        }
        self.captures.retain(|k, _| policies.contains_key(k));
        view.captures = self.captures.values().cloned().collect();
        view
    }

    /// Collects a finished capture.
    async fn collect(&mut self, now: Timestamp, metrics: &Metrics, view: &mut SnapshotView) {
        if !self.task.as_ref().is_some_and(JoinHandle::is_finished) {
            return;
        }
        let Some(task) = self.task.take() else {
            return;
        };
        let (model, pod_uid, result) = match task.await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "snapshot capture task ended abnormally");
                return;
            }
        };
        let at = Some(Time(now));
        let capture = match result {
            Ok(t) => {
                let r = &t.snapshot.record;
                self.taken_from.insert(pod_uid);
                metrics.snapshot_capture(&model, "captured");
                let msg = format!(
                    "snapshot {} of model {model}: {} MiB, checkpoint {:.1} s, key {}",
                    r.name,
                    r.layer_size >> 20,
                    t.checkpoint.as_secs_f64(),
                    r.key.hash()
                );
                view.events
                    .push((EventType::Normal, "SnapshotCaptured", msg.clone()));
                self.support = None; // re-read before offering it
                SnapshotCapture {
                    model: model.clone(),
                    state: "captured".into(),
                    message: Some(msg),
                    at,
                }
            }
            Err(e) => {
                metrics.snapshot_capture(&model, e.metric_label());
                self.failed.insert(pod_uid, Instant::now());
                let msg = format!(
                    "snapshot of model {model} failed: {}",
                    crate::errors::chain(&e)
                );
                warn!(%model, error = %msg, "snapshot capture failed");
                view.events
                    .push((EventType::Warning, "SnapshotFailed", msg.clone()));
                SnapshotCapture {
                    model: model.clone(),
                    state: "failed".into(),
                    message: Some(msg),
                    at,
                }
            }
        };
        self.captures.insert(model, capture);
    }
}

impl Snapshots {
    /// Evicts what the policies do not keep (none while a capture runs); returns what stays.
    async fn retain(
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
    async fn offer(
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
            view.statuses.push(SnapshotStatus {
                name: r.name.clone(),
                model: r.meta.model.clone(),
                container: r.container_name.clone(),
                key_hash: r.key.hash(),
                key: r.key.fields(),
                image: r.meta.image.clone(),
                pushed: None,
                bytes: s.bytes(),
                created: i64::try_from(r.meta.created_unix)
                    .ok()
                    .and_then(|t| Timestamp::from_second(t).ok())
                    .map(Time),
                restorable: verdict.is_ok(),
                reason: verdict.err(),
            });
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

impl Snapshots {
    /// Whether a capture starts for one model; returns its capture status.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        m: &Managed,
        inputs: &ModelInputs<'_>,
        pods: Option<&[PodView]>,
        nows: &BTreeMap<String, ModelNow>,
        compile: &[CompileCacheStatus],
        here: &HereFacts,
        now: Timestamp,
    ) -> SnapshotCapture {
        let model = inputs.model;
        let prev = self.captures.get(model).cloned();
        let status = |state: &str, message: String| SnapshotCapture {
            model: model.to_string(),
            state: state.to_string(),
            message: Some(message),
            at: Some(Time(now)),
        };
        let same = |state: &str, message: &str| {
            prev.clone()
                .filter(|p| p.state == state && p.message.as_deref() == Some(message))
        };
        if self.task.is_some() {
            return prev.unwrap_or_else(|| status("waiting", "another capture runs".into()));
        }
        let Some(pods) = pods else {
            let msg = "the pods on this node are not listed yet";
            return same("waiting", msg).unwrap_or_else(|| status("waiting", msg.into()));
        };
        let Some(model_now) = nows.get(model) else {
            let msg = "the model is not warm here (image digest and commit)";
            return same("waiting", msg).unwrap_or_else(|| status("waiting", msg.into()));
        };
        let pods: Vec<PodView> = pods
            .iter()
            .filter(|p| {
                self.failed
                    .get(&p.uid)
                    .is_none_or(|t| t.elapsed() >= RETRY_AFTER)
            })
            .cloned()
            .collect();
        let (pod, container, why) = match policy::due(inputs, &pods, now.as_second()) {
            Due::Idle { state, message } => {
                // A failure's line stays until the next capture starts; a capture's while the
                // snapshot is held.
                return match prev {
                    Some(p)
                        if p.state == "failed"
                            || (p.state == "captured" && state == "captured") =>
                    {
                        p
                    }
                    Some(p) if p.state == state && p.message.as_deref() == Some(&message) => p,
                    _ => status(state, message),
                };
            }
            Due::Capture {
                pod,
                container,
                why,
            } => (pod, container, why),
        };
        let gpus = pod
            .containers
            .iter()
            .find(|(n, _)| *n == container)
            .map_or(0, |(_, g)| *g);
        let req = TakeRequest {
            model: model.to_string(),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: container.clone(),
            pod_ip: pod.ip.clone(),
            quiesce: inputs.policy.quiesce.clone(),
            timeout: inputs.policy.timeout(),
            node: NodeFacts {
                gpu_product: here.gpu_product.clone(),
                gpu_count: gpus,
                driver: here.driver.clone(),
                kernel: here.kernel.clone(),
                model_commit: model_now.model_commit.clone(),
                criu: here.criu.clone(),
            },
            compile_scope: compile
                .iter()
                .find(|c| c.model == model && c.current)
                .map(|c| c.scope.clone()),
            now_unix: u64::try_from(now.as_second()).unwrap_or(0),
        };
        let managed = m.clone();
        let (model_name, uid) = (model.to_string(), pod.uid.clone());
        info!(%model, pod = %format!("{}/{}", pod.namespace, pod.name), %container, %why, "taking a snapshot");
        self.task = Some(tokio::spawn(async move {
            let r = managed.take(&req).await;
            (model_name, uid, r)
        }));
        status(
            "capturing",
            format!("{}/{}/{container}: {why}", pod.namespace, pod.name),
        )
    }

    /// The pods on this node as the policy sees them; a Ready pod without a transition time
    /// counts from when this agent first saw it Ready.
    fn pod_views(&mut self, pods: &[Arc<Pod>], now: Timestamp) -> Vec<PodView> {
        let mut seen = HashMap::new();
        let out = pods
            .iter()
            .map(|p| {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let status = p.status.as_ref();
                let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
                let ready = status
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"));
                let ready_since = match (running, ready) {
                    (true, Some(c)) => {
                        let first = *self.ready_seen.get(&uid).unwrap_or(&now.as_second());
                        seen.insert(uid.clone(), first);
                        Some(
                            c.last_transition_time
                                .as_ref()
                                .map_or(first, |t| t.0.as_second()),
                        )
                    }
                    _ => None,
                };
                let containers = p
                    .spec
                    .as_ref()
                    .map(|s| {
                        s.containers
                            .iter()
                            .map(|c| (c.name.clone(), gpus_of(c)))
                            .collect()
                    })
                    .unwrap_or_default();
                PodView {
                    namespace: p.metadata.namespace.clone().unwrap_or_default(),
                    name: p.metadata.name.clone().unwrap_or_default(),
                    labels: p.metadata.labels.clone().unwrap_or_default(),
                    containers,
                    ready_since,
                    ip: status.and_then(|s| s.pod_ip.clone()),
                    captured: self.taken_from.contains(&uid),
                    uid,
                }
            })
            .collect();
        self.ready_seen = seen;
        out
    }
}

fn gpus_of(c: &k8s_openapi::api::core::v1::Container) -> u32 {
    c.resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(GPU_RESOURCE))
        .and_then(|q| q.0.parse().ok())
        .unwrap_or(0)
}

/// The GPU product name in a key: the first device's, empty without GPUs.
fn gpu_product(gpu: &GpuReport) -> String {
    gpu.devices
        .iter()
        .map(|d| d.info.name.clone())
        .find(|n| !n.trim().is_empty())
        .unwrap_or_default()
}

/// Per model warm here: the image digest and the weights' commit.
fn model_nows(plan: &Plan) -> BTreeMap<String, ModelNow> {
    plan.status
        .models
        .iter()
        .filter_map(|s| {
            let image = s.image.as_ref().filter(|p| p.phase == PartPhase::Ready)?;
            let weights = s.weights.as_ref().filter(|p| p.phase == PartPhase::Ready)?;
            Some((
                s.name.clone(),
                ModelNow {
                    image_digest: image.resolved.clone()?,
                    model_commit: weights.resolved.clone()?,
                },
            ))
        })
        .collect()
}

/// The model's request annotation as seconds since the epoch.
fn requested_at(models: &[ColdModel], model: &str) -> Option<i64> {
    let m = models.iter().find(|m| name_of(m) == model)?;
    let text = m
        .metadata
        .annotations
        .as_ref()?
        .get(SNAPSHOT_REQUEST_ANNOTATION)?;
    text.parse::<Timestamp>().ok().map(|t| t.as_second())
}
