//! Pre-pulling one image until the kubelet would find it present, unpacked and pinned.
//!
//! Generic over the [`Images`] port: the real containerd client on a node, the fake in tests.
//! Time comes from tokio's clock only, so paused-time tests drive stalls and backoff.
//!
//! Steps: runtime facts; manifest sizes from the registry (best effort: containerd's own pull
//! is the authority on errors); a disk check on every filesystem the image lands on; the CRI
//! pull, watched by a stall detector that cancels and retries with backoff when no byte moves
//! or when fewer bytes than a floor move over a window (a registry dripping a byte every few
//! seconds is as stuck as a silent one); then the pin label and a final check of presence,
//! unpack state and pin. Before the CRI pull, the missing blobs are fetched as parallel ranges
//! ([`ranged`]), under the same stall rule and retries; the CRI pull then only unpacks.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::images::{
    Error, FetchOptions, FetchProgress, ImageManifest, ImageRef, ImageState, Images, PullProgress,
    RegistryAuth, RuntimeInfo,
};
use crate::rate_floor::RateFloor;

mod ranged;
pub use ranged::FetchSummary;

/// How many times (100 ms apart) CRI's view of the pin is re-read before giving up.
const CRI_PIN_POLLS: u32 = 50;

/// Tuning of one pre-pull.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cancel and retry when no byte moved for this long.
    pub stall_timeout: Duration,
    /// Cancel and retry when fewer bytes than this moved in `min_rate_window` while blobs
    /// were still missing (0: no floor).
    pub min_rate_bytes: u64,
    /// The window of the minimum-rate rule.
    pub min_rate_window: Duration,
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Wait between attempts: 1 s doubling to 30 s by default.
    pub backoff: Backoff,
    /// How often progress is read.
    pub progress_interval: Duration,
    /// Free space to leave on each filesystem after the pull.
    pub margin_bytes: u64,
    /// Unpacked size estimated as compressed size times this (registries do not tell).
    pub unpack_ratio: f64,
    /// CRI runtime handler (e.g. `nvidia`), for runtimes that pull per handler.
    pub runtime_handler: Option<String>,
    /// The parallel ranged fetch before the CRI pull.
    pub fetch: FetchOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stall_timeout: Duration::from_secs(60),
            min_rate_bytes: 64 << 10,
            min_rate_window: Duration::from_secs(60),
            attempts: 5,
            backoff: Backoff::constant(Duration::from_secs(1), Duration::from_secs(30)),
            progress_interval: Duration::from_millis(500),
            margin_bytes: 1 << 30,
            unpack_ratio: 2.5,
            runtime_handler: None,
            fetch: FetchOptions::default(),
        }
    }
}

/// What happened, for progress displays and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Runtime facts read.
    Runtime(RuntimeInfo),
    /// Manifest read: blob sizes known.
    Resolved {
        /// Platform manifest digest.
        digest: String,
        /// Compressed bytes in all.
        bytes: u64,
    },
    /// Sizes unknown (the registry did not answer us); containerd pulls anyway.
    Unresolved(String),
    /// Pull attempt `n` (1-based) started.
    Pulling(u32),
    /// The ranged fetch (re)started over this many connections.
    Fetching {
        /// Connections to the registry.
        connections: usize,
    },
    /// Every blob is in the content store; the CRI pull unpacks.
    Fetched(FetchSummary),
    /// The ranged fetch is off for this pull (why); containerd's pull fetches alone.
    Fallback(String),
    /// Bytes moved.
    Progress(PullProgress),
    /// An attempt failed; the next starts after `backoff`.
    Retry {
        /// Attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// Wait before the next.
        backoff: Duration,
    },
    /// The image is present; pinning.
    Pinning,
}

/// Outcome of a successful pre-pull.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The image, as a normalised reference (`registry/repo:tag`).
    pub image: String,
    /// Runtime facts.
    pub runtime: RuntimeInfo,
    /// Manifest, when the registry told us.
    pub manifest_digest: Option<String>,
    /// Compressed bytes of the image, when known.
    pub compressed_bytes: Option<u64>,
    /// Pull attempts made (0 when the image was already present by digest).
    pub attempts: u32,
    /// What the ranged fetch did, when it ran.
    pub fetch: Option<FetchSummary>,
    /// Final state, present, unpacked and pin-labelled.
    pub state: ImageState,
    /// Warnings worth an operator's eye (e.g. a runtime that ignores pins).
    pub warnings: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Pre-pulls `image`; calls `on_event` as it goes.
