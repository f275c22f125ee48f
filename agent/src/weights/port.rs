//! The weights port as the orchestration sees it: the [`Weights`] trait (sync with progress,
//! inventory, evict, verify) and [`HubWeights`], the real implementation over the Hub protocol
//! and the Hub cache on disk. The hand-written stand-in is [`super::fake::Fake`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::instrument;

use super::cache::{HubCache, ModelUsage, VerifyReport};
use super::filter::Filter;
use super::hub::{HubClient, HubOptions};
use super::sync::{SyncOptions, Syncer};
use super::transfer::TransferOptions;
use super::{Error, RepoId};

/// What to sync: a model at a revision, the files to select and the token to read them with.
#[derive(Clone)]
pub struct SyncJob {
    /// The model.
    pub repo: RepoId,
    /// Branch, tag or commit.
    pub revision: String,
    /// Include/exclude rules.
    pub filter: Filter,
    /// Hub token for this model, overriding the port's default; never logged.
    pub token: Option<String>,
}

impl std::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncJob")
            .field("repo", &self.repo)
            .field("revision", &self.revision)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// What a finished sync published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The commit the revision resolved to (the snapshot's name).
    pub commit: String,
    /// Bytes of the selected files.
    pub bytes: u64,
}

/// Live progress of a sync, written by the port and read by the warmer's status.
#[derive(Debug, Default)]
pub struct SyncProgress {
    /// Bytes to download, once planned (0 before).
    pub total: AtomicU64,
    /// Bytes downloaded so far.
    pub done: AtomicU64,
}

impl SyncProgress {
    /// `(done, total)`, with `done` never past `total`.
    pub fn read(&self) -> (u64, u64) {
        let total = self.total.load(Ordering::Relaxed);
        (self.done.load(Ordering::Relaxed).min(total), total)
    }
}

/// Model weights on this node: what the warmer syncs, inventories and evicts. Futures are
/// `Send` so that syncs run as tasks.
pub trait Weights: Send + Sync + 'static {
    /// Syncs `job` into the cache and publishes its snapshot atomically, updating `progress`
    /// as bytes arrive. Dropping the future leaves only resumable partial files.
    fn sync(
        &self,
        job: SyncJob,
        progress: Arc<SyncProgress>,
    ) -> impl Future<Output = Result<Synced, Error>> + Send;

    /// Every published snapshot the cache holds.
    fn inventory(&self) -> impl Future<Output = Result<Vec<ModelUsage>, Error>> + Send;

    /// Removes every snapshot of `repo` (and the blobs only they link); the bytes freed.
    fn evict(&self, repo: RepoId) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Re-verifies the snapshot of `repo` at `commit` (fingerprints, then hashes of what
    /// changed); changes nothing.
    fn verify(
        &self,
        repo: RepoId,
        commit: String,
    ) -> impl Future<Output = Result<VerifyReport, Error>> + Send;
}

/// Tuning of [`HubWeights`].
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Hub endpoint and request tuning; the default token (a job's own token overrides it).
    pub hub: HubOptions,
    /// Transfer engine tuning.
    pub transfer: TransferOptions,
    /// Files of one model downloaded at once.
    pub files_at_once: usize,
    /// Free space to leave on the cache's filesystem.
    pub margin_bytes: u64,
    /// Byte budget of the whole Hub cache.
    pub budget_bytes: Option<u64>,
}

impl SyncSettings {
    /// Defaults for a Hub `endpoint`: 4 files at once, 1 GiB margin, no budget.
    pub fn new(endpoint: &str) -> SyncSettings {
        SyncSettings {
            hub: HubOptions::new(endpoint),
            transfer: TransferOptions::default(),
            files_at_once: 4,
            margin_bytes: 1 << 30,
            budget_bytes: None,
        }
    }
}

/// How often a running sync's counters are copied into its [`SyncProgress`].
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// The real weights port: the Hub protocol over HTTP into the Hub cache on local disk.
#[derive(Debug, Clone)]
pub struct HubWeights {
    cache: Arc<HubCache>,
    settings: SyncSettings,
}

impl HubWeights {
    /// The port over `cache`.
    pub fn new(cache: Arc<HubCache>, settings: SyncSettings) -> HubWeights {
        HubWeights { cache, settings }
    }

    /// The cache it writes.
    pub fn cache(&self) -> &Arc<HubCache> {
        &self.cache
    }

    fn syncer(&self, job: &SyncJob) -> Result<(Syncer, SyncOptions), Error> {
        let mut hub = self.settings.hub.clone();
        if job.token.is_some() {
            hub.token = job.token.clone();
        }
        let client = HubClient::new(hub)?;
        let mut opts = SyncOptions::new(job.filter.clone());
        opts.revision = job.revision.clone();
        opts.files_at_once = self.settings.files_at_once;
        opts.margin_bytes = self.settings.margin_bytes;
        opts.transfer = self.settings.transfer.clone();
        opts.budget_bytes = self.settings.budget_bytes;
        let syncer = Syncer::new(client, self.cache.clone(), opts.transfer.clone());
        Ok((syncer, opts))
    }

    /// Runs `f` over the cache on the blocking pool (directory walks, hashing, fsync).
    async fn blocking<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&HubCache) -> Result<T, Error> + Send + 'static,
    {
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || f(&cache))
            .await
            // Only a panic ends a blocking task early: report it as an I/O failure of the cache.
            .map_err(|e| Error::io("walk", self.cache.root(), std::io::Error::other(e)))?
    }
}

impl Weights for HubWeights {
    #[instrument(skip_all, fields(repo = %job.repo, revision = %job.revision), err(level = "debug"))]
    async fn sync(&self, job: SyncJob, progress: Arc<SyncProgress>) -> Result<Synced, Error> {
        let (syncer, opts) = self.syncer(&job)?;
        let handles = syncer.progress();
        let copy = || {
            let total = handles.total.load(Ordering::Relaxed);
            progress.total.store(total, Ordering::Relaxed);
            let done = handles.counters.downloaded.load(Ordering::Relaxed);
            progress.done.store(done.min(total), Ordering::Relaxed);
        };
        let sync = syncer.sync(&job.repo, &opts, std::time::SystemTime::now());
        tokio::pin!(sync);
        let mut tick = tokio::time::interval(PROGRESS_TICK);
        let result = loop {
            tokio::select! {
                r = &mut sync => break r,
                _ = tick.tick() => copy(),
            }
        };
        copy();
        let report = result?;
        Ok(Synced {
            commit: report.commit,
            bytes: report.bytes,
        })
    }

    async fn inventory(&self) -> Result<Vec<ModelUsage>, Error> {
        self.blocking(HubCache::inventory).await
    }

    #[instrument(skip_all, fields(repo = %repo), err(level = "debug"))]
    async fn evict(&self, repo: RepoId) -> Result<u64, Error> {
        self.blocking(move |cache| {
            let mut freed = 0;
            for usage in cache.inventory()? {
                if usage.repo == repo {
                    freed += cache.evict(&repo, &usage.commit)?;
                }
            }
            Ok(freed)
        })
        .await
    }

    #[instrument(skip_all, fields(repo = %repo, commit = %commit), err(level = "debug"))]
    async fn verify(&self, repo: RepoId, commit: String) -> Result<VerifyReport, Error> {
        self.blocking(move |cache| cache.reverify(&repo, &commit, None))
            .await
    }
}
