//! The `gpu` port: GPU inventory and health through NVML.
//!
//! [`Gpu`] speaks our types only ([`Inventory`], [`DeviceInfo`], [`XidEvent`]); the real client
//! ([`NvmlGpu`]) loads `libnvidia-ml.so.1` at run time through nvml-wrapper, and [`FakeGpu`] is
//! the stateful stand-in with failure knobs. [`policy::evaluate`] is the pure verdict; [`Monitor`]
//! owns the blocking XID thread and turns probes plus events into a [`GpuReport`], which
//! [`condition`] and [`status`] translate for the node surface.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::api::{CONDITION_GPU_HEALTHY, Condition, GpuDevice, GpuStatus};

mod fake;
mod nvml;
pub mod policy;
mod search;
#[cfg(test)]
mod tests;

pub use fake::FakeGpu;
pub use nvml::{DEFAULT_NVML_LIBRARY, NvmlGpu};
pub use policy::{Expected, GpusExpected, Settings, Verdict};
pub use search::{DEFAULT_SEARCH_DIRS, SearchingGpu};

/// XIDs the NVIDIA device plugin treats as application errors, not as a failing GPU.
pub const DEFAULT_XID_IGNORE: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// What NVML reports about the node.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Driver version, e.g. `550.54.15`.
    pub driver_version: String,
    /// Highest CUDA version the driver supports, e.g. `12.4`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// Devices in NVML index order.
    pub devices: Vec<DeviceInfo>,
}

/// One device: identity and the readings health depends on. `None`: not supported or not read.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// NVML index.
    pub index: u32,
    /// `GPU-...` UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Total memory.
    pub memory_total_bytes: u64,
    /// Memory in use.
    pub memory_used_bytes: u64,
    /// CUDA compute capability, `major.minor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    /// Persistence mode on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence_mode: Option<bool>,
    /// MIG mode currently enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mig_enabled: Option<bool>,
    /// PCI bus id, `00000000:18:00.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// Core temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<u32>,
    /// Clock throttle reasons, NVML's bit mask (see [`policy::throttle_names`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_reasons: Option<u64>,
    /// Volatile uncorrected (double-bit) ECC errors since the driver loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecc_volatile_uncorrected: Option<u64>,
    /// Pages waiting to be retired at the next driver reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages_pending_retirement: Option<bool>,
    /// A row remapping is pending (field 144).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_remap_pending: Option<bool>,
    /// A row remapping failed (field 145).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_remap_failure: Option<bool>,
    /// Processes holding memory on the device; `None` when NVML could not list them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<GpuProcess>>,
}

/// A process with a compute context on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuProcess {
    /// Host pid.
    pub pid: u32,
    /// Memory it holds, when NVML knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
}

/// A critical XID event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct XidEvent {
    /// Device index; `None`: NVML did not say which device.
    pub device: Option<u32>,
    /// The XID; `None`: NVML reported an unknown one (treated as critical).
    pub xid: Option<u64>,
}

/// Why the port failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The NVML library cannot be loaded (no driver on this node, or not mounted).
    #[error("cannot load the NVML library: {reason}")]
    LibraryNotFound {
        /// Path or name tried.
        library: String,
        /// The loader's message.
        reason: String,
    },
    /// An NVML call failed.
    #[error("nvml {call}: {reason}")]
    Nvml {
        /// Function, e.g. `init` or `device_count`.
        call: &'static str,
        /// NVML's message.
        reason: String,
    },
    /// XID events cannot be received on this node.
    #[error("xid events unsupported: {0}")]
    EventsUnsupported(String),
}

impl Error {
    /// Stable label for metrics and JSON output.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::LibraryNotFound { .. } => "nvml_not_found",
            Error::Nvml { .. } => "nvml",
            Error::EventsUnsupported(_) => "xid_unsupported",
        }
    }
}

