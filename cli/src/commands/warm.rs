//! `coldctl warm`: keep a model warm. By default in the cluster: create or update its
//! ColdModel and, with `--wait`, follow the nodes it selects (see [`cluster`]). With `--here`,
//! in this process: the model's weights are synced into the local Hub cache and the image is
//! pulled through the node's containerd (CRI, as the kubelet pulls) and pinned, both at once
//! (see [`here`]). With `--node`, through the local agent's socket: the model goes into its
//! models file (see [`node`]).

mod cluster;
mod here;
mod image;
mod model;
mod node;

use std::path::PathBuf;

use crate::args::{CLUSTER, HubArgs, SyncArgs, parse_duration};

/// Help heading of the image flags.
const IMAGE: &str = "Image (--image; the others with --here)";
/// Help heading of the waiting flags.
const WAIT: &str = "Waiting (cluster, --node)";
use crate::report::{CliError, Output};
use crate::{Backend, Cli};

/// Arguments of `coldctl warm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hugging Face model id (`org/name`); in cluster mode also an existing ColdModel's name.
    pub model: Option<String>,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub sync: SyncArgs,
    /// Container image to pre-pull (normalised as the kubelet does: `vllm/vllm-openai:v0.11.0`).
    #[arg(long, help_heading = IMAGE)]
    pub image: Option<String>,
    /// containerd socket (CRI is served on it too).
    #[arg(
        long,
        env = "COLDSTART_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock"
    , help_heading = IMAGE)]
    pub containerd_socket: PathBuf,
    /// containerd root, for the disk check when containerd does not tell it.
    #[arg(
        long,
        env = "COLDSTART_CONTAINERD_ROOT",
        default_value = "/var/lib/containerd"
    , help_heading = IMAGE)]
    pub containerd_root: PathBuf,
    /// containerd's config file, read for what CRI does not report (2.x: registry hosts dir).
    #[arg(
        long,
        env = "COLDSTART_CONTAINERD_CONFIG",
        default_value = "/etc/containerd/config.toml"
    , help_heading = IMAGE)]
    pub containerd_config: PathBuf,
    /// Registry hosts directory (CRI `config_path`); read from containerd when not given.
    #[arg(long, env = "COLDSTART_REGISTRY_CONFIG_DIR", help_heading = IMAGE)]
    pub registry_config_dir: Option<PathBuf>,
    /// Registry credentials. With `--here`: a docker `config.json` or a `.dockerconfigjson`
    /// secret payload. In the cluster: the name of a `kubernetes.io/dockerconfigjson` secret
    /// in the agent's namespace. With `--node`: a docker `config.json` the agent reads (it
    /// must sit in the models file's directory).
    #[arg(long, env = "COLDSTART_PULL_SECRET", help_heading = IMAGE)]
    pub pull_secret: Option<PathBuf>,
    /// Cluster: nodes to keep warm, in kubectl's label-selector syntax (`pool=gpu,zone in (a,b)`).
    #[arg(long, short = 'l', value_name = "EXPR", help_heading = CLUSTER)]
    pub selector: Option<String>,
    /// Cluster: secret (in the agent's namespace) holding the Hub token; KEY defaults to `token`.
    #[arg(long, value_name = "NAME[:KEY]", help_heading = CLUSTER)]
    pub token_secret: Option<String>,
    /// Cluster: the field manager the ColdModel's fields are recorded under
    /// [default: `coldctl-<login>`].
    #[arg(long, value_name = "NAME", help_heading = CLUSTER)]
    pub field_manager: Option<String>,
    /// Cluster: change fields another manager (a GitOps controller, another operator) owns,
    /// taking them over; without it such a change is refused, naming the manager.
    #[arg(long, help_heading = CLUSTER)]
    pub force_conflicts: bool,
    /// Cluster or `--node`: wait until every selected node reports the model Ready (exit 0),
    /// one reports it Failed (exit 1), or `--timeout` passes (exit 3).
    #[arg(long, help_heading = WAIT)]
    pub wait: bool,
    /// With `--wait`: how long (`90s`, `10m`, `1h30m`).
    #[arg(long, value_name = "DURATION", default_value = "30m", requires = "wait",
          value_parser = parse_duration, help_heading = WAIT)]
    pub timeout: std::time::Duration,
    /// CRI runtime handler to pull for (e.g. `nvidia`).
    #[arg(long, help_heading = IMAGE)]
    pub runtime_handler: Option<String>,
    /// Cancel and retry a pull when no byte moved for this many seconds.
    #[arg(long, default_value_t = 60, help_heading = IMAGE)]
    pub stall_timeout: u64,
    /// Pull attempts in all.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100), help_heading = IMAGE)]
    pub attempts: u32,
    /// Free space (MiB) to leave on containerd's filesystems after the pull.
    #[arg(long, default_value_t = 1024, help_heading = IMAGE)]
    pub margin_mib: u64,
    /// Unpacked size estimated as compressed size times this.
    #[arg(long, default_value_t = 2.5, help_heading = IMAGE)]
    pub unpack_ratio: f64,
    /// Leave every byte to containerd's own pull (no parallel ranged fetch before it).
    #[arg(long, help_heading = IMAGE)]
    pub no_ranged_fetch: bool,
    /// Connections of the ranged fetch, shared across layers.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64), help_heading = IMAGE)]
    pub fetch_connections: u64,
    /// Range size (MiB) of the ranged fetch; smaller blobs are fetched whole.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024), help_heading = IMAGE)]
    pub fetch_chunk_mib: u64,
    /// Memory (MiB) the ranged fetch may hold: ranges in flight plus ranges waiting to be
    /// written in order.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=16384), help_heading = IMAGE)]
    pub fetch_buffer_mib: u64,
    /// Fall back to containerd's own pull when one connection to the registry already moves
    /// this many MB/s (the registry does not cap connections; 0: never).
    #[arg(long, default_value_t = 200, help_heading = IMAGE)]
    pub fetch_fast_mbps: u64,
    /// Append ranges in order through containerd's Content API even where its content store is
    /// on this filesystem (by default they are written in place into a staging ingest).
    #[arg(long, help_heading = IMAGE)]
    pub fetch_via_api: bool,
    /// Seconds until containerd collects what an interrupted ranged fetch left (lease expiry).
    #[arg(long, default_value_t = 21600, value_parser = clap::value_parser!(u64).range(1..), help_heading = IMAGE)]
    pub fetch_lease_ttl: u64,
}

/// Runs the verb on the backend the global flags pick.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    match cli.backend() {
        Backend::Cluster => cluster::run(cli, args).await,
        Backend::Node(sock) => node::run(cli, args, &sock).await,
        Backend::Here => here::run(cli, args).await,
    }
}
