//! The minimum-rate rule of one connection: fewer than `floor` bytes over a `window` means the
//! connection is too slow (a drip of a byte every few seconds keeps the read timeout quiet for
//! days). Pure: the caller passes the time, so paused-time tests drive it.

use std::time::Duration;

use tokio::time::Instant;

/// A window that ended below the floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shortfall {
    /// Bytes received in the window.
    pub bytes: u64,
    /// The floor.
    pub floor: u64,
    /// The window.
    pub window: Duration,
}

/// Bytes received in the current window of one connection.
#[derive(Debug, Clone)]
pub struct RateFloor {
    floor: u64,
    window: Duration,
    start: Instant,
    bytes: u64,
}

impl RateFloor {
    /// A floor of `floor` bytes per `window`, the first window starting `now`; `None` when
    /// either is zero (no floor).
    pub fn new(floor: u64, window: Duration, now: Instant) -> Option<RateFloor> {
        (floor > 0 && !window.is_zero()).then_some(RateFloor {
            floor,
            window,
            start: now,
            bytes: 0,
        })
    }

    /// When the current window ends: the caller checks in then, bytes or not.
    pub fn deadline(&self) -> Instant {
        self.start + self.window
    }

    /// Records `n` bytes received at `now` (0 when the caller only checks in). When a window
    /// has ended, it must have reached the floor; the next window starts at `now`.
    pub fn observe(&mut self, n: u64, now: Instant) -> Result<(), Shortfall> {
        if now >= self.deadline() {
            if self.bytes < self.floor {
                return Err(Shortfall {
                    bytes: self.bytes,
                    floor: self.floor,
                    window: self.window,
                });
            }
            self.start = now;
            self.bytes = 0;
        }
        self.bytes += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_below_the_floor_fail() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(RateFloor::new(0, s(60), t0).is_none());
        assert!(RateFloor::new(10, s(0), t0).is_none());
        let mut f = RateFloor::new(100, s(60), t0).unwrap();
        assert_eq!(f.deadline(), t0 + s(60));
        f.observe(60, t0 + s(10)).unwrap();
        f.observe(40, t0 + s(59)).unwrap();
        // Window 1 reached the floor: window 2 starts at 61 s with these 5 bytes.
        f.observe(5, t0 + s(61)).unwrap();
        assert_eq!(f.deadline(), t0 + s(121));
        f.observe(1, t0 + s(100)).unwrap();
        let short = f.observe(0, t0 + s(121)).unwrap_err();
        assert_eq!(
            short,
            Shortfall {
                bytes: 6,
                floor: 100,
                window: s(60)
            }
        );
    }
}
