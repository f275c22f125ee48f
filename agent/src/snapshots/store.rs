//! The snapshot directory: root only (directories 0700, files 0600: a snapshot holds process
//! memory, tokens included). A snapshot is staged under a temporary name and renamed into place
//! whole, so a reader never sees half of one.
//!
//! `<root>/<name>/layer.tar`      the validated checkpoint tree (the checkpoint image's layer)
//! `<root>/<name>/snapshot.json`  what the archive said and the compatibility key

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read};
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
    /// Who asked for it: the model and when (absent for a snapshot taken by hand before part 2).
    #[serde(default, flatten)]
    pub meta: Meta,
}

/// What the managed policy records beside a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The ColdModel it belongs to; empty for one taken by hand.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// When it was taken, seconds since the epoch (0: unknown).
    #[serde(default)]
    pub created_unix: u64,
    /// The compile-cache scope the process had mounted (held by a retention lease while the
    /// snapshot lives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_scope: Option<String>,
    /// The checkpoint image it was imported as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where it was shared: `registry/repo@digest` (pushed from here, or pulled from there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
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

    /// What a ColdNode (or `coldctl snapshot list`) reports of it, with `verdict`: whether a
    /// pod can restore from it here, or why not.
    pub fn status(&self, verdict: Result<(), String>) -> crate::api::SnapshotStatus {
        let r = &self.record;
        crate::api::SnapshotStatus {
            name: r.name.clone(),
            model: r.meta.model.clone(),
            container: r.container_name.clone(),
            key_hash: r.key.hash(),
            key: r.key.fields(),
            image: r.meta.image.clone(),
            pushed: r.meta.pushed.clone(),
            bytes: self.bytes(),
            created: i64::try_from(r.meta.created_unix)
                .ok()
                .filter(|t| *t > 0)
                .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t).ok())
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            restorable: verdict.is_ok(),
            reason: verdict.err(),
        }
    }

    /// Bytes on disk (the layer and the record).
    pub fn bytes(&self) -> u64 {
        [LAYER, RECORD]
            .iter()
            .filter_map(|f| std::fs::symlink_metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
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
        meta: &Meta,
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
        let result = write_stage(&stage, name, archive, limits, node, meta).and_then(|record| {
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

    /// Every snapshot whose record reads, by name; a directory being staged (a leading `.`) or
    /// without a readable record is skipped.
    pub fn list(&self) -> Result<Vec<Snapshot>, Error> {
        let rd = std::fs::read_dir(&self.root).map_err(|e| Error::io("list", &self.root, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("list", &self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // `file_type` does not follow a symlink: only real directories are snapshots.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if check_name(&name).is_err() || !is_dir {
                continue;
            }
            if let Ok(snap) = self.get(&name) {
                out.push(snap);
            }
        }
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    /// Replaces snapshot `name`'s record metadata (the rest of the record stays).
    pub fn set_meta(&self, name: &str, meta: &Meta) -> Result<Snapshot, Error> {
        let mut snap = self.get(name)?;
        snap.record.meta = meta.clone();
        write_record(&snap.dir, &snap.record)?;
        Ok(snap)
    }

    /// Removes snapshot `name`: renamed away first (so a reader never sees half of it), then
    /// deleted. Returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        check_name(name)?;
        let dir = self.root.join(name);
        if !fsx::is_real_dir(&dir)? {
            return Ok(false);
        }
        let gone = self.root.join(fsx::temp_name("removed"));
        std::fs::rename(&dir, &gone).map_err(|e| Error::io("rename", &dir, e))?;
        fsx::fsync_dir(&self.root)?;
        fsx::remove_tree(&gone)?;
        Ok(true)
    }
}

fn write_stage(
    stage: &Path,
    name: &str,
    archive: impl Read,
    limits: &Limits,
    node: &NodeFacts,
    meta: &Meta,
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
        meta: meta.clone(),
    };
    write_record(stage, &record)?;
    Ok(record)
}

/// Writes `record` into `dir` (a new file: the stage, or replacing through a temporary name).
fn write_record(dir: &Path, record: &Record) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| Error::BadDump {
        file: RECORD,
        reason: e.to_string(),
    })?;
    fsx::write_atomic(dir, RECORD, &json, FILE_MODE)?;
    Ok(())
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
