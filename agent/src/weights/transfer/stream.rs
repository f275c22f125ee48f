//! Moving bytes: one range or one whole body into the partial file, and the in-order hasher.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use sha1::Digest as _;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::bytes::Bytes;

use super::super::hub::{body_error, redact};
use super::super::{Digest, Error};
use super::{Counters, Engine, Job, add, lock};
use crate::rate_floor::RateFloor;

/// Bytes gathered before one positioned write.
const WRITE_BUF: usize = 1 << 20;

/// How a range request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeOutcome {
    /// The range is on disk.
    Done,
    /// The server answered 200 to a Range request: it ignores Range.
    RangeIgnored,
}

/// Writes `buf` at `offset` off the async threads.
async fn write_at(
    file: &Arc<std::fs::File>,
    path: &Path,
    buf: Vec<u8>,
    offset: u64,
) -> Result<(), Error> {
    let (f, p) = (file.clone(), path.to_path_buf());
    tokio::task::spawn_blocking(move || {
        f.write_all_at(&buf, offset)
            .map_err(|e| Error::io("write", &p, e))
    })
    .await
    .map_err(|e| Error::io("write", path, std::io::Error::other(e.to_string())))?
}

/// The next piece of `resp`'s body under the connection's rate floor. Errors name the file: a
/// read timeout, a window below the floor, or the body's failure with its cause chain.
async fn next_piece(
    engine: &Engine,
    job: &Job,
    resp: &mut reqwest::Response,
    floor: &mut Option<RateFloor>,
) -> Result<Option<Bytes>, Error> {
    loop {
        let read = match floor.as_ref().map(RateFloor::deadline) {
            Some(deadline) => match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Ok(r) => r,
                Err(_) => {
                    check_floor(floor, 0, job)?;
                    continue;
                }
            },
            None => resp.chunk().await,
        };
        return match read {
            Ok(Some(piece)) => {
                check_floor(floor, piece.len() as u64, job)?;
                Ok(Some(piece))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(body_error(
                &job.src.url,
                &job.name,
                &e,
                engine.hub.read_timeout(),
            )),
        };
    }
}

fn check_floor(floor: &mut Option<RateFloor>, n: u64, job: &Job) -> Result<(), Error> {
    let Some(f) = floor.as_mut() else {
        return Ok(());
    };
    f.observe(n, Instant::now()).map_err(|s| Error::TooSlow {
        what: job.name.clone(),
        bytes: s.bytes,
        floor: s.floor,
        seconds: s.window.as_secs_f64(),
    })
}

fn new_floor(engine: &Engine) -> Option<RateFloor> {
    RateFloor::new(
        engine.opts.min_rate_bytes,
        engine.opts.min_rate_window,
        Instant::now(),
    )
}

/// Fetches `[start, end)` of chunk `index` into the file, journaling progress as it is
/// written. On failure returns how far the file got, so the caller resumes from there.
pub(super) async fn fetch_range(
    engine: &Engine,
    job: &Job,
    index: usize,
    start: u64,
    end: u64,
) -> Result<RangeOutcome, (u64, Error)> {
    let src = &job.src;
    let mut resp = engine
        .hub
        .get(src, start, Some(end))
        .await
        .map_err(|e| (start, e))?;
    if resp.status() == StatusCode::OK {
        return Ok(RangeOutcome::RangeIgnored);
    }
    let proto = |reason: String| Error::Protocol {
        url: redact(&src.url),
        reason,
    };
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        return Err((
            start,
            proto(format!("status {} for a range", resp.status())),
        ));
    }
    let content_range = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !content_range.starts_with(&format!("bytes {start}-")) {
        return Err((
            start,
            proto(format!("asked for bytes {start}-, got {content_range:?}")),
        ));
    }
    let chunk_start = index as u64 * job.chunk;
    let mut at = start;
    let mut buf = Vec::with_capacity(WRITE_BUF);
    let mut floor = new_floor(engine);
    loop {
        let piece = match next_piece(engine, job, &mut resp, &mut floor).await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                at = write_journaled(engine, job, index, chunk_start, &mut buf, at)
                    .await
                    .map_err(|e| (at, e))?;
                return Err((at, e));
            }
        };
        if at + (buf.len() + piece.len()) as u64 > end {
            return Err((at, proto("body longer than the range".to_string())));
        }
        add(&engine.counters.downloaded, piece.len() as u64);
        buf.extend_from_slice(&piece);
        if buf.len() >= WRITE_BUF {
            at = write_journaled(engine, job, index, chunk_start, &mut buf, at)
                .await
                .map_err(|e| (at, e))?;
        }
    }
    at = write_journaled(engine, job, index, chunk_start, &mut buf, at)
        .await
        .map_err(|e| (at, e))?;
    if at < end {
        return Err((at, proto(format!("body ended at byte {at} of {end}"))));
    }
    Ok(RangeOutcome::Done)
}

/// Writes `buf` (emptied) at `at`, records the chunk's progress in the journal and asks for a
/// commit once `journal_bytes` are waiting; returns the new offset.
async fn write_journaled(
    engine: &Engine,
    job: &Job,
    index: usize,
    chunk_start: u64,
    buf: &mut Vec<u8>,
    at: u64,
) -> Result<u64, Error> {
    if buf.is_empty() {
        return Ok(at);
    }
    let n = buf.len() as u64;
    let full = std::mem::replace(buf, Vec::with_capacity(WRITE_BUF));
    write_at(&job.file, &job.path, full, at).await?;
    let unflushed = lock(&job.journal).advance(index, at + n - chunk_start, n);
    if unflushed >= engine.opts.journal_bytes.max(1) {
        job.flush.notify_one();
    }
    Ok(at + n)
}

