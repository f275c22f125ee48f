//! Publishing a commit, in the order that keeps every reader safe across a crash (DESIGN.md):
//! blobs (finalized by the caller), then `trees/<commit>.json`, then the snapshot directory
//! built under a temporary name and renamed into place (exchanged atomically with an older one),
//! then `refs/<revision>`. Publish and evict of one repo hold the repo's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::super::{Error, RepoId, TreeEntry};
use super::HubCache;
use super::layout::{self, Trees, check_commit, check_entry, link_target};
use super::state::{SELECTIONS, Selection};
use crate::fsx::{self, FILE_MODE, TEMP_PREFIX};

impl HubCache {
    /// Publishes `commit` of `repo`: writes the trees file listing the whole upstream `tree`,
    /// links every `selected` file (each must be in `tree`, its blob already finalized) into
    /// `snapshots/<commit>` (replacing an earlier snapshot of that commit atomically), records
    /// the selection in the state directory, and points `refs/<revision>` at the commit unless
    /// the revision is itself a commit sha. Other commits of the repo are left as they are.
    /// Returns the snapshot directory.
    pub fn publish(
        &self,
        repo: &RepoId,
        revision: &str,
        commit: &str,
        tree: &[TreeEntry],
        selected: &[TreeEntry],
    ) -> Result<PathBuf, Error> {
        check_commit(commit)?;
        let with_ref = !layout::is_commit(revision);
        if with_ref {
            layout::check_revision(revision)?;
        }
        let trees = Trees::of(tree)?;
        let files = selection(&trees, selected)?;
        let _lock = self.lock_repo(repo)?;
        let repo_dir = self.ensure_repo_dirs(repo)?;
        self.check_blobs(repo, &files)?;
        for sub in ["snapshots", "trees", "refs"] {
            remove_stale_temps(&repo_dir.join(sub))?;
        }
        let json = serde_json::to_vec_pretty(&trees)
            .map_err(|e| Error::io("encode", &repo_dir, e.into()))?;
        fsx::write_atomic(
            &repo_dir.join("trees"),
            &format!("{commit}.json"),
            &json,
            FILE_MODE,
        )?;
        let record = Selection {
            revision: revision.to_string(),
            files: files.iter().map(|e| (*e).clone()).collect(),
        };
        self.write_record(SELECTIONS, repo, commit, &record)?;
        let snapshot = build_snapshot(&repo_dir.join("snapshots"), commit, &files)?;
        if with_ref {
            write_ref(&repo_dir.join("refs"), revision, commit)?;
        }
        Ok(snapshot)
    }

