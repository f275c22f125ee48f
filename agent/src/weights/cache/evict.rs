//! What the cache holds (for an LRU eviction planner) and removing one commit of a model.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::super::{Error, RepoId};
use super::HubCache;
use super::layout::{self, check_commit, etag_of_target};
use super::state::{FINGERPRINTS, SELECTIONS, Selection, USAGE};
use crate::fsx::{self, TEMP_PREFIX};

/// One published commit of a model in the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelUsage {
    /// The Hub model id (`org/name`).
    pub repo: RepoId,
    /// Commit of the snapshot.
    pub commit: String,
    /// Bytes of the blobs the snapshot links.
    pub bytes: u64,
    /// Of those, the bytes no other snapshot of the model links: what evicting it frees.
    pub exclusive_bytes: u64,
    /// Refs (`main`, tags) that point at this commit.
    pub refs: Vec<String>,
    /// Last use recorded by [`HubCache::touch`], else the snapshot directory's mtime.
    pub last_used: SystemTime,
}

/// What one published snapshot links, blob by blob: the input of the budget planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotBlobs {
    /// The Hub model id (`org/name`).
    pub repo: RepoId,
    /// Commit of the snapshot.
    pub commit: String,
    /// Refs (`main`, tags) that point at this commit.
    pub refs: Vec<String>,
    /// Last use recorded by [`HubCache::touch`], else the snapshot directory's mtime.
    pub last_used: SystemTime,
    /// Blob name -> bytes on disk (0 when the blob is missing) of every blob it links.
    pub blobs: BTreeMap<String, u64>,
}

/// What the cache holds: bytes on disk and what each published snapshot links.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheUsage {
    /// Bytes of every regular file in every `blobs/` directory (partial downloads and
    /// unpublished blobs included).
    pub used_bytes: u64,
    /// Every published snapshot, least recently used first.
    pub snapshots: Vec<SnapshotBlobs>,
}

impl HubCache {
    /// Every published commit of every model in the cache, least recently used first.
    pub fn inventory(&self) -> Result<Vec<ModelUsage>, Error> {
        let usage = self.usage()?;
        let mut out = Vec::new();
        for snap in &usage.snapshots {
            let shared = |e: &String| {
                usage.snapshots.iter().any(|o| {
                    o.repo == snap.repo && o.commit != snap.commit && o.blobs.contains_key(e)
                })
            };
            out.push(ModelUsage {
                repo: snap.repo.clone(),
                commit: snap.commit.clone(),
                bytes: snap.blobs.values().sum(),
                exclusive_bytes: snap
                    .blobs
                    .iter()
                    .filter(|(e, _)| !shared(e))
                    .map(|(_, n)| n)
                    .sum(),
                refs: snap.refs.clone(),
                last_used: snap.last_used,
            });
        }
        Ok(out)
    }

