//! Names in the Hub cache layout and the `trees/<commit>.json` file that `huggingface_hub` reads
//! (`_tree_cache.py` in 2.4: `format_version` 1; per file `size`, `blob_id`, and for LFS files
//! `lfs_sha256` and `lfs_size`; any other shape is ignored).

use std::collections::BTreeMap;
use std::path::Path;

use super::super::{Error, TreeEntry, safe_relative_path, validate_revision};

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

/// A branch or tag name used as `refs/<revision>` (may contain `/`, as `refs/pr/1`): git's
/// ref-name rules, which also keep it clear of our temporary names (no component starts with
/// `.`).
pub(super) fn check_revision(revision: &str) -> Result<(), Error> {
    validate_revision(revision).map(|_| ())
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
    /// Parses a trees file; `None` for any shape `huggingface_hub` would ignore.
    pub fn parse(bytes: &[u8]) -> Option<Trees> {
        let t: Trees = serde_json::from_slice(bytes).ok()?;
        (t.format_version == TREES_FORMAT_VERSION).then_some(t)
    }
}

/// One file of the trees file, borrowed from its tree entry (no copy of the listing).
#[derive(serde::Serialize)]
struct TreesFileRef<'a> {
    size: u64,
    blob_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lfs_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lfs_size: Option<u64>,
}

/// Writes `trees/<commit>.json` for `listing` (sorted by path, paths unique, entries checked)
/// straight to `w`, without building a second copy of the listing in memory.
pub(super) fn write_trees(
    w: &mut impl std::io::Write,
    listing: &[&TreeEntry],
) -> std::io::Result<()> {
    use serde::ser::{SerializeMap, Serializer};

    struct Files<'a>(&'a [&'a TreeEntry]);
    impl serde::Serialize for Files<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for e in self.0 {
                let file = TreesFileRef {
                    size: e.size,
                    blob_id: &e.oid,
                    lfs_sha256: e.lfs.as_ref().map(|l| l.sha256.as_str()),
                    lfs_size: e.lfs.as_ref().map(|l| l.size),
                };
                map.serialize_entry(&e.path, &file)?;
            }
            map.end()
        }
    }
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        format_version: u32,
        files: Files<'a>,
    }
    let doc = Doc {
        format_version: TREES_FORMAT_VERSION,
        files: Files(listing),
    };
    serde_json::to_writer(w, &doc).map_err(std::io::Error::other)
}
