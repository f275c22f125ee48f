//! The download engine: one file into `blobs/<etag>.incomplete`, verified, then finalized.
//!
//! A file larger than one chunk is fetched as ranges over a bounded, shared pool of
//! connections. Ranges complete out of order; a hashing thread consumes them in order, reading
//! each back from the page cache right after it was written (no second cold read, no large
//! reorder buffer), and the dispatcher never runs more than `window_chunks` ahead of it.
//! Progress is recorded in a journal in our state dir after an `fdatasync`: whole ranges, and
//! how far each unfinished range got, every `journal_interval` or every `journal_bytes`
//! written, whichever comes first; a crash resumes every range from what is durably on disk
//! and re-hashes it from disk. A server that ignores Range (answers 200) is read as one stream.
//!
//! Every connection is held to a minimum rate (`min_rate_bytes` per `min_rate_window`); one
//! below it is dropped and the range resumed on a fresh connection, like a read timeout.
//!
//! Why not `hf-hub`: it verifies no hash and cannot resume (DESIGN.md); both are required here.

mod journal;
mod stream;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, instrument, warn};

use super::cache::HubCache;
use super::hub::{FileSource, HubClient};
use super::{Digest, Error, RepoId, TreeEntry};
use crate::backoff::Backoff;
use journal::Journal;
use stream::{Hasher, RangeOutcome, fetch_range, fetch_whole};

/// Tuning of the engine.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Connections in flight across all files.
    pub connections: usize,
    /// Range size.
    pub chunk_bytes: u64,
    /// How far (in chunks) downloads may run ahead of the hash.
    pub window_chunks: usize,
    /// Attempts per range (resuming from the byte reached).
    pub range_attempts: u32,
    /// How often written bytes are made durable and journaled.
    pub journal_interval: Duration,
    /// Bytes written (all ranges of a file together) that trigger a journal commit before the
    /// interval is up: the most a crash re-fetches beyond what is in flight. One chunk by
    /// default.
    pub journal_bytes: u64,
    /// The floor of the minimum-rate rule: a connection that delivers fewer bytes than this in
    /// `min_rate_window` is dropped and the range resumed on a fresh one (0: no floor).
    pub min_rate_bytes: u64,
    /// The window of the minimum-rate rule.
    pub min_rate_window: Duration,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            connections: 16,
            chunk_bytes: 16 << 20,
            window_chunks: 64,
            range_attempts: 8,
            journal_interval: Duration::from_secs(1),
            journal_bytes: 16 << 20,
            min_rate_bytes: 64 << 10,
            min_rate_window: Duration::from_secs(60),
        }
    }
}

/// Bytes moved, for progress displays and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes received from the network.
    pub downloaded: AtomicU64,
    /// Bytes hashed (verified or being verified).
    pub hashed: AtomicU64,
}

/// The engine, shared by the files of one or more syncs.
#[derive(Debug, Clone)]
pub struct Engine {
    hub: HubClient,
    cache: Arc<HubCache>,
    opts: TransferOptions,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl Engine {
    /// An engine over `hub` writing into `cache`.
    pub fn new(hub: HubClient, cache: Arc<HubCache>, opts: TransferOptions) -> Engine {
        let permits = Arc::new(Semaphore::new(opts.connections.max(1)));
        Engine {
            hub,
            cache,
            opts,
            permits,
            counters: Arc::new(Counters::default()),
        }
    }

    /// Progress counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Downloads, verifies and finalizes `entry`'s blob; returns its path. A content mismatch
    /// discards the partial file and downloads once more before failing.
    #[instrument(skip_all, fields(repo = %repo, path = %entry.path, size = entry.content_size()), err(level = "debug"))]
    pub async fn fetch(
        &self,
        repo: &RepoId,
        commit: &str,
        entry: &TreeEntry,
    ) -> Result<PathBuf, Error> {
        let src = self.hub.resolve_file(repo, commit, &entry.path).await?;
        match self.fetch_once(repo, entry, &src).await {
            Err(e @ Error::Mismatch { .. }) => {
                warn!(error = %e, "verification failed, downloading again");

                self.discard(repo, entry)?;
                let src = self.hub.resolve_file(repo, commit, &entry.path).await?;
                let r = self.fetch_once(repo, entry, &src).await;
                if r.is_err() {
                    self.discard(repo, entry)?;
                }
                r
            }
            other => other,
        }
    }

    fn discard(&self, repo: &RepoId, entry: &TreeEntry) -> Result<(), Error> {
        let inc = self.cache.incomplete_path(repo, entry.etag());
        match std::fs::remove_file(&inc) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", inc, e)),
        }
        Journal::remove(&self.journal_path(repo, entry))
    }

    fn journal_path(&self, repo: &RepoId, entry: &TreeEntry) -> PathBuf {
        self.cache
            .state_dir()
            .join("journal")
            .join(repo.cache_folder())
            .join(format!("{}.json", entry.etag()))
    }

