//! Re-verifying a published snapshot. Verification reports problems and changes nothing; the
//! caller repairs by syncing again.

use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::path::Path;

use super::super::{Error, Lfs, RepoId, TreeEntry, safe_relative_path};
use super::HubCache;
use super::hash::hash_file;
use super::layout::{self, Trees, check_commit, check_entry, link_target};
use super::report::{ProblemKind, VerifyMode, VerifyReport};
use super::state::{Fingerprint, SELECTIONS, Selection};
use crate::fsx;

impl HubCache {
    /// Re-verifies `snapshots/<commit>` of `repo` without changing anything: every file that
    /// publish linked (our selection record; without one, the trees file's files present in
    /// the snapshot) must be a symlink to its blob, the blob present with the right size and,
    /// per `mode`, an unchanged fingerprint or the right content hash.
    pub fn verify(
        &self,
        repo: &RepoId,
        commit: &str,
        mode: VerifyMode,
    ) -> Result<VerifyReport, Error> {
        self.verify_only(repo, commit, mode, None)
    }

    /// Re-verifies cheaply first, thoroughly where it matters: the fingerprint check of
    /// [`VerifyMode::Quick`], then a full hash of just the blobs whose fingerprint changed (a
    /// blob that still hashes right gets its fingerprint recorded again, so a `chmod` or a
    /// `touch` costs one hash, once). With `only`, just those paths of the snapshot (a path
    /// names a file or every file under a directory). Changes nothing in the cache.
    pub fn reverify(
        &self,
        repo: &RepoId,
        commit: &str,
        only: Option<&BTreeSet<String>>,
    ) -> Result<VerifyReport, Error> {
        let mut quick = self.verify_only(repo, commit, VerifyMode::Quick, only)?;
        let changed: BTreeSet<String> = quick
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::ChangedFingerprint)
            .map(|p| p.path.clone())
            .collect();
        if changed.is_empty() {
            return Ok(quick);
        }
        let full = self.verify_only(repo, commit, VerifyMode::Full, Some(&changed))?;
        quick
            .problems
            .retain(|p| p.kind != ProblemKind::ChangedFingerprint);
        quick.problems.extend(
            full.problems
                .into_iter()
                .filter(|p| changed.contains(&p.path) && p.kind == ProblemKind::HashMismatch),
        );
        quick.mode = VerifyMode::Full;
        quick.hashed = full.hashed;
        Ok(quick)
    }

    /// The files publish linked into `snapshots/<commit>` (our selection record; without one,
    /// the trees file's files present in the snapshot); empty when it is not published.
    pub fn snapshot_files(&self, repo: &RepoId, commit: &str) -> Result<Vec<TreeEntry>, Error> {
        check_commit(commit)?;
        if let Some(sel) = self.read_record::<Selection>(SELECTIONS, repo, commit)? {
            return Ok(sel.files);
        }
        let folder = repo.cache_folder();
        let snap = fsx::existing_dirs(&self.root, &[folder.as_str(), "snapshots", commit])?;
        let trees = self.read_trees(repo, commit)?;
        Ok(snap.map_or_else(Vec::new, |s| present_in(&s, trees.as_ref())))
    }

    fn verify_only(
        &self,
        repo: &RepoId,
        commit: &str,
        mode: VerifyMode,
        only: Option<&BTreeSet<String>>,
    ) -> Result<VerifyReport, Error> {
        check_commit(commit)?;
        let folder = repo.cache_folder();
        let mut report = VerifyReport {
            repo: repo.to_string(),
            commit: commit.to_string(),
            mode,
            files: 0,
            bytes: 0,
            hashed: 0,
            problems: Vec::new(),
        };
        let trees = self.read_trees(repo, commit)?;
        if trees.is_none() {
            report.problem(
                &format!("trees/{commit}.json"),
                ProblemKind::MissingTrees,
                "absent or unreadable",
            );
        }
        let snap = fsx::existing_dirs(&self.root, &[folder.as_str(), "snapshots", commit])?;
        let Some(snapshot) = snap else {
            report.problem(
                &format!("snapshots/{commit}"),
                ProblemKind::MissingSnapshot,
                "not published",
            );
            return Ok(report);
        };
        let mut files = match self.read_record::<Selection>(SELECTIONS, repo, commit)? {
            Some(sel) => sel.files,
            None => present_in(&snapshot, trees.as_ref()),
        };
        if let Some(only) = only {
            files.retain(|e| selected_by(only, &e.path));
        }
        report.files = files.len();
        report.bytes = files.iter().map(TreeEntry::content_size).sum();
        let mut hashed = HashMap::new();
        for entry in &files {
            check_entry(entry)?;
            self.check_file(
                repo,
                &snapshot,
                trees.as_ref(),
                entry,
                &mut hashed,
                &mut report,
            )?;
        }
        report.hashed = hashed.len();
        Ok(report)
    }

    fn read_trees(&self, repo: &RepoId, commit: &str) -> Result<Option<Trees>, Error> {
        let Some(dir) = fsx::existing_dirs(&self.root, &[repo.cache_folder().as_str(), "trees"])?
        else {
            return Ok(None);
        };
        let path = dir.join(format!("{commit}.json"));
        Ok(fsx::read_optional(&path)?.and_then(|bytes| Trees::parse(&bytes)))
    }

    fn check_file(
        &self,
        repo: &RepoId,
        snapshot: &Path,
        trees: Option<&Trees>,
        entry: &TreeEntry,
        hashed: &mut HashMap<String, bool>,
        report: &mut VerifyReport,
    ) -> Result<(), Error> {
        let (path, etag) = (entry.path.as_str(), entry.etag());
        if let Some(t) = trees
            && t.files.get(path).is_none_or(|f| f.etag() != etag)
        {
            report.problem(
                path,
                ProblemKind::NotInTrees,
                "offline readers will not require it",
            );
        }
        let (link_ok, found) = link_problem(snapshot, path, etag)?;
        if let Some((kind, detail)) = found {
            report.problem(path, kind, detail);
        }
        if !link_ok {
            return Ok(());
        }
        if let Some((kind, detail)) = self.blob_problem(repo, entry, report.mode, hashed)? {
            report.problem(path, kind, detail);
        }
        Ok(())
    }

    /// What is wrong with the blob behind a snapshot entry, if anything.
    fn blob_problem(
        &self,
        repo: &RepoId,
        entry: &TreeEntry,
        mode: VerifyMode,
        hashed: &mut HashMap<String, bool>,
    ) -> Result<Option<(ProblemKind, String)>, Error> {
        let etag = entry.etag();
        let Some(blobs) = self.existing_blobs_dir(repo)? else {
            return Ok(Some((
                ProblemKind::DanglingLink,
                "no blobs directory".to_string(),
            )));
        };
        let blob = blobs.join(etag);
        let meta = match std::fs::symlink_metadata(&blob) {
            Ok(m) if m.is_file() => m,
            Ok(_) => {
                return Ok(Some((
                    ProblemKind::DanglingLink,
                    "blob is not a regular file".to_string(),
                )));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(Some((
                    ProblemKind::DanglingLink,
                    format!("blob {etag} is missing"),
                )));
            }
            Err(e) => return Err(Error::io("stat", &blob, e)),
        };
        if meta.len() != entry.content_size() {
            let detail = format!("{} bytes, expected {}", meta.len(), entry.content_size());
            return Ok(Some((ProblemKind::WrongSize, detail)));
        }
        let problem = match mode {
            VerifyMode::Quick => match self.fingerprint_matches(repo, etag, &meta)? {
                Some(true) => None,
                Some(false) => Some((ProblemKind::ChangedFingerprint, "changed since verified")),
                None => Some((ProblemKind::ChangedFingerprint, "never verified here")),
            },
            VerifyMode::Full => {
                let ok = match hashed.get(etag) {
                    Some(ok) => *ok,
                    None => {
                        let ok = hash_file(&blob, &entry.digest())?;
                        if ok {
                            self.record_if_unchanged(repo, etag, &blob, &meta)?;
                        }
                        *hashed.entry(etag.to_string()).or_insert(ok)
                    }
                };
                (!ok).then_some((
                    ProblemKind::HashMismatch,
                    "content does not match its digest",
                ))
            }
        };
        Ok(problem.map(|(k, d)| (k, d.to_string())))
    }
}

