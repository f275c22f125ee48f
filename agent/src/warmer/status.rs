//! Writes what the warmer knows into the planner's status: bytes, rates and resolved versions
//! of running tasks, results and messages of finished ones, transition times carried over
//! where a phase did not change; and the per-model phase metrics.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::Warmer;
use super::records::Record;
use super::tasks::{Running, lock};
use crate::api::{ColdModel, ColdNodeStatus, PartPhase, PartStatus, name_of};
use crate::metrics::Part;

impl<I, W> Warmer<I, W> {
    /// Writes progress, resolved versions, rates, messages and timestamps into `status` (the
    /// planner's), carrying transition times over from `current` where a phase did not change.
    pub(super) fn report_progress(
        &self,
        status: &mut ColdNodeStatus,
        current: Option<&ColdNodeStatus>,
        models: &[ColdModel],
        now: Timestamp,
    ) {
        for ms in &mut status.models {
            let old = current.and_then(|c| c.models.iter().find(|o| o.name == ms.name));
            let model = models.iter().find(|m| name_of(m) == ms.name);
            if let (Some(part), Some(image)) = (
                ms.image.as_mut(),
                model.and_then(|m| m.spec.image.as_deref()),
            ) {
                let old = old.and_then(|o| o.image.as_ref());
                let (run, rec) = (self.pulls.get(image), self.image_records.get(image));
                self.write_part(part, Part::Image, run, rec, old, now);
                if part.phase == PartPhase::Ready && part.resolved.is_none() {
                    part.resolved = self.present_digests.get(image).cloned();
                }
                self.metrics
                    .set_part_phase(&ms.name, Part::Image, part.phase);
            }
            if let Some(part) = ms.weights.as_mut() {
                let old = old.and_then(|o| o.weights.as_ref());
                let (run, rec) = (self.syncs.get(&ms.name), self.weight_records.get(&ms.name));
                self.write_part(part, Part::Weights, run, rec, old, now);
                self.metrics
                    .set_part_phase(&ms.name, Part::Weights, part.phase);
            }
            self.metrics.set_model_phase(&ms.name, ms.phase);
        }
    }

    /// One part: a running task's live bytes (unless the part is Ready from an earlier
    /// success: a periodic re-sync shows the verified bytes), else the last attempt's result.
    fn write_part(
        &self,
        part: &mut PartStatus,
        kind: Part,
        running: Option<&Running>,
        record: Option<&Record>,
        old: Option<&PartStatus>,
        now: Timestamp,
    ) {
        let ready = part.phase == PartPhase::Ready;
        let ok = record.and_then(|r| r.ok.as_ref()).filter(|_| ready);
        if let (Some(t), None) = (running, ok) {
            let mut p = lock(&t.progress);
            p.sample_rate(Instant::now());
            let moved = p.uncounted();
            self.metrics.add_bytes(&t.model, kind, moved);
            if let Some(rate) = p.rate {
                self.metrics.set_rate(&t.model, kind, rate as f64);
            }
            part.bytes_done = p.done;
            part.bytes_total = p.total;
            part.bytes_per_second = p.rate;
            part.resolved = p.resolved.clone();
            part.started_at = Some(Time(t.started));
        } else if let Some(ok) = ok {
            part.started_at = Some(Time(ok.started));
            part.resolved = ok.value.resolved.clone();
            part.bytes_done = ok.value.bytes;
            part.bytes_total = Some(ok.value.bytes);
        } else if let Some((failed, _)) = record.and_then(|r| r.failed.as_ref()) {
            part.started_at = Some(Time(failed.started));
            part.message = Some(failed.value.message.clone());
            if part.reason.is_none() {
                part.reason = Some(failed.value.kind.to_string());
            }
        } else if let Some(ok) = record.and_then(|r| r.ok.as_ref()) {
            // Succeeded before, not Ready now (the snapshot went): say what it resolved to.
            part.started_at = Some(Time(ok.started));
            part.resolved = ok.value.resolved.clone();
        }
        part.last_transition_time = match old {
            Some(o) if o.phase == part.phase => o.last_transition_time.clone(),
            _ => Some(Time(now)),
        };
    }
}
