//! The desired state as the loop sees it: the models file, reloaded when it changes. An
//! inotify watch on the file's directory (the `notify` crate; editors and our own edits
//! replace the file by rename) wakes the loop at once; each pass also compares the file's
//! identity, size and mtime with the last read, so a missed event only delays a reload by a
//! tick. A file that stops parsing keeps the last good state in force: models are never
//! dropped because of a typo.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::{Config, Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::Error;
use super::edit::ModelsFile;
use super::models::Desired;

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

/// The desired state, reloaded on change.
pub struct DesiredSource {
    file: ModelsFile,
    wake: Arc<Notify>,
    changed: Arc<AtomicBool>,
    watcher: Option<RecommendedWatcher>,
    /// The stamp of the last read (`None`: absent, or never read).
    seen: Option<Option<Stamp>>,
    good: Desired,
    error: Option<String>,
    said_absent: bool,
    said_unwatched: bool,
}

impl std::fmt::Debug for DesiredSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredSource")
            .field("file", &self.file)
            .field("models", &self.good.entries.len())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl DesiredSource {
    /// The file, not read yet (the first [`DesiredSource::refresh`] reads it); `wake` is notified
    /// from the watcher's own thread when the file changes.
    pub fn new(file: ModelsFile, wake: Arc<Notify>) -> DesiredSource {
        let mut source = DesiredSource {
            file,
            wake,
            changed: Arc::new(AtomicBool::new(true)),
            watcher: None,
            seen: None,
            good: Desired::default(),
            error: None,
            said_absent: false,
            said_unwatched: false,
        };
        source.arm();
        source
    }

    /// The last good desired state.
    pub fn desired(&self) -> &Desired {
        &self.good
    }

    /// Why the file on disk is not in force, while it is not.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Rereads the file when an event or its stamp says it changed. On a bad file the last
    /// good state stays in force and the error is returned (and logged once per change).
    pub fn refresh(&mut self) -> Result<(), Error> {
        if self.watcher.is_none() {
            self.arm();
        }
        let stamp = self.stamp();
        let evented = self.changed.swap(false, Ordering::AcqRel);
        if !evented && self.seen == Some(stamp) {
            return self.error.as_ref().map_or(Ok(()), |e| {
                Err(Error::Invalid {
                    path: self.file.path().to_path_buf(),
                    reason: e.clone(),
                })
            });
        }
        self.seen = Some(stamp);
        match self.file.load() {
            Ok(Some(desired)) => {
                if desired != self.good || self.error.is_some() {
                    info!(
                        file = %self.file.path().display(),
                        models = desired.entries.len(),
                        "models file loaded"
                    );
                }
                self.said_absent = false;
                self.good = desired;
                self.error = None;
                Ok(())
            }
            Ok(None) => {
                if !self.said_absent {
                    info!(file = %self.file.path().display(), "no models file: no models to keep warm");
                    self.said_absent = true;
                }
                self.good = Desired::default();
                self.error = None;
                Ok(())
            }
            Err(e) => {
                warn!(
                    error = %e,
                    models = self.good.entries.len(),
                    "models file not applied; keeping the last good models"
                );
                self.error = Some(match &e {
                    Error::Invalid { reason, .. } => reason.clone(),
                    other => other.to_string(),
                });
                Err(e)
            }
        }
    }

    fn stamp(&self) -> Option<Stamp> {
        let m = std::fs::metadata(self.file.path()).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// Watches the file's directory (not the file: a rename replaces it). Without a watch
    /// (no directory yet, inotify limits) the stamp check alone finds changes.
    fn arm(&mut self) {
        let path = self.file.path();
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let name: OsString = name.to_os_string();
        let changed = self.changed.clone();
        let wake = self.wake.clone();
        let handler = move |ev: notify::Result<Event>| {
            let relevant = match &ev {
                Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => false,
                Ok(ev) => {
                    ev.need_rescan()
                        || ev
                            .paths
                            .iter()
                            .any(|p| p.file_name() == Some(name.as_os_str()))
                }
                Err(_) => true,
            };
            if relevant {
                changed.store(true, Ordering::Release);
                wake.notify_one();
            }
        };
        let armed = RecommendedWatcher::new(handler, Config::default()).and_then(|mut w| {
            w.watch(dir, RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match armed {
            Ok(w) => self.watcher = Some(w),
            Err(e) => {
                if dir.exists() && !self.said_unwatched {
                    self.said_unwatched = true;
                    warn!(dir = %dir.display(), error = %e, "cannot watch the models file's directory; checking it every pass");
                }
            }
        }
    }
}