impl HubCache {
    /// Records a blob's fingerprint after a passing hash, unless it changed while being hashed.
    fn record_if_unchanged(
        &self,
        repo: &RepoId,
        etag: &str,
        blob: &Path,
        before: &std::fs::Metadata,
    ) -> Result<(), Error> {
        match std::fs::symlink_metadata(blob) {
            Ok(after) if Fingerprint::of(&after) == Fingerprint::of(before) => {
                self.record_fingerprint(repo, etag, &after)
            }
            _ => Ok(()),
        }
    }
}

/// Whether `path` is one of `only` or lies under one of them.
fn selected_by(only: &BTreeSet<String>, path: &str) -> bool {
    only.contains(path)
        || only.iter().any(|o| {
            path.strip_prefix(o.as_str())
                .is_some_and(|r| r.starts_with('/'))
        })
}

/// Whether the snapshot entry is a symlink (so its blob is worth checking), and what is wrong
/// with it, if anything.
fn link_problem(
    snapshot: &Path,
    path: &str,
    etag: &str,
) -> Result<(bool, Option<(ProblemKind, String)>), Error> {
    match fsx::existing_dirs(snapshot, &layout::parents(path)) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Ok((
                false,
                Some((ProblemKind::Missing, "its directory is missing".to_string())),
            ));
        }
        Err(e) => return Ok((false, Some((ProblemKind::NotALink, e.to_string())))),
    }
    let link = snapshot.join(path);
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(&link).map_err(|e| Error::io("readlink", &link, e))?;
            let expected = link_target(path, etag);
            if target == Path::new(&expected) {
                return Ok((true, None));
            }
            let detail = format!("points to {}, expected {expected}", target.display());
            Ok((true, Some((ProblemKind::WrongTarget, detail))))
        }
        // Still check the blob: a re-sync replaces the entry but needs the blob.
        Ok(_) => Ok((
            true,
            Some((
                ProblemKind::NotALink,
                "not a symlink to its blob".to_string(),
            )),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok((
            false,
            Some((ProblemKind::Missing, "not in the snapshot".to_string())),
        )),
        Err(e) => Err(Error::io("stat", &link, e)),
    }
}

/// Without a selection record: the trees file's entries that the snapshot has an entry for.
fn present_in(snapshot: &Path, trees: Option<&Trees>) -> Vec<TreeEntry> {
    let Some(trees) = trees else {
        return Vec::new();
    };
    trees
        .files
        .iter()
        .filter(|(path, _)| safe_relative_path(path).is_ok())
        .filter(|(path, _)| std::fs::symlink_metadata(snapshot.join(path)).is_ok())
        .map(|(path, f)| TreeEntry {
            path: path.clone(),
            size: f.size,
            oid: f.blob_id.clone(),
            lfs: f.lfs_sha256.clone().map(|sha256| Lfs {
                sha256,
                size: f.lfs_size.unwrap_or(f.size),
            }),
        })
        .collect()
}
