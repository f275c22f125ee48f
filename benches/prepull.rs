//! Image pre-pull against `ctr`: the same multi-layer image (~2 GiB by default) pulled from a
//! loopback registry into one private containerd, alternately with
//! `coldctl warm --here --image` (CRI `PullImage`, progress polling, disk check, pin, verify) and
//! with `ctr -n k8s.io image pull --hosts-dir` (containerd's own client), removing the image,
//! its content and its snapshots between runs so that every run starts cold. Prints each run's
//! wall time and MB/s and the median ratio ours/ctr (target: at most 1.05).
//!
//! Needs root, `scripts/test-env.sh`, and a release `coldctl` next to this bench
//! (`cargo build --release --workspace --bins && cargo bench --bench prepull`).
//!
//! Options (environment, or arguments after `--`, which win):
//! `COLDSTART_BENCH_MIB` / `--mib` total image size in MiB (2048),
//! `COLDSTART_BENCH_LAYERS` / `--layers` layer count (8),
//! `COLDSTART_BENCH_RUNS` / `--runs` timed runs per tool (3),
//! `COLDSTART_BENCH_WARMUP` / `--warmup` untimed runs per tool first (1),
//! `COLDSTART_BENCH_SUITE` / `--suite` containerd suite (`bookworm`, `trixie`, `sid`; newest),
//! `COLDSTART_BENCH_SEED` / `--seed` image seed (7),
//! `COLDSTART_BENCH_LOG` / `--log` coldctl's `COLDSTART_LOG` (warn); its stderr is kept under
//! `target/bench-cache/prepull-logs/`.
//!
//! The built OCI layout is cached under `target/bench-cache/` keyed by shape and seed.

// The shared test helpers expect() on setup failures, as tests do.
#[allow(clippy::expect_used)]
#[path = "../tests/common/mod.rs"]
mod common;
mod pull_common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use pull_common::{HOST, clean, median, snapshots, target_dir};
use support::{Containerd, ContainerdOpts, OciLayout, Registry, TestEnv};

const MIB: u64 = 1 << 20;
const REPO_TAG: &str = "bench/img:v1";
/// Bound on one pull (either tool).
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// Bench options, read once here.
#[derive(Debug, Clone)]
struct Config {
    mib: u64,
    layers: u64,
    runs: usize,
    warmup: usize,
    suite: Option<String>,
    seed: u64,
    log: String,
}

impl Config {
    fn parse() -> anyhow::Result<Config> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut kv: Vec<(String, String)> = [
            ("mib", "COLDSTART_BENCH_MIB"),
            ("layers", "COLDSTART_BENCH_LAYERS"),
            ("runs", "COLDSTART_BENCH_RUNS"),
            ("warmup", "COLDSTART_BENCH_WARMUP"),
            ("suite", "COLDSTART_BENCH_SUITE"),
            ("seed", "COLDSTART_BENCH_SEED"),
            ("log", "COLDSTART_BENCH_LOG"),
        ]
        .iter()
        .filter_map(|(k, e)| env(e).map(|v| (k.to_string(), v)))
        .collect();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            // cargo passes `--bench` to every bench target.
            if a == "--bench" {
                continue;
            }
            let Some(key) = a.strip_prefix("--") else {
                bail!("unexpected argument {a:?}");
            };
            let value = args.next().with_context(|| format!("{a} needs a value"))?;
            kv.push((key.to_string(), value));
        }
        let mut c = Config {
            mib: 2048,
            layers: 8,
            runs: 3,
            warmup: 1,
            suite: None,
            seed: 7,
            log: "warn".to_string(),
        };
        for (k, v) in kv {
            let num = || v.parse::<u64>().with_context(|| format!("--{k} {v:?}"));
            match k.as_str() {
                "mib" => c.mib = num()?,
                "layers" => c.layers = num()?,
                "runs" => c.runs = num()? as usize,
                "warmup" => c.warmup = num()? as usize,
                "seed" => c.seed = num()?,
                "suite" => c.suite = Some(v),
                "log" => c.log = v,
                _ => bail!("unknown option --{k}"),
            }
        }
        ensure!(
            c.layers >= 1 && c.mib >= c.layers,
            "need --mib >= --layers >= 1"
        );
        ensure!(c.runs >= 1, "need --runs >= 1");
        Ok(c)
    }

    fn layer_sizes(&self) -> Vec<usize> {
        vec![(self.mib * MIB / self.layers) as usize; self.layers as usize]
    }
}

/// Which client pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Ours,
    Ctr,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ours => "coldctl",
            Tool::Ctr => "ctr",
        }
    }
}

