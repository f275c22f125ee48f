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
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::args::{HubArgs, SyncArgs};
use crate::output::{self, Format};

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
