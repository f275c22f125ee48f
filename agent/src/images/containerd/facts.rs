//! Facts read off containerd's answers: the CRI plugin's configuration, the snapshotter of a
//! mount, the digest an ingest writes, versions, and the free space of the image filesystem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::super::{DiskSpace, Error};
use super::CriConfig;

/// Picks the runtime facts we need out of CRI's verbose status (`info["config"]` is JSON whose
/// shape differs a little between containerd 1.x and 2.x).
pub(super) fn parse_cri_config(info: &HashMap<String, String>) -> CriConfig {
    tracing::debug!(keys = ?info.keys().collect::<Vec<_>>(), "cri status info");
    let Some(raw) = info.get("config") else {
        return CriConfig::default();
    };
    tracing::debug!(config = %raw, "cri status config");
    let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) else {
        return CriConfig::default();
    };
    let text = |ptr: &str| {
        v.pointer(ptr)
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    CriConfig {
        root: text("/containerdRootDir").map(PathBuf::from),
        snapshotter: text("/containerd/snapshotter").or_else(|| text("/snapshotter")),
        config_path: text("/registry/configPath").map(PathBuf::from),
    }
}

/// `/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs` -> `overlayfs`.
pub(super) fn snapshotter_of(mount: &Path) -> Option<String> {
    mount
        .file_name()?
        .to_str()?
        .strip_prefix("io.containerd.snapshotter.v1.")
        .map(str::to_string)
}

/// The digest an ingest writes: its `expected` field, else parsed from CRI's ref names
/// (`layer-sha256:...`, `manifest-sha256:...`, `config-sha256:...`).
pub(super) fn ingest_digest(expected: &str, reference: &str) -> String {
    if !expected.is_empty() {
        return expected.to_string();
    }
    match reference.find("sha256:") {
        Some(i) => reference[i..].to_string(),
        None => reference.to_string(),
    }
}

/// `1.7.24~ds1` -> `1.7.24`; `v2.1.9+unknown` -> `2.1.9`.
pub(crate) fn clean_version(raw: &str) -> String {
    let raw = raw.trim().trim_start_matches('v');
    let end = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    raw[..end].trim_end_matches('.').to_string()
}

/// Whether a dotted version is at least `min`.
pub(crate) fn version_at_least(version: &str, min: (u64, u64, u64)) -> bool {
    let mut parts = version
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0))
        .chain(std::iter::repeat(0));
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    v >= min
}

/// statvfs of `path`, or of its nearest existing ancestor (the snapshotter root may not exist
/// before the first pull).
pub(super) fn statvfs_nearest(path: &Path) -> Result<DiskSpace, Error> {
    let mut probe = path;
    loop {
        match nix::sys::statvfs::statvfs(probe) {
            Ok(st) => {
                return Ok(DiskSpace {
                    path: path.to_path_buf(),
                    available: st.blocks_available() * st.fragment_size(),
                    fs_id: st.filesystem_id(),
                });
            }
            Err(nix::errno::Errno::ENOENT) => match probe.parent() {
                Some(parent) => probe = parent,
                None => break,
            },
            Err(e) => {
                return Err(Error::Io {
                    op: "statvfs",
                    path: path.to_path_buf(),
                    source: std::io::Error::from(e),
                });
            }
        }
    }
    Err(Error::Io {
        op: "statvfs",
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}
