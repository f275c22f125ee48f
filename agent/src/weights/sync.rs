//! One model revision end to end: resolve, list, select, plan, check disk, download and
//! verify, publish. Files already present and verified are skipped without a request.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, TryStreamExt};
use tokio::time::Instant;
use tracing::{info, instrument};

use super::budget::{Demand, Evicted, Wanted, plan_eviction};
use super::cache::HubCache;
use super::filter::{Filter, shards_of_index};
use super::hub::HubClient;
use super::transfer::{Counters, Engine, TransferOptions};
use super::{Error, RepoId, TreeEntry, is_commit_sha, validate_revision};

/// What to sync and how.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Branch, tag or commit.
    pub revision: String,
    /// Include/exclude rules.
    pub filter: Filter,
    /// Files downloaded at once.
    pub files_at_once: usize,
    /// Free space to leave on the cache's filesystem.
    pub margin_bytes: u64,
    /// The engine's tuning.
    pub transfer: TransferOptions,
    /// Bytes the cache may hold (all models); past it, unwanted snapshots are evicted least
    /// recently used first before anything is downloaded. `None`: no budget.
    pub budget_bytes: Option<u64>,
    /// Snapshots the node wants kept whatever the budget (the one being synced always is).
    pub wanted: Vec<Wanted>,
}

