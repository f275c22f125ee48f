//! Where a changed path lies in the cache layout, and which changes are worth a look.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use super::super::cache::TEMP_PREFIX;

/// A changed path, placed in the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
    /// The cache root itself.
    Root,
    /// A repo folder, or its `snapshots/` or `blobs/` directory, appeared or vanished.
    Repo { folder: String },
    /// `snapshots/<commit>` itself (`path: None`) or something under it.
    Snapshot {
        folder: String,
        commit: String,
        path: Option<String>,
    },
    /// `blobs/<etag>`.
    Blob { folder: String, etag: String },
}

impl Place {
    /// The repo folder (`models--org--name`) it lies in.
    pub fn folder(&self) -> Option<&str> {
        match self {
            Place::Root => None,
            Place::Repo { folder }
            | Place::Snapshot { folder, .. }
            | Place::Blob { folder, .. } => Some(folder),
        }
    }

    /// Whether directories we watch may have been created, removed or renamed.
    pub fn is_structural(&self) -> bool {
        matches!(
            self,
            Place::Root | Place::Repo { .. } | Place::Snapshot { path: None, .. }
        )
    }
}

/// Places `path` (under `root`) in the layout; `None` for what we do not verify (refs, trees,
/// anything outside the layout).
pub(super) fn classify(root: &Path, path: &Path) -> Option<Place> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            _ => return None,
        }
    }
    let place = match parts.as_slice() {
        [] => Place::Root,
        [folder] | [folder, "snapshots" | "blobs"] if folder.starts_with("models--") => {
            Place::Repo {
                folder: folder.to_string(),
            }
        }
        [folder, "snapshots", commit, rest @ ..] => Place::Snapshot {
            folder: folder.to_string(),
            commit: commit.to_string(),
            path: (!rest.is_empty()).then(|| rest.join("/")),
        },
        [folder, "blobs", etag] => Place::Blob {
            folder: folder.to_string(),
            etag: etag.to_string(),
        },
        _ => return None,
    };
    Some(place)
}

/// Whether a change at `path` can matter: not a partial download (`.incomplete`) and not one
/// of our temporary names (a snapshot being built, a file being replaced).
pub(super) fn relevant(path: &Path) -> bool {
    let temp = path
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with(TEMP_PREFIX));
    let partial = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".incomplete"));
    !temp && !partial
}

/// Which files of a snapshot to re-verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every file.
    All,
    /// These paths (a directory's path covers every file under it).
    Paths(BTreeSet<String>),
}

impl Default for Scope {
    fn default() -> Self {
        Scope::Paths(BTreeSet::new())
    }
}

impl Scope {
    pub fn paths(paths: impl IntoIterator<Item = String>) -> Scope {
        Scope::Paths(paths.into_iter().collect())
    }

    /// Widens `self` by `other`.
    pub fn merge(&mut self, other: Scope) {
        match (&mut *self, other) {
            (Scope::All, _) => {}
            (_, Scope::All) => *self = Scope::All,
            (Scope::Paths(a), Scope::Paths(b)) => a.extend(b),
        }
    }
}
