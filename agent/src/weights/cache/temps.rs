//! Temporaries of publish and evict, and the hook that crash tests stop a publish with.
//!
//! Every temporary (a snapshot being built, an old snapshot on its way out, a trees file or a
//! ref being written) lives in the repo directory itself, beside `snapshots/`, `refs/` and
//! `trees/`, never inside them: `huggingface_hub`'s readers and `scan_cache_dir` look only
//! inside those (a temporary in `snapshots/` is listed as a revision, one in `refs/` as a ref
//! naming a missing commit). A crash leaves them where nobody looks; they are removed under the
//! repo's lock at the start of the next sync, publish or evict of the repo.

use std::path::Path;
use std::sync::Arc;

use super::super::{Error, RepoId};
use super::HubCache;
use crate::fsx::{self, TEMP_PREFIX};

/// The steps of a publish, in order; [`PublishHook`] is called after each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishStep {
    /// The repo's lock is held and stale temporaries are gone; nothing written yet.
    Started,
    /// `trees/<commit>.json` is in place.
    TreesWritten,
    /// The snapshot is complete under its temporary name (not yet visible).
    SnapshotBuilt,
    /// `snapshots/<commit>` is in place (an older copy, if any, not yet removed).
    SnapshotPublished,
    /// The new `refs/<revision>` is written under its temporary name (not yet renamed).
    RefStaged,
    /// `refs/<revision>` names the commit.
    RefWritten,
}

impl PublishStep {
    /// Every step, in order.
    pub const ALL: [PublishStep; 6] = [
        PublishStep::Started,
        PublishStep::TreesWritten,
        PublishStep::SnapshotBuilt,
        PublishStep::SnapshotPublished,
        PublishStep::RefStaged,
        PublishStep::RefWritten,
    ];

    /// The step's name in kebab case (`snapshot-built`), as crash tests name it.
    pub fn name(self) -> &'static str {
        match self {
            PublishStep::Started => "started",
            PublishStep::TreesWritten => "trees-written",
            PublishStep::SnapshotBuilt => "snapshot-built",
            PublishStep::SnapshotPublished => "snapshot-published",
            PublishStep::RefStaged => "ref-staged",
            PublishStep::RefWritten => "ref-written",
        }
    }

    /// The step named `name` (see [`PublishStep::name`]).
    pub fn parse(name: &str) -> Option<PublishStep> {
        PublishStep::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Called after each [`PublishStep`]; crash tests kill the process from it.
#[derive(Clone)]
pub struct PublishHook(pub Arc<dyn Fn(PublishStep) + Send + Sync>);

impl PublishHook {
    /// A hook that kills this process with SIGKILL right after `step`: no destructor, no
    /// cleanup runs, exactly as when the node kills the agent there. For crash tests only.
    pub fn kill_at(step: PublishStep) -> PublishHook {
        PublishHook(Arc::new(move |s| {
            if s == step {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            }
        }))
    }
}

impl std::fmt::Debug for PublishHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublishHook")
    }
}

impl HubCache {
    /// Calls the publish hook, if any, after `step`.
    pub(super) fn reached(&self, step: PublishStep) {
        if let Some(hook) = &self.hook {
            (hook.0)(step);
        }
    }

    /// Removes what an interrupted publish or evict of `repo` left: our temporary names in the
    /// repo directory and, from older versions, in `snapshots/`, `trees/` and anywhere under
    /// `refs/`. Takes the repo's lock, so no publish is under way while it runs.
    pub fn clean_temporaries(&self, repo: &RepoId) -> Result<(), Error> {
        let _lock = self.lock_repo(repo)?;
        self.clean_temporaries_locked(repo)
    }

    /// [`HubCache::clean_temporaries`] for a caller that holds the repo's lock.
    pub(super) fn clean_temporaries_locked(&self, repo: &RepoId) -> Result<(), Error> {
        let Some(repo_dir) = fsx::existing_dirs(&self.root, &[repo.cache_folder()])? else {
            return Ok(());
        };
        remove_temps_in(&repo_dir, false)?;
        for (sub, deep) in [("snapshots", false), ("trees", false), ("refs", true)] {
            if let Some(dir) = fsx::existing_dirs(&repo_dir, &[sub])? {
                remove_temps_in(&dir, deep)?;
            }
        }
        Ok(())
    }
}

/// Removes our temporary names directly in `dir` and, when `deep`, in its real subdirectories.
fn remove_temps_in(dir: &Path, deep: bool) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            if kind.is_dir() {
                fsx::remove_tree(&path)?;
            } else {
                fsx::remove_file(&path)?;
            }
            removed = true;
        } else if deep && kind.is_dir() {
            remove_temps_in(&path, true)?;
        }
    }
    if removed {
        fsx::fsync_dir(dir)?;
    }
    Ok(())
}
