//! `coldstart-agent`: the node agent binary.
//!
//! - `run`: the daemon (see `daemon.rs`): the reconcile loop and the admin server, until SIGTERM.
//! - `runtime`: a one-shot report of what the node's containerd says about itself (version, pin
//!   support, snapshotter, storage and free space).
//! - `gpu-check`: a one-shot GPU inventory and health report through NVML (see `gpu_check.rs`).
//!
//! Exit codes: 0 success, 1 failure (for `gpu-check`: unhealthy), 64 bad usage or configuration.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use coldstart_agent::config::RunArgs;
use coldstart_agent::images::{ContainerdConfig, ContainerdImages, Images};
use coldstart_agent::telemetry::{self, LogFormat};

use coldstart_agent::daemon;

mod gpu_check;

#[derive(Debug, Parser)]
#[command(name = "coldstart-agent", version, about = "coldstart node agent")]
struct Cli {
    /// Log filter (RUST_LOG syntax); logs go to stderr.
    #[arg(long, global = true, env = "COLDSTART_LOG", default_value = "info")]
    log: String,
    /// Log format: JSON lines, or text for people; `auto` is JSON unless stderr is a terminal.
    #[arg(long, global = true, env = "COLDSTART_LOG_FORMAT", value_enum, default_value_t = Format::Auto)]
    log_format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Auto,
    Json,
    Text,
}

// Parsed once at startup: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent daemon: the reconcile loop and the admin server (/healthz, /readyz,
    /// /metrics) until SIGTERM or SIGINT. Settings: flags > COLDSTART_* env > --config file >
    /// defaults.
    Run(RunArgs),
    /// Print containerd's version, pin support, snapshotter and storage with free space (JSON).
    Runtime {
        /// containerd socket.
        #[arg(
            long,
            env = "COLDSTART_CONTAINERD_SOCKET",
            default_value = "/run/containerd/containerd.sock"
        )]
        containerd_socket: PathBuf,
    },
    /// Report the GPUs' inventory and health through NVML, once. Exit 0 healthy, 1 unhealthy
    /// (the report is printed either way), 64 bad usage.
    GpuCheck(gpu_check::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { 64 } else { 0 });
        }
    };
    let format = match cli.log_format {
        Format::Json => LogFormat::Json,
        Format::Text => LogFormat::Text,
        Format::Auto if std::io::stderr().is_terminal() => LogFormat::Text,
        Format::Auto => LogFormat::Json,
    };
    telemetry::init(&cli.log, format);
    // Bad configuration is refused before anything starts, on one line, with exit code 64.
    let command = match cli.command {
        Command::Run(args) => match args.load() {
            Ok(cfg) => Resolved::Run(Box::new(cfg)),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(64);
            }
        },
        Command::Runtime { containerd_socket } => Resolved::Runtime { containerd_socket },
        // Blocking NVML calls and a short wait for XID events: no async runtime needed.
        Command::GpuCheck(args) => return gpu_check::main(args),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A command whose settings are validated.
enum Resolved {
    Run(Box<coldstart_agent::config::Config>),
    Runtime { containerd_socket: PathBuf },
}

async fn run(command: Resolved) -> anyhow::Result<()> {
    match command {
        Resolved::Run(cfg) => daemon::run(*cfg).await,
        Resolved::Runtime { containerd_socket } => {
            let images = ContainerdImages::new(ContainerdConfig::new(containerd_socket))?;
            let info = images.runtime_info().await?;
            let mut storage = Vec::new();
            for path in &info.storage_paths {
                storage.push(images.disk_space(path).await?);
            }
            let doc = serde_json::json!({ "runtime": info, "storage": storage });
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
    }
}
