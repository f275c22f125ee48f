//! Compile caches across nodes: the first call of a `torch.compile`d function in a fresh process
//! (Python start and `import torch` excluded: the probe times the call itself) on node B
//! without a cache vs after importing node A's sealed scope from a registry.
//!
//! Node A (a cache root) compiles once with the real probe (`tests/torch/compile_probe.py`,
//! Inductor on CPU in the Debian torch tree), the agent's keeper seals the scope, and
//! `coldctl cache export --here` pushes it to a Debian `docker-registry` on loopback. Then, for
//! each round, alternating which goes first: a fresh node B with an empty scope runs the probe
//! (cold), and a fresh node B runs `coldctl cache import --here --digest` and then the probe
//! (imported). Prints every run, the median of the per-round ratios imported/cold (target:
//! at most 0.3), the import's wall time and the bytes shipped.
//!
//! Needs root, `scripts/test-env.sh`, and a release `coldctl` next to this bench
//! (`cargo build --release --workspace --bins && cargo bench --bench compile_cache`).
//! Options: `COLDSTART_BENCH_RUNS` / `--runs N` rounds (3).

#[allow(clippy::expect_used)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use coldstart_agent::caches::keeper::Keeper;
use support::torch::{MODEL, cache_env, inputs, probe, torch_tree, wait_sealed};
use support::{Registry, run_bounded};

/// Bound on one `coldctl cache export|import`.
const SHIP_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compile_cache bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runs() -> anyhow::Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut runs = std::env::var("COLDSTART_BENCH_RUNS").ok();
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next();
        }
    }
    let n: usize = runs.as_deref().unwrap_or("3").parse().context("--runs")?;
    ensure!(n > 0, "--runs must be at least 1");
    Ok(n)
}

/// `coldctl cache <verb> MODEL --here --registry R --cache-root ROOT <extra> -o json`.
fn coldctl_cache(
    verb: &str,
    root: &Path,
    registry: &str,
    extra: &[&str],
) -> anyhow::Result<(serde_json::Value, Duration)> {
    let mut cmd = Command::new(common::coldctl_bin());
    cmd.args(["cache", verb, MODEL, "--here", "--registry", registry])
        .arg("--cache-root")
        .arg(root)
        .args(extra)
        .args(["-o", "json"])
        .env("COLDSTART_LOG", "warn");
    let start = Instant::now();
    let out = run_bounded(&mut cmd, SHIP_TIMEOUT)?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "coldctl cache {verb}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((serde_json::from_slice(&out.stdout)?, took))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A fresh node: a cache root whose keeper made the model's (empty) scope.
fn fresh_node(name: &str) -> anyhow::Result<(tempfile::TempDir, Keeper)> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("coldstart-bench-{name}-"))
        .tempdir()?;
    let mut keeper = Keeper::new(dir.path());
    let r = keeper.pass(&inputs(false));
    ensure!(r.errors.is_empty(), "keeper: {:?}", r.errors);
    Ok((dir, keeper))
}

fn first_call(v: &serde_json::Value) -> anyhow::Result<f64> {
    v["first_call_s"]
        .as_f64()
        .with_context(|| format!("no first_call_s in {v}"))
}

fn run() -> anyhow::Result<()> {
    support::require_root();
    let runs = runs()?;
    let tree = torch_tree();
    let coldctl = common::coldctl_bin();
    let reg = Registry::start_plain()?;
    let registry = format!("{}/coldstart/compile-caches", reg.host());

    let (dir_a, mut keeper_a) = fresh_node("a")?;
    let a = probe(&tree, &cache_env(&coldctl, dir_a.path(), MODEL));
    println!("node A compiles: first call {:.3} s", first_call(&a)?);
    wait_sealed(&mut keeper_a);
    let (exported, export_took) = coldctl_cache("export", dir_a.path(), &registry, &[])?;
    ensure!(exported["result"] == "pushed", "export: {exported}");
    let digest = exported["digest"].as_str().context("digest")?.to_string();
    println!(
        "node A exports {} in {:.2} s: {} bytes of files, {} bytes shipped",
        exported["reference"],
        export_took.as_secs_f64(),
        exported["bytes"],
        exported["transferredBytes"]
    );

    let (mut colds, mut warms, mut ratios, mut imports) = (vec![], vec![], vec![], vec![]);
    println!(
        "| round | first | cold first call s | imported first call s | import s | imported/cold |"
    );
    println!("|---|---|---|---|---|---|");
    for round in 0..runs {
        let cold_first = round % 2 == 0;
        let mut cold = 0.0;
        let mut warm = 0.0;
        let mut import_s = 0.0;
        for step in 0..2 {
            if (step == 0) == cold_first {
                let (dir, _k) = fresh_node("b-cold")?;
                let v = probe(&tree, &cache_env(&coldctl, dir.path(), MODEL));
                ensure!(v["cache"]["fxgraph_cache_miss"] == 1, "cold run hit: {v}");
                cold = first_call(&v)?;
            } else {
                let (dir, _k) = fresh_node("b-import")?;
                let (doc, took) =
                    coldctl_cache("import", dir.path(), &registry, &["--digest", &digest])?;
                ensure!(doc["result"] == "imported", "import: {doc}");
                let v = probe(&tree, &cache_env(&coldctl, dir.path(), MODEL));
                ensure!(
                    v["cache"]["fxgraph_cache_hit"] == 1,
                    "imported run missed: {v}"
                );
                warm = first_call(&v)?;
                import_s = took.as_secs_f64();
            }
        }
        let ratio = warm / cold;
        println!(
            "| {} | {} | {cold:.3} | {warm:.3} | {import_s:.2} | {ratio:.3} |",
            round + 1,
            if cold_first { "cold" } else { "imported" }
        );
        colds.push(cold);
        warms.push(warm);
        ratios.push(ratio);
        imports.push(import_s);
    }
    let (mc, mw) = (median(colds), median(warms));
    println!(
        "median first call: cold {mc:.3} s, after import {mw:.3} s; median per-round ratio \
         imported/cold {:.3} (target <= 0.3); ratio of medians {:.3}; median import (coldctl, \
         fetch + verify + unpack) {:.2} s; shipped {} bytes for {} bytes of files",
        median(ratios),
        mw / mc,
        median(imports),
        exported["transferredBytes"],
        exported["bytes"]
    );
    Ok(())
}
