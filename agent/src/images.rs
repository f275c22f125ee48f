//! The images port: pre-pulling container images into the node's containerd so the kubelet
//! finds them present, unpacked and pinned.
//!
//! The real client ([`ContainerdImages`]) pulls through the CRI `ImageService/PullImage` RPC (the
//! kubelet's own path, so the node's registry configuration applies) and uses the containerd API
//! for version, presence, unpack state, pin labels and progress. [`Fake`] keeps the same state in
//! memory, with failure knobs, for the orchestration's tests.

use std::future::Future;

pub mod auth;
mod containerd;
pub mod fake;
pub mod fetch;
pub mod reference;
pub mod registry;

use std::path::PathBuf;

pub use auth::{DockerConfig, RegistryAuth};
pub use containerd::{ContainerdConfig, ContainerdImages};
pub(crate) use containerd::{channel, clean_version, in_k8s_namespace, version_at_least};
pub use fake::Fake;
pub use fetch::{FetchOptions, FetchOutcome, FetchProgress};
pub use reference::ImageRef;
pub use registry::{Blob, ImageManifest, RegistryClient};

/// Namespace the kubelet's images live in.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// Label that makes the CRI plugin (containerd 1.7.3+) report an image as pinned, which the
/// kubelet's image garbage collector never removes.
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned";
/// Value of [`PINNED_LABEL`] on a pinned image.
pub const PINNED_VALUE: &str = "pinned";
/// Label the CRI plugin puts on images it manages.
pub const MANAGED_LABEL: &str = "io.cri-containerd.image";

/// What the container runtime says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeInfo {
    /// containerd server version, e.g. `1.7.24`.
    pub version: String,
    /// Whether this version's CRI plugin honours the pin label (1.7.3 and later).
    pub honours_pin: bool,
    /// Snapshotter CRI unpacks into (e.g. `overlayfs`).
    pub snapshotter: String,
    /// Directories whose filesystems must hold the image: the content store and the snapshotter
    /// root. Free space is checked on each.
    pub storage_paths: Vec<PathBuf>,
}

/// One layer (or config) blob being transferred, as containerd's ingest status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct BlobProgress {
    /// `sha256:...` digest.
    pub digest: String,
    /// Bytes written so far.
    pub done: u64,
    /// Expected size in bytes.
    pub total: u64,
}

/// Progress of a pull in bytes, per blob and whole.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct PullProgress {
    /// Bytes of the image's blobs present in the content store (complete or in progress).
    pub done: u64,
    /// Total bytes of the image's blobs (manifest sizes), 0 when unknown.
    pub total: u64,
    /// Blobs being written right now.
    pub active: Vec<BlobProgress>,
}

/// What containerd holds of an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageState {
    /// Image id (digest of the config), as CRI reports it.
    pub id: String,
    /// Repo tags CRI knows the image by.
    pub repo_tags: Vec<String>,
    /// Repo digests (`name@sha256:...`).
    pub repo_digests: Vec<String>,
    /// Size CRI reports (unpacked size on the snapshotter where known).
    pub size: u64,
    /// Whether every layer is unpacked in the CRI snapshotter.
    pub unpacked: bool,
    /// Whether the pin label is set on every containerd image record of this image.
    pub pin_label: bool,
    /// Whether CRI itself reports the image as pinned (only 1.7.3+ does).
    pub cri_pinned: bool,
}

/// Free space of one filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskSpace {
    /// The directory checked.
    pub path: PathBuf,
    /// Bytes available to unprivileged writers... and to root, which containerd runs as.
    pub available: u64,
    /// Filesystem id, so two paths on one filesystem are counted once.
    pub fs_id: u64,
}

