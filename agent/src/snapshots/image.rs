//! The checkpoint image containerd 2.1-2.3 restores from, written straight into containerd's
//! content store in namespace `k8s.io`, unpacked into CRI's snapshotter and pinned.
//!
//! Facts (section B): the image's manifest carries `org.criu.checkpoint.container.name`; its
//! single layer's root is the extracted archive (our validated `layer.tar`, uncompressed, so its
//! digest is also its diff id and its chain id); containerd mounts a view of that chain id, so
//! the image must be unpacked for CRI's snapshotter.

use std::collections::{BTreeMap, HashMap};

use containerd_client::services::v1 as ctd;
use containerd_client::services::v1::snapshots as snap;
use containerd_client::types::Descriptor;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tonic::Code;
use tracing::instrument;

use super::runtime::ContainerdSnapshots;
use super::store::Snapshot;
use super::{CHECKPOINT_ANNOTATION, Error};
use crate::images::{MANAGED_LABEL, PINNED_LABEL, PINNED_VALUE};

/// OCI manifest media type.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI config media type.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed layer media type.
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// Bytes per content-store write message.
const CHUNK: usize = 1 << 20;

/// The small blobs of a checkpoint image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBlobs {
    /// Config JSON.
    pub config: Vec<u8>,
    /// Manifest JSON.
    pub manifest: Vec<u8>,
}

impl ImageBlobs {
    /// `sha256:` of the manifest: the image's target.
    pub fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }
}

/// The config and manifest of `snap`'s checkpoint image: one layer, the checkpoint annotation,
/// and our compatibility key as annotations.
pub fn blobs(snap: &Snapshot) -> ImageBlobs {
    let r = &snap.record;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [r.layer_digest]},
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = r.key.annotations();
    annotations.insert(CHECKPOINT_ANNOTATION.to_string(), r.container_name.clone());
    annotations.insert("dev.coldstart.snapshot.name".to_string(), r.name.clone());
    annotations.insert(
        "dev.coldstart.snapshot.baseImage".to_string(),
        r.base_image.clone(),
    );
    if !r.meta.model.is_empty() {
        annotations.insert(
            "dev.coldstart.snapshot.model".to_string(),
            r.meta.model.clone(),
        );
        annotations.insert(
            "dev.coldstart.snapshot.createdUnix".to_string(),
            r.meta.created_unix.to_string(),
        );
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": r.layer_digest, "size": r.layer_size}],
        "annotations": annotations,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    ImageBlobs { config, manifest }
}

impl ContainerdSnapshots {
    /// Imports `snap` as image `name` into `k8s.io`: blobs into the content store (under a lease
    /// until the image names them), the layer unpacked, the image record created pinned.
    /// Returns the manifest digest.
    #[instrument(skip_all, fields(image = %name, snapshot = %snap.record.name), err(level = "debug"))]
    pub async fn import(&self, snap: &Snapshot, name: &str) -> Result<String, Error> {
        let b = blobs(snap);
        let lease = format!("coldstart-snapshot-{}", snap.record.name);
        let mut leases = ctd::leases_client::LeasesClient::new(self.channel.clone());
        let _ = leases
            .delete(self.ns(ctd::DeleteRequest {
                id: lease.clone(),
                sync: false,
            }))
            .await;
        leases
            .create(self.ns(ctd::CreateRequest {
                id: lease.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(Self::rpc("create lease"))?;
        let result = self.import_leased(snap, name, &b, &lease).await;
        let _ = leases
            .delete(self.ns(ctd::DeleteRequest {
                id: lease,
                sync: false,
            }))
            .await;
        result
    }

    async fn import_leased(
        &self,
        snap: &Snapshot,
        name: &str,
        b: &ImageBlobs,
        lease: &str,
    ) -> Result<String, Error> {
        let r = &snap.record;
        let chain = r.layer_digest.clone(); // one uncompressed layer: chain id = diff id = digest
        let snapshotter = self.cfg.snapshotter.clone();
        let layer = tokio::fs::File::open(snap.layer())
            .await
            .map_err(|e| Error::io("open", snap.layer(), e))?;
        self.write_blob(lease, &r.layer_digest, r.layer_size, layer, HashMap::new())
            .await?;
        let config_labels = HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
            chain.clone(),
        )]);
        let config_digest = sha256(&b.config);
        self.write_blob(
            lease,
            &config_digest,
            b.config.len() as u64,
            std::io::Cursor::new(b.config.clone()),
            config_labels,
        )
        .await?;
        let manifest_labels = HashMap::from([
            (
                "containerd.io/gc.ref.content.config".to_string(),
                config_digest,
            ),
            (
                "containerd.io/gc.ref.content.l.0".to_string(),
                r.layer_digest.clone(),
            ),
        ]);
        let digest = b.manifest_digest();
        self.write_blob(
            lease,
            &digest,
            b.manifest.len() as u64,
            std::io::Cursor::new(b.manifest.clone()),
            manifest_labels,
        )
        .await?;
        self.root_only_blob(&r.layer_digest)?;
        self.unpack(lease, &r.layer_digest, r.layer_size, &chain)
            .await?;
        // As CRI's own pull does: a record by name and one by image id (the config digest),
        // which CRI's restore looks the image up by.
        self.put_image(name, &digest, b.manifest.len() as u64)
            .await?;
        self.put_image(&sha256(&b.config), &digest, b.manifest.len() as u64)
            .await?;
        Ok(digest)
    }

