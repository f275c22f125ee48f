//! `coldctl verify MODEL --here --cache-dir DIR`: re-verify a synced model in the local Hub
//! cache: a cheap fingerprint check (size, mtime, inode) by default, a full hash with `--full`.
//! Exit 0 when the snapshot is complete and intact, 1 otherwise; `coldctl warm` repairs.

use anyhow::Context;
use coldstart_agent::weights::RepoId;
use coldstart_agent::weights::cache::VerifyMode;
use serde_json::json;

use super::warm::{HubArgs, fail};
use crate::output::{self, Format};
use crate::{Cli, EXIT_USAGE};

/// Arguments of `coldctl verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hugging Face model id (`org/name`).
    pub model: String,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Hash every byte instead of comparing fingerprints.
    #[arg(long)]
    pub full: bool,
}

/// Runs the verb; returns the exit code.
pub async fn run(cli: &Cli, args: &Args) -> u8 {
    if !cli.here {
        eprintln!("error: only `coldctl verify --here` is available in this version");
        return EXIT_USAGE;
    }
    match verify(args).await {
        Ok((report, ok)) => {
            match cli.output {
                Format::Json => output::print_json(&json!({ "ok": ok, "report": report })),
                Format::Text => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
            }
            if ok { 0 } else { 1 }
        }
        Err(e) => fail(cli, &[e]),
    }
}

async fn verify(args: &Args) -> anyhow::Result<(serde_json::Value, bool)> {
    let repo = RepoId::parse(&args.model)?;
    let cache = args.hub.open_cache()?;
    let commit = resolve_local(&cache.repo_dir(&repo), &args.hub.revision)?;
    let mode = if args.full {
        VerifyMode::Full
    } else {
        VerifyMode::Quick
    };
    let (c, r) = (cache.clone(), repo.clone());
    let report = tokio::task::spawn_blocking(move || c.verify(&r, &commit, mode))
        .await
        .context("verify task")??;
    let ok = report.is_ok();
    Ok((serde_json::to_value(&report)?, ok))
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
