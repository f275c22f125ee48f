//! Our own records, in the state directory beside the cache root (never inside it):
//!
//! ```text
//! <state>/fingerprints/<models--org--name>/<etag>.json   blob identity at finalize / last full hash
//! <state>/selections/<models--org--name>/<commit>.json   which files publish linked, and for which revision
//! <state>/usage/<models--org--name>/<commit>.json        last use, for LRU eviction
//! <state>/locks/<models--org--name>.lock                 flock serializing publish and evict
//! ```
//!
//! Each record is a small JSON file replaced atomically; an unreadable record reads as absent.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use nix::fcntl::Flock;

use super::super::{Error, RepoId, TreeEntry};
use super::HubCache;
use crate::fsx::{self, FILE_MODE};

/// What identifies a blob's content without reading it: if all of these still match, nobody
/// rewrote the file in place (ctime cannot be set back from user space).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Fingerprint {
    size: u64,
    mtime_s: i64,
    mtime_ns: i64,
    ctime_s: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
}

impl Fingerprint {
    /// The fingerprint of a file's current metadata.
    pub fn of(m: &Metadata) -> Fingerprint {
        Fingerprint {
            size: m.size(),
            mtime_s: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            ctime_s: m.ctime(),
            ctime_ns: m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// What one publish linked into `snapshots/<commit>`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Selection {
    pub revision: String,
    pub files: Vec<TreeEntry>,
}

/// When a commit was last used or wanted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Usage {
    last_used_unix_ms: u64,
}

/// Kinds of record (directory names in the state dir).
pub(super) const FINGERPRINTS: &str = "fingerprints";
pub(super) const SELECTIONS: &str = "selections";
pub(super) const USAGE: &str = "usage";
const LOCKS: &str = "locks";

impl HubCache {
    fn record_dir(&self, kind: &str, repo: &RepoId) -> Result<PathBuf, Error> {
        Ok(fsx::ensure_dirs(
            &self.state,
            &[kind.to_string(), repo.cache_folder()],
        )?)
    }

    /// Writes a record atomically.
    pub(super) fn write_record<T: serde::Serialize>(
        &self,
        kind: &str,
        repo: &RepoId,
        name: &str,
        value: &T,
    ) -> Result<(), Error> {
        let dir = self.record_dir(kind, repo)?;
        let bytes = serde_json::to_vec(value).map_err(|e| Error::io("encode", &dir, e.into()))?;
        fsx::write_atomic(&dir, &format!("{name}.json"), &bytes, FILE_MODE)?;
        Ok(())
    }

    /// Reads a record; `None` when absent or unreadable as `T`.
    pub(super) fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        repo: &RepoId,
        name: &str,
    ) -> Result<Option<T>, Error> {
        let Some(dir) = fsx::existing_dirs(&self.state, &[kind.to_string(), repo.cache_folder()])?
        else {
            return Ok(None);
        };
        let path = dir.join(format!("{name}.json"));
        Ok(fsx::read_optional(&path)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Removes a record; absent is fine.
    pub(super) fn remove_record(&self, kind: &str, repo: &RepoId, name: &str) -> Result<(), Error> {
        if let Some(dir) =
            fsx::existing_dirs(&self.state, &[kind.to_string(), repo.cache_folder()])?
        {
            fsx::remove_file(&dir.join(format!("{name}.json")))?;
        }
        Ok(())
    }

    /// Records the blob's current identity as verified.
    pub(super) fn record_fingerprint(
        &self,
        repo: &RepoId,
        etag: &str,
        m: &Metadata,
    ) -> Result<(), Error> {
        self.write_record(FINGERPRINTS, repo, etag, &Fingerprint::of(m))
    }

    /// Whether the blob's metadata still matches what was recorded when it was verified.
    pub(super) fn fingerprint_matches(
        &self,
        repo: &RepoId,
        etag: &str,
        m: &Metadata,
    ) -> Result<Option<bool>, Error> {
        let recorded: Option<Fingerprint> = self.read_record(FINGERPRINTS, repo, etag)?;
        Ok(recorded.map(|r| r == Fingerprint::of(m)))
    }

    /// Last use recorded by [`HubCache::touch`].
    pub(super) fn last_used(
        &self,
        repo: &RepoId,
        commit: &str,
    ) -> Result<Option<SystemTime>, Error> {
        let usage: Option<Usage> = self.read_record(USAGE, repo, commit)?;
        Ok(usage.map(|u| SystemTime::UNIX_EPOCH + Duration::from_millis(u.last_used_unix_ms)))
    }

    pub(super) fn record_use(
        &self,
        repo: &RepoId,
        commit: &str,
        now: SystemTime,
    ) -> Result<(), Error> {
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.write_record(
            USAGE,
            repo,
            commit,
            &Usage {
                last_used_unix_ms: ms,
            },
        )
    }

    /// Takes the repo's exclusive lock (blocking): publish and evict of one repo never overlap,
    /// in this process or another. Released when the guard drops.
    pub(super) fn lock_repo(&self, repo: &RepoId) -> Result<Flock<std::fs::File>, Error> {
        let dir = fsx::ensure_dirs(&self.state, &[LOCKS])?;
        let path = dir.join(format!("{}.lock", repo.cache_folder()));
        Ok(fsx::lock_exclusive(&path).map_err(|e| fsx::open_error("lock", &path, e))?)
    }
}
