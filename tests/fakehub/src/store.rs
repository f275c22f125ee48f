//! The fake's data: repositories, their revisions (name -> commit) and commits (a sorted file
//! listing whose bytes live on disk or in memory), plus an index of LFS content by sha256 for
//! the CDN listener.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::hashing::{self, git_blob_oid, is_lfs, lfs_pointer, sha256_hex, to_hex};

/// Where a file's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum FileData {
    /// A file on disk, read on every request.
    Disk(PathBuf),
    /// Bytes held in memory.
    Memory(Bytes),
}

/// LFS facts of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsInfo {
    /// sha256 (hex) of the content: the blob name in the Hub cache.
    pub sha256: String,
    /// Length of the LFS pointer text git stores instead of the content.
    pub pointer_size: u64,
}

/// One file of a commit.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Path in the repository, verbatim (may be hostile when added by `add_repo_files`).
    pub path: String,
    /// Content length in bytes.
    pub size: u64,
    /// Git blob id: of the content, or of the LFS pointer for LFS files.
    pub oid: String,
    /// Set for LFS files.
    pub lfs: Option<LfsInfo>,
    pub(crate) data: FileData,
}

impl FileEntry {
    /// The blob name a Hub cache uses: sha256 for LFS files, the git oid otherwise.
    pub fn etag(&self) -> &str {
        self.lfs.as_ref().map_or(&self.oid, |l| &l.sha256)
    }
}

/// A commit: an immutable, sorted file listing.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Repository id, e.g. `org/name`.
    pub repo: String,
    /// 40-hex commit id (sha1 over the sorted listing).
    pub id: String,
    /// Files sorted by path.
    pub files: Arc<Vec<FileEntry>>,
    /// The tree listing (directories and files, sorted by path) as the Hub serves it.
    pub(crate) tree: Arc<Vec<Value>>,
}

impl Commit {
    fn new(repo: &str, files: Vec<FileEntry>) -> Commit {
        // Sorted by path; a later file with the same path replaces an earlier one.
        let by_path: BTreeMap<String, FileEntry> =
            files.into_iter().map(|f| (f.path.clone(), f)).collect();
        let files: Vec<FileEntry> = by_path.into_values().collect();
        let mut h = Sha1::new();
        for f in &files {
            h.update(format!("{}\0{}\0{}\n", f.path, f.oid, f.size).as_bytes());
        }
        let id = to_hex(&h.finalize());
        let tree = Arc::new(tree_listing(&id, &files));
        Commit {
            repo: repo.to_string(),
            id,
            files: Arc::new(files),
            tree,
        }
    }

    /// The file at `path`, if any.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }
}

/// Directories (every parent of every path, empty components skipped) and files, sorted.
fn tree_listing(commit: &str, files: &[FileEntry]) -> Vec<Value> {
    let mut dirs = BTreeSet::new();
    for f in files {
        let mut end = 0;
        while let Some(i) = f.path[end..].find('/') {
            let dir = &f.path[..end + i];
            if !dir.is_empty() && !dir.ends_with('/') {
                dirs.insert(dir.to_string());
            }
            end += i + 1;
        }
    }
    let mut items: Vec<(String, Value)> = dirs
        .into_iter()
        .map(|d| {
            let oid = to_hex(&Sha1::digest(format!("tree {commit} {d}").as_bytes()));
            let v = json!({"type": "directory", "oid": oid, "size": 0, "path": d});
            (d, v)
        })
        .collect();
    for f in files {
        let mut v = json!({"type": "file", "oid": f.oid, "size": f.size, "path": f.path});
        if let Some(l) = &f.lfs {
            v["lfs"] = json!({"oid": l.sha256, "size": f.size, "pointerSize": l.pointer_size});
        }
        items.push((f.path.clone(), v));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.into_iter().map(|(_, v)| v).collect()
}

#[derive(Debug, Default)]
struct RepoState {
    refs: HashMap<String, String>,
    commits: HashMap<String, Commit>,
}

/// All repositories.
#[derive(Debug, Default)]
pub(crate) struct Store {
    repos: HashMap<String, RepoState>,
    by_sha256: HashMap<String, FileEntry>,
}

/// Why a lookup failed: the Hub's `X-Error-Code` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    Repo,
    Revision,
}

impl Store {
    /// Records `commit` and points `revision` at it.
    pub(crate) fn insert(&mut self, revision: &str, commit: Commit) {
        for f in commit.files.iter() {
            if let Some(l) = &f.lfs {
                self.by_sha256.insert(l.sha256.clone(), f.clone());
            }
        }
        let repo = self.repos.entry(commit.repo.clone()).or_default();
        repo.refs.insert(revision.to_string(), commit.id.clone());
        repo.commits.insert(commit.id.clone(), commit);
    }

    pub(crate) fn has_repo(&self, repo: &str) -> bool {
        self.repos.contains_key(repo)
    }

    /// The commit `rev` (a revision name or a full commit id) names in `repo`.
    pub(crate) fn resolve(&self, repo: &str, rev: &str) -> Result<Commit, Missing> {
        let r = self.repos.get(repo).ok_or(Missing::Repo)?;
        let id = r.refs.get(rev).map_or(rev, String::as_str);
        r.commits.get(id).cloned().ok_or(Missing::Revision)
    }

