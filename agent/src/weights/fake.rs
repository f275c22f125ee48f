//! A stateful, in-memory stand-in for the Hub and the Hub cache, with failure knobs.
//!
//! It keeps a hub (revisions of repositories, each with a commit and a size) and a cache
//! (published snapshots per repository). A sync moves `chunk` bytes per `tick` of tokio time,
//! so paused-time tests see progress, and publishes the snapshot only at the end, as the real
//! port does; dropping a sync leaves nothing published.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::cache::{ModelUsage, VerifyMode, VerifyReport};
use super::port::{SyncJob, SyncProgress, Synced, Weights};
use super::{Error, RepoId};

/// A failure the fake injects into the next sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFault {
    /// The Hub answers 5xx / cannot be reached.
    HubDown,
    /// The Hub refuses the token.
    Unauthorized,
    /// A downloaded file does not match its digest.
    Mismatch,
    /// The cache's disk is full.
    DiskFull,
}

/// One revision the fake hub serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRevision {
    /// The commit it resolves to.
    pub commit: String,
    /// Bytes of the selected files.
    pub bytes: u64,
}

/// Everything the fake holds; tests read and set it through [`Fake::state`].
#[derive(Debug)]
pub struct State {
    /// Revisions the hub serves, by `(repo, revision)`.
    pub hub: HashMap<(String, String), FakeRevision>,
    /// Published snapshots: repo -> commit -> bytes.
    pub cache: BTreeMap<String, BTreeMap<String, u64>>,
    /// Bytes moved per tick while syncing.
    pub chunk: u64,
    /// Length of a tick.
    pub tick: Duration,
    /// Failures injected into the next syncs, in order (after the revision resolved).
    pub fail_syncs: VecDeque<WeightsFault>,
    /// When true, syncs stop moving bytes (a stalled transfer) until it is cleared.
    pub stalled: bool,
    /// When true, inventory and evict fail as if the cache's disk were gone.
    pub disk_gone: bool,
    /// Bytes the hub served, in all.
    pub served: u64,
    /// The token of the last sync (to check that per-model tokens arrive).
    pub last_token: Option<String>,
    /// Names of the calls made, in order (`sync org/name@rev`, `inventory`, `evict org/name`).
    pub calls: Vec<String>,
}

/// The fake weights port. Clones share state.
#[derive(Debug, Clone)]
pub struct Fake {
    inner: Arc<Mutex<State>>,
}

impl Default for Fake {
    fn default() -> Self {
        Self::new()
    }
}

impl Fake {
    /// An empty hub and cache: 64 KiB per 10 ms.
    pub fn new() -> Self {
        Fake {
            inner: Arc::new(Mutex::new(State {
                hub: HashMap::new(),
                cache: BTreeMap::new(),
                chunk: 64 << 10,
                tick: Duration::from_millis(10),
                fail_syncs: VecDeque::new(),
                stalled: false,
                disk_gone: false,
                served: 0,
                last_token: None,
                calls: Vec::new(),
            })),
        }
    }