impl SyncOptions {
    /// Defaults: `main`, the vLLM selection, 4 files at once, 1 GiB margin.
    pub fn new(filter: Filter) -> Self {
        SyncOptions {
            revision: "main".to_string(),
            filter,
            files_at_once: 4,
            margin_bytes: 1 << 30,
            transfer: TransferOptions::default(),
            budget_bytes: None,
            wanted: Vec::new(),
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    /// The Hub model id (`org/name`).
    pub repo: RepoId,
    /// Revision asked for.
    pub revision: String,
    /// Commit it resolved to.
    pub commit: String,
    /// The published snapshot directory (what `HF_HUB_CACHE` readers open).
    pub snapshot: PathBuf,
    /// Files selected.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Files downloaded this time.
    pub downloaded_files: usize,
    /// Bytes received from the network this time.
    pub downloaded_bytes: u64,
    /// Patterns a reader passes as `allow_patterns` to load exactly this selection.
    pub allow_patterns: Vec<String>,
    /// Snapshots evicted to stay within the budget, with the bytes each freed.
    pub evicted: Vec<Evicted>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Progress of a sync, polled by displays.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Bytes to download, once planned (0 before).
    pub total: Arc<std::sync::atomic::AtomicU64>,
    /// The engine's counters.
    pub counters: Arc<Counters>,
}

/// Syncs one model revision into `cache`.
pub struct Syncer {
    hub: HubClient,
    cache: Arc<HubCache>,
    engine: Engine,
    total: Arc<std::sync::atomic::AtomicU64>,
}

impl Syncer {
    /// A syncer over `hub` and `cache`.
    pub fn new(hub: HubClient, cache: Arc<HubCache>, transfer: TransferOptions) -> Syncer {
        let engine = Engine::new(hub.clone(), cache.clone(), transfer);
        Syncer {
            hub,
            cache,
            engine,
            total: Arc::default(),
        }
    }

    /// Handles for progress displays.
    pub fn progress(&self) -> Progress {
        Progress {
            total: self.total.clone(),
            counters: self.engine.counters(),
        }
    }

    /// Syncs `repo` at `opts.revision`; `now` is recorded as the model's last use.
    #[instrument(skip_all, fields(repo = %repo, revision = %opts.revision), err(level = "debug"))]
    pub async fn sync(
        &self,
        repo: &RepoId,
        opts: &SyncOptions,
        now: std::time::SystemTime,
    ) -> Result<SyncReport, Error> {
        let started = Instant::now();
        validate_revision(&opts.revision)?;
        self.cache.clean_temporaries(repo)?;
        let commit = self.hub.resolve_revision(repo, &opts.revision).await?;
        if is_commit_sha(&opts.revision) && !commit.eq_ignore_ascii_case(&opts.revision) {
            return Err(Error::CommitMismatch {
                revision: opts.revision.clone(),
                resolved: commit,
            });
        }
        let tree = self.hub.list_tree(repo, &commit).await?;
        let shards = self
            .read_indexes(repo, &commit, &tree, &opts.filter)
            .await?;
        let selected = opts.filter.select(&tree, &shards);
        let mut missing = Vec::new();
        for entry in &selected {
            if !self.present(repo, entry).await? {
                missing.push(entry.clone());
            }
        }
        let need: u64 = missing.iter().map(TreeEntry::content_size).sum();
        self.total.store(need, std::sync::atomic::Ordering::Relaxed);
        let evicted = self.fit_budget(repo, &commit, &selected, &missing, opts)?;
        self.check_disk(need, opts.margin_bytes)?;
        info!(
            selected = selected.len(),
            missing = missing.len(),
            bytes = need,
            "plan"
        );
        let downloaded_before = self
            .engine
            .counters()
            .downloaded
            .load(std::sync::atomic::Ordering::Relaxed);
        stream::iter(missing.iter().map(Ok))
            .try_for_each_concurrent(opts.files_at_once.max(1), |entry| {
                let engine = self.engine.clone();
                let commit = commit.clone();
                async move { engine.fetch(repo, &commit, entry).await.map(|_| ()) }
            })
            .await?;
        let snapshot = self
            .cache
            .publish(repo, &opts.revision, &commit, &tree, &selected)?;
        self.cache.touch(repo, &commit, now)?;
        let downloaded = self
            .engine
            .counters()
            .downloaded
            .load(std::sync::atomic::Ordering::Relaxed)
            - downloaded_before;
        Ok(SyncReport {
            repo: repo.clone(),
            revision: opts.revision.clone(),
            commit,
            snapshot,
            files: selected.len(),
            bytes: selected.iter().map(TreeEntry::content_size).sum(),
            downloaded_files: missing.len(),
            downloaded_bytes: downloaded,
            allow_patterns: opts.filter.allow_patterns(&selected),
            evicted,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Whether the blob is in the cache and verified: the fingerprint recorded at finalize
    /// still matches (cheap), else a full hash (and a re-record when it passes).
    async fn present(&self, repo: &RepoId, entry: &TreeEntry) -> Result<bool, Error> {
        if self.cache.blob_is_current(repo, entry)? {
            return Ok(true);
        }
        let path = self.cache.blob_path(repo, entry.etag());
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(false);
        }
        let (cache, repo2, entry2) = (self.cache.clone(), repo.clone(), entry.clone());
        let ok = tokio::task::spawn_blocking(move || cache.verify_blob(&repo2, &entry2))
            .await
            .map_err(|e| Error::io("verify", &path, std::io::Error::other(e.to_string())))??;
        if !ok {
            // A corrupt blob: remove it so the download replaces it.
            std::fs::remove_file(&path).map_err(|e| Error::io("remove corrupt blob", &path, e))?;
        }
        Ok(ok)
    }

    /// Downloads the selection's index files (they are selected anyway) and reads the shards
    /// they name.
    async fn read_indexes(
        &self,
        repo: &RepoId,
        commit: &str,
        tree: &[TreeEntry],
        filter: &Filter,
    ) -> Result<BTreeSet<String>, Error> {
        let mut shards = BTreeSet::new();
        for index in filter.index_files(tree) {
            if !self.present(repo, index).await? {
                self.engine.fetch(repo, commit, index).await?;
            }
            let path = self.cache.blob_path(repo, index.etag());
            let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
            shards.extend(shards_of_index(&index.path, &bytes)?);
        }
        Ok(shards)
    }

    /// Evicts unwanted snapshots, least recently used first, until what the cache holds plus
    /// what is still to download fits the budget; fails before any download (and without
    /// evicting anything) when it cannot fit. Never removes a blob that a wanted snapshot or
    /// this sync links.
    fn fit_budget(
        &self,
        repo: &RepoId,
        commit: &str,
        selected: &[TreeEntry],
        missing: &[TreeEntry],
        opts: &SyncOptions,
    ) -> Result<Vec<Evicted>, Error> {
        let Some(budget) = opts.budget_bytes else {
            return Ok(Vec::new());
        };
        // Partial downloads already count as in use: only the rest is new.
        let need = missing
            .iter()
            .map(|e| {
                let partial = std::fs::symlink_metadata(self.cache.incomplete_path(repo, e.etag()))
                    .map_or(0, |m| m.len());
                e.content_size().saturating_sub(partial)
            })
            .sum();
        let mut wanted = opts.wanted.clone();
        wanted.push(Wanted {
            repo: repo.clone(),
            revision: commit.to_string(),
        });
        let ours: BTreeSet<String> = selected.iter().map(|e| e.etag().to_string()).collect();
        let protect = ours.iter().map(|e| (repo.clone(), e.clone())).collect();
        let usage = self.cache.usage()?;
        let demand = Demand {
            budget,
            need,
            wanted: &wanted,
            protect: &protect,
        };
        let plan = plan_eviction(&usage, &demand)?;
        let none = BTreeSet::new();
        let mut out = Vec::with_capacity(plan.len());
        for e in plan {
            let keep = if e.repo == *repo { &ours } else { &none };
            let bytes = self.cache.evict_keeping(&e.repo, &e.commit, keep)?;
            info!(repo = %e.repo, commit = %e.commit, bytes, "evicted to fit the cache budget");
            out.push(Evicted { bytes, ..e });
        }
        Ok(out)
    }

    fn check_disk(&self, need: u64, margin: u64) -> Result<(), Error> {
        let root = self.cache.root();
        let st = nix::sys::statvfs::statvfs(root)
            .map_err(|e| Error::io("statvfs", root, std::io::Error::from(e)))?;
        let available = st.blocks_available() * st.fragment_size();
        if need + margin > available {
            return Err(Error::DiskFull {
                path: root.to_path_buf(),
                needed: need + margin,
                available,
            });
        }
        Ok(())
    }
}

/// Default pause between progress reads for displays.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests;
