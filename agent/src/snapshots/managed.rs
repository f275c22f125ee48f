//! The managed policy's steps on a node: take a snapshot of a model's pod (optional quiesce
//! hooks around a CRI checkpoint, validated into the store, imported as the model's checkpoint
//! image, the compile-cache scope held by a retention lease), tell whether a held snapshot's
//! image is in containerd, and evict one (image, lease, files). Used by the cluster pass and
//! by `coldctl snapshot create|delete --here`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::archive::Limits;
use super::capture::{CaptureRequest, Capturer, capture};
use super::image::blobs;
use super::key::NodeFacts;
use super::policy::local_image;
use super::runtime::ContainerdSnapshots;
use super::store::{Meta, Snapshot, SnapshotStore};
use super::{Error, one_line};
use crate::api::QuiesceHooks;
use crate::caches::{CacheRoot, LeaseTarget, Leases, UnixNanos};

/// Prefix of the retention leases snapshots take on compile-cache scopes.
pub const LEASE_PREFIX: &str = "snapshot:";
/// How long a snapshot's retention lease holds before it must be taken again (the pass
/// renews it while the snapshot lives; a crashed agent's leases lapse).
pub const LEASE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A node's snapshots: the store, containerd, the compile caches' leases.
#[derive(Debug, Clone)]
pub struct Managed {
    /// The root-only snapshot directory.
    pub store: SnapshotStore,
    /// containerd.
    pub runtime: ContainerdSnapshots,
    /// Where CRI writes archives while they are read (root only).
    pub spool: PathBuf,
    /// The compile caches' retention leases (`None`: no compile caches here).
    pub leases: Option<Leases>,
}

/// What to take.
#[derive(Debug, Clone)]
pub struct TakeRequest {
    /// The ColdModel.
    pub model: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// The pod's IP, for the quiesce hooks.
    pub pod_ip: Option<String>,
    /// Hooks around the checkpoint (off when `None`).
    pub quiesce: Option<QuiesceHooks>,
    /// Checkpoint timeout.
    pub timeout: Duration,
    /// The key's node facts (GPUs given to the container, driver, kernel, model commit).
    pub node: NodeFacts,
    /// The model's current compile-cache scope, held while the snapshot lives.
    pub compile_scope: Option<String>,
    /// Now, seconds since the epoch.
    pub now_unix: u64,
}

/// What [`Managed::take`] made.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The snapshot (its meta names the image).
    pub snapshot: Snapshot,
    /// The checkpoint's own time.
    pub checkpoint: Duration,
    /// The manifest digest in containerd.
    pub manifest: String,
}

impl Managed {
    /// `store` under `dir`, the spool beside it, leases of the caches under `cache_root`.
    pub fn open(
        dir: &Path,
        runtime: ContainerdSnapshots,
        cache_root: Option<&Path>,
    ) -> Result<Managed, Error> {
        Ok(Managed {
            store: SnapshotStore::open(dir)?,
            spool: dir.join(".spool"),
            runtime,
            leases: cache_root.map(|r| Leases::new(&CacheRoot::new(r))),
        })
    }

    /// Checkpoints `req`'s container into a new snapshot of the model and imports it as the
    /// model's checkpoint image for its key. On any error nothing of it is left.
    pub async fn take(&self, req: &TakeRequest) -> Result<Taken, Error> {
        let name = self.free_name(&req.model, req.now_unix)?;
        let meta = Meta {
            model: req.model.clone(),
            created_unix: req.now_unix,
            compile_scope: req.compile_scope.clone(),
            image: None,
            pushed: None,
        };
        let hooks = Hooks::new(req)?;
        if let Err(e) = hooks.call(true).await {
            // A half-quiesced server is woken before giving up.
            let _ = hooks.call(false).await;
            return Err(e);
        }
        let via = Capturer::Cri {
            runtime: self.runtime.clone(),
            spool: self.spool.clone(),
        };
        let creq = CaptureRequest {
            namespace: req.namespace.clone(),
            pod: req.pod.clone(),
            container: req.container.clone(),
            name: name.clone(),
            timeout: req.timeout,
            meta,
        };
        let got = capture(
            &via,
            &self.store,
            &creq,
            &Limits::default(),
            &req.node,
            Instant::now,
        )
        .await;
        // Resume the server whether or not the checkpoint worked.
        let resumed = hooks.call(false).await;
        let got = got?;
        if let Err(e) = resumed {
            warn!(error = %e, "resume hook failed after the checkpoint");
        }
        let snap = got.snapshot;
        let image = local_image(&req.model, &snap.record.key.hash());
        let imported = async {
            let manifest = self.runtime.import(&snap, &image).await?;
            let mut meta = snap.record.meta.clone();
            meta.image = Some(image.clone());
            let snap = self.store.set_meta(&name, &meta)?;
            self.hold(&snap, req.now_unix)?;
            Ok::<_, Error>((snap, manifest))
        }
        .await;
        match imported {
            Ok((snapshot, manifest)) => {
                info!(snapshot = %name, %image, "snapshot taken and imported");
                Ok(Taken {
                    snapshot,
                    checkpoint: got.checkpoint,
                    manifest,
                })
            }
            Err(e) => {
                let _ = self.store.remove(&name);
                Err(e)
            }
        }
    }

    /// `<model>-<now>`, or with a suffix when taken within the same second.
    fn free_name(&self, model: &str, now: u64) -> Result<String, Error> {
        for n in 0..100u32 {
            let name = match n {
                0 => format!("{model}-{now}"),
                n => format!("{model}-{now}-{n}"),
            };
            super::store::check_name(&name)?;
            if std::fs::symlink_metadata(self.store.root().join(&name)).is_err() {
                return Ok(name);
            }
        }
        Err(Error::Invalid {
            what: "snapshot name",
            value: format!("{model}-{now}"),
            reason: "100 snapshots of the model in one second".into(),
        })
    }

