//! The one exponential backoff of the agent: every retry (Hub requests, transfers, pulls, the
//! warmer's failed parts) waits `min * 2^n`, capped at `max`.

use std::time::Duration;

/// An exponential backoff: `min` after the first failure, doubling per failure, at most `max`.
/// Built only through [`Backoff::try_new`], so `min <= max` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

/// A backoff whose shortest wait is longer than its longest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backoff minimum {min:?} is longer than its maximum {max:?}")]
pub struct InvalidBackoff {
    /// The shortest wait asked for.
    pub min: Duration,
    /// The longest wait asked for.
    pub max: Duration,
}

impl Backoff {
    /// The agent's default for failed pulls and syncs: 10 s, doubling to 10 min.
    pub const DEFAULT: Backoff =
        Backoff::constant(Duration::from_secs(10), Duration::from_secs(600));

    /// A backoff fixed in the code (a `const`): `min > max` fails the build.
    pub const fn constant(min: Duration, max: Duration) -> Backoff {
        assert!(min.as_nanos() <= max.as_nanos(), "backoff min above max");
        Backoff { min, max }
    }

    /// A backoff from `min` to `max`; refused when `min > max`.
    pub fn try_new(min: Duration, max: Duration) -> Result<Backoff, InvalidBackoff> {
        if min > max {
            return Err(InvalidBackoff { min, max });
        }
        Ok(Backoff { min, max })
    }

    /// The first wait.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest wait (also the cap on a server's `Retry-After`).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The wait after `iterations` earlier waits: `min * 2^iterations`, saturating, capped at
    /// `max`.
    pub fn base(&self, iterations: u32) -> Duration {
        let factor = 1u32.checked_shl(iterations.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The wait after the `failures`-th failure in a row: `min` after the first; none when
    /// nothing failed (a part seen failing by observation alone, e.g. containerd down).
    pub fn after_failures(&self, failures: u32) -> Duration {
        match failures {
            0 => Duration::ZERO,
            n => self.base(n - 1),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_doubles_from_min_and_stops_at_max() {
        let b = Backoff::try_new(secs(10), secs(600)).unwrap();
        let waits: Vec<u64> = (0..9).map(|n| b.base(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(
            b.base(u32::MAX),
            secs(600),
            "saturates instead of overflowing"
        );
        assert_eq!(b.after_failures(1), secs(10));
        assert_eq!(b.after_failures(0), Duration::ZERO);
    }

    #[test]
    fn a_backoff_whose_min_exceeds_its_max_is_refused() {
        assert_eq!(
            Backoff::try_new(secs(2), secs(1)),
            Err(InvalidBackoff {
                min: secs(2),
                max: secs(1)
            })
        );
        assert!(Backoff::try_new(secs(1), secs(1)).is_ok());
        assert_eq!(
            Backoff::try_new(Duration::ZERO, Duration::ZERO)
                .unwrap()
                .base(5),
            Duration::ZERO
        );
    }
}
