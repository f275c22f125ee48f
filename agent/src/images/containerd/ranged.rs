//! The parallel ranged fetch into containerd's content store (see [`crate::images::fetch`]).
//!
//! Shape: a pool of connection tasks takes ranges from one queue (largest blob first, each
//! blob's ranges in order); before taking a range a task reserves a chunk of the memory budget,
//! so bytes held (in flight or waiting for an earlier range) never exceed `buffer_bytes`. One
//! writer task per blob hands its ranges to the blob's [`Sink`], releasing the reservation as
//! each lands: written in place as they come when the content store is on this filesystem
//! (staged), else put in order and appended through the Content API. The head range of every
//! blob is always taken before later ones, so the in-order window always drains: no deadlock.
//!
//! A restart resumes from each blob's contiguous prefix (a streamed ingest's offset, a staged
//! one's recorded prefix): what was received past it is fetched again (streamed: at most the
//! budget; staged: at most the ranges written since the prefix was last recorded, 16 MiB, plus
//! those in flight).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tracing::debug;

use super::errors::rpc;
use super::ingest::{abort, present};
use super::sink::{Sink, Target, discard_staged, is_locked};
use crate::images::fetch::{FetchOptions, FetchOutcome, FetchProgress, Pending, Range, plan};
use crate::images::registry::Access;
use crate::images::registry::ranged::{BlobReader, RangeError};
use crate::images::{Blob, Error, ImageManifest, ImageRef, RegistryAuth, RegistryClient};

/// The Content API refusing: the fetch falls back.
fn refused(s: tonic::Status) -> Stop {
    Stop::Fallback(format!(
        "containerd's content api refused the ranged fetch ({}: {})",
        s.code(),
        s.message()
    ))
}

/// Tries of one range before the fetch fails (transient failures only).
const RANGE_TRIES: u32 = 3;

/// Why the fetch stopped early.
enum Stop {
    Fallback(String),
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

/// What one fetch needs from the client.
pub(super) struct Fetch<'a> {
    pub channel: &'a Channel,
    pub socket: &'a Path,
    pub call_timeout: Duration,
    pub read_timeout: Duration,
    pub registry: RegistryClient,
    pub lease: &'a str,
    /// containerd's content store root as this process sees it (`None`: stream only).
    pub content: Option<&'a Path>,
    pub opts: &'a FetchOptions,
    pub progress: &'a FetchProgress,
}

/// One range's bytes, with the memory they hold.
struct Piece {
    start: u64,
    data: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl Fetch<'_> {
    /// Fetches the blobs of `manifest` that `k8s.io` lacks.
    pub async fn run(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        manifest: &ImageManifest,
    ) -> Result<FetchOutcome, Error> {
        let out = self.run_inner(image, auth, manifest).await;
        self.progress.clear();
        match out {
            Ok(o) => Ok(o),
            Err(Stop::Fallback(why)) => {
                // A staging ingest has holes and containerd's pull never resumes it: it goes.
                let target = self.target();
                for blob in manifest.blobs() {
                    discard_staged(&target, &blob).await;
                }
                Ok(FetchOutcome::Fallback(why))
            }
            Err(Stop::Failed(e)) => Err(e),
        }
    }

