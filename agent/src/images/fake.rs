//! A stateful, in-memory stand-in for containerd and its registry, with failure knobs.
//!
//! It keeps a registry (images with their manifests), a content store (bytes present per blob),
//! image records with labels, and the free space of one filesystem. A pull moves bytes from the
//! registry into the content store a chunk per tick of tokio time, so paused-time tests see
//! progress, stalls and restarts exactly as the orchestration would on a real node.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::containerd::version_at_least;
use super::{
    Blob, BlobProgress, DiskSpace, Error, FetchOptions, FetchOutcome, FetchProgress, ImageManifest,
    ImageRef, ImageState, Images, PullProgress, RegistryAuth, RuntimeInfo,
};

/// A failure the fake injects into the next pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFault {
    /// The runtime socket is gone.
    Unavailable,
    /// The registry answers 404.
    NotFound,
    /// The registry refuses the credentials.
    Unauthorized,
    /// The registry cannot be reached.
    RegistryDown,
    /// The disk fills up while writing.
    NoSpace,
}

/// An image the fake registry serves.
#[derive(Debug, Clone)]
pub struct FakeImage {
    /// Its manifest.
    pub manifest: ImageManifest,
    /// Unpacked size in the snapshotter.
    pub unpacked_size: u64,
    /// Credentials it requires (`None`: anonymous).
    pub requires: Option<RegistryAuth>,
}

#[derive(Debug, Clone)]
struct Record {
    id: String,
    unpacked: bool,
    pinned: bool,
    size: u64,
}

/// Everything the fake holds; tests read and set it through [`Fake::state`].
#[derive(Debug)]
pub struct State {
    /// Server version reported.
    pub version: String,
    /// Free bytes of the one filesystem.
    pub available: u64,
    /// Bytes moved per tick while pulling (per blob).
    pub chunk: u64,
    /// Length of a tick.
    pub tick: Duration,
    /// Images the registry serves, by normalised reference.
    pub registry: HashMap<String, FakeImage>,
    /// Bytes present per blob digest (complete when equal to the blob's size).
    pub content: HashMap<String, u64>,
    /// Failures injected into the next pulls, in order.
    pub fail_pulls: VecDeque<ImageFault>,
    /// When set, pulls stop moving bytes once this many were served in the attempt.
    pub stall_after: Option<u64>,
    /// When true, every call fails as if containerd were down.
    pub down: bool,
    /// Bytes the registry served, in all.
    pub served: u64,
    /// Names of the calls made, in order.
    pub calls: Vec<String>,
    /// Whether the ranged fetch works (false: it falls back, as against a registry that
    /// ignores Range).
    pub ranged: bool,
    /// Leases alive (created and not deleted).
    pub leases: Vec<String>,
    /// Leases created, in all.
    pub leases_created: u64,
    records: HashMap<String, Record>,
    restarts: u64,
}

/// The fake images port. Clones share state.
#[derive(Debug, Clone)]
pub struct Fake {
    inner: Arc<Mutex<State>>,
}

impl Default for Fake {
    fn default() -> Self {
        Self::new()
    }
}

impl Fake {
    /// An empty fake: containerd 1.7.24, 100 GiB free, 1 MiB per 100 ms per blob.
    pub fn new() -> Self {
        Fake {
            inner: Arc::new(Mutex::new(State {
                version: "1.7.24".to_string(),
                available: 100 << 30,
                chunk: 1 << 20,
                tick: Duration::from_millis(100),
                registry: HashMap::new(),
                content: HashMap::new(),
                fail_pulls: VecDeque::new(),
                stall_after: None,
                down: false,
                served: 0,
                calls: Vec::new(),
                ranged: false,
                leases: Vec::new(),
                leases_created: 0,
                records: HashMap::new(),
                restarts: 0,
            })),
        }
    }

