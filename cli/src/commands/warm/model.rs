//! The weights half of `coldctl warm MODEL --here`: sync the model's files from the Hub into
//! the local Hub cache, verified.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use coldstart_agent::weights::budget::{self, Wanted};
use coldstart_agent::weights::cache::HubCache;
use coldstart_agent::weights::cache::{PublishHook, PublishStep};
use coldstart_agent::weights::filter::Filter;
use coldstart_agent::weights::hub::{HubClient, HubOptions};
use coldstart_agent::weights::sync::{PROGRESS_INTERVAL, SyncOptions, SyncReport, Syncer};
use coldstart_agent::weights::transfer::TransferOptions;
use coldstart_agent::weights::{RepoId, validate_revision};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::output::{self, Format};

/// Hub and cache flags shared by `warm` and `verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct HubArgs {
    /// Hub cache directory on local NVMe (what pods mount read-only as `HF_HUB_CACHE`).
    #[arg(long, env = "COLDSTART_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Our state (journals, fingerprints): a sibling of the cache dir by default.
    #[arg(long, env = "COLDSTART_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Hub endpoint (a mirror works too).
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    pub endpoint: String,
    /// Branch, tag or commit (default `main`; in cluster mode, default: keep the ColdModel's).
    #[arg(long)]
    pub revision: Option<String>,
    /// A file holding the Hub token (else `HF_TOKEN`). Never logged.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Longest silence (seconds) while reading from the Hub before the request is retried.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub hub_read_timeout: u64,
    /// Token from the environment, as the Hub's own clients read it.
    #[arg(
        long = "hf-token-env",
        env = "HF_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub token_env: Option<String>,
}

impl HubArgs {
    /// The revision to sync or verify here: `--revision`, else `main`.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The cache dir, required for model work.
    pub fn cache_dir(&self) -> anyhow::Result<&Path> {
        self.cache_dir
            .as_deref()
            .context("--cache-dir (or COLDSTART_CACHE_DIR) is required for a model")
    }

    /// Opens the cache (creating it).
    pub fn open_cache(&self) -> anyhow::Result<Arc<HubCache>> {
        let dir = self.cache_dir()?;
        Ok(Arc::new(HubCache::open(dir, self.state_dir.as_deref())?))
    }

    /// A Hub client with the token from `--token-file` or `HF_TOKEN`.
    pub fn hub(&self) -> anyhow::Result<HubClient> {
        let mut opts = HubOptions::new(&self.endpoint);
        opts.read_timeout = std::time::Duration::from_secs(self.hub_read_timeout);
        opts.token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading token file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => self.token_env.clone().filter(|t| !t.is_empty()),
        };
        Ok(HubClient::new(opts)?)
    }
}

/// Sync tuning flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// Only files matching these globs (replaces the default vLLM selection).
    #[arg(long = "include")]
    pub include: Vec<String>,
    /// Leave out files matching these globs.
    #[arg(long = "exclude")]
    pub exclude: Vec<String>,
    /// Connections in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub connections: u64,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub files_at_once: u64,
    /// Range size in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub chunk_mib: u64,
    /// Free space (MiB) to leave on the cache's filesystem.
    #[arg(long, default_value_t = 1024)]
    pub cache_margin_mib: u64,
    /// The minimum rate, in KiB per `--hub-min-rate-window`: a connection below it is dropped
    /// and its range resumed on a fresh one; the file fails after the attempts (0: no floor).
    #[arg(long, default_value_t = 64)]
    pub hub_min_rate_kib: u64,
    /// The window of the minimum rate, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub hub_min_rate_window: u64,
    /// Crash tests only: SIGKILL this process right after the named publish step
    /// (`started`, `trees-written`, `snapshot-built`, `snapshot-published`, `ref-staged`,
    /// `ref-written`).
    #[arg(long, env = "COLDSTART_TEST_KILL_AT", hide = true, value_parser = parse_step)]
    pub kill_at: Option<PublishStep>,
    /// Most bytes the cache may hold, all models together (`500GiB`, `200G`, `1048576`): past
    /// it, models not wanted are evicted least recently used first before downloading.
    #[arg(long, env = "COLDSTART_CACHE_BUDGET", value_name = "SIZE", value_parser = parse_budget)]
    pub cache_budget: Option<u64>,
}