    async fn fetch_once(
        &self,
        repo: &RepoId,
        entry: &TreeEntry,
        src: &FileSource,
    ) -> Result<PathBuf, Error> {
        let size = entry.content_size();
        if let Some(announced) = src.size
            && announced != size
        {
            return Err(Error::Mismatch {
                path: entry.path.clone(),
                kind: "size",
                expected: size.to_string(),
                actual: format!("{announced} (announced by the server)"),
            });
        }
        let file = Arc::new(self.cache.open_incomplete(repo, entry.etag())?);
        let inc_path = self.cache.incomplete_path(repo, entry.etag());
        reserve(&file, size, &inc_path)?;
        let chunk = self.opts.chunk_bytes.max(1);
        let chunks = size.div_ceil(chunk) as usize;
        let jpath = self.journal_path(repo, entry);
        let journal = Journal::load(&jpath, size, chunk)?;
        let resumed: BTreeSet<usize> = journal.done().clone();
        if !resumed.is_empty() {
            debug!(chunks = resumed.len(), of = chunks, "resuming from journal");
        }
        let hasher = Hasher::spawn(
            file.clone(),
            inc_path.clone(),
            entry.digest(),
            size,
            chunk,
            resumed.clone(),
            self.counters.clone(),
        );
        let job = Job {
            src: src.clone(),
            name: entry.path.clone(),
            file: file.clone(),
            path: inc_path.clone(),
            size,
            chunk,
            hasher: hasher.clone(),
            journal: Arc::new(Mutex::new(journal)),
            flush: Arc::new(Notify::new()),
        };
        let result = if chunks <= 1 {
            self.single_stream(&job).await
        } else {
            self.ranges(&job, &resumed).await
        };
        if let Err(e) = result {
            // Keep what is durable for the next attempt.
            let _ = flush_journal(&job).await;
            hasher.abort();
            return Err(e);
        }
        let actual = hasher.finish().await?;
        check_digest(entry, &actual)?;
        // fsync of the whole blob, rename, directory fsync: off the async workers.
        let (cache, repo, etag) = (self.cache.clone(), repo.clone(), entry.etag().to_string());
        let path = tokio::task::spawn_blocking(move || {
            let path = cache.finalize_blob(&repo, &etag)?;
            Journal::remove(&jpath)?;
            Ok::<_, Error>(path)
        })
        .await
        .map_err(|e| Error::io("finalize", &inc_path, std::io::Error::other(e.to_string())))??;
        Ok(path)
    }