    /// Writes one blob (skipped when the store has it), committed with `labels`.
    async fn write_blob(
        &self,
        lease: &str,
        digest: &str,
        size: u64,
        mut data: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let mut content = ctd::content_client::ContentClient::new(self.channel.clone());
        let info = content
            .info(self.leased(
                lease,
                ctd::InfoRequest {
                    digest: digest.to_string(),
                },
            ))
            .await;
        if info.is_ok() {
            return self.label_blob(digest, labels).await;
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<ctd::WriteContentRequest>(4);
        let reference = format!("coldstart-{digest}");
        let (d, r) = (digest.to_string(), reference.clone());
        let feeder = tokio::spawn(async move {
            let mut offset = 0u64;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = data.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                let msg = write_msg(1, &r, size, &d, offset, buf[..n].to_vec(), HashMap::new());
                if tx.send(msg).await.is_err() {
                    return Ok(());
                }
                offset += n as u64;
            }
            let _ = tx
                .send(write_msg(2, &r, size, &d, offset, Vec::new(), labels))
                .await;
            Ok::<(), std::io::Error>(())
        });
        let mut req = self.leased(lease, tokio_stream(rx));
        req.set_timeout(std::time::Duration::from_secs(3600));
        let mut responses = content
            .write(req)
            .await
            .map_err(Self::rpc("write content"))?
            .into_inner();
        while responses
            .message()
            .await
            .map_err(Self::rpc("write content"))?
            .is_some()
        {}
        match feeder.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::io("read", "checkpoint layer", e)),
            Err(e) => Err(Error::Runtime {
                op: "write content",
                reason: e.to_string(),
            }),
        }
    }

    async fn label_blob(&self, digest: &str, labels: HashMap<String, String>) -> Result<(), Error> {
        if labels.is_empty() {
            return Ok(());
        }
        let fields = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = containerd_client::services::v1::Info {
            digest: digest.to_string(),
            labels,
            ..Default::default()
        };
        ctd::content_client::ContentClient::new(self.channel.clone())
            .update(self.ns(ctd::UpdateRequest {
                info: Some(info),
                update_mask: Some(prost_types::FieldMask { paths: fields }),
            }))
            .await
            .map_err(Self::rpc("label content"))?;
        Ok(())
    }

    /// The layer applied into a committed snapshot named by its chain id, unless one exists.
    async fn unpack(&self, lease: &str, digest: &str, size: u64, chain: &str) -> Result<(), Error> {
        let snapshotter = self.cfg.snapshotter.clone();
        let mut snaps = snap::snapshots_client::SnapshotsClient::new(self.channel.clone());
        let stat = snaps
            .stat(self.ns(snap::StatSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key: chain.to_string(),
            }))
            .await;
        match stat {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(Self::rpc("stat snapshot")(s)),
        }
        let key = format!("coldstart-extract-{chain}");
        let _ = snaps
            .remove(self.ns(snap::RemoveSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key: key.clone(),
            }))
            .await;
        let mounts = snaps
            .prepare(self.leased(
                lease,
                snap::PrepareSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: key.clone(),
                    parent: String::new(),
                    labels: HashMap::new(),
                },
            ))
            .await
            .map_err(Self::rpc("prepare snapshot"))?
            .into_inner()
            .mounts;
        let desc = Descriptor {
            media_type: MEDIA_LAYER.to_string(),
            digest: digest.to_string(),
            size: size as i64,
            annotations: HashMap::new(),
        };
        let mut apply = self.leased(
            lease,
            ctd::ApplyRequest {
                diff: Some(desc),
                mounts,
                payloads: HashMap::new(),
                sync_fs: true,
            },
        );
        apply.set_timeout(std::time::Duration::from_secs(3600));
        let applied = ctd::diff_client::DiffClient::new(self.channel.clone())
            .apply(apply)
            .await;
        if let Err(s) = applied {
            let _ = snaps
                .remove(self.ns(snap::RemoveSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key,
                }))
                .await;
            return Err(Self::rpc("apply layer")(s));
        }
        snaps
            .commit(self.leased(
                lease,
                snap::CommitSnapshotRequest {
                    snapshotter,
                    name: chain.to_string(),
                    key,
                    labels: HashMap::from([(
                        "containerd.io/snapshot.ref".to_string(),
                        chain.to_string(),
                    )]),
                },
            ))
            .await
            .map_err(Self::rpc("commit snapshot"))?;
        Ok(())
    }

    /// Creates (or replaces) the image record, pinned so the kubelet's GC keeps it.
    async fn put_image(&self, name: &str, digest: &str, size: u64) -> Result<(), Error> {
        let image = ctd::Image {
            name: name.to_string(),
            labels: HashMap::from([
                (PINNED_LABEL.to_string(), PINNED_VALUE.to_string()),
                (MANAGED_LABEL.to_string(), "managed".to_string()),
            ]),
            target: Some(Descriptor {
                media_type: MEDIA_MANIFEST.to_string(),
                digest: digest.to_string(),
                size: size as i64,
                annotations: HashMap::new(),
            }),
            ..Default::default()
        };
        let mut images = ctd::images_client::ImagesClient::new(self.channel.clone());
        let created = images
            .create(self.ns(ctd::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                images
                    .update(self.ns(ctd::UpdateImageRequest {
                        image: Some(image),
                        update_mask: None,
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(Self::rpc("update image"))?;
                Ok(())
            }
            Err(s) => Err(Self::rpc("create image")(s)),
        }
    }

    /// The layer blob holds process memory: mode 0400 (containerd writes 0444).
    fn root_only_blob(&self, digest: &str) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let Some(root) = &self.cfg.containerd_root else {
            return Ok(());
        };
        let hex = digest.trim_start_matches("sha256:");
        let path = root
            .join("io.containerd.content.v1.content/blobs/sha256")
            .join(hex);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).map_err(|e| {
            Error::io(
                "chmod 0400 (containerd root wrong? --containerd-root)",
                &path,
                e,
            )
        })
    }

    fn leased<T>(&self, lease: &str, msg: T) -> tonic::Request<T> {
        let mut req = self.ns(msg);
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(lease) {
            req.metadata_mut().insert("containerd-lease", v);
        }
        req
    }
}