/// `--kill-at`: a publish step's name.
fn parse_step(text: &str) -> Result<PublishStep, String> {
    PublishStep::parse(text).ok_or_else(|| format!("no publish step named {text:?}"))
}

/// `--cache-budget` through the library's parser (a clear usage error on garbage).
fn parse_budget(text: &str) -> Result<u64, String> {
    budget::parse_size(text).map_err(|e| e.to_string())
}

/// Validated inputs of a model sync, checked before any work starts.
pub struct Prepared {
    repo: RepoId,
    opts: SyncOptions,
    syncer: Syncer,
}

/// Parses and opens everything; bad input fails here, before any download.
pub fn prepare(hub: &HubArgs, sync: &SyncArgs, model: &str) -> anyhow::Result<Prepared> {
    let repo = RepoId::parse(model)?;
    validate_revision(hub.revision())?;
    let filter = Filter::new(&sync.include, &sync.exclude)?;
    let mut opts = SyncOptions::new(filter);
    opts.revision = hub.revision().to_string();
    opts.files_at_once = sync.files_at_once as usize;
    opts.margin_bytes = sync.cache_margin_mib << 20;
    opts.budget_bytes = sync.cache_budget;
    opts.wanted = vec![Wanted {
        repo: repo.clone(),
        revision: hub.revision().to_string(),
    }];
    opts.transfer = TransferOptions {
        connections: sync.connections as usize,
        chunk_bytes: sync.chunk_mib << 20,
        journal_bytes: sync.chunk_mib << 20,
        min_rate_bytes: sync.hub_min_rate_kib << 10,
        min_rate_window: std::time::Duration::from_secs(sync.hub_min_rate_window),
        ..TransferOptions::default()
    };
    let mut cache = hub.open_cache()?;
    if let Some(step) = sync.kill_at {
        cache = Arc::new(
            (*cache)
                .clone()
                .with_publish_hook(PublishHook::kill_at(step)),
        );
    }
    let syncer = Syncer::new(hub.hub()?, cache, opts.transfer.clone());
    Ok(Prepared { repo, opts, syncer })
}

/// Runs the sync with a progress bar (terminal) or periodic lines (otherwise).
pub async fn warm(
    format: Format,
    bars: Option<&MultiProgress>,
    p: Prepared,
) -> anyhow::Result<SyncReport> {
    let progress = p.syncer.progress();
    let bar = bars.filter(|_| format == Format::Text).map(|m| {
        let bar = m.add(ProgressBar::new(0));
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(p.repo.to_string());
        bar
    });
    let name = p.repo.to_string();
    let watcher = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut last_pct = None;
            loop {
                tokio::time::sleep(PROGRESS_INTERVAL).await;
                let total = progress.total.load(Ordering::Relaxed);
                let done = progress
                    .counters
                    .downloaded
                    .load(Ordering::Relaxed)
                    .min(total);
                match &bar {
                    Some(b) => {
                        b.set_length(total);
                        b.set_position(done);
                    }
                    None if total > 0 => {
                        let pct = done * 100 / total;
                        if last_pct.is_none_or(|l: u64| pct >= l + 5) {
                            last_pct = Some(pct);
                            eprintln!(
                                "{name}: {pct}% {}/{}",
                                output::bytes(done),
                                output::bytes(total)
                            );
                        }
                    }
                    None => {}
                }
            }
        })
    };
    let result = p
        .syncer
        .sync(&p.repo, &p.opts, std::time::SystemTime::now())
        .await;
    watcher.abort();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(result?)
}
