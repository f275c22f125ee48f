//! The snapshot directory: root only (directories 0700, files 0600: a snapshot holds process
//! memory, tokens included). A snapshot is staged under a temporary name and renamed into place
//! whole, so a reader never sees half of one.
//!
//! `<root>/<name>/layer.tar`      the validated checkpoint tree (the checkpoint image's layer)
//! `<root>/<name>/snapshot.json`  what the archive said and the compatibility key

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use super::archive::{self, ArchiveFacts, Limits};
use super::key::{CompatKey, NodeFacts};
use crate::fsx;

/// Mode of every directory we create here.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file we create here.
pub const FILE_MODE: u32 = 0o600;
/// The layer's file name inside a snapshot.
pub const LAYER: &str = "layer.tar";
/// The record's file name inside a snapshot.
pub const RECORD: &str = "snapshot.json";

/// The record kept beside a snapshot's layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Snapshot name.
    pub name: String,
    /// Container name (the checkpoint image's annotation).
    pub container_name: String,
    /// Base image by digest, which restore pulls.
    pub base_image: String,
    /// `sha256:` of the layer (uncompressed: also its diff id).
    pub layer_digest: String,
    /// Layer size in bytes.
    pub layer_size: u64,
    /// The compatibility key.
    pub key: CompatKey,
}

/// One snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its directory.
    pub dir: PathBuf,
    /// Its record.
    pub record: Record,
}

impl Snapshot {
    /// Path of the layer.
    pub fn layer(&self) -> PathBuf {
        self.dir.join(LAYER)
    }
}

/// The root-only directory snapshots live in.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
}

impl SnapshotStore {
    /// Opens (creating, mode 0700) the snapshot root; an existing root is set to 0700.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        if !fsx::is_real_dir(&root)? {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&root)
                .map_err(|e| Error::io("mkdir", &root, e))?;
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| Error::io("chmod", &root, e))?;
        Ok(SnapshotStore { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads a checkpoint archive from `archive`, validating it as it streams, and keeps it as
    /// snapshot `name` with the key made from it and `node`. Nothing is visible under `name`
    /// until all of it is written; on any error nothing is left.
    pub fn ingest(
        &self,
        name: &str,
        archive: impl Read,
        limits: &Limits,
        node: &NodeFacts,
    ) -> Result<Snapshot, Error> {
        check_name(name)?;
        let dest = self.root.join(name);
        if std::fs::symlink_metadata(&dest).is_ok() {
            return Err(Error::Invalid {
                what: "snapshot name",
                value: name.to_string(),
                reason: "a snapshot of that name exists".to_string(),
            });
        }
        let stage = self.root.join(fsx::temp_name("snapshot"));
        DirBuilder::new()
            .mode(DIR_MODE)
            .create(&stage)
            .map_err(|e| Error::io("mkdir", &stage, e))?;
        let result = write_stage(&stage, name, archive, limits, node).and_then(|record| {
            std::fs::rename(&stage, &dest).map_err(|e| Error::io("rename", &dest, e))?;
            fsx::fsync_dir(&self.root)?;
            Ok(Snapshot { dir: dest, record })
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&stage);
        }
        result
    }

    /// Snapshot `name`, as its record says.
    pub fn get(&self, name: &str) -> Result<Snapshot, Error> {
        check_name(name)?;
        let dir = self.root.join(name);
        let path = dir.join(RECORD);
        let bytes = fsx::read_optional(&path)?.ok_or_else(|| Error::Invalid {
            what: "snapshot name",
            value: name.to_string(),
            reason: "no such snapshot".to_string(),
        })?;
        let record = serde_json::from_slice(&bytes).map_err(|e| Error::BadDump {
            file: RECORD,
            reason: e.to_string(),
        })?;
        Ok(Snapshot { dir, record })
    }
}

fn write_stage(
    stage: &Path,
    name: &str,
    archive: impl Read,
    limits: &Limits,
    node: &NodeFacts,
) -> Result<Record, Error> {
    let path = stage.join(LAYER);
    let file = create(&path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let facts: ArchiveFacts =
        archive::validate(BufReader::with_capacity(1 << 20, archive), &mut out, limits)?;
    let file = out
        .into_inner()
        .map_err(|e| Error::io("write", &path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
    let record = Record {
        name: name.to_string(),
        container_name: facts.container_name.clone(),
        base_image: facts.config.rootfs_image_ref.clone(),
        layer_digest: facts.layer_digest.clone(),
        layer_size: facts.layer_size,
        key: CompatKey::new(&facts, node),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::BadDump {
        file: RECORD,
        reason: e.to_string(),
    })?;
    let rec = stage.join(RECORD);
    let mut f = create(&rec)?;
    f.write_all(&json)
        .map_err(|e| Error::io("write", &rec, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &rec, e))?;
    fsx::fsync_dir(stage)?;
    Ok(record)
}

fn create(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(fsx::nofollow())
        .open(path)
        .map_err(|e| Error::io("create", path, e))
}

/// A snapshot name: 1-128 of `[a-z0-9._-]`, not starting with `.` (ours are temporary).
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "snapshot name",
            value: name.chars().take(100).collect(),
            reason: "want 1-128 of a-z 0-9 . _ -, not starting with .".to_string(),
        })
    }
}
