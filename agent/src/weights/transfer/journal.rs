//! The durable record of which ranges of a partial blob are on disk: a small JSON file in our
//! state dir, replaced atomically, written only after the ranges it lists were `fdatasync`ed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::super::Error;

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    size: u64,
    chunk: u64,
    done: BTreeSet<usize>,
}

/// Ranges of one partial blob known to be durable.
#[derive(Debug)]
pub(super) struct Journal {
    path: PathBuf,
    size: u64,
    chunk: u64,
    done: BTreeSet<usize>,
    pending: Vec<usize>,
}

impl Journal {
    /// The journal at `path`; empty when absent, unreadable, or written for another size or
    /// chunking (the partial file is then rewritten from scratch).
    pub(super) fn load(path: &Path, size: u64, chunk: u64) -> Result<Journal, Error> {
        let done = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) if r.size == size && r.chunk == chunk => r.done,
                _ => BTreeSet::new(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(Error::io("read journal", path, e)),
        };
        Ok(Journal {
            path: path.to_path_buf(),
            size,
            chunk,
            done,
            pending: Vec::new(),
        })
    }

    /// Chunks durably on disk.
    pub(super) fn done(&self) -> &BTreeSet<usize> {
        &self.done
    }

    /// A chunk was written (not yet durable).
    pub(super) fn mark(&mut self, chunk: usize) {
        self.pending.push(chunk);
    }

    /// Every chunk of `n` was written.
    pub(super) fn mark_all(&mut self, n: usize) {
        self.pending.extend(0..n);
    }

    /// The chunks written since the last commit.
    pub(super) fn take_pending(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.pending)
    }

    /// Records `chunks` as durable (the caller has `fdatasync`ed the data).
    pub(super) fn commit(&mut self, chunks: &[usize]) -> Result<(), Error> {
        self.done.extend(chunks.iter().copied());
        let record = Record {
            size: self.size,
            chunk: self.chunk,
            done: self.done.clone(),
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
        j.mark(1);
        let pending = j.take_pending();
        j.commit(&pending).unwrap();
        assert!(j.take_pending().is_empty());
        let again = Journal::load(&p, 100, 10).unwrap();
        assert_eq!(again.done().iter().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert!(Journal::load(&p, 100, 20).unwrap().done().is_empty());
        std::fs::write(&p, b"garbage").unwrap();
        assert!(Journal::load(&p, 100, 10).unwrap().done().is_empty());
        Journal::remove(&p).unwrap();
        Journal::remove(&p).unwrap();
    }
}