    async fn run_inner(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        manifest: &ImageManifest,
    ) -> Result<FetchOutcome, Stop> {
        let missing = self.missing(manifest).await?;
        if missing.is_empty() {
            return Ok(FetchOutcome::Fetched {
                blobs: 0,
                bytes: 0,
                resumed: 0,
                in_place: 0,
            });
        }
        let mut repo = self.registry.repository(image, auth, Access::Pull)?;
        if repo.manifest(&manifest.digest).await?.is_none() {
            return Err(Stop::Failed(Error::NotFound {
                image: image.to_string(),
                reason: format!("no registry host serves manifest {}", manifest.digest),
            }));
        }
        let reader = repo.blob_reader(self.read_timeout)?;
        // The probe comes before any ingest is opened: a fallback then leaves nothing behind.
        let probed = self.probe(&reader, &missing).await?;
        let target = self.target();
        let (mut pending, mut sinks) = self.open_sinks(&target, missing).await?;
        let resumed = pending.iter().map(|p| p.offset).sum();
        let in_place = sinks.iter().filter(|s| s.staged()).count();
        if let Some((digest, data)) = probed {
            let len = data.len() as u64;
            // Kept when its blob starts from nothing; a resumed ingest holds those bytes.
            let at = (0..pending.len())
                .find(|&i| pending[i].blob.digest == digest && pending[i].offset == 0);
            let res = match at {
                Some(i) => {
                    let res = sinks[i].put(0, data).await;
                    pending[i].offset = len;
                    res
                }
                None => Ok(()),
            };
            self.progress.written(len);
            res.map_err(|s| rpc(self.socket, "content write", s))?;
        }
        let ranges = plan(&pending, self.opts.chunk_bytes);
        let budget = Arc::new(Semaphore::new(
            usize::try_from(self.opts.buffer_bytes).unwrap_or(usize::MAX >> 4),
        ));
        let queue = Arc::new(Mutex::new(VecDeque::from(ranges)));
        let mut tasks: JoinSet<Result<(), Stop>> = JoinSet::new();
        let mut senders = Vec::new();
        for (p, sink) in pending.iter().zip(sinks) {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            tasks.spawn(write_blob(
                sink,
                p.blob.clone(),
                rx,
                self.progress.clone(),
                target.clone(),
                self.socket.to_path_buf(),
                reader.origin().to_owned(),
                self.call_timeout,
            ));
        }
        let blobs: Arc<Vec<Blob>> = Arc::new(pending.iter().map(|p| p.blob.clone()).collect());
        let senders = Arc::new(senders);
        let chunk = u32::try_from(self.opts.chunk_bytes).unwrap_or(u32::MAX);
        for _ in 0..self.opts.connections.max(1) {
            tasks.spawn(connection(
                reader.clone(),
                queue.clone(),
                budget.clone(),
                chunk,
                blobs.clone(),
                senders.clone(),
                self.progress.clone(),
            ));
        }
        drop(senders);
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(stop)) => return Err(stop),
                Err(e) => {
                    return Err(Stop::Failed(Error::Runtime {
                        op: "fetch",
                        reason: e.to_string(),
                    }));
                }
            }
        }
        Ok(FetchOutcome::Fetched {
            blobs: pending.len(),
            bytes: self.progress.received(),
            resumed,
            in_place,
        })
    }

    /// Reads the first range of the largest blob over one connection, before any ingest is
    /// opened; returns the blob's digest and the bytes. When the registry does not honour
    /// `Range`, or one connection alone is at least as fast as `fast_bytes_per_sec` (the
    /// registry does not cap connections: containerd's own pull, which writes its content
    /// store in-process, is then as fast), stops with a fallback.
    async fn probe(
        &self,
        reader: &BlobReader,
        missing: &[Blob],
    ) -> Result<Option<(String, Vec<u8>)>, Stop> {
        let Some(blob) = missing
            .iter()
            .filter(|b| b.size > self.opts.chunk_bytes)
            .max_by_key(|b| b.size)
        else {
            return Ok(None);
        };
        let range = Range {
            index: 0,
            start: 0,
            end: self.opts.chunk_bytes,
        };
        let started = tokio::time::Instant::now();
        let data = read_range(reader, blob, range, self.progress).await?;
        let seconds = started.elapsed().as_secs_f64().max(1e-6);
        let rate = data.len() as f64 / seconds;
        debug!(rate_mbps = rate / 1e6, "one connection's rate");
        let fast = self.opts.fast_bytes_per_sec;
        if fast > 0 && rate >= fast as f64 {
            self.progress.written(data.len() as u64);
            return Err(Stop::Fallback(format!(
                "one connection to {} moved {:.0} MB/s (at least {:.0} MB/s: the registry does \
                 not cap connections, and containerd's own pull is as fast then)",
                reader.origin(),
                rate / 1e6,
                fast as f64 / 1e6
            )));
        }
        Ok(Some((blob.digest.clone(), data)))
    }

    /// The image's blobs that `k8s.io` lacks; those it holds are added to the lease.
    async fn missing(&self, manifest: &ImageManifest) -> Result<Vec<Blob>, Stop> {
        let mut out = Vec::new();
        for blob in manifest.blobs() {
            let is_present = present(self.channel, self.lease, &blob.digest, self.call_timeout)
                .await
                .map_err(|s| {
                    self.status(s, "content info")
                        .map_or_else(refused, Stop::from)
                })?;
            if !is_present {
                out.push(blob);
            }
        }
        Ok(out)
    }

    /// The blobs to fetch, each with its open sink; blobs committed meanwhile are skipped, as
    /// are blobs another writer (a pull of the kubelet's) holds.
    async fn open_sinks(
        &self,
        target: &Target,
        missing: Vec<Blob>,
    ) -> Result<(Vec<Pending>, Vec<Sink>), Stop> {
        let (mut pending, mut sinks) = (Vec::new(), Vec::new());
        for blob in missing {
            match Sink::open(target, &blob).await {
                Ok(sink) if sink.offset() <= blob.size => {
                    pending.push(Pending {
                        offset: sink.offset(),
                        blob,
                    });
                    sinks.push(sink);
                }
                Ok(sink) => {
                    let reference = Sink::reference(&blob, sink.staged());
                    drop(sink);
                    let _ = abort(self.channel, &reference, self.call_timeout).await;
                    return Err(Stop::Failed(Error::Runtime {
                        op: "content write",
                        reason: format!("ingest of {} is longer than the blob", blob.digest),
                    }));
                }
                Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                Err(s) if is_locked(&s) => {
                    debug!(digest = %blob.digest, "another writer holds the blob; containerd's pull waits for it");
                }
                Err(s) => {
                    return Err(self
                        .status(s, "content write")
                        .map_or_else(refused, Stop::from));
                }
            }
        }
        Ok((pending, sinks))
    }

    /// What this fetch's sinks share.
    fn target(&self) -> Target {
        Target {
            channel: self.channel.clone(),
            lease: self.lease.to_owned(),
            content: self.content.map(Path::to_path_buf),
        }
    }

    /// A transport failure is containerd going away (retry later); any other status is the
    /// Content API refusing (`Err`, the caller falls back).
    fn status(&self, s: tonic::Status, op: &'static str) -> Result<Error, tonic::Status> {
        match rpc(self.socket, op, s.clone()) {
            e @ Error::Unavailable { .. } => Ok(e),
            _ => Err(s),
        }
    }
}

