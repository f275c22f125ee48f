//! A sealed generation as an OCI artifact, and back: the layer written from the live tree and
//! checked against the seal's manifest, the layer read into a staging tree and checked against
//! the manifest the artifact carries, and the staged tree swapped in for an empty scope.
//!
//! The artifact:
//! - manifest: OCI image manifest with `artifactType` [`ARTIFACT_TYPE`] and annotations naming
//!   the scope key and generation;
//! - config: the seal's [`Manifest`] as JSON ([`CONFIG_MEDIA_TYPE`]): every file's path, size,
//!   sha256, mode and mtime in nanoseconds;
//! - one layer ([`LAYER_MEDIA_TYPE`]): a gzip'd tar of exactly those files in manifest order,
//!   with PAX `mtime` records (nanoseconds) so a plain `tar` keeps them too.
//!
//! Import trusts the artifact's manifest only as far as it names the node's own scope key, and
//! the layer only as far as it matches that manifest: each entry must be a regular file the
//! manifest lists, once, with its size and sha256; a link, device, directory escape or extra
//! file refuses the whole artifact. Files are written into a staging tree in the agent's state
//! directory (never mounted by a pod), given the manifest's mode (permission bits only: no
//! setuid from a registry) and mtime and the scope's owner, and the staged tree replaces the
//! scope's tree in one `renameat2(RENAME_EXCHANGE)`: a pod sees the whole import or none.
//! mtimes matter: ninja-based JIT caches rebuild when they move (facts A, "nvsnap": 383 s vs
//! 38 s).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::fstat;
use sha2::{Digest as _, Sha256};

use super::Error;
use super::layout::{CacheRoot, SCOPE_SUBDIRS};
use super::scope::Scope;
use super::seal::{FileEntry, MANIFEST_FORMAT, Manifest};
use super::walk::{self, Kind};
use crate::fsx;

/// `artifactType` of a compile-cache artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.coldstart.compile-cache.v1";
/// Media type of its config: the seal's manifest.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.coldstart.compile-cache.manifest.v1+json";
/// Media type of its one layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.coldstart.compile-cache.layer.v1.tar+gzip";
/// Largest config (manifest of files) accepted, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;
/// Most files an artifact may hold.
pub const MAX_FILES: usize = 1_000_000;
/// Longest path accepted in an artifact.
const MAX_PATH: usize = 4096;

mod unpack;

pub use unpack::{install, unpack};

/// Annotation keys of the artifact manifest.
pub mod annotations {
    /// The scope's directory name (also the tag).
    pub const SCOPE: &str = "dev.coldstart.compile-cache.scope";
    /// The ColdModel.
    pub const MODEL: &str = "dev.coldstart.compile-cache.model";
    /// The image digest of the scope.
    pub const IMAGE_DIGEST: &str = "dev.coldstart.compile-cache.image-digest";
    /// The GPU product of the scope.
    pub const GPU_PRODUCT: &str = "dev.coldstart.compile-cache.gpu-product";
    /// The sealing node's generation.
    pub const GENERATION: &str = "dev.coldstart.compile-cache.generation";
    /// The node that pushed it.
    pub const NODE: &str = "dev.coldstart.compile-cache.node";
    /// Bytes of the files (unpacked).
    pub const BYTES: &str = "dev.coldstart.compile-cache.bytes";
    /// OCI's creation time.
    pub const CREATED: &str = "org.opencontainers.image.created";
}

/// A refused artifact.
fn refused(reason: impl Into<String>) -> Error {
    Error::BadArtifact {
        reason: reason.into(),
    }
}

/// A packed generation: its config bytes and the layer file.
#[derive(Debug)]
pub struct Packed {
    /// The config blob (the manifest as JSON).
    pub config: Vec<u8>,
    /// `sha256:` of the config.
    pub config_digest: String,
    /// The layer, written under the work directory given to [`pack`].
    pub layer: PathBuf,
    /// `sha256:` of the layer.
    pub layer_digest: String,
    /// Layer size in bytes (compressed).
    pub layer_size: u64,
}

