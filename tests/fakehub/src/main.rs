//! `fake-hub`: the fake Hugging Face Hub as a process, for benchmarks and manual checks.
//!
//! Prints `cdn http://...` (with `--cdn-addr`) and one `commit REPO@REV SHA` line per
//! `--repo`, then `listening http://127.0.0.1:PORT` once it serves; runs until SIGTERM or
//! SIGINT. Bad arguments exit with 64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use coldstart_fakehub::{FakeHub, Options};

/// A fake Hugging Face Hub serving local directories (loopback addresses only).
#[derive(Debug, Parser)]
#[command(name = "fake-hub")]
struct Args {
    /// Main listener address (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// A repository: `ORG/NAME=DIR` or `ORG/NAME=DIR@REVISION` (default revision `main`);
    /// repeat for more repositories or revisions.
    #[arg(long = "repo", value_name = "ORG/NAME=DIR[@REV]")]
    repos: Vec<String>,
    /// Serve LFS files from a second listener here (e.g. 127.0.0.2:0) through 302 redirects.
    #[arg(long)]
    cdn_addr: Option<SocketAddr>,
    /// Pace each response body at this many bytes per second.
    #[arg(long)]
    rate_limit_per_connection: Option<u64>,
    /// Require `Authorization: Bearer TOKEN` on the main listener.
    #[arg(long, env = "COLDSTART_FAKEHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Entries per tree page.
    #[arg(long, default_value_t = 1000)]
    tree_page_size: usize,
    /// Answer Range requests with 200 and the whole body.
    #[arg(long)]
    ignore_range: bool,
    /// Cut every NTH body after BYTES bytes: `NTH:BYTES`.
    #[arg(long, value_name = "NTH:BYTES", value_parser = parse_pair)]
    truncate_every: Option<(u64, u64)>,
    /// Longest stall, in seconds.
    #[arg(long, default_value_t = 120)]
    stall_timeout_secs: u64,
}

fn parse_pair(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once(':').ok_or("expected NTH:BYTES")?;
    Ok((
        a.parse().map_err(|e| format!("{a}: {e}"))?,
        b.parse().map_err(|e| format!("{b}: {e}"))?,
    ))
}

/// `ORG/NAME=DIR[@REV]`: the text after the last `@` is a revision unless it holds a `/`.
fn parse_repo(s: &str) -> anyhow::Result<(String, PathBuf, String)> {
    let (repo, rest) = s.split_once('=').context("expected ORG/NAME=DIR[@REV]")?;
    anyhow::ensure!(
        !repo.is_empty() && !rest.is_empty(),
        "expected ORG/NAME=DIR[@REV], got {s:?}"
    );
    let (dir, rev) = match rest.rsplit_once('@') {
        Some((d, r)) if !r.is_empty() && !r.contains('/') && !d.is_empty() => (d, r),
        _ => (rest, "main"),
    };
    Ok((repo.to_string(), PathBuf::from(dir), rev.to_string()))
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
    let args = Args::parse();
    let repos: anyhow::Result<Vec<_>> = args.repos.iter().map(|r| parse_repo(r)).collect();
    let repos = match repos {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fake-hub: {e:#}");
            std::process::exit(64);
        }
    };
    if let Err(e) = run(args, repos).await {
        eprintln!("fake-hub: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args, repos: Vec<(String, PathBuf, String)>) -> anyhow::Result<()> {
    let hub = FakeHub::start(Options {
        addr: args.addr,
        redirect_lfs_to: args.cdn_addr,
        token: args.token,
        tree_page_size: args.tree_page_size,
        rate_limit_per_connection: args.rate_limit_per_connection,
        ignore_range: args.ignore_range,
        stall_timeout: Duration::from_secs(args.stall_timeout_secs),
    })
    .await?;
    if let Some((nth, bytes)) = args.truncate_every {
        hub.truncate_every(nth, bytes);
    }
    if let Some(cdn) = hub.cdn_url() {
        println!("cdn {cdn}");
    }
    for (repo, dir, rev) in repos {
        let h = hub.clone();
        let (r, rv) = (repo.clone(), rev.clone());
        let commit = tokio::task::spawn_blocking(move || h.add_repo_from_dir(&r, &dir, &rv))
            .await
            .context("hashing thread")??;
        println!("commit {repo}@{rev} {}", commit.id);
    }
    println!("listening {}", hub.url());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    coldstart_fakeserve::wait_for_signal().await?;
    hub.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_args() {
        let (r, d, v) = parse_repo("org/name=/data/m@v1").unwrap();
        assert_eq!(
            (r.as_str(), d.to_str().unwrap(), v.as_str()),
            ("org/name", "/data/m", "v1")
        );
        let (_, d, v) = parse_repo("o/n=/a@b/dir").unwrap();
        assert_eq!((d.to_str().unwrap(), v.as_str()), ("/a@b/dir", "main"));
        assert!(parse_repo("o/n").is_err());
        assert_eq!(parse_pair("3:100").unwrap(), (3, 100));
    }
}
