//! The real images client: CRI `ImageService` for pulls (the kubelet's own path) and the
//! containerd API for version, presence, unpack state, pin labels and progress.

mod config;
mod connect;
mod errors;
mod facts;
mod ingest;
mod ranged;
mod sink;
mod staging;
mod unpack;

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1 as ctd;
use k8s_cri::v1 as cri;
use tonic::Request;
use tonic::transport::Channel;
use tracing::instrument;

use super::{
    Blob, BlobProgress, DiskSpace, Error, FetchOptions, FetchOutcome, FetchProgress, ImageManifest,
    ImageRef, ImageState, Images, K8S_NAMESPACE, PINNED_LABEL, PINNED_VALUE, PullProgress,
    RegistryAuth, RegistryClient, RuntimeInfo,
};
pub(crate) use connect::{channel, in_k8s_namespace};
use errors::{classify_pull, rpc};
pub(crate) use facts::{clean_version, version_at_least};
use facts::{ingest_digest, parse_cri_config, snapshotter_of, statvfs_nearest};

/// How to reach and read the node's containerd.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket (CRI is served on the same socket).
    pub socket: PathBuf,
    /// containerd's root, used when containerd does not tell it (default `/var/lib/containerd`).
    pub root: PathBuf,
    /// Registry configuration directory (CRI `config_path`); when `None`, read from CRI
    /// (containerd 1.x) or from `config_file` (2.x does not report it).
    pub hosts_dir: Option<PathBuf>,
    /// containerd's config file, read for what CRI does not report (default
    /// `/etc/containerd/config.toml`; a missing file is fine).
    pub config_file: PathBuf,
    /// Timeout of one registry request made for sizes.
    pub registry_timeout: Duration,
    /// Timeout of short containerd calls (not of the pull itself).
    pub call_timeout: Duration,
}