/// Errors of the images port.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// What was given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// containerd's socket cannot be reached.
    #[error("cannot reach containerd at {socket}: {reason}")]
    Unavailable {
        /// Socket path.
        socket: PathBuf,
        /// What is wrong, on one line, for people.
        reason: String,
    },
    /// The registry says the image does not exist.
    #[error("image {image} not found in its registry: {reason}")]
    NotFound {
        /// The image, as a normalised reference (`registry/repo:tag`).
        image: String,
        /// What the runtime or registry said.
        reason: String,
    },
    /// The registry refused the credentials (or their absence).
    #[error("registry refused credentials for {image}: {reason}")]
    Unauthorized {
        /// The image, as a normalised reference (`registry/repo:tag`).
        image: String,
        /// What the runtime or registry said.
        reason: String,
    },
    /// The registry cannot be reached.
    #[error("registry for {image} unreachable: {reason}")]
    RegistryUnreachable {
        /// The image, as a normalised reference (`registry/repo:tag`).
        image: String,
        /// What the runtime said.
        reason: String,
    },
    /// Not enough free space for the image.
    #[error(
        "not enough disk space for {image} on {path}: need {needed} bytes ({detail}), {available} available"
    )]
    DiskFull {
        /// The image, as a normalised reference (`registry/repo:tag`).
        image: String,
        /// Filesystem that is short.
        path: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
        /// How `needed` was computed.
        detail: String,
    },
    /// containerd ran out of space while pulling or unpacking.
    #[error("no space left pulling {image}: {reason}")]
    NoSpace {
        /// The image, as a normalised reference (`registry/repo:tag`).
        image: String,
        /// What containerd said.
        reason: String,
    },
    /// No progress for longer than the stall timeout, every attempt.
    #[error("pull of {image} stalled: no progress for {seconds}s")]
    Stalled {
        /// The image, as a normalised reference (`registry/repo:tag`).
        image: String,
        /// The stall timeout.
        seconds: u64,
    },
    /// Bytes moved, but fewer than the minimum rate's floor over its window, every attempt.
    #[error(
        "pull of {image} too slow: {bytes} bytes in {seconds}s, under the minimum of {floor} bytes per {seconds}s"
    )]
    TooSlow {
        /// Normalised reference.
        image: String,
        /// Bytes moved in the window.
        bytes: u64,
        /// The floor for one window.
        floor: u64,
        /// The window.
        seconds: u64,
    },
    /// A runtime call failed for another reason.
    #[error("containerd {op} failed: {reason}")]
    Runtime {
        /// The containerd call that failed.
        op: &'static str,
        /// What containerd said.
        reason: String,
    },
    /// The registry's answer could not be used.
    #[error("registry: {0}")]
    Registry(String),
    /// Credentials file unreadable or malformed.
    #[error("credentials: {0}")]
    Credentials(String),
    /// Reading the host's filesystem failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path the step worked on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Stable label for metrics and JSON output.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidReference { .. } => "invalid_reference",
            Error::Unavailable { .. } => "runtime_unavailable",
            Error::NotFound { .. } => "not_found",
            Error::Unauthorized { .. } => "unauthorized",
            Error::RegistryUnreachable { .. } => "registry_unreachable",
            Error::DiskFull { .. } => "disk_full",
            Error::NoSpace { .. } => "no_space",
            Error::Stalled { .. } => "stalled",
            Error::TooSlow { .. } => "too_slow",
            Error::Runtime { .. } => "runtime",
            Error::Registry(_) => "registry",
            Error::Credentials(_) => "credentials",
            Error::Io { .. } => "io",
        }
    }

    /// Whether trying again later may succeed (the runtime restarting, a flaky registry).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::RegistryUnreachable { .. }
                | Error::Stalled { .. }
                | Error::TooSlow { .. }
        ) || matches!(self, Error::Runtime { op, .. } if *op == "pull")
    }
}

/// The images port. Implemented by [`ContainerdImages`] and [`Fake`].
///
/// Every method speaks our types; no tonic or containerd type crosses it. The futures are
/// `Send` so that the agent can run pulls as background tasks.
pub trait Images: Send + Sync {
    /// Runtime version, snapshotter and storage locations.
    fn runtime_info(&self) -> impl Future<Output = Result<RuntimeInfo, Error>> + Send;

    /// Free space of the filesystem holding `path`.
    fn disk_space(
        &self,
        path: &std::path::Path,
    ) -> impl Future<Output = Result<DiskSpace, Error>> + Send;

    /// The image's manifest (platform-resolved) from its registry, for sizes and digests.
    fn manifest(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
    ) -> impl Future<Output = Result<ImageManifest, Error>> + Send;

    /// Pull through CRI; returns the image id. Dropping the future cancels the pull.
    fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        runtime_handler: Option<&str>,
    ) -> impl Future<Output = Result<String, Error>> + Send;

    /// Bytes of `blobs` present or being written in the content store.
    fn progress(&self, blobs: &[Blob]) -> impl Future<Output = Result<PullProgress, Error>> + Send;

    /// What containerd holds of the image, `None` when absent.
    fn status(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<Option<ImageState>, Error>> + Send;

    /// Set or clear the pin label on every image record of the image.
    fn set_pinned(
        &self,
        image: &ImageRef,
        pinned: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Remove the image (CRI RemoveImage; content is then garbage collected).
    fn remove(&self, image: &ImageRef) -> impl Future<Output = Result<(), Error>> + Send;

    /// Creates a lease holding what a ranged fetch writes until `ttl` from now
    /// (`containerd.io/gc.expire`); `None` when this client never fetches by itself.
    fn create_lease(
        &self,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send {
        let _ = ttl;
        async { Ok(None) }
    }

    /// Deletes lease `id` (blobs an image references stay).
    fn delete_lease(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = id;
        async { Ok(()) }
    }

    /// Fetches the blobs of `manifest` the content store lacks, as parallel ranges, under
    /// `lease`; bytes received and not yet written are counted in `progress`. A runtime or
    /// registry that cannot take part answers [`FetchOutcome::Fallback`] with the reason.
    fn fetch(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        manifest: &ImageManifest,
        lease: &str,
        opts: &FetchOptions,
        progress: &FetchProgress,
    ) -> impl Future<Output = Result<FetchOutcome, Error>> + Send {
        let _ = (image, auth, manifest, lease, opts, progress);
        async {
            Ok(FetchOutcome::Fallback(
                "this runtime client does not fetch by itself".to_owned(),
            ))
        }
    }

    /// A registry client that reaches registries as this runtime does (its `hosts.toml`
    /// directory), for artifacts beside images (compile caches).
    fn registry_client(&self) -> impl Future<Output = RegistryClient> + Send {
        async { RegistryClient::new(None, std::time::Duration::ZERO) }
    }
}
