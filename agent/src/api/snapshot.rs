//! The managed process snapshots of a ColdModel: the policy (which pod, when, how many to keep,
//! optional quiesce hooks and registry sharing), the node label that marks where a pod may
//! restore, and what a ColdNode reports per snapshot.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Prefix of the node label `coldstart.dev/snapshot.<model>=<key hash>`: set only while the
/// node holds a snapshot of the model that fits it and its runtime can restore.
pub const SNAPSHOT_LABEL_PREFIX: &str = "coldstart.dev/snapshot.";

/// Annotation on a ColdModel that asks its nodes for a snapshot now (`coldctl snapshot
/// create`): an RFC 3339 time; a node captures once per request newer than its newest
/// snapshot of the model.
pub const SNAPSHOT_REQUEST_ANNOTATION: &str = "coldstart.dev/snapshot-requested-at";

/// Longest model name the snapshot label can carry (`snapshot.<name>` within 63 characters).
pub const MAX_SNAPSHOT_MODEL_NAME: usize = 63 - "snapshot.".len();

/// The snapshot label's key for model `name`, or `None` when the name is too long for it.
pub fn snapshot_label_key(name: &str) -> Option<String> {
    (!name.is_empty() && name.len() <= MAX_SNAPSHOT_MODEL_NAME)
        .then(|| format!("{SNAPSHOT_LABEL_PREFIX}{name}"))
}

/// Snapshot policy: when the agent checkpoints a Ready pod of the model on its node, and how
/// many snapshots it keeps. Off unless `enabled`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPolicy {
    /// Take process snapshots and offer restores. Defaults to false (needs containerd 2.1-2.3
    /// with restore enabled, CRIU, and for GPU processes cuda-checkpoint and the same GPU
    /// model and count on the restoring node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Pods to capture, among those on the node. Defaults to `coldstart.dev/model=<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Container to capture. Defaults to the pod's only container (a pod with several must
    /// name one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Capture once a selected pod has been Ready this long. Unset: only on request
    /// (`coldctl snapshot create`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_seconds: Option<u32>,
    /// HTTP calls around the capture (off unless set). vLLM's `/sleep` and `/wake_up` exist
    /// only with `VLLM_SERVER_DEV_MODE=1` and `--enable-sleep-mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<QuiesceHooks>,
    /// Snapshots of the model kept on a node, newest first. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub keep: Option<u32>,
    /// Bytes the model's snapshots may take on a node (`40Gi`); the oldest go first. Unset:
    /// no byte limit beyond `keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
    /// Seconds the checkpoint may take. Defaults to 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// OCI repository (no tag) to push checkpoint images to, for nodes of the same key. Off
    /// by default: a checkpoint holds the process's memory, tokens and keys included, so
    /// anyone who can pull it can read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

impl SnapshotPolicy {
    /// Whether snapshots are on.
    pub fn is_enabled(&self) -> bool {
        self.enabled == Some(true)
    }

    /// `keep`, defaulted and bounded to 1..=16.
    pub fn keep(&self) -> usize {
        self.keep.unwrap_or(1).clamp(1, 16) as usize
    }

    /// `timeoutSeconds`, defaulted.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.timeout_seconds.unwrap_or(600).max(1)))
    }
}

/// HTTP hooks called on the pod (its IP) around a capture.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuiesceHooks {
    /// The server's port in the pod.
    pub port: u16,
    /// `POST` before the checkpoint. Defaults to `/sleep?level=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// `POST` after the checkpoint, also when it failed. Defaults to `/wake_up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Seconds each call may take. Defaults to 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

/// One snapshot held on a node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// The snapshot's name on the node.
    pub name: String,
    /// The ColdModel it belongs to (empty for one taken by hand).
    #[serde(default)]
    pub model: String,
    /// The container it was taken of (the restoring container's name).
    #[serde(default)]
    pub container: String,
    /// Hash of the compatibility key: the value of the node label while it is offered.
    pub key_hash: String,
    /// The compatibility key's fields (image digest, GPU product and count, driver, kernel,
    /// CRIU, model commit, runtime).
    #[serde(default)]
    pub key: BTreeMap<String, String>,
    /// The checkpoint image in containerd (`k8s.io`) a restoring pod names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where it was pushed, when the policy shares snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
    /// Bytes on disk.
    #[serde(default)]
    pub bytes: u64,
    /// When it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Time>,
    /// A pod can restore from it on this node now.
    #[serde(default)]
    pub restorable: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The capture side of a model's policy on a node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotCapture {
    /// The ColdModel.
    pub model: String,
    /// `waiting`, `capturing`, `captured`, `failed` or `off`.
    pub state: String,
    /// Detail for people (which pod, why not, the error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}
