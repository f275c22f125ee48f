//! The snapshots port: process snapshots of a running container (CRIU through containerd's CRI
//! `CheckpointContainer`), validated, kept root-only on the node, turned into the checkpoint image
//! containerd 2.1-2.3 restores from, and restored through CRI `CreateContainer`.
//!
//! The rules follow the checked facts in `shared/facts/caches-snapshots-bundle.md`, section B.
//!
//! - [`archive`]: the checkpoint archive read once, as a stream: hostile entries refused, the
//!   three dump files parsed, and the validated tree written as the checkpoint image's layer.
//! - [`key`]: the compatibility key recorded beside a snapshot and checked before a restore.
//! - [`store`]: the root-only snapshot directory; a snapshot appears whole or not at all.
//! - [`capture`]: how an archive is made: CRI on the node's own containerd, or the kubelet API.
//! - [`image`]: the checkpoint image (OCI), imported into containerd's `k8s.io`, pinned.
//! - [`runtime`]: the node's containerd: CRI checkpoint, restore facts, the checked restore.
//! - [`restore`]: whether this node can restore and why not (pure).
//!
//! Part 2 (issue 18) adds the managed policy; this module gives it the steps.

pub mod archive;
pub mod capture;
pub mod criu;
pub mod image;
pub mod key;
pub mod managed;
pub mod policy;
pub mod restore;
pub mod runtime;
pub mod share;
pub mod store;

use std::path::PathBuf;

pub use archive::{ArchiveFacts, Limits};
pub use capture::{
    CaptureRequest, CaptureVia, Captured, Capturer, KubeletClient, KubeletConfig, capture,
};
pub use key::{CompatKey, NodeFacts};
pub use managed::{Managed, TakeRequest, Taken};
pub use restore::{RestoreSupport, restore_support};
pub use runtime::{ContainerdSnapshots, RestoreTarget, RuntimeConfig};
pub use store::{Meta, Snapshot, SnapshotStore};

/// Annotation containerd reads to tell a checkpoint image from an ordinary one.
pub const CHECKPOINT_ANNOTATION: &str = "org.criu.checkpoint.container.name";
/// Prefix of our own annotations on a checkpoint image (the compatibility key's fields).
pub const KEY_ANNOTATION_PREFIX: &str = "dev.coldstart.snapshot.";

/// Errors of the snapshots port.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive holds an entry we refuse, or lacks one we need.
    #[error("refused checkpoint archive: {reason}")]
    Hostile {
        /// Which entry and why, on one line, for people.
        reason: String,
    },
    /// A dump file in the archive does not parse.
    #[error("checkpoint archive: {file} does not parse: {reason}")]
    BadDump {
        /// `spec.dump`, `config.dump` or `status.dump`.
        file: &'static str,
        /// The parser's words.
        reason: String,
    },
    /// A snapshot's compatibility key does not match this node.
    #[error(
        "snapshot does not fit this node: {field} is {recorded:?} in the snapshot, {node:?} here"
    )]
    Mismatch {
        /// The key's field that differs.
        field: &'static str,
        /// The snapshot's value.
        recorded: String,
        /// This node's value.
        node: String,
    },
    /// This node cannot restore a checkpoint, and why.
    #[error("cannot restore on this node: {reason}")]
    CannotRestore {
        /// Why, on one line, for people.
        reason: String,
    },
    /// A name (snapshot, container, pod) that cannot name a snapshot or a request.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was given: `snapshot name`, `pod`, ...
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The kubelet API refused or failed the checkpoint.
    #[error("kubelet checkpoint failed: {reason}")]
    Kubelet {
        /// The status and body, or the transport error, on one line.
        reason: String,
    },
    /// A containerd or CRI call failed.
    #[error("containerd {op} failed: {reason}")]
    Runtime {
        /// The call.
        op: &'static str,
        /// containerd's words, on one line.
        reason: String,
    },
    /// A filesystem step failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A careful filesystem step failed.
    #[error(transparent)]
    Fs(#[from] crate::fsx::Error),
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn hostile(reason: impl Into<String>) -> Error {
        Error::Hostile {
            reason: reason.into(),
        }
    }

    /// Stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Hostile { .. } => "hostile_archive",
            Error::BadDump { .. } => "bad_dump",
            Error::Mismatch { .. } => "key_mismatch",
            Error::CannotRestore { .. } => "cannot_restore",
            Error::Invalid { .. } => "invalid",
            Error::Kubelet { .. } => "kubelet",
            Error::Runtime { .. } => "runtime",
            Error::Io { .. } => "io",
            Error::Fs(e) => e.metric_label(),
        }
    }
}

/// Keeps the first line of a message, cut to 300 characters.
pub(crate) fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.chars().take(300).collect()
}
