//! The agent's Prometheus metrics, all prefixed `coldstart_`, with units in their names and few,
//! stable label values (model names, `image`/`weights`, phases, error kinds from the ports'
//! `metric_label()`). Owned by one [`Metrics`] value that the loop and the admin server share.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::api::{PartPhase, Phase};

#[cfg(test)]
mod tests;

/// Which part of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The serving image in containerd.
    Image,
    /// The weights in the Hub cache.
    Weights,
}

impl Part {
    fn label(self) -> &'static str {
        match self {
            Part::Image => "image",
            Part::Weights => "weights",
        }
    }
}

/// Which port an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// containerd and registries.
    Images,
    /// The Hub and the weights cache.
    Weights,
    /// The Kubernetes API.
    Node,
    /// The agent's own loop.
    Agent,
}

impl ErrorSource {
    fn label(self) -> &'static str {
        match self {
            ErrorSource::Images => "images",
            ErrorSource::Weights => "weights",
            ErrorSource::Node => "node",
            ErrorSource::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelPhaseLabels {
    model: String,
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartPhaseLabels {
    model: String,
    part: &'static str,
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    model: String,
    part: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    part: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    source: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    /// NVML index, or `all` for the node's verdict.
    gpu: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct XidLabels {
    gpu: String,
    xid: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

const PHASES: [Phase; 4] = [Phase::Pending, Phase::Warming, Phase::Ready, Phase::Failed];
const PART_PHASES: [PartPhase; 6] = [
    PartPhase::Pending,
    PartPhase::Pulling,
    PartPhase::Syncing,
    PartPhase::Verifying,
    PartPhase::Ready,
    PartPhase::Failed,
];

fn phase_label(p: Phase) -> &'static str {
    match p {
        Phase::Pending => "Pending",
        Phase::Warming => "Warming",
        Phase::Ready => "Ready",
        Phase::Failed => "Failed",
    }
}

fn part_phase_label(p: PartPhase) -> &'static str {
    match p {
        PartPhase::Pending => "Pending",
        PartPhase::Pulling => "Pulling",
        PartPhase::Syncing => "Syncing",
        PartPhase::Verifying => "Verifying",
        PartPhase::Ready => "Ready",
        PartPhase::Failed => "Failed",
    }
}

/// Every metric family the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    model_phase: Family<ModelPhaseLabels, Gauge>,
    part_phase: Family<PartPhaseLabels, Gauge>,
    transferred: Family<PartLabels, Counter>,
    rate: Family<PartLabels, Gauge<f64, AtomicU64>>,
    part_duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    passes: Family<OutcomeLabels, Counter>,
    pass_duration: Histogram,
    gpu_healthy: Family<GpuLabels, Gauge>,
    gpu_temperature: Family<GpuLabels, Gauge>,
    gpu_memory_used: Family<GpuLabels, Gauge>,
    gpu_xids: Family<XidLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `coldstart_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("coldstart");
        let model_phase = Family::<ModelPhaseLabels, Gauge>::default();
        registry.register(
            "model_phase",
            "1 for the model's current overall phase on this node, 0 for the others",
            model_phase.clone(),
        );
        let part_phase = Family::<PartPhaseLabels, Gauge>::default();
        registry.register(
            "part_phase",
            "1 for the current phase of a model's image or weights part, 0 for the others",
            part_phase.clone(),
        );
        let transferred = Family::<PartLabels, Counter>::default();
        registry.register_with_unit(
            "transferred",
            "Bytes pulled (image) or downloaded (weights) by this agent",
            Unit::Bytes,
            transferred.clone(),
        );
        let rate = Family::<PartLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "transfer_rate",
            "Recent transfer rate of a part in progress",
            Unit::Other("bytes_per_second".into()),
            rate.clone(),
        );
        // 1 s to ~4.5 h: a 140 GB model on a slow link takes hours.
        let part_duration = Family::<DurationLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(1.0, 2.0, 15))) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "part_duration",
            "Time to make a part Ready (or to fail it), by part and outcome",
            Unit::Seconds,
            part_duration.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Errors by source port and kind (the error's stable metric label)",
            errors.clone(),
        );
        let passes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconcile_passes",
            "Reconcile passes finished, by outcome",
            passes.clone(),
        );
        let pass_duration = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile pass took",
            Unit::Seconds,
            pass_duration.clone(),
        );
        registry.register(
            "build",
            "The agent's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let gpu_healthy = Family::<GpuLabels, Gauge>::default();
        registry.register(
            "gpu_healthy",
            "1 when a GPU (by NVML index; `all`: the node's verdict) is healthy, else 0",
            gpu_healthy.clone(),
        );
        let gpu_temperature = Family::<GpuLabels, Gauge>::default();
        registry.register_with_unit(
            "gpu_temperature",
            "GPU core temperature",
            Unit::Celsius,
            gpu_temperature.clone(),
        );
        let gpu_memory_used = Family::<GpuLabels, Gauge>::default();
        registry.register_with_unit(
            "gpu_memory_used",
            "GPU memory in use",
            Unit::Bytes,
            gpu_memory_used.clone(),
        );
        let gpu_xids = Family::<XidLabels, Counter>::default();
        registry.register(
            "gpu_xid_events",
            "Critical XID events seen since the agent started, by GPU and XID (0: unknown)",
            gpu_xids.clone(),
        );
        Metrics {
            registry,
            model_phase,
            part_phase,
            transferred,
            rate,
            part_duration,
            errors,
            passes,
            pass_duration,
            gpu_healthy,
            gpu_temperature,
            gpu_memory_used,
            gpu_xids,
        }
    }

    /// Records a GPU report: health per device and for the node, temperature, memory, XIDs.
    pub fn gpu(&self, report: &crate::gpu::GpuReport) {
        let all = GpuLabels { gpu: "all".into() };
        self.gpu_healthy
            .get_or_create(&all)
            .set(i64::from(report.healthy));
        for d in &report.devices {
            let labels = GpuLabels {
                gpu: d.info.index.to_string(),
            };
            self.gpu_healthy
                .get_or_create(&labels)
                .set(i64::from(d.healthy));
            if let Some(t) = d.info.temperature_celsius {
                self.gpu_temperature
                    .get_or_create(&labels)
                    .set(i64::from(t));
            }
            let used = i64::try_from(d.info.memory_used_bytes).unwrap_or(i64::MAX);
            self.gpu_memory_used.get_or_create(&labels).set(used);
            for (xid, count) in &d.xids {
                let labels = XidLabels {
                    gpu: labels.gpu.clone(),
                    xid: xid.to_string(),
                };
                // The report holds totals since the start: add what the counter lacks.
                let counter = self.gpu_xids.get_or_create(&labels);
                let seen = counter.get();
                if *count > seen {
                    counter.inc_by(count - seen);
                }
            }
        }
    }

    /// Sets a model's overall phase (1 for `phase`, 0 for the others).
    pub fn set_model_phase(&self, model: &str, phase: Phase) {
        for p in PHASES {
            let labels = ModelPhaseLabels {
                model: model.to_string(),
                phase: phase_label(p),
            };
            self.model_phase
                .get_or_create(&labels)
                .set(i64::from(p == phase));
        }
    }

    /// Sets a part's phase (1 for `phase`, 0 for the others).
    pub fn set_part_phase(&self, model: &str, part: Part, phase: PartPhase) {
        for p in PART_PHASES {
            let labels = PartPhaseLabels {
                model: model.to_string(),
                part: part.label(),
                phase: part_phase_label(p),
            };
            self.part_phase
                .get_or_create(&labels)
                .set(i64::from(p == phase));
        }
    }

    /// Drops every series of a model no longer selected for this node.
    pub fn forget_model(&self, model: &str) {
        for p in PHASES {
            self.model_phase.remove(&ModelPhaseLabels {
                model: model.to_string(),
                phase: phase_label(p),
            });
        }
        for part in [Part::Image, Part::Weights] {
            for p in PART_PHASES {
                self.part_phase.remove(&PartPhaseLabels {
                    model: model.to_string(),
                    part: part.label(),
                    phase: part_phase_label(p),
                });
            }
            let labels = PartLabels {
                model: model.to_string(),
                part: part.label(),
            };
            self.transferred.remove(&labels);
            self.rate.remove(&labels);
        }
    }

    /// Counts bytes moved for a part.
    pub fn add_bytes(&self, model: &str, part: Part, bytes: u64) {
        let labels = PartLabels {
            model: model.to_string(),
            part: part.label(),
        };
        self.transferred.get_or_create(&labels).inc_by(bytes);
    }

    /// Sets a part's current transfer rate.
    pub fn set_rate(&self, model: &str, part: Part, bytes_per_second: f64) {
        let labels = PartLabels {
            model: model.to_string(),
            part: part.label(),
        };
        self.rate.get_or_create(&labels).set(bytes_per_second);
    }

    /// Records how long a part took to become Ready (`ok`) or to fail.
    pub fn observe_part(&self, part: Part, ok: bool, seconds: f64) {
        let labels = DurationLabels {
            part: part.label(),
            outcome: if ok { "ready" } else { "failed" },
        };
        self.part_duration.get_or_create(&labels).observe(seconds);
    }

    /// Counts one error of `kind` (a port error's `metric_label()`) from `source`.
    pub fn error(&self, source: ErrorSource, kind: &'static str) {
        let labels = ErrorLabels {
            source: source.label(),
            kind,
        };
        self.errors.get_or_create(&labels).inc();
    }

    /// Counts an images-port error.
    pub fn image_error(&self, e: &crate::images::Error) {
        self.error(ErrorSource::Images, e.metric_label());
    }

    /// Counts a weights-port error.
    pub fn weights_error(&self, e: &crate::weights::Error) {
        self.error(ErrorSource::Weights, e.metric_label());
    }

    /// Records one finished reconcile pass.
    pub fn pass(&self, ok: bool, seconds: f64) {
        let labels = OutcomeLabels {
            outcome: if ok { "ok" } else { "error" },
        };
        self.passes.get_or_create(&labels).inc();
        self.pass_duration.observe(seconds);
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
