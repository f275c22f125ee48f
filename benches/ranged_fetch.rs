//! The parallel ranged fetch against containerd's own pulls, on a vLLM-shaped image (one big
//! layer beside a few small ones, incompressible) served by the loopback registry through a
//! proxy that caps every connection (a CDN's per-connection limit; 100 MB/s by default).
//!
//! One run, alternating: `coldctl warm --here --image` and `ctr -n k8s.io image pull` on
//! containerd 1.7 (trixie), the same on 2.1 (sid), then `ctr image pull` on 2.1 with its
//! Transfer service's parallel layer fetch configured (`max_concurrent_downloads` and
//! `concurrent_layer_fetch_buffer` of `[plugins."io.containerd.transfer.v1.local"]`, set to our
//! connections and chunk). Every pull starts cold (image, content and snapshots removed). For
//! each it prints the fetch-only time (from start until every blob is committed in the
//! content store, watched on disk the same way for every tool) and end to end (fetch and
//! unpack: the process's wall time), and the ratios ours/theirs.
//!
//! Needs root, `scripts/test-env.sh`, and a release `coldctl` next to this bench
//! (`cargo build --release --workspace --bins && cargo bench --bench ranged_fetch`).
//!
//! Options (arguments after `--`): `--big-mib` the big layer (6144), `--rate-mbps` per
//! connection in MB/s (100), `--connections` (8) and `--chunk-mib` (8) for ours and for 2.1's
//! parallel fetch, `--seed` (7), `--only 1.7,2.1,2.1-parallel` (the setups to run), `--root DIR`
//! (containerd's root under DIR, e.g. a tmpfs mount, instead of a temporary directory),
//! `--ours-flag FLAG` (repeatable: a further `coldctl warm` flag, e.g. `--fetch-via-api`).
//! The image is built in a temporary directory, pushed, and removed before the pulls (disk:
//! the registry's copy, then one pull's content and snapshot).

// The shared test helpers expect() on setup failures, as tests do.
#[allow(clippy::expect_used)]
#[path = "../tests/common/mod.rs"]
mod common;
mod pull_common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use pull_common::{HOST, clean, snapshots, target_dir};
use support::{Containerd, ContainerdBin, ContainerdOpts, CountingProxy, Registry, TestEnv};

const MIB: u64 = 1 << 20;
const REPO_TAG: &str = "bench/vllm:v1";
/// The small layers beside the big one (MiB).
const SMALL_MIB: [u64; 3] = [64, 32, 16];
/// Bound on one pull (either tool).
const PULL_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, Clone)]
struct Config {
    big_mib: u64,
    rate_mbps: u64,
    connections: u64,
    chunk_mib: u64,
    seed: u64,
    /// Setups to run (`1.7`, `2.1`, `2.1-parallel`); empty: all.
    only: Vec<String>,
    /// containerd's root for every setup (e.g. a tmpfs mount); default a temporary directory.
    root: Option<PathBuf>,
    /// Extra `coldctl warm` flags for ours (`--ours-flag --fetch-via-api`, repeatable).
    ours_flags: Vec<String>,
}

impl Config {
    fn parse() -> anyhow::Result<Config> {
        let mut c = Config {
            big_mib: 6144,
            rate_mbps: 100,
            connections: 8,
            chunk_mib: 8,
            seed: 7,
            only: Vec::new(),
            root: None,
            ours_flags: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            if a == "--bench" {
                continue;
            }
            let value = args.next().with_context(|| format!("{a} needs a value"))?;
            if a == "--only" {
                c.only = value.split(',').map(str::to_owned).collect();
                continue;
            }
            if a == "--ours-flag" {
                c.ours_flags.push(value);
                continue;
            }
            if a == "--root" {
                c.root = Some(PathBuf::from(value));
                continue;
            }
            let n: u64 = value.parse().with_context(|| format!("{a} {value:?}"))?;
            match a.as_str() {
                "--big-mib" => c.big_mib = n,
                "--rate-mbps" => c.rate_mbps = n,
                "--connections" => c.connections = n,
                "--chunk-mib" => c.chunk_mib = n,
                "--seed" => c.seed = n,
                _ => bail!("unknown option {a}"),
            }
        }
        ensure!(c.big_mib >= 64 && c.rate_mbps >= 1 && c.connections >= 1 && c.chunk_mib >= 1);
        Ok(c)
    }

    fn layer_sizes(&self) -> Vec<usize> {
        std::iter::once(self.big_mib)
            .chain(SMALL_MIB)
            .map(|m| (m * MIB) as usize)
            .collect()
    }
}

/// A containerd to pull into: its label, binary, parallel fetch settings, and the tools run
/// on it in order.
type Setup<'a> = (
    &'static str,
    &'a ContainerdBin,
    Option<(u32, u64)>,
    &'a [Tool],
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Ours,
    Ctr,
}