    /// Locks the state for reading or setting knobs.
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has already failed.
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds an image with layers of the given sizes to the registry; returns its manifest.
    pub fn publish(&self, image: &str, layer_sizes: &[u64]) -> ImageManifest {
        let manifest = ImageManifest {
            digest: format!("sha256:{:0>64x}", hash(&format!("manifest {image}"))),
            config: Blob {
                digest: format!("sha256:{:0>64x}", hash(&format!("config {image}"))),
                size: 1024,
                media_type: "application/vnd.oci.image.config.v1+json".to_string(),
            },
            layers: layer_sizes
                .iter()
                .enumerate()
                .map(|(i, size)| Blob {
                    digest: format!("sha256:{:0>64x}", hash(&format!("layer {i} {image}"))),
                    size: *size,
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
                })
                .collect(),
        };
        let unpacked_size = layer_sizes.iter().sum::<u64>() * 2;
        self.state().registry.insert(
            ImageRef::parse(image)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| image.to_string()),
            FakeImage {
                manifest: manifest.clone(),
                unpacked_size,
                requires: None,
            },
        );
        manifest
    }

    /// Simulates a containerd restart: the pull in flight fails, partial ingests are lost,
    /// complete blobs and image records stay.
    pub fn restart(&self) {
        let mut st = self.state();
        st.restarts += 1;
        let sizes: HashMap<String, u64> = st
            .registry
            .values()
            .flat_map(|i| i.manifest.blobs())
            .map(|b| (b.digest, b.size))
            .collect();
        st.content
            .retain(|d, have| sizes.get(d).is_some_and(|size| *have >= *size));
    }

    /// Whether the image record carries the pin label.
    pub fn pinned(&self, image: &str) -> bool {
        let key = ImageRef::parse(image)
            .map(|r| r.to_string())
            .unwrap_or_default();
        self.state().records.get(&key).is_some_and(|r| r.pinned)
    }

    fn call(&self, name: &str) -> Result<(), Error> {
        let mut st = self.state();
        st.calls.push(name.to_string());
        if st.down {
            return Err(Error::Unavailable {
                socket: "/fake/containerd.sock".into(),
                reason: "connection refused".to_string(),
            });
        }
        Ok(())
    }

    fn lookup(&self, image: &ImageRef, auth: Option<&RegistryAuth>) -> Result<FakeImage, Error> {
        let st = self.state();
        let Some(found) = st.registry.get(&image.to_string()) else {
            return Err(Error::NotFound {
                image: image.to_string(),
                reason: "manifest unknown".to_string(),
            });
        };
        if let Some(required) = &found.requires
            && auth != Some(required)
        {
            return Err(Error::Unauthorized {
                image: image.to_string(),
                reason: "401 Unauthorized".to_string(),
            });
        }
        Ok(found.clone())
    }

    /// Moves one chunk of every incomplete blob; `Ok(true)` when all are complete.
    fn step(&self, image: &ImageRef, blobs: &[Blob], start: u64) -> Result<bool, Error> {
        let mut st = self.state();
        if st.down {
            return Err(Error::Unavailable {
                socket: "/fake/containerd.sock".into(),
                reason: "transport error".to_string(),
            });
        }
        if let Some(limit) = st.stall_after
            && st.served - start >= limit
        {
            return Ok(false);
        }
        let needed: u64 = blobs.iter().map(|b| b.size).sum();
        let have: u64 = blobs
            .iter()
            .map(|b| st.content.get(&b.digest).copied().unwrap_or(0))
            .sum();
        if st.available < needed.saturating_sub(have) {
            return Err(Error::NoSpace {
                image: image.to_string(),
                reason: "write: no space left on device".to_string(),
            });
        }
        let chunk = st.chunk;
        let mut complete = true;
        for b in blobs {
            let have = st.content.get(&b.digest).copied().unwrap_or(0);
            let add = chunk.min(b.size - have.min(b.size));
            st.served += add;
            st.available = st.available.saturating_sub(add);
            st.content.insert(b.digest.clone(), have + add);
            complete &= have + add >= b.size;
        }
        Ok(complete)
    }
}

impl Fake {
    /// Moves blob bytes a chunk per tick until every blob is complete, failing as a pull does
    /// when containerd restarts or goes down.
    async fn transfer(&self, image: &ImageRef, blobs: &[Blob]) -> Result<(), Error> {
        let (start, restarts, tick) = {
            let st = self.state();
            (st.served, st.restarts, st.tick)
        };
        loop {
            if self.state().restarts != restarts {
                return Err(Error::Unavailable {
                    socket: "/fake/containerd.sock".into(),
                    reason: "transport error: connection reset".to_string(),
                });
            }
            if self.step(image, blobs, start)? {
                return Ok(());
            }
            tokio::time::sleep(tick).await;
        }
    }
}

impl Images for Fake {
    async fn create_lease(&self, _ttl: Duration) -> Result<Option<String>, Error> {
        self.call("create_lease")?;
        let mut st = self.state();
        st.leases_created += 1;
        let id = format!("fake-lease-{}", st.leases_created);
        st.leases.push(id.clone());
        Ok(Some(id))
    }

    async fn delete_lease(&self, id: &str) -> Result<(), Error> {
        self.call("delete_lease")?;
        self.state().leases.retain(|l| l != id);
        Ok(())
    }

    async fn fetch(
        &self,
        image: &ImageRef,
        _auth: Option<&RegistryAuth>,
        manifest: &ImageManifest,
        lease: &str,
        _opts: &FetchOptions,
        progress: &FetchProgress,
    ) -> Result<FetchOutcome, Error> {
        self.call("fetch")?;
        {
            let st = self.state();
            if !st.leases.iter().any(|l| l == lease) {
                return Err(Error::Runtime {
                    op: "content write",
                    reason: format!("lease {lease} not found"),
                });
            }
            if !st.ranged {
                return Ok(FetchOutcome::Fallback(
                    "the registry ignores Range (fake)".to_owned(),
                ));
            }
        }
        let blobs = manifest.blobs();
        let (before, resumed) = {
            let st = self.state();
            let resumed = blobs
                .iter()
                .map(|b| st.content.get(&b.digest).copied().unwrap_or(0).min(b.size))
                .sum();
            (st.served, resumed)
        };
        let res = self.transfer(image, &blobs).await;
        let moved = self.state().served - before;
        progress.arrived(moved);
        progress.written(moved);
        res?;
        Ok(FetchOutcome::Fetched {
            blobs: blobs.len(),
            bytes: moved,
            resumed,
            in_place: 0,
        })
    }

