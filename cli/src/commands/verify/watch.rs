//! `coldctl verify --watch`: the first verification, then one per change underneath.

use std::time::Duration;

use coldstart_agent::weights::cache::VerifyReport;
use coldstart_agent::weights::watch::{self, Reverified, Target, WatchOptions};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{Args, Opened, verify};
use crate::Cli;
use crate::output::Format;
use crate::report::{CliError, EXIT_FAILURE, Output};

/// Watches until SIGINT/SIGTERM or `--watch-for`, printing as it goes; succeeds when the
/// last verification passed.
pub async fn run(cli: &Cli, args: &Args, o: Opened) -> Result<Output, CliError> {
    // Before anything is printed: whoever reads the first line may signal right away.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => return Err(anyhow::anyhow!("signal handler: {e}").into()),
    };
    let (tx, mut rx) = mpsc::channel(64);
    let target = Target {
        repo: o.repo.clone(),
        commit: o.commit.clone(),
    };
    // Watch first, then verify: nothing that changes in between goes unseen.
    let _watcher = watch::watch(o.cache.clone(), vec![target], WatchOptions::default(), tx)
        .map_err(anyhow::Error::from)?;
    let mut ok = print(cli.output, &[], &verify(&o, args.full).await?);
    let limit = args.watch_for.map_or(Duration::MAX, Duration::from_secs);
    let deadline = tokio::time::sleep(limit.min(Duration::from_secs(100 * 365 * 86_400)));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(Ok(Reverified { changed, report, .. })) => {
                    ok = print(cli.output, &changed, &report);
                }
                Some(Err(e)) => {
                    ok = false;
                    print_error(cli.output, &format!("{e:#}"));
                }
                None => break,
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = &mut deadline => break,
        }
    }
    if ok {
        Ok(Output::Streamed)
    } else {
        // The last line printed says what is wrong.
        Err(CliError::Outcome {
            code: EXIT_FAILURE,
            kind: "problems",
            output: Output::Streamed,
            errors: Vec::new(),
        })
    }
}

/// One line per verification; returns whether it passed.
fn print(format: Format, changed: &[String], report: &VerifyReport) -> bool {
    let ok = report.is_ok();
    match format {
        // A stream: one JSON document per line, with -o yaml too (JSON is YAML).
        Format::Json | Format::Yaml => {
            crate::outln!("{}", super::document(ok, Some(changed), report));
        }
        Format::Text => crate::outln!("{}", super::line(report)),
    }
    ok
}

fn print_error(format: Format, msg: &str) {
    match format {
        Format::Json | Format::Yaml => crate::outln!("{}", json!({ "ok": false, "error": msg })),
        Format::Text => eprintln!("error: {msg}"),
    }
}
