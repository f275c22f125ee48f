//! The compile-cache port against real `torch.compile`: a scope made with the agent's caches
//! API, the probe (`tests/torch/compile_probe.py`, Inductor on CPU in the torch tree of
//! `scripts/torch-tree.sh`) run with exactly the env the port gives a pod, the quiet rule, a
//! seal that lists the FX graph entries, and a second process on the same scope that hits
//! Inductor's FX graph cache. The pod's mount path is the scope's host path: `torch-run.sh`
//! binds host directories at the same path inside the tree.
//!
//! Needs root and `scripts/test-env.sh` (the `torch <path>` line of
//! `$COLDSTART_TESTENV/env`); CI runs it with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coldstart_agent::caches::quiet::{Observed, TreeStats, quiet};
use coldstart_agent::caches::scope::{ensure_scope, point_model, record_used};
use coldstart_agent::caches::{CacheRoot, Owner, ScopeKey, pod_env, seal, walk};
use support::containerd::DEFAULT_TESTENV;
use support::{SETUP_HINT, require_root, run_bounded};

/// One probe run: Python start, `import torch`, the compile (or cache load) and two calls.
const PROBE_TIMEOUT: Duration = Duration::from_secs(600);
/// The quiet period of this test (the agent's default is 30 s).
const QUIET: Duration = Duration::from_secs(2);
/// How long the tree may take to turn quiet after the probe exits.
const QUIET_TIMEOUT: Duration = Duration::from_secs(60);

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The torch tree, from the `torch <path>` line of `$COLDSTART_TESTENV/env`.
fn torch_tree() -> PathBuf {
    let base = std::env::var_os("COLDSTART_TESTENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TESTENV));
    let env_file = base.join("env");
    let text = std::fs::read_to_string(&env_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {SETUP_HINT}", env_file.display()));
    let tree = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("torch "))
        .map(|p| PathBuf::from(p.trim()))
        .next_back()
        .unwrap_or_else(|| panic!("{} has no `torch` line; {SETUP_HINT}", env_file.display()));
    assert!(
        tree.join("usr/bin/python3").exists(),
        "{} has no python3; {SETUP_HINT}",
        tree.display()
    );
    tree
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Runs the probe in the torch tree with `mount` bound and exactly the pod env of `mount`;
/// returns its JSON line.
fn probe(tree: &Path, mount: &Path) -> serde_json::Value {
    let probe_dir = Path::new(REPO).join("tests/torch");
    let mut cmd = Command::new(Path::new(REPO).join("scripts/torch-run.sh"));
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(pod_env(mount).into_iter().map(|e| (e.name, e.value)))
        .arg(tree)
        .arg("--bind")
        .arg(mount)
        .arg("--ro")
        .arg(&probe_dir)
        .arg("--")
        .arg("python3")
        .arg(probe_dir.join("compile_probe.py"));
    let out = run_bounded(&mut cmd, PROBE_TIMEOUT).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON line from the probe ({}); stderr:\n{stderr}",
                out.status
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        v["ok"],
        true,
        "the probe failed (Inductor could not compile?): {v}\nstderr tail:\n{}",
        stderr
            .chars()
            .rev()
            .take(4000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
    v
}

/// Polls the scope's tree until the quiet rule holds; returns how long that took.
fn wait_quiet(scope_tree: &Path) -> Duration {
    let start = Instant::now();
    let mut prev: Option<Observed> = None;
    loop {
        let stats = TreeStats::of(&walk::walk(scope_tree).unwrap());
        let obs = Observed::next(prev.as_ref(), stats, now());
        if quiet(prev.as_ref(), &obs, QUIET) {
            return start.elapsed();
        }
        assert!(start.elapsed() < QUIET_TIMEOUT, "never quiet: {obs:?}");
        prev = Some(obs);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs the torch tree (scripts/test-env.sh) and root"]
fn a_sealed_scope_serves_a_second_process_from_inductors_fx_graph_cache() {
    require_root();
    let tree = torch_tree();
    let dir = tempfile::Builder::new()
        .prefix("coldstart-caches-")
        .tempdir()
        .unwrap();
    let root = CacheRoot::new(dir.path());
    let digest = format!("sha256:{}", "ab".repeat(32));
    let key = ScopeKey::new("probe-model", &digest, "cpu").unwrap();
    // The probe runs as root in the tree, as the scope's owner.
    let scope = ensure_scope(&root, &key, Owner { uid: 0, gid: 0 }).unwrap();
    point_model(&root, &scope).unwrap();
    let scope_tree = root.scope_dir(&scope.name);

    let first = probe(&tree, &scope_tree);
    let c1 = &first["cache"];
    eprintln!("first run: {first}");
    assert_eq!(c1["fxgraph_cache_miss"], 1, "{first}");

    let waited = wait_quiet(&scope_tree);
    let sealed = seal::seal(&root, &scope, now()).unwrap();
    let manifest = seal::latest_manifest(&root, &scope.name).unwrap().unwrap();
    let fxgraph: Vec<_> = manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with("inductor/fxgraph/"))
        .collect();
    assert!(
        !fxgraph.is_empty(),
        "no fxgraph entry sealed: {manifest:#?}"
    );
    let pch = manifest.files.iter().any(|f| {
        f.path
            .starts_with("tmp/torchinductor_root/precompiled_headers/")
    });
    assert!(pch, "the precompiled headers under TMPDIR were not sealed");
    eprintln!(
        "quiet after {waited:?}; sealed generation {}: {} files, {} bytes, {} fxgraph entries; excluded {:?}",
        sealed.generation,
        sealed.files,
        sealed.bytes,
        fxgraph.len(),
        sealed
            .excluded
            .iter()
            .map(|e| (&e.path, e.reason))
            .collect::<Vec<_>>()
    );
    record_used(&root, &scope.name, now()).unwrap();

    let second = probe(&tree, &scope_tree);
    eprintln!("second run: {second}");
    let c2 = &second["cache"];
    assert_eq!(c2["fxgraph_cache_hit"], 1, "{second}");
    assert_eq!(c2["fxgraph_cache_miss"], 0, "{second}");
    println!(
        "first_call_s: cold {} s, from the sealed scope {} s",
        first["first_call_s"], second["first_call_s"]
    );
}