fn write_msg(
    action: i32,
    reference: &str,
    total: u64,
    expected: &str,
    offset: u64,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> ctd::WriteContentRequest {
    ctd::WriteContentRequest {
        action,
        r#ref: reference.to_string(),
        total: total as i64,
        expected: expected.to_string(),
        offset: offset as i64,
        data,
        labels,
    }
}

/// A receiver as a stream of messages.
fn tokio_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::super::key::CompatKey;
    use super::super::store::Record;
    use super::*;

    #[test]
    fn the_manifest_marks_a_checkpoint_image_with_one_uncompressed_layer() {
        let snap = Snapshot {
            dir: "/x".into(),
            record: Record {
                name: "s1".into(),
                container_name: "counter".into(),
                base_image: "127.0.0.1:5000/c@sha256:ab".into(),
                layer_digest: "sha256:cd".into(),
                layer_size: 42,
                key: CompatKey {
                    kernel: "6.1".into(),
                    ..CompatKey::default()
                },
                meta: Default::default(),
            },
        };
        let b = blobs(&snap);
        let m: serde_json::Value = serde_json::from_slice(&b.manifest).unwrap();
        assert_eq!(m["annotations"][CHECKPOINT_ANNOTATION], "counter");
        assert_eq!(m["annotations"]["dev.coldstart.snapshot.kernel"], "6.1");
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
        assert_eq!(m["layers"][0]["mediaType"], MEDIA_LAYER);
        assert_eq!(m["layers"][0]["digest"], "sha256:cd");
        assert_eq!(m["config"]["digest"], sha256(&b.config));
        let c: serde_json::Value = serde_json::from_slice(&b.config).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][0], "sha256:cd");
        assert_eq!(b.manifest_digest(), sha256(&b.manifest));
    }
}
