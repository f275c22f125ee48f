//! The caches port: compile and JIT caches on the node (vLLM's `torch_compile_cache`, Triton,
//! Inductor, FlashInfer JIT, the CUDA driver's JIT cache), given to pods as directories they
//! write, sealed when complete, and kept under a byte budget.
//!
//! The rules follow the checked facts in `shared/facts/caches-snapshots-bundle.md`, section A
//! ("the facts" below); each module quotes the bullet a rule comes from.
//!
//! - [`layout`]: where everything lives under `<cache root>/compile/`, and the env a pod gets.
//! - [`scope`]: a scope per (ColdModel, image digest, GPU product name): its key, its
//!   directory (owned by the pods' uid/gid) and the stable per-model link pods mount.
//! - [`walk`]: a walk of a pod-written tree that follows no symlink and opens no special file,
//!   and the rule of what in it is cache, temporary or scratch.
//! - [`quiet`]: the quiet rule (file count, bytes and newest mtime unchanged for a period).
//! - [`seal`]: sealed manifests, one immutable generation at a time.
//! - [`miss`]: several hash directories for one scope (the cache is inert) and why.
//! - [`gc`]: the byte budget over all scopes, least recently used first.
//! - [`leases`]: retention leases that keep files (or whole scopes) from GC.
//! - [`inuse`]: which scopes a process on this node holds open (a scan of `/proc`).
//!
//! Not wired yet: the daemon's loop decides when a scope is in use, quiet and sealed, and
//! reports status and metrics; this module gives it the steps.

pub mod artifact;
pub mod gc;
pub mod inuse;
pub mod keeper;
pub mod layout;
pub mod leases;
pub mod miss;
mod pycheck;
pub mod quiet;
pub mod runner;
pub mod scope;
pub mod seal;
pub mod ship;
pub mod shipper;
pub mod walk;

use std::path::PathBuf;

pub use gc::{GcOutcome, GcPlan, Kept, KeptReason, ScopeUsage};
pub use layout::{CacheRoot, EnvVar, Owner, PodMount, pod_env};
pub use leases::{Lease, LeaseTarget, Leases};
pub use miss::{FactorDiff, HashDir, HashTree, MissReport};
pub use quiet::{Observed, TreeStats, quiet};
pub use scope::{Scope, ScopeKey};
pub use seal::{Excluded, ExcludedReason, FileEntry, Manifest, SealOutcome};

/// Errors of the caches port.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A part of a scope key cannot name a scope (model name, image digest, GPU product).
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidKey {
        /// Which part: `model`, `image digest` or `gpu product`.
        field: &'static str,
        /// What was given (cut to 100 characters).
        value: String,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// A state file of ours (scope key, last use, leases, manifest) does not parse.
    #[error("corrupt state file {}: {reason}", path.display())]
    BadState {
        /// The file.
        path: PathBuf,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// The scope named has no directory on this node.
    #[error("no compile-cache scope {scope:?} on this node")]
    UnknownScope {
        /// The scope's directory name.
        scope: String,
    },
    /// A lease names something that cannot be leased (an empty id, a path outside the scope).
    #[error("invalid lease {id:?}: {reason}")]
    InvalidLease {
        /// The lease id.
        id: String,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// A compile-cache artifact from a registry does not match what it claims, or not this
    /// node's scope: refused, nothing of it kept.
    #[error("compile-cache artifact refused: {reason}")]
    BadArtifact {
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// A sealed file changed before it could be exported.
    #[error("{}: {reason}", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// What changed.
        reason: String,
    },
    /// An import found the scope written (a pod started first): its work is kept.
    #[error("scope {scope} already holds {entries} entries; import skipped")]
    ScopeNotEmpty {
        /// The scope's directory name.
        scope: String,
        /// Entries found besides the empty subdirectories.
        entries: u64,
    },
    /// The registry step of an export or import failed.
    #[error(transparent)]
    Registry(#[from] crate::images::Error),
    /// A filesystem step failed, or met something we did not put there ([`crate::fsx`]).
    #[error(transparent)]
    Fs(#[from] crate::fsx::Error),
    /// A blocking task of the port did not finish (panicked or was cancelled).
    #[error("caches task failed: {reason}")]
    Task {
        /// What happened, on one line.
        reason: String,
    },
}

impl Error {
    /// Stable label for metrics and JSON output.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidKey { .. } => "invalid_key",
            Error::BadState { .. } => "bad_state",
            Error::UnknownScope { .. } => "unknown_scope",
            Error::InvalidLease { .. } => "invalid_lease",
            Error::BadArtifact { .. } => "bad_artifact",
            Error::Changed { .. } => "changed",
            Error::ScopeNotEmpty { .. } => "scope_not_empty",
            Error::Registry(e) => e.metric_label(),
            Error::Fs(e) => e.metric_label(),
            Error::Task { .. } => "task",
        }
    }

    /// A filesystem operation `op` on `path` failed ([`Error::Fs`]).
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Fs(crate::fsx::Error::io(op, path, source))
    }

    /// A state file at `path` does not parse.
    pub(crate) fn bad_state(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::BadState {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Nanoseconds since the Unix epoch, the unit of every timestamp this port stores (file mtimes
/// included). Callers pass `now` in; nothing here reads the clock.
pub type UnixNanos = i64;

#[cfg(test)]
mod tests_artifact;
#[cfg(test)]
mod tests_gc;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
mod tests_inuse;
#[cfg(test)]
mod tests_miss;
#[cfg(test)]
mod tests_scope;
#[cfg(test)]
mod tests_support;
#[cfg(test)]
mod tests_writer;