    /// Takes (or renews) the retention lease on the snapshot's compile-cache scope.
    pub fn hold(&self, snap: &Snapshot, now_unix: u64) -> Result<(), Error> {
        let (Some(leases), Some(scope)) = (&self.leases, &snap.record.meta.compile_scope) else {
            return Ok(());
        };
        let now = nanos(now_unix);
        let until = now.saturating_add(nanos(LEASE_TTL.as_secs()));
        leases
            .take(&lease_id(snap), scope, LeaseTarget::Scope, until, now)
            .map_err(|e| Error::Runtime {
                op: "compile-cache lease",
                reason: one_line(&e.to_string()),
            })?;
        Ok(())
    }

    /// Whether `snap`'s checkpoint image is in containerd and names this snapshot's manifest
    /// (a newer snapshot of the same key takes the name over).
    pub async fn image_present(&self, snap: &Snapshot) -> Result<bool, Error> {
        let Some(image) = &snap.record.meta.image else {
            return Ok(false);
        };
        let want = blobs(snap).manifest_digest();
        Ok(self.runtime.image_target(image).await? == Some(want))
    }

    /// Evicts `snap`: its image (when it still names this snapshot), its retention lease, its
    /// files.
    pub async fn evict(&self, snap: &Snapshot, now_unix: u64) -> Result<(), Error> {
        if let Some(image) = &snap.record.meta.image
            && self.image_present(snap).await?
        {
            self.runtime.remove_image(image).await?;
        }
        if let Some(leases) = &self.leases {
            leases
                .release(&lease_id(snap), nanos(now_unix))
                .map_err(|e| Error::Runtime {
                    op: "compile-cache lease",
                    reason: one_line(&e.to_string()),
                })?;
        }
        // Unlinking a layer of gigabytes is filesystem work: off the async workers.
        let (store, name) = (self.store.clone(), snap.record.name.clone());
        tokio::task::spawn_blocking(move || store.remove(&name))
            .await
            .map_err(|e| Error::Runtime {
                op: "remove snapshot",
                reason: e.to_string(),
            })??;
        Ok(())
    }

    /// Releases snapshot leases whose snapshot is gone (removed by hand, or a crash between
    /// the files and the lease).
    pub fn release_orphans(&self, held: &[Snapshot], now_unix: u64) -> Result<usize, Error> {
        let Some(leases) = &self.leases else {
            return Ok(0);
        };
        let now = nanos(now_unix);
        let err = |e: crate::caches::Error| Error::Runtime {
            op: "compile-cache lease",
            reason: one_line(&e.to_string()),
        };
        let mut released = 0;
        for l in leases.list(now).map_err(err)? {
            let Some(name) = l.id.strip_prefix(LEASE_PREFIX) else {
                continue;
            };
            if !held.iter().any(|s| s.record.name == name) {
                leases.release(&l.id, now).map_err(err)?;
                released += 1;
            }
        }
        Ok(released)
    }
}

/// The retention lease's id for `snap`.
pub fn lease_id(snap: &Snapshot) -> String {
    format!("{LEASE_PREFIX}{}", snap.record.name)
}

fn nanos(secs: u64) -> UnixNanos {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000_000)
}

/// The quiesce hooks of one capture.
struct Hooks {
    calls: Option<(reqwest::Client, String, String)>,
}

impl Hooks {
    fn new(req: &TakeRequest) -> Result<Hooks, Error> {
        let Some(q) = &req.quiesce else {
            return Ok(Hooks { calls: None });
        };
        let ip = req.pod_ip.as_deref().ok_or_else(|| Error::Invalid {
            what: "pod",
            value: format!("{}/{}", req.namespace, req.pod),
            reason: "the quiesce hooks need the pod's IP, which it has not".into(),
        })?;
        let host = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
            Ok(v4) => v4.to_string(),
            Err(_) => {
                return Err(Error::Invalid {
                    what: "pod IP",
                    value: ip.chars().take(60).collect(),
                    reason: "not an IP address".into(),
                });
            }
        };
        let base = format!("http://{host}:{}", q.port);
        let path = |p: &Option<String>, default: &str| {
            let p = p.clone().unwrap_or_else(|| default.to_string());
            if p.starts_with('/') {
                p
            } else {
                format!("/{p}")
            }
        };
        let timeout = Duration::from_secs(u64::from(q.timeout_seconds.unwrap_or(60).max(1)));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| Error::Runtime {
                op: "quiesce hook",
                reason: one_line(&e.to_string()),
            })?;
        Ok(Hooks {
            calls: Some((
                http,
                format!("{base}{}", path(&q.before, "/sleep?level=1")),
                format!("{base}{}", path(&q.after, "/wake_up")),
            )),
        })
    }

    /// `POST` the before (`true`) or after hook; a non-2xx answer is an error.
    async fn call(&self, before: bool) -> Result<(), Error> {
        let Some((http, b, a)) = &self.calls else {
            return Ok(());
        };
        let url = if before { b } else { a };
        let fail = |reason: String| Error::Runtime {
            op: if before {
                "quiesce hook (before)"
            } else {
                "resume hook (after)"
            },
            reason: format!("POST {url}: {reason}"),
        };
        let resp = http
            .post(url)
            .send()
            .await
            .map_err(|e| fail(one_line(&format!("{e:#}"))))?;
        if !resp.status().is_success() {
            return Err(fail(resp.status().to_string()));
        }
        Ok(())
    }
}
