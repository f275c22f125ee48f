//! The checkpoint archive, read once as a stream (checkpointctl sanitises nothing, so we do).
//!
//! Every entry is checked before a byte of it is kept: no absolute path, no `..`, no link whose
//! target leaves the tree, no device node or FIFO, no entry past the size limit, no more entries
//! or bytes than the limits allow. What passes is written, with normalised headers (owner root,
//! files 0600, directories 0700), as an uncompressed tar: the checkpoint image's single layer,
//! whose root is the archive's tree. The archive itself is never extracted onto the node.
//!
//! Facts (section B): containerd's archive is an uncompressed tar of `checkpoint/`,
//! `rootfs-diff.tar`, `spec.dump`, `config.dump`, `status.dump`, `status` and logs; restore on
//! containerd needs all three dump files.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Error;

/// Dump files the restore needs; each is parsed.
pub const REQUIRED: [&str; 3] = ["spec.dump", "config.dump", "status.dump"];
/// A dump file larger than this is not one.
const MAX_DUMP_BYTES: u64 = 16 << 20;
/// How much of `dump.log` is read for CRIU's version.
const MAX_LOG_BYTES: u64 = 4 << 20;

/// Bounds on what one archive may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single entry, in bytes.
    pub max_entry_bytes: u64,
    /// Largest sum of all entries, in bytes.
    pub max_total_bytes: u64,
    /// Most entries.
    pub max_entries: u64,
}

impl Default for Limits {
    /// 256 GiB per entry and in all (a 70B model's host memory), a million entries.
    fn default() -> Self {
        Limits {
            max_entry_bytes: 256 << 30,
            max_total_bytes: 256 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// `config.dump`, as containerd 2.1 writes it (fields we use; the rest is ignored).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigDump {
    /// Container id at checkpoint time.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Base image as the pod named it.
    pub rootfs_image: String,
    /// Base image by digest (`name@sha256:...`), which restore pulls.
    pub rootfs_image_ref: String,
    /// Base image name.
    pub rootfs_image_name: String,
    /// Runtime handler (e.g. `io.containerd.runc.v2`).
    pub runtime: String,
}

/// What the archive says about itself, and the layer written from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveFacts {
    /// `config.dump`.
    pub config: ConfigDump,
    /// The container's name from `status.dump` (`metadata.name`), else `config.dump`'s.
    pub container_name: String,
    /// CRIU's version from `dump.log` (`Version: 4.2.1`), when the log says.
    pub criu_version: Option<String>,
    /// `sha256:` digest of the layer written (uncompressed, so also its diff id).
    pub layer_digest: String,
    /// Bytes of the layer written.
    pub layer_size: u64,
    /// Entries kept.
    pub entries: u64,
}

/// Reads `archive`, refusing hostile entries, and writes the validated tree to `layer` as a tar.
/// On an error, what was written to `layer` must be thrown away by the caller.
pub fn validate(
    archive: impl Read,
    layer: impl Write,
    limits: &Limits,
) -> Result<ArchiveFacts, Error> {
    let mut out = tar::Builder::new(HashWriter::new(layer));
    out.mode(tar::HeaderMode::Deterministic);
    let mut tar = tar::Archive::new(archive);
    let mut kept: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    let (mut entries, mut total) = (0u64, 0u64);
    for entry in tar.entries().map_err(|e| read_error(&e))? {
        let mut entry = entry.map_err(|e| read_error(&e))?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(Error::hostile(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        let raw = entry.path().map_err(|e| read_error(&e))?.into_owned();
        let Some(path) = clean_path(&raw)? else {
            continue; // `./` itself
        };
        let shown = path.display().to_string();
        let size = entry.header().entry_size().map_err(|e| read_error(&e))?;
        if size > limits.max_entry_bytes {
            return Err(Error::hostile(format!(
                "{shown} is {size} bytes, over the limit of {} per entry",
                limits.max_entry_bytes
            )));
        }
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(Error::hostile(format!(
                "entries add up past the limit of {} bytes (at {shown})",
                limits.max_total_bytes
            )));
        }
        let kind = entry.header().entry_type();
        let mut header = tar::Header::new_gnu();
        header.set_mtime(entry.header().mtime().unwrap_or(0));
        header.set_uid(0);
        header.set_gid(0);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o600);
                header.set_size(size);
                if let Some(name) = wanted(&path, size) {
                    let mut bytes = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut bytes).map_err(|e| read_error(&e))?;
                    out.append_data(&mut header, &path, bytes.as_slice())
                        .map_err(|e| write_error(&e))?;
                    kept.insert(name, bytes);
                } else {
                    out.append_data(&mut header, &path, &mut entry)
                        .map_err(|e| read_error(&e))?;
                }
            }
            tar::EntryType::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o700);
                header.set_size(0);
                out.append_data(&mut header, &path, io::empty())
                    .map_err(|e| write_error(&e))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| read_error(&e))?
                    .ok_or_else(|| Error::hostile(format!("{shown} is a link with no target")))?
                    .into_owned();
                let hard = kind == tar::EntryType::Link;
                check_link(&path, &target, hard)?;
                header.set_entry_type(kind);
                header.set_mode(if hard { 0o600 } else { 0o777 });
                header.set_size(0);
                out.append_link(&mut header, &path, &target)
                    .map_err(|e| write_error(&e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(Error::hostile(format!("{shown} is a device node")));
            }
            tar::EntryType::Fifo => return Err(Error::hostile(format!("{shown} is a FIFO"))),
            other => {
                return Err(Error::hostile(format!("{shown} has entry type {other:?}")));
            }
        }
    }
    let hashed = out.into_inner().map_err(|e| write_error(&e))?;
    finish(kept, hashed, entries)
}

