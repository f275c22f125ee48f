//! What the warmer remembers of each part's finished attempts, and how that, with what the
//! ports report, reads as the planner's [`LocalImage`] and [`LocalWeights`]. Recording only:
//! when to try again is the planner's decision ([`crate::plan::retry`]).

use k8s_openapi::jiff::Timestamp;

use crate::plan::{Failed, LocalImage, LocalWeights, Mono};

/// What a finished task left.
#[derive(Debug, Clone)]
pub(super) struct Done {
    /// The resolved image digest or weights commit.
    pub resolved: Option<String>,
    /// Bytes of the part (compressed image bytes; selected weights bytes).
    pub bytes: u64,
}

/// Why a task failed: a stable label and the message (the whole cause chain, one line).
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    /// A failure labelled `kind` whose message is `err`'s cause chain.
    pub fn of(kind: &'static str, err: &dyn std::error::Error) -> Failure {
        Failure {
            kind,
            message: crate::errors::chain(err),
        }
    }
}

/// An attempt's end: what it left, when it started (wall time, for status) and when it ended
/// (monotonic, for the planner).
#[derive(Debug, Clone)]
pub(super) struct Ended<T> {
    pub value: T,
    pub started: Timestamp,
    pub at: Mono,
}

/// The attempts at one part for one spec (`key`: an image reference, or a model's weights
/// spec; a new key starts a new record).
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub key: String,
    /// The last success.
    pub ok: Option<Ended<Done>>,
    /// The last failure since that success, and how many in a row.
    pub failed: Option<(Ended<Failure>, u32)>,
}

impl Record {
    fn new(key: &str) -> Record {
        Record {
            key: key.to_string(),
            ok: None,
            failed: None,
        }
    }

    /// Records an attempt's result: a success clears the failures; a failure keeps the last
    /// success (a failed re-sync leaves the verified snapshot in place).
    pub fn end(&mut self, result: Result<Done, Failure>, started: Timestamp, at: Mono) {
        match result {
            Ok(value) => {
                self.ok = Some(Ended { value, started, at });
                self.failed = None;
            }
            Err(value) => {
                let n = self.failed.as_ref().map_or(0, |(_, n)| *n);
                self.failed = Some((Ended { value, started, at }, n + 1));
            }
        }
    }

    /// When the last attempt ended.
    pub fn last_attempt(&self) -> Option<Mono> {
        let ok = self.ok.as_ref().map(|e| e.at);
        let failed = self.failed.as_ref().map(|(e, _)| e.at);
        ok.max(failed)
    }

    /// The planner's view of the last failure, if any.
    pub fn failed(&self) -> Option<Failed> {
        self.failed.as_ref().map(|(e, n)| Failed {
            reason: e.value.kind.to_string(),
            failures: *n,
            at: e.at,
        })
    }
}

/// Records `result` for `name` under `key`, starting a new record when the key changed.
pub(super) fn record(
    records: &mut std::collections::BTreeMap<String, Record>,
    name: &str,
    key: &str,
    result: Result<Done, Failure>,
    started: Timestamp,
    at: Mono,
) {
    let rec = records
        .entry(name.to_string())
        .or_insert_with(|| Record::new(key));
    if rec.key != key {
        *rec = Record::new(key);
    }
    rec.end(result, started, at);
}

/// An image containerd does not hold (or holds unpacked-not): failed when our last pull
/// failed, else absent.
pub(super) fn missing_image(record: Option<&Record>) -> LocalImage {
    match record.and_then(Record::failed) {
        Some(f) => LocalImage::Failed(f),
        None => LocalImage::Absent,
    }
}

/// A selected model's weights: verified while a success for its current spec is still in
/// the cache (also while a periodic re-sync runs or after one failed), syncing, failed, or
/// absent (another spec, never synced, or synced and then deleted behind our back).
pub(super) fn weights(
    record: Option<&Record>,
    key: &str,
    held: bool,
    syncing: bool,
) -> LocalWeights {
    let same = record.filter(|r| r.key == key);
    if let Some(r) = same.filter(|r| r.ok.is_some() && held) {
        let last_attempt = r.last_attempt().unwrap_or_default();
        return LocalWeights::Verified { last_attempt };
    }
    if syncing {
        return LocalWeights::Syncing;
    }
    match same.and_then(Record::failed) {
        Some(f) => LocalWeights::Failed(f),
        None => LocalWeights::Absent,
    }
}
