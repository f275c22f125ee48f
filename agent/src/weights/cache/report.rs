//! What [`HubCache::verify`](super::HubCache::verify) reports (serialized into `coldctl`'s
//! JSON output).

/// How thoroughly to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Links, presence, sizes and the fingerprints recorded when each blob was verified.
    Quick,
    /// Links, presence, sizes and a full hash of every blob.
    Full,
}

/// What is wrong with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// `snapshots/<commit>` does not exist.
    MissingSnapshot,
    /// `trees/<commit>.json` is absent or unreadable: offline readers cannot tell that the
    /// snapshot is incomplete.
    MissingTrees,
    /// The file is not in the trees file (or with another blob), so readers do not require it.
    NotInTrees,
    /// The file is missing from the snapshot.
    Missing,
    /// The snapshot entry is not a symlink (or a directory on its way is one).
    NotALink,
    /// The symlink points somewhere else than its blob.
    WrongTarget,
    /// The blob the link points at is missing or not a regular file.
    DanglingLink,
    /// The blob has the wrong size.
    WrongSize,
    /// The blob's metadata changed since it was verified, or it never was (Quick).
    ChangedFingerprint,
    /// The blob's content does not match its digest (Full).
    HashMismatch,
}

/// One problem found by [`HubCache::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The file's path in the repository (or the cache entry for snapshot-wide problems).
    pub path: String,
    /// What is wrong.
    pub kind: ProblemKind,
    /// Details for people.
    pub detail: String,
}

/// The result of [`HubCache::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    /// The Hub model id (`org/name`).
    pub repo: String,
    /// Commit verified.
    pub commit: String,
    /// Fingerprints only, or full content hashes.
    pub mode: VerifyMode,
    /// Files the snapshot should contain.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs whose content was hashed (every one in Full mode; in a re-verification, those
    /// whose fingerprint changed).
    #[serde(default)]
    pub hashed: usize,
    /// What is wrong; empty when the snapshot is complete and intact.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub(super) fn problem(&mut self, path: &str, kind: ProblemKind, detail: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            kind,
            detail: detail.into(),
        });
    }
}
