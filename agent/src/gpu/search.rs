//! Finding NVML on a node whose driver may arrive after the agent. The DaemonSet runs without
//! the `nvidia` RuntimeClass (the NVIDIA stack may itself be waiting for our startup taint to
//! be tolerated), so nothing injects the library: the agent mounts the host's driver locations
//! read-only and looks there, on every probe, until it loads one. Until then every probe fails
//! with [`Error::LibraryNotFound`], which keeps the taint on with `NVMLNotFound`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::nvml::{DEFAULT_NVML_LIBRARY, NvmlGpu};
use super::{Error, Gpu, Inventory, XidEvent};

/// Where the DaemonSet finds the host's driver libraries: the host's root is mounted at
/// `/host` (the GPU Operator's driver container publishes its root at `/run/nvidia/driver`).
pub const DEFAULT_SEARCH_DIRS: &[&str] = &[
    "/host/run/nvidia/driver/usr/lib64",
    "/host/run/nvidia/driver/usr/lib/x86_64-linux-gnu",
    "/host/run/nvidia/driver/usr/lib/aarch64-linux-gnu",
    "/host/usr/lib64",
    "/host/usr/lib/x86_64-linux-gnu",
    "/host/usr/lib/aarch64-linux-gnu",
    "/host/usr/local/nvidia/lib64",
];

/// NVML loaded lazily: from `--nvml-library` when given, else from the first search
/// directory that holds `libnvidia-ml.so.1`, else through the loader's own path. Retried on
/// every call until one loads; then that one answers.
pub struct SearchingGpu {
    explicit: Option<PathBuf>,
    dirs: Vec<PathBuf>,
    loaded: Mutex<Option<Arc<NvmlGpu>>>,
}

impl std::fmt::Debug for SearchingGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchingGpu")
            .field("explicit", &self.explicit)
            .field("dirs", &self.dirs)
            .finish_non_exhaustive()
    }
}

impl SearchingGpu {
    /// Looks for NVML at `explicit` only when given, else in `dirs` then the loader's path.
    pub fn new(explicit: Option<&Path>, dirs: &[PathBuf]) -> SearchingGpu {
        SearchingGpu {
            explicit: explicit.map(Path::to_path_buf),
            dirs: dirs.to_vec(),
            loaded: Mutex::new(None),
        }
    }

    /// The libraries to try, in order: `None` is the loader's own search.
    fn candidates(&self) -> Vec<Option<PathBuf>> {
        if let Some(p) = &self.explicit {
            return vec![Some(p.clone())];
        }
        self.dirs
            .iter()
            .map(|d| d.join(DEFAULT_NVML_LIBRARY))
            .filter(|p| p.exists())
            .map(Some)
            .chain([None])
            .collect()
    }

    /// The loaded library, loading it now if it can be found.
    fn get(&self) -> Result<Arc<NvmlGpu>, Error> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gpu) = loaded.as_ref() {
            return Ok(gpu.clone());
        }
        let mut failed = None;
        for candidate in self.candidates() {
            match NvmlGpu::load(candidate.as_deref()) {
                Ok(gpu) => {
                    let gpu = Arc::new(gpu);
                    tracing::info!(library = %gpu.library(), "NVML loaded");
                    *loaded = Some(gpu.clone());
                    return Ok(gpu);
                }
                // A library that is there but cannot initialise says more than a missing one.
                Err(e @ Error::LibraryNotFound { .. }) => {
                    failed.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(match (&self.explicit, failed) {
            (Some(_), Some(e)) => e,
            _ => Error::LibraryNotFound {
                library: DEFAULT_NVML_LIBRARY.into(),
                reason: format!("not in {} nor on the loader's path", self.searched()),
            },
        })
    }

    fn searched(&self) -> String {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        if dirs.is_empty() {
            "no search directory".into()
        } else {
            dirs.join(", ")
        }
    }
}

impl Gpu for SearchingGpu {
    fn probe(&self) -> Result<Inventory, Error> {
        self.get()?.probe()
    }

    fn wait_xid(&self, timeout: Duration) -> Result<Option<XidEvent>, Error> {
        self.get()?.wait_xid(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_library_is_the_only_candidate() {
        let g = SearchingGpu::new(Some(Path::new("/x/libnvidia-ml.so.1")), &["/y".into()]);
        assert_eq!(
            g.candidates(),
            [Some(PathBuf::from("/x/libnvidia-ml.so.1"))]
        );
    }

    #[test]
    fn search_dirs_holding_the_library_come_before_the_loader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let with = dir.path().join("with");
        std::fs::create_dir_all(&with).expect("mkdir");
        std::fs::write(with.join(DEFAULT_NVML_LIBRARY), b"").expect("write");
        let g = SearchingGpu::new(None, &[dir.path().join("without"), with.clone()]);
        assert_eq!(
            g.candidates(),
            [Some(with.join(DEFAULT_NVML_LIBRARY)), None]
        );
    }

    #[test]
    fn nothing_found_names_where_it_looked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = SearchingGpu::new(None, &[dir.path().to_path_buf()]);
        match g.probe() {
            Err(Error::LibraryNotFound { reason, .. }) => {
                assert!(
                    reason.contains(&dir.path().display().to_string()),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
