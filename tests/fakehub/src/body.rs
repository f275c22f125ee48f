//! File bodies: streamed from disk by a blocking reader (1 MiB reads, a few chunks in flight)
//! or sliced from memory, then passed through the body's faults: truncation (an error, which
//! makes hyper close the connection), a flipped byte, a stall, pacing, a slow drip.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::faults::BodyFaults;
use crate::stats::Stats;
use crate::store::FileData;

/// Bytes per read and per chunk handed to hyper.
pub(crate) const CHUNK: usize = 1 << 20;
/// Chunks read ahead of the connection.
const READ_AHEAD: usize = 4;

type Chunks = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What a body needs from the server.
#[derive(Clone)]
pub(crate) struct BodyCtx {
    pub(crate) stats: Arc<Stats>,
    /// Bumped to release stalled bodies.
    pub(crate) release: watch::Receiver<u64>,
    /// Longest stall.
    pub(crate) stall_timeout: Duration,
}

/// The body for `len` bytes of `data` from `start`, with `faults`.
pub(crate) fn file_body(
    data: &FileData,
    start: u64,
    len: u64,
    faults: BodyFaults,
    ctx: BodyCtx,
) -> Body {
    let flow = Flow {
        src: source(data, start, len),
        pending: None,
        sent: 0,
        faults,
        stalled: false,
        corrupted: false,
        started: Instant::now(),
        done: false,
        ctx,
    };
    Body::from_stream(stream::unfold(flow, Flow::next))
}

fn source(data: &FileData, start: u64, len: u64) -> Chunks {
    match data {
        FileData::Memory(b) => {
            let (start, len) = (start as usize, len as usize);
            let b = b.slice(start..start + len);
            let chunks = (0..len)
                .step_by(CHUNK)
                .map(move |o| Ok(b.slice(o..(o + CHUNK).min(len))));
            Box::pin(stream::iter(chunks.collect::<Vec<_>>()))
        }
        FileData::Disk(path) => disk_source(path.clone(), start, len),
    }
}

fn disk_source(path: PathBuf, start: u64, len: u64) -> Chunks {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let read = || -> io::Result<()> {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(start))?;
            let mut left = len;
            while left > 0 {
                let n = (CHUNK as u64).min(left) as usize;
                let mut v = Vec::with_capacity(n);
                Read::take(&mut f, n as u64).read_to_end(&mut v)?;
                if v.len() != n {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
                }
                left -= n as u64;
                if tx.blocking_send(Ok(Bytes::from(v))).is_err() {
                    return Ok(()); // the connection went away
                }
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

struct Flow {
    src: Chunks,
    pending: Option<Bytes>,
    sent: u64,
    faults: BodyFaults,
    stalled: bool,
    corrupted: bool,
    started: Instant,
    done: bool,
    ctx: BodyCtx,
}

impl Flow {
    async fn next(mut self) -> Option<(io::Result<Bytes>, Flow)> {
        if self.done {
            return None;
        }
        if let Some(t) = self.faults.truncate_at
            && self.sent >= t
        {
            self.done = true;
            return Some((Err(io::Error::other("fake hub: truncated body")), self));
        }
        if let Some(at) = self.faults.stall_at
            && !self.stalled
            && self.sent >= at
        {
            self.stalled = true;
            let mut release = self.ctx.release.clone();
            tokio::select! {
                _ = release.changed() => {}
                _ = tokio::time::sleep(self.ctx.stall_timeout) => {}
            }
        }
        let mut chunk = match self.pending.take() {
            Some(c) => c,
            None => match self.src.next().await? {
                Ok(c) => c,
                Err(e) => {
                    self.done = true;
                    return Some((Err(e), self));
                }
            },
        };
        let limit = self.limit(chunk.len() as u64);
        if limit < chunk.len() as u64 {
            self.pending = Some(chunk.split_off(limit as usize));
        }
        if self.faults.corrupt && !self.corrupted && !chunk.is_empty() {
            let mut m = BytesMut::from(&chunk[..]);
            m[0] ^= 0xff;
            chunk = m.freeze();
            self.corrupted = true;
        }
        if let Some((_, every)) = self.faults.drip {
            tokio::time::sleep(every).await;
        }
        if let Some(rate) = self.faults.rate {
            let due = (self.sent + chunk.len() as u64) as f64 / rate as f64;
            tokio::time::sleep_until(self.started + Duration::from_secs_f64(due)).await;
        }
        self.sent += chunk.len() as u64;
        self.ctx.stats.add_bytes(chunk.len() as u64);
        Some((Ok(chunk), self))
    }

    /// How much of a chunk of `len` may go now: up to the truncation or stall point, and in
    /// tenths of a second's worth when paced.
    fn limit(&self, len: u64) -> u64 {
        let mut limit = len;
        if let Some(t) = self.faults.truncate_at {
            limit = limit.min(t - self.sent);
        }
        if let Some(at) = self.faults.stall_at
            && !self.stalled
        {
            limit = limit.min(at - self.sent);
        }
        if let Some(rate) = self.faults.rate {
            limit = limit.min((rate / 10).clamp(1, CHUNK as u64));
        }
        if let Some((n, _)) = self.faults.drip {
            limit = limit.min(n);
        }
        limit
    }
}
