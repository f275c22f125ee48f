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
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::api::{PartPhase, Phase};

mod compile;
mod gpu;
mod snapshots;
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

const PREFIX: &str = "coldstart";

/// The registry being filled, and the name of each family registered (as exposed).
struct Families {
    registry: Registry,
    names: Vec<String>,
}

impl Families {
    fn add(&mut self, name: &str, help: &str, unit: Option<Unit>, metric: impl Metric) {
        let exposed = match &unit {
            Some(u) => format!("{PREFIX}_{name}_{}", u.as_str()),
            None => format!("{PREFIX}_{name}"),
        };
        self.names.push(exposed);
        match unit {
            Some(u) => self.registry.register_with_unit(name, help, u, metric),
            None => self.registry.register(name, help, metric),
        }
    }
}

/// Every metric family the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    names: Vec<String>,
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
    last_pass: Gauge<f64, AtomicU64>,
    node_warm: Histogram,
    startup_taint: Gauge,
    deadline_exceeded: Gauge,
    compile: compile::CompileFamilies,
    snapshots: snapshots::SnapshotFamilies,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `coldstart_` prefix.
    pub fn new() -> Self {
        let mut families = Families {
            registry: Registry::with_prefix(PREFIX),
            names: Vec::new(),
        };
        let model_phase = Family::<ModelPhaseLabels, Gauge>::default();
        families.add(
            "model_phase",
            "1 for the model's current overall phase on this node, 0 for the others",
            None,
            model_phase.clone(),
        );
        let part_phase = Family::<PartPhaseLabels, Gauge>::default();
        families.add(
            "part_phase",
            "1 for the current phase of a model's image or weights part, 0 for the others",
            None,
            part_phase.clone(),
        );
        let transferred = Family::<PartLabels, Counter>::default();
        families.add(
            "transferred",
            "Bytes pulled (image) or downloaded (weights) by this agent",
            Some(Unit::Bytes),
            transferred.clone(),
        );
        let rate = Family::<PartLabels, Gauge<f64, AtomicU64>>::default();
        families.add(
            "transfer_rate",
            "Recent transfer rate of a part in progress",
            Some(Unit::Other("bytes_per_second".into())),
            rate.clone(),
        );
        // 1 s to ~4.5 h: a 140 GB model on a slow link takes hours.
        let part_duration = Family::<DurationLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(1.0, 2.0, 15))) as fn() -> Histogram,
        );
        families.add(
            "part_duration",
            "Time to make a part Ready (or to fail it), by part and outcome",
            Some(Unit::Seconds),
            part_duration.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        families.add(
            "errors",
            "Errors by source port and kind (the error's stable metric label)",
            None,
            errors.clone(),
        );
        let passes = Family::<OutcomeLabels, Counter>::default();
        families.add(
            "reconcile_passes",
            "Reconcile passes finished, by outcome",
            None,
            passes.clone(),
        );
        let pass_duration = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        families.add(
            "reconcile_duration",
            "Time one reconcile pass took",
            Some(Unit::Seconds),
            pass_duration.clone(),
        );
        families.add(
            "build",
            "The agent's version",
            None,
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let gpu_healthy = Family::<GpuLabels, Gauge>::default();
        families.add(
            "gpu_healthy",
            "1 when a GPU (by NVML index; `all`: the node's verdict) is healthy, else 0",
            None,
            gpu_healthy.clone(),
        );
        let gpu_temperature = Family::<GpuLabels, Gauge>::default();
        families.add(
            "gpu_temperature",
            "GPU core temperature",
            Some(Unit::Celsius),
            gpu_temperature.clone(),
        );
        let gpu_memory_used = Family::<GpuLabels, Gauge>::default();
        families.add(
            "gpu_memory_used",
            "GPU memory in use",
            Some(Unit::Bytes),
            gpu_memory_used.clone(),
        );
        let gpu_xids = Family::<XidLabels, Counter>::default();
        families.add(
            "gpu_xid_events",
            "Critical XID events seen since the agent started, by GPU and XID (0: unknown)",
            None,
            gpu_xids.clone(),
        );
        let last_pass = Gauge::<f64, AtomicU64>::default();
        families.add(
            "last_pass_timestamp",
            "When the last reconcile pass finished (Unix time): the agent's heartbeat",
            Some(Unit::Seconds),
            last_pass.clone(),
        );
        // 10 s to ~5.7 h, like a part's duration: a node warms in minutes to hours.
        let node_warm = Histogram::new(exponential_buckets(10.0, 2.0, 12));
        families.add(
            "node_warm",
            "Time from the node's creation to the removal of its startup taint (observed once)",
            Some(Unit::Seconds),
            node_warm.clone(),
        );
        let startup_taint = Gauge::default();
        families.add(
            "startup_taint",
            "1 while the node carries the startup taint (cluster mode), else 0",
            None,
            startup_taint.clone(),
        );
        let deadline_exceeded = Gauge::default();
        families.add(
            "warming_deadline_exceeded",
            "1 while the node is past its warming deadline with the startup taint on, else 0",
            None,
            deadline_exceeded.clone(),
        );
        let compile = compile::CompileFamilies::register(&mut families);
        let snapshots = snapshots::SnapshotFamilies::register(&mut families);
        Metrics {
            compile,
            snapshots,
            registry: families.registry,
            names: families.names,
            last_pass,
            node_warm,
            startup_taint,
            deadline_exceeded,
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

    /// Records when the last pass finished, the heartbeat that tells a live agent from a stale
    /// one. The loop passes the wall clock; a time before 1970 reads as 0.
    pub fn set_last_pass(&self, at: std::time::SystemTime) {
        let unix = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_pass.set(unix);
    }

    /// Records the time from the node's creation to the removal of its startup taint; the
    /// cluster pass calls it once, when it removes the taint.
    pub fn observe_node_warm(&self, seconds: f64) {
        self.node_warm.observe(seconds);
    }

    /// Whether the node carries the startup taint now.
    pub fn set_startup_taint(&self, on: bool) {
        self.startup_taint.set(i64::from(on));
    }

    /// Whether the node is past its warming deadline, still tainted.
    pub fn set_warming_deadline_exceeded(&self, late: bool) {
        self.deadline_exceeded.set(i64::from(late));
    }

    /// The name of every registered family as exposed (prefix and unit included, without the
    /// `_total`, `_info`, `_bucket`, `_sum`, `_count` suffixes of its samples), in registration
    /// order. A family appears in [`Metrics::encode`] only once it has a series; this list is how
    /// a checker knows them all.
    pub fn family_names(&self) -> &[String] {
        &self.names
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
