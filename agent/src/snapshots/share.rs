//! Sharing snapshots between nodes of the same key through a registry the ColdModel names (off
//! by default: a checkpoint holds the process's memory, tokens and keys included).
//!
//! - [`push`]: the checkpoint image as imported (manifest with the key and our annotations,
//!   config, the one uncompressed layer) under the key hash's tag; returns the digest, which
//!   the node records in its ColdNode.
//! - [`pull`]: only a digest a ColdNode recorded; the manifest is checked for what it must say
//!   (one layer, the checkpoint annotation, the key), the layer is downloaded verified against
//!   its digest into the root-only spool, then taken through the same streaming validation as
//!   a local archive into the store (a hostile tree is refused as one would be), its key
//!   rebuilt from the archive's own dumps plus the pushing node's facts and required to hash as
//!   announced, and imported here like a local snapshot.

use std::collections::BTreeMap;

use super::archive::Limits;
use super::image::{MEDIA_LAYER, blobs};
use super::key::NodeFacts;
use super::managed::Managed;
use super::policy::local_image;
use super::store::{Meta, Snapshot};
use super::{CHECKPOINT_ANNOTATION, Error, KEY_ANNOTATION_PREFIX, one_line};
use crate::images::registry::artifact::{BlobSource, Repository};

fn registry(e: impl std::fmt::Display) -> Error {
    Error::Runtime {
        op: "registry",
        reason: one_line(&e.to_string()),
    }
}

/// Pushes `snap`'s checkpoint image to `repo` as tag `tag`; returns the manifest digest.
pub async fn push(snap: &Snapshot, repo: &mut Repository, tag: &str) -> Result<String, Error> {
    let b = blobs(snap);
    let r = &snap.record;
    repo.push_blob(
        &r.layer_digest,
        r.layer_size,
        BlobSource::File(snap.layer()),
    )
    .await
    .map_err(registry)?;
    let config_digest = super::image::sha256(&b.config);
    repo.push_blob(
        &config_digest,
        b.config.len() as u64,
        BlobSource::Bytes(b.config.clone()),
    )
    .await
    .map_err(registry)?;
    let digest = repo
        .put_manifest(tag, b.manifest.clone())
        .await
        .map_err(registry)?;
    if digest != b.manifest_digest() {
        return Err(registry(format!(
            "the registry recorded {digest} for manifest {}",
            b.manifest_digest()
        )));
    }
    Ok(digest)
}

/// Pulls the snapshot `digest` of `model` from `repo` into `m`'s store and containerd, as
/// announced with key hash `key_hash`. Nothing of it is left on any error.
pub async fn pull(
    m: &Managed,
    repo: &mut Repository,
    digest: &str,
    model: &str,
    key_hash: &str,
    now_unix: u64,
) -> Result<Snapshot, Error> {
    let manifest = repo
        .manifest(digest)
        .await
        .map_err(registry)?
        .ok_or_else(|| registry(format!("no manifest {digest} in {}", repo.name())))?;
    let refuse = |why: &str| Error::hostile(format!("shared snapshot {digest}: {why}"));
    let [layer] = manifest.layers.as_slice() else {
        return Err(refuse("not exactly one layer"));
    };
    if layer.media_type != MEDIA_LAYER {
        return Err(refuse("its layer is not an uncompressed tar"));
    }
    let a = &manifest.annotations;
    if !a.contains_key(CHECKPOINT_ANNOTATION) {
        return Err(refuse("no checkpoint annotation"));
    }
    if a.get(&format!("{KEY_ANNOTATION_PREFIX}model"))
        .map(String::as_str)
        != Some(model)
    {
        return Err(refuse(&format!("not a snapshot of model {model}")));
    }
    let key: BTreeMap<&str, &str> = a
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(KEY_ANNOTATION_PREFIX)?, v.as_str())))
        .collect();
    let field = |k: &str| key.get(k).map(|v| v.to_string()).unwrap_or_default();
    // The pushing node's facts; the image digest, CRIU and runtime come from the dumps.
    let node = NodeFacts {
        gpu_product: field("gpuProduct"),
        gpu_count: field("gpuCount")
            .parse()
            .map_err(|_| refuse("bad gpuCount"))?,
        driver: field("driver"),
        kernel: field("kernel"),
        model_commit: field("modelCommit"),
        criu: field("criu"),
    };
    let spool = super::SnapshotStore::open(&m.spool)?;
    let path = spool.root().join(crate::fsx::temp_name("shared"));
    let fetched = repo.fetch_blob(layer, &path).await.map_err(registry);
    let name = format!("{model}-{now_unix}-shared");
    let meta = Meta {
        model: model.to_string(),
        created_unix: field("createdUnix").parse().unwrap_or(now_unix),
        compile_scope: None,
        image: None,
        pushed: Some(format!("{}@{digest}", repo.name())),
    };
    let ingested = match fetched {
        Ok(()) => {
            super::capture::ingest_file(&m.store, &name, &path, &Limits::default(), &node, &meta)
                .await
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&path);
    let (snap, _) = ingested?;
    let result = async {
        let got = snap.record.key.hash();
        if got != key_hash {
            return Err(refuse(&format!(
                "its key hashes to {got}, announced {key_hash}"
            )));
        }
        let image = local_image(model, &got);
        m.runtime.import(&snap, &image).await?;
        let mut meta = snap.record.meta.clone();
        meta.image = Some(image);
        m.store.set_meta(&snap.record.name, &meta)
    }
    .await;
    if result.is_err() {
        let _ = m.store.remove(&snap.record.name);
    }
    result
}
