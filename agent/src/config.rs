//! The agent daemon's configuration: the only place that reads flags, `COLDSTART_*` environment
//! variables and the optional TOML file. Precedence, highest first: command-line flag,
//! environment variable, `--config` file, built-in default. The result is validated once into
//! [`Config`] and passed down; nothing below reads the environment.
//!
//! The TOML file uses the flags' names (`admin-addr = "0.0.0.0:9464"`, `tick-interval = 10`);
//! an unknown key is an error, not a silent no-op.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::gpu::{self, GpusExpected};

mod fetch;
mod file;
#[cfg(test)]
mod tests;
mod validate;

pub use crate::node::DeadlineAction;
pub use fetch::{FetchArgs, FetchFile};
pub use file::Error;
use file::read_file;
pub use validate::{is_dns_label, is_dns_subdomain};

/// Default `--compile-cache-budget`: 100 GiB.
pub const DEFAULT_COMPILE_CACHE_BUDGET: u64 = 100 << 30;

/// Default admin address (`/healthz`, `/readyz`, `/metrics`) in cluster mode; the DaemonSet
/// sets it explicitly all the same.
pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:9464";
/// Default admin address in standalone mode: loopback, so a box outside a cluster does not
/// offer its unauthenticated `/metrics` to its network unless told to.
pub const DEFAULT_STANDALONE_ADMIN_ADDR: &str = "127.0.0.1:9464";
/// Default containerd socket.
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// Default containerd root (its content store and snapshots; for the disk check).
pub const DEFAULT_CONTAINERD_ROOT: &str = "/var/lib/containerd";
/// Default cache root on the node's NVMe (Hub cache, compile caches, the agent's state).
pub const DEFAULT_CACHE_ROOT: &str = "/var/lib/coldstart";
/// Default containerd config file.
pub const DEFAULT_CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// Default desired-state file of standalone mode.
pub const DEFAULT_MODELS_FILE: &str = "/etc/coldstart/models.toml";
/// Default socket of standalone mode's local API.
pub const DEFAULT_SOCKET: &str = "/run/coldstart/agent.sock";
/// Default Hub endpoint.
pub const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";
const DEFAULT_WARMING_DEADLINE_SECONDS: u64 = 1800;
const DEFAULT_EVICTION_GRACE_SECONDS: u64 = 3600;
const DEFAULT_TICK_SECONDS: u64 = 10;
const DEFAULT_SHUTDOWN_SECONDS: u64 = 25;
const MAX_SOCKET_PATH: usize = 107;

