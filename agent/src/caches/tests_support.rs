//! Helpers shared by the caches tests: a cache root in a tempdir, the current uid/gid as the
//! scope owner (chown to oneself needs no root), files written with parents.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::layout::{CacheRoot, Owner};
use super::scope::{Scope, ScopeKey, ensure_scope};

/// A digest made from `n`.
pub(crate) fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

/// A cache root in a fresh tempdir (kept alive by the returned guard).
pub(crate) fn root() -> (tempfile::TempDir, CacheRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = CacheRoot::new(dir.path());
    (dir, root)
}

/// The uid/gid this test runs as (the owner of a file it creates).
pub(crate) fn me(dir: &Path) -> Owner {
    let m = std::fs::metadata(dir).unwrap();
    Owner {
        uid: m.uid(),
        gid: m.gid(),
    }
}

/// A scope of `model` on image `n`, created.
pub(crate) fn scope(root: &CacheRoot, model: &str, n: u8) -> Scope {
    let key = ScopeKey::new(model, &digest(n), "NVIDIA H100 80GB HBM3").unwrap();
    let owner = me(root.compile_dir().parent().unwrap());
    ensure_scope(root, &key, owner).unwrap()
}

/// Writes `bytes` at `path`, creating its parents.
pub(crate) fn put(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}