/// One timed pull.
#[derive(Debug, Clone)]
struct Sample {
    round: usize,
    tool: Tool,
    warmup: bool,
    seconds: f64,
    /// What coldctl itself reports (`image.seconds`), ours only.
    reported: Option<f64>,
}

fn main() -> ExitCode {
    pull_common::exit(run())
}

fn run() -> anyhow::Result<()> {
    let cfg = Config::parse()?;
    support::require_root();
    let coldctl = common::coldctl_bin();
    let env = TestEnv::load();
    let bin = match &cfg.suite {
        Some(s) => env.by_suite(s).clone(),
        None => env.newest().clone(),
    };
    let cache = target_dir()?.join("bench-cache");
    let layout = cached_image(&cache, &cfg)?;
    let registry = Registry::start_plain()?;
    let t = Instant::now();
    support::push(&layout, &registry.host(), REPO_TAG, false)?;
    println!(
        "pushed to {} in {:.1}s",
        registry.url(),
        t.elapsed().as_secs_f64()
    );
    let hosts = tempfile::Builder::new()
        .prefix("coldstart-bench-hosts-")
        .tempdir()?;
    support::write_hosts_toml(hosts.path(), HOST, &registry.url(), None);
    let ctd = Containerd::start(
        &bin,
        ContainerdOpts {
            root: None,
            hosts_dir: hosts.path().to_path_buf(),
            ..Default::default()
        },
    )?;
    print_machine(&ctd, &layout, &cfg)?;
    let logs = cache.join("prepull-logs");
    std::fs::create_dir_all(&logs)?;
    let bench = Bench {
        cfg: &cfg,
        ctd: &ctd,
        coldctl: &coldctl,
        logs: &logs,
    };
    let samples = bench.alternate()?;
    report(&samples, layout.compressed_size);
    Ok(())
}