/// Flags of `coldstart-agent run`. Every one is optional here so that the file and the
/// defaults can fill what neither the command line nor the environment set.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// TOML file with any of the settings below (lowest precedence but the defaults).
    #[arg(long = "config", env = "COLDSTART_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// This node's name (the downward API's `spec.nodeName`); required unless `--standalone`.
    #[arg(long, env = "COLDSTART_NODE_NAME")]
    pub node_name: Option<String>,
    /// Namespace the agent runs in (the only one it reads secrets from).
    #[arg(long, env = "COLDSTART_NAMESPACE")]
    pub namespace: Option<String>,
    /// Admin HTTP address for /healthz, /readyz and /metrics [default: 0.0.0.0:9464;
    /// standalone: 127.0.0.1:9464].
    #[arg(long, env = "COLDSTART_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// containerd socket [default: /run/containerd/containerd.sock].
    #[arg(long, env = "COLDSTART_CONTAINERD_SOCKET")]
    pub containerd_socket: Option<PathBuf>,
    /// containerd's root directory, for the disk check [default: /var/lib/containerd].
    #[arg(long, env = "COLDSTART_CONTAINERD_ROOT")]
    pub containerd_root: Option<PathBuf>,
    /// Cache root on the node's NVMe [default: /var/lib/coldstart].
    #[arg(long, env = "COLDSTART_CACHE_ROOT")]
    pub cache_root: Option<PathBuf>,
    /// Seconds between reconcile passes [default: 10].
    #[arg(long, env = "COLDSTART_TICK_INTERVAL", value_name = "SECONDS")]
    pub tick_interval: Option<u64>,
    /// /readyz fails when no pass finished for this long [default: 3 x tick interval, >= 30].
    #[arg(long, env = "COLDSTART_READY_TIMEOUT", value_name = "SECONDS")]
    pub ready_timeout: Option<u64>,
    /// Seconds to finish the current pass after SIGTERM before giving up [default: 25].
    #[arg(long, env = "COLDSTART_SHUTDOWN_TIMEOUT", value_name = "SECONDS")]
    pub shutdown_timeout: Option<u64>,
    /// Run without a cluster (no Kubernetes client): the loop and the admin server only.
    #[arg(long, env = "COLDSTART_STANDALONE")]
    pub standalone: bool,
    /// containerd's config file, read for what CRI does not report [default:
    /// /etc/containerd/config.toml].
    #[arg(long, env = "COLDSTART_CONTAINERD_CONFIG")]
    pub containerd_config: Option<PathBuf>,
    /// Registry hosts directory (CRI `config_path`); read from containerd's config when unset.
    #[arg(long, env = "COLDSTART_REGISTRY_CONFIG_DIR")]
    pub registry_config_dir: Option<PathBuf>,
    /// Hub endpoint (a mirror works too) [default: https://huggingface.co].
    #[arg(long, env = "COLDSTART_HUB_ENDPOINT")]
    pub hub_endpoint: Option<String>,
    /// File holding a Hub token used when a model names no token secret.
    #[arg(long, env = "COLDSTART_HUB_TOKEN_FILE")]
    pub hub_token_file: Option<PathBuf>,
    /// Docker `config.json` with registry credentials used when a model names no pull secret.
    #[arg(long, env = "COLDSTART_PULL_SECRET")]
    pub pull_secret: Option<PathBuf>,
    /// Seconds from the node's creation by which it should be warm [default: 1800].
    #[arg(long, env = "COLDSTART_WARMING_DEADLINE", value_name = "SECONDS")]
    pub warming_deadline: Option<u64>,
    /// Seconds unselected weights are kept before eviction [default: 3600].
    #[arg(long, env = "COLDSTART_EVICTION_GRACE", value_name = "SECONDS")]
    pub eviction_grace: Option<u64>,
    /// Weight syncs at once [default: 2].
    #[arg(long, env = "COLDSTART_WEIGHT_SYNCS")]
    pub weight_syncs: Option<usize>,
    /// Most bytes the Hub cache may hold (`500GiB`); least recently used unwanted models are
    /// evicted to fit.
    #[arg(long, env = "COLDSTART_CACHE_BUDGET", value_name = "SIZE")]
    pub cache_budget: Option<String>,
    /// Most bytes the compile caches (`<cache root>/compile`) may hold; least recently used
    /// scopes not in use and not leased are evicted to fit [default: 100GiB].
    #[arg(long, env = "COLDSTART_COMPILE_CACHE_BUDGET", value_name = "SIZE")]
    pub compile_cache_budget: Option<String>,
    /// Import compile caches from ColdModels' registries but never push (a node pool whose
    /// nodes should not publish what their pods compiled).
    #[arg(long, env = "COLDSTART_COMPILE_CACHE_IMPORT_ONLY")]
    pub compile_cache_import_only: bool,
    /// GPUs this node must have before the startup taint goes: `auto` (the node's
    /// nvidia.com/gpu capacity, else at least one if NVML loads), `none`, or a count [default: auto].
    #[arg(long, env = "COLDSTART_GPUS_EXPECTED", value_name = "auto|none|N")]
    pub gpus_expected: Option<GpusExpected>,
    /// NVML library to load [default: libnvidia-ml.so.1, found the dlopen way].
    #[arg(long, env = "COLDSTART_NVML_LIBRARY", value_name = "PATH")]
    pub nvml_library: Option<PathBuf>,
    /// Directories searched for libnvidia-ml.so.1 (until one holds it) when --nvml-library is
    /// not given, comma-separated [default: the host's driver locations under /host, where the
    /// DaemonSet mounts the host's root].
    #[arg(long, env = "COLDSTART_NVML_SEARCH_PATH", value_name = "DIRS")]
    pub nvml_search_path: Option<String>,
    /// Past the warming deadline: `report` (condition and Event; the node stays, tainted) or
    /// `replace` (also delete this node's Karpenter NodeClaim once, so Karpenter replaces the
    /// node; needs the karpenter overlay's RBAC) [default: report].
    #[arg(long, env = "COLDSTART_DEADLINE_ACTION", value_name = "report|replace")]
    pub deadline_action: Option<DeadlineAction>,
    /// XIDs that do not make a GPU unhealthy, comma-separated; replaces the default set
    /// [default: 13,31,43,45,68,109].
    #[arg(long, env = "COLDSTART_XID_IGNORE", value_name = "LIST")]
    pub xid_ignore: Option<String>,
    /// Standalone mode: the TOML file of models to keep warm, reloaded on change [default:
    /// /etc/coldstart/models.toml].
    #[arg(long, env = "COLDSTART_MODELS_FILE", value_name = "FILE")]
    pub models_file: Option<PathBuf>,
    /// Standalone mode: the unix socket of the local API (`coldctl --node`) [default:
    /// /run/coldstart/agent.sock].
    #[arg(long, env = "COLDSTART_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Directories searched for `criu` (containerd's PATH, for "can this node restore"),
    /// `:`-separated [default: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin].
    #[arg(long, env = "COLDSTART_CRIU_PATH", value_name = "DIRS")]
    pub criu_path: Option<String>,
    /// The host's root as the agent sees it (`/host` in the DaemonSet): `--criu-path` is
    /// looked up under it, and a host CRIU is run through the host's dynamic loader.
    #[arg(long, env = "COLDSTART_CRIU_ROOT", value_name = "DIR")]
    pub criu_root: Option<PathBuf>,
    /// The image pull's parallel ranged fetch.
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// The TOML file: the same settings as the flags, under the flags' names.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`RunArgs::node_name`].
    pub node_name: Option<String>,
    /// See [`RunArgs::namespace`].
    pub namespace: Option<String>,
    /// See [`RunArgs::admin_addr`].
    pub admin_addr: Option<SocketAddr>,
    /// See [`RunArgs::containerd_socket`].
    pub containerd_socket: Option<PathBuf>,
    /// See [`RunArgs::containerd_root`].
    pub containerd_root: Option<PathBuf>,
    /// See [`RunArgs::cache_root`].
    pub cache_root: Option<PathBuf>,
    /// See [`RunArgs::tick_interval`].
    pub tick_interval: Option<u64>,
    /// See [`RunArgs::ready_timeout`].
    pub ready_timeout: Option<u64>,
    /// See [`RunArgs::shutdown_timeout`].
    pub shutdown_timeout: Option<u64>,
    /// See [`RunArgs::standalone`].
    pub standalone: Option<bool>,
    /// See [`RunArgs::containerd_config`].
    pub containerd_config: Option<PathBuf>,
    /// See [`RunArgs::registry_config_dir`].
    pub registry_config_dir: Option<PathBuf>,
    /// See [`RunArgs::hub_endpoint`].
    pub hub_endpoint: Option<String>,
    /// See [`RunArgs::hub_token_file`].
    pub hub_token_file: Option<PathBuf>,
    /// See [`RunArgs::pull_secret`].
    pub pull_secret: Option<PathBuf>,
    /// See [`RunArgs::warming_deadline`].
    pub warming_deadline: Option<u64>,
    /// See [`RunArgs::eviction_grace`].
    pub eviction_grace: Option<u64>,
    /// See [`RunArgs::weight_syncs`].
    pub weight_syncs: Option<usize>,
    /// See [`RunArgs::cache_budget`].
    pub cache_budget: Option<String>,
    /// See [`RunArgs::compile_cache_budget`].
    pub compile_cache_budget: Option<String>,
    /// See [`RunArgs::compile_cache_import_only`].
    pub compile_cache_import_only: Option<bool>,
    /// See [`RunArgs::gpus_expected`] (`"auto"`, `"none"` or `"4"`).
    pub gpus_expected: Option<String>,
    /// See [`RunArgs::nvml_library`].
    pub nvml_library: Option<PathBuf>,
    /// See [`RunArgs::xid_ignore`] (a list of numbers).
    pub xid_ignore: Option<Vec<u64>>,
    /// See [`RunArgs::nvml_search_path`] (a list of directories).
    pub nvml_search_path: Option<Vec<PathBuf>>,
    /// See [`RunArgs::deadline_action`] (`"report"` or `"replace"`).
    pub deadline_action: Option<String>,
    /// See [`RunArgs::models_file`].
    pub models_file: Option<PathBuf>,
    /// See [`RunArgs::socket`].
    pub socket: Option<PathBuf>,
    /// See [`RunArgs::criu_path`].
    pub criu_path: Option<String>,
    /// See [`RunArgs::criu_root`].
    pub criu_root: Option<PathBuf>,
    /// The `[fetch]` table (see [`FetchArgs`]).
    pub fetch: Option<FetchFile>,
}