pub async fn prepull<I: Images>(
    images: &I,
    image: &ImageRef,
    auth: Option<&RegistryAuth>,
    opts: &Options,
    mut on_event: impl FnMut(Event),
) -> Result<Report, Error> {
    let started = Instant::now();
    let mut warnings = Vec::new();
    let runtime = images.runtime_info().await?;
    on_event(Event::Runtime(runtime.clone()));
    if !runtime.honours_pin {
        warnings.push(format!(
            "containerd {} ignores the pin label (honoured from 1.7.3): kubelet image GC may still evict {image}",
            runtime.version
        ));
    }
    let manifest = match images.manifest(image, auth).await {
        Ok(m) => {
            on_event(Event::Resolved {
                digest: m.digest.clone(),
                bytes: m.compressed_size(),
            });
            Some(m)
        }
        Err(e) => {
            warn!(error = %e, "image sizes unknown; containerd pulls without a size check");
            on_event(Event::Unresolved(e.to_string()));
            warnings.push(format!("sizes unknown before pulling: {e}"));
            None
        }
    };
    let existing = images.status(image).await?;
    let present = existing.as_ref().is_some_and(|s| s.unpacked);
    let mut step = ranged::RangedStep::new(opts.fetch.enabled);
    let attempts = if present && image.digest().is_some() {
        // Content-addressed and complete: nothing in the registry can change it.
        0
    } else {
        check_disk(images, image, &runtime, manifest.as_ref(), present, opts).await?;
        let pulled = pull_with_retries(
            images,
            image,
            auth,
            manifest.as_ref(),
            opts,
            &mut step,
            &mut on_event,
        )
        .await?;
        // The image references every blob now; a failed pull keeps the lease until it
        // expires, so that a later attempt resumes what was fetched.
        step.release(images).await;
        pulled
    };
    on_event(Event::Pinning);
    let state = pin_and_check(images, image, runtime.honours_pin).await?;
    Ok(Report {
        image: image.to_string(),
        runtime,
        manifest_digest: manifest.as_ref().map(|m| m.digest.clone()),
        compressed_bytes: manifest.as_ref().map(ImageManifest::compressed_size),
        attempts,
        fetch: step.summary(),
        state,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Fails with [`Error::DiskFull`] unless every filesystem the image lands on has room for what
/// is still missing plus the margin. Paths on one filesystem are summed.
async fn check_disk<I: Images>(
    images: &I,
    image: &ImageRef,
    runtime: &RuntimeInfo,
    manifest: Option<&ImageManifest>,
    present: bool,
    opts: &Options,
) -> Result<(), Error> {
    let (missing, unpacked) = match manifest {
        Some(m) => {
            let have = images.progress(&m.blobs()).await?.done;
            let missing = m.compressed_size().saturating_sub(have);
            let unpacked = if present {
                0
            } else {
                (m.compressed_size() as f64 * opts.unpack_ratio) as u64
            };
            (missing, unpacked)
        }
        None => (0, 0),
    };
    // storage_paths: [content store, snapshotter root].
    let needs = [missing, unpacked];
    let mut per_fs: HashMap<u64, (std::path::PathBuf, u64, u64, Vec<String>)> = HashMap::new();
    for (i, path) in runtime.storage_paths.iter().enumerate() {
        let space = images.disk_space(path).await?;
        let need = needs.get(i).copied().unwrap_or(0);
        let what = if i == 0 {
            "compressed"
        } else {
            "unpacked (estimated)"
        };
        let entry = per_fs.entry(space.fs_id).or_insert((
            space.path.clone(),
            space.available,
            opts.margin_bytes,
            Vec::new(),
        ));
        entry.2 += need;
        entry.3.push(format!("{need} {what}"));
    }
    for (path, available, needed, parts) in per_fs.into_values() {
        if needed > available {
            return Err(Error::DiskFull {
                image: image.to_string(),
                path,
                needed,
                available,
                detail: format!("{} + {} margin", parts.join(" + "), opts.margin_bytes),
            });
        }
    }
    Ok(())
}

/// Pulls, retrying transient failures with exponential backoff; returns the attempts made.
async fn pull_with_retries<I: Images>(
    images: &I,
    image: &ImageRef,
    auth: Option<&RegistryAuth>,
    manifest: Option<&ImageManifest>,
    opts: &Options,
    step: &mut ranged::RangedStep,
    on_event: &mut impl FnMut(Event),
) -> Result<u32, Error> {
    let blobs = manifest.map(ImageManifest::blobs).unwrap_or_default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        on_event(Event::Pulling(attempt));
        let result = match step
            .run(images, image, auth, manifest, &blobs, opts, on_event)
            .await
        {
            Ok(()) => {
                let pull = images.pull(image, auth, opts.runtime_handler.as_deref());
                watched(pull, images, image, &blobs, opts, on_event, None).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(id) => {
                info!(%image, %id, attempt, "pulled");
                return Ok(attempt);
            }
            Err(e) if e.is_transient() && attempt < opts.attempts => {
                let backoff = opts.backoff.after_failures(attempt);
                warn!(%image, attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "pull failed, retrying");
                on_event(Event::Retry {
                    attempt,
                    error: e.to_string(),
                    backoff,
                });
                sleep(backoff).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One fetch or pull attempt under the stall detector: cancelled (by dropping it) when no
/// byte moved for `stall_timeout`, or fewer than `min_rate_bytes` in a `min_rate_window`,
/// while blobs were still missing. Bytes a ranged fetch holds before writing them (`fetched`)
/// count as moved.
async fn watched<I: Images, T>(
    pull: impl std::future::Future<Output = Result<T, Error>>,
    images: &I,
    image: &ImageRef,
    blobs: &[crate::images::Blob],
    opts: &Options,
    on_event: &mut impl FnMut(Event),
    fetched: Option<&FetchProgress>,
) -> Result<T, Error> {
    tokio::pin!(pull);
    let mut ticker = tokio::time::interval(opts.progress_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(u64, Vec<u64>)> = None;
    let mut last_change = Instant::now();
    let mut floor = RateFloor::new(opts.min_rate_bytes, opts.min_rate_window, Instant::now());
    let mut moved: Option<u64> = None;
    loop {
        tokio::select! {
            res = &mut pull => return res,
            _ = ticker.tick() => {
                // containerd may be restarting; the pull itself reports that.
                let Ok(mut p) = images.progress(blobs).await else { continue };
                if let Some(f) = fetched {
                    p.done = (p.done + f.buffered()).min(p.total.max(p.done));
                }
                let key = (p.done, p.active.iter().map(|b| b.done).collect::<Vec<_>>());
                if last.as_ref() != Some(&key) {
                    last = Some(key);
                    last_change = Instant::now();
                    on_event(Event::Progress(p.clone()));
                }
                // Once every blob is in, containerd is unpacking: local work, not a stall.
                let downloading = p.total == 0 || p.done < p.total;
                if downloading && last_change.elapsed() >= opts.stall_timeout {
                    return Err(Error::Stalled {
                        image: image.to_string(),
                        seconds: opts.stall_timeout.as_secs(),
                    });
                }
                // Bytes present count from the first reading: what an earlier attempt left is
                // not this attempt's progress.
                let delta = moved.map_or(0, |m| p.done.saturating_sub(m));
                moved = Some(p.done);
                if downloading
                    && let Some(f) = floor.as_mut()
                    && let Err(s) = f.observe(delta, Instant::now())
                {
                    return Err(Error::TooSlow {
                        image: image.to_string(),
                        bytes: s.bytes,
                        floor: s.floor,
                        seconds: s.window.as_secs(),
                    });
                }
            }
        }
    }
}

/// Sets the pin label and checks the image is present, unpacked and labelled, and (where the
/// runtime honours pins) reported pinned by CRI, which learns of label changes asynchronously.
async fn pin_and_check<I: Images>(
    images: &I,
    image: &ImageRef,
    honours_pin: bool,
) -> Result<ImageState, Error> {
    images.set_pinned(image, true).await?;
    let mut polls = 0;
    let state = loop {
        let state = images.status(image).await?.ok_or_else(|| Error::NotFound {
            image: image.to_string(),
            reason: "absent after a successful pull".to_string(),
        })?;
        if !honours_pin || state.cri_pinned || polls >= CRI_PIN_POLLS {
            break state;
        }
        polls += 1;
        sleep(Duration::from_millis(100)).await;
    };
    if honours_pin && !state.cri_pinned {
        return Err(Error::Runtime {
            op: "pin",
            reason: format!("{image} is labelled pinned but CRI does not report it pinned"),
        });
    }
    if !state.unpacked {
        return Err(Error::Runtime {
            op: "unpack",
            reason: format!("{image} is present but not unpacked in the CRI snapshotter"),
        });
    }
    if !state.pin_label {
        return Err(Error::Runtime {
            op: "pin",
            reason: format!("{image} is present but the pin label did not stick"),
        });
    }
    Ok(state)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ranged;