    async fn runtime_info(&self) -> Result<RuntimeInfo, Error> {
        self.call("runtime_info")?;
        let version = self.state().version.clone();
        Ok(RuntimeInfo {
            honours_pin: version_at_least(&version, (1, 7, 3)),
            version,
            snapshotter: "overlayfs".to_string(),
            storage_paths: vec![
                "/fake/root/io.containerd.content.v1.content".into(),
                "/fake/root/io.containerd.snapshotter.v1.overlayfs".into(),
            ],
        })
    }

    async fn disk_space(&self, path: &Path) -> Result<DiskSpace, Error> {
        self.call("disk_space")?;
        Ok(DiskSpace {
            path: path.to_path_buf(),
            available: self.state().available,
            fs_id: 1,
        })
    }

    async fn manifest(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageManifest, Error> {
        self.call("manifest")?;
        Ok(self.lookup(image, auth)?.manifest)
    }

    async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        _runtime_handler: Option<&str>,
    ) -> Result<String, Error> {
        self.call("pull")?;
        let failure = self.state().fail_pulls.pop_front();
        let name = image.to_string();
        match failure {
            None => {}
            Some(ImageFault::Unavailable) => {
                return Err(Error::Unavailable {
                    socket: "/fake/containerd.sock".into(),
                    reason: "connection refused".to_string(),
                });
            }
            Some(ImageFault::NotFound) => {
                return Err(Error::NotFound {
                    image: name,
                    reason: "not found".to_string(),
                });
            }
            Some(ImageFault::Unauthorized) => {
                return Err(Error::Unauthorized {
                    image: name,
                    reason: "401 Unauthorized".to_string(),
                });
            }
            Some(ImageFault::RegistryDown) => {
                return Err(Error::RegistryUnreachable {
                    image: name,
                    reason: "connection refused".to_string(),
                });
            }
            Some(ImageFault::NoSpace) => {
                return Err(Error::NoSpace {
                    image: name,
                    reason: "no space left on device".to_string(),
                });
            }
        }
        let found = self.lookup(image, auth)?;
        self.transfer(image, &found.manifest.blobs()).await?;
        let mut st = self.state();
        st.available = st.available.saturating_sub(found.unpacked_size);
        let pinned = st.records.get(&name).is_some_and(|r| r.pinned);
        st.records.insert(
            name,
            Record {
                id: found.manifest.config.digest.clone(),
                unpacked: true,
                pinned,
                size: found.unpacked_size,
            },
        );
        Ok(found.manifest.config.digest)
    }

    async fn progress(&self, blobs: &[Blob]) -> Result<PullProgress, Error> {
        self.call("progress")?;
        let st = self.state();
        let mut out = PullProgress::default();
        for b in blobs {
            let have = st.content.get(&b.digest).copied().unwrap_or(0).min(b.size);
            out.done += have;
            out.total += b.size;
            if have > 0 && have < b.size {
                out.active.push(BlobProgress {
                    digest: b.digest.clone(),
                    done: have,
                    total: b.size,
                });
            }
        }
        Ok(out)
    }

    async fn status(&self, image: &ImageRef) -> Result<Option<ImageState>, Error> {
        self.call("status")?;
        let st = self.state();
        let honours = version_at_least(&st.version, (1, 7, 3));
        Ok(st.records.get(&image.to_string()).map(|r| ImageState {
            id: r.id.clone(),
            repo_tags: vec![image.to_string()],
            repo_digests: Vec::new(),
            size: r.size,
            unpacked: r.unpacked,
            pin_label: r.pinned,
            cri_pinned: r.pinned && honours,
        }))
    }

    async fn set_pinned(&self, image: &ImageRef, pinned: bool) -> Result<(), Error> {
        self.call(if pinned { "pin" } else { "unpin" })?;
        let mut st = self.state();
        match st.records.get_mut(&image.to_string()) {
            Some(r) => {
                r.pinned = pinned;
                Ok(())
            }
            None => Err(Error::NotFound {
                image: image.to_string(),
                reason: "no containerd image record to pin".to_string(),
            }),
        }
    }

    async fn remove(&self, image: &ImageRef) -> Result<(), Error> {
        self.call("remove")?;
        self.state().records.remove(&image.to_string());
        Ok(())
    }
}

/// A stable, dependency-free string hash for fake digests (FNV-1a).
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
