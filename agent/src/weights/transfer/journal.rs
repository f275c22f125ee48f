//! The durable record of which ranges of a partial blob are on disk: a small JSON file in our
//! state dir, replaced atomically, written only after the bytes it lists were `fdatasync`ed.
//! Besides whole chunks it records how far each unfinished chunk got from its start, so a
//! crash costs at most what was written since the last commit, not the ranges in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::super::Error;

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    size: u64,
    chunk: u64,
    done: BTreeSet<usize>,
    /// Unfinished chunks: bytes durable from the chunk's start.
    #[serde(default)]
    partial: BTreeMap<usize, u64>,
}

/// What was written since the last commit.
#[derive(Debug, Default)]
pub(super) struct Pending {
    done: Vec<usize>,
    partial: BTreeMap<usize, u64>,
}

impl Pending {
    /// Nothing to commit.
    pub(super) fn is_empty(&self) -> bool {
        self.done.is_empty() && self.partial.is_empty()
    }
}

/// Ranges of one partial blob known to be durable.
#[derive(Debug)]
pub(super) struct Journal {
    path: PathBuf,
    size: u64,
    chunk: u64,
    done: BTreeSet<usize>,
    partial: BTreeMap<usize, u64>,
    pending: Pending,
    unflushed: u64,
}

impl Journal {
    /// The journal at `path`; empty when absent, unreadable, or written for another size or
    /// chunking (the partial file is then rewritten from scratch).
    pub(super) fn load(path: &Path, size: u64, chunk: u64) -> Result<Journal, Error> {
        let (done, mut partial) = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) if r.size == size && r.chunk == chunk => (r.done, r.partial),
                _ => Default::default(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(Error::io("read journal", path, e)),
        };
        // Only progress that fits inside its chunk is believed.
        let chunks = size.div_ceil(chunk.max(1)) as usize;
        partial.retain(|c, n| {
            *c < chunks && !done.contains(c) && *n < chunk.min(size - *c as u64 * chunk)
        });
        Ok(Journal {
            path: path.to_path_buf(),
            size,
            chunk,
            done,
            partial,
            pending: Pending::default(),
            unflushed: 0,
        })
    }

    /// Chunks durably on disk.
    pub(super) fn done(&self) -> &BTreeSet<usize> {
        &self.done
    }

    /// Bytes of `chunk` durable from its start (where a resumed download of it starts).
    pub(super) fn resume_offset(&self, chunk: usize) -> u64 {
        self.partial.get(&chunk).copied().unwrap_or(0)
    }

    /// `n` more bytes of `chunk` were written, which now holds `reached` bytes from its start
    /// (not yet durable). Returns the bytes written since the last commit.
    pub(super) fn advance(&mut self, chunk: usize, reached: u64, n: u64) -> u64 {
        let at = self.pending.partial.entry(chunk).or_insert(0);
        *at = (*at).max(reached);
        self.unflushed += n;
        self.unflushed
    }

    /// A chunk was written (not yet durable).
    pub(super) fn mark(&mut self, chunk: usize) {
        self.pending.partial.remove(&chunk);
        self.pending.done.push(chunk);
    }

    /// Every chunk of `n` was written.
    pub(super) fn mark_all(&mut self, n: usize) {
        self.pending.partial.clear();
        self.pending.done.extend(0..n);
    }

    /// What was written since the last commit.
    pub(super) fn take_pending(&mut self) -> Pending {
        self.unflushed = 0;
        std::mem::take(&mut self.pending)
    }

    /// Records `pending` as durable (the caller has `fdatasync`ed the data).
    pub(super) fn commit(&mut self, pending: &Pending) -> Result<(), Error> {
        self.done.extend(pending.done.iter().copied());
        for (&c, &n) in &pending.partial {
            let at = self.partial.entry(c).or_insert(0);
            *at = (*at).max(n);
        }
        let done = &self.done;
        self.partial.retain(|c, _| !done.contains(c));
        let record = Record {
            size: self.size,
            chunk: self.chunk,
            done: self.done.clone(),
            partial: self.partial.clone(),
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| Error::io("encode journal", &self.path, std::io::Error::other(e)))?;
        write_atomic(&self.path, &bytes)
    }

    /// Deletes the journal of a finalized or discarded blob.
    pub(super) fn remove(path: &Path) -> Result<(), Error> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove journal", path, e)),
        }
    }
}

/// temp file + fsync + rename, in the same directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reload_and_rejects_other_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j/x.json");
        let mut j = Journal::load(&p, 100, 10).unwrap();
        assert!(j.done().is_empty());
        j.mark(3);
        assert_eq!(j.advance(1, 4, 4), 4);
        assert_eq!(j.advance(5, 6, 6), 10);
        let pending = j.take_pending();
        j.commit(&pending).unwrap();
        assert!(j.take_pending().is_empty());
        // Chunk 1 finishes after its partial progress was committed: the mark wins.
        j.advance(1, 10, 6);
        j.mark(1);
        let pending = j.take_pending();
        j.commit(&pending).unwrap();
        let again = Journal::load(&p, 100, 10).unwrap();
        assert_eq!(again.done().iter().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(again.resume_offset(5), 6);
        assert_eq!(again.resume_offset(1), 0);
        assert_eq!(again.resume_offset(0), 0);
        assert!(Journal::load(&p, 100, 20).unwrap().done().is_empty());
        std::fs::write(&p, b"garbage").unwrap();
        assert!(Journal::load(&p, 100, 10).unwrap().done().is_empty());
        Journal::remove(&p).unwrap();
        Journal::remove(&p).unwrap();
    }
}
