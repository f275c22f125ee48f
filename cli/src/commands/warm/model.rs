//! The weights half of `coldctl warm MODEL --here`: sync the model's files from the Hub into
//! the local Hub cache, verified.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use coldstart_agent::weights::budget::Wanted;
use coldstart_agent::weights::cache::PublishHook;
use coldstart_agent::weights::filter::Filter;
use coldstart_agent::weights::sync::{PROGRESS_INTERVAL, SyncOptions, SyncReport, Syncer};
use coldstart_agent::weights::transfer::TransferOptions;
use coldstart_agent::weights::{RepoId, validate_revision};
use indicatif::MultiProgress;

use crate::args::{CachePaths, HubArgs, SyncArgs};
use crate::output::{self, Format, SizedBar};
use crate::report::CliError;

/// The download bar.
const TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// Validated inputs of a model sync, checked before any work starts.
pub struct Prepared {
    repo: RepoId,
    opts: SyncOptions,
    syncer: Syncer,
}

/// Parses and opens everything; bad input fails here, before any download.
pub fn prepare(hub: &HubArgs, sync: &SyncArgs, model: &str) -> Result<Prepared, CliError> {
    let paths = hub.cache_paths()?;
    Ok(prepare_at(hub, sync, model, &paths)?)
}

fn prepare_at(
    hub: &HubArgs,
    sync: &SyncArgs,
    model: &str,
    paths: &CachePaths,
) -> anyhow::Result<Prepared> {
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
    let mut cache = paths.open()?;
    if let Some(step) = sync.kill_at {
        let hooked = (*cache)
            .clone()
            .with_publish_hook(PublishHook::kill_at(step));
        cache = Arc::new(hooked);
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
    let multi = bars.filter(|_| format == Format::Text);
    let mut bar = SizedBar::new(multi, TEMPLATE, p.repo.to_string());
    let name = p.repo.to_string();
    let drawing = multi.is_some();
    let watcher = tokio::spawn(async move {
        let mut last_pct = None;
        loop {
            tokio::time::sleep(PROGRESS_INTERVAL).await;
            let total = progress.total.load(Ordering::Relaxed);
            let done = progress
                .counters
                .downloaded
                .load(Ordering::Relaxed)
                .min(total);
            if drawing {
                bar.update(done, Some(total));
            } else if let Some(pct) = (done * 100).checked_div(total)
                && last_pct.is_none_or(|l: u64| pct >= l + 5)
            {
                last_pct = Some(pct);
                eprintln!(
                    "{name}: {pct}% {}/{}",
                    output::bytes(done),
                    output::bytes(total)
                );
            }
        }
    });
    let result = p
        .syncer
        .sync(&p.repo, &p.opts, std::time::SystemTime::now())
        .await;
    // Aborting drops the bar, which clears it.
    watcher.abort();
    let _ = watcher.await;
    Ok(result?)
}
