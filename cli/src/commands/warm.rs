//! `coldctl warm`: make this node warm. With `--here`, in this process: the image is pulled
//! through the node's containerd (CRI, as the kubelet pulls), then pinned.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use coldstart_agent::images::{
    ContainerdConfig, ContainerdImages, DockerConfig, ImageRef, RegistryAuth,
};
use coldstart_agent::prepull::{self, Event, Options, Report};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::output::{self, Format};
use crate::{Cli, EXIT_USAGE};

/// Arguments of `coldctl warm`.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    /// Registry credentials: a docker `config.json` or a `.dockerconfigjson` secret payload.
    #[arg(long, env = "COLDSTART_PULL_SECRET")]
    pub pull_secret: Option<PathBuf>,
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
    if !cli.here {
        eprintln!(
            "error: only `coldctl warm --here` is available in this version (no agent or cluster mode yet)"
        );
        return EXIT_USAGE;
    }
    let Some(image) = &args.image else {
        eprintln!("error: nothing to warm: give --image REF");
        return EXIT_USAGE;
    };
    let image = match ImageRef::parse(image) {
        Ok(i) => i,
        Err(e) => return fail(cli, &anyhow::Error::new(e), "invalid_reference"),
    };
    let auth = match load_auth(args, &image) {
        Ok(a) => a,
        Err(e) => return fail(cli, &e, "credentials"),
    };
    match warm_image(cli, args, &image, auth.as_ref()).await {
        Ok(report) => {
            succeed(cli, &report);
            0
        }
        Err(e) => {
            let kind = e
                .downcast_ref::<coldstart_agent::images::Error>()
                .map_or("error", |e| e.metric_label());
            fail(cli, &e, kind)
        }
    }
}

fn load_auth(args: &Args, image: &ImageRef) -> anyhow::Result<Option<RegistryAuth>> {
    let Some(path) = &args.pull_secret else {
        return Ok(None);
    };
    let config = DockerConfig::load(path)?;
    Ok(config.lookup(image))
}

async fn warm_image(
    cli: &Cli,
    args: &Args,
    image: &ImageRef,
    auth: Option<&RegistryAuth>,
) -> anyhow::Result<Report> {
    let mut cfg = ContainerdConfig::new(args.containerd_socket.clone());
    cfg.root = args.containerd_root.clone();
    cfg.hosts_dir = args.registry_config_dir.clone();
    cfg.config_file = args.containerd_config.clone();
    let images = ContainerdImages::new(cfg)?;
    images
        .ping()
        .await
        .with_context(|| format!("containerd at {}", args.containerd_socket.display()))?;
    let opts = Options {
        stall_timeout: Duration::from_secs(args.stall_timeout),
        attempts: args.attempts,
        margin_bytes: args.margin_mib << 20,
        unpack_ratio: args.unpack_ratio,
        runtime_handler: args.runtime_handler.clone(),
        ..Options::default()
    };
    let mut view = ProgressView::new(cli.output, image);
    let report = prepull::prepull(&images, image, auth, &opts, |e| view.event(e)).await;
    view.finish();
    Ok(report?)
}

fn succeed(cli: &Cli, report: &Report) {
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    match cli.output {
        Format::Json => output::print_json(&json!({
            "ok": true,
            "image": report,
        })),
        Format::Text => println!(
            "{}: present, unpacked, pinned ({}, {} attempt(s), {:.1}s, containerd {})",
            report.image,
            output::bytes(report.state.size),
            report.attempts,
            report.seconds,
            report.runtime.version
        ),
    }
}

fn fail(cli: &Cli, err: &anyhow::Error, kind: &str) -> u8 {
    let msg = format!("{err:#}");
    match cli.output {
        Format::Json => output::print_json(&json!({ "ok": false, "error": msg, "kind": kind })),
        Format::Text => eprintln!("error: {msg}"),
    }
    1
}

/// Progress display: a bar on a terminal, plain lines (at most one per 5 %) otherwise; nothing
/// on stdout, which belongs to the result.
struct ProgressView {
    bar: Option<ProgressBar>,
    last_pct: Option<u64>,
    image: String,
}

impl ProgressView {
    fn new(format: Format, image: &ImageRef) -> Self {
        let bar = (format == Format::Text && output::stderr_is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(image.to_string());
            bar
        });
        ProgressView {
            bar,
            last_pct: None,
            image: image.to_string(),
        }
    }

    fn event(&mut self, event: Event) {
        match (&self.bar, event) {
            (Some(bar), Event::Resolved { bytes, .. }) => bar.set_length(bytes),
            (Some(bar), Event::Progress(p)) => {
                if p.total > 0 {
                    bar.set_length(p.total);
                }
                bar.set_position(p.done);
            }
            (Some(bar), Event::Retry { error, backoff, .. }) => {
                bar.println(format!("retrying in {}s: {error}", backoff.as_secs()))
            }
            (Some(bar), Event::Pinning) => bar.set_message(format!("{} (pinning)", self.image)),
            (Some(_), _) => {}
            (None, Event::Runtime(r)) => eprintln!("containerd {} ({})", r.version, r.snapshotter),
            (None, Event::Resolved { digest, bytes }) => {
                eprintln!("{}: {digest}, {}", self.image, output::bytes(bytes))
            }
            (None, Event::Unresolved(why)) => eprintln!("{}: size unknown ({why})", self.image),
            (None, Event::Pulling(n)) => eprintln!("{}: pulling (attempt {n})", self.image),
            (None, Event::Progress(p)) if p.total > 0 => {
                let pct = p.done * 100 / p.total;
                if self
                    .last_pct
                    .is_none_or(|l| pct >= l + 5 || pct == 100 && l != 100)
                {
                    self.last_pct = Some(pct);
                    eprintln!(
                        "{}: {pct}% {}/{}",
                        self.image,
                        output::bytes(p.done),
                        output::bytes(p.total)
                    );
                }
            }
            (None, Event::Progress(_)) => {}
            (
                None,
                Event::Retry {
                    attempt,
                    error,
                    backoff,
                },
            ) => eprintln!(
                "{}: attempt {attempt} failed, retrying in {}s: {error}",
                self.image,
                backoff.as_secs()
            ),
            (None, Event::Pinning) => eprintln!("{}: pinning", self.image),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