/// The validated configuration of the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This node's name; `None` only in standalone mode.
    pub node_name: Option<String>,
    /// The agent's namespace.
    pub namespace: Option<String>,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// containerd socket.
    pub containerd_socket: PathBuf,
    /// containerd root.
    pub containerd_root: PathBuf,
    /// Cache root.
    pub cache_root: PathBuf,
    /// Time between reconcile passes.
    pub tick_interval: Duration,
    /// Readiness fails when the last finished pass is older than this.
    pub ready_timeout: Duration,
    /// Time allowed to wind down after SIGTERM.
    pub shutdown_timeout: Duration,
    /// No cluster.
    pub standalone: bool,
    /// containerd's config file.
    pub containerd_config: PathBuf,
    /// Registry hosts directory, when set.
    pub registry_config_dir: Option<PathBuf>,
    /// Hub endpoint.
    pub hub_endpoint: String,
    /// Default Hub token file.
    pub hub_token_file: Option<PathBuf>,
    /// Default registry credentials file.
    pub pull_secret: Option<PathBuf>,
    /// Warming deadline from the node's creation.
    pub warming_deadline: Duration,
    /// Grace before unselected weights are evicted.
    pub eviction_grace: Duration,
    /// Weight syncs at once.
    pub weight_syncs: usize,
    /// Byte budget of the Hub cache.
    pub cache_budget: Option<u64>,
    /// Byte budget of the compile caches.
    pub compile_cache_budget: u64,
    /// Never push compile caches.
    pub compile_cache_import_only: bool,
    /// GPUs this node must have.
    pub gpus_expected: GpusExpected,
    /// NVML library; `None`: the default name.
    pub nvml_library: Option<PathBuf>,
    /// XIDs that do not make a GPU unhealthy.
    pub xid_ignore: std::collections::BTreeSet<u64>,
    /// Where NVML is searched for when `nvml_library` is not set.
    pub nvml_search_path: Vec<PathBuf>,
    /// What happens past the warming deadline.
    pub deadline_action: DeadlineAction,
    /// Standalone mode's desired-state file.
    pub models_file: PathBuf,
    /// Standalone mode's API socket.
    pub socket: PathBuf,
    /// Where `criu` is looked for.
    pub criu_search: Vec<PathBuf>,
    /// The root `criu_search` is under.
    pub criu_root: Option<PathBuf>,
    /// The image pull's parallel ranged fetch.
    pub fetch: crate::images::FetchOptions,
}

