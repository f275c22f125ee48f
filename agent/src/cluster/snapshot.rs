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
use tracing::warn;

use crate::api::{
    ColdModel, PartPhase, SNAPSHOT_REQUEST_ANNOTATION, SnapshotCapture, SnapshotPolicy,
    SnapshotStatus, name_of,
};
use crate::gpu::GpuReport;
use crate::images::RegistryClient;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::snapshots::policy::{HereFacts, ModelInputs, ModelNow};
use crate::snapshots::{ContainerdSnapshots, Error as SnapError, restore_support};
use crate::snapshots::{Managed, RuntimeConfig, Taken};
use crate::warmer::Credentials;

mod capture;
mod offer;
mod share;

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

/// What a capture or pull task ends with.
pub(super) struct Outcome {
    model: String,
    /// The pod uid captured, or the digest pulled.
    from: String,
    pulled: bool,
    result: Result<Taken, SnapError>,
    /// After a capture, the push to the policy's registry (`registry/repo@digest`).
    push: Option<Result<String, String>>,
}

type CaptureTask = JoinHandle<Outcome>;

/// What one pass is given.
pub(super) struct PassInputs<'a, C> {
    pub models: &'a [ColdModel],
    pub plan: &'a Plan,
    pub pods: Option<&'a [Arc<Pod>]>,
    pub gpu: &'a GpuReport,
    pub now: Timestamp,
    pub metrics: &'a Metrics,
    pub creds: &'a C,
}

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
    /// Every ColdNode (shared snapshots other nodes pushed).
    coldnodes: kube::Api<crate::api::ColdNode>,
    node: String,
    remote_checked: Option<Instant>,
}

impl Snapshots {
    pub(super) fn new(settings: SnapshotSettings, request: kube::Client, node: &str) -> Snapshots {
        Snapshots {
            coldnodes: kube::Api::all(request),
            node: node.to_string(),
            remote_checked: None,
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

    pub(super) async fn pass<C: Credentials>(
        &mut self,
        inp: PassInputs<'_, C>,
        registry: impl Future<Output = RegistryClient>,
    ) -> SnapshotView {
        let PassInputs {
            models,
            plan,
            pods,
            gpu,
            now,
            metrics,
            creds,
        } = inp;
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
        let shares = share::targets(models, &policies, creds, registry).await;
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
            let target = match shares.get(model) {
                Some(Ok(t)) => Some(t),
                Some(Err(why)) => {
                    warn!(%model, error = %why, "snapshot sharing off for this pass");
                    None
                }
                None => None,
            };
            let mut capture = self.decide(
                &m,
                &inputs,
                views.as_deref(),
                (&nows, compile, &here),
                target,
                now,
            );
            if let Some(t) = target
                && !inputs.offered
                && capture.state != "capturing"
                && let Some(pulling) = self
                    .maybe_pull(&m, model, t, &support, &here, nows.get(model), now_unix)
                    .await
            {
                capture = pulling;
            }
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
        let o = match task.await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "snapshot capture task ended abnormally");
                return;
            }
        };
        let (model, verb) = (
            o.model.clone(),
            if o.pulled { "pulled" } else { "captured" },
        );
        let at = Some(Time(now));
        let capture = match o.result {
            Ok(t) => {
                let r = &t.snapshot.record;
                if !o.pulled {
                    self.taken_from.insert(o.from);
                }
                metrics.snapshot_capture(&model, verb);
                let shared = o
                    .push
                    .as_ref()
                    .map(|p| share::pushed(view, &model, p))
                    .unwrap_or_default();
                let how = if o.pulled {
                    format!("pulled {}", r.meta.pushed.as_deref().unwrap_or("?"))
                } else {
                    format!("checkpoint {:.1} s", t.checkpoint.as_secs_f64())
                };
                let msg = format!(
                    "snapshot {} of model {model}: {} MiB, {how}, key {}{shared}",
                    r.name,
                    r.layer_size >> 20,
                    r.key.hash()
                );
                let reason = if o.pulled {
                    "SnapshotPulled"
                } else {
                    "SnapshotCaptured"
                };
                view.events.push((EventType::Normal, reason, msg.clone()));
                self.support = None; // re-read before offering it
                SnapshotCapture {
                    model: model.clone(),
                    state: verb.into(),
                    message: Some(msg),
                    at,
                }
            }
            Err(e) => {
                metrics.snapshot_capture(&model, e.metric_label());
                self.failed.insert(o.from, Instant::now());
                let msg = format!(
                    "snapshot of model {model} not {verb}: {}",
                    crate::errors::chain(&e)
                );
                warn!(%model, error = %msg, "snapshot {verb} failed");
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
