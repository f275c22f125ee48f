//! `coldctl warm`: keep a model warm. By default in the cluster: create or update its
//! ColdModel and, with `--wait`, follow the nodes it selects (see [`cluster`]). With `--here`,
//! in this process: the model's weights are synced into the local Hub cache and the image is
//! pulled through the node's containerd (CRI, as the kubelet pulls) and pinned, both at once.
//! With `--node`, through the local agent's socket: the model goes into its models file (see
//! [`node`]).

pub mod cluster;
mod image;
mod model;
mod node;

pub use model::{HubArgs, SyncArgs};

use std::path::PathBuf;

use indicatif::MultiProgress;
use serde_json::json;

use crate::output::{self, Format};
use crate::{Backend, Cli, EXIT_USAGE};

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
    #[arg(long)]
    pub image: Option<String>,
    /// containerd socket (CRI is served on it too).
    #[arg(
        long,
        env = "COLDSTART_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_socket: PathBuf,
    /// containerd root, for the disk check when containerd does not tell it.
    #[arg(
        long,
        env = "COLDSTART_CONTAINERD_ROOT",
        default_value = "/var/lib/containerd"
    )]
    pub containerd_root: PathBuf,
    /// containerd's config file, read for what CRI does not report (2.x: registry hosts dir).
    #[arg(
        long,
        env = "COLDSTART_CONTAINERD_CONFIG",
        default_value = "/etc/containerd/config.toml"
    )]
    pub containerd_config: PathBuf,
    /// Registry hosts directory (CRI `config_path`); read from containerd when not given.
    #[arg(long, env = "COLDSTART_REGISTRY_CONFIG_DIR")]
    pub registry_config_dir: Option<PathBuf>,
    /// Registry credentials. With `--here`: a docker `config.json` or a `.dockerconfigjson`
    /// secret payload. In the cluster: the name of a `kubernetes.io/dockerconfigjson` secret
    /// in the agent's namespace. With `--node`: a docker `config.json` the agent reads (it
    /// must sit in the models file's directory).
    #[arg(long, env = "COLDSTART_PULL_SECRET")]
    pub pull_secret: Option<PathBuf>,
    /// Cluster: nodes to keep warm, in kubectl's label-selector syntax (`pool=gpu,zone in (a,b)`).
    #[arg(long, short = 'l', value_name = "EXPR")]
    pub selector: Option<String>,
    /// Cluster: secret (in the agent's namespace) holding the Hub token; KEY defaults to `token`.
    #[arg(long, value_name = "NAME[:KEY]")]
    pub token_secret: Option<String>,
    /// Cluster or `--node`: wait until every selected node reports the model Ready (exit 0),
    /// one reports it Failed (exit 1), or `--timeout` passes (exit 3).
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: how long (`90s`, `10m`, `1h30m`).
    #[arg(long, value_name = "DURATION", default_value = "30m", requires = "wait",
          value_parser = cluster::parse_duration)]
    pub timeout: std::time::Duration,
    /// CRI runtime handler to pull for (e.g. `nvidia`).
    #[arg(long)]
    pub runtime_handler: Option<String>,
    /// Cancel and retry a pull when no byte moved for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout: u64,
    /// Pull attempts in all.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,
    /// Free space (MiB) to leave on containerd's filesystems after the pull.
    #[arg(long, default_value_t = 1024)]
    pub margin_mib: u64,
    /// Unpacked size estimated as compressed size times this.
    #[arg(long, default_value_t = 2.5)]
    pub unpack_ratio: f64,
}

/// Runs the verb; returns the exit code.
pub async fn run(cli: &Cli, args: &Args) -> u8 {
    match cli.backend() {
        Backend::Cluster => return cluster::run(cli, args).await,
        Backend::Node(sock) => return node::run(cli, args, &sock).await,
        Backend::Here => {}
    }
    if args.selector.is_some() || args.token_secret.is_some() || args.wait {
        eprintln!("error: --selector, --token-secret and --wait are for the cluster: drop --here");
        return EXIT_USAGE;
    }
    if args.model.is_none() && args.image.is_none() {
        eprintln!("error: nothing to warm: give a MODEL, --image REF, or both");
        return EXIT_USAGE;
    }
    // Validate everything before starting anything.
    let image = match args
        .image
        .as_deref()
        .map(|i| image::prepare(args, i))
        .transpose()
    {
        Ok(i) => i,
        Err(e) => return fail(cli, &[e]),
    };
    let model = match args
        .model
        .as_deref()
        .map(|m| model::prepare(&args.hub, &args.sync, m))
        .transpose()
    {
        Ok(m) => m,
        Err(e) => return fail(cli, &[e]),
    };
    let bars = output::stderr_is_terminal().then(MultiProgress::new);
    let image_job = async {
        match &image {
            Some((i, auth)) => {
                Some(image::warm(cli.output, bars.as_ref(), args, i, auth.as_ref()).await)
            }
            None => None,
        }
    };
    let model_job = async {
        match model {
            Some(p) => Some(model::warm(cli.output, bars.as_ref(), p).await),
            None => None,
        }
    };
    let (image_result, model_result) = tokio::join!(image_job, model_job);
    let mut errors = Vec::new();
    let image_report = match image_result {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let model_report = match model_result {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    if !errors.is_empty() {
        return fail(cli, &errors);
    }
    if let Some(r) = &image_report {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }
    match cli.output {
        Format::Json | Format::Yaml => output::print_doc(
            cli.output,
            &json!({
                "ok": true,
                "image": image_report,
                "model": model_report,
            }),
        ),
        Format::Text => {
            if let Some(r) = &image_report {
                crate::outln!(
                    "{}: present, unpacked, pinned ({}, {} attempt(s), {:.1}s, containerd {})",
                    r.image,
                    output::bytes(r.state.size),
                    r.attempts,
                    r.seconds,
                    r.runtime.version
                );
            }
            if let Some(r) = &model_report {
                crate::outln!(
                    "{}@{}: {} files, {} verified in {} ({} downloaded, {:.1}s)",
                    r.repo,
                    &r.commit[..12.min(r.commit.len())],
                    r.files,
                    output::bytes(r.bytes),
                    r.snapshot.display(),
                    output::bytes(r.downloaded_bytes),
                    r.seconds
                );
            }
        }
    }
    0
}

/// The stable label of an error from either port or from the local agent.
pub fn kind(err: &anyhow::Error) -> String {
    if let Some(e) = err.downcast_ref::<coldstart_agent::images::Error>() {
        return e.metric_label().into();
    }
    if let Some(e) = err.downcast_ref::<coldstart_agent::weights::Error>() {
        return e.metric_label().into();
    }
    if let Some(e) = err.downcast_ref::<coldstart_agent::standalone::ClientError>() {
        return e.kind().into();
    }
    "error".into()
}

/// Reports failures: one line each on stderr, or one JSON document; exit 1.
pub fn fail(cli: &Cli, errors: &[anyhow::Error]) -> u8 {
    let msgs: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
    match cli.output {
        Format::Json | Format::Yaml => output::print_doc(
            cli.output,
            &json!({
                "ok": false,
                "error": msgs.join("; "),
                "kind": errors.first().map_or_else(|| "error".into(), kind),
                "errors": errors.iter().zip(&msgs).map(|(e, m)| json!({"kind": kind(e), "error": m})).collect::<Vec<_>>(),
            }),
        ),
        Format::Text => {
            for m in &msgs {
                eprintln!("error: {m}");
            }
        }
    }
    1
}