    /// Every selected blob is finalized, a regular file of the right size.
    fn check_blobs(&self, repo: &RepoId, files: &[&TreeEntry]) -> Result<(), Error> {
        for entry in files {
            let path = self.blob_path(repo, entry.etag());
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| Error::io("publish: stat blob", &path, e))?;
            if !meta.is_file() {
                return Err(Error::UnsafeCache {
                    path,
                    reason: "blob is not a regular file".to_string(),
                });
            }
            if meta.len() != entry.content_size() {
                return Err(Error::Mismatch {
                    path: entry.path.clone(),
                    kind: "size",
                    expected: entry.content_size().to_string(),
                    actual: meta.len().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The selected entries, checked against the tree, one per path, in path order.
fn selection<'a>(trees: &Trees, selected: &'a [TreeEntry]) -> Result<Vec<&'a TreeEntry>, Error> {
    let mut by_path = BTreeMap::new();
    for entry in selected {
        check_entry(entry)?;
        match trees.files.get(&entry.path) {
            Some(f) if f.etag() == entry.etag() && f.size == entry.size => {}
            _ => {
                return Err(Error::HostileName {
                    path: entry.path.clone(),
                    reason: "selected file is not in the tree listing as given".to_string(),
                });
            }
        }
        by_path.insert(entry.path.as_str(), entry);
    }
    Ok(by_path.into_values().collect())
}

/// Removes what an interrupted publish or evict left (our temporary names only).
pub(super) fn remove_stale_temps(dir: &Path) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => fsx::remove_tree(&path)?,
            _ => {
                fsx::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// Builds the snapshot under a temporary name in `snapshots/`, fsyncs it, and moves it to
/// `snapshots/<commit>`.
fn build_snapshot(snapshots: &Path, commit: &str, files: &[&TreeEntry]) -> Result<PathBuf, Error> {
    let tmp_name = fsx::temp_name("snapshot");
    let tmp = snapshots.join(&tmp_name);
    let result =
        fill(snapshots, &tmp_name, files).and_then(|()| swap_in(snapshots, &tmp_name, commit));
    if let Err(e) = result {
        let _ = fsx::remove_tree(&tmp);
        return Err(e);
    }
    Ok(snapshots.join(commit))
}

/// Creates the relative symlinks (directories 0755) and fsyncs every directory, deepest first.
fn fill(snapshots: &Path, tmp_name: &str, files: &[&TreeEntry]) -> Result<(), Error> {
    let tmp = fsx::ensure_dirs(snapshots, &[tmp_name])?;
    let mut dirs = BTreeSet::from([(0usize, tmp.clone())]);
    for entry in files {
        let parents = layout::parents(&entry.path);
        let dir = fsx::ensure_dirs(&tmp, &parents)?;
        dirs.insert((parents.len(), dir));
        let link = tmp.join(&entry.path);
        std::os::unix::fs::symlink(link_target(&entry.path, entry.etag()), &link)
            .map_err(|e| Error::io("symlink", &link, e))?;
    }
    for (_, dir) in dirs.iter().rev() {
        fsx::fsync_dir(dir)?;
    }
    Ok(())
}

/// Moves `snapshots/<tmp_name>` to `snapshots/<commit>`. An existing snapshot is exchanged
/// atomically (`renameat2(RENAME_EXCHANGE)`) so that a reader never misses a file both contain;
/// where the filesystem or libc lacks it, the old one is renamed aside first (a short window
/// without the snapshot). The old one is then removed.
fn swap_in(snapshots: &Path, tmp_name: &str, commit: &str) -> Result<(), Error> {
    let dest = snapshots.join(commit);
    let tmp = snapshots.join(tmp_name);
    if !fsx::is_real_dir(&dest)? {
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io("rename", &dest, e))?;
        return Ok(fsx::fsync_dir(snapshots)?);
    }
    let old = if exchange(snapshots, tmp_name, commit)? {
        tmp
    } else {
        let aside = snapshots.join(fsx::temp_name("old"));
        std::fs::rename(&dest, &aside).map_err(|e| Error::io("rename", &aside, e))?;
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io("rename", &dest, e))?;
        aside
    };
    fsx::fsync_dir(snapshots)?;
    fsx::remove_tree(&old)?;
    Ok(fsx::fsync_dir(snapshots)?)
}

/// Exchanges two names in `dir` atomically; `Ok(false)` when unsupported here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(dir: &Path, a: &str, b: &str) -> Result<bool, Error> {
    use nix::errno::Errno;
    use nix::fcntl::{RenameFlags, renameat2};
    use std::os::unix::fs::OpenOptionsExt;

    let fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(fsx::nofollow() | nix::fcntl::OFlag::O_DIRECTORY.bits())
        .open(dir)
        .map_err(|e| fsx::open_error("open dir", dir, e))?;
    match renameat2(&fd, a, &fd, b, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(Error::io("exchange", dir.join(b), e.into())),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(_dir: &Path, _a: &str, _b: &str) -> Result<bool, Error> {
    Ok(false)
}

/// Writes `refs/<revision>` = the commit, without a trailing newline (one breaks offline
/// lookups in `huggingface_hub`).
fn write_ref(refs: &Path, revision: &str, commit: &str) -> Result<(), Error> {
    let parents = layout::parents(revision);
    let dir = fsx::ensure_dirs(refs, &parents)?;
    let name = revision.rsplit('/').next().unwrap_or(revision);
    if fsx::is_real_dir(&dir.join(name)).is_ok_and(|d| d) {
        return Err(Error::io(
            "write ref",
            dir.join(name),
            std::io::Error::new(ErrorKind::IsADirectory, "a directory has the ref's name"),
        ));
    }
    fsx::write_atomic(&dir, name, commit.as_bytes(), FILE_MODE)?;
    Ok(())
}
