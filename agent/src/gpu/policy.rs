//! Pure GPU health policy: a probe, the XID events seen and what is expected in, a [`Verdict`]
//! out. No NVML, no clock: table-tested in `tests.rs`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::{DEFAULT_XID_IGNORE, DeviceInfo, Error, Inventory, XidEvent};

/// Every expected GPU is present and healthy.
pub const GPU_HEALTHY: &str = "GPUHealthy";
/// Configuration says this node has no GPU (`--gpus-expected none`).
pub const NO_GPU_EXPECTED: &str = "NoGPUExpected";
/// `libnvidia-ml.so.1` cannot be loaded.
pub const NVML_NOT_FOUND: &str = "NVMLNotFound";
/// NVML loaded but failed (driver not loaded, no permission, a query failed).
pub const NVML_FAILED: &str = "NVMLFailed";
/// Fewer GPUs than expected.
pub const GPU_MISSING: &str = "GPUMissing";
/// A critical XID event.
pub const XID_ERROR: &str = "XidError";
/// Volatile double-bit (uncorrected) ECC errors.
pub const ECC_ERRORS: &str = "ECCDoubleBitErrors";
/// A row remapping failed.
pub const ROW_REMAP_FAILURE: &str = "RowRemapFailure";
/// A row remapping waits for a GPU reset.
pub const ROW_REMAP_PENDING: &str = "RowRemapPending";
/// Pages wait for retirement (a driver reload).
pub const PAGES_PENDING_RETIREMENT: &str = "PagesPendingRetirement";
/// Clocks held down by the hardware (thermal, power brake, slowdown).
pub const HW_SLOWDOWN: &str = "HWSlowdown";
/// Temperature at or above the limit.
pub const OVERHEATED: &str = "Overheated";
/// Processes hold GPU memory while the node should be idle.
pub const GPU_BUSY: &str = "GPUBusy";

/// Default temperature limit.
pub const DEFAULT_MAX_TEMPERATURE_CELSIUS: u32 = 90;

/// NVML throttle reason bits, with our names.
const THROTTLE_BITS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];
/// The bits that mean the hardware protects itself: hw_slowdown, hw_thermal, hw_power_brake.
const HW_SLOWDOWN_BITS: u64 = 0x8 | 0x40 | 0x80;

/// Names of the bits set in an NVML throttle reason mask.
pub fn throttle_names(mask: u64) -> Vec<&'static str> {
    THROTTLE_BITS
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// `--gpus-expected`: `auto`, `none` or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpusExpected {
    /// The node's `nvidia.com/gpu` capacity when known, else at least one if NVML loads.
    #[default]
    Auto,
    /// No GPU on this node: health never blocks.
    None,
    /// Exactly this many (at least).
    Count(u32),
}

impl FromStr for GpusExpected {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(GpusExpected::Auto),
            "none" | "0" => Ok(GpusExpected::None),
            n => n
                .parse::<u32>()
                .map(GpusExpected::Count)
                .map_err(|_| format!("{n:?} is not auto, none or a number")),
        }
    }
}

impl fmt::Display for GpusExpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpusExpected::Auto => f.write_str("auto"),
            GpusExpected::None => f.write_str("none"),
            GpusExpected::Count(n) => write!(f, "{n}"),
        }
    }
}

/// How many GPUs a verdict requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// At least this many; 0: none expected.
    Count(u32),
    /// At least one if NVML loads; none if the library is missing.
    IfNvmlLoads,
}

impl Expected {
    /// From the setting and the node's `nvidia.com/gpu` capacity when known.
    pub fn resolve(setting: GpusExpected, capacity: Option<u32>) -> Expected {
        match (setting, capacity) {
            (GpusExpected::None, _) => Expected::Count(0),
            (GpusExpected::Count(n), _) => Expected::Count(n),
            (GpusExpected::Auto, Some(n)) => Expected::Count(n),
            (GpusExpected::Auto, None) => Expected::IfNvmlLoads,
        }
    }
}

/// Policy settings (from the agent's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How many GPUs this node should have.
    pub gpus_expected: GpusExpected,
    /// XIDs that do not make a GPU unhealthy.
    pub xid_ignore: BTreeSet<u64>,
    /// Temperature at which a GPU counts as unhealthy.
    pub max_temperature_celsius: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            gpus_expected: GpusExpected::Auto,
            xid_ignore: DEFAULT_XID_IGNORE.into_iter().collect(),
            max_temperature_celsius: DEFAULT_MAX_TEMPERATURE_CELSIUS,
        }
    }
}

/// The node's GPU verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The startup taint may go (as far as GPUs are concerned).
    pub healthy: bool,
    /// CamelCase reason, one of this module's constants.
    pub reason: &'static str,
    /// One line for people.
    pub message: String,
    /// GPUs required.
    pub expected: u32,
    /// Per device, in inventory order.
    pub devices: Vec<DeviceVerdict>,
}

/// One device's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceVerdict {
    /// NVML index.
    pub index: u32,
    /// Whether every check passed.
    pub healthy: bool,
    /// Why it is not healthy: a stable CamelCase reason.
    pub reason: Option<&'static str>,
    /// Details for people.
    pub message: Option<String>,
}

