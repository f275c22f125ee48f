//! The warmer's background tasks: an image pull or a weights sync running on the runtime, the
//! bytes it moved so far, and its result once it ends.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::records::{Done, Failure};
use crate::images::{ImageRef, Images, RegistryAuth};
use crate::prepull;
use crate::weights::{SyncJob, SyncProgress, Weights};

/// How often a sync's byte counters are sampled into [`Progress`].
const SAMPLE: Duration = Duration::from_millis(500);

/// Bytes moved by a running task.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    pub resolved: Option<String>,
    /// The last rate sample: when, and `done` then.
    pub sample: Option<(Instant, u64)>,
    pub rate: Option<u64>,
    /// Bytes already added to the transferred-bytes metric.
    pub counted: u64,
}

impl Progress {
    /// Updates the rate from the bytes moved since the last sample (at most every 0.5 s).
    pub fn sample_rate(&mut self, at: Instant) {
        match self.sample {
            Some((then, bytes)) => {
                let dt = at.duration_since(then).as_secs_f64();
                if dt >= 0.5 {
                    self.rate = Some((self.done.saturating_sub(bytes) as f64 / dt) as u64);
                    self.sample = Some((at, self.done));
                }
            }
            None => self.sample = Some((at, self.done)),
        }
    }

    /// Bytes moved since the metric was last told, marking them told.
    pub fn uncounted(&mut self) -> u64 {
        let delta = self.done.saturating_sub(self.counted);
        self.counted = self.done;
        delta
    }
}

/// Locks a task's progress. A panic while holding the lock only loses a sample.
pub(super) fn lock(p: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A task in flight.
pub(super) struct Running {
    /// The spec it works for: a change of spec makes it unwanted.
    pub key: String,
    /// The model it works for (metrics are per model).
    pub model: String,
    pub started: Timestamp,
    pub progress: Arc<Mutex<Progress>>,
    pub handle: JoinHandle<Result<Done, Failure>>,
}

impl Running {
    /// Stops the task and waits for it to go: it leaves only resumable partial files.
    pub async fn abort(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Spawns a pre-pull of `reference` through `images`; `wake` is notified when it ends.
pub(super) fn spawn_pull<I: Images + Send + Sync + 'static>(
    images: Arc<I>,
    reference: ImageRef,
    auth: Option<RegistryAuth>,
    opts: prepull::Options,
    wake: Arc<Notify>,
) -> (Arc<Mutex<Progress>>, JoinHandle<Result<Done, Failure>>) {
    let progress = Arc::new(Mutex::new(Progress::default()));
    let p = progress.clone();
    let handle = tokio::spawn(async move {
        let on_event = |e: prepull::Event| {
            let mut p = lock(&p);
            match e {
                prepull::Event::Resolved { digest, bytes } => {
                    p.total = Some(bytes);
                    p.resolved = Some(digest);
                }
                prepull::Event::Progress(pp) => {
                    p.done = pp.done;
                    if pp.total > 0 {
                        p.total = Some(pp.total.max(p.total.unwrap_or(0)));
                    }
                }
                _ => {}
            }
        };
        let r = prepull::prepull(&*images, &reference, auth.as_ref(), &opts, on_event).await;
        wake.notify_one();
        let report = r.map_err(|e| Failure::of(e.metric_label(), &e))?;
        let bytes = report.compressed_bytes.unwrap_or(report.state.size);
        if report.attempts > 0 {
            // The last progress sample may predate the end of the pull.
            let mut p = lock(&p);
            p.done = p.done.max(bytes);
        }
        Ok(Done {
            resolved: report.manifest_digest.or(Some(report.state.id)),
            bytes,
        })
    });
    (progress, handle)
}

/// Spawns a sync of `job` through `weights`; `wake` is notified when it ends.
pub(super) fn spawn_sync<W: Weights>(
    weights: Arc<W>,
    job: SyncJob,
    wake: Arc<Notify>,
) -> (Arc<Mutex<Progress>>, JoinHandle<Result<Done, Failure>>) {
    let progress = Arc::new(Mutex::new(Progress::default()));
    let p = progress.clone();
    let handle = tokio::spawn(async move {
        let live = Arc::new(SyncProgress::default());
        let sample = || {
            let (done, total) = live.read();
            let mut p = lock(&p);
            p.total = Some(total);
            p.done = done;
        };
        let sync = weights.sync(job, live.clone());
        tokio::pin!(sync);
        let mut tick = tokio::time::interval(SAMPLE);
        let r = loop {
            tokio::select! {
                r = &mut sync => break r,
                _ = tick.tick() => sample(),
            }
        };
        sample();
        wake.notify_one();
        let synced = r.map_err(|e| Failure::of(e.metric_label(), &e))?;
        Ok(Done {
            resolved: Some(synced.commit),
            bytes: synced.bytes,
        })
    });
    (progress, handle)
}

/// A running task's bytes, readable between passes: the standalone socket answers `status`
/// from it, so a client sees bytes move at the sampling rate rather than once a pass.
#[derive(Debug, Clone)]
pub struct LiveTask {
    /// What the task works for.
    pub target: LiveTarget,
    progress: Arc<Mutex<Progress>>,
}

/// The part a [`LiveTask`] fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveTarget {
    /// A pull of this image reference (as the models name it).
    Image(String),
    /// A sync of this model's weights (by ColdModel name).
    Weights(String),
}

/// Bytes of a running task at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveBytes {
    /// Bytes moved.
    pub done: u64,
    /// Bytes to move, once known.
    pub total: Option<u64>,
    /// The last sampled rate, bytes per second.
    pub rate: Option<u64>,
}

impl LiveTask {
    pub(super) fn new(target: LiveTarget, progress: Arc<Mutex<Progress>>) -> LiveTask {
        LiveTask { target, progress }
    }

    /// The task's bytes now.
    pub fn bytes(&self) -> LiveBytes {
        let p = lock(&self.progress);
        LiveBytes {
            done: p.done,
            total: p.total,
            rate: p.rate,
        }
    }
}

impl LiveTask {
    /// A task standing still at `bytes` (what a reader sees of a task that stopped moving).
    pub fn at(target: LiveTarget, bytes: LiveBytes) -> LiveTask {
        let progress = Progress {
            done: bytes.done,
            total: bytes.total,
            rate: bytes.rate,
            ..Progress::default()
        };
        LiveTask::new(target, Arc::new(Mutex::new(progress)))
    }
}
