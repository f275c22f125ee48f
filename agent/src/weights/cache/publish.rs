//! Publishing a commit, in the order that keeps every reader safe across a crash (DESIGN.md):
//! blobs (finalized by the caller), then `trees/<commit>.json`, then the snapshot directory
//! built under a temporary name and renamed into place (exchanged atomically with an older one),
//! then `refs/<revision>`. Publish and evict of one repo hold the repo's lock. Temporaries are
//! built in the repo directory, beside `snapshots/` and `refs/`, where no reader looks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::super::{Error, RepoId, TreeEntry};
use super::HubCache;
use super::layout::{self, check_commit, check_entry, link_target};
use super::state::{SELECTIONS, Selection};
use super::temps::PublishStep;
use crate::fsx::{self, FILE_MODE};

impl HubCache {
    /// Publishes `commit` of `repo`: writes the trees file listing the whole upstream `tree`,
    /// links every `selected` file (each must be in `tree`, its blob already finalized) into
    /// `snapshots/<commit>` (replacing an earlier snapshot of that commit atomically), records
    /// the selection in the state directory, and points `refs/<revision>` at the commit unless
    /// the revision is itself a commit sha. Other commits of the repo are left as they are.
    /// Temporaries are made in the repo directory, where no reader looks (see [`super::temps`]).
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
        let listing = sorted_listing(tree)?;
        let files = selection(&listing, selected)?;
        let _lock = self.lock_repo(repo)?;
        let repo_dir = self.ensure_repo_dirs(repo)?;
        self.check_blobs(repo, &files)?;
        self.clean_temporaries_locked(repo)?;
        self.reached(PublishStep::Started);
        let tmp = fsx::stage(&repo_dir, FILE_MODE, |f| {
            let mut w = std::io::BufWriter::new(f);
            layout::write_trees(&mut w, &listing)?;
            w.flush()
        })?;
        fsx::commit_staged(&tmp, &repo_dir.join("trees"), &format!("{commit}.json"))?;
        self.reached(PublishStep::TreesWritten);
        let record = Selection {
            revision: revision.to_string(),
            files: files.iter().map(|e| (*e).clone()).collect(),
        };
        self.write_record(SELECTIONS, repo, commit, &record)?;
        let snapshot = self.build_snapshot(&repo_dir, commit, &files)?;
        if with_ref {
            self.write_ref(&repo_dir, revision, commit)?;
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

    /// Builds the snapshot under a temporary name in the repo directory, fsyncs it, and moves
    /// it to `snapshots/<commit>`.
    fn build_snapshot(
        &self,
        repo_dir: &Path,
        commit: &str,
        files: &[&TreeEntry],
    ) -> Result<PathBuf, Error> {
        let tmp_name = fsx::temp_name("snapshot");
        let tmp = repo_dir.join(&tmp_name);
        let result = fill(repo_dir, &tmp_name, files).and_then(|()| {
            self.reached(PublishStep::SnapshotBuilt);
            self.swap_in(repo_dir, &tmp_name, commit)
        });
        if let Err(e) = result {
            let _ = fsx::remove_tree(&tmp);
            return Err(e);
        }
        Ok(repo_dir.join("snapshots").join(commit))
    }

    /// Moves `<repo>/<tmp_name>` to `snapshots/<commit>`. An existing snapshot is exchanged
    /// atomically (`renameat2(RENAME_EXCHANGE)`) so that a reader never misses a file both
    /// contain; where the filesystem or libc lacks it, the old one is renamed aside first (a
    /// short window without the snapshot). The old one is then removed.
    fn swap_in(&self, repo_dir: &Path, tmp_name: &str, commit: &str) -> Result<(), Error> {
        let snapshots = repo_dir.join("snapshots");
        let dest = snapshots.join(commit);
        let tmp = repo_dir.join(tmp_name);
        if !fsx::is_real_dir(&dest)? {
            std::fs::rename(&tmp, &dest).map_err(|e| Error::io("rename", &dest, e))?;
            fsx::fsync_dir(&snapshots)?;
            fsx::fsync_dir(repo_dir)?;
            self.reached(PublishStep::SnapshotPublished);
            return Ok(());
        }
        let old = if exchange(repo_dir, tmp_name, &snapshots, commit)? {
            tmp
        } else {
            let aside = repo_dir.join(fsx::temp_name("old"));
            std::fs::rename(&dest, &aside).map_err(|e| Error::io("rename", &aside, e))?;
            std::fs::rename(&tmp, &dest).map_err(|e| Error::io("rename", &dest, e))?;
            aside
        };
        fsx::fsync_dir(&snapshots)?;
        fsx::fsync_dir(repo_dir)?;
        self.reached(PublishStep::SnapshotPublished);
        fsx::remove_tree(&old)?;
        Ok(fsx::fsync_dir(repo_dir)?)
    }

    /// Writes `refs/<revision>` = the commit, without a trailing newline (one breaks offline
    /// lookups in `huggingface_hub`), staged in the repo directory and renamed into place.
    fn write_ref(&self, repo_dir: &Path, revision: &str, commit: &str) -> Result<(), Error> {
        let parents = layout::parents(revision);
        let dir = fsx::ensure_dirs(&repo_dir.join("refs"), &parents)?;
        let name = revision.rsplit('/').next().unwrap_or(revision);
        if fsx::is_real_dir(&dir.join(name)).is_ok_and(|d| d) {
            return Err(Error::io(
                "write ref",
                dir.join(name),
                std::io::Error::new(ErrorKind::IsADirectory, "a directory has the ref's name"),
            ));
        }
        let tmp = fsx::stage(repo_dir, FILE_MODE, |f| f.write_all(commit.as_bytes()))?;
        self.reached(PublishStep::RefStaged);
        fsx::commit_staged(&tmp, &dir, name)?;
        self.reached(PublishStep::RefWritten);
        Ok(())
    }
}

/// The whole tree sorted by path, each entry checked; a path listed twice is refused. Holds
/// references only: the entries themselves stay where the listing put them.
fn sorted_listing(tree: &[TreeEntry]) -> Result<Vec<&TreeEntry>, Error> {
    let mut listing: Vec<&TreeEntry> = tree.iter().collect();
    listing.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    for pair in listing.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(Error::HostileName {
                path: pair[0].path.clone(),
                reason: "listed twice in the tree".to_string(),
            });
        }
    }
    for entry in &listing {
        check_entry(entry)?;
    }
    Ok(listing)
}