/// One timed pull.
#[derive(Debug, Clone)]
struct Sample {
    setup: &'static str,
    tool: Tool,
    fetch: f64,
    total: f64,
    connections: u64,
}

fn main() -> ExitCode {
    pull_common::exit(run())
}

fn run() -> anyhow::Result<()> {
    let cfg = Config::parse()?;
    support::require_root();
    let coldctl = common::coldctl_bin();
    let env = TestEnv::load();
    let logs = target_dir()?.join("bench-cache/ranged-fetch-logs");
    std::fs::create_dir_all(&logs)?;
    let registry = Registry::start_plain()?;
    let (blobs, layers) = build_and_push(&cfg, &registry)?;
    let proxy = CountingProxy::start(registry.addr())?;
    proxy.set_rate_limit_per_connection(Some(cfg.rate_mbps * 1_000_000));
    let hosts = tempfile::Builder::new()
        .prefix("coldstart-bench-hosts-")
        .tempdir()?;
    support::write_hosts_toml(hosts.path(), HOST, &proxy.url(), None);
    println!(
        "loadavg before: {}",
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );
    let parallel = (u32::try_from(cfg.connections)?, cfg.chunk_mib * MIB);
    let setups: [Setup<'_>; 3] = [
        (
            "1.7",
            env.by_suite("trixie"),
            None,
            &[Tool::Ours, Tool::Ctr],
        ),
        ("2.1", env.by_suite("sid"), None, &[Tool::Ctr, Tool::Ours]),
        (
            "2.1-parallel",
            env.by_suite("sid"),
            Some(parallel),
            &[Tool::Ctr],
        ),
    ];
    let bench = Bench {
        cfg: &cfg,
        coldctl: &coldctl,
        logs: &logs,
        proxy: &proxy,
        blobs: &blobs,
        layers,
    };
    let mut samples = Vec::new();
    for (setup, bin, transfer_parallel, tools) in setups {
        if !cfg.only.is_empty() && !cfg.only.iter().any(|o| o == setup) {
            continue;
        }
        let root = match &cfg.root {
            Some(dir) => {
                let r = dir.join(format!("containerd-{setup}"));
                let _ = std::fs::remove_dir_all(&r);
                Some(r)
            }
            None => None,
        };
        let ctd = Containerd::start(
            bin,
            ContainerdOpts {
                root,
                hosts_dir: hosts.path().to_path_buf(),
                transfer_parallel,
                ..Default::default()
            },
        )?;
        println!("{setup}: {}", ctd.bin().label());
        for &tool in tools {
            clean(&ctd)?;
            let s = bench.pull(&ctd, setup, tool)?;
            println!(
                "  {:<7} fetch {:>7.2}s  end to end {:>7.2}s  ({} connections)",
                name(tool),
                s.fetch,
                s.total,
                s.connections
            );
            samples.push(s);
        }
        clean(&ctd)?;
    }
    println!(
        "loadavg after: {}",
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );
    report(&samples, &cfg);
    Ok(())
}

fn name(tool: Tool) -> &'static str {
    match tool {
        Tool::Ours => "coldctl",
        Tool::Ctr => "ctr",
    }
}

/// Builds the image in a temporary directory, pushes it, and returns the blob digests
/// (config and layers) and the layer count; the local copy is removed (disk).
fn build_and_push(cfg: &Config, registry: &Registry) -> anyhow::Result<(Vec<String>, usize)> {
    let tmp = tempfile::Builder::new()
        .prefix("coldstart-bench-img-")
        .tempdir_in(target_dir()?)?;
    let t = Instant::now();
    let layout = support::build_image(tmp.path(), &cfg.layer_sizes(), cfg.seed)?;
    println!(
        "image: {} MiB + {:?} MiB layers, {:.1} MB compressed, built in {:.1}s",
        cfg.big_mib,
        SMALL_MIB,
        layout.compressed_size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    support::push(&layout, &registry.host(), REPO_TAG, false)?;
    println!("pushed in {:.1}s", t.elapsed().as_secs_f64());
    let mut blobs = vec![layout.config_digest.clone()];
    blobs.extend(layout.layers.iter().map(|(d, _)| d.clone()));
    Ok((blobs, layout.layers.len()))
}

struct Bench<'a> {
    cfg: &'a Config,
    coldctl: &'a Path,
    logs: &'a Path,
    proxy: &'a CountingProxy,
    blobs: &'a [String],
    layers: usize,
}

