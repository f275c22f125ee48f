//! The weights port: syncing a Hugging Face model repository to local NVMe, verified, in the
//! Hub cache layout that `huggingface_hub` and vLLM read offline (`HF_HUB_OFFLINE=1`).
//!
//! - [`hub`]: the Hub protocol (revision, tree listing, resolve) over HTTP.
//! - [`filter`]: which files vLLM loads (the default selection) and include/exclude globs.
//! - [`cache`]: the cache layout on disk: blobs, trees file, snapshot, refs; crash-safe publish,
//!   verification and fingerprints; our own state lives in a sibling directory.
//! - [`transfer`]: the download engine: parallel ranges, in-order hashing, resume journal.
//! - [`sync`]: one model revision end to end.
//! - [`budget`]: the cache's byte budget and the LRU eviction planner.
//! - [`watch`]: re-verification of what changes underneath the cache (inotify).
//! - [`Weights`]: the port the orchestration drives (sync with progress, inventory, evict,
//!   verify); [`HubWeights`] is the real one, [`fake::Fake`] the stand-in with failure knobs.

pub mod budget;
pub mod cache;
pub mod fake;
pub mod filter;
pub mod hub;
pub mod names;
mod port;
pub mod sync;
pub mod transfer;
pub mod watch;

use std::path::PathBuf;

pub use names::{RepoId, is_commit_sha, safe_relative_path, validate_revision};
pub use port::{HubWeights, SyncJob, SyncProgress, SyncSettings, Synced, Weights};

/// One file of a repository's tree, as the Hub's tree listing reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeEntry {
    /// Path inside the repository (`/`-separated), validated by [`safe_relative_path`].
    pub path: String,
    /// Size in bytes (of the LFS object for LFS files).
    pub size: u64,
    /// Git blob id (sha1 of `blob <size>\0<content>` for plain files; of the pointer for LFS).
    pub oid: String,
    /// LFS object, for files stored in LFS/Xet.
    pub lfs: Option<Lfs>,
}

/// The LFS part of a tree entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lfs {
    /// sha256 of the content, hex.
    pub sha256: String,
    /// Size of the content.
    pub size: u64,
}

impl TreeEntry {
    /// The blob name in the cache (`blobs/<etag>`): the LFS sha256, else the git blob sha1.
    pub fn etag(&self) -> &str {
        match &self.lfs {
            Some(l) => &l.sha256,
            None => &self.oid,
        }
    }

    /// Size of the content that lands on disk.
    pub fn content_size(&self) -> u64 {
        self.lfs.as_ref().map_or(self.size, |l| l.size)
    }
}

/// How a file's content is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    /// sha256 of the content (LFS/Xet files), hex.
    Sha256(String),
    /// git blob sha1 (`sha1("blob <size>\0" + content)`), hex.
    GitSha1(String),
}

impl TreeEntry {
    /// The digest the content must have.
    pub fn digest(&self) -> Digest {
        match &self.lfs {
            Some(l) => Digest::Sha256(l.sha256.clone()),
            None => Digest::GitSha1(self.oid.clone()),
        }
    }
}

