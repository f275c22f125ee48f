//! The managed policy's decisions, pure: whether a model's snapshot is due on this node (and
//! from which pod), which snapshots to evict, and whether a held snapshot can restore here now
//! (fail closed: any doubt is a "no" with its reason). The cluster pass gathers the inputs and
//! carries the decisions out.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::key::{CompatKey, NodeFacts};
use super::store::Record;
use crate::api::{POD_MODEL_LABEL, SnapshotPolicy, matches};

/// A pod on this node as the policy sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Containers by name, with the GPUs each asks for (`nvidia.com/gpu` limit).
    pub containers: Vec<(String, u32)>,
    /// Phase Running and condition Ready True since this time (seconds since the epoch).
    pub ready_since: Option<i64>,
    /// The pod's IP (for the quiesce hooks).
    pub ip: Option<String>,
    /// A snapshot was already taken of this pod: the Ready-period rule takes each pod once
    /// (its process is what it is; a new key comes with a new pod), a request may again.
    pub captured: bool,
}

/// What a model's policy asks of this node now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Checkpoint this pod's container now.
    Capture {
        /// The pod.
        pod: PodView,
        /// The container.
        container: String,
        /// Why now, for people.
        why: String,
    },
    /// Nothing to do: `state` (`captured`, `waiting`) and why.
    Idle {
        /// `captured` or `waiting`.
        state: &'static str,
        /// Why, for people.
        message: String,
    },
}

/// What the policy is deciding about, for one model.
#[derive(Debug, Clone)]
pub struct ModelInputs<'a> {
    /// The ColdModel's name.
    pub model: &'a str,
    /// Its policy.
    pub policy: &'a SnapshotPolicy,
    /// Time of the newest request (`coldctl snapshot create`), seconds since the epoch.
    pub requested_at: Option<i64>,
    /// Time of the newest snapshot of the model held here (0 when none).
    pub newest_created: u64,
    /// A held snapshot of the model can restore here now.
    pub offered: bool,
    /// Whether this node can restore at all (`Err`: why not).
    pub support: Result<(), String>,
}

/// The selector a policy uses: its own, else `coldstart.dev/model=<model>`.
pub fn selector_of(model: &str, policy: &SnapshotPolicy) -> LabelSelector {
    policy.selector.clone().unwrap_or_else(|| LabelSelector {
        match_labels: Some(BTreeMap::from([(
            POD_MODEL_LABEL.to_string(),
            model.to_string(),
        )])),
        match_expressions: None,
    })
}

/// Whether `m`'s snapshot is due on this node at `now` (seconds since the epoch), and from
/// which of `pods`.
pub fn due(m: &ModelInputs<'_>, pods: &[PodView], now: i64) -> Due {
    let idle = |state, message: String| Due::Idle { state, message };
    if let Err(why) = &m.support {
        return idle("waiting", format!("not captured: {why}"));
    }
    let selector = selector_of(m.model, m.policy);
    let mut ready: Vec<&PodView> = pods
        .iter()
        .filter(|p| p.ready_since.is_some() && matches(Some(&selector), &p.labels))
        .collect();
    // The longest Ready first; ties by name, so the choice is stable.
    ready.sort_by_key(|p| (p.ready_since, p.namespace.clone(), p.name.clone()));
    let requested = m
        .requested_at
        .filter(|t| *t > i64::try_from(m.newest_created).unwrap_or(i64::MAX));
    if requested.is_none() {
        ready.retain(|p| !p.captured);
    }
    if requested.is_none() && m.offered {
        return idle("captured", "a snapshot that fits this node is held".into());
    }
    let Some(pod) = ready.first() else {
        return idle(
            "waiting",
            "no Ready pod of the model's snapshot selector on this node".into(),
        );
    };
    let container = match (&m.policy.container, pod.containers.as_slice()) {
        (Some(c), cs) if cs.iter().any(|(n, _)| n == c) => c.clone(),
        (Some(c), _) => {
            return idle(
                "waiting",
                format!("pod {}/{} has no container {c}", pod.namespace, pod.name),
            );
        }
        (None, [(only, _)]) => only.clone(),
        (None, cs) => {
            return idle(
                "waiting",
                format!(
                    "pod {}/{} has {} containers: name one in snapshot.container",
                    pod.namespace,
                    pod.name,
                    cs.len()
                ),
            );
        }
    };
    let capture = |why: String| Due::Capture {
        pod: (*pod).clone(),
        container: container.clone(),
        why,
    };
    if let Some(t) = requested {
        return capture(format!("requested at {t} (coldctl snapshot create)"));
    }
    let Some(period) = m.policy.ready_seconds else {
        return idle(
            "waiting",
            "captures only on request (coldctl snapshot create)".into(),
        );
    };
    let since = pod.ready_since.unwrap_or(now);
    let for_secs = now.saturating_sub(since);
    if for_secs >= i64::from(period) {
        capture(format!(
            "pod {}/{} Ready for {for_secs} s (policy: {period} s)",
            pod.namespace, pod.name
        ))
    } else {
        idle(
            "waiting",
            format!(
                "pod {}/{} Ready for {for_secs} s of {period} s",
                pod.namespace, pod.name
            ),
        )
    }
}

