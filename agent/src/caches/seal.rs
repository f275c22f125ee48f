//! Sealing: a manifest of every complete file of a scope (path, size, sha256, mode, mtime),
//! written as a new generation `state/<scope>/manifests/<gen>.json` that is never edited.
//!
//! The caller seals only a quiet scope ([`super::quiet`]) that a Ready pod used; the seal
//! itself still trusts nothing: the tree is walked without following links ([`super::walk`]),
//! each file is opened relative to its parent with `O_NOFOLLOW | O_NONBLOCK`, must be the
//! inode the walk saw, and is re-checked after hashing (size and mtime of the open file, and the
//! name still naming that inode). Left out, with the reason in [`SealOutcome::excluded`]:
//! - temporary files and Triton's `tmp.pid_*` directories, lock files, the pod's scratch (see
//!   [`super::walk`]); symlinks and special files (never followed or opened);
//! - a `.json` that does not parse: `cache_key_factors.json` is a plain, non-atomic write
//!   (facts A, "Which writes are atomic"), so a crash leaves it cut short;
//! - a `.py` that is not whole by the rule of [`super::pycheck`] (no Python is run);
//! - anything that changed while it was hashed.
//!
//! mtimes are recorded in nanoseconds because ninja-based caches (FlashInfer JIT) rebuild when
//! mtimes are not kept (facts A, "FlashInfer 0.7.2"; "nvsnap": 383 s vs 38 s).

use std::io::Read;
use std::os::fd::AsFd;

use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat};
use sha2::{Digest as _, Sha256};

use super::layout::CacheRoot;
use super::pycheck;
use super::scope::{Scope, ScopeKey};
use super::walk::{self, Class, Entry, Kind};
use super::{Error, UnixNanos};
use crate::fsx;

/// Format version of [`Manifest`].
pub const MANIFEST_FORMAT: u32 = 1;

/// One sealed file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    /// Path relative to the scope's tree, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

/// A sealed generation of a scope. Never edited once written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The scope's directory name.
    pub scope: String,
    /// What the scope is for.
    pub key: ScopeKey,
    /// 1, 2, ...: one more than the previous generation.
    pub generation: u64,
    /// When it was sealed (the caller's clock), nanoseconds since the epoch.
    pub sealed_at_ns: UnixNanos,
    /// Sum of the files' sizes.
    pub bytes: u64,
    /// Every sealed file, sorted by path.
    pub files: Vec<FileEntry>,
}

/// Why a file was left out of a seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExcludedReason {
    /// A temporary file, or inside a temporary directory.
    Temporary,
    /// A lock file.
    Lock,
    /// The pod's scratch under `TMPDIR`.
    Scratch,
    /// A symlink (never followed).
    Symlink,
    /// A FIFO, socket or device (never opened).
    Special,
    /// A `.json` file that does not parse.
    BadJson,
    /// A `.py` file that is not whole.
    BadPython,
    /// Changed, replaced or removed while it was hashed.
    Changed,
    /// Could not be read, or not walked (a name that is not UTF-8, too deep).
    Unreadable,
}

/// A file left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Excluded {
    /// Path relative to the scope's tree.
    pub path: String,
    /// Why.
    pub reason: ExcludedReason,
    /// More, for people (the parse error, the changed field).
    pub detail: String,
}

/// What a seal did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SealOutcome {
    /// The newest generation after this seal.
    pub generation: u64,
    /// Whether this seal wrote it (false: nothing changed since the previous generation).
    pub new: bool,
    /// Files in it.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// What was left out, scratch excepted (listed by count only: it is the pod's business).
    pub excluded: Vec<Excluded>,
    /// How many scratch entries were left out.
    pub scratch: usize,
}

