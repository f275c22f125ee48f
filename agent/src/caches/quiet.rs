//! The quiet rule: a scope is sealed only once its tree has stopped changing.
//!
//! Why: vLLM 0.33 has "no completion marker and no lock"; the AOT `model` rename is its only
//! "entry complete" signal, and Inductor keeps writing after it ("post-load execution,
//! CUDA-graph capture, and later autotune/recompile all need to write"): "seal only after a
//! quiet period" (facts A, "No completion marker", "Inductor writes after load"). The measure is
//! ModelExpress's "settled" rule: file count, total bytes and newest mtime unchanged (facts A,
//! "Prior art"), here over a configurable period (default 30 s) rather than its 5 s.
//!
//! Temporary files count (a `model.<pid>.tmp` growing means a write goes on); the pod's scratch
//! under `TMPDIR` does not (it may never stop changing and is never sealed).

use std::time::Duration;

use super::UnixNanos;
use super::walk::{Class, Kind, Walk};

/// Default quiet period.
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(30);

/// What the quiet rule looks at in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TreeStats {
    /// Regular files, temporary ones included, scratch left out.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Newest mtime of those files and of every directory outside scratch (a rename or removal
    /// changes its directory's mtime), nanoseconds since the epoch; 0 for an empty tree.
    pub newest_mtime_ns: i64,
}

impl TreeStats {
    /// The stats of a walk.
    pub fn of(walk: &Walk) -> TreeStats {
        let mut stats = TreeStats::default();
        for e in walk.entries.iter().filter(|e| e.class != Class::Scratch) {
            match e.kind {
                Kind::File => {
                    stats.files += 1;
                    stats.bytes = stats.bytes.saturating_add(e.size);
                }
                Kind::Dir => {}
                Kind::Symlink | Kind::Special => continue,
            }
            stats.newest_mtime_ns = stats.newest_mtime_ns.max(e.mtime_ns);
        }
        stats
    }
}

/// Stats of a tree and since when they have been the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Observed {
    /// The latest stats.
    pub stats: TreeStats,
    /// When these stats were first seen (the caller's clock, nanoseconds since the epoch).
    pub since: UnixNanos,
    /// When they were last seen.
    pub at: UnixNanos,
}

impl Observed {
    /// The observation after `prev` when a scan at `now` gives `stats`: `since` carries over
    /// while the stats are unchanged and restarts at `now` when they change.
    pub fn next(prev: Option<&Observed>, stats: TreeStats, now: UnixNanos) -> Observed {
        let since = match prev {
            Some(p) if p.stats == stats => p.since,
            _ => now,
        };
        Observed {
            stats,
            since,
            at: now,
        }
    }
}

/// Whether the tree is quiet at `now.at`: its stats were the same in `prev` and `now`, have
/// not changed for `period`, and its newest mtime is at least `period` old (a write just
/// before the first scan counts too). `prev` is `None` on the first scan: never quiet then.
pub fn quiet(prev: Option<&Observed>, now: &Observed, period: Duration) -> bool {
    let period = i64::try_from(period.as_nanos()).unwrap_or(i64::MAX);
    let Some(prev) = prev else {
        return false;
    };
    prev.stats == now.stats
        && now.at.saturating_sub(now.since) >= period
        && now.at.saturating_sub(now.stats.newest_mtime_ns) >= period
}
