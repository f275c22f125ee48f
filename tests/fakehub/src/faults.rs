//! Fault knobs, set at run time through `FakeHub` and read by the handlers. "Next" knobs are
//! consumed by the file bodies (GETs of resolve and CDN answering 200/206) or, for statuses, by
//! the requests they apply to.

use std::sync::Mutex;
use std::time::Duration;

/// A status the next requests are answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusFault {
    pub(crate) code: u16,
    pub(crate) retry_after: Option<u32>,
    remaining: u32,
}

/// The faults one file body gets, decided when it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BodyFaults {
    /// Close the connection after this many body bytes.
    pub(crate) truncate_at: Option<u64>,
    /// Flip the first byte.
    pub(crate) corrupt: bool,
    /// Stop sending after this many bytes until released or timed out.
    pub(crate) stall_at: Option<u64>,
    /// Pace the body at this many bytes per second.
    pub(crate) rate: Option<u64>,
    /// Send this many bytes, then wait this long, and so on (a slow drip), the wait first.
    pub(crate) drip: Option<(u64, Duration)>,
}

#[derive(Debug, Default)]
struct State {
    ignore_range: bool,
    truncate_next: Vec<u64>,
    /// (nth, after_bytes, bodies seen since set)
    truncate_every: Option<(u64, u64, u64)>,
    corrupt_next: u32,
    stall_next: u32,
    status_next: Option<StatusFault>,
    status_next_api: Option<StatusFault>,
    rate: Option<u64>,
    drip: Option<(u64, Duration)>,
    revision_answer: Option<String>,
    tree_padding: u64,
}

/// The knobs, behind one lock (held only for a few field reads or writes).
#[derive(Debug, Default)]
pub(crate) struct Knobs(Mutex<State>);

/// Bytes a stalled body sends first: half the body, at most 64 KiB.
fn stall_point(len: u64) -> u64 {
    (len / 2).min(64 * 1024)
}

impl Knobs {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn set_ignore_range(&self, on: bool) {
        self.with(|s| s.ignore_range = on);
    }

    pub(crate) fn ignore_range(&self) -> bool {
        self.with(|s| s.ignore_range)
    }

    pub(crate) fn truncate_next(&self, after_bytes: u64) {
        self.with(|s| s.truncate_next.push(after_bytes));
    }

    pub(crate) fn truncate_every(&self, nth: u64, after_bytes: u64) {
        self.with(|s| s.truncate_every = (nth > 0).then_some((nth, after_bytes, 0)));
    }

    pub(crate) fn corrupt_next(&self, count: u32) {
        self.with(|s| s.corrupt_next += count);
    }

    pub(crate) fn stall_next(&self, count: u32) {
        self.with(|s| s.stall_next += count);
    }

    /// Drops pending stalls (the caller releases the stalled bodies).
    pub(crate) fn clear_stalls(&self) {
        self.with(|s| s.stall_next = 0);
    }

    pub(crate) fn status_next(&self, code: u16, retry_after: Option<u32>, count: u32, api: bool) {
        let f = (count > 0).then_some(StatusFault {
            code,
            retry_after,
            remaining: count,
        });
        self.with(|s| {
            if api {
                s.status_next_api = f;
            } else {
                s.status_next = f;
            }
        });
    }

    pub(crate) fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.with(|s| s.rate = bytes_per_sec.filter(|r| *r > 0));
    }

    pub(crate) fn set_drip(&self, drip: Option<(u64, Duration)>) {
        self.with(|s| s.drip = drip.filter(|(n, _)| *n > 0));
    }

    pub(crate) fn set_revision_answer(&self, sha: Option<String>) {
        self.with(|s| s.revision_answer = sha);
    }

    pub(crate) fn revision_answer(&self) -> Option<String> {
        self.with(|s| s.revision_answer.clone())
    }

    pub(crate) fn set_tree_padding(&self, n: u64) {
        self.with(|s| s.tree_padding = n);
    }

    pub(crate) fn tree_padding(&self) -> u64 {
        self.with(|s| s.tree_padding)
    }

    /// Clears every fault (rate limit and ignore-range included).
    pub(crate) fn clear(&self) {
        self.with(|s| *s = State::default());
    }

    /// Takes one pending status for a resolve/CDN request (`api` false) or an API request.
    pub(crate) fn take_status(&self, api: bool) -> Option<StatusFault> {
        self.with(|s| {
            let slot = if api {
                &mut s.status_next_api
            } else {
                &mut s.status_next
            };
            let f = (*slot)?;
            *slot = (f.remaining > 1).then_some(StatusFault {
                remaining: f.remaining - 1,
                ..f
            });
            Some(f)
        })
    }

    /// Decides the faults of a body of `len` bytes and consumes the "next" knobs it uses.
    /// Truncation and stalls are placed inside the body (at most `len - 1`) so that they
    /// always bite on a non-empty body.
    pub(crate) fn plan_body(&self, len: u64) -> BodyFaults {
        self.with(|s| {
            let inside = |n: u64| n.min(len.saturating_sub(1));
            let mut truncate_at = None;
            if !s.truncate_next.is_empty() {
                truncate_at = Some(inside(s.truncate_next.remove(0)));
            } else if let Some((nth, n, seen)) = s.truncate_every.as_mut() {
                *seen += 1;
                if *seen % *nth == 0 {
                    truncate_at = Some(inside(*n));
                }
            }
            let corrupt = s.corrupt_next > 0 && len > 0;
            if corrupt {
                s.corrupt_next -= 1;
            }
            let stall_at = (s.stall_next > 0).then(|| {
                s.stall_next -= 1;
                stall_point(len)
            });
            BodyFaults {
                truncate_at,
                corrupt,
                stall_at,
                rate: s.rate,
                drip: s.drip,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_knobs_are_consumed() {
        let k = Knobs::default();
        k.truncate_next(10);
        k.corrupt_next(1);
        k.stall_next(1);
        let first = k.plan_body(100);
        assert_eq!(first.truncate_at, Some(10));
        assert!(first.corrupt);
        assert_eq!(first.stall_at, Some(50));
        assert_eq!(k.plan_body(100), BodyFaults::default());
        // Truncation lands inside short bodies.
        k.truncate_next(1000);
        assert_eq!(k.plan_body(5).truncate_at, Some(4));
    }

    #[test]
    fn every_nth_and_statuses() {
        let k = Knobs::default();
        k.truncate_every(3, 7);
        let cut: Vec<bool> = (0..6)
            .map(|_| k.plan_body(100).truncate_at.is_some())
            .collect();
        assert_eq!(cut, [false, false, true, false, false, true]);
        k.status_next(429, Some(1), 2, false);
        assert_eq!(k.take_status(true), None);
        assert_eq!(
            k.take_status(false).map(|f| (f.code, f.retry_after)),
            Some((429, Some(1)))
        );
        assert!(k.take_status(false).is_some());
        assert_eq!(k.take_status(false), None);
    }
}
