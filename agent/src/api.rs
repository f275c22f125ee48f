//! The Kubernetes API of coldstart (group `coldstart.dev`, version `v1alpha1`), shared by the
//! agent and `coldctl`: the `ColdModel` and `ColdNode` custom resources, the names the agent
//! stamps on nodes (taint, labels, conditions), and the rule that names a `ColdModel` after its
//! Hub repository.
//!
//! Both kinds are cluster-scoped. A `ColdModel` says what to keep warm and where; each agent
//! reports on its own node only, in the `ColdNode` named after that node, so no agent writes an
//! object another node also writes. `coldctl` rolls the per-model view up from the `ColdNode`s.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod crds;
mod names;
mod selector;
mod snapshot;
#[cfg(test)]
mod tests;

pub use crds::{CrdError, CrdFile, crd_files, crds};
pub use names::{MAX_MODEL_NAME, model_label_key, model_name, model_name_problem};
pub use selector::{SelectorError, matches, parse_selector};
pub use snapshot::{
    QuiesceHooks, SNAPSHOT_LABEL_PREFIX, SNAPSHOT_REQUEST_ANNOTATION, SnapshotCapture,
    SnapshotPolicy, SnapshotStatus, snapshot_label_key,
};

/// API group.
pub const GROUP: &str = "coldstart.dev";
/// API version.
pub const VERSION: &str = "v1alpha1";
/// Key of the startup taint (`coldstart.dev/warming=true:NoSchedule`) the agent removes once the
/// node is warm; declared in the Karpenter NodePool's `startupTaints`.
pub const WARMING_TAINT_KEY: &str = "coldstart.dev/warming";
/// Value of the startup taint.
pub const WARMING_TAINT_VALUE: &str = "true";
/// Prefix of the per-model node label `coldstart.dev/model.<name>=ready`.
pub const MODEL_LABEL_PREFIX: &str = "coldstart.dev/model.";
/// Value of the per-model node label once the model is warm on the node.
pub const MODEL_LABEL_READY: &str = "ready";
/// Label on a model's pods naming the ColdModel they serve (`coldstart.dev/model: <name>`):
/// the agent counts such pods as users of the model's compile caches.
pub const POD_MODEL_LABEL: &str = "coldstart.dev/model";
/// Node condition: the node's GPUs are healthy.
pub const CONDITION_GPU_HEALTHY: &str = "ColdstartGPUHealthy";
/// Node condition: every model selected for the node is warm.
pub const CONDITION_MODELS_WARM: &str = "ColdstartModelsWarm";

/// A node condition the agent owns, without timestamps (the node surface keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// [`CONDITION_MODELS_WARM`] or [`CONDITION_GPU_HEALTHY`].
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// A ColdModel's name (empty only for an object the API server never stored).
pub fn name_of(m: &ColdModel) -> &str {
    m.metadata.name.as_deref().unwrap_or_default()
}

/// What to keep warm: a Hub model at a revision, the image that serves it, and the nodes.
// Several printcolumn(..) share `type_ = "string"`: not a duplicate, one per column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "coldstart.dev",
    version = "v1alpha1",
    kind = "ColdModel",
    plural = "coldmodels",
    singular = "coldmodel",
    category = "coldstart",
    doc = "A model to keep warm on the nodes its selector picks: weights from the Hub and the image that serves them.",
    printcolumn(name = "Repo", type_ = "string", json_path = ".spec.repo"),
    printcolumn(name = "Revision", type_ = "string", json_path = ".spec.revision"),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ColdModelSpec {
    /// Hub repository id (`org/name`). The object's name derives from it (see [`model_name`]).
    pub repo: String,
    /// Branch, tag or commit; a commit pins the weights. Defaults to `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Globs of repository files to fetch; empty means the files vLLM loads (configs, tokenizer,
    /// safetensors weights: the same default as `coldctl warm --here`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Globs of repository files to skip, applied after `include`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Secret holding the Hub token, in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// Image that serves the model, pre-pulled into containerd (`vllm/vllm-openai:v0.11.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `kubernetes.io/dockerconfigjson` secret for the image, in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret_ref: Option<SecretRef>,
    /// Nodes to keep warm (standard label selector); absent means every node with an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Compile caches (vLLM, Triton, Inductor, CUDA JIT) kept on the node's NVMe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_cache: Option<CompileCachePolicy>,
    /// Process snapshots (CRIU + cuda-checkpoint) of a warmed-up server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotPolicy>,
}

/// A secret by name, in the agent's namespace (agents may read secrets nowhere else).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
}

/// One key of a secret in the agent's namespace.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key in the secret's data; defaults to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Compile-cache policy: a scope per (model, image digest, GPU product) under
/// `<cache root>/compile/`, mounted by the model's pods through a stable per-model path.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompileCachePolicy {
    /// Keep compile caches for this model on the node. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// User id that owns the scope's directories: the uid the model's pods run as (hostPath
    /// volumes ignore `fsGroup`). Defaults to 0, the vLLM image's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group id that owns them (directories are group-writable). Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Seconds the scope's tree must stay unchanged (files, bytes, newest mtime) after a pod
    /// using it is Ready before it is sealed. Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_period_seconds: Option<u32>,
    /// Where pods mount the cache (the same on every node). Defaults to
    /// `/coldstart/compile-cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// OCI repository (`registry.example.com/team/compile-caches`, no tag) that carries sealed
    /// scopes between nodes: a node of the same scope imports from it before its first pod; a
    /// node pushes when the scope's tag is absent, or a newer generation after its pods had
    /// cache misses. Credentials as for images (the agent's pull secret). Unset: caches stay on
    /// their node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// One per node, named after it: what the node's agent reports. Only that agent writes it.
