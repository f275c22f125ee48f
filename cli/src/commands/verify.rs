//! `coldctl verify MODEL --here --cache-dir DIR`: re-verify a synced model in the local Hub
//! cache: the cheap fingerprint check (size, mtime, ctime, inode) first and a full hash of
//! just the blobs whose fingerprint changed; every byte with `--full`. Exit 0 when the
//! snapshot is complete and intact, 1 otherwise; `coldctl warm` repairs.
//!
//! With `--watch`, keeps watching the snapshot (inotify) after the first verification and
//! re-verifies what changes underneath, one line (or one JSON document per line with
//! `-o json`) per re-verification, until SIGINT/SIGTERM or `--watch-for` seconds; the exit
//! code then follows the last verification.

mod watch;

use anyhow::Context;
use coldstart_agent::weights::RepoId;
use coldstart_agent::weights::cache::{HubCache, VerifyMode, VerifyReport};
use serde_json::json;

use crate::args::HubArgs;
use crate::report::{CliError, EXIT_FAILURE, Output};
use crate::{Backend, Cli};

/// Arguments of `coldctl verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hugging Face model id (`org/name`).
    pub model: String,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Hash every byte instead of trusting unchanged fingerprints.
    #[arg(long)]
    pub full: bool,
    /// Keep watching the cache and re-verify what changes underneath, until SIGINT/SIGTERM.
    #[arg(long)]
    pub watch: bool,
    /// With `--watch`: stop after this many seconds.
    #[arg(long, value_name = "SECONDS", requires = "watch",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_for: Option<u64>,
}

/// Runs the verb: the report when the snapshot is intact, a [`CliError::Outcome`] carrying
/// it when not.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    match cli.backend() {
        Backend::Here => {}
        Backend::Node(_) => {
            return Err(CliError::usage(
                "verify runs on the node: use `coldctl verify --here`",
            ));
        }
        Backend::Cluster => {
            return Err(CliError::usage(
                "only `coldctl verify --here` is available in this version",
            ));
        }
    }
    let opened = open(args)?;
    if args.watch {
        return watch::run(cli, args, opened).await;
    }
    let report = verify(&opened, args.full).await?;
    let ok = report.is_ok();
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    let output = Output::line(json!({ "ok": ok, "report": report }), text);
    if ok {
        Ok(output)
    } else {
        // The report says what is wrong, on stdout; `coldctl warm` repairs.
        Err(CliError::Outcome {
            code: EXIT_FAILURE,
            kind: "problems",
            output,
            errors: Vec::new(),
        })
    }
}

/// The cache and the snapshot a `verify` looks at.
pub struct Opened {
    cache: std::sync::Arc<HubCache>,
    repo: RepoId,
    commit: String,
}

fn open(args: &Args) -> anyhow::Result<Opened> {
    let repo = RepoId::parse(&args.model)?;
    let cache = args.hub.open_cache()?;
    let commit = resolve_local(&cache.repo_dir(&repo), args.hub.revision())?;
    Ok(Opened {
        cache,
        repo,
        commit,
    })
}

/// Fingerprints first (a hash where one changed), or every byte when `full`.
async fn verify(o: &Opened, full: bool) -> anyhow::Result<VerifyReport> {
    let (c, r, commit) = (o.cache.clone(), o.repo.clone(), o.commit.clone());
    let report = tokio::task::spawn_blocking(move || {
        if full {
            c.verify(&r, &commit, VerifyMode::Full)
        } else {
            c.reverify(&r, &commit, None)
        }
    })
    .await
    .context("verify task")??;
    Ok(report)
}

/// The commit a revision names in the local cache: a commit sha as is, else `refs/<rev>`.
fn resolve_local(repo_dir: &std::path::Path, revision: &str) -> anyhow::Result<String> {
    if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(revision.to_ascii_lowercase());
    }
    coldstart_agent::weights::safe_relative_path(revision)?;
    let path = repo_dir.join("refs").join(revision);
    let commit = std::fs::read_to_string(&path)
        .with_context(|| format!("{} is not synced here ({})", revision, path.display()))?;
    Ok(commit.trim().to_string())
}
