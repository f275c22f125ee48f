//! Re-verification of what changes underneath the cache: an inotify watcher (the `notify`
//! crate) on the `snapshots/` and `blobs/` directories of the watched models maps each changed
//! or deleted path to the (model, commit, files) it belongs to and re-verifies just those
//! ([`HubCache::reverify`]: fingerprints first, a full hash only where one changed), reporting
//! over a channel so the agent can mark the model not ready and sync it again.
//!
//! Robust by construction: events only add paths to a pending set (a flood is coalesced; past
//! [`MAX_PENDING`] paths the set collapses into one rescan), a batch waits for a quiet period
//! but never longer than a bounded delay, read-only access is ignored (pods and our own hashing
//! open blobs all day), so are partial downloads and our temporary names, and the watches are
//! re-armed after every batch so models and directories created or removed later are followed.
//! Our own publishes change only what fingerprints already vouch for: they cost a stat per
//! file, never a hash.

mod paths;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{Config, Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::cache::{HubCache, VerifyReport};
use super::{Error, RepoId};
use paths::{Place, Scope, classify};

/// Distinct changed paths held before the batch collapses into a rescan of every target.
pub const MAX_PENDING: usize = 10_000;

/// One snapshot to keep watching.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The Hub model id (`org/name`).
    pub repo: RepoId,
    /// Commit of the snapshot.
    pub commit: String,
}

/// How events are batched.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// A batch is processed once no event arrived for this long...
    pub quiet: Duration,
    /// ...or this long after its first event, whichever comes first.
    pub max_delay: Duration,
}

