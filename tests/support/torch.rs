//! Real `torch.compile` as a pod of a model meets the compile caches: the probe
//! (`tests/torch/compile_probe.py`, Inductor on CPU in the Debian torch tree of
//! `scripts/torch-tree.sh`) run with the model's link bound at the mount path and exactly the
//! env `coldctl cache env MODEL --here -o json` prints, and the keeper inputs of a "pod" of the
//! model. Shared by `tests/caches.rs` and `benches/compile_cache.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coldstart_agent::api::CompileCachePolicy;
use coldstart_agent::caches::keeper::{Inputs, Keeper, PodUse, Want};

/// One probe run: Python start, `import torch`, the compile (or cache load) and two calls.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(600);
/// The quiet period of this test (the agent's default is 30 s).
pub const QUIET: Duration = Duration::from_secs(2);
/// How long the tree may take to turn quiet after the probe exits.
pub const QUIET_TIMEOUT: Duration = Duration::from_secs(60);

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The ColdModel name of the test.
pub const MODEL: &str = "probe-model";

/// The torch tree, from the `torch <path>` line of `$COLDSTART_TESTENV/env`.
pub fn torch_tree() -> PathBuf {
    let tree = super::hub_py::testenv_path("torch", "the Debian tree with python3-torch");
    assert!(
        tree.join("usr/bin/python3").exists(),
        "{} has no python3; {}",
        tree.display(),
        super::SETUP_HINT
    );
    tree
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// What `coldctl cache env MODEL --here -o json` prints for a cache root (`coldctl`: the
/// binary).
pub struct PodSpec {
    /// The hostPath volume's path on the node.
    pub host_path: PathBuf,
    /// Where the pod mounts it.
    pub mount_path: String,
    /// The env the pod sets.
    pub env: Vec<(String, String)>,
}

pub fn cache_env(coldctl: &Path, cache_root: &Path, model: &str) -> PodSpec {
    let mut cmd = Command::new(coldctl);
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
    let out = super::run_bounded(&mut cmd, Duration::from_secs(60)).unwrap();
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
pub fn probe(tree: &Path, pod: &PodSpec) -> serde_json::Value {
    probe_with(tree, pod, "--bind")
}

/// [`probe`] with the volume mounted `--bind` (read-write: the probe must succeed) or `--ro`
/// (read-only: whatever it reports).
pub fn probe_with(tree: &Path, pod: &PodSpec, mode: &str) -> serde_json::Value {
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
    let out = super::run_bounded(&mut cmd, PROBE_TIMEOUT).unwrap();
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
pub fn inputs(ready: bool) -> Inputs {
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
pub fn wait_sealed(keeper: &mut Keeper) -> (Duration, u64) {
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