    /// One stream for the whole file (small files, or a server that ignores Range).
    async fn single_stream(&self, job: &Job) -> Result<(), Error> {
        let _permit = self.permits.acquire().await.map_err(|_| closed())?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = fetch_whole(self, job).await;
            match r {
                Ok(()) => break,
                Err(e) if attempt < self.opts.range_attempts && retryable(&e) => {
                    warn!(error = %e, attempt, "stream failed, starting over");
                    tokio::time::sleep(RETRY_BACKOFF.after_failures(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
        lock(&job.journal).mark_all(job.size.div_ceil(job.chunk) as usize);
        Ok(())
    }

    /// Parallel ranges; falls back to one stream when the first answer shows Range ignored.
    async fn ranges(&self, job: &Job, resumed: &BTreeSet<usize>) -> Result<(), Error> {
        let (src, size, chunk) = (&job.src, job.size, job.chunk);
        let todo: Vec<usize> = (0..size.div_ceil(chunk) as usize)
            .filter(|c| !resumed.contains(c))
            .collect();
        let Some((&first, rest)) = todo.split_first() else {
            return Ok(());
        };
        // Probe with the first missing range alone: its status tells whether Range works.
        // Its progress is journaled like any other range's (a crash loop must not restart it).
        let mut ticker = tokio::time::interval(self.opts.journal_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let probe = self.range_task(job, first);
        tokio::pin!(probe);
        let outcome = loop {
            tokio::select! {
                outcome = &mut probe => break outcome?,
                _ = ticker.tick() => flush_journal(job).await?,
                _ = job.flush.notified() => flush_journal(job).await?,
            }
        };
        match outcome {
            RangeOutcome::Done => lock(&job.journal).mark(first),
            RangeOutcome::RangeIgnored => {
                debug!("server ignores Range: one stream");
                return self.single_stream(job).await;
            }
        }
        let mut frontier = job.hasher.frontier();
        let mut tasks: JoinSet<Result<(usize, RangeOutcome), Error>> = JoinSet::new();
        let mut next = 0;
        while next < rest.len() || !tasks.is_empty() {
            let can_start = next < rest.len()
                && rest[next] < *frontier.borrow() + self.opts.window_chunks
                && tasks.len() < self.opts.connections.max(1);
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let (c, outcome) = done.map_err(|e| Error::Http { url: src.url.to_string(), reason: e.to_string() })??;
                    match outcome {
                        RangeOutcome::Done => lock(&job.journal).mark(c),
                        RangeOutcome::RangeIgnored => {
                            return Err(Error::Protocol { url: super::hub::redact(&src.url), reason: "server stopped honouring Range mid-file".to_string() });
                        }
                    }
                }
                _ = async {}, if can_start => {
                    let c = rest[next];
                    next += 1;
                    let (me, job) = (self.clone(), job.clone());
                    tasks.spawn(async move {
                        let o = me.range_task(&job, c).await?;
                        Ok((c, o))
                    });
                }
                changed = frontier.changed(), if !can_start && next < rest.len() => {
                    if changed.is_err() {
                        return Err(Error::Protocol { url: super::hub::redact(&src.url), reason: "hashing stopped".to_string() });
                    }
                }
                _ = ticker.tick() => flush_journal(job).await?,
                _ = job.flush.notified() => flush_journal(job).await?,
            }
        }
        Ok(())
    }

    async fn range_task(&self, job: &Job, index: usize) -> Result<RangeOutcome, Error> {
        let _permit = self.permits.acquire().await.map_err(|_| closed())?;
        let start = index as u64 * job.chunk;
        let end = (start + job.chunk).min(job.size);
        let mut at = start + lock(&job.journal).resume_offset(index);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = fetch_range(self, job, index, at, end).await;
            match r {
                Ok(RangeOutcome::Done) => {
                    job.hasher.chunk_done(index);
                    return Ok(RangeOutcome::Done);
                }
                Ok(RangeOutcome::RangeIgnored) => return Ok(RangeOutcome::RangeIgnored),
                Err((reached, e)) if attempt < self.opts.range_attempts && retryable(&e) => {
                    warn!(error = %e, attempt, start, reached, "range failed, resuming");
                    at = reached;
                    tokio::time::sleep(RETRY_BACKOFF.after_failures(attempt)).await;
                }
                Err((_, e)) => return Err(e),
            }
        }
    }
}

/// One file being downloaded: where from, where to, in what chunks, who hashes it, and the
/// journal of its progress.
#[derive(Clone)]
struct Job {
    src: FileSource,
    /// The file's path in the repository, for messages.
    name: String,
    file: Arc<std::fs::File>,
    path: PathBuf,
    size: u64,
    chunk: u64,
    hasher: Hasher,
    journal: Arc<Mutex<Journal>>,
    /// Woken when `journal_bytes` were written since the last commit.
    flush: Arc<Notify>,
}

/// Between attempts on one stream or range: 200 ms doubling to 10 s.
const RETRY_BACKOFF: Backoff =
    Backoff::constant(Duration::from_millis(200), Duration::from_secs(10));

/// Whether retrying the transfer can help (network trouble, short bodies), as opposed to a
/// full disk or a refusal.
fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Http { .. }
            | Error::Protocol { .. }
            | Error::ReadTimeout { .. }
            | Error::TooSlow { .. }
    )
}

fn closed() -> Error {
    Error::Http {
        url: String::new(),
        reason: "engine shut down".to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes what was written durable, then records it.
async fn flush_journal(job: &Job) -> Result<(), Error> {
    let pending = lock(&job.journal).take_pending();
    if pending.is_empty() {
        return Ok(());
    }
    let path = job.path.as_path();
    let (f, j, p) = (job.file.clone(), job.journal.clone(), path.to_path_buf());
    tokio::task::spawn_blocking(move || {
        f.sync_data().map_err(|e| Error::io("fdatasync", &p, e))?;
        lock(&j).commit(&pending)
    })
    .await
    .map_err(|e| Error::io("journal", path, std::io::Error::other(e.to_string())))?
}

/// Sizes the partial file and reserves its blocks, so a full disk shows before the download.
fn reserve(file: &std::fs::File, size: u64, path: &std::path::Path) -> Result<(), Error> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len != size {
        file.set_len(size)
            .map_err(|e| Error::io("resize", path, e))?;
    }
    // On tmpfs there are no blocks to reserve: fallocate only zero-fills memory that the
    // download overwrites next (measured: 1.6 s of CPU for 4 GiB). The free-space check has
    // run before, and ENOSPC on a write is reported the same way.
    let on_tmpfs = nix::sys::statfs::fstatfs(file)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if size > 0 && !on_tmpfs {
        let len = i64::try_from(size).unwrap_or(i64::MAX);
        match nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, len) {
            Ok(()) => {}
            Err(nix::errno::Errno::EOPNOTSUPP) => {}
            Err(e) => {
                return Err(Error::io(
                    "reserve space for",
                    path,
                    std::io::Error::from(e),
                ));
            }
        }
    }
    Ok(())
}

fn check_digest(entry: &TreeEntry, actual: &str) -> Result<(), Error> {
    let (kind, expected) = match entry.digest() {
        Digest::Sha256(h) => ("sha256", h),
        Digest::GitSha1(h) => ("git sha1", h),
    };
    if !expected.eq_ignore_ascii_case(actual) {
        return Err(Error::Mismatch {
            path: entry.path.clone(),
            kind,
            expected,
            actual: actual.to_string(),
        });
    }
    Ok(())
}

// Keep the counters' ordering in one place.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests;
