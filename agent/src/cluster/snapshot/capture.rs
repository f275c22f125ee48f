//! Whether a capture starts for a model, and the pods on this node as the policy sees them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tracing::info;

use super::share::ShareTarget;
use super::{GPU_RESOURCE, Outcome, RETRY_AFTER, Snapshots};
use crate::api::{CompileCacheStatus, SnapshotCapture};
use crate::snapshots::policy::{self, Due, HereFacts, ModelInputs, ModelNow, PodView};
use crate::snapshots::{Managed, NodeFacts, TakeRequest};

impl Snapshots {
    /// Whether a capture starts for one model; returns its capture status.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decide(
        &mut self,
        m: &Managed,
        inputs: &ModelInputs<'_>,
        pods: Option<&[PodView]>,
        (nows, compile, here): (
            &BTreeMap<String, ModelNow>,
            &[CompileCacheStatus],
            &HereFacts,
        ),
        share: Option<&ShareTarget>,
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
        let share = share.cloned();
        self.task = Some(tokio::spawn(async move {
            let result = managed.take(&req).await;
            let push = match (&result, &share) {
                (Ok(t), Some(target)) => {
                    Some(super::share::push(&managed, &t.snapshot, target).await)
                }
                _ => None,
            };
            Outcome {
                model: model_name,
                from: uid,
                pulled: false,
                result,
                push,
            }
        }));
        status(
            "capturing",
            format!("{}/{}/{container}: {why}", pod.namespace, pod.name),
        )
    }

    /// The pods on this node as the policy sees them; a Ready pod without a transition time
    /// counts from when this agent first saw it Ready.
    pub(super) fn pod_views(&mut self, pods: &[Arc<Pod>], now: Timestamp) -> Vec<PodView> {
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