#[derive(
    CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema,
)]
#[kube(
    group = "coldstart.dev",
    version = "v1alpha1",
    kind = "ColdNode",
    plural = "coldnodes",
    singular = "coldnode",
    category = "coldstart",
    status = "ColdNodeStatus",
    doc = "What one node's agent reports: per model, the image and weights parts, and GPU health. Named after the node.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ColdNodeSpec {}

/// Overall state of a model on a node, or of the whole node.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
pub enum Phase {
    /// Nothing done yet.
    #[default]
    Pending,
    /// Work in progress.
    Warming,
    /// Everything selected is present and verified.
    Ready,
    /// Stopped on an error; `reason` says which.
    Failed,
}

/// State of one part (image or weights) of a model on a node.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
pub enum PartPhase {
    /// Not started.
    #[default]
    Pending,
    /// Image being pulled.
    Pulling,
    /// Weights being downloaded.
    Syncing,
    /// Content being checked against its digests.
    Verifying,
    /// Present and verified.
    Ready,
    /// Stopped on an error.
    Failed,
}

/// What a node's agent reports.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColdNodeStatus {
    /// Overall phase: Ready when every selected model is Ready.
    #[serde(default)]
    pub phase: Phase,
    /// One entry per model selected for this node, keyed by the ColdModel's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub models: Vec<ModelStatus>,
    /// ColdModels that select this node but cannot be served (their reason says why, e.g. a
    /// name that cannot make the node label), keyed by name. They do not hold the taint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub skipped: Vec<SkippedModel>,
    /// Compile-cache scopes on this node, keyed by scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["scope"]))]
    pub compile_caches: Vec<CompileCacheStatus>,
    /// Process snapshots held on this node, keyed by name, and whether each can restore here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub snapshots: Vec<SnapshotStatus>,
    /// Per model with a snapshot policy: the last capture, what runs, or why none is taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["model"]))]
    pub snapshot_captures: Vec<SnapshotCapture>,
    /// GPU inventory and health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuStatus>,
    /// When the agent last wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
}

/// One compile-cache scope on a node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompileCacheStatus {
    /// The scope's directory name under `<cache root>/compile/scopes/`.
    pub scope: String,
    /// The ColdModel it belongs to.
    pub model: String,
    /// The image digest of the scope's key.
    pub image_digest: String,
    /// The GPU product name of the scope's key.
    pub gpu_product: String,
    /// The model's pods mount this scope now (the per-model path points at it).
    #[serde(default)]
    pub current: bool,
    /// A pod using it is running.
    #[serde(default)]
    pub in_use: bool,
    /// Newest sealed generation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Bytes in the scope's tree.
    #[serde(default)]
    pub bytes: u64,
    /// Files in the scope's tree.
    #[serde(default)]
    pub files: u64,
    /// Files and bytes written since the newest seal are sealed (false while pods compile).
    #[serde(default)]
    pub sealed: bool,
    /// When a pod using it last became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Time>,
    /// Set when pods keep compiling into new hash directories (the cache is inert: their
    /// arguments or environment differ): the differing directories and factors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inert: Option<String>,
    /// The registry artifact this scope was imported from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<CacheArtifact>,
    /// The artifact this node pushed for the scope. Other nodes import only digests that a
    /// node recorded here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported: Option<CacheArtifact>,
    /// What the registry transfer is doing, or why it last failed (`importing ...`, `import
    /// refused: ...`). Imports never hold the startup taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<String>,
}

/// A compile-cache artifact in a registry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheArtifact {
    /// `registry/repository:tag` (the tag is the scope's name).
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    /// The generation it carries (the sealing node's numbering).
    pub generation: u64,
    /// Bytes of its files, unpacked.
    #[serde(default)]
    pub bytes: u64,
    /// Bytes moved (the compressed layer and config).
    #[serde(default)]
    pub transferred_bytes: u64,
    /// When it was pushed or imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// A ColdModel the agent does not serve, and why.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
pub struct SkippedModel {
    /// The ColdModel's name.
    pub name: String,
    /// Why it is skipped.
    pub reason: String,
}

/// One model on one node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// The ColdModel's name.
    pub name: String,
    /// Overall phase of the model on this node.
    #[serde(default)]
    pub phase: Phase,
    /// The ColdModel's `metadata.generation` this entry reflects: a client waiting for a
    /// changed spec ignores entries older than the generation it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The image part (absent when the ColdModel names no image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<PartStatus>,
    /// The weights part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PartStatus>,
}

/// Progress of one part.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartStatus {
    /// Phase.
    #[serde(default)]
    pub phase: PartPhase,
    /// What this part resolved to: image digest or weights commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// Bytes present so far.
    #[serde(default)]
    pub bytes_done: u64,
    /// Bytes in all, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Recent transfer rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    /// Machine-readable reason for the phase (an error's metric label when Failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When work on this part last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// GPU inventory and health.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuStatus {
    /// Every device is healthy.
    pub healthy: bool,
    /// Why not, when not; when healthy without GPUs, why (`NVMLNotFound`, `NoGPUExpected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The devices NVML reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<GpuDevice>,
    /// Detail for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// GPUs this node must have (configured, or its nvidia.com/gpu capacity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u32>,
    /// NVIDIA driver version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
}

/// One GPU.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    /// NVML index.
    pub index: u32,
    /// Device UUID.
    pub uuid: String,
    /// Product name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Total memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Healthy by our rules (XID events, ECC, remapped rows).
    pub healthy: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// PCI bus id (`00000000:18:00.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// CUDA compute capability (`9.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    /// Persistence mode on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_mode: Option<bool>,
    /// MIG mode enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_enabled: Option<bool>,
    /// Core temperature when last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<u32>,
}