/// Hashes and counts what passes through.
struct Counting<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes the layer of `manifest` from the scope's live tree into `work_dir`. Every file must
/// still be the one sealed (same size, mtime and sha256; opened without following links):
/// otherwise the export is abandoned (the next seal makes a new generation to export).
pub fn pack(root: &CacheRoot, manifest: &Manifest, work_dir: &Path) -> Result<Packed, Error> {
    let config = serde_json::to_vec(manifest).map_err(|e| Error::bad_state(work_dir, e))?;
    let config_digest = format!("sha256:{:x}", Sha256::digest(&config));
    let tree = root.scope_dir(&manifest.scope);
    let layer = work_dir.join(fsx::temp_name("layer"));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(fsx::nofollow())
            .open(&layer)
            .map_err(|e| fsx::open_error("create", &layer, e))?;
        let counting = Counting {
            inner: std::io::BufWriter::new(file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let gz = flate2::write::GzEncoder::new(counting, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for f in &manifest.files {
            append_file(&mut tar, &tree, f, manifest.generation)?;
        }
        let io = |e| Error::io("write", &layer, e);
        let gz = tar.into_inner().map_err(io)?;
        let mut counting = gz.finish().map_err(io)?;
        counting.flush().map_err(io)?;
        let file = counting
            .inner
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok::<_, Error>((
            format!("sha256:{:x}", counting.hasher.finalize()),
            counting.bytes,
        ))
    })();
    match result {
        Ok((layer_digest, layer_size)) => Ok(Packed {
            config,
            config_digest,
            layer,
            layer_digest,
            layer_size,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&layer);
            Err(e)
        }
    }
}

/// Appends one sealed file, checking it is still what the seal recorded.
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    tree: &Path,
    f: &FileEntry,
    generation: u64,
) -> Result<(), Error> {
    let changed = |what: &str| Error::Changed {
        path: tree.join(&f.path),
        reason: format!("{what} since generation {generation} was sealed"),
    };
    let (_parent, file) = walk::open_beneath(tree, &f.path).map_err(|e| changed(&e.to_string()))?;
    let st = fstat(file.as_fd()).map_err(|e| Error::io("fstat", tree.join(&f.path), e.into()))?;
    if walk::kind_of(&st) != Kind::File
        || u64::try_from(st.st_size).ok() != Some(f.size)
        || walk::mtime_ns(&st) != f.mtime_ns
    {
        return Err(changed("changed"));
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(f.size);
    header.set_mode(f.mode & 0o777);
    header.set_mtime(u64::try_from(f.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
    let secs = f.mtime_ns.div_euclid(1_000_000_000);
    let nanos = f.mtime_ns.rem_euclid(1_000_000_000);
    let mtime = format!("{secs}.{nanos:09}");
    let io = |e| Error::io("write layer", tree.join(&f.path), e);
    tar.append_pax_extensions([("mtime", mtime.as_bytes())])
        .map_err(io)?;
    let mut reader = HashingReader {
        inner: file.take(f.size),
        hasher: Sha256::new(),
    };
    tar.append_data(&mut header, &f.path, &mut reader)
        .map_err(io)?;
    if format!("{:x}", reader.hasher.finalize()) != f.sha256 {
        return Err(changed("content changed"));
    }
    Ok(())
}

/// Checks a manifest taken from an artifact before anything is written: the node's own scope
/// (`expected`), and every path a plain relative path under one of the scope's subdirectories,
/// listed once, with a sha256 and sizes that add up.
pub fn check_manifest(manifest: &Manifest, expected: &Scope) -> Result<(), Error> {
    if manifest.format != MANIFEST_FORMAT {
        return Err(refused(format!(
            "manifest format {} is not {MANIFEST_FORMAT}",
            manifest.format
        )));
    }
    if manifest.key != expected.key {
        return Err(refused(format!(
            "it is for {} / {} / {:?}, this node's scope is {} / {} / {:?}",
            manifest.key.model,
            manifest.key.image_digest,
            manifest.key.gpu_product,
            expected.key.model,
            expected.key.image_digest,
            expected.key.gpu_product
        )));
    }
    if manifest.scope != expected.name {
        return Err(refused(format!(
            "it names scope {:?}, the key's scope is {:?}",
            manifest.scope, expected.name
        )));
    }
    if manifest.files.len() > MAX_FILES {
        return Err(refused(format!(
            "{} files, more than {MAX_FILES}",
            manifest.files.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut total: u64 = 0;
    for f in &manifest.files {
        if let Some(why) = path_problem(&f.path) {
            return Err(refused(format!("manifest path {:?}: {why}", f.path)));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(refused(format!("manifest lists {:?} twice", f.path)));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused(format!(
                "manifest sha256 of {:?} is not hex",
                f.path
            )));
        }
        total = total.saturating_add(f.size);
    }
    // A file that is a prefix directory of another ("a" and "a/b") cannot both be files.
    for f in &manifest.files {
        let dir = format!("{}/", f.path);
        if seen
            .range(dir.as_str()..)
            .next()
            .is_some_and(|p| p.starts_with(&dir))
        {
            return Err(refused(format!(
                "manifest lists {:?} as a file and as a directory",
                f.path
            )));
        }
    }
    if total != manifest.bytes {
        return Err(refused(format!(
            "manifest files add up to {total} bytes, it says {}",
            manifest.bytes
        )));
    }
    Ok(())
}

/// Why `path` cannot name a file of a scope, if it cannot.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() || path.len() > MAX_PATH {
        return Some("empty or too long");
    }
    if path.starts_with('/') {
        return Some("absolute");
    }
    if path
        .bytes()
        .any(|b| b == 0 || b == b'\\' || b.is_ascii_control())
    {
        return Some("holds a control character or a backslash");
    }
    let mut parts = path.split('/');
    let first = parts.next().unwrap_or_default();
    if path
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Some("not a plain relative path (empty, `.` or `..` component)");
    }
    if !SCOPE_SUBDIRS.contains(&first) || parts.next().is_none() {
        return Some("not under one of the scope's cache directories");
    }
    None
}
