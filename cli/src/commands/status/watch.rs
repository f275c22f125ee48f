//! `coldctl status --watch`: the status again whenever it changes, until SIGINT/SIGTERM or
//! `--watch-for`. Text: the table, a blank line between two; `-o json|yaml`: one JSON
//! document per line. A failed read is one `error:` line and the watch goes on; the exit
//! code follows the last read.

use tokio::signal::unix::{SignalKind, signal};

use super::{Args, once};
use crate::Cli;
use crate::output::Format;
use crate::report::{CliError, Output};

/// Watches; succeeds when the last read did.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => return Err(anyhow::anyhow!("signal handler: {e}").into()),
    };
    let limit = args
        .watch_for
        .unwrap_or(std::time::Duration::from_secs(100 * 365 * 86_400));
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut last_shown: Option<String> = None;
    let mut last: Result<(), CliError>;
    loop {
        last = match once(cli, args).await {
            Ok(Output::Result { doc, text }) => {
                let shown = match cli.output {
                    Format::Text => text,
                    Format::Json | Format::Yaml => format!("{doc}\n"),
                };
                if last_shown.as_ref() != Some(&shown) {
                    if cli.output == Format::Text && last_shown.is_some() {
                        crate::out!("\n");
                    }
                    crate::out!("{shown}");
                    last_shown = Some(shown);
                }
                Ok(())
            }
            Ok(Output::Streamed) => Ok(()),
            // Bad usage does not get better by asking again.
            Err(e @ CliError::Usage(_)) => return Err(e),
            Err(e) => {
                for line in e.lines(Format::Text) {
                    eprintln!("error: {line}");
                }
                last_shown = None;
                Err(e)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = &mut deadline => break,
        }
    }
    match last {
        Ok(()) => Ok(Output::Streamed),
        // Already printed; only the exit code is left to tell.
        Err(e) => Err(CliError::Outcome {
            code: e.exit_code(),
            kind: "failed",
            output: Output::Streamed,
            errors: Vec::new(),
        }),
    }
}