fn finish(
    mut kept: BTreeMap<&'static str, Vec<u8>>,
    layer: HashWriter<impl Write>,
    entries: u64,
) -> Result<ArchiveFacts, Error> {
    for name in REQUIRED {
        if !kept.contains_key(name) {
            return Err(Error::hostile(format!(
                "{name} is missing (containerd restores only archives with {})",
                REQUIRED.join(", ")
            )));
        }
    }
    let bad = |file: &'static str| {
        move |e: serde_json::Error| Error::BadDump {
            file,
            reason: e.to_string(),
        }
    };
    let spec: serde_json::Value =
        serde_json::from_slice(&kept["spec.dump"]).map_err(bad("spec.dump"))?;
    if !spec.is_object() {
        return Err(Error::BadDump {
            file: "spec.dump",
            reason: "not a JSON object".to_string(),
        });
    }
    let config: ConfigDump =
        serde_json::from_slice(&kept["config.dump"]).map_err(bad("config.dump"))?;
    let status: serde_json::Value =
        serde_json::from_slice(&kept["status.dump"]).map_err(bad("status.dump"))?;
    let container_name = status
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| config.name.clone());
    let criu_version = kept
        .remove("dump.log")
        .and_then(|log| criu_version(&String::from_utf8_lossy(&log)));
    let (digest, size, _) = layer.finish();
    Ok(ArchiveFacts {
        config,
        container_name,
        criu_version,
        layer_digest: digest,
        layer_size: size,
        entries,
    })
}

/// The entries we read into memory as well as copy: the dump files and CRIU's log.
fn wanted(path: &Path, size: u64) -> Option<&'static str> {
    let name = path.to_str()?;
    if let Some(found) = REQUIRED.iter().find(|r| **r == name) {
        if size > MAX_DUMP_BYTES {
            return None; // a dump this large fails the "missing" check: never parsed
        }
        return Some(found);
    }
    (name == "dump.log" && size <= MAX_LOG_BYTES).then_some("dump.log")
}

/// The entry's path relative to the tree, `None` for the root itself; `..` and absolute paths
/// are refused.
fn clean_path(raw: &Path) -> Result<Option<PathBuf>, Error> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::hostile(format!(
                    "{} has a .. component",
                    raw.display()
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::hostile(format!(
                    "{} is an absolute path",
                    raw.display()
                )));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Refuses a link whose target leaves the tree. A symlink's target is taken from the link's
/// directory, a hard link's from the tree's root; absolute targets are refused either way.
fn check_link(path: &Path, target: &Path, hard: bool) -> Result<(), Error> {
    let escape = || {
        Error::hostile(format!(
            "{} links to {} outside the archive's tree",
            path.display(),
            target.display()
        ))
    };
    let mut depth: i64 = if hard {
        0
    } else {
        path.parent()
            .map(|p| p.components().count() as i64)
            .unwrap_or(0)
    };
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(escape());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(escape()),
        }
    }
    if target.as_os_str().is_empty() {
        return Err(escape());
    }
    Ok(())
}

/// CRIU's version from its log (`(00.000000) Version: 4.2.1 (gitid 0)`).
pub fn criu_version(log: &str) -> Option<String> {
    let at = log.find("Version: ")? + "Version: ".len();
    let v: String = log[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!v.is_empty()).then_some(v)
}

fn read_error(e: &io::Error) -> Error {
    Error::hostile(format!("not a readable tar: {e}"))
}

fn write_error(e: &io::Error) -> Error {
    Error::io(
        "write",
        "checkpoint layer",
        io::Error::new(e.kind(), e.to_string()),
    )
}

/// A writer that hashes and counts what passes through.
pub(crate) struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    /// `sha256:<hex>`, the byte count, and the inner writer.
    pub(crate) fn finish(self) -> (String, u64, W) {
        let hex: String = self
            .hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (format!("sha256:{hex}"), self.bytes, self.inner)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