/// The image's OCI layout, built once per (size, layers, seed) and reused.
fn cached_image(cache: &Path, cfg: &Config) -> anyhow::Result<OciLayout> {
    let dir = cache.join(format!(
        "prepull-{}mib-{}layers-seed{}",
        cfg.mib, cfg.layers, cfg.seed
    ));
    if dir.join(".complete").is_file() {
        match OciLayout::load(&dir) {
            Ok(l) => {
                println!("image: cached {}", dir.display());
                return Ok(l);
            }
            Err(e) => eprintln!("cached image unusable ({e:#}); rebuilding"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let tmp = cache.join(format!(".build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let t = Instant::now();
    support::build_image(&tmp, &cfg.layer_sizes(), cfg.seed)?;
    std::fs::write(tmp.join(".complete"), b"")?;
    std::fs::rename(&tmp, &dir)?;
    println!(
        "image: built {} in {:.1}s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    OciLayout::load(&dir)
}

/// What the numbers were measured on.
fn print_machine(ctd: &Containerd, layout: &OciLayout, cfg: &Config) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let df = support::run_checked(
        Command::new("df").args(["-hT"]).arg(ctd.root()),
        Duration::from_secs(10),
    )?;
    println!("machine: {cores} cores, {mem} memory");
    print!("{}", String::from_utf8_lossy(&df.stdout));
    println!(
        "{}, image {HOST}/{REPO_TAG}: {} layers x {} MiB, {:.1} MB compressed",
        ctd.bin().label(),
        cfg.layers,
        cfg.mib / cfg.layers,
        layout.compressed_size as f64 / 1e6
    );
    Ok(())
}

/// The pieces one run needs.
struct Bench<'a> {
    cfg: &'a Config,
    ctd: &'a Containerd,
    coldctl: &'a Path,
    logs: &'a Path,
}

impl Bench<'_> {
    /// Warm-up rounds, then timed rounds; each from cold. The order alternates by round
    /// (ours then ctr, then ctr then ours) so that neither tool always runs right after the
    /// other's writeback.
    fn alternate(&self) -> anyhow::Result<Vec<Sample>> {
        let mut samples = Vec::new();
        for round in 0..self.cfg.warmup + self.cfg.runs {
            let warmup = round < self.cfg.warmup;
            let order = if round % 2 == 0 {
                [Tool::Ours, Tool::Ctr]
            } else {
                [Tool::Ctr, Tool::Ours]
            };
            for tool in order {
                clean(self.ctd)?;
                let s = self.pull(tool, round, warmup)?;
                self.check_unpacked(tool)?;
                println!(
                    "{} {:>7} {:>8.2}s{}",
                    if warmup { "warmup" } else { "run   " },
                    tool.name(),
                    s.seconds,
                    s.reported
                        .map(|r| format!(" (coldctl says {r:.2}s)"))
                        .unwrap_or_default()
                );
                samples.push(s);
            }
        }
        Ok(samples)
    }

    fn image(&self) -> String {
        format!("{HOST}/{REPO_TAG}")
    }

    /// One pull with `tool`, timed from process start to exit.
    fn pull(&self, tool: Tool, round: usize, warmup: bool) -> anyhow::Result<Sample> {
        let image = self.image();
        let mut cmd = match tool {
            Tool::Ours => {
                let mut c = Command::new(self.coldctl);
                c.args(["warm", "--here", "--image", &image])
                    .args(common::containerd_args(self.ctd))
                    .args(["--margin-mib", "64", "-o", "json"])
                    .env("COLDSTART_LOG", &self.cfg.log);
                c
            }
            Tool::Ctr => {
                let mut c = Command::new(self.ctd.bin().bin_dir.join("ctr"));
                c.arg("-a")
                    .arg(self.ctd.socket())
                    .args(["-n", "k8s.io", "image", "pull", "--hosts-dir"])
                    .arg(self.ctd.hosts_dir())
                    .arg(&image);
                c
            }
        };
        let t = Instant::now();
        let out = support::run_bounded(&mut cmd, PULL_TIMEOUT)?;
        let seconds = t.elapsed().as_secs_f64();
        let log = self.logs.join(format!("{}-{round}.log", tool.name()));
        std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat())?;
        ensure!(
            out.status.success(),
            "{} pull failed ({}); output in {}",
            tool.name(),
            out.status,
            log.display()
        );
        let reported = match tool {
            Tool::Ours => Some(ours_seconds(&out.stdout)?),
            Tool::Ctr => None,
        };
        Ok(Sample {
            round,
            tool,
            warmup,
            seconds,
            reported,
        })
    }

    /// Fails unless the image is listed and every layer is a committed snapshot.
    fn check_unpacked(&self, tool: Tool) -> anyhow::Result<()> {
        let names = self.ctd.image_names()?;
        ensure!(
            names.contains(&self.image()),
            "after {}: {} not listed ({names:?})",
            tool.name(),
            self.image()
        );
        let committed = snapshots(self.ctd)?
            .iter()
            .filter(|l| l.contains("Committed"))
            .count();
        ensure!(
            committed as u64 == self.cfg.layers,
            "after {}: {committed} committed snapshots, {} layers",
            tool.name(),
            self.cfg.layers
        );
        Ok(())
    }
}

/// `image.seconds` from coldctl's `-o json` document, which must say `ok` after one attempt.
fn ours_seconds(stdout: &[u8]) -> anyhow::Result<f64> {
    let doc: serde_json::Value =
        serde_json::from_slice(stdout).context("coldctl -o json printed no JSON document")?;
    ensure!(doc["ok"] == true, "coldctl failed: {doc}");
    let attempts = doc["image"]["attempts"].as_u64().unwrap_or(0);
    ensure!(attempts == 1, "coldctl took {attempts} attempts: {doc}");
    doc["image"]["seconds"]
        .as_f64()
        .context("no image.seconds in coldctl's output")
}

/// The table, and the median of the per-round ratios ours/ctr.
fn report(samples: &[Sample], bytes: u64) {
    let timed: Vec<&Sample> = samples.iter().filter(|s| !s.warmup).collect();
    println!("\nround  tool      seconds     MB/s  coldctl-reported");
    for s in &timed {
        println!(
            "{:>5}  {:<7} {:>9.2} {:>8.1}  {}",
            s.round,
            s.tool.name(),
            s.seconds,
            bytes as f64 / 1e6 / s.seconds,
            s.reported.map(|r| format!("{r:.2}")).unwrap_or_default()
        );
    }
    let of = |t: Tool| -> Vec<f64> {
        timed
            .iter()
            .filter(|s| s.tool == t)
            .map(|s| s.seconds)
            .collect()
    };
    let (ours, ctr) = (of(Tool::Ours), of(Tool::Ctr));
    let ratios: Vec<f64> = ours.iter().zip(&ctr).map(|(o, c)| o / c).collect();
    let (mo, mc) = (median(ours), median(ctr));
    println!(
        "median: coldctl {mo:.2}s ({:.1} MB/s), ctr {mc:.2}s ({:.1} MB/s)",
        bytes as f64 / 1e6 / mo,
        bytes as f64 / 1e6 / mc
    );
    println!(
        "per-round ratios ours/ctr: {}",
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "median ratio ours/ctr: {:.3} (target <= 1.05); ratio of medians {:.3}",
        median(ratios),
        mo / mc
    );
}