/// The snapshots to evict among one model's `held` (name, created, bytes): the newest `keep`
/// stay while their bytes fit `max_bytes`; the newest always stays (else a node would capture
/// and evict in turn), so a single snapshot larger than the budget is kept and said so.
pub fn evictions(held: &[(String, u64, u64)], keep: usize, max_bytes: Option<u64>) -> Vec<String> {
    let mut newest_first: Vec<&(String, u64, u64)> = held.iter().collect();
    newest_first.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut total = 0u64;
    let mut out = Vec::new();
    for (i, (name, _, bytes)) in newest_first.into_iter().enumerate() {
        total = total.saturating_add(*bytes);
        let fits = max_bytes.is_none_or(|max| total <= max);
        if i > 0 && (i >= keep || !fits) {
            out.push(name.clone());
        }
    }
    out
}

/// What the node reports now for the key's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HereFacts {
    /// GPU product, empty without GPUs.
    pub gpu_product: String,
    /// GPUs on the node.
    pub gpus: u32,
    /// Driver, empty without GPUs.
    pub driver: String,
    /// Kernel release.
    pub kernel: String,
    /// CRIU version containerd would run, empty when unknown.
    pub criu: String,
}

/// Per model: the image digest and model commit a pod of it would run here now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelNow {
    /// The model's image, by digest, as pulled on this node.
    pub image_digest: String,
    /// The weights' commit on this node.
    pub model_commit: String,
}

/// Whether `record` can restore on this node now: the node can restore (`support`), the
/// model is warm here with a digest and commit (`model`), the key fits, and the checkpoint
/// image is in containerd (`image_present`). `Err` names the first reason it cannot.
pub fn restorable(
    record: &Record,
    support: &Result<(), String>,
    here: &HereFacts,
    model: Option<&ModelNow>,
    image_present: bool,
) -> Result<(), String> {
    if record.meta.model.is_empty() {
        return Err("taken by hand: not offered by the policy".into());
    }
    fits(&record.key, support, here, model)?;
    if !image_present {
        return Err(format!(
            "checkpoint image {} is not in containerd",
            record.meta.image.as_deref().unwrap_or("(none)")
        ));
    }
    Ok(())
}

/// Whether a snapshot with `key` fits this node now: the node can restore (`support`), the
/// model is warm here with a digest and commit (`model`), and every field of the key matches.
pub fn fits(
    key: &CompatKey,
    support: &Result<(), String>,
    here: &HereFacts,
    model: Option<&ModelNow>,
) -> Result<(), String> {
    support.clone()?;
    let Some(model) = model else {
        return Err("the model is not warm on this node (no image digest or commit)".into());
    };
    // The node gives a restored container the GPUs it had when it has that many.
    let gpu_count = if here.gpus >= key.gpu_count {
        key.gpu_count
    } else {
        here.gpus
    };
    let node = NodeFacts {
        gpu_product: here.gpu_product.clone(),
        gpu_count,
        driver: here.driver.clone(),
        kernel: here.kernel.clone(),
        model_commit: model.model_commit.clone(),
        criu: here.criu.clone(),
    };
    let now = CompatKey::here(&node, &model.image_digest, &key.runtime);
    key.check(&now).map_err(|e| e.to_string())
}

/// The checkpoint image's name in containerd for `model` and key hash `hash`: local only, so a
/// restoring pod names it with `imagePullPolicy: Never`.
pub fn local_image(model: &str, hash: &str) -> String {
    format!("localhost/coldstart-snapshot/{model}:{hash}")
}

#[cfg(test)]
mod tests;
