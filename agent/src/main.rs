//! `coldstart-agent`: the node agent binary. This version offers `runtime`, a one-shot report
//! of what the node's containerd says about itself (version, pin support, snapshotter, storage
//! and free space); the daemon loop comes with the Kubernetes integration.
//!
//! Exit codes: 0 success, 1 failure, 64 bad usage or configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coldstart_agent::images::{ContainerdConfig, ContainerdImages, Images};
use coldstart_agent::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "coldstart-agent", version, about = "coldstart node agent")]
struct Cli {
    /// Log filter (RUST_LOG syntax); logs go to stderr as JSON lines.
    #[arg(long, global = true, env = "COLDSTART_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    telemetry::init(&cli.log, LogFormat::Json);
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
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Runtime { containerd_socket } => {
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