/// The selected entries, checked against the sorted listing, one per path, in path order.
fn selection<'a>(
    listing: &[&TreeEntry],
    selected: &'a [TreeEntry],
) -> Result<Vec<&'a TreeEntry>, Error> {
    let mut by_path = BTreeMap::new();
    for entry in selected {
        check_entry(entry)?;
        let found = listing
            .binary_search_by(|e| e.path.as_str().cmp(&entry.path))
            .ok()
            .map(|i| listing[i]);
        match found {
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

/// Creates the relative symlinks (directories 0755) under `<repo>/<tmp_name>` and fsyncs
/// every directory, deepest first. The links resolve once the directory sits in `snapshots/`.
fn fill(repo_dir: &Path, tmp_name: &str, files: &[&TreeEntry]) -> Result<(), Error> {
    let tmp = fsx::ensure_dirs(repo_dir, &[tmp_name])?;
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

/// Exchanges `dir_a/a` and `dir_b/b` atomically; `Ok(false)` when unsupported here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(dir_a: &Path, a: &str, dir_b: &Path, b: &str) -> Result<bool, Error> {
    use nix::errno::Errno;
    use nix::fcntl::{RenameFlags, renameat2};
    use std::os::unix::fs::OpenOptionsExt;

    let open = |dir: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(fsx::nofollow() | nix::fcntl::OFlag::O_DIRECTORY.bits())
            .open(dir)
            .map_err(|e| fsx::open_error("open dir", dir, e))
    };
    let (fd_a, fd_b) = (open(dir_a)?, open(dir_b)?);
    match renameat2(&fd_a, a, &fd_b, b, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(Error::io("exchange", dir_b.join(b), e.into())),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(_dir_a: &Path, _a: &str, _dir_b: &Path, _b: &str) -> Result<bool, Error> {
    Ok(false)
}