/// Fetches the whole file as one stream (no Range header), telling the hasher as each chunk
/// is complete.
pub(super) async fn fetch_whole(engine: &Engine, job: &Job) -> Result<(), Error> {
    let (src, size, chunk) = (&job.src, job.size, job.chunk);
    let mut resp = engine.hub.get(src, 0, None).await?;
    let proto = |reason: String| Error::Protocol {
        url: redact(&src.url),
        reason,
    };
    if resp.status() != StatusCode::OK {
        return Err(proto(format!(
            "status {} for the whole file",
            resp.status()
        )));
    }
    let mut at = 0u64;
    let mut buf = Vec::with_capacity(WRITE_BUF);
    let mut signalled = 0u64;
    let mut floor = new_floor(engine);
    loop {
        let piece = next_piece(engine, job, &mut resp, &mut floor).await?;
        let last = piece.is_none();
        if let Some(p) = piece {
            if at + (buf.len() + p.len()) as u64 > size {
                return Err(proto(format!("body longer than {size} bytes")));
            }
            add(&engine.counters.downloaded, p.len() as u64);
            buf.extend_from_slice(&p);
        }
        if buf.len() >= WRITE_BUF || (last && !buf.is_empty()) {
            let n = buf.len() as u64;
            write_at(
                &job.file,
                &job.path,
                std::mem::replace(&mut buf, Vec::with_capacity(WRITE_BUF)),
                at,
            )
            .await?;
            at += n;
            while (signalled + 1) * chunk <= at || (at == size && signalled * chunk < size) {
                job.hasher.chunk_done(signalled as usize);
                signalled += 1;
            }
        }
        if last {
            break;
        }
    }
    if at < size {
        return Err(proto(format!("body ended at byte {at} of {size}")));
    }
    Ok(())
}

/// The hashing thread's result: the hex digest.
type HashJob = Arc<Mutex<Option<tokio::task::JoinHandle<Result<String, Error>>>>>;

/// Stop signal for the hashing thread.
const STOP: usize = usize::MAX;

/// The in-order hasher: a blocking thread that hashes chunks as they become contiguous,
/// reading each back from the (hot) page cache.
#[derive(Clone)]
pub(super) struct Hasher {
    tx: mpsc::Sender<usize>,
    frontier: watch::Receiver<usize>,
    handle: HashJob,
}

enum State {
    Sha256(sha2::Sha256),
    GitSha1(sha1::Sha1),
}

impl State {
    fn update(&mut self, data: &[u8]) {
        match self {
            State::Sha256(h) => h.update(data),
            State::GitSha1(h) => h.update(data),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            State::Sha256(h) => h.finalize().to_vec(),
            State::GitSha1(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Hasher {
    /// Starts hashing `size` bytes of `file` in chunks of `chunk`; `already` are chunks on disk
    /// from an earlier attempt (re-hashed from disk as the frontier reaches them).
    pub(super) fn spawn(
        file: Arc<std::fs::File>,
        path: PathBuf,
        digest: Digest,
        size: u64,
        chunk: u64,
        already: BTreeSet<usize>,
        counters: Arc<Counters>,
    ) -> Hasher {
        let (tx, rx) = mpsc::channel::<usize>();
        let (ftx, frx) = watch::channel(0usize);
        let handle = tokio::task::spawn_blocking(move || {
            let mut state = match digest {
                Digest::Sha256(_) => State::Sha256(sha2::Sha256::new()),
                Digest::GitSha1(_) => {
                    let mut h = sha1::Sha1::new();
                    h.update(format!("blob {size}\0").as_bytes());
                    State::GitSha1(h)
                }
            };
            let chunks = size.div_ceil(chunk) as usize;
            let mut pending = already;
            let mut next = 0usize;
            let mut buf = vec![0u8; WRITE_BUF];
            loop {
                while pending.remove(&next) {
                    let start = next as u64 * chunk;
                    let end = (start + chunk).min(size);
                    let mut at = start;
                    while at < end {
                        let n = ((end - at) as usize).min(buf.len());
                        file.read_exact_at(&mut buf[..n], at)
                            .map_err(|e| Error::io("read back", &path, e))?;
                        state.update(&buf[..n]);
                        at += n as u64;
                    }
                    add(&counters.hashed, end - start);
                    next += 1;
                    let _ = ftx.send(next);
                }
                if next >= chunks {
                    return Ok(state.hex());
                }
                match rx.recv() {
                    Ok(STOP) | Err(_) => {
                        return Err(Error::Protocol {
                            url: path.display().to_string(),
                            reason: "hashing stopped".to_string(),
                        });
                    }
                    Ok(c) => {
                        pending.insert(c);
                    }
                }
            }
        });
        Hasher {
            tx,
            frontier: frx,
            handle: Arc::new(Mutex::new(Some(handle))),
        }
    }

    /// Chunk `index` is written.
    pub(super) fn chunk_done(&self, index: usize) {
        let _ = self.tx.send(index);
    }

    /// The next chunk to hash; moves as hashing progresses.
    pub(super) fn frontier(&self) -> watch::Receiver<usize> {
        self.frontier.clone()
    }

    /// Stops the thread (the file is not complete).
    pub(super) fn abort(&self) {
        let _ = self.tx.send(STOP);
    }

    /// Waits for the digest of the whole file (hex).
    pub(super) async fn finish(self) -> Result<String, Error> {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(handle) = handle else {
            return Err(Error::Protocol {
                url: String::new(),
                reason: "hasher already finished".to_string(),
            });
        };
        handle.await.map_err(|e| Error::Protocol {
            url: String::new(),
            reason: format!("hasher: {e}"),
        })?
    }
}
