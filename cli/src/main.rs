//! `coldctl`: the operator's command line for coldstart.
//!
//! Exit codes: 0 success, 1 failure, 64 bad usage (as sysexits' EX_USAGE).

mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad usage.
pub const EXIT_USAGE: u8 = 64;

/// coldstart operator command line.
#[derive(Debug, Parser)]
#[command(name = "coldctl", version, about)]
pub struct Cli {
    /// Do the work in this process, on this node, with no cluster and no running agent.
    #[arg(long, global = true)]
    pub here: bool,
    /// Output format: text, or exactly one JSON document on stdout.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = output::Format::Text)]
    pub output: output::Format,
    /// Log filter (RUST_LOG syntax); logs always go to stderr.
    #[arg(long, global = true, env = "COLDSTART_LOG", default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make this node warm: sync a model's weights and/or pre-pull its image, pinned.
    Warm(Box<commands::warm::Args>),
    /// Re-verify a synced model in the local Hub cache.
    Verify(Box<commands::verify::Args>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { EXIT_USAGE } else { 0 });
        }
    };
    let format = if cli.output == output::Format::Json || !output::stderr_is_terminal() {
        coldstart_agent::telemetry::LogFormat::Json
    } else {
        coldstart_agent::telemetry::LogFormat::Text
    };
    coldstart_agent::telemetry::init(&cli.log, format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Warm(ref args) => commands::warm::run(&cli, args).await,
            Command::Verify(ref args) => commands::verify::run(&cli, args).await,
        }
    });
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Clap's own consistency checks (unique names, valid defaults) run only in debug builds
    /// when a subcommand is first parsed; run them over the whole tree here.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
