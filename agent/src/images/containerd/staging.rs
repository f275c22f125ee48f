//! Ranges written in place: a staging ingest on the content store's own filesystem.
//!
//! containerd's local content store keeps each ingest as a directory `ingest/<sha256 of its
//! key>/` under `io.containerd.content.v1.content` holding `ref` (the key, which the metadata
//! store makes `<namespace>/<sequence>/<ref>`), `data`, `total`, `startedat` and `updatedat`. A
//! writer opened on an existing ingest re-reads `data` to rebuild its digest and goes on at its
//! length (the same in 1.6, 1.7 and 2.x). So where the agent sees that directory (the DaemonSet
//! mounts containerd's root at the same path), ranges are written straight into `data` at their
//! offsets, from every connection and out of order, with no in-order window and no copy
//! through the Content API; once every range is there the ingest is opened again (containerd
//! re-hashes what it holds) and committed with the expected digest and size, which containerd
//! verifies.
//!
//! The staging ingest has a ref of its own ([`staging_ref`]), never the one containerd's pull
//! uses: its `data` has holes until the last range lands, and a CRI pull resuming it would take
//! the holes for bytes. While writing, the agent holds containerd's writer on it (its lock: a
//! second fetch of the same blob skips it). How far `data` is whole from its start is recorded
//! beside it ([`PREFIX_FILE`]; containerd ignores other files and removes the directory with the
//! ingest), so a restarted fetch resumes from there; ranges past that prefix are fetched again.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::images::Blob;
use crate::images::fetch::ingest_ref;

/// The contiguous prefix of `data` known written, in decimal bytes.
pub(super) const PREFIX_FILE: &str = "coldstart-prefix";
/// The prefix is recorded again once it has grown this much (and when the blob is whole).
const RECORD_EVERY: u64 = 16 << 20;
/// Writeback of `data` is started again once this much more has been written.
const SYNC_EVERY: u64 = 64 << 20;

/// The ingest ref of a blob's staging ingest (containerd's own ref with a prefix).
pub(super) fn staging_ref(blob: &Blob) -> String {
    format!("coldstart-{}", ingest_ref(blob))
}

/// The directory of the ingest `reference` in namespace `namespace` under the content store
/// root `content`, found by its `ref` file; `None` when no ingest directory names it (the
/// content store is not on this filesystem, or is not containerd's local store).
pub(super) fn find_ingest(
    content: &Path,
    namespace: &str,
    reference: &str,
) -> io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(content.join("ingest")) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let suffix = format!("/{reference}");
    for entry in entries {
        let dir = entry?.path();
        let Ok(key) = std::fs::read_to_string(dir.join("ref")) else {
            continue;
        };
        let Some(middle) = key
            .strip_prefix(namespace)
            .and_then(|k| k.strip_prefix('/'))
            .and_then(|k| k.strip_suffix(&suffix))
        else {
            continue;
        };
        if !middle.is_empty() && middle.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Some(dir));
        }
    }
    Ok(None)
}

/// A blob's `data` file being filled by ranges.
pub(super) struct Staged {
    dir: PathBuf,
    file: Arc<File>,
    size: u64,
    /// Bytes from 0 known written.
    prefix: u64,
    /// The prefix last recorded in [`PREFIX_FILE`].
    recorded: u64,
    /// Ranges written past the prefix: start to end.
    ahead: BTreeMap<u64, u64>,
    /// Bytes written since the last writeback began.
    unsynced: u64,
    /// The writeback in progress (`fdatasync` on a blocking thread).
    syncing: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl Staged {
    /// Opens the ingest directory `dir` of a blob of `size` bytes. What of `data` is whole is
    /// the recorded prefix (none recorded: nothing), at most `data`'s length; `data` is cut
    /// back to it, so containerd's view of the ingest (its length) is only whole bytes.
    pub fn open(dir: PathBuf, size: u64) -> io::Result<Staged> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("data"))?;
        let len = file.metadata()?.len();
        let recorded = std::fs::read_to_string(dir.join(PREFIX_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let prefix = recorded.min(len).min(size);
        if len != prefix {
            file.set_len(prefix)?;
        }
        Ok(Staged {
            dir,
            file: Arc::new(file),
            size,
            prefix,
            recorded: prefix,
            ahead: BTreeMap::new(),
            unsynced: 0,
            syncing: None,
        })
    }

    /// Bytes from the start already whole (what a resumed fetch does not fetch again).
    pub fn prefix(&self) -> u64 {
        self.prefix
    }

    /// Whether every byte of the blob is written.
    pub fn whole(&self) -> bool {
        self.prefix >= self.size
    }

    /// Writes `data` at `start` (off the async workers), then records the prefix when it has
    /// grown enough.
    pub async fn write(&mut self, start: u64, data: Vec<u8>) -> io::Result<()> {
        let end = start + data.len() as u64;
        if end > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("range {start}..{end} past the blob's {} bytes", self.size),
            ));
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.write_all_at(&data, start))
            .await
            .map_err(io::Error::other)??;
        self.mark(start, end);
        if self.prefix - self.recorded >= RECORD_EVERY
            || (self.whole() && self.recorded < self.size)
        {
            self.record()?;
        }
        self.unsynced += end - start;
        self.write_back().await
    }

    /// Keeps the disk busy while ranges arrive: once [`SYNC_EVERY`] more bytes are written and
    /// no writeback runs, starts one (`fdatasync` off the async workers). containerd syncs
    /// `data` before it commits; without this the page cache would hold gigabytes of dirty
    /// pages until the kernel's thresholds (or that sync) wrote them all at the end, and other
    /// writers on the node would be throttled meanwhile. A failed writeback fails the write.
    async fn write_back(&mut self) -> io::Result<()> {
        if let Some(h) = self.syncing.take_if(|h| h.is_finished()) {
            h.await.map_err(io::Error::other)??;
        }
        if self.syncing.is_none() && self.unsynced >= SYNC_EVERY {
            self.unsynced = 0;
            let file = self.file.clone();
            self.syncing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        Ok(())
    }

    /// Adds `start..end` to what is written and moves the prefix over what is now contiguous.
    fn mark(&mut self, start: u64, end: u64) {
        if start <= self.prefix {
            self.prefix = self.prefix.max(end);
        } else {
            let e = self.ahead.entry(start).or_insert(end);
            *e = (*e).max(end);
        }
        while let Some((&s, &e)) = self.ahead.first_key_value() {
            if s > self.prefix {
                break;
            }
            self.ahead.remove(&s);
            self.prefix = self.prefix.max(e);
        }
    }

    /// Writes the prefix beside `data` (a temporary file renamed over it). Not synced: an agent
    /// that dies leaves the page cache behind it, and after a host crash containerd's digest
    /// check at commit refuses whatever was lost.
    fn record(&mut self) -> io::Result<()> {
        let tmp = self.dir.join(format!("{PREFIX_FILE}.tmp"));
        std::fs::write(&tmp, self.prefix.to_string())?;
        std::fs::rename(&tmp, self.dir.join(PREFIX_FILE))?;
        self.recorded = self.prefix;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