    /// An LFS file by content sha256.
    pub(crate) fn lfs_blob(&self, sha256: &str) -> Option<FileEntry> {
        self.by_sha256.get(sha256).cloned()
    }
}

/// Builds a commit from every regular file under `dir` (symlinks followed, `.git` skipped),
/// hashing files in parallel.
pub(crate) fn commit_from_dir(repo: &str, dir: &Path) -> anyhow::Result<Commit> {
    let mut found = Vec::new();
    walk(dir, "", &mut found).with_context(|| format!("listing {}", dir.display()))?;
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(found.len().max(1));
    let results: Vec<anyhow::Result<Vec<FileEntry>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((rel, abs, size)) = found.get(i) else {
                            return Ok(out);
                        };
                        out.push(disk_entry(rel, abs, *size)?);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("hashing thread panicked")))
            })
            .collect()
    });
    let mut files = Vec::with_capacity(found.len());
    for r in results {
        files.extend(r?);
    }
    Ok(Commit::new(repo, files))
}

fn disk_entry(rel: &str, abs: &Path, size: u64) -> anyhow::Result<FileEntry> {
    let lfs = is_lfs(rel, size);
    let digest =
        hashing::hash_file(abs, size, lfs).with_context(|| format!("hashing {}", abs.display()))?;
    Ok(entry(
        rel.to_string(),
        size,
        lfs,
        digest,
        FileData::Disk(abs.to_path_buf()),
    ))
}

fn entry(path: String, size: u64, lfs: bool, digest: String, data: FileData) -> FileEntry {
    if lfs {
        let pointer = lfs_pointer(&digest, size);
        FileEntry {
            path,
            size,
            oid: git_blob_oid(pointer.as_bytes()),
            lfs: Some(LfsInfo {
                sha256: digest,
                pointer_size: pointer.len() as u64,
            }),
            data,
        }
    } else {
        FileEntry {
            path,
            size,
            oid: digest,
            lfs: None,
            data,
        }
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf, u64)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".git" {
            continue;
        }
        let abs = e.path();
        let rel = format!("{prefix}{name}");
        let meta = std::fs::metadata(&abs)?;
        if meta.is_dir() {
            walk(&abs, &format!("{rel}/"), out)?;
        } else if meta.is_file() {
            out.push((rel, abs, meta.len()));
        }
    }
    Ok(())
}

/// Builds a commit from in-memory files; names are kept verbatim, however hostile.
pub(crate) fn commit_from_files(repo: &str, files: Vec<(String, Vec<u8>)>) -> Commit {
    let entries = files
        .into_iter()
        .map(|(path, content)| {
            let size = content.len() as u64;
            let lfs = is_lfs(&path, size);
            let digest = if lfs {
                sha256_hex(&content)
            } else {
                git_blob_oid(&content)
            };
            entry(
                path,
                size,
                lfs,
                digest,
                FileData::Memory(Bytes::from(content)),
            )
        })
        .collect();
    Commit::new(repo, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_has_directories_and_lfs() {
        let c = commit_from_files(
            "o/n",
            vec![
                ("sub/dir/x.json".into(), b"{}".to_vec()),
                ("model.safetensors".into(), vec![1, 2, 3]),
                ("../evil".into(), b"x".to_vec()),
                ("/abs".into(), b"y".to_vec()),
            ],
        );
        let paths: Vec<&str> = c.tree.iter().map(|v| v["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "..",
                "../evil",
                "/abs",
                "model.safetensors",
                "sub",
                "sub/dir",
                "sub/dir/x.json"
            ]
        );
        let st = c.file("model.safetensors").unwrap();
        let lfs = st.lfs.as_ref().unwrap();
        assert_eq!(lfs.sha256, sha256_hex(&[1, 2, 3]));
        assert_eq!(st.oid, git_blob_oid(lfs_pointer(&lfs.sha256, 3).as_bytes()));
        assert_eq!(c.id.len(), 40);
        // Deterministic: the same listing gives the same commit.
        let again = commit_from_files("o/n", vec![("model.safetensors".into(), vec![1, 2, 3])]);
        let once = commit_from_files("o/n", vec![("model.safetensors".into(), vec![1, 2, 3])]);
        assert_eq!(again.id, once.id);
    }

    #[test]
    fn dir_and_memory_agree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/c.txt"), b"hello\n").unwrap();
        std::fs::write(d.path().join("w.bin"), b"weights").unwrap();
        std::fs::create_dir(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/HEAD"), b"ref").unwrap();
        let disk = commit_from_dir("o/n", d.path()).unwrap();
        let mem = commit_from_files(
            "o/n",
            vec![
                ("w.bin".into(), b"weights".to_vec()),
                ("a/b/c.txt".into(), b"hello\n".to_vec()),
            ],
        );
        assert_eq!(disk.id, mem.id);
        assert_eq!(disk.files.len(), 2);
        assert_eq!(
            disk.file("a/b/c.txt").unwrap().oid,
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