/// The port: inventory and health readings, and XID events.
pub trait Gpu: Send + Sync {
    /// Reads the driver, the devices and their health readings.
    fn probe(&self) -> Result<Inventory, Error>;
    /// Blocks up to `timeout` for the next critical XID event; `Ok(None)` on timeout.
    fn wait_xid(&self, timeout: Duration) -> Result<Option<XidEvent>, Error>;
}

/// The GPU part of a pass: the verdict, the inventory it was made from, XID counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuReport {
    /// Every expected GPU present and healthy (or none expected).
    pub healthy: bool,
    /// CamelCase reason (see [`policy`]).
    pub reason: &'static str,
    /// One line for people.
    pub message: String,
    /// How many GPUs were expected.
    pub expected: u32,
    /// Driver version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// CUDA version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// Per device.
    pub devices: Vec<DeviceReport>,
    /// The XID thread's last error, when it cannot watch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xid_watch_error: Option<String>,
}

/// One device in a [`GpuReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceReport {
    /// Inventory and readings.
    #[serde(flatten)]
    pub info: DeviceInfo,
    /// Healthy by [`policy::evaluate`].
    pub healthy: bool,
    /// Why it is not healthy: a stable CamelCase reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Details for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// XID events seen since the agent started, by XID (0: unknown XID).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub xids: BTreeMap<u64, u64>,
}

/// XID events seen, with how often each was seen.
pub type XidCounts = BTreeMap<XidEvent, u64>;

/// Builds a report from one probe, the XIDs seen so far, and what is expected.
pub fn report(
    probe: &Result<Inventory, Error>,
    xids: &XidCounts,
    expected: Expected,
    idle: bool,
    settings: &Settings,
) -> GpuReport {
    let events: Vec<XidEvent> = xids.keys().copied().collect();
    let verdict = policy::evaluate(probe, &events, expected, idle, settings);
    let inventory = probe.as_ref().ok();
    let devices = inventory
        .map(|inv| inv.devices.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|info| {
            let dv = verdict.devices.iter().find(|d| d.index == info.index);
            let mut counts = BTreeMap::new();
            for (e, n) in xids
                .iter()
                .filter(|(e, _)| e.device.is_none_or(|d| d == info.index))
            {
                *counts.entry(e.xid.unwrap_or(0)).or_insert(0) += n;
            }
            DeviceReport {
                info: info.clone(),
                healthy: dv.is_none_or(|d| d.healthy),
                reason: dv.and_then(|d| d.reason),
                message: dv.and_then(|d| d.message.clone()),
                xids: counts,
            }
        })
        .collect();
    GpuReport {
        healthy: verdict.healthy,
        reason: verdict.reason,
        message: verdict.message,
        expected: verdict.expected,
        driver_version: inventory.map(|i| i.driver_version.clone()),
        cuda_version: inventory.and_then(|i| i.cuda_version.clone()),
        devices,
        xid_watch_error: None,
    }
}

/// The `ColdstartGPUHealthy` node condition for a report.
pub fn condition(report: &GpuReport) -> Condition {
    Condition {
        type_: CONDITION_GPU_HEALTHY,
        status: report.healthy,
        reason: report.reason,
        message: report.message.clone(),
    }
}

/// The GPU part of the ColdNode status for a report.
pub fn status(report: &GpuReport) -> GpuStatus {
    GpuStatus {
        healthy: report.healthy,
        // NVMLNotFound or NoGPUExpected say something even when healthy.
        reason: (report.reason != policy::GPU_HEALTHY).then(|| report.reason.to_string()),
        message: Some(report.message.clone()),
        expected: Some(report.expected),
        driver_version: report.driver_version.clone(),
        cuda_version: report.cuda_version.clone(),
        devices: report
            .devices
            .iter()
            .map(|d| GpuDevice {
                index: d.info.index,
                uuid: d.info.uuid.clone(),
                name: Some(d.info.name.clone()),
                memory_bytes: Some(d.info.memory_total_bytes),
                healthy: d.healthy,
                reason: d.reason.map(str::to_string),
                pci_bus_id: d.info.pci_bus_id.clone(),
                compute_capability: d.info.compute_capability.clone(),
                persistence_mode: d.info.persistence_mode,
                mig_enabled: d.info.mig_enabled,
                temperature_celsius: d.info.temperature_celsius,
            })
            .collect(),
    }
}

