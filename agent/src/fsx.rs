//! Careful filesystem steps, for the Hub cache and the agent's own state and status files:
//! directories walked one component at a time without following a symlink, opens with
//! `O_NOFOLLOW`, explicit modes (whatever the umask), atomic replacement of small files, and
//! `fsync` of the directories that name what we wrote. Errors are this module's own, so a
//! status-file failure never reads as a weights failure.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;

/// A filesystem step failed, or met something we did not put there.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operation on a path failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done (`open`, `rename`, `fsync`, ...).
        op: &'static str,
        /// The path the step worked on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A symlink where a file or directory should be, or another kind of entry.
    #[error("unsafe entry {}: {reason}", path.display())]
    Unsafe {
        /// The entry in the cache that is not as we wrote it.
        path: PathBuf,
        /// What is wrong, on one line, for people.
        reason: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Stable label for metrics: `disk_full` (ENOSPC), `unsafe_entry`, or `io`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Io { source, .. }
                if source.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) =>
            {
                "disk_full"
            }
            Error::Io { .. } => "io",
            Error::Unsafe { .. } => "unsafe_entry",
        }
    }
}

/// Directories we create: readable by the pods that mount the cache.
pub(crate) const DIR_MODE: u32 = 0o755;
/// Small files we write (trees, refs, state records).
pub(crate) const FILE_MODE: u32 = 0o644;
/// Finalized blobs: content-addressed, never written again.
pub(crate) const BLOB_MODE: u32 = 0o444;
/// Prefix of every temporary name we create inside the cache; never a commit, etag or ref.
pub const TEMP_PREFIX: &str = ".coldstart-";

/// `O_NOFOLLOW | O_CLOEXEC` for `custom_flags`.
pub(crate) fn nofollow() -> i32 {
    (OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits()
}

/// A name no other writer of this process or another uses at the same time.
pub(crate) fn temp_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{what}-{}-{n}", std::process::id())
}

fn unsafe_entry(path: &Path, reason: &str) -> Error {
    Error::Unsafe {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Maps an open that met a symlink (`ELOOP` under `O_NOFOLLOW`) to [`Error::Unsafe`].
pub(crate) fn open_error(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
        return unsafe_entry(path, "a symlink where a file should be");
    }
    Error::io(op, path, e)
}

/// Whether `path` is a real directory: `Ok(false)` when absent, an error when it is a symlink
/// or anything else.
pub(crate) fn is_real_dir(path: &Path) -> Result<bool, Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Ok(true),
        Ok(m) if m.file_type().is_symlink() => {
            Err(unsafe_entry(path, "a symlink where a directory should be"))
        }
        Ok(_) => Err(unsafe_entry(path, "not a directory")),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// `base/a/b/..`, each component created (mode 0755) when missing and refused when it is a
/// symlink or not a directory. `base` itself must be a real directory.
pub(crate) fn ensure_dirs<S: AsRef<str>>(base: &Path, components: &[S]) -> Result<PathBuf, Error> {
    if !is_real_dir(base)? {
        return Err(Error::io("open", base, ErrorKind::NotFound.into()));
    }
    let mut dir = base.to_path_buf();
    for c in components {
        dir.push(c.as_ref());
        if is_real_dir(&dir)? {
            continue;
        }
        match DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Ok(()) => set_mode(&dir, DIR_MODE)?,
            // Created by a concurrent writer: check what it is.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if !is_real_dir(&dir)? {
                    return Err(Error::io("create", &dir, e));
                }
            }
            Err(e) => return Err(Error::io("create", &dir, e)),
        }
    }
    Ok(dir)
}

/// `base/a/b/..` when every component exists as a real directory, `None` when one is missing;
/// an error when one is a symlink or not a directory. Creates nothing.
pub(crate) fn existing_dirs<S: AsRef<str>>(
    base: &Path,
    components: &[S],
) -> Result<Option<PathBuf>, Error> {
    let mut dir = base.to_path_buf();
    if !is_real_dir(&dir)? {
        return Ok(None);
    }
    for c in components {
        dir.push(c.as_ref());
        if !is_real_dir(&dir)? {
            return Ok(None);
        }
    }
    Ok(Some(dir))
}

/// Sets the permission bits exactly (the umask applies only at creation).
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

/// Flushes a directory's entries (new names, renames, removals) to disk.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow() | OFlag::O_DIRECTORY.bits())
        .open(dir)
        .map_err(|e| open_error("open dir", dir, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", dir, e))
}

/// Opens a file for reading without following a symlink.
pub(crate) fn open_read(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
}

/// The whole of a small file opened with [`open_read`] (no symlink followed); `None` when it
/// does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let mut bytes = Vec::new();
    match open_read(path) {
        Ok(mut f) => {
            std::io::Read::read_to_end(&mut f, &mut bytes)
                .map_err(|e| Error::io("read", path, e))?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(open_error("open", path, e)),
    }
}

/// Replaces `dir/name` with `bytes` atomically: a temporary file in `dir` (mode `mode`),
/// fsynced, renamed over the name, then `dir` fsynced. A symlink at `dir/name` is replaced,
/// never followed.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<PathBuf, Error> {
    let tmp = stage(dir, mode, |f| f.write_all(bytes))?;
    commit_staged(&tmp, dir, name)
}

/// Writes a new temporary file in `tmp_dir` (mode `mode`, never through a symlink) with
/// `fill`, and fsyncs it; returns its path. The file is removed again when anything fails.
pub(crate) fn stage(
    tmp_dir: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<PathBuf, Error> {
    let tmp = tmp_dir.join(temp_name("write"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nofollow())
            .open(&tmp)
            .map_err(|e| open_error("create", &tmp, e))?;
        fill(&mut f).map_err(|e| Error::io("write", &tmp, e))?;
        f.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Renames a file made by [`stage`] over `dir/name` (a symlink there is replaced, never
/// followed) and fsyncs `dir`. `tmp` may lie in another directory of the same filesystem.
pub(crate) fn commit_staged(tmp: &Path, dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let dest = dir.join(name);
    if let Err(e) = std::fs::rename(tmp, &dest) {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::io("rename", &dest, e));
    }
    fsync_dir(dir)?;
    Ok(dest)
}

/// Removes a file; absent is fine. Returns whether something was removed.
pub(crate) fn remove_file(path: &Path) -> Result<bool, Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Removes a directory tree without following symlinks; absent is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Every symlink under `dir` (relative path, target), walking real directories only.
pub(crate) fn symlinks_under(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io("list", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &d, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if kind.is_dir() {
                stack.push((path, sub));
            } else if kind.is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|e| Error::io("readlink", &path, e))?;
                out.push((sub, target));
            }
        }
    }
    Ok(out)
}

/// Opens (creating, mode [`FILE_MODE`], never following a symlink) the lock file at `path` and
/// takes its exclusive `flock`, blocking; released when the returned guard drops. Lock files
/// are never removed: removing one races with the next locker.
pub(crate) fn lock_exclusive(path: &Path) -> std::io::Result<nix::fcntl::Flock<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(nofollow())
        .open(path)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno.into())
}
