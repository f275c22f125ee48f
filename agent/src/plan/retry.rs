//! When a failed part is tried again and when a Ready model is synced again: pure functions of
//! what the shell recorded and the time of the pass.
//!
//! Time here is monotonic: a [`Mono`] is the time since the agent started, read once per pass
//! by the shell. A new node's wall clock may step when NTP first syncs; a retry or re-sync
//! decided on wall time would then fire at once or wait for hours. Wall time is for status and
//! the warming deadline only.

use std::time::Duration;

pub use crate::backoff::Backoff;

/// A point on the agent's monotonic clock: the time since the agent started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Mono(pub Duration);

impl Mono {
    /// Time from `earlier` to `self` (zero when `earlier` is later).
    pub fn since(self, earlier: Mono) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// A part's failures in a row, as the shell recorded them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The stable label of the last failure (a metric label; the status reason).
    pub reason: String,
    /// Failures in a row for the same spec (1 after the first).
    pub failures: u32,
    /// When the last attempt ended.
    pub at: Mono,
}

/// Whether a part that failed as `failed` may be tried again at `now`.
pub fn retry_due(backoff: &Backoff, failed: &Failed, now: Mono) -> bool {
    now.since(failed.at) >= backoff.after_failures(failed.failures)
}

/// Whether a Ready model whose last sync attempt (successful or not) ended at `last_attempt`
/// is due for a periodic re-sync at `now`. A failed re-sync leaves the verified snapshot in
/// place, so it waits a whole interval again rather than backing off.
pub fn resync_due(interval: Duration, last_attempt: Mono, now: Mono) -> bool {
    now.since(last_attempt) >= interval
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn retry_table() {
        let b = Backoff::try_new(secs(10), secs(600)).unwrap();
        let failed = |failures, at| Failed {
            reason: "http".into(),
            failures,
            at: Mono(secs(at)),
        };
        let cases = [
            (failed(1, 100), 105, false),
            (failed(1, 100), 110, true),
            (failed(2, 100), 119, false),
            (failed(2, 100), 120, true),
            (failed(10, 100), 699, false),
            (failed(10, 100), 700, true),
            // A clock reading before the failure (never on a monotonic clock) waits.
            (failed(1, 100), 50, false),
            // Seen failing without an attempt of ours: no wait.
            (failed(0, 100), 100, true),
        ];
        for (f, now, due) in cases {
            assert_eq!(retry_due(&b, &f, Mono(secs(now))), due, "{f:?} at {now}");
        }
    }

    #[test]
    fn resync_table() {
        let day = secs(86_400);
        assert!(!resync_due(day, Mono(secs(10)), Mono(secs(10))));
        assert!(!resync_due(day, Mono(secs(10)), Mono(secs(86_409))));
        assert!(resync_due(day, Mono(secs(10)), Mono(secs(86_410))));
        assert!(resync_due(Duration::ZERO, Mono(secs(10)), Mono(secs(10))));
    }
}