/// Seals `scope` at `now`: writes generation N+1 when the complete files differ from
/// generation N (or there is none), else reports N unchanged.
pub fn seal(root: &CacheRoot, scope: &Scope, now: UnixNanos) -> Result<SealOutcome, Error> {
    let tree = root.scope_dir(&scope.name);
    let state = fsx::ensure_dirs(root.compile_dir(), &["state", scope.name.as_str()])?;
    let manifests = fsx::ensure_dirs(&state, &["manifests"])?;
    let lock_path = state.join("seal.lock");
    let _lock = fsx::lock_exclusive(&lock_path).map_err(|e| Error::io("lock", &lock_path, e))?;

    let found = walk::walk(&tree)?;
    let mut excluded: Vec<Excluded> = found
        .skipped
        .iter()
        .map(|(path, why)| Excluded {
            path: path.clone(),
            reason: ExcludedReason::Unreadable,
            detail: (*why).to_string(),
        })
        .collect();
    let mut scratch = 0;
    let mut files = Vec::new();
    for entry in &found.entries {
        match classify(entry) {
            Ok(false) => {}
            Ok(true) => match hash_entry(&tree, entry) {
                Ok(file) => files.push(file),
                Err((reason, detail)) => excluded.push(Excluded {
                    path: entry.rel.clone(),
                    reason,
                    detail,
                }),
            },
            Err(ExcludedReason::Scratch) => scratch += 1,
            Err(reason) => excluded.push(Excluded {
                path: entry.rel.clone(),
                reason,
                detail: String::new(),
            }),
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let bytes = files.iter().map(|f| f.size).sum();
    let count = files.len();
    let previous = latest_manifest(root, &scope.name)?;
    if let Some(prev) = &previous
        && prev.files == files
    {
        return Ok(SealOutcome {
            generation: prev.generation,
            new: false,
            files: count,
            bytes,
            excluded,
            scratch,
        });
    }
    let generation = previous.map_or(1, |p| p.generation + 1);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        scope: scope.name.clone(),
        key: scope.key.clone(),
        generation,
        sealed_at_ns: now,
        bytes,
        files,
    };
    write_new(&manifests, &manifest)?;
    Ok(SealOutcome {
        generation,
        new: true,
        files: count,
        bytes,
        excluded,
        scratch,
    })
}

/// `Ok(true)`: a candidate to hash; `Ok(false)`: a directory (not listed); `Err`: left out.
fn classify(entry: &Entry) -> Result<bool, ExcludedReason> {
    match entry.class {
        Class::Scratch => return Err(ExcludedReason::Scratch),
        Class::Temp if entry.kind != Kind::Dir => return Err(ExcludedReason::Temporary),
        Class::Lock => return Err(ExcludedReason::Lock),
        Class::Temp | Class::Cache => {}
    }
    match entry.kind {
        Kind::Dir => Ok(false),
        Kind::Symlink => Err(ExcludedReason::Symlink),
        Kind::Special => Err(ExcludedReason::Special),
        Kind::File => Ok(true),
    }
}

type Refused = (ExcludedReason, String);

/// Hashes one file found by the walk, re-checking that it is the same, unchanged file.
fn hash_entry(tree: &std::path::Path, entry: &Entry) -> Result<FileEntry, Refused> {
    let changed = |what: &str| (ExcludedReason::Changed, what.to_string());
    let (parent, mut file) = walk::open_beneath(tree, &entry.rel)
        .map_err(|e| (ExcludedReason::Changed, format!("open: {e}")))?;
    let same = |st: &nix::sys::stat::FileStat| {
        walk::kind_of(st) == Kind::File
            && st.st_ino == entry.ino
            && u64::try_from(st.st_size).ok() == Some(entry.size)
            && walk::mtime_ns(st) == entry.mtime_ns
    };
    let before = fstat(file.as_fd()).map_err(|e| changed(&format!("fstat: {e}")))?;
    if !same(&before) {
        return Err(changed("differs from the walk"));
    }
    let name = entry.rel.rsplit('/').next().unwrap_or_default();
    let check = name.ends_with(".json") || name.ends_with(".py");
    let mut content = Vec::new();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| (ExcludedReason::Unreadable, format!("read: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if check {
            content.extend_from_slice(&buf[..n]);
        }
    }
    let after = fstat(file.as_fd()).map_err(|e| changed(&format!("fstat: {e}")))?;
    if !same(&after) {
        return Err(changed("written while hashed"));
    }
    match fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_ino == entry.ino => {}
        _ => return Err(changed("replaced while hashed")),
    }
    if name.ends_with(".json")
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&content)
    {
        return Err((ExcludedReason::BadJson, e.to_string()));
    }
    if name.ends_with(".py")
        && let Some(why) = pycheck::check(name, &content)
    {
        return Err((ExcludedReason::BadPython, why.to_string()));
    }
    Ok(FileEntry {
        path: entry.rel.clone(),
        size: entry.size,
        sha256: format!("{:x}", hasher.finalize()),
        mode: entry.mode,
        mtime_ns: entry.mtime_ns,
    })
}

/// Records an imported `manifest` (its files now in the scope's tree) as the scope's next
/// local generation; returns that generation. The keeper's next seal of unchanged files then
/// finds nothing new.
pub fn record_imported(root: &CacheRoot, manifest: &Manifest) -> Result<u64, Error> {
    let state = fsx::ensure_dirs(root.compile_dir(), &["state", manifest.scope.as_str()])?;
    let manifests = fsx::ensure_dirs(&state, &["manifests"])?;
    let generation = generations(root, &manifest.scope)?
        .last()
        .map_or(1, |g| g + 1);
    let local = Manifest {
        generation,
        ..manifest.clone()
    };
    write_new(&manifests, &local)?;
    Ok(generation)
}

/// Writes `manifest` as `<generation>.json`, refusing to replace an existing generation.
fn write_new(dir: &std::path::Path, manifest: &Manifest) -> Result<(), Error> {
    let name = format!("{}.json", manifest.generation);
    let bytes =
        serde_json::to_vec_pretty(manifest).map_err(|e| Error::bad_state(dir.join(&name), e))?;
    let tmp = fsx::stage(dir, fsx::FILE_MODE, |f| {
        std::io::Write::write_all(f, &bytes)
    })?;
    let dest = dir.join(&name);
    // link(2) fails when the name exists: a sealed generation is never replaced, even by a
    // racing sealer. The temporary name goes either way.
    let res = std::fs::hard_link(&tmp, &dest);
    let _ = std::fs::remove_file(&tmp);
    res.map_err(|e| Error::io("link", &dest, e))?;
    fsx::fsync_dir(dir)?;
    Ok(())
}

/// The generations sealed for `scope`, ascending.
pub fn generations(root: &CacheRoot, scope: &str) -> Result<Vec<u64>, Error> {
    let dir = root.scope_state_dir(scope).join("manifests");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
        let name = entry.file_name();
        let gen_ = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok());
        out.extend(gen_);
    }
    out.sort_unstable();
    Ok(out)
}

/// Generation `generation` of `scope`.
pub fn manifest(root: &CacheRoot, scope: &str, generation: u64) -> Result<Manifest, Error> {
    let path = root
        .scope_state_dir(scope)
        .join("manifests")
        .join(format!("{generation}.json"));
    let bytes = fsx::read_optional(&path)?.ok_or_else(|| Error::UnknownScope {
        scope: format!("{scope} generation {generation}"),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::bad_state(&path, e))
}

/// The newest generation of `scope`, if any.
pub fn latest_manifest(root: &CacheRoot, scope: &str) -> Result<Option<Manifest>, Error> {
    match generations(root, scope)?.last() {
        Some(&g) => manifest(root, scope, g).map(Some),
        None => Ok(None),
    }
}