/// Owns the XID thread and makes reports: `snapshot` is blocking (NVML calls), so an async
/// caller runs it on the blocking pool. Dropping the monitor stops and joins the thread.
pub struct Monitor {
    gpu: Arc<dyn Gpu>,
    settings: Settings,
    seen: Arc<Mutex<Seen>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Seen {
    xids: XidCounts,
    error: Option<String>,
}

/// How long one wait for an XID event blocks: also how quickly the thread sees a stop.
const XID_WAIT: Duration = Duration::from_millis(500);
/// Pause before the XID thread tries again after an error.
const XID_RETRY: Duration = Duration::from_secs(30);

impl Monitor {
    /// Starts the XID thread (`coldstart-xid`) on `gpu`.
    pub fn start(gpu: Arc<dyn Gpu>, settings: Settings) -> std::io::Result<Monitor> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("coldstart-xid".into())
            .spawn({
                let (gpu, seen) = (gpu.clone(), seen.clone());
                move || watch_xids(&*gpu, &seen, &stopped)
            })?;
        Ok(Monitor {
            gpu,
            settings,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Probes the GPUs and judges them with every XID seen since the start. `capacity` is the
    /// node's `nvidia.com/gpu` capacity when known; `idle`: no workload should hold GPU memory.
    pub fn snapshot(&self, capacity: Option<u32>, idle: bool) -> GpuReport {
        let probe = self.gpu.probe();
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let expected = Expected::resolve(self.settings.gpus_expected, capacity);
        let mut r = report(&probe, &seen.xids, expected, idle, &self.settings);
        r.xid_watch_error = seen.error.clone();
        r
    }

    /// [`Monitor::snapshot`] on the blocking pool (NVML calls block), for async callers.
    pub async fn snapshot_async(self: &Arc<Self>, capacity: Option<u32>, idle: bool) -> GpuReport {
        let monitor = self.clone();
        match tokio::task::spawn_blocking(move || monitor.snapshot(capacity, idle)).await {
            Ok(r) => r,
            Err(e) => GpuReport {
                healthy: false,
                reason: policy::NVML_FAILED,
                message: format!("the GPU check failed: {e}"),
                expected: capacity.unwrap_or(0),
                driver_version: None,
                cuda_version: None,
                devices: Vec::new(),
                xid_watch_error: None,
            },
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch_xids(gpu: &dyn Gpu, seen: &Mutex<Seen>, stopped: &mpsc::Receiver<()>) {
    loop {
        match stopped.try_recv() {
            Err(mpsc::TryRecvError::Empty) => {}
            _ => return,
        }
        let result = gpu.wait_xid(XID_WAIT);
        let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(None) => s.error = None,
            Ok(Some(e)) => {
                tracing::warn!(device = ?e.device, xid = ?e.xid, "gpu xid event");
                s.error = None;
                *s.xids.entry(e).or_insert(0) += 1;
            }
            Err(e) => {
                tracing::debug!(error = %e, "gpu xid watch");
                s.error = Some(e.to_string());
                drop(s);
                match stopped.recv_timeout(XID_RETRY) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        }
    }
}

/// Parses an XID list (`13,31,43`) as `--xid-ignore` takes it; empty means none ignored.
pub fn parse_xid_list(s: &str) -> Result<BTreeSet<u64>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u64>()
                .map_err(|_| format!("{p:?} is not an XID number"))
        })
        .collect()
}

/// NVML for this node: `library` when given, else searched for in `dirs` and the loader's path,
/// loaded on first use and looked for again on every probe until found.
pub fn open(library: Option<&std::path::Path>, dirs: &[std::path::PathBuf]) -> Arc<dyn Gpu> {
    Arc::new(SearchingGpu::new(library, dirs))
}
