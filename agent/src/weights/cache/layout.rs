//! Names in the Hub cache layout and the `trees/<commit>.json` file that `huggingface_hub` reads
//! (`_tree_cache.py` in 2.4: `format_version` 1; per file `size`, `blob_id`, and for LFS files
//! `lfs_sha256` and `lfs_size`; any other shape is ignored).

use std::collections::BTreeMap;
use std::path::Path;

use super::super::{Error, TreeEntry, safe_relative_path};

/// Version of the trees file format that `huggingface_hub` accepts.
pub(super) const TREES_FORMAT_VERSION: u32 = 1;

fn hostile(what: &str, value: &str, reason: &str) -> Error {
    Error::HostileName {
        path: format!("{what} {}", value.chars().take(100).collect::<String>()),
        reason: reason.to_string(),
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is a full commit sha as `huggingface_hub` recognises one (40 lowercase hex).
pub(super) fn is_commit(s: &str) -> bool {
    s.len() == 40 && is_lower_hex(s)
}

/// A commit sha: 40 lowercase hex digits.
pub(super) fn check_commit(commit: &str) -> Result<(), Error> {
    if is_commit(commit) {
        Ok(())
    } else {
        Err(hostile(
            "commit",
            commit,
            "not a 40-digit lowercase hex commit sha",
        ))
    }
}

/// A blob name: a git sha1 (40) or a sha256 (64), lowercase hex.
pub(super) fn check_etag(etag: &str) -> Result<(), Error> {
    if matches!(etag.len(), 40 | 64) && is_lower_hex(etag) {
        Ok(())
    } else {
        Err(hostile("blob", etag, "not a lowercase hex sha1 or sha256"))
    }
}

/// A branch or tag name used as `refs/<revision>` (may contain `/`, as `refs/pr/1`).
pub(super) fn check_revision(revision: &str) -> Result<(), Error> {
    safe_relative_path(revision)?;
    if revision
        .split('/')
        .any(|c| c.starts_with(super::fsx::TEMP_PREFIX))
    {
        return Err(hostile("revision", revision, "reserved name"));
    }
    Ok(())
}

/// A tree entry's path and blob name, both checked.
pub(super) fn check_entry(entry: &TreeEntry) -> Result<(), Error> {
    safe_relative_path(&entry.path)?;
    check_etag(entry.etag())
}

/// The snapshot symlink's target: one `../` per path component plus one for `snapshots/<commit>`
/// (`x.json` -> `../../blobs/E`, `sub/dir/x.json` -> `../../../../blobs/E`).
pub fn link_target(path: &str, etag: &str) -> String {
    let depth = path.split('/').count() + 1;
    format!("{}blobs/{etag}", "../".repeat(depth))
}

/// The blob name a snapshot symlink points at, when its target has our shape.
pub(super) fn etag_of_target(target: &Path) -> Option<String> {
    let etag = target.file_name()?.to_str()?;
    let parent = target.parent()?.file_name()?.to_str()?;
    (parent == "blobs" && check_etag(etag).is_ok()).then(|| etag.to_string())
}

/// The path components above a file (`a/b/c` -> `a`, `b`).
pub(super) fn parents(path: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    parts
}

/// One file of the trees file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct TreesFile {
    pub size: u64,
    pub blob_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs_size: Option<u64>,
}

impl TreesFile {
    fn of(entry: &TreeEntry) -> TreesFile {
        TreesFile {
            size: entry.size,
            blob_id: entry.oid.clone(),
            lfs_sha256: entry.lfs.as_ref().map(|l| l.sha256.clone()),
            lfs_size: entry.lfs.as_ref().map(|l| l.size),
        }
    }

    /// The blob name this file is stored under.
    pub fn etag(&self) -> &str {
        self.lfs_sha256.as_deref().unwrap_or(&self.blob_id)
    }
}

/// `trees/<commit>.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Trees {
    pub format_version: u32,
    pub files: BTreeMap<String, TreesFile>,
}

impl Trees {
    /// The trees file for a whole upstream tree; every path and blob name checked.
    pub fn of(tree: &[TreeEntry]) -> Result<Trees, Error> {
        let mut files = BTreeMap::new();
        for entry in tree {
            check_entry(entry)?;
            files.insert(entry.path.clone(), TreesFile::of(entry));
        }
        Ok(Trees {
            format_version: TREES_FORMAT_VERSION,
            files,
        })
    }

    /// Parses a trees file; `None` for any shape `huggingface_hub` would ignore.
    pub fn parse(bytes: &[u8]) -> Option<Trees> {
        let t: Trees = serde_json::from_slice(bytes).ok()?;
        (t.format_version == TREES_FORMAT_VERSION).then_some(t)
    }
}
