//! Flag groups more than one verb or backend shares (clap `flatten`), and the parsers of flag
//! values: a bad value is a usage error that clap reports before any verb runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use coldstart_agent::weights::budget;
use coldstart_agent::weights::cache::{HubCache, PublishStep};
use coldstart_agent::weights::hub::{HubClient, HubOptions};

use crate::report::CliError;

/// Help heading of the cluster backend's flags.
pub const CLUSTER: &str = "Cluster backend";
/// Help heading of the Hub and cache flags.
pub const HUB: &str = "Hub and cache (--here)";
/// Help heading of the download tuning flags.
pub const SYNC: &str = "Download tuning (--here)";

/// Global flags of the cluster backend.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (else `KUBECONFIG`, else `~/.kube/config`, else in-cluster).
    #[arg(long, global = true, value_name = "FILE", help_heading = CLUSTER)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, global = true, value_name = "NAME", help_heading = CLUSTER)]
    pub context: Option<String>,
}

/// Hub and cache flags shared by `warm` and `verify`; the names are the agent's.
#[derive(Debug, Clone, clap::Args)]
pub struct HubArgs {
    /// The agent's cache root, as `coldstart-agent --cache-root`: the Hub cache is
    /// `<root>/hub` (what vLLM reads as `HF_HUB_CACHE`), the agent's state `<root>/state`.
    #[arg(long, env = "COLDSTART_CACHE_ROOT", value_name = "DIR", help_heading = HUB)]
    pub cache_root: Option<PathBuf>,
    /// The Hub cache directory itself, state in a hidden sibling (before `--cache-root`).
    #[arg(
        long,
        env = "COLDSTART_CACHE_DIR",
        hide = true,
        conflicts_with = "cache_root"
    )]
    pub cache_dir: Option<PathBuf>,
    /// The state directory (journals, fingerprints) [default: `<cache root>/state`].
    #[arg(long, env = "COLDSTART_STATE_DIR", value_name = "DIR", help_heading = HUB)]
    pub state_dir: Option<PathBuf>,
    /// Hub endpoint (a mirror works too).
    #[arg(long, alias = "endpoint", env = "HF_ENDPOINT", value_name = "URL",
          default_value = "https://huggingface.co", help_heading = HUB)]
    pub hub_endpoint: String,
    /// Branch, tag or commit (default `main`; in cluster mode, default: keep the ColdModel's).
    #[arg(long, help_heading = HUB)]
    pub revision: Option<String>,
    /// A file holding the Hub token (else `HF_TOKEN`). Never logged.
    #[arg(long, alias = "token-file", value_name = "FILE", help_heading = HUB)]
    pub hub_token_file: Option<PathBuf>,
    /// Longest silence (seconds) while reading from the Hub before the request is retried.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600),
          help_heading = SYNC)]
    pub hub_read_timeout: u64,
    /// Token from the environment, as the Hub's own clients read it.
    #[arg(
        long = "hf-token-env",
        env = "HF_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub token_env: Option<String>,
}

/// Where a `--here` verb finds the Hub cache and the agent's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePaths {
    /// The Hub cache (`HF_HUB_CACHE`).
    pub hub: PathBuf,
    /// The state directory; `None`: the cache's own default (a hidden sibling).
    pub state: Option<PathBuf>,
}

impl CachePaths {
    /// Opens the cache (creating it).
    pub fn open(&self) -> anyhow::Result<Arc<HubCache>> {
        Ok(Arc::new(HubCache::open(&self.hub, self.state.as_deref())?))
    }
}

impl HubArgs {
    /// The revision to sync or verify here: `--revision`, else `main`.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The agent's layout under `--cache-root`, or the older `--cache-dir`; a usage error
    /// when neither is given.
    pub fn cache_paths(&self) -> Result<CachePaths, CliError> {
        match (&self.cache_root, &self.cache_dir) {
            (Some(root), _) => Ok(CachePaths {
                hub: root.join("hub"),
                state: Some(self.state_dir.clone().unwrap_or_else(|| root.join("state"))),
            }),
            (None, Some(dir)) => Ok(CachePaths {
                hub: dir.clone(),
                state: self.state_dir.clone(),
            }),
            (None, None) => Err(CliError::usage(
                "--cache-root DIR (or COLDSTART_CACHE_ROOT) is required for a model with \
                 --here: the agent's cache root (its default is /var/lib/coldstart)",
            )),
        }
    }

    /// A Hub client with the token from `--hub-token-file` or `HF_TOKEN`.
    pub fn hub(&self) -> anyhow::Result<HubClient> {
        let mut opts = HubOptions::new(&self.hub_endpoint);
        opts.read_timeout = Duration::from_secs(self.hub_read_timeout);
        opts.token = match &self.hub_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading token file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => self.token_env.clone().filter(|t| !t.is_empty()),
        };
        Ok(HubClient::new(opts)?)
    }
}

/// Which files to sync and how hard to pull them (`warm --here`; `--include` and `--exclude`
/// also travel into a ColdModel or a models-file entry).
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// Only files matching these globs (replaces the default vLLM selection).
    #[arg(long = "include", help_heading = HUB)]
    pub include: Vec<String>,
    /// Leave out files matching these globs.
    #[arg(long = "exclude", help_heading = HUB)]
    pub exclude: Vec<String>,
    /// Connections in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256),
          help_heading = SYNC)]
    pub connections: u64,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64),
          help_heading = SYNC)]
    pub files_at_once: u64,
    /// Range size in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024),
          help_heading = SYNC)]
    pub chunk_mib: u64,
    /// Free space (MiB) to leave on the cache's filesystem.
    #[arg(long, default_value_t = 1024, help_heading = SYNC)]
    pub cache_margin_mib: u64,
    /// The minimum rate, in KiB per `--hub-min-rate-window`: a connection below it is dropped
    /// and its range resumed on a fresh one; the file fails after the attempts (0: no floor).
    #[arg(long, default_value_t = 64)]
    pub hub_min_rate_kib: u64,
    /// The window of the minimum rate, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub hub_min_rate_window: u64,
    /// Crash tests only: SIGKILL this process right after the named publish step
    /// (`started`, `trees-written`, `snapshot-built`, `snapshot-published`, `ref-staged`,
    /// `ref-written`).
    #[arg(long, env = "COLDSTART_TEST_KILL_AT", hide = true, value_parser = parse_step)]
    pub kill_at: Option<PublishStep>,
    /// Most bytes the cache may hold, all models together (`500GiB`, `200G`, `1048576`): past
    /// it, models not wanted are evicted least recently used first before downloading.
    #[arg(long, env = "COLDSTART_CACHE_BUDGET", value_name = "SIZE", value_parser = parse_size,
          help_heading = SYNC)]
    pub cache_budget: Option<u64>,
}

/// `--kill-at`: a publish step's name.
fn parse_step(text: &str) -> Result<PublishStep, String> {
    PublishStep::parse(text).ok_or_else(|| format!("no publish step named {text:?}"))
}

/// A size flag (`--cache-budget`, `cache gc --budget`) through the library's parser (a clear
/// usage error on garbage).
pub fn parse_size(text: &str) -> Result<u64, String> {
    budget::parse_size(text).map_err(|e| e.to_string())
}

/// `10m`, `90s`, `1h30m`, `500ms`, or plain seconds (`45`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (e.g. 90s, 10m, 1h30m)");
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total_ms: u64 = 0;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        total_ms = n
            .checked_mul(ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn durations_read_like_kubectl_timeouts() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in [
            "",
            "m",
            "10x",
            "1.5m",
            "-3s",
            "s10",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
