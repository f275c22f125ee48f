//! Content hashes the Hub reports: git blob sha1 for plain files, sha256 plus the git oid of
//! the LFS pointer for LFS files. Files are hashed streaming, in 1 MiB reads; `sha1` and `sha2`
//! pick the CPU's SHA extensions at run time.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Files at least this big are LFS whatever their name.
pub const LFS_MIN_SIZE: u64 = 10 * 1024 * 1024;
/// Extensions that are always LFS (lowercase).
const LFS_EXTENSIONS: [&str; 4] = ["safetensors", "bin", "pt", "gguf"];
const READ_CHUNK: usize = 1 << 20;

/// Whether the Hub would store `path` of `size` bytes through LFS.
pub fn is_lfs(path: &str, size: u64) -> bool {
    if size >= LFS_MIN_SIZE {
        return true;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((_, ext)) => LFS_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()),
        None => false,
    }
}

/// The git LFS pointer text git stores in place of an LFS file.
pub fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// The git blob id of `content`: sha1 of `blob {len}\0` followed by the bytes.
pub fn git_blob_oid(content: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    to_hex(&h.finalize())
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// sha256 hex of `content`.
pub fn sha256_hex(content: &[u8]) -> String {
    to_hex(&Sha256::digest(content))
}

/// Hashes the file at `path` (expected `size` bytes): git blob sha1 when `lfs` is false,
/// sha256 when it is true. Fails if the file's length is not `size`.
pub fn hash_file(path: &Path, size: u64, lfs: bool) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    let mut hasher = if lfs {
        Hasher::Lfs(Sha256::new())
    } else {
        let mut h = Sha1::new();
        h.update(format!("blob {size}\0").as_bytes());
        Hasher::Git(h)
    };
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        match &mut hasher {
            Hasher::Git(h) => h.update(&buf[..n]),
            Hasher::Lfs(h) => h.update(&buf[..n]),
        }
    }
    if total != size {
        return Err(io::Error::other(format!(
            "{} changed while hashing: {total} bytes, expected {size}",
            path.display()
        )));
    }
    Ok(match hasher {
        Hasher::Git(h) => to_hex(&h.finalize()),
        Hasher::Lfs(h) => to_hex(&h.finalize()),
    })
}

enum Hasher {
    Git(Sha1),
    Lfs(Sha256),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_oids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_oid(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        // the empty blob
        assert_eq!(
            git_blob_oid(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }

    #[test]
    fn file_hashes_match_in_memory_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let n = data.len() as u64;
        assert_eq!(hash_file(&p, n, false).unwrap(), git_blob_oid(&data));
        assert_eq!(hash_file(&p, n, true).unwrap(), sha256_hex(&data));
        assert!(hash_file(&p, n + 1, true).is_err());
    }

    #[test]
    fn lfs_rules() {
        assert!(is_lfs("model.safetensors", 1));
        assert!(is_lfs("sub/pytorch_model.BIN", 1));
        assert!(is_lfs("x.gguf", 0));
        assert!(is_lfs("big.json", LFS_MIN_SIZE));
        assert!(!is_lfs("config.json", LFS_MIN_SIZE - 1));
        assert!(!is_lfs("bin", 1));
        assert_eq!(
            lfs_pointer("ab", 3),
            "version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 3\n"
        );
    }
}
