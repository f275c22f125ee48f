//! The findings of `coldctl check`: a stable id per kind of problem (README "coldctl check"
//! lists them) and a one-line message.

use serde::Serialize;

/// What kind of problem a finding is: a stable id scripts match on (README "coldctl check").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Id {
    /// The pods carry no `coldstart.dev/model` label naming the ColdModel.
    ModelLabelMissing,
    /// The container's image is not the one the ColdModel pre-pulls.
    ImageMismatch,
    /// The model vLLM serves is not the ColdModel's repo.
    ModelMismatch,
    /// No `--revision`, or one that is not a commit.
    RevisionUnpinned,
    /// A pinned commit other than the one the nodes warmed.
    RevisionMismatch,
    /// `HF_HUB_CACHE` unset, or not the agent's Hub cache mounted there.
    HubCacheMissing,
    /// The Hub cache is mounted writable.
    HubCacheWritable,
    /// `HF_HUB_OFFLINE` is not on.
    HubOfflineUnset,
    /// No compile-cache env and no compile-cache volume.
    CompileCacheMissing,
    /// Compile-cache env, volume or mount differ from `coldctl cache env`.
    CompileCacheDiffers,
    /// No preferred node affinity for `coldstart.dev/model.<name>=ready`.
    ReadyLabelNotPreferred,
    /// The ready label is required: Karpenter then launches nothing.
    ReadyLabelRequired,
    /// No toleration for the GPU taint.
    GpuTolerationMissing,
    /// A toleration of the warming taint lets pods onto cold nodes.
    WarmingTaintTolerated,
    /// `--shutdown-timeout` unset or 0: SIGTERM aborts in-flight requests.
    ShutdownTimeoutZero,
    /// The grace period is shorter than preStop + `--shutdown-timeout`.
    GracePeriodShort,
    /// The startup probe (or the liveness probe, without one) allows less than `--min-startup`.
    StartupProbeShort,
}

impl Id {
    /// The id as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Id::ModelLabelMissing => "model-label-missing",
            Id::ImageMismatch => "image-mismatch",
            Id::ModelMismatch => "model-mismatch",
            Id::RevisionUnpinned => "revision-unpinned",
            Id::RevisionMismatch => "revision-mismatch",
            Id::HubCacheMissing => "hub-cache-missing",
            Id::HubCacheWritable => "hub-cache-writable",
            Id::HubOfflineUnset => "hub-offline-unset",
            Id::CompileCacheMissing => "compile-cache-missing",
            Id::CompileCacheDiffers => "compile-cache-differs",
            Id::ReadyLabelNotPreferred => "ready-label-not-preferred",
            Id::ReadyLabelRequired => "ready-label-required",
            Id::GpuTolerationMissing => "gpu-toleration-missing",
            Id::WarmingTaintTolerated => "warming-taint-tolerated",
            Id::ShutdownTimeoutZero => "shutdown-timeout-zero",
            Id::GracePeriodShort => "grace-period-short",
            Id::StartupProbeShort => "startup-probe-short",
        }
    }
}

/// One thing that will make the pods start cold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Its stable id.
    pub id: Id,
    /// What is wrong and what to do, one line.
    pub message: String,
}

/// A finding of `id` saying `message`.
pub fn finding(id: Id, message: impl Into<String>) -> Finding {
    Finding {
        id,
        message: message.into(),
    }
}
