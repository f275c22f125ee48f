//! The agent's loop: every tick, one reconcile pass (observe through the ports, plan, execute,
//! report), then a heartbeat for `/readyz` and the pass metrics. The loop is the only place with
//! side effects and owns retries and backoff; decisions belong to the pure planner.
//!
//! The daemon runs one of two passes: `cluster::Cluster` (desired state from the API server) or
//! `standalone::Standalone` (desired state from a local file).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::health::Heartbeat;
use crate::metrics::{ErrorSource, Metrics};

#[cfg(test)]
mod tests;

/// Why a pass failed. Each variant wraps one port's error; the loop retries on the next tick.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The images port (containerd, registries).
    #[error("images port")]
    Images(#[source] crate::images::Error),
    /// The weights port (the Hub, the cache).
    #[error("weights port")]
    Weights(#[source] crate::weights::Error),
    /// The node surface in the Kubernetes API.
    #[error("node surface")]
    Node(#[source] crate::node::Error),
    /// Standalone mode's status file cannot be written.
    #[error("status file")]
    StatusFile(#[source] crate::fsx::Error),
    /// A watch has not listed once yet: nothing is decided from a partial view.
    #[error("waiting for the first list of {0}")]
    NotSynced(&'static str),
    /// This node is not in the API server (wrong node name, or the node was deleted).
    #[error("node {0} not found in the API server")]
    NodeMissing(String),
    /// The desired state (the standalone file) cannot be used; the whole cause on one line.
    #[error("desired state: {0}")]
    Desired(String),
}

impl Error {
    /// The port the error came from and its stable label.
    pub fn metric_labels(&self) -> (ErrorSource, &'static str) {
        match self {
            Error::Images(e) => (ErrorSource::Images, e.metric_label()),
            Error::Weights(e) => (ErrorSource::Weights, e.metric_label()),
            Error::Node(e) => (ErrorSource::Node, e.metric_label()),
            Error::StatusFile(e) => (ErrorSource::Agent, e.metric_label()),
            Error::NotSynced(_) => (ErrorSource::Node, "not_synced"),
            Error::NodeMissing(_) => (ErrorSource::Node, "node_missing"),
            Error::Desired(_) => (ErrorSource::Agent, "desired_state"),
        }
    }
}

/// One reconcile pass. Implementations observe through the ports, call the planner and execute
/// its actions; they return early when `shutdown` is cancelled, at a point where nothing is
/// half-published (the ports publish atomically: blobs, then a rename).
#[allow(async_fn_in_trait)]
pub trait Reconcile {
    /// Runs one pass.
    async fn reconcile(&mut self, shutdown: &CancellationToken) -> Result<(), Error>;

    /// Stops background work (transfers, watches) after the last pass.
    async fn shutdown(&mut self) {}
}

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Time between the starts of two passes.
    pub tick_interval: Duration,
    /// Notified when something changed (a watch event, a finished transfer): the next pass
    /// starts early, but never sooner than `min_interval` after the previous one.
    pub wake: Arc<Notify>,
    /// Shortest time between the starts of two passes.
    pub min_interval: Duration,
}

impl LoopConfig {
    /// Ticks every `tick_interval`, woken early at most once a second.
    pub fn new(tick_interval: Duration) -> LoopConfig {
        LoopConfig {
            tick_interval,
            wake: Arc::new(Notify::new()),
            min_interval: Duration::from_secs(1),
        }
    }
}

/// Runs passes every `tick_interval` until `shutdown` is cancelled. A pass in progress when
/// the token is cancelled is allowed to finish (the caller bounds the wait).
pub async fn run<R: Reconcile>(
    mut reconciler: R,
    cfg: LoopConfig,
    heartbeat: Heartbeat,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(cfg.tick_interval);
    // A pass longer than the interval is followed by the next one at once, not by a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    info!(
        interval_s = cfg.tick_interval.as_secs(),
        "agent loop started"
    );
    let mut last: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
            () = cfg.wake.notified() => {
                if let Some(at) = last {
                    let gap = cfg.min_interval.saturating_sub(at.elapsed());
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(gap) => {}
                    }
                }
            }
        }
        let started = Instant::now();
        last = Some(started);
        let outcome = reconciler.reconcile(&shutdown).await;
        let elapsed = started.elapsed().as_secs_f64();
        metrics.pass(outcome.is_ok(), elapsed);
        if let Err(e) = &outcome {
            let (source, kind) = e.metric_labels();
            metrics.error(source, kind);
            let error = crate::errors::chain(e);
            warn!(%error, kind, "reconcile pass failed; retrying next tick");
        }
        heartbeat.beat(Instant::now());
        // The loop is the shell: the one place that reads the wall clock, for the heartbeat
        // metric that tells a stale agent from a live one.
        metrics.set_last_pass(std::time::SystemTime::now());
    }
    heartbeat.stopping();
    reconciler.shutdown().await;
    info!("agent loop stopped");
}