    /// Bytes in use and every published snapshot with the blobs it links, least recently
    /// used first.
    pub fn usage(&self) -> Result<CacheUsage, Error> {
        let mut out = CacheUsage::default();
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| Error::io("list", &self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.root, e))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let Some(repo) = entry.file_name().to_str().and_then(repo_of_folder) else {
                continue;
            };
            if is_dir {
                out.used_bytes += self.blob_bytes(&repo)?;
                out.snapshots.extend(self.repo_snapshots(&repo)?);
            }
        }
        out.snapshots.sort_by(|a, b| {
            (a.last_used, &a.repo, &a.commit).cmp(&(b.last_used, &b.repo, &b.commit))
        });
        Ok(out)
    }

    /// Bytes of the regular files in `blobs/`.
    fn blob_bytes(&self, repo: &RepoId) -> Result<u64, Error> {
        let Some(blobs) = self.existing_blobs_dir(repo)? else {
            return Ok(0);
        };
        let entries = std::fs::read_dir(&blobs).map_err(|e| Error::io("list", &blobs, e))?;
        let mut total = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &blobs, e))?;
            if let Ok(m) = std::fs::symlink_metadata(entry.path())
                && m.is_file()
            {
                total += m.len();
            }
        }
        Ok(total)
    }

    fn repo_snapshots(&self, repo: &RepoId) -> Result<Vec<SnapshotBlobs>, Error> {
        let Some(snapshots) =
            fsx::existing_dirs(&self.root, &[repo.cache_folder().as_str(), "snapshots"])?
        else {
            return Ok(Vec::new());
        };
        let linked = self.linked_blobs(repo)?;
        let mut refs = self.refs(repo)?;
        let blobs = self.existing_blobs_dir(repo)?;
        let size = |etag: &String| {
            blobs.as_ref().map_or(0, |b| {
                std::fs::symlink_metadata(b.join(etag))
                    .map_or(0, |m| if m.is_file() { m.len() } else { 0 })
            })
        };
        let mut out = Vec::new();
        for (commit, etags) in linked.iter().filter(|(c, _)| layout::is_commit(c)) {
            let last_used = match self.last_used(repo, commit)? {
                Some(t) => t,
                None => std::fs::symlink_metadata(snapshots.join(commit))
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            };
            out.push(SnapshotBlobs {
                repo: repo.clone(),
                commit: commit.clone(),
                refs: refs.remove(commit.as_str()).unwrap_or_default(),
                last_used,
                blobs: etags.iter().map(|e| (e.clone(), size(e))).collect(),
            });
        }
        Ok(out)
    }

    /// Removes one commit of `repo`: the refs pointing at it, its snapshot (renamed away
    /// first, so readers see it whole or not at all), its trees file and our records, then
    /// the blobs it linked that no remaining snapshot of the model links (so blobs shared with
    /// a commit that stays are kept). Blobs of downloads not yet published are not touched.
    /// Returns the bytes of the blobs removed.
    pub fn evict(&self, repo: &RepoId, commit: &str) -> Result<u64, Error> {
        self.evict_keeping(repo, commit, &BTreeSet::new())
    }

    /// [`HubCache::evict`], keeping also the blobs named in `protect` (e.g. those a sync in
    /// progress counts on finding).
    ///
    /// Crash-safe in this order: refs, then the snapshot (renamed aside and the directory
    /// fsynced before anything else goes), the trees file, and only then the blobs; a reader
    /// never finds a ref or snapshot whose blobs are gone.
    pub fn evict_keeping(
        &self,
        repo: &RepoId,
        commit: &str,
        protect: &BTreeSet<String>,
    ) -> Result<u64, Error> {
        check_commit(commit)?;
        let _lock = self.lock_repo(repo)?;
        let Some(repo_dir) = fsx::existing_dirs(&self.root, &[repo.cache_folder()])? else {
            return Ok(0);
        };
        // What an interrupted evict left aside would otherwise keep its blobs forever.
        self.clean_temporaries_locked(repo)?;
        let mut linked = self.linked_blobs(repo)?;
        let mut candidates = linked.remove(commit).unwrap_or_default();
        if let Some(sel) = self.read_record::<Selection>(SELECTIONS, repo, commit)? {
            candidates.extend(sel.files.iter().map(|f| f.etag().to_string()));
        }
        let keep: BTreeSet<&String> = linked.values().flatten().chain(protect).collect();
        self.remove_refs_to(repo, commit)?;
        if let Some(snapshots) = fsx::existing_dirs(&repo_dir, &["snapshots"])? {
            let dir = snapshots.join(commit);
            if fsx::is_real_dir(&dir)? {
                let aside = repo_dir.join(fsx::temp_name("evict"));
                std::fs::rename(&dir, &aside).map_err(|e| Error::io("rename", &dir, e))?;
                fsx::fsync_dir(&snapshots)?;
                fsx::fsync_dir(&repo_dir)?;
                fsx::remove_tree(&aside)?;
            }
        }
        if let Some(trees) = fsx::existing_dirs(&repo_dir, &["trees"])? {
            fsx::remove_file(&trees.join(format!("{commit}.json")))?;
        }
        let mut freed = 0;
        if let Some(blobs) = self.existing_blobs_dir(repo)? {
            for etag in candidates
                .iter()
                .filter(|e| !keep.contains(e) && layout::check_etag(e).is_ok())
            {
                let path = blobs.join(etag);
                let size = match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_file() => m.len(),
                    _ => continue,
                };
                if fsx::remove_file(&path)? {
                    freed += size;
                }
                self.remove_record(FINGERPRINTS, repo, etag)?;
            }
            fsx::fsync_dir(&blobs)?;
        }
        self.remove_record(SELECTIONS, repo, commit)?;
        self.remove_record(USAGE, repo, commit)?;
        Ok(freed)
    }

    /// Blob names linked by each directory in `snapshots/` (temporary ones included, so a
    /// publish in progress keeps its blobs).
    fn linked_blobs(&self, repo: &RepoId) -> Result<BTreeMap<String, BTreeSet<String>>, Error> {
        let mut out = BTreeMap::new();
        let Some(snapshots) =
            fsx::existing_dirs(&self.root, &[repo.cache_folder().as_str(), "snapshots"])?
        else {
            return Ok(out);
        };
        let entries =
            std::fs::read_dir(&snapshots).map_err(|e| Error::io("list", &snapshots, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &snapshots, e))?;
            let file_name = entry.file_name();
            let (Some(name), true) = (
                file_name.to_str(),
                entry.file_type().is_ok_and(|t| t.is_dir()),
            ) else {
                continue;
            };
            let links = fsx::symlinks_under(&entry.path())?;
            let etags = links
                .iter()
                .filter_map(|(_, target)| etag_of_target(target))
                .collect();
            out.insert(name.to_string(), etags);
        }
        Ok(out)
    }

    /// Refs of `repo` by the commit they hold.
    fn refs(&self, repo: &RepoId) -> Result<BTreeMap<String, Vec<String>>, Error> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, _, commit) in self.ref_files(repo)? {
            out.entry(commit).or_default().push(name);
        }
        Ok(out)
    }

    fn remove_refs_to(&self, repo: &RepoId, commit: &str) -> Result<(), Error> {
        for (_, path, held) in self.ref_files(repo)? {
            if held == commit && fsx::remove_file(&path)? {
                fsx::fsync_dir(path.parent().unwrap_or(Path::new("/")))?;
            }
        }
        Ok(())
    }

    /// Every ref file (name, path, commit it holds), walking real directories only.
    fn ref_files(&self, repo: &RepoId) -> Result<Vec<(String, PathBuf, String)>, Error> {
        let mut out = Vec::new();
        let Some(refs) = fsx::existing_dirs(&self.root, &[repo.cache_folder().as_str(), "refs"])?
        else {
            return Ok(out);
        };
        let mut stack = vec![(refs, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let full = format!("{prefix}{name}");
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                } else if kind.is_dir() {
                    stack.push((entry.path(), format!("{full}/")));
                } else if kind.is_file() {
                    let path = entry.path();
                    let mut held = String::new();
                    match fsx::open_read(&path) {
                        Ok(mut f) => {
                            let _ = f.read_to_string(&mut held);
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => return Err(fsx::open_error("open", &path, e).into()),
                    }
                    out.push((full, path, held.trim().to_string()));
                }
            }
        }
        Ok(out)
    }
}

/// The model id of a cache folder (`models--org--name` -> `org/name`).
fn repo_of_folder(name: &str) -> Option<RepoId> {
    let id = name.strip_prefix("models--")?.replace("--", "/");
    let repo = RepoId::parse(&id).ok()?;
    (repo.cache_folder() == name).then_some(repo)
}