/// Judges the node's GPUs. `idle`: no workload should hold GPU memory now.
pub fn evaluate(
    probe: &Result<Inventory, Error>,
    xids: &[XidEvent],
    expected: Expected,
    idle: bool,
    settings: &Settings,
) -> Verdict {
    let verdict = |healthy, reason, message: String, expected, devices| Verdict {
        healthy,
        reason,
        message,
        expected,
        devices,
    };
    let inv = match (probe, expected) {
        (_, Expected::Count(0)) => {
            let msg = "no GPU expected on this node (--gpus-expected none)".to_string();
            return verdict(true, NO_GPU_EXPECTED, msg, 0, Vec::new());
        }
        // The agent runs on GPU nodes only: no library yet means the driver is not there yet
        // (or not where we look), never that the node has no GPU (say `--gpus-expected none`).
        (Err(e @ Error::LibraryNotFound { .. }), Expected::IfNvmlLoads) => {
            let msg = format!(
                "{e}: waiting for the NVIDIA driver (--nvml-library, or --gpus-expected none on a \
                 node without GPUs)"
            );
            return verdict(false, NVML_NOT_FOUND, msg, 1, Vec::new());
        }
        (Err(e @ Error::LibraryNotFound { .. }), Expected::Count(n)) => {
            let msg = format!("{n} GPU(s) expected but {e}");
            return verdict(false, NVML_NOT_FOUND, msg, n, Vec::new());
        }
        (Err(e), _) => {
            let n = required(expected);
            return verdict(false, NVML_FAILED, e.to_string(), n, Vec::new());
        }
        (Ok(inv), _) => inv,
    };
    let n = required(expected);
    let devices: Vec<DeviceVerdict> = inv
        .devices
        .iter()
        .map(|d| judge_device(d, xids, idle, settings))
        .collect();
    let found = inv.devices.len();
    if found < n as usize {
        let msg = format!("found {found} of {n} expected GPUs");
        return verdict(false, GPU_MISSING, msg, n, devices);
    }
    let bad: Vec<&DeviceVerdict> = devices.iter().filter(|d| !d.healthy).collect();
    match bad.first() {
        Some(first) => {
            let mut msg = format!(
                "GPU {}: {}",
                first.index,
                first.message.as_deref().unwrap_or_default()
            );
            if bad.len() > 1 {
                msg += &format!(" (and {} more unhealthy)", bad.len() - 1);
            }
            verdict(false, first.reason.unwrap_or(NVML_FAILED), msg, n, devices)
        }
        None => {
            let msg = format!("{found} GPU(s) healthy, driver {}", inv.driver_version);
            verdict(true, GPU_HEALTHY, msg, n, devices)
        }
    }
}

fn required(expected: Expected) -> u32 {
    match expected {
        Expected::Count(n) => n,
        Expected::IfNvmlLoads => 1,
    }
}

fn judge_device(d: &DeviceInfo, xids: &[XidEvent], idle: bool, s: &Settings) -> DeviceVerdict {
    let (reason, message) = match problem(d, xids, idle, s) {
        Some((r, m)) => (Some(r), Some(m)),
        None => (None, None),
    };
    DeviceVerdict {
        index: d.index,
        healthy: reason.is_none(),
        reason,
        message,
    }
}

/// The first problem, most severe first.
fn problem(
    d: &DeviceInfo,
    xids: &[XidEvent],
    idle: bool,
    s: &Settings,
) -> Option<(&'static str, String)> {
    let critical: BTreeSet<String> = xids
        .iter()
        .filter(|e| e.device.is_none_or(|i| i == d.index))
        .filter(|e| e.xid.is_none_or(|x| !s.xid_ignore.contains(&x)))
        .map(|e| e.xid.map_or("unknown".to_string(), |x| x.to_string()))
        .collect();
    if !critical.is_empty() {
        let list: Vec<String> = critical.into_iter().collect();
        return Some((XID_ERROR, format!("critical XID {}", list.join(", "))));
    }
    if let Some(n) = d.ecc_volatile_uncorrected.filter(|n| *n > 0) {
        return Some((ECC_ERRORS, format!("{n} volatile double-bit ECC error(s)")));
    }
    if d.row_remap_failure == Some(true) {
        return Some((ROW_REMAP_FAILURE, "row remapping failed".into()));
    }
    if d.row_remap_pending == Some(true) {
        return Some((
            ROW_REMAP_PENDING,
            "row remapping pending a GPU reset".into(),
        ));
    }
    if d.pages_pending_retirement == Some(true) {
        return Some((PAGES_PENDING_RETIREMENT, "pages pending retirement".into()));
    }
    if let Some(mask) = d.throttle_reasons.filter(|m| m & HW_SLOWDOWN_BITS != 0) {
        let names = throttle_names(mask & HW_SLOWDOWN_BITS).join(", ");
        return Some((HW_SLOWDOWN, format!("clocks throttled: {names}")));
    }
    if let Some(t) = d
        .temperature_celsius
        .filter(|t| *t >= s.max_temperature_celsius)
    {
        let limit = s.max_temperature_celsius;
        return Some((
            OVERHEATED,
            format!("temperature {t} C at or above {limit} C"),
        ));
    }
    if idle && let Some(procs) = d.processes.as_ref().filter(|p| !p.is_empty()) {
        let pids: Vec<String> = procs.iter().map(|p| p.pid.to_string()).collect();
        return Some((
            GPU_BUSY,
            format!("processes hold GPU memory: pid {}", pids.join(", ")),
        ));
    }
    None
}
