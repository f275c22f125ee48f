//! Re-verifying a published snapshot, and the content hashes (sha256 for LFS files, git blob
//! sha1 for plain ones). Verification reports problems and changes nothing; the caller repairs
//! by syncing again.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::path::Path;

use sha1::Digest as _;

use super::super::{Digest, Error, Lfs, RepoId, TreeEntry, safe_relative_path};
use super::HubCache;
use super::fsx;
use super::layout::{self, Trees, check_commit, check_entry, link_target};
use super::state::{SELECTIONS, Selection};

/// Read buffer for hashing.
const BUF: usize = 1 << 20;

/// How thoroughly to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Links, presence, sizes and the fingerprints recorded when each blob was verified.
    Quick,
    /// Links, presence, sizes and a full hash of every blob.
    Full,
}

/// What is wrong with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// `snapshots/<commit>` does not exist.
    MissingSnapshot,
    /// `trees/<commit>.json` is absent or unreadable: offline readers cannot tell that the
    /// snapshot is incomplete.
    MissingTrees,
    /// The file is not in the trees file (or with another blob), so readers do not require it.
    NotInTrees,
    /// The file is missing from the snapshot.
    Missing,
    /// The snapshot entry is not a symlink (or a directory on its way is one).
    NotALink,
    /// The symlink points somewhere else than its blob.
    WrongTarget,
    /// The blob the link points at is missing or not a regular file.
    DanglingLink,
    /// The blob has the wrong size.
    WrongSize,
    /// The blob's metadata changed since it was verified, or it never was (Quick).
    ChangedFingerprint,
    /// The blob's content does not match its digest (Full).
    HashMismatch,
}

/// One problem found by [`HubCache::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The file's path in the repository (or the cache entry for snapshot-wide problems).
    pub path: String,
    /// What is wrong.
    pub kind: ProblemKind,
    /// Details for people.
    pub detail: String,
}

/// The result of [`HubCache::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    /// Model id.
    pub repo: String,
    /// Commit verified.
    pub commit: String,
    /// How.
    pub mode: VerifyMode,
    /// Files the snapshot should contain.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// What is wrong; empty when the snapshot is complete and intact.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, path: &str, kind: ProblemKind, detail: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            kind,
            detail: detail.into(),
        });
    }
}

/// Git's blob id of `content`: `sha1("blob <len>\0" + content)`, hex.
pub fn git_blob_sha1(content: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the file at `path` (opened without following a symlink) has `digest`, streamed
/// with a 1 MiB buffer.
pub fn hash_file(path: &Path, digest: &Digest) -> Result<bool, Error> {
    let mut file = fsx::open_read(path).map_err(|e| fsx::open_error("open", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut buf = vec![0u8; BUF];
    let mut feed = |update: &mut dyn FnMut(&[u8])| -> Result<(), Error> {
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => update(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", path, e)),
            }
        }
    };
    let (actual, expected) = match digest {
        Digest::Sha256(expected) => {
            let mut h = sha2::Sha256::new();
            feed(&mut |d| h.update(d))?;
            (hex(&h.finalize()), expected)
        }
        Digest::GitSha1(expected) => {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            feed(&mut |d| h.update(d))?;
            (hex(&h.finalize()), expected)
        }
    };
    Ok(actual.eq_ignore_ascii_case(expected))
}

/// Whether `path` is a regular file (not a symlink) with the entry's size and digest.
pub fn verify_blob(path: &Path, entry: &TreeEntry) -> Result<bool, Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == entry.content_size() => hash_file(path, &entry.digest()),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

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
        check_commit(commit)?;
        let folder = repo.cache_folder();
        let mut report = VerifyReport {
            repo: repo.to_string(),
            commit: commit.to_string(),
            mode,
            files: 0,
            bytes: 0,
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
        let files = match self.read_record::<Selection>(SELECTIONS, repo, commit)? {
            Some(sel) => sel.files,
            None => present_in(&snapshot, trees.as_ref()),
        };
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
        Ok(report)
    }

    fn read_trees(&self, repo: &RepoId, commit: &str) -> Result<Option<Trees>, Error> {
        let Some(dir) = fsx::existing_dirs(&self.root, &[repo.cache_folder().as_str(), "trees"])?
        else {
            return Ok(None);
        };
        let path = dir.join(format!("{commit}.json"));
        let mut bytes = Vec::new();
        match fsx::open_read(&path) {
            Ok(mut f) => f
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io("read", &path, e))?,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fsx::open_error("open", &path, e)),
        };
        Ok(Trees::parse(&bytes))
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
                    None => *hashed
                        .entry(etag.to_string())
                        .or_insert(hash_file(&blob, &entry.digest())?),
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
