//! The import side of an artifact: its layer read into a staging tree, checked entry by entry
//! against the manifest, and the staged tree swapped in for an empty scope.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::super::Error;
use super::super::layout::{CacheRoot, Owner, SCOPE_SUBDIRS};
use super::super::scope::SCOPE_DIR_MODE;
use super::super::seal::{FileEntry, Manifest};
use super::super::walk::{self, Kind};
use super::{HashingReader, path_problem, refused};
use crate::fsx;

/// Reads `layer` (a gzip'd tar) into a new staging tree `staging` (must not exist), accepting
/// exactly the files of `manifest` (already [`super::check_manifest`]ed): each a regular file, once,
/// of its size and sha256. Files and directories get `owner`; files the manifest's permission
/// bits and mtime. On error the staging tree is removed.
pub fn unpack(
    layer: &Path,
    manifest: &Manifest,
    staging: &Path,
    owner: Owner,
) -> Result<(), Error> {
    let result = unpack_inner(layer, manifest, staging, owner);
    if result.is_err() {
        let _ = fsx::remove_tree(staging);
    }
    result
}

fn unpack_inner(
    layer: &Path,
    manifest: &Manifest,
    staging: &Path,
    owner: Owner,
) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .map_err(|e| Error::io("create", staging, e))?;
    for sub in SCOPE_SUBDIRS {
        make_dir(&staging.join(sub))?;
    }
    let mut wanted: BTreeMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let file = fsx::open_read(layer).map_err(|e| fsx::open_error("open", layer, e))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut archive = tar::Archive::new(gz);
    let io = |e| Error::io("read layer", layer, e);
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(|e| refused(format!("layer is not a valid tar.gz: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let name =
            String::from_utf8(raw).map_err(|_| refused("a layer entry's name is not UTF-8"))?;
        let kind = entry.header().entry_type();
        if let Some(why) = path_problem(name.trim_end_matches('/')) {
            return Err(refused(format!("layer entry {name:?}: {why}")));
        }
        if kind.is_dir() {
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(refused(format!(
                "layer entry {name:?} is a {kind:?}: only regular files are accepted"
            )));
        }
        let Some(f) = wanted.remove(name.as_str()) else {
            return Err(refused(format!(
                "layer holds {name:?}, which its manifest does not list (or lists once)"
            )));
        };
        let size = entry.header().entry_size().map_err(io)?;
        if size != f.size {
            return Err(refused(format!(
                "layer entry {name:?} is {size} bytes, the manifest says {}",
                f.size
            )));
        }
        write_file(&mut entry, staging, f, owner)?;
    }
    if let Some(missing) = wanted.keys().next() {
        return Err(refused(format!(
            "manifest lists {missing:?}, which is not in the layer ({} such files)",
            wanted.len()
        )));
    }
    // Directories made on the way belong to the scope's owner, as ensure_scope makes them.
    chown_dirs(staging, owner)?;
    Ok(())
}

fn make_dir(path: &Path) -> Result<(), Error> {
    match std::fs::DirBuilder::new().mode(SCOPE_DIR_MODE).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create", path, e)),
    }
}

/// Writes one entry's bytes to `staging/<path>`, checking its sha256.
fn write_file(
    entry: &mut impl Read,
    staging: &Path,
    f: &FileEntry,
    owner: Owner,
) -> Result<(), Error> {
    let dest = staging.join(&f.path);
    let mut dir = staging.to_path_buf();
    let parts: Vec<&str> = f.path.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        make_dir(&dir)?;
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(fsx::nofollow())
        .open(&dest)
        .map_err(|e| fsx::open_error("create", &dest, e))?;
    let mut reader = HashingReader {
        inner: entry,
        hasher: Sha256::new(),
    };
    let copied = std::io::copy(&mut reader, &mut out).map_err(|e| Error::io("write", &dest, e))?;
    let actual = format!("{:x}", reader.hasher.finalize());
    if copied != f.size || actual != f.sha256.to_ascii_lowercase() {
        return Err(refused(format!(
            "content of {:?} does not match its manifest (sha256 {actual}, expected {})",
            f.path, f.sha256
        )));
    }
    std::os::unix::fs::fchown(&out, Some(owner.uid), Some(owner.gid))
        .map_err(|e| Error::io("chown", &dest, e))?;
    out.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o777))
        .map_err(|e| Error::io("chmod", &dest, e))?;
    let mtime = system_time(f.mtime_ns);
    out.set_times(
        std::fs::FileTimes::new()
            .set_modified(mtime)
            .set_accessed(mtime),
    )
    .map_err(|e| Error::io("set mtime", &dest, e))?;
    Ok(())
}

fn system_time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

/// Gives every directory under (and including) `dir` to `owner`, mode 0775.
fn chown_dirs(dir: &Path, owner: Owner) -> Result<(), Error> {
    std::os::unix::fs::lchown(dir, Some(owner.uid), Some(owner.gid))
        .map_err(|e| Error::io("chown", dir, e))?;
    fsx::set_mode(dir, SCOPE_DIR_MODE)?;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            chown_dirs(&entry.path(), owner)?;
        }
    }
    Ok(())
}

/// Swaps the staged tree in for the scope's tree, which must hold nothing but its empty
/// subdirectories (a pod that started first keeps its own work, scratch included: the import
/// is dropped). The old, empty tree is removed.
pub fn install(root: &CacheRoot, scope: &str, staging: &Path) -> Result<(), Error> {
    let live = root.scope_dir(scope);
    let state = root.scope_state_dir(scope);
    let lock_path = state.join("seal.lock");
    let _lock = fsx::lock_exclusive(&lock_path).map_err(|e| Error::io("lock", &lock_path, e))?;
    // Anything but the empty subdirectories ensure_scope makes counts, the pod's scratch under
    // TMPDIR included: a pod that started meanwhile keeps what it wrote.
    let found = walk::walk(&live)?;
    let entries = found
        .entries
        .iter()
        .filter(|e| !(e.kind == Kind::Dir && SCOPE_SUBDIRS.contains(&e.rel.as_str())))
        .count()
        + found.skipped.len();
    if entries > 0 {
        let _ = fsx::remove_tree(staging);
        return Err(Error::ScopeNotEmpty {
            scope: scope.to_string(),
            entries: entries as u64,
        });
    }
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        staging,
        nix::fcntl::AT_FDCWD,
        &live,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(|e| Error::io("exchange", &live, e.into()))?;
    fsx::fsync_dir(&root.scopes_dir())?;
    // `staging` now names the old tree: empty directories, unless a pod wrote in the instant
    // between the check and the swap (its files were cache too; it recompiles what it needs).
    fsx::remove_tree(staging)?;
    Ok(())
}
