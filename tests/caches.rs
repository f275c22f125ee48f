//! The compile caches against real `torch.compile`, as a pod meets them: the agent's keeper
//! makes the scope and the model's link; `coldctl cache env MODEL --here -o json` says what to
//! mount and which env to set; the probe (`tests/torch/compile_probe.py`, Inductor on CPU in
//! the torch tree of `scripts/torch-tree.sh`) runs with the model's link bound at the printed
//! mount path and exactly the printed env, as a container would; the keeper seals the scope
//! once the "pod" is Ready and the tree is quiet (the manifest lists the FX graph entries), and
//! a second process on the same scope hits Inductor's FX graph cache.
//!
//! Needs root and `scripts/test-env.sh` (the `torch <path>` line of
//! `$COLDSTART_TESTENV/env`); CI runs it with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::{BTreeMap, BTreeSet};

use coldstart_agent::api::CompileCachePolicy;
use coldstart_agent::caches::keeper::{Inputs, Keeper, PodUse, Want};
use coldstart_agent::caches::seal;
use support::{SETUP_HINT, require_root, run_bounded};

/// One probe run: Python start, `import torch`, the compile (or cache load) and two calls.
const PROBE_TIMEOUT: Duration = Duration::from_secs(600);
/// The quiet period of this test (the agent's default is 30 s).
const QUIET: Duration = Duration::from_secs(2);
/// How long the tree may take to turn quiet after the probe exits.
const QUIET_TIMEOUT: Duration = Duration::from_secs(60);

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The ColdModel name of the test.
const MODEL: &str = "probe-model";

/// The torch tree, from the `torch <path>` line of `$COLDSTART_TESTENV/env`.
fn torch_tree() -> PathBuf {
    let tree = support::hub_py::testenv_path("torch", "the Debian tree with python3-torch");
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

/// What `coldctl cache env MODEL --here -o json` prints for a cache root.
struct PodSpec {
    host_path: PathBuf,
    mount_path: String,
    env: Vec<(String, String)>,
}

fn cache_env(cache_root: &Path, model: &str) -> PodSpec {
    let mut cmd = Command::new(common::coldctl_bin());
    cmd.args([
        "cache",
        "env",
        model,
        "--here",
        "-o",
        "json",
        "--cache-root",
    ])
    .arg(cache_root)
    .env("COLDSTART_LOG", "warn");
    let out = run_bounded(&mut cmd, Duration::from_secs(60)).unwrap();
    assert!(out.status.success(), "coldctl cache env: {out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    PodSpec {
        host_path: PathBuf::from(s(&doc["volume"]["hostPath"]["path"])),
        mount_path: s(&doc["volumeMount"]["mountPath"]),
        env: doc["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (s(&e["name"]), s(&e["value"])))
            .collect(),
    }
}

/// Runs the probe in the torch tree as a container of the pod would: the volume bound at its
/// mount path, exactly the printed env; returns its JSON line.
fn probe(tree: &Path, pod: &PodSpec) -> serde_json::Value {
    probe_with(tree, pod, "--bind")
}

/// [`probe`] with the volume mounted `--bind` (read-write: the probe must succeed) or `--ro`
/// (read-only: whatever it reports).
fn probe_with(tree: &Path, pod: &PodSpec, mode: &str) -> serde_json::Value {
    let probe_dir = Path::new(REPO).join("tests/torch");
    let mut cmd = Command::new(Path::new(REPO).join("scripts/torch-run.sh"));
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(pod.env.iter().cloned())
        .arg(tree)
        .arg(mode)
        .arg(format!("{}:{}", pod.host_path.display(), pod.mount_path))
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
    if mode == "--bind" {
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
    }
    v
}

/// The keeper's inputs: the model wanted, its "pod" running and, when `ready`, Ready.
fn inputs(ready: bool) -> Inputs {
    let policy = CompileCachePolicy {
        quiet_period_seconds: Some(QUIET.as_secs() as u32),
        ..CompileCachePolicy::default()
    };
    let pod = PodUse {
        running: true,
        ready: if ready {
            ["pod-1".to_string()].into()
        } else {
            BTreeSet::new()
        },
    };
    Inputs {
        wants: vec![Want {
            model: MODEL.into(),
            image_digest: format!("sha256:{}", "ab".repeat(32)),
            policy,
        }],
        gpu_product: "cpu".into(),
        pods: BTreeMap::from([(MODEL.to_string(), pod)]),
        held: BTreeSet::new(),
        proc_root: None,
        budget: None,
        now: now(),
    }
}

/// Runs keeper passes (a pod Ready) until it seals; returns how long that took and the
/// generation.
fn wait_sealed(keeper: &mut Keeper) -> (Duration, u64) {
    let start = Instant::now();
    loop {
        let r = keeper.pass(&inputs(true));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        if let Some((_, generation)) = r.sealed.first() {
            return (start.elapsed(), *generation);
        }
        assert!(
            start.elapsed() < QUIET_TIMEOUT,
            "never sealed: {:?}",
            r.statuses
        );
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
    // The agent's keeper makes the scope and the model's link (the probe runs as root, the
    // policy's default owner).
    let mut keeper = Keeper::new(dir.path());
    let r = keeper.pass(&inputs(false));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let scope = r.statuses[0].scope.clone();
    let root = keeper.root().clone();
    let pod = cache_env(dir.path(), MODEL);
    assert_eq!(pod.host_path, root.model_link(MODEL));

    let first = probe(&tree, &pod);
    let c1 = &first["cache"];
    eprintln!("first run: {first}");
    assert_eq!(c1["fxgraph_cache_miss"], 1, "{first}");

    let (waited, generation) = wait_sealed(&mut keeper);
    let manifest = seal::latest_manifest(&root, &scope).unwrap().unwrap();
    assert_eq!(manifest.generation, generation);
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
        "sealed generation {generation} after {waited:?}: {} files, {} bytes, {} fxgraph entries",
        manifest.files.len(),
        manifest.bytes,
        fxgraph.len(),
    );

    let second = probe(&tree, &pod);
    eprintln!("second run: {second}");
    let c2 = &second["cache"];
    assert_eq!(c2["fxgraph_cache_hit"], 1, "{second}");
    assert_eq!(c2["fxgraph_cache_miss"], 0, "{second}");
    // A read-only pool: its pods get a copy (`cp -a`, as the README's init container makes)
    // in a volume of their own, so they read the sealed scope and can write nothing shared.
    // (A read-only mount of the scope itself fails: Inductor writes into its dirs even on a
    // hit.) The copy still hits.
    let copy = tempfile::tempdir().unwrap();
    let mut cp = Command::new("cp");
    cp.arg("-a")
        .arg(format!("{}/.", pod.host_path.display()))
        .arg(copy.path());
    assert!(
        run_bounded(&mut cp, Duration::from_secs(120))
            .unwrap()
            .status
            .success()
    );
    let private = PodSpec {
        host_path: copy.path().to_path_buf(),
        mount_path: pod.mount_path.clone(),
        env: pod.env.clone(),
    };
    let third = probe(&tree, &private);
    eprintln!("private copy run: {third}");
    assert_eq!(third["cache"]["fxgraph_cache_hit"], 1, "{third}");
    let ro = probe_with(&tree, &pod, "--ro");
    assert_ne!(
        ro["ok"], true,
        "a read-only mount now works: update the README: {ro}"
    );
    println!(
        "first_call_s: cold {} s, from the sealed scope {} s, from a private copy {} s",
        first["first_call_s"], second["first_call_s"], third["first_call_s"]
    );
}
