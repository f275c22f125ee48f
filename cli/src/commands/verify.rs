//! `coldctl verify MODEL --here --cache-root DIR`: re-verify a synced model in the local Hub
//! cache: the cheap fingerprint check (size, mtime, ctime, inode) first and a full hash of
//! just the blobs whose fingerprint changed; every byte with `--full`. Exit 0 when the
//! snapshot is complete and intact, 1 otherwise; `coldctl warm` repairs. `--cache-root` is
//! the agent's: its fingerprints (in `<root>/state`) spare re-hashing what it verified.
//!
//! One line per verification in text; `-o json|yaml`: `{"ok", "report": {"repo", "commit",
//! "mode", "files", "bytes", "hashed", "problems": [{"path", "kind", "detail"}]}}`
//! (`--watch` adds `"changed"` and prints one JSON document per line).
//!
//! With `--watch`, keeps watching the snapshot (inotify) after the first verification and
//! re-verifies what changes underneath, one line (or one JSON document per line with
//! `-o json`) per re-verification, until SIGINT/SIGTERM or `--watch-for` seconds; the exit
//! code then follows the last verification.

mod watch;

use anyhow::Context;
use coldstart_agent::weights::RepoId;
use coldstart_agent::weights::cache::{HubCache, VerifyMode, VerifyReport};
use serde_json::{Value, json};

use crate::args::HubArgs;
use crate::output;
use crate::report::{CliError, EXIT_FAILURE, NotFound, Output};
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
    let output = Output::line(document(ok, None, &report), line(&report));
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

fn open(args: &Args) -> Result<Opened, CliError> {
    let paths = args.hub.cache_paths()?;
    let repo = RepoId::parse(&args.model).map_err(|e| CliError::usage(e.to_string()))?;
    let cache = paths.open()?;
    let commit = resolve_local(&cache.repo_dir(&repo), args.hub.revision())?;
    Ok(Opened {
        cache,
        repo,
        commit,
    })
}

/// The document of one verification (`changed`: what `--watch` saw change).
pub fn document(ok: bool, changed: Option<&[String]>, report: &VerifyReport) -> Value {
    let mut doc = json!({ "ok": ok, "report": report });
    if let Some(changed) = changed {
        doc["changed"] = json!(changed);
    }
    output::camel_keys(doc)
}

/// The line a person reads: `org/x@0123456789ab: ok (3 files, 1 hashed)`, or the problems.
pub fn line(report: &VerifyReport) -> String {
    let what = format!(
        "{}@{}",
        report.repo,
        &report.commit[..12.min(report.commit.len())]
    );
    if report.is_ok() {
        return format!(
            "{what}: ok ({} files, {} hashed)",
            report.files, report.hashed
        );
    }
    let problems: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("{} {:?}: {}", p.path, p.kind, p.detail))
        .collect();
    format!(
        "{what}: {} problem(s): {}",
        problems.len(),
        problems.join("; ")
    )
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
    match std::fs::read_to_string(&path) {
        Ok(commit) => Ok(commit.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NotFound(format!(
            "{revision} is not synced here (no {})",
            path.display()
        ))
        .into()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
