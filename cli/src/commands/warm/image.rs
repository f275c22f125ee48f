//! The image half of `coldctl warm --here`: pre-pull through the node's containerd.

use std::time::Duration;

use anyhow::Context;
use coldstart_agent::images::{
    ContainerdConfig, ContainerdImages, DockerConfig, ImageRef, RegistryAuth,
};
use coldstart_agent::prepull::{self, Event, Options, Report};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::Args;
use crate::output::{self, Format};

/// Parses the reference and loads credentials: bad input fails before any work.
pub fn prepare(args: &Args, image: &str) -> anyhow::Result<(ImageRef, Option<RegistryAuth>)> {
    let image = ImageRef::parse(image)?;
    let auth = match &args.pull_secret {
        Some(path) => DockerConfig::load(path)?.lookup(&image),
        None => None,
    };
    Ok((image, auth))
}

/// Pre-pulls `image`, drawing progress under `bars` (a terminal) or as lines on stderr.
pub async fn warm(
    format: Format,
    bars: Option<&MultiProgress>,
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
    let mut view = ProgressView::new(format, bars, image);
    let report = prepull::prepull(&images, image, auth, &opts, |e| view.event(e)).await;
    view.finish();
    Ok(report?)
}

/// Progress display: a bar on a terminal, plain lines (at most one per 5 %) otherwise; nothing
/// on stdout, which belongs to the result.
struct ProgressView {
    bar: Option<ProgressBar>,
    last_pct: Option<u64>,
    image: String,
}

impl ProgressView {
    fn new(format: Format, bars: Option<&MultiProgress>, image: &ImageRef) -> Self {
        let bar = bars.filter(|_| format == Format::Text).map(|multi| {
            let bar = multi.add(ProgressBar::new(0));
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
