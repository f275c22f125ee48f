//! Content hashes of blobs: sha256 for LFS/Xet files, git blob sha1 for plain ones, streamed
//! with a 1 MiB buffer from files opened without following a symlink.

use std::io::{ErrorKind, Read};
use std::path::Path;

use sha1::Digest as _;

use super::super::{Digest, Error, TreeEntry};
use crate::fsx;

/// Read buffer for hashing.
const BUF: usize = 1 << 20;

/// Git's blob id of `content`: `sha1("blob <len>\0" + content)`, hex.
pub fn git_blob_sha1(content: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the file at `path` (opened without following a symlink) has `digest`, streamed
/// with a 1 MiB buffer.
pub fn hash_file(path: &Path, digest: &Digest) -> Result<bool, Error> {
    let mut file = fsx::open_read(path).map_err(|e| fsx::open_error("open", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut buf = vec![0u8; BUF];
    let mut feed = |update: &mut dyn FnMut(&[u8])| -> Result<(), Error> {
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => update(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", path, e)),
            }
        }
    };
    let (actual, expected) = match digest {
        Digest::Sha256(expected) => {
            let mut h = sha2::Sha256::new();
            feed(&mut |d| h.update(d))?;
            (hex(&h.finalize()), expected)
        }
        Digest::GitSha1(expected) => {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            feed(&mut |d| h.update(d))?;
            (hex(&h.finalize()), expected)
        }
    };
    Ok(actual.eq_ignore_ascii_case(expected))
}

/// Whether `path` is a regular file (not a symlink) with the entry's size and digest.
pub fn verify_blob(path: &Path, entry: &TreeEntry) -> Result<bool, Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == entry.content_size() => hash_file(path, &entry.digest()),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}