impl Bench<'_> {
    fn pull(&self, ctd: &Containerd, setup: &'static str, tool: Tool) -> anyhow::Result<Sample> {
        let image = format!("{HOST}/{REPO_TAG}");
        let mut cmd = match tool {
            Tool::Ours => {
                let mut c = Command::new(self.coldctl);
                c.args(["warm", "--here", "--image", &image])
                    .args(common::containerd_args(ctd))
                    // Incompressible layers: unpacked is about compressed (the default 2.5x
                    // estimate would fail the disk check on this machine's free space).
                    .args(["--margin-mib", "64", "--unpack-ratio", "1.1", "-o", "json"])
                    .args(["--fetch-connections", &self.cfg.connections.to_string()])
                    .args(["--fetch-chunk-mib", &self.cfg.chunk_mib.to_string()])
                    .args(&self.cfg.ours_flags)
                    .env("COLDSTART_LOG", "warn");
                c
            }
            Tool::Ctr => {
                let mut c = Command::new(ctd.bin().bin_dir.join("ctr"));
                c.arg("-a")
                    .arg(ctd.socket())
                    .args(["-n", "k8s.io", "image", "pull", "--hosts-dir"])
                    .arg(ctd.hosts_dir())
                    .arg(&image);
                c
            }
        };
        self.proxy.reset();
        let content = ctd
            .root()
            .join("io.containerd.content.v1.content/blobs/sha256");
        let watch = FetchWatch::start(content, self.blobs);
        let t = Instant::now();
        let out = support::run_bounded(&mut cmd, PULL_TIMEOUT)?;
        let total = t.elapsed().as_secs_f64();
        let fetch = watch.finish(t);
        let log = self.logs.join(format!("{setup}-{}.log", name(tool)));
        std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat())?;
        ensure!(
            out.status.success(),
            "{} on {setup} failed ({}); output in {}",
            name(tool),
            out.status,
            log.display()
        );
        if tool == Tool::Ours {
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            ensure!(
                doc["image"]["fetch"]["fallback"].is_null(),
                "ours fell back: {doc}"
            );
        }
        let committed = snapshots(ctd)?
            .iter()
            .filter(|l| l.contains("Committed"))
            .count();
        ensure!(
            committed == self.layers,
            "{} on {setup}: {committed} committed snapshots of {} layers",
            name(tool),
            self.layers
        );
        Ok(Sample {
            setup,
            tool,
            fetch: fetch.context("blobs never all present")?,
            total,
            connections: self.proxy.connections(),
        })
    }
}

/// Watches the content store until every blob of the image is committed.
struct FetchWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<Instant>>,
}

impl FetchWatch {
    fn start(dir: PathBuf, blobs: &[String]) -> FetchWatch {
        let paths: Vec<PathBuf> = blobs
            .iter()
            .map(|d| dir.join(d.trim_start_matches("sha256:")))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + PULL_TIMEOUT;
            while Instant::now() < deadline {
                if paths.iter().all(|p| p.exists()) {
                    return Some(Instant::now());
                }
                if s.load(Ordering::Relaxed) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        });
        FetchWatch { stop, thread }
    }

    /// Seconds from `start` until every blob was present.
    fn finish(self, start: Instant) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        let at = self.thread.join().ok().flatten()?;
        Some(at.duration_since(start).as_secs_f64())
    }
}

/// The table and the ratios.
fn report(samples: &[Sample], cfg: &Config) {
    println!(
        "\nper-connection cap {} MB/s; ours and 2.1-parallel: {} connections, {} MiB chunks",
        cfg.rate_mbps, cfg.connections, cfg.chunk_mib
    );
    println!("setup          tool      fetch s   end-to-end s  connections");
    for s in samples {
        println!(
            "{:<14} {:<8} {:>8.2} {:>14.2} {:>12}",
            s.setup,
            name(s.tool),
            s.fetch,
            s.total,
            s.connections
        );
    }
    let find = |setup: &str, tool: Tool| {
        samples
            .iter()
            .find(|s| s.setup == setup && s.tool == tool)
            .cloned()
    };
    let pairs = [
        (
            "ours@1.7 / ctr@1.7",
            "1.7",
            Tool::Ours,
            "1.7",
            "<= 0.25 fetch-only",
        ),
        ("ours@2.1 / ctr@2.1", "2.1", Tool::Ours, "2.1", ""),
        (
            "ours@2.1 / ctr@2.1-parallel",
            "2.1",
            Tool::Ours,
            "2.1-parallel",
            "<= 1.0 fetch-only",
        ),
    ];
    for (label, ours_setup, ours_tool, theirs_setup, target) in pairs {
        if let (Some(o), Some(t)) = (find(ours_setup, ours_tool), find(theirs_setup, Tool::Ctr)) {
            println!(
                "{label:<28} fetch-only {:.3}  end-to-end {:.3}  {}",
                o.fetch / t.fetch,
                o.total / t.total,
                if target.is_empty() {
                    String::new()
                } else {
                    format!("(target {target})")
                }
            );
        }
    }
}
