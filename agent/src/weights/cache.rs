//! The Hub cache layout on local disk, as `huggingface_hub` 2.4 and vLLM read it offline:
//!
//! ```text
//! <root>/models--org--name/blobs/<etag>                 content (sha256 for LFS, git sha1 otherwise), 0444
//! <root>/models--org--name/blobs/<etag>.incomplete      a download in progress (resumable)
//! <root>/models--org--name/trees/<commit>.json          the whole upstream tree (offline completeness check)
//! <root>/models--org--name/snapshots/<commit>/<path>    relative symlink to ../(..)/blobs/<etag>
//! <root>/models--org--name/refs/<revision>              the commit, no trailing newline
//! ```
//!
//! Publishing is crash-safe (blobs, trees file, snapshot renamed into place, refs), so a reader
//! sees either no snapshot or a complete one. Nothing here follows a symlink found in the cache:
//! every directory component is checked with `symlink_metadata` and files are opened with
//! `O_NOFOLLOW`, so a planted link yields [`Error::UnsafeCache`] and nothing is written outside
//! the cache root and the state directory. Our records (fingerprints, selections, last use)
//! live in the state directory, a sibling of the root (see [`HubCache::open`]).

mod evict;
mod hash;
mod layout;
mod publish;
mod report;
mod state;
mod temps;
mod verify;

use std::fs::{File, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Error, RepoId, TreeEntry};

pub use crate::fsx::TEMP_PREFIX;
pub use evict::{CacheUsage, ModelUsage, SnapshotBlobs};
pub use hash::{git_blob_sha1, hash_file, verify_blob};
pub use layout::link_target;
pub use report::{Problem, ProblemKind, VerifyMode, VerifyReport};
pub use temps::{PublishHook, PublishStep};

use crate::fsx::{self, BLOB_MODE, DIR_MODE};
use layout::check_etag;

/// Subdirectories of a repo folder.
const REPO_DIRS: [&str; 4] = ["blobs", "snapshots", "refs", "trees"];

/// A Hub cache root on local disk plus our state directory beside it.
#[derive(Debug, Clone)]
pub struct HubCache {
    root: PathBuf,
    state: PathBuf,
    hook: Option<PublishHook>,
}

