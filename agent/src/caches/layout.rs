//! Where compile caches live on the node, and the environment a pod gets.
//!
//! ```text
//! <cache root>/compile/
//!   scopes/<scope>/            the tree pods write (owned by the pods' uid/gid, 0775)
//!     vllm/ triton/ inductor/ flashinfer/ cuda/ tmp/
//!   models/<model> -> ../scopes/<scope>   the stable path pods mount (same on every node)
//!   state/<scope>/             ours, never mounted: key.json, used.json, manifests/<gen>.json
//!   state/leases.json          retention leases
//! ```
//!
//! Our state sits beside the scopes, not inside them: a pod can write anything in its scope, so
//! nothing we trust (manifests, last use, leases) may live there.

use std::path::{Path, PathBuf};

/// Directory under the cache root that holds everything of this port.
pub const COMPILE_DIR: &str = "compile";
/// Where pods mount their model's link unless the policy says otherwise.
pub const DEFAULT_MOUNT_PATH: &str = "/coldstart/compile-cache";

/// Subdirectory for vLLM's own cache root (`VLLM_CACHE_ROOT`): `torch_compile_cache/`,
/// `deep_gemm/` (vLLM points `DG_JIT_CACHE_DIR` there when unset) and
/// `flashinfer_autotune_cache/` land under it (facts A, "Other caches vLLM 0.33 writes under
/// its root").
pub const VLLM_DIR: &str = "vllm";
/// Subdirectory for `TRITON_CACHE_DIR`. vLLM's AOT path does not set it, so without it vLLM's
/// own Triton kernels go to `~/.triton/cache` (facts A, "Triton directory").
pub const TRITON_DIR: &str = "triton";
/// Subdirectory for `TORCHINDUCTOR_CACHE_DIR`: Inductor outside vLLM (vLLM overrides it with
/// `<aot hash>/inductor_cache` on its AOT path; facts A, "Inductor writes after load").
pub const INDUCTOR_DIR: &str = "inductor";
/// Subdirectory for `FLASHINFER_WORKSPACE_BASE` (FlashInfer 0.7.2 has no `*_CACHE_DIR`; JIT ops
/// go to `$BASE/.cache/flashinfer/<version>/<archs>/`; facts A, "FlashInfer 0.7.2").
pub const FLASHINFER_DIR: &str = "flashinfer";
/// Subdirectory for `CUDA_CACHE_PATH`, the driver's JIT cache (facts A, "CUDA driver JIT").
pub const CUDA_DIR: &str = "cuda";
/// Subdirectory for `TMPDIR`. Torch 2.14 keeps Inductor's precompiled headers under
/// `<TMPDIR>/torchinductor_<user>/precompiled_headers` whatever `TORCHINDUCTOR_CACHE_DIR` says
/// (our spike, `tests/torch/compile_probe.py`: a 117 MB `.gch` rebuilt by every process,
/// cache hit or not), and the facts list `/tmp/torchinductor_*` among the roots vLLM's snapshot
/// feature expects a process to hold (facts A, "CUDA graphs", vllm/snapshot/runtime.py) and
/// Dynamo Snapshot mounts `/tmp/torchinductor_root` (facts A, "Prior art"). So TMPDIR belongs
/// to the scope, but only its `torchinductor_*` directories are cache: the rest is the pod's
/// scratch, never sealed and left out of the quiet rule (see [`super::walk`]).
pub const TMP_DIR: &str = "tmp";
/// Every subdirectory a scope is created with, in the order of [`pod_env`].
pub const SCOPE_SUBDIRS: [&str; 6] = [
    VLLM_DIR,
    TRITON_DIR,
    INDUCTOR_DIR,
    FLASHINFER_DIR,
    CUDA_DIR,
    TMP_DIR,
];

/// The uid and gid that own a scope: the vLLM image's user unless the ColdModel names another.
/// hostPath volumes ignore `fsGroup`, so the agent must set ownership itself (issue 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One environment variable of a pod.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Value, as the pod sees it.
    pub value: String,
}

/// The volume and mount a pod of a model needs: `host_path` (the model's link) mounted at
/// `mount_path` (the same on every node), plus [`pod_env`] of the mount path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodMount {
    /// hostPath volume source: the per-model link on the node.
    pub host_path: PathBuf,
    /// Where the pod mounts it.
    pub mount_path: PathBuf,
    /// The variables that point the pod's compilers into the mount.
    pub env: Vec<EnvVar>,
}

/// The variables of [`pod_env`], in order: one per entry of [`SCOPE_SUBDIRS`].
pub const POD_ENV_NAMES: [&str; 6] = [
    "VLLM_CACHE_ROOT",
    "TRITON_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "FLASHINFER_WORKSPACE_BASE",
    "CUDA_CACHE_PATH",
    "TMPDIR",
];

/// The environment that points a pod's compilers into its scope, mounted at `mount_path`:
/// `VLLM_CACHE_ROOT`, `TRITON_CACHE_DIR`, `TORCHINDUCTOR_CACHE_DIR`, `FLASHINFER_WORKSPACE_BASE`,
/// `CUDA_CACHE_PATH` and `TMPDIR`. Paths are as the pod sees them. `DG_JIT_CACHE_DIR` is left
/// to vLLM's default under its root; `CUDA_GRAPHS_CACHE_DIR` is not a vLLM variable and CUDA
/// graphs are captured at every start (facts A, "CUDA graphs").
pub fn pod_env(mount_path: &Path) -> Vec<EnvVar> {
    POD_ENV_NAMES
        .iter()
        .zip(SCOPE_SUBDIRS)
        .map(|(name, dir)| EnvVar {
            name: name.to_string(),
            value: mount_path.join(dir).to_string_lossy().into_owned(),
        })
        .collect()
}

/// The compile-cache part of a node's cache root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRoot {
    compile: PathBuf,
}

impl CacheRoot {
    /// The layout under `<cache_root>/compile`. Creates nothing.
    pub fn new(cache_root: &Path) -> CacheRoot {
        CacheRoot {
            compile: cache_root.join(COMPILE_DIR),
        }
    }

    /// `<cache root>/compile`.
    pub fn compile_dir(&self) -> &Path {
        &self.compile
    }

    /// The directory of every scope's tree.
    pub fn scopes_dir(&self) -> PathBuf {
        self.compile.join("scopes")
    }

    /// The directory of the per-model links.
    pub fn models_dir(&self) -> PathBuf {
        self.compile.join("models")
    }

    /// The agent's own state (never mounted by a pod).
    pub fn state_dir(&self) -> PathBuf {
        self.compile.join("state")
    }

    /// The tree of the scope named `scope` (its directory name).
    pub fn scope_dir(&self, scope: &str) -> PathBuf {
        self.scopes_dir().join(scope)
    }

    /// The agent's state for the scope named `scope`.
    pub fn scope_state_dir(&self, scope: &str) -> PathBuf {
        self.state_dir().join(scope)
    }

    /// The stable path of `model` that pods mount: a link to the node's current scope.
    pub fn model_link(&self, model: &str) -> PathBuf {
        self.models_dir().join(model)
    }

    /// The volume, mount and env for the pods of `model`, mounted at `mount_path`.
    pub fn pod_mount(&self, model: &str, mount_path: &Path) -> PodMount {
        PodMount {
            host_path: self.model_link(model),
            mount_path: mount_path.to_path_buf(),
            env: pod_env(mount_path),
        }
    }
}