    /// Locks the state for reading or setting knobs.
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has already failed.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves `repo` at `revision` with `bytes` of selected files; returns the new commit (a
    /// later publish of the same revision moves it, as a push to a branch does).
    pub fn publish(&self, repo: &str, revision: &str, bytes: u64) -> String {
        let mut st = self.state();
        let n = st.hub.len();
        let digest = Sha256::digest(format!("{repo}@{revision}#{n}#{bytes}"));
        let commit: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
        let rev = FakeRevision {
            commit: commit.clone(),
            bytes,
        };
        st.hub.insert((repo.to_string(), revision.to_string()), rev);
        commit
    }

    /// Removes a repository's snapshots behind the port's back (a wiped disk, `rm -rf`).
    pub fn wipe(&self, repo: &str) {
        self.state().cache.remove(repo);
    }

    /// The commits published in the cache for `repo`.
    pub fn held(&self, repo: &str) -> Vec<String> {
        let st = self.state();
        st.cache
            .get(repo)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// How many syncs were started.
    pub fn syncs(&self) -> usize {
        let st = self.state();
        st.calls.iter().filter(|c| c.starts_with("sync ")).count()
    }

    fn resolve(&self, job: &SyncJob) -> Result<FakeRevision, Error> {
        let mut st = self.state();
        st.calls.push(format!("sync {}@{}", job.repo, job.revision));
        st.last_token.clone_from(&job.token);
        let key = (job.repo.to_string(), job.revision.clone());
        st.hub.get(&key).cloned().ok_or_else(|| Error::NotFound {
            what: format!("{}@{}", job.repo, job.revision),
            reason: "revision not found".into(),
        })
    }

    fn fault(&self, job: &SyncJob, rev: &FakeRevision) -> Option<Error> {
        let fault = self.state().fail_syncs.pop_front()?;
        let url = format!("fake://hub/{}", job.repo);
        Some(match fault {
            WeightsFault::HubDown => Error::Http {
                url,
                reason: "503 Service Unavailable".into(),
            },
            WeightsFault::Unauthorized => Error::Unauthorized {
                what: job.repo.to_string(),
                status: 401,
            },
            WeightsFault::Mismatch => Error::Mismatch {
                path: "model.safetensors".into(),
                kind: "sha256",
                expected: rev.commit.clone(),
                actual: "0".repeat(40),
            },
            WeightsFault::DiskFull => Error::DiskFull {
                path: "/fake/cache".into(),
                needed: rev.bytes,
                available: 0,
            },
        })
    }

    /// Moves one chunk; `true` once all `total` bytes arrived.
    fn step(&self, progress: &SyncProgress, total: u64) -> bool {
        let mut st = self.state();
        if st.stalled {
            return false;
        }
        let done = progress.done.load(Ordering::Relaxed);
        let add = st.chunk.min(total - done.min(total));
        st.served += add;
        progress.done.store(done + add, Ordering::Relaxed);
        done + add >= total
    }

    fn disk(&self, call: String) -> Result<(), Error> {
        let mut st = self.state();
        st.calls.push(call);
        if st.disk_gone {
            return Err(Error::io(
                "list",
                "/fake/cache",
                std::io::Error::from_raw_os_error(5),
            ));
        }
        Ok(())
    }
}

impl Weights for Fake {
    async fn sync(&self, job: SyncJob, progress: Arc<SyncProgress>) -> Result<Synced, Error> {
        let rev = self.resolve(&job)?;
        if let Some(e) = self.fault(&job, &rev) {
            return Err(e);
        }
        let have = self.held(&job.repo.to_string()).contains(&rev.commit);
        let total = if have { 0 } else { rev.bytes };
        progress.total.store(total, Ordering::Relaxed);
        let tick = self.state().tick;
        while !self.step(&progress, total) {
            tokio::time::sleep(tick).await;
        }
        self.state()
            .cache
            .entry(job.repo.to_string())
            .or_default()
            .insert(rev.commit.clone(), rev.bytes);
        Ok(Synced {
            commit: rev.commit,
            bytes: rev.bytes,
        })
    }

    async fn inventory(&self) -> Result<Vec<ModelUsage>, Error> {
        self.disk("inventory".into())?;
        let st = self.state();
        let mut out = Vec::new();
        for (repo, commits) in &st.cache {
            for (commit, bytes) in commits {
                out.push(ModelUsage {
                    repo: RepoId::parse(repo)?,
                    commit: commit.clone(),
                    bytes: *bytes,
                    exclusive_bytes: *bytes,
                    refs: Vec::new(),
                    last_used: SystemTime::UNIX_EPOCH,
                });
            }
        }
        Ok(out)
    }

    async fn evict(&self, repo: RepoId) -> Result<u64, Error> {
        self.disk(format!("evict {repo}"))?;
        let gone = self.state().cache.remove(&repo.to_string());
        Ok(gone.map_or(0, |c| c.values().sum()))
    }

    async fn verify(&self, repo: RepoId, commit: String) -> Result<VerifyReport, Error> {
        self.disk(format!("verify {repo}@{commit}"))?;
        let bytes = self
            .state()
            .cache
            .get(&repo.to_string())
            .and_then(|c| c.get(&commit).copied());
        let Some(bytes) = bytes else {
            return Err(Error::NotFound {
                what: format!("{repo}@{commit}"),
                reason: "no such snapshot in the cache".into(),
            });
        };
        Ok(VerifyReport {
            repo: repo.to_string(),
            commit,
            mode: VerifyMode::Quick,
            files: 1,
            bytes,
            hashed: 0,
            problems: Vec::new(),
        })
    }
}