impl RunArgs {
    /// Reads the `--config` file (if any) and resolves every setting.
    pub fn load(self) -> Result<Config, Error> {
        let file = match &self.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        self.resolve(file)
    }

    /// Resolves flags/env over `file` over the defaults, then validates.
    pub fn resolve(self, file: FileConfig) -> Result<Config, Error> {
        let tick = Duration::from_secs(
            self.tick_interval
                .or(file.tick_interval)
                .unwrap_or(DEFAULT_TICK_SECONDS),
        );
        let ready = match self.ready_timeout.or(file.ready_timeout) {
            Some(secs) => Duration::from_secs(secs),
            None => (tick * 3).max(Duration::from_secs(30)),
        };
        // A flag can only switch standalone on; the file may too.
        let standalone = self.standalone || file.standalone.unwrap_or(false);
        let default_admin = if standalone {
            DEFAULT_STANDALONE_ADMIN_ADDR
        } else {
            DEFAULT_ADMIN_ADDR
        };
        let cfg = Config {
            node_name: self.node_name.or(file.node_name),
            namespace: self.namespace.or(file.namespace),
            admin_addr: match self.admin_addr.or(file.admin_addr) {
                Some(addr) => addr,
                None => default_admin.parse().map_err(|_| Error::Invalid {
                    setting: "admin-addr",
                    reason: "bad built-in default".into(),
                })?,
            },
            containerd_socket: self
                .containerd_socket
                .or(file.containerd_socket)
                .unwrap_or_else(|| DEFAULT_CONTAINERD_SOCKET.into()),
            containerd_root: self
                .containerd_root
                .or(file.containerd_root)
                .unwrap_or_else(|| DEFAULT_CONTAINERD_ROOT.into()),
            cache_root: self
                .cache_root
                .or(file.cache_root)
                .unwrap_or_else(|| DEFAULT_CACHE_ROOT.into()),
            tick_interval: tick,
            ready_timeout: ready,
            shutdown_timeout: Duration::from_secs(
                self.shutdown_timeout
                    .or(file.shutdown_timeout)
                    .unwrap_or(DEFAULT_SHUTDOWN_SECONDS),
            ),
            standalone,
            containerd_config: self
                .containerd_config
                .or(file.containerd_config)
                .unwrap_or_else(|| DEFAULT_CONTAINERD_CONFIG.into()),
            registry_config_dir: self.registry_config_dir.or(file.registry_config_dir),
            hub_endpoint: self
                .hub_endpoint
                .or(file.hub_endpoint)
                .unwrap_or_else(|| DEFAULT_HUB_ENDPOINT.into()),
            hub_token_file: self.hub_token_file.or(file.hub_token_file),
            pull_secret: self.pull_secret.or(file.pull_secret),
            warming_deadline: Duration::from_secs(
                self.warming_deadline
                    .or(file.warming_deadline)
                    .unwrap_or(DEFAULT_WARMING_DEADLINE_SECONDS),
            ),
            eviction_grace: Duration::from_secs(
                self.eviction_grace
                    .or(file.eviction_grace)
                    .unwrap_or(DEFAULT_EVICTION_GRACE_SECONDS),
            ),
            weight_syncs: self.weight_syncs.or(file.weight_syncs).unwrap_or(2),
            cache_budget: match self.cache_budget.or(file.cache_budget) {
                Some(text) => {
                    Some(
                        crate::weights::budget::parse_size(&text).map_err(|e| Error::Invalid {
                            setting: "cache-budget",
                            reason: e.to_string(),
                        })?,
                    )
                }
                None => None,
            },
            compile_cache_import_only: self.compile_cache_import_only
                || file.compile_cache_import_only.unwrap_or(false),
            compile_cache_budget: match self.compile_cache_budget.or(file.compile_cache_budget) {
                Some(text) => {
                    crate::weights::budget::parse_size(&text).map_err(|e| Error::Invalid {
                        setting: "compile-cache-budget",
                        reason: e.to_string(),
                    })?
                }
                None => DEFAULT_COMPILE_CACHE_BUDGET,
            },
            gpus_expected: match (self.gpus_expected, file.gpus_expected) {
                (Some(g), _) => g,
                (None, Some(text)) => text.parse().map_err(|reason| Error::Invalid {
                    setting: "gpus-expected",
                    reason,
                })?,
                (None, None) => GpusExpected::Auto,
            },
            nvml_library: self.nvml_library.or(file.nvml_library),
            xid_ignore: match (self.xid_ignore, file.xid_ignore) {
                (Some(list), _) => gpu::parse_xid_list(&list).map_err(|reason| Error::Invalid {
                    setting: "xid-ignore",
                    reason,
                })?,
                (None, Some(list)) => list.into_iter().collect(),
                (None, None) => gpu::DEFAULT_XID_IGNORE.into_iter().collect(),
            },
            nvml_search_path: match (self.nvml_search_path, file.nvml_search_path) {
                (Some(list), _) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .collect(),
                (None, Some(dirs)) => dirs,
                (None, None) => gpu::DEFAULT_SEARCH_DIRS.iter().map(PathBuf::from).collect(),
            },
            deadline_action: match (self.deadline_action, file.deadline_action) {
                (Some(a), _) => a,
                (None, Some(text)) => text.parse().map_err(|reason| Error::Invalid {
                    setting: "deadline-action",
                    reason,
                })?,
                (None, None) => DeadlineAction::Report,
            },
            models_file: self
                .models_file
                .or(file.models_file)
                .unwrap_or_else(|| DEFAULT_MODELS_FILE.into()),
            socket: self
                .socket
                .or(file.socket)
                .unwrap_or_else(|| DEFAULT_SOCKET.into()),
            criu_search: std::env::split_paths(
                &self
                    .criu_path
                    .or(file.criu_path)
                    .unwrap_or_else(|| crate::snapshots::runtime::DEFAULT_CRIU_SEARCH.into()),
            )
            .collect(),
            criu_root: self.criu_root.or(file.criu_root),
            fetch: self.fetch.merge(file.fetch)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
