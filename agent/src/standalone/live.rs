//! What the pass shares with the socket API, and the live view built from it: the last pass's
//! status with the bytes of running tasks laid over, so `coldctl --node status` and `--wait`
//! see progress at the tasks' sampling rate instead of once a pass.

use std::sync::{Arc, Mutex, PoisonError};

use crate::api::{ColdNodeStatus, PartPhase, PartStatus};
use crate::warmer::{LiveTarget, LiveTask};

use super::models::NamedModel;

/// State the pass writes after each pass and the socket API reads.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// The last pass's status.
    pub status: Arc<Mutex<ColdNodeStatus>>,
    /// The models the last pass applied: the last good file's, while the file on disk is bad.
    pub in_force: Arc<Mutex<Vec<NamedModel>>>,
    /// The tasks running at the end of the last pass.
    pub live: Arc<Mutex<Vec<LiveTask>>>,
}

impl Shared {
    /// Records one pass's results.
    pub fn publish(&self, status: ColdNodeStatus, in_force: Vec<NamedModel>, live: Vec<LiveTask>) {
        *lock(&self.status) = status;
        *lock(&self.in_force) = in_force;
        *lock(&self.live) = live;
    }

    /// The last status with the running tasks' bytes now; `models` names each model's image.
    pub fn status_now(&self, models: &[NamedModel]) -> ColdNodeStatus {
        let mut status = lock(&self.status).clone();
        let live = lock(&self.live).clone();
        overlay(&mut status, models, &live);
        status
    }

    /// The models the last pass applied.
    pub fn in_force(&self) -> Vec<NamedModel> {
        lock(&self.in_force).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the bytes of each running task into the part it fills. A Ready part keeps its
/// verified bytes (a periodic re-sync is no progress of the model), as the pass does.
pub fn overlay(status: &mut ColdNodeStatus, models: &[NamedModel], live: &[LiveTask]) {
    for ms in &mut status.models {
        let image = models
            .iter()
            .find(|m| m.name == ms.name)
            .and_then(|m| m.model.image.clone());
        for task in live {
            let part = match &task.target {
                LiveTarget::Weights(name) if *name == ms.name => ms.weights.as_mut(),
                LiveTarget::Image(i) if Some(i) == image.as_ref() => ms.image.as_mut(),
                _ => None,
            };
            if let Some(part) = part {
                lay_over(part, task);
            }
        }
    }
}

fn lay_over(part: &mut PartStatus, task: &LiveTask) {
    if part.phase == PartPhase::Ready {
        return;
    }
    let b = task.bytes();
    part.bytes_done = part.bytes_done.max(b.done);
    if b.total.is_some() {
        part.bytes_total = b.total;
    }
    if b.rate.is_some() {
        part.bytes_per_second = b.rate;
    }
}
