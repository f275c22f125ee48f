//! Liveness of the agent's loop, for `/readyz`. Readiness means "the loop keeps finishing
//! passes", never "the node is warm": a DaemonSet rollout waits for every pod to be ready, and a
//! node that takes an hour to sync 140 GB must not stall it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Shared record of the loop's last finished pass. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    last_pass: Option<Instant>,
    stopping: bool,
}

/// The answer `/readyz` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The loop finished a pass recently.
    Ready,
    /// Not ready, and why (one line).
    NotReady(String),
}

impl Heartbeat {
    /// A heartbeat with no pass yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a finished pass (whatever its outcome: errors are retried by the loop and
    /// counted in metrics; a loop that keeps passing is alive).
    pub fn beat(&self, at: Instant) {
        self.with(|s| s.last_pass = Some(at));
    }

    /// Marks the agent as shutting down: not ready from now on.
    pub fn stopping(&self) {
        self.with(|s| s.stopping = true);
    }

    /// Ready when the last pass finished within `timeout` of `now`.
    pub fn readiness(&self, now: Instant, timeout: Duration) -> Readiness {
        let (last, stopping) = self.with(|s| (s.last_pass, s.stopping));
        if stopping {
            return Readiness::NotReady("shutting down".into());
        }
        match last {
            None => Readiness::NotReady("no reconcile pass has finished yet".into()),
            Some(at) => {
                let age = now.saturating_duration_since(at);
                if age <= timeout {
                    Readiness::Ready
                } else {
                    Readiness::NotReady(format!(
                        "last reconcile pass finished {}s ago (limit {}s)",
                        age.as_secs(),
                        timeout.as_secs()
                    ))
                }
            }
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update of two plain fields.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_only_while_passes_are_recent() {
        let hb = Heartbeat::new();
        let timeout = Duration::from_secs(30);
        assert!(matches!(
            hb.readiness(Instant::now(), timeout),
            Readiness::NotReady(_)
        ));
        hb.beat(Instant::now());
        assert_eq!(hb.readiness(Instant::now(), timeout), Readiness::Ready);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(hb.readiness(Instant::now(), timeout), Readiness::Ready);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            hb.readiness(Instant::now(), timeout),
            Readiness::NotReady("last reconcile pass finished 31s ago (limit 30s)".into())
        );
        hb.beat(Instant::now());
        assert_eq!(hb.readiness(Instant::now(), timeout), Readiness::Ready);
        hb.stopping();
        assert_eq!(
            hb.readiness(Instant::now(), timeout),
            Readiness::NotReady("shutting down".into())
        );
    }
}
