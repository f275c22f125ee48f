//! `fake-apiserver`: the fake Kubernetes API server as a process, for manual checks and for
//! programs that want a server without linking the library.
//!
//! Writes a kubeconfig with `--kubeconfig`, loads objects from `--load` files (JSON, one object
//! or a `List`), prints `listening http://127.0.0.1:PORT` once it serves and runs until SIGTERM
//! or SIGINT. Bad arguments exit with 64.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use coldstart_fakeapi::{FakeApi, Options};

/// A stateful fake Kubernetes API server (loopback addresses only).
#[derive(Debug, Parser)]
#[command(name = "fake-apiserver")]
struct Args {
    /// Listener address (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Write a kubeconfig for the server here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Create the objects in this JSON file (an object or a `List` of items); repeatable.
    #[arg(long = "load", value_name = "FILE")]
    load: Vec<PathBuf>,
    /// Changes kept for watches to resume from.
    #[arg(long, default_value_t = 1000)]
    history: usize,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(64);
        }
        Err(e) => {
            let _ = e.print();
            return;
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("fake-apiserver: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let api = FakeApi::start(Options {
        addr: args.addr,
        history: args.history,
        ..Options::default()
    })
    .await?;
    for file in &args.load {
        let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let v: serde_json::Value =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))?;
        let items = match v.get("items").and_then(|i| i.as_array()) {
            Some(items) => items.clone(),
            None => vec![v],
        };
        for item in items {
            api.create(item)
                .with_context(|| format!("loading {}", file.display()))?;
        }
    }
    if let Some(path) = &args.kubeconfig {
        api.kubeconfig(path)?;
    }
    println!("listening {}", api.url());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    coldstart_fakeserve::wait_for_signal().await?;
    api.shutdown();
    Ok(())
}