impl ContainerdConfig {
    /// Defaults for a node: `/run/containerd/containerd.sock`, `/var/lib/containerd`.
    pub fn new(socket: PathBuf) -> Self {
        ContainerdConfig {
            socket,
            root: PathBuf::from("/var/lib/containerd"),
            hosts_dir: None,
            config_file: PathBuf::from("/etc/containerd/config.toml"),
            registry_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// What CRI's verbose status says about its configuration; absent keys stay `None`.
#[derive(Debug, Default, Clone)]
struct CriConfig {
    root: Option<PathBuf>,
    snapshotter: Option<String>,
    config_path: Option<PathBuf>,
}

/// Images port over a containerd socket.
#[derive(Debug, Clone)]
pub struct ContainerdImages {
    cfg: ContainerdConfig,
    channel: Channel,
}

impl ContainerdImages {
    /// A client for the socket in `cfg`. Connects lazily and reconnects after a containerd
    /// restart, so a pull retried after one needs no new client.
    pub fn new(cfg: ContainerdConfig) -> Result<Self, Error> {
        let channel = channel(&cfg.socket);
        Ok(ContainerdImages { cfg, channel })
    }

    fn cri_images(&self) -> cri::image_service_client::ImageServiceClient<Channel> {
        cri::image_service_client::ImageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    fn cri_runtime(&self) -> cri::runtime_service_client::RuntimeServiceClient<Channel> {
        cri::runtime_service_client::RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    /// Wraps a request with the `k8s.io` namespace header and the short-call timeout.
    fn ns<T>(&self, msg: T) -> Request<T> {
        in_k8s_namespace(msg, self.cfg.call_timeout)
    }

    /// CRI's configuration: what CRI `Status` reports (1.x), completed from containerd's
    /// config file (2.x reports neither the registry hosts directory nor the snapshotter).
    async fn cri_config(&self) -> Result<CriConfig, Error> {
        let mut req = Request::new(cri::StatusRequest { verbose: true });
        req.set_timeout(self.cfg.call_timeout);
        let resp = self
            .cri_runtime()
            .status(req)
            .await
            .map_err(|s| rpc(&self.cfg.socket, "cri status", s))?
            .into_inner();
        let reported = parse_cri_config(&resp.info);
        let file = match tokio::fs::read_to_string(&self.cfg.config_file).await {
            Ok(text) => config::parse(&text),
            Err(_) => CriConfig::default(),
        };
        Ok(CriConfig {
            root: reported.root.or(file.root),
            snapshotter: reported.snapshotter.or(file.snapshotter),
            config_path: reported.config_path.or(file.config_path),
        })
    }

    async fn server_version(&self) -> Result<String, Error> {
        let mut req = Request::new(());
        req.set_timeout(self.cfg.call_timeout);
        let resp = ctd::version_client::VersionClient::new(self.channel.clone())
            .version(req)
            .await
            .map_err(|s| rpc(&self.cfg.socket, "version", s))?;
        Ok(clean_version(&resp.into_inner().version))
    }

    async fn image_fs_mount(&self) -> Result<Option<PathBuf>, Error> {
        let mut req = Request::new(cri::ImageFsInfoRequest {});
        req.set_timeout(self.cfg.call_timeout);
        let resp = self
            .cri_images()
            .image_fs_info(req)
            .await
            .map_err(|s| rpc(&self.cfg.socket, "image fs info", s))?
            .into_inner();
        Ok(resp
            .image_filesystems
            .into_iter()
            .filter_map(|fs| fs.fs_id.map(|id| id.mountpoint))
            .find(|m| !m.is_empty())
            .map(PathBuf::from))
    }

    /// The containerd image records (name:tag, name@digest, sha256:id) that share the image's
    /// target, found through CRI's answer for `image`.
    async fn image_records(&self, image: &ImageRef) -> Result<Vec<ctd::Image>, Error> {
        let mut images = ctd::images_client::ImagesClient::new(self.channel.clone());
        let get = images
            .get(self.ns(ctd::GetImageRequest {
                name: image.to_string(),
            }))
            .await;
        let target = match get {
            Ok(resp) => resp.into_inner().image.and_then(|i| i.target),
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => return Err(rpc(&self.cfg.socket, "get image", s)),
        };
        let Some(target) = target else {
            return Ok(Vec::new());
        };
        let filter = format!("target.digest=={}", target.digest);
        let resp = images
            .list(self.ns(ctd::ListImagesRequest {
                filters: vec![filter],
            }))
            .await
            .map_err(|s| rpc(&self.cfg.socket, "list images", s))?;
        Ok(resp.into_inner().images)
    }

    async fn snapshotter(&self) -> Result<String, Error> {
        if let Some(s) = self.cri_config().await?.snapshotter {
            return Ok(s);
        }
        let mount = self.image_fs_mount().await?;
        Ok(mount
            .as_deref()
            .and_then(snapshotter_of)
            .unwrap_or_else(|| "overlayfs".to_string()))
    }
}

impl Images for ContainerdImages {
    #[instrument(skip_all, fields(socket = %self.cfg.socket.display()), err(level = "debug"))]
    async fn runtime_info(&self) -> Result<RuntimeInfo, Error> {
        let version = self.server_version().await?;
        let cri = self.cri_config().await?;
        let root = cri.root.clone().unwrap_or_else(|| self.cfg.root.clone());
        let mount = self.image_fs_mount().await?;
        let snapshotter = cri
            .snapshotter
            .or_else(|| mount.as_deref().and_then(snapshotter_of))
            .unwrap_or_else(|| "overlayfs".to_string());
        let image_fs = mount
            .unwrap_or_else(|| root.join(format!("io.containerd.snapshotter.v1.{snapshotter}")));
        let content = root.join("io.containerd.content.v1.content");
        Ok(RuntimeInfo {
            honours_pin: version_at_least(&version, (1, 7, 3)),
            version,
            snapshotter,
            storage_paths: vec![content, image_fs],
        })
    }

    #[instrument(skip_all, fields(path = %path.display()), err(level = "debug"))]
    async fn disk_space(&self, path: &Path) -> Result<DiskSpace, Error> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || statvfs_nearest(&path))
            .await
            .map_err(|e| Error::Runtime {
                op: "statvfs",
                reason: e.to_string(),
            })?
    }

    #[instrument(skip_all, fields(image = %image), err(level = "debug"))]
    async fn manifest(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageManifest, Error> {
        self.registry_client().await.manifest(image, auth).await
    }

    async fn registry_client(&self) -> RegistryClient {
        let hosts_dir = match &self.cfg.hosts_dir {
            Some(dir) => Some(dir.clone()),
            None => self.cri_config().await.ok().and_then(|c| c.config_path),
        };
        RegistryClient::new(hosts_dir, self.cfg.registry_timeout)
    }

    #[instrument(skip_all, fields(ttl_s = ttl.as_secs()), err(level = "debug"))]
    async fn create_lease(&self, ttl: Duration) -> Result<Option<String>, Error> {
        let id = ingest::create_lease(&self.channel, ttl, self.cfg.call_timeout)
            .await
            .map_err(|s| rpc(&self.cfg.socket, "create lease", s))?;
        Ok(Some(id))
    }

    #[instrument(skip_all, fields(lease = id), err(level = "debug"))]
    async fn delete_lease(&self, id: &str) -> Result<(), Error> {
        ingest::delete_lease(&self.channel, id, self.cfg.call_timeout)
            .await
            .map_err(|s| rpc(&self.cfg.socket, "delete lease", s))
    }

    #[instrument(skip_all, fields(image = %image, lease), err(level = "debug"))]
    async fn fetch(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        manifest: &ImageManifest,
        lease: &str,
        opts: &FetchOptions,
        progress: &FetchProgress,
    ) -> Result<FetchOutcome, Error> {
        // Ranges are written in place when containerd's content store is on this filesystem
        // (see `staging`); its root as CRI reports it, else as configured.
        let content = if opts.in_place {
            let root = match self.cri_config().await {
                Ok(c) => c.root.unwrap_or_else(|| self.cfg.root.clone()),
                Err(_) => self.cfg.root.clone(),
            };
            Some(root.join("io.containerd.content.v1.content"))
        } else {
            None
        };
        let fetch = ranged::Fetch {
            content: content.as_deref(),
            channel: &self.channel,
            socket: &self.cfg.socket,
            call_timeout: self.cfg.call_timeout,
            read_timeout: self.cfg.registry_timeout,
            registry: self.registry_client().await,
            lease,
            opts,
            progress,
        };
        fetch.run(image, auth, manifest).await
    }

    #[instrument(skip_all, fields(image = %image, handler = runtime_handler), err(level = "debug"))]
    async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        runtime_handler: Option<&str>,
    ) -> Result<String, Error> {
        let auth = auth.map(|a| cri::AuthConfig {
            username: a.username.clone(),
            password: a.password.clone(),
            identity_token: a.identity_token.clone(),
            registry_token: a.registry_token.clone(),
            // Empty: containerd's ParseAuth compares a non-empty address with the host it is
            // about to contact (a mirror from hosts.toml included) and silently drops the
            // credentials on mismatch; a bare domain never matches (no URL host).
            server_address: String::new(),
            auth: String::new(),
        });
        let req = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                runtime_handler: runtime_handler.unwrap_or_default().to_string(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        };
        // No deadline: the caller's stall detector cancels by dropping this future.
        let resp = self
            .cri_images()
            .pull_image(Request::new(req))
            .await
            .map_err(|s| classify_pull(&self.cfg.socket, image, s))?;
        Ok(resp.into_inner().image_ref)
    }

    #[instrument(skip_all, fields(blobs = blobs.len()), err(level = "debug"))]
    async fn progress(&self, blobs: &[Blob]) -> Result<PullProgress, Error> {
        let mut content = ctd::content_client::ContentClient::new(self.channel.clone());
        let statuses = content
            .list_statuses(self.ns(ctd::ListStatusesRequest { filters: vec![] }))
            .await
            .map_err(|s| rpc(&self.cfg.socket, "list statuses", s))?
            .into_inner()
            .statuses;
        let active: Vec<BlobProgress> = statuses
            .into_iter()
            .map(|s| BlobProgress {
                digest: ingest_digest(&s.expected, &s.r#ref),
                done: u64::try_from(s.offset).unwrap_or(0),
                total: u64::try_from(s.total).unwrap_or(0),
            })
            .filter(|b| blobs.is_empty() || blobs.iter().any(|x| x.digest == b.digest))
            .collect();
        if blobs.is_empty() {
            // Sizes unknown: report every ingest in the namespace.
            return Ok(PullProgress {
                done: active.iter().map(|b| b.done).sum(),
                total: active.iter().map(|b| b.total).sum(),
                active,
            });
        }
        let mut done = 0;
        for blob in blobs {
            if let Some(a) = active.iter().find(|a| a.digest == blob.digest) {
                done += a.done.min(blob.size);
                continue;
            }
            let info = content
                .info(self.ns(ctd::InfoRequest {
                    digest: blob.digest.clone(),
                }))
                .await;
            match info {
                Ok(_) => done += blob.size,
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(rpc(&self.cfg.socket, "content info", s)),
            }
        }
        Ok(PullProgress {
            done,
            total: blobs.iter().map(|b| b.size).sum(),
            active,
        })
    }

    #[instrument(skip_all, fields(image = %image), err(level = "debug"))]
    async fn status(&self, image: &ImageRef) -> Result<Option<ImageState>, Error> {
        let mut req = Request::new(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        });
        req.set_timeout(self.cfg.call_timeout);
        let resp = self
            .cri_images()
            .image_status(req)
            .await
            .map_err(|s| rpc(&self.cfg.socket, "image status", s))?
            .into_inner();
        let Some(cri_image) = resp.image else {
            return Ok(None);
        };
        let records = self.image_records(image).await?;
        let pin_label = !records.is_empty()
            && records
                .iter()
                .all(|r| r.labels.get(PINNED_LABEL).map(String::as_str) == Some(PINNED_VALUE));
        let snapshotter = self.snapshotter().await?;
        let unpacked = self.is_unpacked(&snapshotter, &cri_image.id).await?;
        Ok(Some(ImageState {
            id: cri_image.id,
            repo_tags: cri_image.repo_tags,
            repo_digests: cri_image.repo_digests,
            size: cri_image.size,
            unpacked,
            pin_label,
            cri_pinned: cri_image.pinned,
        }))
    }

    #[instrument(skip_all, fields(image = %image, pinned), err(level = "debug"))]
    async fn set_pinned(&self, image: &ImageRef, pinned: bool) -> Result<(), Error> {
        let records = self.image_records(image).await?;
        if records.is_empty() {
            return Err(Error::NotFound {
                image: image.to_string(),
                reason: "no containerd image record to pin".to_string(),
            });
        }
        let mut client = ctd::images_client::ImagesClient::new(self.channel.clone());
        for mut record in records {
            if pinned {
                record
                    .labels
                    .insert(PINNED_LABEL.to_string(), PINNED_VALUE.to_string());
            } else {
                record.labels.remove(PINNED_LABEL);
            }
            // Only this label's path in the mask: other managers' labels stay untouched.
            let mask = prost_types::FieldMask {
                paths: vec![format!("labels.{PINNED_LABEL}")],
            };
            client
                .update(self.ns(ctd::UpdateImageRequest {
                    image: Some(record),
                    update_mask: Some(mask),
                    source_date_epoch: None,
                }))
                .await
                .map_err(|s| rpc(&self.cfg.socket, "update image labels", s))?;
        }
        Ok(())
    }

    #[instrument(skip_all, fields(image = %image), err(level = "debug"))]
    async fn remove(&self, image: &ImageRef) -> Result<(), Error> {
        let mut req = Request::new(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
        });
        req.set_timeout(self.cfg.call_timeout);
        self.cri_images()
            .remove_image(req)
            .await
            .map_err(|s| rpc(&self.cfg.socket, "remove image", s))?;
        Ok(())
    }
}

impl ContainerdImages {
    /// containerd's version; fails with [`Error::Unavailable`] when the socket does not answer.
    pub async fn ping(&self) -> Result<String, Error> {
        self.server_version().await
    }
}

#[cfg(test)]
mod tests;
