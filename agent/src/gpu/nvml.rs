//! The real client: NVML through nvml-wrapper, which loads the library with `dlopen` at run
//! time (no link-time dependency, so the agent runs on nodes without a driver) and resolves each
//! symbol on first use.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml, bitmasks::event::EventTypes, enums::event::XidError};
use tracing::instrument;

use super::{DeviceInfo, Error, Gpu, GpuProcess, Inventory, XidEvent};

/// The library name the driver installs (the unversioned `.so` comes only with dev packages).
pub const DEFAULT_NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// NVML field ids for row remapping: pending (144) and failure (145).
const FI_REMAPPED_PENDING: u32 = 144;
const FI_REMAPPED_FAILURE: u32 = 145;

/// NVML, loaded once per process and kept for its lifetime (nvml-wrapper never unloads the
/// library either), so that the XID event set can borrow it from a shared client.
pub struct NvmlGpu {
    nvml: &'static Nvml,
    library: String,
    events: Mutex<Option<EventSet<'static>>>,
}

impl std::fmt::Debug for NvmlGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlGpu")
            .field("library", &self.library)
            .finish()
    }
}

fn nvml_err(call: &'static str) -> impl Fn(NvmlError) -> Error {
    move |e| Error::Nvml {
        call,
        reason: e.to_string(),
    }
}

impl NvmlGpu {
    /// Loads and initialises NVML from `library` (default [`DEFAULT_NVML_LIBRARY`], searched
    /// the `dlopen` way). A library that cannot be loaded is [`Error::LibraryNotFound`].
    #[instrument(skip_all, fields(library = tracing::field::Empty), err(level = "debug"))]
    pub fn load(library: Option<&Path>) -> Result<NvmlGpu, Error> {
        let path: PathBuf = library.map_or_else(|| DEFAULT_NVML_LIBRARY.into(), Path::to_path_buf);
        let name = path.display().to_string();
        tracing::Span::current().record("library", name.as_str());
        let nvml = Nvml::builder()
            .lib_path(path.as_os_str())
            .init()
            .map_err(|e| match e {
                NvmlError::LibloadingError(e) => Error::LibraryNotFound {
                    library: name.clone(),
                    reason: e.to_string(),
                },
                e => nvml_err("init")(e),
            })?;
        Ok(NvmlGpu {
            nvml: Box::leak(Box::new(nvml)),
            library: name,
            events: Mutex::new(None),
        })
    }

    /// The library it loaded.
    pub fn library(&self) -> &str {
        &self.library
    }

    fn event_set(&self) -> Result<EventSet<'static>, Error> {
        let nvml = self.nvml;
        let mut set = nvml
            .create_event_set()
            .map_err(nvml_err("create_event_set"))?;
        let count = nvml.device_count().map_err(nvml_err("device_count"))?;
        let mut registered = 0;
        for i in 0..count {
            let dev = nvml
                .device_by_index(i)
                .map_err(nvml_err("device_by_index"))?;
            let supported = dev.supported_event_types().unwrap_or(EventTypes::empty());
            if supported.contains(EventTypes::CRITICAL_XID_ERROR) {
                set = dev
                    .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                    .map_err(|e| nvml_err("register_events")(e.error))?;
                registered += 1;
            }
        }
        if registered == 0 {
            return Err(Error::EventsUnsupported(format!(
                "none of {count} device(s) reports critical XID events"
            )));
        }
        Ok(set)
    }
}

impl Gpu for NvmlGpu {
    #[instrument(skip_all, fields(library = %self.library), err(level = "debug"))]
    fn probe(&self) -> Result<Inventory, Error> {
        let nvml = self.nvml;
        let driver_version = nvml
            .sys_driver_version()
            .map_err(nvml_err("driver_version"))?;
        let cuda_version = nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        });
        let count = nvml.device_count().map_err(nvml_err("device_count"))?;
        let mut devices = Vec::with_capacity(count as usize);
        for index in 0..count {
            let dev = nvml
                .device_by_index(index)
                .map_err(nvml_err("device_by_index"))?;
            devices.push(read_device(index, &dev)?);
        }
        Ok(Inventory {
            driver_version,
            cuda_version,
            devices,
        })
    }

    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    fn wait_xid(&self, timeout: Duration) -> Result<Option<XidEvent>, Error> {
        let mut guard = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(self.event_set()?);
        }
        let Some(set) = guard.as_ref() else {
            return Ok(None);
        };
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        match set.wait(ms) {
            Ok(data) => Ok(Some(XidEvent {
                device: data.device.index().ok(),
                xid: match data.event_data {
                    Some(XidError::Value(x)) => Some(x),
                    Some(XidError::Unknown) | None => None,
                },
            })),
            Err(NvmlError::Timeout) => Ok(None),
            Err(e) => {
                // A broken set is rebuilt on the next call.
                *guard = None;
                Err(nvml_err("event_set_wait")(e))
            }
        }
    }
}

fn read_device(index: u32, dev: &Device<'_>) -> Result<DeviceInfo, Error> {
    let memory = dev.memory_info().map_err(nvml_err("memory_info"))?;
    let fields = dev
        .field_values_for(&[FieldId(FI_REMAPPED_PENDING), FieldId(FI_REMAPPED_FAILURE)])
        .unwrap_or_default();
    Ok(DeviceInfo {
        index,
        uuid: dev.uuid().map_err(nvml_err("uuid"))?,
        name: dev.name().map_err(nvml_err("name"))?,
        memory_total_bytes: memory.total,
        memory_used_bytes: memory.used,
        compute_capability: dev
            .cuda_compute_capability()
            .ok()
            .map(|c| format!("{}.{}", c.major, c.minor)),
        persistence_mode: dev.is_in_persistent_mode().ok(),
        mig_enabled: dev.mig_mode().ok().map(|m| m.current == 1),
        pci_bus_id: dev.pci_info().ok().map(|p| p.bus_id),
        temperature_celsius: dev.temperature(TemperatureSensor::Gpu).ok(),
        throttle_reasons: dev.current_throttle_reasons().ok().map(|r| r.bits()),
        ecc_volatile_uncorrected: dev
            .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
            .ok(),
        pages_pending_retirement: dev.are_pages_pending_retired().ok(),
        row_remap_pending: field_flag(&fields, 0),
        row_remap_failure: field_flag(&fields, 1),
        processes: dev.running_compute_processes().ok().map(|ps| {
            ps.iter()
                .map(|p| GpuProcess {
                    pid: p.pid,
                    used_bytes: match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b),
                        UsedGpuMemory::Unavailable => None,
                    },
                })
                .collect()
        }),
    })
}

fn field_flag(fields: &[Result<FieldValueSample, NvmlError>], i: usize) -> Option<bool> {
    match fields.get(i)?.as_ref().ok()?.value.as_ref().ok()? {
        SampleValue::U32(v) => Some(*v != 0),
        SampleValue::U64(v) => Some(*v != 0),
        SampleValue::I64(v) => Some(*v != 0),
        SampleValue::F64(v) => Some(*v != 0.0),
    }
}