/// One connection: takes ranges until none is left, reserving memory before each.
async fn connection(
    reader: BlobReader,
    queue: Arc<Mutex<VecDeque<Range>>>,
    budget: Arc<Semaphore>,
    chunk: u32,
    blobs: Arc<Vec<Blob>>,
    senders: Arc<Vec<mpsc::UnboundedSender<Piece>>>,
    progress: FetchProgress,
) -> Result<(), Stop> {
    loop {
        let Ok(permit) = budget.clone().acquire_many_owned(chunk).await else {
            return Ok(());
        };
        let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
        let Some(range) = next else {
            return Ok(());
        };
        let blob = &blobs[range.index];
        let data = read_range(&reader, blob, range, &progress).await?;
        // A writer gone means the fetch is ending on another task's error.
        let _ = senders[range.index].send(Piece {
            start: range.start,
            data,
            _permit: permit,
        });
    }
}

/// Reads one range, retrying transient failures.
async fn read_range(
    reader: &BlobReader,
    blob: &Blob,
    range: Range,
    progress: &FetchProgress,
) -> Result<Vec<u8>, Stop> {
    let mut tries = 0;
    loop {
        tries += 1;
        let got = std::sync::atomic::AtomicU64::new(0);
        let on_bytes = |n: u64| {
            got.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            progress.arrived(n);
        };
        let res = reader.read(blob, range.start, range.end, &on_bytes).await;
        if res.is_err() {
            progress.written(got.load(std::sync::atomic::Ordering::Relaxed));
        }
        match res {
            Ok(data) => return Ok(data),
            Err(RangeError::Ignored { origin }) => {
                return Err(Stop::Fallback(format!(
                    "the registry ignores Range ({origin} answered 200 with the whole blob \
                     to a ranged GET of {})",
                    blob.digest
                )));
            }
            Err(RangeError::Failed(e)) if e.is_transient() && tries < RANGE_TRIES => {
                debug!(digest = %blob.digest, start = range.start, error = %e, "range failed, again");
            }
            Err(RangeError::Failed(e)) => return Err(Stop::Failed(e)),
        }
    }
}

/// Hands the ranges of one blob to its sink (in order for a streamed one), then commits it.
#[allow(clippy::too_many_arguments)]
async fn write_blob(
    mut sink: Sink,
    blob: Blob,
    mut pieces: mpsc::UnboundedReceiver<Piece>,
    progress: FetchProgress,
    target: Target,
    socket: std::path::PathBuf,
    origin: String,
    timeout: Duration,
) -> Result<(), Stop> {
    let mut waiting: BTreeMap<u64, Piece> = BTreeMap::new();
    let in_order = sink.in_order();
    while sink.offset() < blob.size {
        let Some(piece) = pieces.recv().await else {
            // Every connection ended without this blob's rest: another task failed.
            return Ok(());
        };
        waiting.insert(piece.start, piece);
        loop {
            let next = if in_order {
                waiting.remove(&sink.offset())
            } else {
                waiting.pop_first().map(|(_, p)| p)
            };
            let Some(piece) = next else { break };
            let len = piece.data.len() as u64;
            let res = sink.put(piece.start, piece.data).await;
            progress.written(len);
            res.map_err(|s| rpc(&socket, "content write", s))?;
        }
    }
    let reference = Sink::reference(&blob, sink.staged());
    match sink.commit(&target, &blob).await {
        Ok(()) => Ok(()),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
            ) =>
        {
            // Never leave bytes that failed verification for a later fetch to resume.
            let _ = abort(&target.channel, &reference, timeout).await;
            Err(Stop::Failed(Error::Registry(format!(
                "blob {} from {origin} does not match its digest, refused: containerd: {}",
                blob.digest,
                s.message()
            ))))
        }
        Err(s) if s.code() == tonic::Code::DataLoss => {
            let _ = abort(&target.channel, &reference, timeout).await;
            Err(Stop::Failed(Error::Runtime {
                op: "content commit",
                reason: format!("blob {}: {}", blob.digest, s.message()),
            }))
        }
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(Stop::Failed(rpc(&socket, "content commit", s))),
    }
}