/// Errors of the weights port.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model id is not `org/name` (or `name`) in the Hub's grammar.
    #[error("invalid model id {id:?}: {reason}")]
    InvalidRepoId {
        /// What was given.
        id: String,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// The revision (branch, tag or commit) given is not one the Hub could name.
    #[error("invalid revision {revision:?}: {reason}")]
    InvalidRevision {
        /// What was given (cut to 100 characters).
        revision: String,
        /// Why.
        reason: String,
    },
    /// A pinned commit resolved to another commit: the server answered for something else.
    #[error(
        "revision {revision} resolved to commit {resolved}: the hub did not answer for the pinned commit"
    )]
    CommitMismatch {
        /// The pinned commit asked for.
        revision: String,
        /// What the server answered.
        resolved: String,
    },
    /// A file name in the tree would escape the snapshot or is otherwise unusable.
    #[error("refusing file name {path:?} from the hub: {reason}")]
    HostileName {
        /// The name as the Hub sent it (escaped when printed).
        path: String,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// The Hub says the repository or revision does not exist.
    #[error("{what} not found on the hub: {reason}")]
    NotFound {
        /// Repo, revision or file.
        what: String,
        /// What the server said.
        reason: String,
    },
    /// The Hub refused the token (or its absence).
    #[error("hub refused access to {what} (status {status}): check the token")]
    Unauthorized {
        /// Repo or file.
        what: String,
        /// HTTP status.
        status: u16,
    },
    /// The Hub cannot be reached or keeps failing.
    #[error("hub request {url} failed: {reason}")]
    Http {
        /// URL (never with credentials).
        url: String,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// The server sent nothing for the read timeout while a body was being read.
    #[error("{what}: the server sent nothing for {seconds} s")]
    ReadTimeout {
        /// The file or listing being read.
        what: String,
        /// The read timeout.
        seconds: f64,
    },
    /// A connection delivered less than the minimum rate over its window, on every attempt.
    #[error(
        "{what}: the server sent {bytes} bytes in {seconds} s, under the minimum of {floor} bytes per {seconds} s"
    )]
    TooSlow {
        /// The file being read.
        what: String,
        /// Bytes received in the window.
        bytes: u64,
        /// The floor for one window.
        floor: u64,
        /// The window.
        seconds: f64,
    },
    /// The tree listing is larger than its cap.
    #[error("tree listing of {what} is larger than the cap of {limit}")]
    TreeTooLarge {
        /// `org/name@commit`.
        what: String,
        /// The cap that was hit (`1000000 entries`).
        limit: String,
    },
    /// Downloaded content does not match its digest or size.
    #[error("{path}: content does not match the hub's {kind} (expected {expected}, got {actual})")]
    Mismatch {
        /// File path in the repo.
        path: String,
        /// `sha256`, `git sha1` or `size`.
        kind: &'static str,
        /// Expected value.
        expected: String,
        /// Actual value.
        actual: String,
    },
    /// Not enough disk space for what must be downloaded.
    #[error("not enough disk space in {path}: need {needed} bytes, {available} available")]
    DiskFull {
        /// Directory.
        path: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The cache would exceed its byte budget even with every unwanted snapshot evicted.
    #[error(
        "cache budget {} ({budget} bytes) cannot fit this sync: {} ({need} bytes) to download on top of {} ({remaining} bytes) that must stay; kept: {kept}",
        budget::format_size(*budget), budget::format_size(*need), budget::format_size(*remaining)
    )]
    OverBudget {
        /// The budget in bytes.
        budget: u64,
        /// Bytes still to download.
        need: u64,
        /// Bytes in use after evicting every snapshot that may go.
        remaining: u64,
        /// The wanted snapshots kept (`org/name@commit`, comma-separated), or `nothing`.
        kept: String,
    },
    /// A size does not parse.
    #[error("invalid size {value:?}: {reason}")]
    InvalidSize {
        /// What was given (cut to 64 characters).
        value: String,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// The cache holds something we did not put there (a symlink where a directory should
    /// be, a file outside the layout).
    #[error("unsafe cache entry {path}: {reason}")]
    UnsafeCache {
        /// The entry in the cache that is not as we wrote it.
        path: PathBuf,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// A filesystem step on the cache or the agent's state failed ([`crate::fsx`]).
    #[error(transparent)]
    Fs(#[from] crate::fsx::Error),
    /// A glob pattern does not parse.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// The Hub answered something we cannot use.
    #[error("unexpected hub answer from {url}: {reason}")]
    Protocol {
        /// The request's URL (never with credentials).
        url: String,
        /// What is wrong, on one line, for people.
        reason: String,
    },
}

impl Error {
    /// Stable label for metrics and JSON output.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidRepoId { .. } => "invalid_model_id",
            Error::InvalidRevision { .. } => "invalid_revision",
            Error::CommitMismatch { .. } => "commit_mismatch",
            Error::HostileName { .. } => "hostile_name",
            Error::NotFound { .. } => "not_found",
            Error::Unauthorized { .. } => "unauthorized",
            Error::Http { .. } => "http",
            Error::ReadTimeout { .. } => "read_timeout",
            Error::TooSlow { .. } => "too_slow",
            Error::TreeTooLarge { .. } => "tree_too_large",
            Error::Mismatch { .. } => "mismatch",
            Error::DiskFull { .. } => "disk_full",
            Error::OverBudget { .. } => "over_budget",
            Error::InvalidSize { .. } => "invalid_size",
            Error::UnsafeCache { .. } => "unsafe_cache",
            Error::Fs(crate::fsx::Error::Unsafe { .. }) => "unsafe_cache",
            Error::Fs(e) => e.metric_label(),
            Error::Pattern { .. } => "pattern",
            Error::Protocol { .. } => "protocol",
        }
    }

    /// A filesystem operation `op` on `path` failed ([`Error::Fs`]).
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Fs(crate::fsx::Error::io(op, path, source))
    }
}