impl Default for WatchOptions {
    /// 250 ms of quiet, at most 2 s.
    fn default() -> Self {
        WatchOptions {
            quiet: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// One re-verification, triggered by changes underneath the cache.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reverified {
    /// The Hub model id (`org/name`).
    pub repo: RepoId,
    /// Commit of the snapshot.
    pub commit: String,
    /// Files of the snapshot re-verified because something under them changed; empty when
    /// the whole snapshot was (its directory changed, or events were lost).
    pub changed: Vec<String>,
    /// What re-verification found.
    pub report: VerifyReport,
}

/// A running watcher: stops (and releases its inotify watches) when dropped.
#[derive(Debug)]
pub struct CacheWatcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CacheWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the inotify thread hands to the batching task.
#[derive(Debug, Default)]
struct Pending {
    paths: BTreeSet<PathBuf>,
    rescan: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Shared {
    /// Called on the watcher's thread for every event: cheap, never blocks on the receiver.
    fn on_event(&self, event: notify::Result<Event>) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Ok(ev) if is_read_only(&ev.kind) => return,
            Ok(ev) if ev.need_rescan() => p.rescan = true,
            Ok(ev) => {
                for path in ev.paths.into_iter().filter(|p| paths::relevant(p)) {
                    p.paths.insert(path);
                }
            }
            // The backend lost track (e.g. the queue overflowed): check everything.
            Err(_) => p.rescan = true,
        }
        if p.paths.len() > MAX_PENDING {
            p.paths.clear();
            p.rescan = true;
        }
        drop(p);
        self.wake.notify_one();
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Opening and reading a file change nothing.
fn is_read_only(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    )
}

/// Starts watching `targets` in `cache`; each re-verification is sent on `tx` (an error when
/// one could not run). Must be called inside a Tokio runtime. Fails when inotify cannot be set
/// up (e.g. the per-user watch limit).
pub fn watch(
    cache: Arc<HubCache>,
    targets: Vec<Target>,
    opts: WatchOptions,
    tx: mpsc::Sender<Result<Reverified, Error>>,
) -> Result<CacheWatcher, Error> {
    let shared = Arc::new(Shared::default());
    let handler = {
        let shared = shared.clone();
        move |ev: notify::Result<Event>| shared.on_event(ev)
    };
    // Never follow a symlink planted in the cache into the rest of the filesystem.
    let config = Config::default().with_follow_symlinks(false);
    let watcher = RecommendedWatcher::new(handler, config).map_err(|e| notify_error(&cache, e))?;
    let mut armed = Armed {
        watcher,
        watched: HashMap::new(),
    };
    armed.rearm(&cache, &targets, false)?;
    let task = tokio::spawn(run(shared, armed, cache, targets, opts, tx));
    Ok(CacheWatcher { task })
}

fn notify_error(cache: &HubCache, e: notify::Error) -> Error {
    let path = e.paths.first().cloned();
    let path = path.unwrap_or_else(|| cache.root().to_path_buf());
    Error::io("watch", path, std::io::Error::other(e.to_string()))
}

/// The inotify watcher and what it watches (directory -> (device, inode) when armed).
struct Armed {
    watcher: RecommendedWatcher,
    watched: HashMap<PathBuf, (u64, u64)>,
}

impl Armed {
    /// Watches the root and each target's repo folder (for directories appearing and
    /// vanishing) and its `snapshots/` and `blobs/` recursively; re-watches a directory that
    /// was replaced, and `snapshots/` anew when `fresh` (a snapshot directory was renamed: the
    /// backend's path bookkeeping may be stale). Returns the repos whose watches were
    /// (re)added, whose events in between may be lost.
    fn rearm(
        &mut self,
        cache: &HubCache,
        targets: &[Target],
        fresh: bool,
    ) -> Result<BTreeSet<RepoId>, Error> {
        let mut renewed = BTreeSet::new();
        self.ensure(cache, cache.root(), RecursiveMode::NonRecursive, false)?;
        let repos: BTreeSet<&RepoId> = targets.iter().map(|t| &t.repo).collect();
        for repo in repos {
            let dir = cache.repo_dir(repo);
            let mut added = self.ensure(cache, &dir, RecursiveMode::NonRecursive, false)?;
            added |= self.ensure(
                cache,
                &dir.join("snapshots"),
                RecursiveMode::Recursive,
                fresh,
            )?;
            added |= self.ensure(cache, &dir.join("blobs"), RecursiveMode::Recursive, false)?;
            if added {
                renewed.insert(repo.clone());
            }
        }
        Ok(renewed)
    }

    /// Watches `dir` when it is a real directory not yet watched as it is now.
    fn ensure(
        &mut self,
        cache: &HubCache,
        dir: &Path,
        mode: RecursiveMode,
        fresh: bool,
    ) -> Result<bool, Error> {
        let id = match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_dir() => (m.dev(), m.ino()),
            _ => {
                if self.watched.remove(dir).is_some() {
                    let _ = self.watcher.unwatch(dir);
                }
                return Ok(false);
            }
        };
        if !fresh && self.watched.get(dir) == Some(&id) {
            return Ok(false);
        }
        if self.watched.remove(dir).is_some() {
            let _ = self.watcher.unwatch(dir);
        }
        match self.watcher.watch(dir, mode) {
            Ok(()) => {}
            // Removed between the stat and the watch: the next batch looks again.
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => return Ok(false),
            Err(e) => return Err(notify_error(cache, e)),
        }
        self.watched.insert(dir.to_path_buf(), id);
        Ok(true)
    }
}

/// The batching loop: wait for events, let them settle, re-arm, re-verify what they touched.
async fn run(
    shared: Arc<Shared>,
    mut armed: Armed,
    cache: Arc<HubCache>,
    targets: Vec<Target>,
    opts: WatchOptions,
    tx: mpsc::Sender<Result<Reverified, Error>>,
) {
    loop {
        shared.wake.notified().await;
        let first = Instant::now();
        loop {
            let deadline = (first + opts.max_delay).min(Instant::now() + opts.quiet);
            tokio::select! {
                () = shared.wake.notified() => {
                    if Instant::now() >= first + opts.max_delay {
                        break;
                    }
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let batch = shared.take();
        let places: Vec<Place> = batch
            .paths
            .iter()
            .filter_map(|p| classify(cache.root(), p))
            .collect();
        let structural = batch.rescan || places.iter().any(Place::is_structural);
        let renewed = match armed.rearm(&cache, &targets, structural) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "re-arming the cache watcher failed");
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                BTreeSet::new()
            }
        };
        let work = match plan(&cache, &targets, &places, batch.rescan, &renewed) {
            Ok(w) => w,
            Err(e) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        debug!(
            paths = batch.paths.len(),
            targets = work.len(),
            "re-verifying"
        );
        for (target, scope) in work {
            let result = reverify(&cache, &target, scope).await;
            if tx.send(result).await.is_err() {
                return;
            }
        }
    }
}

/// Which targets to re-verify, and which of their files.
fn plan(
    cache: &HubCache,
    targets: &[Target],
    places: &[Place],
    rescan: bool,
    renewed: &BTreeSet<RepoId>,
) -> Result<BTreeMap<Target, Scope>, Error> {
    let mut work: BTreeMap<Target, Scope> = BTreeMap::new();
    for target in targets {
        let mut files_by_etag: Option<HashMap<String, Vec<String>>> = None;
        let folder = target.repo.cache_folder();
        if rescan || renewed.contains(&target.repo) {
            work.insert(target.clone(), Scope::All);
            continue;
        }
        for place in places
            .iter()
            .filter(|p| p.folder() == Some(folder.as_str()))
        {
            let scope = match place {
                Place::Snapshot { commit, path, .. } if *commit == target.commit => match path {
                    Some(p) => Scope::paths([p.clone()]),
                    None => Scope::All,
                },
                Place::Blob { etag, .. } => {
                    if files_by_etag.is_none() {
                        files_by_etag = Some(by_etag(cache, target)?);
                    }
                    match files_by_etag.as_ref().and_then(|m| m.get(etag)) {
                        Some(paths) => Scope::paths(paths.iter().cloned()),
                        None => continue,
                    }
                }
                Place::Repo { .. } => Scope::All,
                _ => continue,
            };
            work.entry(target.clone()).or_default().merge(scope);
        }
    }
    Ok(work)
}

/// A snapshot's files by the blob they link.
fn by_etag(cache: &HubCache, target: &Target) -> Result<HashMap<String, Vec<String>>, Error> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for entry in cache.snapshot_files(&target.repo, &target.commit)? {
        out.entry(entry.etag().to_string())
            .or_default()
            .push(entry.path);
    }
    Ok(out)
}

async fn reverify(
    cache: &Arc<HubCache>,
    target: &Target,
    scope: Scope,
) -> Result<Reverified, Error> {
    let (c, t) = (cache.clone(), target.clone());
    let only = match &scope {
        Scope::All => None,
        Scope::Paths(p) => Some(p.clone()),
    };
    let report = tokio::task::spawn_blocking(move || c.reverify(&t.repo, &t.commit, only.as_ref()))
        .await
        .map_err(|e| Error::io("verify", cache.root(), std::io::Error::other(e.to_string())))??;
    Ok(Reverified {
        repo: target.repo.clone(),
        commit: target.commit.clone(),
        changed: match scope {
            Scope::All => Vec::new(),
            Scope::Paths(p) => p.into_iter().collect(),
        },
        report,
    })
}

#[cfg(test)]
mod tests;
