//! `coldctl cache env|list|gc`: the pod spec parts from a ColdModel's policy, the scopes the
//! ColdNodes report, and on a cache root the caches API built in a tempdir, this node's scopes
//! and a GC that keeps the scope a live process (`sleep` with its cwd inside) holds.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command};

use coldstart_agent::caches::scope::{ensure_scope, point_model, record_used};
use coldstart_agent::caches::{CacheRoot, Owner, Scope, ScopeKey, pod_env};
use serde_json::{Value, json};

use super::{NAME, cluster};

fn coldmodel(c: &super::Cluster, name: &str, policy: Value) {
    c.api
        .create(
            json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
            "metadata": {"name": name}, "spec": {"repo": "Org/Model-X", "compileCache": policy}}),
        )
        .unwrap();
}

#[test]
fn env_follows_the_coldmodels_mount_path_and_refuses_a_disabled_policy() {
    let c = cluster();
    coldmodel(
        &c,
        NAME,
        json!({"mountPath": "/models/cc", "uid": 1000, "gid": 1000}),
    );
    let run = c.ctl(&["cache", "env", "Org/Model-X", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["model"], NAME);
    assert_eq!(
        doc["volume"],
        json!({"name": "coldstart-compile-cache", "hostPath": {
            "path": format!("/var/lib/coldstart/compile/models/{NAME}"), "type": "Directory"}})
    );
    assert_eq!(
        doc["volumeMount"],
        json!({"name": "coldstart-compile-cache", "mountPath": "/models/cc"})
    );
    let want = serde_json::to_value(pod_env(Path::new("/models/cc"))).unwrap();
    assert_eq!(doc["env"], want);
    assert_eq!(
        doc["env"][0],
        json!({"name": "VLLM_CACHE_ROOT", "value": "/models/cc/vllm"})
    );

    // Text: YAML to paste, the same parts; --cache-root moves the host path.
    let run = c.ctl(&["cache", "env", NAME, "--cache-root", "/nvme/cs"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("uid 1000, gid 1000"), "{run:?}");
    let parsed: Value = serde_yaml::from_str(&run.stdout).unwrap();
    assert_eq!(
        parsed["volumes"][0]["hostPath"]["path"],
        format!("/nvme/cs/compile/models/{NAME}")
    );
    assert_eq!(parsed["env"], want);

    coldmodel(&c, "off", json!({"enabled": false}));
    let run = c.ctl(&["cache", "env", "off", "-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["kind"], "cache_disabled", "{run:?}");
    let run = c.ctl(&["cache", "env", "off"]);
    assert!(
        run.error_line().contains("compileCache.enabled: false"),
        "{run:?}"
    );
    let run = c.ctl(&["cache", "env", "absent", "-o", "json"]);
    assert_eq!(
        (run.code, run.json()["kind"].clone()),
        (1, json!("not_found"))
    );
}

fn scope_status(model: &str, scope: &str, in_use: bool) -> Value {
    json!({"scope": scope, "model": model, "imageDigest": format!("sha256:{}", "ab".repeat(32)),
        "gpuProduct": "NVIDIA H100 80GB HBM3", "current": true, "inUse": in_use,
        "generation": 2, "bytes": 5 << 20, "files": 12, "sealed": !in_use,
        "lastUsed": "2025-01-01T00:00:00Z"})
}

#[test]
fn list_shows_what_the_coldnodes_report_per_node_and_scope() {
    let c = cluster();
    c.node("gpu-1", json!({}), true);
    c.node("gpu-2", json!({}), true);
    c.report(
        "gpu-1",
        json!({"phase": "Ready", "compileCaches": [
            scope_status(NAME, "m_nvidia_ab_111111111111", true),
            scope_status("other", "o_nvidia_ab_222222222222", false)]}),
    );
    c.report(
        "gpu-2",
        json!({"phase": "Ready", "compileCaches": [
            scope_status(NAME, "m_nvidia_ab_111111111111", false)]}),
    );
    let run = c.ctl(&["cache", "list", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows = run.json()["caches"].as_array().unwrap().clone();
    let keys: Vec<_> = rows
        .iter()
        .map(|r| (r["node"].as_str().unwrap(), r["model"].as_str().unwrap()))
        .collect();
    assert_eq!(keys, [("gpu-1", NAME), ("gpu-1", "other"), ("gpu-2", NAME)]);
    assert_eq!(rows[0]["inUse"], true);
    assert_eq!(rows[0]["generation"], 2);
    assert_eq!(rows[0]["lastUsed"], "2025-01-01T00:00:00Z");

    let run = c.ctl(&["cache", "list", "Org/Model-X"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "header and two rows: {run:?}");
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("IN USE"),
        "{run:?}"
    );
    assert!(
        lines[1].starts_with("gpu-1") && lines[1].contains("111111111111"),
        "{run:?}"
    );
    assert!(
        lines[1].contains("5.0 MiB") && lines[1].contains("yes"),
        "{run:?}"
    );
}

/// A scope of `model` under `root`, with `kib` KiB in it, used at `used` (seconds).
fn scope(root: &CacheRoot, owner: Owner, model: &str, kib: usize, used: i64) -> Scope {
    let digest = format!("sha256:{}", "cd".repeat(32));
    let key = ScopeKey::new(model, &digest, "NVIDIA H100 80GB HBM3").unwrap();
    let s = ensure_scope(root, &key, owner).unwrap();
    let file = root
        .scope_dir(&s.name)
        .join("vllm/torch_compile_cache/x.bin");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, vec![7u8; kib << 10]).unwrap();
    record_used(root, &s.name, used * 1_000_000_000).unwrap();
    point_model(root, &s).unwrap();
    s
}

/// A `sleep` whose cwd is inside `dir`, killed on drop.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn here_lists_this_nodes_scopes_and_gc_keeps_the_one_a_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    let root = CacheRoot::new(dir.path());
    let m = std::fs::metadata(dir.path()).unwrap();
    let owner = Owner {
        uid: m.uid(),
        gid: m.gid(),
    };
    // held: oldest of all, but a process sits in it. old, new: free; old goes first.
    let held = scope(&root, owner, "held", 100, 1000);
    let old = scope(&root, owner, "old", 100, 2000);
    let new = scope(&root, owner, "new", 100, 3000);
    let sleeper = Holder(
        Command::new("sleep")
            .arg("60")
            .current_dir(root.scope_dir(&held.name).join("vllm"))
            .spawn()
            .unwrap(),
    );
    let pid = sleeper.0.id();
    let cache_root = dir.path().to_str().unwrap();
    let ctl = |args: &[&str]| {
        let mut all = vec!["--here"];
        all.extend(args);
        all.extend(["--cache-root", cache_root]);
        crate::common::coldctl(&all, super::LIMIT)
    };

    let run = ctl(&["cache", "list", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows = run.json()["caches"].as_array().unwrap().clone();
    let by_model = |m: &str| rows.iter().find(|r| r["model"] == m).unwrap().clone();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let h = by_model("held");
    assert_eq!(
        (h["inUse"].clone(), h["inUseBy"]["pid"].clone()),
        (json!(true), json!(pid))
    );
    assert_eq!(h["scope"], held.name.as_str());
    assert_eq!(h["current"], true);
    assert_eq!(h["bytes"], 100 << 10);
    assert!(h.get("node").is_none(), "{h}");
    assert_eq!(by_model("old")["inUse"], false);
    assert_eq!(by_model("old")["generation"], Value::Null);
    let run = ctl(&["cache", "list", "new"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("MODEL"), "{run:?}");
    assert_eq!(run.stdout.lines().count(), 2, "{run:?}");

    // 300 KiB used, 250 KiB allowed: a dry run names old and removes nothing.
    let run = ctl(&[
        "cache",
        "gc",
        "--budget",
        "250KiB",
        "--dry-run",
        "-o",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["evicted"][0]["scope"], old.name.as_str());
    assert!(
        root.scope_dir(&old.name).is_dir(),
        "dry run removed nothing"
    );

    let run = ctl(&["cache", "gc", "--budget", "250KiB"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("in use (pid {pid}")),
        "{run:?}"
    );
    assert!(run.stdout.contains("freed 100.0 KiB"), "{run:?}");
    assert!(!root.scope_dir(&old.name).exists(), "old evicted");
    assert!(root.scope_dir(&held.name).is_dir() && root.scope_dir(&new.name).is_dir());

    // Under a budget nothing free fits: new goes too, the held scope stays, over budget.
    let run = ctl(&["cache", "gc", "--budget", "1KiB", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["evicted"][0]["scope"], new.name.as_str());
    assert_eq!(doc["kept"][0]["reason"], "in_use");
    assert_eq!(doc["kept"][0]["inUseBy"]["pid"], pid);
    assert_eq!(doc["overBudget"], true);
    assert!(root.scope_dir(&held.name).is_dir());
    drop(sleeper);
}
