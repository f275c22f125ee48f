//! Compile caches in cluster mode, end to end: the real agent (its pods watch through the
//! strict fake API server, RBAC from deploy/), real containerd for the image digest, the
//! stand-in NVML for the GPU product. The scope is made and pointed at once the model is
//! warm, a Ready pod of the model marks it used and in use, and once its tree is quiet for the
//! policy's period it is sealed; the ColdNode reports each step.

use std::path::Path;

use serde_json::{Value, json};

use super::{MODEL, NODE, WARM, World, cold_model, support::wait_for};

fn scope_status(w: &World) -> Option<Value> {
    let cn = w.coldnode()?;
    cn["status"]["compileCaches"]
        .as_array()?
        .iter()
        .find(|s| s["model"] == MODEL)
        .cloned()
}

fn pod(ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vllm-0", "namespace": "default",
            "labels": {"coldstart.dev/model": MODEL}},
        "spec": {"nodeName": NODE, "containers": [{"name": "vllm", "image": "x"}]},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registry)"]
fn a_scope_is_made_used_and_sealed_and_the_coldnode_says_so() {
    let w = World::new();
    let mut model = cold_model("gpu");
    model["spec"]["compileCache"] = json!({"quietPeriodSeconds": 2});
    w.api.create(model).unwrap();
    let mut agent = w.agent(&["--compile-cache-budget", "1GiB"]);
    w.wait_model_phase(&mut agent, "Ready");

    // The scope of (model, image digest, GPU product), pointed at by the model's link.
    let st = wait_for("a compile-cache scope", WARM, || {
        agent.check_alive();
        scope_status(&w).filter(|s| s["current"] == true)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    let digest = w.coldnode().unwrap()["status"]["models"][0]["image"]["resolved"].clone();
    assert_eq!(st["imageDigest"], digest, "{st}");
    assert_eq!(st["gpuProduct"], "NVIDIA Stub GPU", "{st}");
    assert_eq!(
        (st["inUse"].clone(), st["sealed"].clone()),
        (json!(false), json!(false))
    );
    let scope = st["scope"].as_str().unwrap().to_string();
    let compile = w.cache_root().join("compile");
    let tree = compile.join("scopes").join(&scope);
    assert_eq!(
        std::fs::canonicalize(compile.join("models").join(MODEL)).unwrap(),
        std::fs::canonicalize(&tree).unwrap()
    );

    // A pod of the model runs, compiles, turns Ready: in use, used, then sealed once quiet.
    w.api.create(pod(false)).unwrap();
    write(
        &tree.join("vllm/torch_compile_cache/0123456789/rank_0_0/backbone/k.py"),
        b"x = 1\n",
    );
    wait_for("in use", WARM, || {
        scope_status(&w).filter(|s| s["inUse"] == true && s["files"].as_u64() >= Some(1))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    w.api
        .modify("pods", "default", "vllm-0", |p| *p = pod(true))
        .unwrap();
    let st = wait_for("sealed", WARM, || {
        agent.check_alive();
        scope_status(&w).filter(|s| s["sealed"] == true)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert_eq!(st["generation"], 1, "{st}");
    assert!(st["lastUsed"].is_string(), "{st}");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(compile.join("state").join(&scope).join("manifests/1.json")).unwrap(),
    )
    .unwrap();
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["vllm/torch_compile_cache/0123456789/rank_0_0/backbone/k.py"]
    );

    // The pod goes: not in use any more; the scope stays (well within the budget).
    w.api.delete("pods", "default", "vllm-0").unwrap();
    wait_for("not in use", WARM, || {
        scope_status(&w).filter(|s| s["inUse"] == false)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert_eq!(agent.terminate(), 0);
}

fn scope_status_of(w: &World, node: &str) -> Option<Value> {
    let cn = w.coldnode_of(node)?;
    cn["status"]["compileCaches"]
        .as_array()?
        .iter()
        .find(|s| s["model"] == MODEL && s["current"] == true)
        .cloned()
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registry)"]
fn a_scope_sealed_on_one_node_is_exported_and_imported_by_the_next_before_its_first_pod() {
    let w = World::new();
    let repository = format!("{}/coldstart/compile-caches", w.registry.host());
    let mut model = cold_model("gpu");
    model["spec"]["compileCache"] = json!({"quietPeriodSeconds": 2, "registry": repository});
    w.api.create(model).unwrap();
    let lib = w.nvml.lib.to_str().unwrap().to_string();
    let nvml = ["--nvml-library", lib.as_str()];

    // Node 1: its pod compiles and turns Ready; the agent seals and exports (its RBAC, with the
    // push claim's Lease, comes from deploy/).
    let mut a = w.agent_on(NODE, &w.cache_root(), &nvml, &[]);
    w.wait_model_phase(&mut a, "Ready");
    let st = wait_for("node 1's scope", WARM, || {
        a.check_alive();
        scope_status_of(&w, NODE)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log_tail()));
    let scope = st["scope"].as_str().unwrap().to_string();
    let tree_a = w.cache_root().join("compile/scopes").join(&scope);
    let kernel = "triton/ABCDEF/kernel.cubin";
    write(&tree_a.join(kernel), b"compiled on gpu-1");
    w.api.create(pod(true)).unwrap();
    let st = wait_for("exported", WARM, || {
        a.check_alive();
        scope_status_of(&w, NODE).filter(|s| s["exported"]["digest"].is_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log_tail()));
    let exported = st["exported"].clone();
    assert_eq!(
        exported["reference"],
        format!("{repository}:{scope}"),
        "{st}"
    );
    assert_eq!(exported["generation"], 1, "{st}");
    assert!(
        st["transfer"].as_str().unwrap().starts_with("exported "),
        "{st}"
    );
    // The claim was given back.
    assert!(
        w.api.list("leases").unwrap().is_empty(),
        "a push claim was left behind"
    );

    // Node 2 joins: same model, image and GPU product, so the same scope, imported before any
    // pod of the model runs there.
    w.api.create(super::node_named(super::NODE_2)).unwrap();
    let root_b = w.dir.path().join("cache-2");
    let mut b = w.agent_on(super::NODE_2, &root_b, &nvml, &[]);
    let st = wait_for("imported on node 2", WARM, || {
        b.check_alive();
        scope_status_of(&w, super::NODE_2).filter(|s| s["imported"]["digest"].is_string())
    })
    .unwrap_or_else(|e| {
        let caches = w
            .coldnode_of(super::NODE_2)
            .map(|c| c["status"]["compileCaches"].clone());
        panic!("{e}\nnode 2's compile caches: {caches:?}\n{}", b.log_tail())
    });
    assert_eq!(st["scope"], scope.as_str(), "{st}");
    assert_eq!(st["imported"]["digest"], exported["digest"], "{st}");
    assert_eq!(
        st["inUse"], false,
        "no pod of the model runs on node 2: {st}"
    );
    let tree_b = root_b.join("compile/scopes").join(&scope);
    assert_eq!(
        std::fs::read(tree_b.join(kernel)).unwrap(),
        b"compiled on gpu-1"
    );
    // Its own agent says nothing was pushed from node 2 (its files are node 1's).
    assert!(st["exported"].is_null(), "{st}");
    assert_eq!(a.terminate(), 0);
    assert_eq!(b.terminate(), 0);
}
