//! The parallel ranged layer fetch, as the images port exposes it: its tuning, its outcome, its
//! live byte counter, and the pure planning of which byte ranges go over the wire.
//!
//! Before the CRI pull, the blobs of the image missing from containerd's content store are
//! fetched by the agent itself: blobs at least [`FetchOptions::chunk_bytes`] long as parallel
//! byte ranges, smaller ones whole, over one pool of [`FetchOptions::connections`] connections
//! shared across blobs. Where containerd's content store is on this filesystem, ranges are
//! written in place into a staging ingest as they arrive ([`FetchOptions::in_place`]);
//! elsewhere the Content API appends only, so ranges pass through a bounded in-order window
//! ([`FetchOptions::buffer_bytes`] in all, every blob together) before being written. Either
//! way containerd checks digest and size when each blob is committed. The CRI pull then finds
//! every blob present and only unpacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Blob;

/// Tuning of the ranged fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Whether to fetch blobs ourselves before the CRI pull (false: containerd's pull alone).
    pub enabled: bool,
    /// Connections to the registry, shared across blobs.
    pub connections: usize,
    /// Bytes per range; blobs shorter than this are fetched whole.
    pub chunk_bytes: u64,
    /// Bytes held in memory at most: ranges in flight plus ranges waiting for an earlier one.
    pub buffer_bytes: u64,
    /// A first range moving at least this many bytes per second over one connection means the
    /// registry does not cap connections: containerd's own pull (in-process writes) is then
    /// faster than ranges through the Content API, and the fetch falls back. 0: never.
    pub fast_bytes_per_sec: u64,
    /// Write ranges in place, into a staging ingest on containerd's content store filesystem,
    /// where this process sees it (false: always append in order through the Content API).
    pub in_place: bool,
    /// Expiry of the containerd lease holding the fetched blobs until the CRI pull references
    /// them (`containerd.io/gc.expire`): what a crashed agent leaves is collected after it.
    pub lease_ttl: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            enabled: true,
            connections: 8,
            chunk_bytes: 8 << 20,
            buffer_bytes: 128 << 20,
            fast_bytes_per_sec: 200_000_000,
            in_place: true,
            lease_ttl: Duration::from_secs(6 * 3600),
        }
    }
}

impl FetchOptions {
    /// Checks the values fit together: 1 to 64 connections, a chunk of at least 64 KiB
    /// and at most 1 GiB, and a buffer of at least one chunk.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.connections) {
            return Err("fetch connections must be between 1 and 64".to_owned());
        }
        if !(64 << 10..=1 << 30).contains(&self.chunk_bytes) {
            return Err("fetch chunk must be between 64 KiB and 1 GiB".to_owned());
        }
        if self.buffer_bytes < self.chunk_bytes {
            return Err("fetch buffer must hold at least one chunk".to_owned());
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err("fetch lease ttl must be at least 1 s".to_owned());
        }
        Ok(())
    }
}

/// What a ranged fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Every blob is in the content store.
    Fetched {
        /// Blobs written by this fetch.
        blobs: usize,
        /// Bytes received from the registry by this fetch.
        bytes: u64,
        /// Bytes that were already in containerd's ingests (a resumed fetch) and not fetched.
        resumed: u64,
        /// Blobs written in place into a staging ingest (the others through the Content API).
        in_place: usize,
    },
    /// The ranged fetch cannot work here; containerd's own pull does the rest. Says why.
    Fallback(String),
}

/// Bytes received but not yet in containerd, readable while the fetch runs (the progress
/// display and the stall rule count them: ranges land in containerd in order, so its ingest
/// offsets alone stand still while later ranges arrive).
#[derive(Debug, Clone, Default)]
pub struct FetchProgress {
    buffered: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl FetchProgress {
    /// Bytes received and not yet written.
    pub fn buffered(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Bytes received in all.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// `n` more bytes arrived.
    pub fn arrived(&self, n: u64) {
        self.buffered.fetch_add(n, Ordering::Relaxed);
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` buffered bytes were written (or dropped).
    pub fn written(&self, n: u64) {
        let _ = self
            .buffered
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }

    /// Nothing is buffered any more (the fetch ended).
    pub fn clear(&self) {
        self.buffered.store(0, Ordering::Relaxed);
    }
}

/// One blob to fetch and where its ingest stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The blob.
    pub blob: Blob,
    /// Bytes containerd already holds of it (a resumed ingest).
    pub offset: u64,
}

/// One request: bytes `start..end` of blob `index` (into the pending list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Index of the blob.
    pub index: usize,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The ranges to request, in the order they are handed to connections: largest blob first
/// (it sets the fetch time), each blob's ranges in order (the in-order window drains from its
/// head). A blob shorter than `chunk` is one whole request; a resumed blob starts at its offset.
pub fn plan(pending: &[Pending], chunk: u64) -> Vec<Range> {
    let chunk = chunk.max(1);
    let mut order: Vec<usize> = (0..pending.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(pending[i].blob.size));
    let mut out = Vec::new();
    for index in order {
        let p = &pending[index];
        let mut start = p.offset.min(p.blob.size);
        while start < p.blob.size {
            let end = (start + chunk).min(p.blob.size);
            out.push(Range { index, start, end });
            start = end;
        }
    }
    out
}

/// containerd's ingest ref for a blob (as its own fetcher names them: `layer-sha256:..`,
/// `config-sha256:..`), so that a CRI pull after a fallback resumes what this fetch began and
/// either waits for the other's writer rather than fetching the blob twice.
pub fn ingest_ref(blob: &Blob) -> String {
    let mt = blob.media_type.as_str();
    let kind = if mt.contains("image.layer") || mt.contains("rootfs") {
        "layer"
    } else if mt.contains("image.config") || mt.contains("container.image") {
        "config"
    } else {
        "unknown"
    };
    format!("{kind}-{}", blob.digest)
}

#[cfg(test)]
mod tests;
