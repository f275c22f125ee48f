//! The image half of `coldctl warm --here`: pre-pull through the node's containerd.

use std::time::Duration;

use anyhow::Context;
use coldstart_agent::images::{
    ContainerdConfig, ContainerdImages, DockerConfig, FetchOptions, ImageRef, RegistryAuth,
};
use coldstart_agent::prepull::{self, Event, Options, Report};
use indicatif::MultiProgress;

use super::Args;
use crate::output::{self, Format, SizedBar};

/// The pull bar.
const TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// Parses the reference and loads credentials: bad input fails before any work.
pub fn prepare(args: &Args, image: &str) -> anyhow::Result<(ImageRef, Option<RegistryAuth>)> {
    let image = ImageRef::parse(image)?;
    fetch_options(args)
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid fetch options: {e}"))?;
    let auth = match &args.pull_secret {
        Some(path) => DockerConfig::load(path)?.lookup(&image),
        None => None,
    };
    Ok((image, auth))
}

/// The ranged fetch's tuning from the flags.
fn fetch_options(args: &Args) -> FetchOptions {
    FetchOptions {
        enabled: !args.no_ranged_fetch,
        connections: usize::try_from(args.fetch_connections).unwrap_or(1),
        chunk_bytes: args.fetch_chunk_mib << 20,
        buffer_bytes: args.fetch_buffer_mib << 20,
        fast_bytes_per_sec: args.fetch_fast_mbps.saturating_mul(1_000_000),
        in_place: !args.fetch_via_api,
        lease_ttl: Duration::from_secs(args.fetch_lease_ttl),
    }
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
        fetch: fetch_options(args),
        ..Options::default()
    };
    let mut view = ProgressView::new(format, bars, image);
    let report = prepull::prepull(&images, image, auth, &opts, |e| view.event(e)).await;
    view.finish();
    Ok(report?)
}

/// Progress display: a bar on a terminal once the size is known, plain lines (at most one
/// per 5 %) otherwise; nothing on stdout, which belongs to the result.
struct ProgressView {
    bar: SizedBar,
    drawing: bool,
    last_pct: Option<u64>,
    total: Option<u64>,
    image: String,
}

impl ProgressView {
    fn new(format: Format, bars: Option<&MultiProgress>, image: &ImageRef) -> Self {
        let multi = bars.filter(|_| format == Format::Text);
        ProgressView {
            bar: SizedBar::new(multi, TEMPLATE, image.to_string()),
            drawing: multi.is_some(),
            last_pct: None,
            total: None,
            image: image.to_string(),
        }
    }

    fn event(&mut self, event: Event) {
        if self.drawing {
            return self.draw(event);
        }
        match event {
            Event::Runtime(r) => eprintln!("containerd {} ({})", r.version, r.snapshotter),
            Event::Resolved { digest, bytes } => {
                eprintln!("{}: {digest}, {}", self.image, output::bytes(bytes))
            }
            Event::Unresolved(why) => eprintln!("{}: size unknown ({why})", self.image),
            Event::Pulling(n) => eprintln!("{}: pulling (attempt {n})", self.image),
            Event::Progress(p) if p.total > 0 => {
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
            Event::Progress(_) => {}
            Event::Retry {
                attempt,
                error,
                backoff,
            } => eprintln!(
                "{}: attempt {attempt} failed, retrying in {}s: {error}",
                self.image,
                backoff.as_secs()
            ),
            Event::Pinning => eprintln!("{}: pinning", self.image),
            Event::Fetching { connections } => eprintln!(
                "{}: fetching missing blobs as parallel ranges ({connections} connections)",
                self.image
            ),
            Event::Fetched(s) => eprintln!("{}: {}", self.image, fetched(&s)),
            Event::Fallback(why) => eprintln!(
                "{}: ranged fetch off, containerd's pull fetches alone: {why}",
                self.image
            ),
        }
    }

    fn draw(&mut self, event: Event) {
        match event {
            Event::Resolved { bytes, .. } => {
                self.total = Some(bytes);
                self.bar.update(0, self.total);
            }
            Event::Progress(p) => {
                if p.total > 0 {
                    self.total = Some(p.total.max(self.total.unwrap_or(0)));
                }
                self.bar.update(p.done, self.total);
            }
            Event::Retry { error, backoff, .. } => self
                .bar
                .println(format!("retrying in {}s: {error}", backoff.as_secs())),
            Event::Pinning => self.bar.set_message(format!("{} (pinning)", self.image)),
            Event::Fetching { connections } => self.bar.set_message(format!(
                "{} (ranged, {connections} connections)",
                self.image
            )),
            Event::Fetched(_) => self.bar.set_message(format!("{} (unpacking)", self.image)),
            Event::Fallback(why) => {
                self.bar.set_message(self.image.clone());
                self.bar.println(format!(
                    "ranged fetch off, containerd's pull fetches alone: {why}"
                ));
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        self.bar.finish(false);
    }
}

/// The line that ends the ranged fetch.
fn fetched(s: &prepull::FetchSummary) -> String {
    if s.blobs == 0 {
        return "every blob already in containerd's content store; containerd unpacks".to_owned();
    }
    let route = match s.in_place {
        0 => "all through the Content API".to_owned(),
        n if n == s.blobs => "all written in place".to_owned(),
        n => format!("{n} written in place, the rest through the Content API"),
    };
    format!(
        "fetched {} in {:.1}s ({} resumed; {} blob(s): {route}); containerd unpacks",
        output::bytes(s.bytes),
        s.seconds,
        output::bytes(s.resumed),
        s.blobs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(blobs: usize, in_place: usize) -> prepull::FetchSummary {
        prepull::FetchSummary {
            blobs,
            in_place,
            bytes: 3 << 20,
            seconds: 1.5,
            ..Default::default()
        }
    }

    #[test]
    fn the_fetched_line_names_where_the_blobs_went_and_nothing_when_none_was_missing() {
        assert_eq!(
            fetched(&summary(0, 0)),
            "every blob already in containerd's content store; containerd unpacks"
        );
        let line = |b, i| {
            let l = fetched(&summary(b, i));
            let (_, tail) = l.split_once("; ").unwrap();
            tail.to_owned()
        };
        assert_eq!(
            line(4, 4),
            "4 blob(s): all written in place); containerd unpacks"
        );
        assert_eq!(
            line(4, 0),
            "4 blob(s): all through the Content API); containerd unpacks"
        );
        assert_eq!(
            line(4, 1),
            "4 blob(s): 1 written in place, the rest through the Content API); containerd unpacks"
        );
        assert!(fetched(&summary(4, 4)).starts_with("fetched 3.0 MiB in 1.5s (0 B resumed"));
    }
}
