//! The parallel ranged fetch into containerd's content store (see [`crate::images::fetch`]).
//!
//! Shape: a pool of connection tasks takes ranges from one queue (largest blob first, each
//! blob's ranges in order); before taking a range a task reserves a chunk of the memory budget,
//! so bytes held (in flight or waiting for an earlier range) never exceed
//! `buffer_bytes`. One writer task per blob puts its ranges in order and appends them to the
//! blob's ingest, releasing the reservation as each lands. The head range of every blob is
//! always taken before later ones, so the window always drains: no deadlock.
//!
//! A restart resumes from each ingest's offset (the contiguous prefix containerd holds): what
//! was received but not yet written (at most the budget) is fetched again.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tracing::debug;

use super::errors::rpc;
use super::ingest::{Ingest, abort, present};
use crate::images::fetch::{
    FetchOptions, FetchOutcome, FetchProgress, Pending, Range, ingest_ref, plan,
};
use crate::images::registry::Access;
use crate::images::registry::ranged::{BlobReader, RangeError};
use crate::images::{Blob, Error, ImageManifest, ImageRef, RegistryAuth, RegistryClient};

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
            Err(Stop::Fallback(why)) => Ok(FetchOutcome::Fallback(why)),
            Err(Stop::Failed(e)) => Err(e),
        }
    }

    async fn run_inner(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        manifest: &ImageManifest,
    ) -> Result<FetchOutcome, Stop> {
        let (mut pending, mut ingests) = self.open_ingests(manifest).await?;
        if pending.is_empty() {
            return Ok(FetchOutcome::Fetched {
                blobs: 0,
                bytes: 0,
                resumed: 0,
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
        let resumed = pending.iter().map(|p| p.offset).sum();
        self.probe(&reader, &mut pending, &mut ingests).await?;
        let ranges = plan(&pending, self.opts.chunk_bytes);
        let budget = Arc::new(Semaphore::new(
            usize::try_from(self.opts.buffer_bytes).unwrap_or(usize::MAX >> 4),
        ));
        let queue = Arc::new(Mutex::new(VecDeque::from(ranges)));
        let mut tasks: JoinSet<Result<(), Stop>> = JoinSet::new();
        let mut senders = Vec::new();
        for (p, ingest) in pending.iter().zip(ingests) {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            tasks.spawn(write_blob(
                ingest,
                p.blob.clone(),
                rx,
                self.progress.clone(),
                self.channel.clone(),
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
        })
    }

    /// Reads the next range of the largest blob over one connection and writes it. When the
    /// registry does not honour `Range`, or one connection alone is at least as fast as
    /// `fast_bytes_per_sec` (the registry does not cap connections: containerd's own pull,
    /// which writes its content store in-process, is then faster than the Content API),
    /// stops with a fallback; the range written stays for containerd's pull to resume.
    async fn probe(
        &self,
        reader: &BlobReader,
        pending: &mut [Pending],
        ingests: &mut [Ingest],
    ) -> Result<(), Stop> {
        let Some(i) = (0..pending.len())
            .filter(|&i| pending[i].blob.size - pending[i].offset > self.opts.chunk_bytes)
            .max_by_key(|&i| pending[i].blob.size)
        else {
            return Ok(());
        };
        let p = &mut pending[i];
        let range = Range {
            index: i,
            start: p.offset,
            end: p.offset + self.opts.chunk_bytes,
        };
        let started = tokio::time::Instant::now();
        let data = read_range(reader, &p.blob, range, self.progress).await?;
        let seconds = started.elapsed().as_secs_f64().max(1e-6);
        let len = data.len() as u64;
        let res = ingests[i].write(data).await;
        self.progress.written(len);
        res.map_err(|s| rpc(self.socket, "content write", s))?;
        p.offset += len;
        let rate = len as f64 / seconds;
        debug!(rate_mbps = rate / 1e6, "one connection's rate");
        let fast = self.opts.fast_bytes_per_sec;
        if fast > 0 && rate >= fast as f64 {
            return Err(Stop::Fallback(format!(
                "one connection to {} moved {:.0} MB/s (at least {:.0} MB/s: the registry does \
                 not cap connections, and containerd's own pull is faster then)",
                reader.origin(),
                rate / 1e6,
                fast as f64 / 1e6
            )));
        }
        Ok(())
    }

    /// The blobs to fetch, each with its open ingest; blobs already committed are added to
    /// the lease and skipped, as are blobs another writer (a pull of the kubelet's) holds.
    async fn open_ingests(
        &self,
        manifest: &ImageManifest,
    ) -> Result<(Vec<Pending>, Vec<Ingest>), Stop> {
        let (mut pending, mut ingests) = (Vec::new(), Vec::new());
        for blob in manifest.blobs() {
            let refused = |s: tonic::Status| {
                Stop::Fallback(format!(
                    "containerd's content api refused the ranged fetch ({}: {})",
                    s.code(),
                    s.message()
                ))
            };
            let is_present = present(self.channel, self.lease, &blob.digest, self.call_timeout)
                .await
                .map_err(|s| {
                    self.status(s, "content info")
                        .map_or_else(refused, Stop::from)
                })?;
            if is_present {
                continue;
            }
            let reference = ingest_ref(&blob);
            match Ingest::open(self.channel, self.lease, reference, &blob).await {
                Ok(ingest) if ingest.offset() <= blob.size => {
                    pending.push(Pending {
                        offset: ingest.offset(),
                        blob,
                    });
                    ingests.push(ingest);
                }
                Ok(ingest) => {
                    drop(ingest);
                    let _ = abort(self.channel, &ingest_ref(&blob), self.call_timeout).await;
                    return Err(Stop::Failed(Error::Runtime {
                        op: "content write",
                        reason: format!("ingest of {} is longer than the blob", blob.digest),
                    }));
                }
                Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                Err(s) if s.message().contains("locked") => {
                    debug!(digest = %blob.digest, "another writer holds the blob; containerd's pull waits for it");
                }
                Err(s) => {
                    return Err(self
                        .status(s, "content write")
                        .map_or_else(refused, Stop::from));
                }
            }
        }
        Ok((pending, ingests))
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

/// Appends the ranges of one blob to its ingest in order, then commits it.
#[allow(clippy::too_many_arguments)]
async fn write_blob(
    mut ingest: Ingest,
    blob: Blob,
    mut pieces: mpsc::UnboundedReceiver<Piece>,
    progress: FetchProgress,
    channel: Channel,
    socket: std::path::PathBuf,
    origin: String,
    timeout: Duration,
) -> Result<(), Stop> {
    let mut waiting: BTreeMap<u64, Piece> = BTreeMap::new();
    while ingest.offset() < blob.size {
        let Some(piece) = pieces.recv().await else {
            // Every connection ended without this blob's rest: another task failed.
            return Ok(());
        };
        waiting.insert(piece.start, piece);
        while let Some(piece) = waiting.remove(&ingest.offset()) {
            let len = piece.data.len() as u64;
            let res = ingest.write(piece.data).await;
            progress.written(len);
            res.map_err(|s| rpc(&socket, "content write", s))?;
        }
    }
    match ingest.commit().await {
        Ok(()) => Ok(()),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
            ) =>
        {
            // Never leave bytes that failed verification for a later fetch to resume.
            let _ = abort(&channel, &ingest_ref(&blob), timeout).await;
            Err(Stop::Failed(Error::Registry(format!(
                "blob {} from {origin} does not match its digest, refused: containerd: {}",
                blob.digest,
                s.message()
            ))))
        }
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(Stop::Failed(rpc(&socket, "content commit", s))),
    }
}
