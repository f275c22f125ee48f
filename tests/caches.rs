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

use std::process::Command;
use std::time::Duration;

use coldstart_agent::caches::keeper::Keeper;
use coldstart_agent::caches::seal;
use support::torch::{
    MODEL, PodSpec, cache_env, inputs, probe, probe_with, torch_tree, wait_sealed,
};
use support::{require_root, run_bounded};

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
    let pod = cache_env(&common::coldctl_bin(), dir.path(), MODEL);
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

#[test]
#[ignore = "needs the torch tree and docker-registry (scripts/test-env.sh) and root"]
fn a_scope_compiled_on_node_a_serves_node_bs_first_call_after_import() {
    use coldstart_agent::caches::ship::{self, Exported, Imported, NoClaim, Target, Trust};
    use coldstart_agent::images::RegistryClient;

    require_root();
    let tree = torch_tree();
    let reg = support::Registry::start_plain().unwrap();
    let target = Target::new(&format!("{}/coldstart/compile-caches", reg.host()), None).unwrap();
    let client = RegistryClient::new(None, Duration::from_secs(30));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let coldctl = common::coldctl_bin();

    // Node A: the keeper makes the scope, the "pod" compiles, the keeper seals, A exports.
    let dir_a = tempfile::Builder::new()
        .prefix("coldstart-node-a-")
        .tempdir()
        .unwrap();
    let mut keeper_a = Keeper::new(dir_a.path());
    let r = keeper_a.pass(&inputs(false));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let scope = r.statuses[0].scope.clone();
    let cold = probe(&tree, &cache_env(&coldctl, dir_a.path(), MODEL));
    assert_eq!(cold["cache"]["fxgraph_cache_miss"], 1, "{cold}");
    wait_sealed(&mut keeper_a);
    let out = rt
        .block_on(ship::export(
            keeper_a.root(),
            &scope,
            &client,
            &target,
            &NoClaim,
            "node-a",
            support::torch::now(),
        ))
        .unwrap();
    let Exported::Pushed(pushed) = out else {
        panic!("A did not push: {out:?}")
    };

    // Node B: same model, image and GPU: the same scope, empty until imported.
    let dir_b = tempfile::Builder::new()
        .prefix("coldstart-node-b-")
        .tempdir()
        .unwrap();
    let mut keeper_b = Keeper::new(dir_b.path());
    let r = keeper_b.pass(&inputs(false));
    assert_eq!(r.statuses[0].scope, scope, "same key, same scope");
    assert_eq!(r.statuses[0].files, 0);
    let s = coldstart_agent::caches::scope::list_scopes(keeper_b.root())
        .unwrap()
        .remove(0);
    let owner = coldstart_agent::caches::Owner { uid: 0, gid: 0 };
    let out = rt
        .block_on(ship::import(
            keeper_b.root(),
            &s,
            owner,
            &client,
            &target,
            &Trust::Digest(pushed.digest.clone()),
            support::torch::now(),
        ))
        .unwrap();
    let Imported::Done(imported) = out else {
        panic!("B did not import: {out:?}")
    };
    let warm = probe(&tree, &cache_env(&coldctl, dir_b.path(), MODEL));
    assert_eq!(warm["cache"]["fxgraph_cache_hit"], 1, "{warm}");
    assert_eq!(warm["cache"]["fxgraph_cache_miss"], 0, "{warm}");
    // B's pod compiled nothing new: its seal finds the imported files and adds no generation.
    let (_, generation) = wait_sealed_or_unchanged(&mut keeper_b);
    assert_eq!(generation, 1);
    let status = keeper_b.pass(&inputs(true)).statuses.remove(0);
    assert_eq!(status.imported.as_ref().unwrap().digest, pushed.digest);
    println!(
        "first_call_s: node A cold {} s, node B after import {} s; shipped {} bytes ({} bytes \
         of files)",
        cold["first_call_s"], warm["first_call_s"], imported.transferred_bytes, imported.bytes
    );
}

/// Keeper passes until the used scope is sealed or found unchanged; returns the time and the
/// newest generation.
fn wait_sealed_or_unchanged(keeper: &mut Keeper) -> (Duration, u64) {
    let start = std::time::Instant::now();
    loop {
        let r = keeper.pass(&inputs(true));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        if let Some(st) = r.statuses.first()
            && st.sealed
        {
            return (start.elapsed(), st.generation.unwrap_or_default());
        }
        assert!(
            start.elapsed() < support::torch::QUIET_TIMEOUT,
            "never sealed: {:?}",
            r.statuses
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
