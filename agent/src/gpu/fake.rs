//! A stateful fake GPU: an inventory the test edits, a queue of XID events, failure knobs, and a
//! record of the calls made.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{DeviceInfo, Error, Gpu, Inventory, XidEvent};

/// The fake's state, behind [`FakeGpu::state`].
#[derive(Debug, Default)]
pub struct FakeState {
    /// What `probe` returns.
    pub inventory: Inventory,
    /// Events `wait_xid` hands out, oldest first.
    pub xids: VecDeque<XidEvent>,
    /// Knob: the library is missing (`probe` and `wait_xid` fail with `LibraryNotFound`).
    pub missing_library: bool,
    /// Knob: the next `probe` calls fail with this NVML message.
    pub fail_probe: Option<String>,
    /// Knob: `wait_xid` fails (events unsupported).
    pub fail_events: bool,
    /// Calls seen: `probe` and `wait_xid`.
    pub probes: usize,
    /// Calls to `wait_xid`.
    pub waits: usize,
}

/// The fake.
#[derive(Debug, Default)]
pub struct FakeGpu {
    state: Mutex<FakeState>,
}

impl FakeGpu {
    /// A fake with these devices, driver `550.54.15`, CUDA `12.4`.
    pub fn with_devices(devices: Vec<DeviceInfo>) -> FakeGpu {
        let fake = FakeGpu::default();
        fake.state().inventory = Inventory {
            driver_version: "550.54.15".into(),
            cuda_version: Some("12.4".into()),
            devices,
        };
        fake
    }

    /// The state, to edit or inspect.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an XID event.
    pub fn push_xid(&self, device: Option<u32>, xid: u64) {
        self.state().xids.push_back(XidEvent {
            device,
            xid: Some(xid),
        });
    }
}

fn missing() -> Error {
    Error::LibraryNotFound {
        library: "fake".into(),
        reason: "missing_library knob".into(),
    }
}

impl Gpu for FakeGpu {
    fn probe(&self) -> Result<Inventory, Error> {
        let mut s = self.state();
        s.probes += 1;
        if s.missing_library {
            return Err(missing());
        }
        if let Some(reason) = s.fail_probe.clone() {
            return Err(Error::Nvml {
                call: "probe",
                reason,
            });
        }
        Ok(s.inventory.clone())
    }

    fn wait_xid(&self, timeout: Duration) -> Result<Option<XidEvent>, Error> {
        let next = {
            let mut s = self.state();
            s.waits += 1;
            if s.missing_library {
                return Err(missing());
            }
            if s.fail_events {
                return Err(Error::EventsUnsupported("fail_events knob".into()));
            }
            s.xids.pop_front()
        };
        if next.is_none() {
            // Block like NVML would, briefly: tests should not wait the full timeout.
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
        }
        Ok(next)
    }
}
