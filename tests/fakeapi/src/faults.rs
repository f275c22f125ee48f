//! Fault knobs and the request log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// How the fake is unavailable during [`crate::FakeApi::outage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// The listener is closed: connections are refused, open ones (watches) are cut.
    Refuse,
    /// Every request answers 503 with a `Status` body; open connections are cut.
    Status503,
}

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, or
    /// `discovery` for discovery and `/version`, `unknown` for paths the fake does not serve.
    pub verb: String,
    /// `plural` or `plural/subresource` (e.g. `nodes/status`); empty for discovery.
    pub resource: String,
    /// API group of the resource (empty for core).
    pub group: String,
    /// Namespace in the path, if any.
    pub namespace: Option<String>,
    /// Object name in the path, if any.
    pub name: Option<String>,
    /// `Content-Type` of a PATCH (e.g. `application/apply-patch+yaml`).
    pub patch_type: Option<String>,
    /// `fieldManager` query parameter, if any.
    pub field_manager: Option<String>,
    /// Status code answered (200 for a watch that started streaming).
    pub status: u16,
}

#[derive(Default)]
pub(crate) struct Knobs {
    pub(crate) status503: AtomicBool,
    /// Remaining injected conflicts per resource name (`plural` or `plural.group`).
    conflicts: Mutex<HashMap<String, u32>>,
    log: Mutex<Vec<RequestRecord>>,
}

impl Knobs {
    pub(crate) fn set_503(&self, on: bool) {
        self.status503.store(on, Ordering::SeqCst);
    }

    pub(crate) fn is_503(&self) -> bool {
        self.status503.load(Ordering::SeqCst)
    }

    pub(crate) fn add_conflicts(&self, resource: &str, n: u32) {
        let mut c = self.conflicts.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry(resource.to_string()).or_default() += n;
    }

    /// Takes one injected conflict for a write to a resource known by these names.
    pub(crate) fn take_conflict(&self, names: &[String]) -> bool {
        let mut c = self.conflicts.lock().unwrap_or_else(|p| p.into_inner());
        for n in names {
            if let Some(left) = c.get_mut(n).filter(|l| **l > 0) {
                *left -= 1;
                return true;
            }
        }
        false
    }

    pub(crate) fn log(&self, r: RequestRecord) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    }

    pub(crate) fn records(&self) -> Vec<RequestRecord> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn clear(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