impl HubCache {
    /// Opens (creating, mode 0755) the cache root and our state directory. The state directory
    /// defaults to `<parent>/.<root-name>.coldstart`, a sibling on the same filesystem (unless
    /// the root is a mount point); it must not lie inside the root, where `hf cache scan` would
    /// report it as damage. Both paths are canonicalized.
    pub fn open(root: &Path, state: Option<&Path>) -> Result<HubCache, Error> {
        let root = create_dir(root)?;
        let state = match state {
            Some(s) => s.to_path_buf(),
            None => {
                let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
                    return Err(Error::UnsafeCache {
                        path: root,
                        reason: "the cache root needs a parent for the state directory".to_string(),
                    });
                };
                parent.join(format!(".{}.coldstart", name.to_string_lossy()))
            }
        };
        let state = create_dir(&state)?;
        if state.starts_with(&root) {
            return Err(Error::UnsafeCache {
                path: state,
                reason: "the state directory must not be inside the cache root".to_string(),
            });
        }
        Ok(HubCache {
            root,
            state,
            hook: None,
        })
    }

    /// The same cache, calling `hook` after each step of a publish (crash tests stop the
    /// process there).
    pub fn with_publish_hook(mut self, hook: PublishHook) -> HubCache {
        self.hook = Some(hook);
        self
    }

    /// The cache root (what readers get as `HF_HUB_CACHE`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Our state directory (journals, fingerprints, selections, last use).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// `<root>/models--org--name`.
    pub fn repo_dir(&self, repo: &RepoId) -> PathBuf {
        self.root.join(repo.cache_folder())
    }

    /// `<root>/models--org--name/blobs/<etag>` (not checked; see the methods that touch disk).
    pub fn blob_path(&self, repo: &RepoId, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    /// `<root>/models--org--name/blobs/<etag>.incomplete`.
    pub fn incomplete_path(&self, repo: &RepoId, etag: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    /// Creates the repo's directories (refusing symlinks) and returns `<root>/models--org--name`.
    fn ensure_repo_dirs(&self, repo: &RepoId) -> Result<PathBuf, Error> {
        let dir = fsx::ensure_dirs(&self.root, &[repo.cache_folder()])?;
        for sub in REPO_DIRS {
            fsx::ensure_dirs(&dir, &[sub])?;
        }
        Ok(dir)
    }

    /// `blobs/` of a repo when it exists as a real directory chain.
    fn existing_blobs_dir(&self, repo: &RepoId) -> Result<Option<PathBuf>, Error> {
        Ok(fsx::existing_dirs(
            &self.root,
            &[repo.cache_folder(), "blobs".to_string()],
        )?)
    }

    /// Creates the repo's directories and opens `blobs/<etag>.incomplete` for reading and
    /// writing without truncating it (a resumed download keeps its bytes), never through a
    /// symlink. A symlink or non-directory anywhere under the root is [`Error::UnsafeCache`].
    pub fn open_incomplete(&self, repo: &RepoId, etag: &str) -> Result<File, Error> {
        check_etag(etag)?;
        self.ensure_repo_dirs(repo)?;
        let path = self.incomplete_path(repo, etag);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(fsx::nofollow())
            .open(&path)
            .map_err(|e| fsx::open_error("open", &path, e))?;
        let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
        if !meta.is_file() {
            return Err(Error::UnsafeCache {
                path,
                reason: "not a regular file".to_string(),
            });
        }
        Ok(file)
    }

    /// Makes a verified download durable and visible: fsyncs `<etag>.incomplete`, sets mode
    /// 0444, renames it to `blobs/<etag>`, fsyncs `blobs/`, and records its fingerprint. When
    /// the partial file is gone because a concurrent download of the same content finalized
    /// first, the existing blob is returned.
    pub fn finalize_blob(&self, repo: &RepoId, etag: &str) -> Result<PathBuf, Error> {
        check_etag(etag)?;
        let blobs = fsx::ensure_dirs(&self.root, &[repo.cache_folder(), "blobs".to_string()])?;
        let inc = self.incomplete_path(repo, etag);
        let blob = blobs.join(etag);
        let file = match fsx::open_read(&inc) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && is_file(&blob)? => return Ok(blob),
            Err(e) => return Err(fsx::open_error("open", &inc, e).into()),
        };
        if !file
            .metadata()
            .map_err(|e| Error::io("stat", &inc, e))?
            .is_file()
        {
            return Err(Error::UnsafeCache {
                path: inc,
                reason: "not a regular file".to_string(),
            });
        }
        file.sync_all().map_err(|e| Error::io("fsync", &inc, e))?;
        file.set_permissions(Permissions::from_mode(BLOB_MODE))
            .map_err(|e| Error::io("chmod", &inc, e))?;
        drop(file);
        std::fs::rename(&inc, &blob).map_err(|e| Error::io("rename", &blob, e))?;
        fsx::fsync_dir(&blobs)?;
        let meta = std::fs::symlink_metadata(&blob).map_err(|e| Error::io("stat", &blob, e))?;
        self.record_fingerprint(repo, etag, &meta)?;
        Ok(blob)
    }

    /// Whether `blobs/<etag>` is a regular file of the entry's size whose fingerprint (size,
    /// mtime, ctime, inode, device) still matches the one recorded when it was verified. Cheap:
    /// reads no content. `false` when there is no record (e.g. a blob another tool wrote).
    pub fn blob_is_current(&self, repo: &RepoId, entry: &TreeEntry) -> Result<bool, Error> {
        let etag = entry.etag();
        check_etag(etag)?;
        let Some(blobs) = self.existing_blobs_dir(repo)? else {
            return Ok(false);
        };
        let meta = match std::fs::symlink_metadata(blobs.join(etag)) {
            Ok(m) if m.is_file() && m.len() == entry.content_size() => m,
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("stat", blobs.join(etag), e)),
        };
        Ok(self.fingerprint_matches(repo, etag, &meta)? == Some(true))
    }

    /// Hashes `blobs/<etag>` in full against the entry's digest; when it matches, records its
    /// fingerprint so the next [`HubCache::blob_is_current`] is cheap. `false` when the blob is
    /// absent, not a regular file, of the wrong size or content.
    pub fn verify_blob(&self, repo: &RepoId, entry: &TreeEntry) -> Result<bool, Error> {
        let etag = entry.etag();
        check_etag(etag)?;
        let Some(blobs) = self.existing_blobs_dir(repo)? else {
            return Ok(false);
        };
        let path = blobs.join(etag);
        if !verify_blob(&path, entry)? {
            return Ok(false);
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        self.record_fingerprint(repo, etag, &meta)?;
        Ok(true)
    }

    /// Records that `commit` of `repo` was used or wanted at `now` (for LRU eviction).
    pub fn touch(&self, repo: &RepoId, commit: &str, now: SystemTime) -> Result<(), Error> {
        layout::check_commit(commit)?;
        self.record_use(repo, commit, now)
    }
}

/// Creates a directory (and missing parents), mode 0755 for the ones created, and returns its
/// canonical path.
fn create_dir(path: &Path) -> Result<PathBuf, Error> {
    let existed = path.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|e| Error::io("create", path, e))?;
    let canonical = path
        .canonicalize()
        .map_err(|e| Error::io("resolve", path, e))?;
    if !existed {
        fsx::set_mode(&canonical, DIR_MODE)?;
    }
    Ok(canonical)
}

/// Whether `path` is a regular file (not following a symlink).
fn is_file(path: &Path) -> Result<bool, Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(m.is_file()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

#[cfg(test)]
mod tests;
