//! A walk of a scope's tree, which pods write and we treat as hostile: every directory is
//! opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY`, every entry is `lstat`ed
//! (`fstatat` without following), symlinks are recorded and never followed, and special files
//! (FIFOs, sockets, devices) are never opened, so a FIFO cannot hang the walk. A directory
//! swapped for a symlink between the stat and the open fails the open (`ELOOP`/`ENOTDIR`) and
//! is skipped. Only the chain of ancestors is held open, so a wide tree (Triton keeps one
//! directory per kernel) costs no more descriptors than a deep one.
//!
//! The walk also classifies what it meets ([`Class`]):
//! - temporary: `*.tmp` files (vLLM's `model.<pid>.tmp` before `os.replace`), Triton's
//!   `tmp.pid_<pid>_<uuid>/` directories (facts A, "Which writes are atomic"; "Triton"), and our
//!   own `.coldstart-*` names;
//! - lock: `*.lock` files (Inductor's `locks/`, FlashInfer's `cached_ops/tmp/<op>.lock`; facts
//!   A, "FlashInfer 0.7.2"): no content, recreated by whoever locks;
//! - scratch: everything under `tmp/` (the pod's `TMPDIR`) except `tmp/torchinductor_*/`;
//! - cache: the rest.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};

use super::Error;
use super::layout::TMP_DIR;

/// Deepest directory level walked; deeper entries are reported and skipped.
pub const MAX_DEPTH: usize = 64;

/// What an entry is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory (walked).
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device (never opened).
    Special,
}

/// What an entry is for the cache (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Cache content: sealed when complete.
    Cache,
    /// A writer's temporary file or directory: never sealed, but its changes mean writes go on.
    Temp,
    /// A lock file: never sealed.
    Lock,
    /// The pod's scratch under `TMPDIR`: neither sealed nor watched by the quiet rule.
    Scratch,
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the scope's tree, `/`-separated.
    pub rel: String,
    /// File, directory, symlink or special.
    pub kind: Kind,
    /// Cache, temporary, lock or scratch.
    pub class: Class,
    /// Size in bytes (`st_size`).
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Inode number, to tell a replaced file from the one we stat'ed.
    pub ino: u64,
}

/// Everything a walk found, and what it could not look at.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    /// Every entry, parents before children.
    pub entries: Vec<Entry>,
    /// Entries not looked at: (path, why) for names that are not UTF-8, directories past
    /// [`MAX_DEPTH`], directories that vanished or turned into something else during the walk.
    pub skipped: Vec<(String, &'static str)>,
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Walks the tree at `root` (a real directory; an error when it is a symlink or missing).
pub fn walk(root: &Path) -> Result<Walk, Error> {
    let fd = nix::fcntl::open(root, dir_flags(), Mode::empty()).map_err(|e| match e {
        // O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR (or ELOOP).
        nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP => {
            Error::Fs(crate::fsx::Error::Unsafe {
                path: root.to_path_buf(),
                reason: "not a real directory (a symlink?)".to_string(),
            })
        }
        e => Error::io("open dir", root, e.into()),
    })?;
    let mut out = Walk::default();
    walk_dir(root, fd, "", Class::Cache, 0, &mut out)?;
    Ok(out)
}

fn walk_dir(
    root: &Path,
    fd: OwnedFd,
    rel: &str,
    class: Class,
    depth: usize,
    out: &mut Walk,
) -> Result<(), Error> {
    let mut dir = Dir::from_fd(fd).map_err(|e| Error::io("list", root.join(rel), e.into()))?;
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| Error::io("list", root.join(rel), e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    for name in names {
        let Ok(name) = std::str::from_utf8(&name) else {
            let shown = String::from_utf8_lossy(&name).into_owned();
            out.skipped.push((join(rel, &shown), "name is not UTF-8"));
            continue;
        };
        let sub = join(rel, name);
        let st = match fstatat(
            dir.as_fd(),
            OsStr::from_bytes(name.as_bytes()),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            // Removed since the listing (a writer's rename or cleanup): not there any more.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(Error::io("stat", root.join(&sub), e.into())),
        };
        let kind = kind_of(&st);
        let entry_class = if scratch_rule(&sub) {
            Class::Scratch
        } else {
            classify(class, depth, name, kind)
        };
        out.entries.push(Entry {
            rel: sub.clone(),
            kind,
            class: entry_class,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: mtime_ns(&st),
            mode: st.st_mode & 0o7777,
            ino: st.st_ino,
        });
        if kind != Kind::Dir {
            continue;
        }
        if depth + 1 >= MAX_DEPTH {
            out.skipped.push((sub, "deeper than the walk goes"));
            continue;
        }
        match nix::fcntl::openat(
            dir.as_fd(),
            OsStr::from_bytes(name.as_bytes()),
            dir_flags(),
            Mode::empty(),
        ) {
            Ok(child) => walk_dir(root, child, &sub, entry_class, depth + 1, out)?,
            // Gone, or swapped for a symlink or file since the stat: never followed.
            Err(
                nix::errno::Errno::ENOENT | nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR,
            ) => {
                out.skipped.push((sub, "changed during the walk"));
            }
            Err(e) => return Err(Error::io("open dir", root.join(&sub), e.into())),
        }
    }
    Ok(())
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// Modification time of a stat, nanoseconds since the epoch.
pub(crate) fn mtime_ns(st: &FileStat) -> i64 {
    st.st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec)
}

pub(crate) fn kind_of(st: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Special,
    }
}

/// The class of `name`, met at `depth` (0 = the scope's top) in a directory of class `parent`.
fn classify(parent: Class, depth: usize, name: &str, kind: Kind) -> Class {
    match parent {
        Class::Scratch | Class::Temp => return parent,
        Class::Cache | Class::Lock => {}
    }
    if depth == 0 && name == TMP_DIR {
        // TMPDIR itself: walked, but only its torchinductor_* children are cache.
        return Class::Cache;
    }
    if name.starts_with(crate::fsx::TEMP_PREFIX) {
        return Class::Temp;
    }
    match kind {
        Kind::Dir if name.starts_with("tmp.pid_") => Class::Temp,
        Kind::Dir => Class::Cache,
        _ if name.ends_with(".tmp") => Class::Temp,
        _ if name.ends_with(".lock") => Class::Lock,
        _ => Class::Cache,
    }
}

/// Whether `rel` is the pod's scratch: under `tmp/` but not `tmp/torchinductor_*` (children of
/// a scratch directory inherit its class in [`classify`]).
pub(crate) fn scratch_rule(rel: &str) -> bool {
    let mut parts = rel.split('/');
    match (parts.next(), parts.next()) {
        (Some(TMP_DIR), Some(child)) => !child.starts_with("torchinductor_"),
        _ => false,
    }
}

/// Opens the regular file at `rel` under `root` without following a symlink on the way
/// (every directory opened `O_NOFOLLOW` relative to its parent) and without blocking on a
/// FIFO (`O_NONBLOCK`). Returns the parent directory too, to re-stat the name later.
pub(crate) fn open_beneath(root: &Path, rel: &str) -> std::io::Result<(OwnedFd, File)> {
    let mut dir = nix::fcntl::open(root, dir_flags(), Mode::empty())?;
    let mut parts: Vec<&str> = rel.split('/').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        dir = nix::fcntl::openat(dir.as_fd(), part, dir_flags(), Mode::empty())?;
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(dir.as_fd(), last, flags, Mode::empty())?;
    Ok((dir, File::from(fd)))
}
