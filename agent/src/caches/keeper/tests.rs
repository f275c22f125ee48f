#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use super::*;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const S: i64 = 1_000_000_000;

/// The test's clock: seconds after it started (directories get real mtimes, so the clock
/// must be real too), as nanoseconds.
fn t(secs: i64) -> i64 {
    static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    });
    (*T0 + secs) * S
}

fn policy() -> CompileCachePolicy {
    use std::os::unix::fs::MetadataExt as _;
    let me = fs::metadata(std::env::temp_dir()).unwrap();
    CompileCachePolicy {
        uid: Some(me.uid()),
        gid: Some(me.gid()),
        quiet_period_seconds: Some(5),
        ..CompileCachePolicy::default()
    }
}

fn inputs(digest: &str, pods: &[(&str, bool, &[&str])], now: i64) -> Inputs {
    Inputs {
        wants: vec![Want {
            model: "m".into(),
            image_digest: digest.into(),
            policy: policy(),
        }],
        gpu_product: "NVIDIA H100 80GB HBM3".into(),
        pods: pods
            .iter()
            .map(|(m, running, ready)| {
                (
                    m.to_string(),
                    PodUse {
                        running: *running,
                        ready: ready.iter().map(|s| s.to_string()).collect(),
                    },
                )
            })
            .collect(),
        held: BTreeSet::new(),
        proc_root: None,
        budget: None,
        now,
    }
}

/// Writes a file dated `mtime_s` seconds.
fn write(dir: &std::path::Path, rel: &str, bytes: &[u8], mtime_s: i64) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, bytes).unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(t(mtime_s) as u64);
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn a_scope_is_made_pointed_at_and_sealed_once_a_ready_pod_used_it_and_it_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Keeper::new(dir.path());
    // No pod yet: the scope exists, the link points at it, nothing to seal.
    let r = k.pass(&inputs(D1, &[], t(100)));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses.len(), 1);
    let st = &r.statuses[0];
    assert!(
        st.current && !st.in_use && !st.sealed && st.generation.is_none(),
        "{st:?}"
    );
    let name = st.scope.clone();
    let tree = k.root().scope_dir(&name);
    assert_eq!(
        fs::canonicalize(k.root().model_link("m")).unwrap(),
        fs::canonicalize(&tree).unwrap()
    );

    // A pod runs and compiles; Ready at 110 s; the tree's last write at 108 s.
    write(
        &tree,
        "vllm/torch_compile_cache/abcdef0123/rank_0_0/backbone/x.py",
        b"x = 1\n",
        108,
    );
    let r = k.pass(&inputs(D1, &[("m", true, &["pod-1"])], t(110)));
    assert!(r.statuses[0].in_use && r.statuses[0].last_used.is_some());
    assert!(r.sealed.is_empty(), "not quiet for 5 s yet");
    // Still writing at 112 s: not quiet.
    write(&tree, "triton/k/kernel.bin", b"k", 112);
    let r = k.pass(&inputs(D1, &[("m", true, &["pod-1"])], t(114)));
    assert!(r.sealed.is_empty());
    // Quiet since 114 s, for 6 s at 120 s: sealed, generation 1.
    let r = k.pass(&inputs(D1, &[("m", true, &["pod-1"])], t(120)));
    assert_eq!(r.sealed, [(name.clone(), 1)]);
    let st = &r.statuses[0];
    assert!(
        st.sealed && st.generation == Some(1) && st.files == 2,
        "{st:?}"
    );
    // Nothing new: no new generation, still sealed.
    let r = k.pass(&inputs(D1, &[("m", true, &["pod-1"])], t(130)));
    assert!(r.sealed.is_empty() && r.statuses[0].sealed);
    // A write after the seal: unsealed until a Ready pod used it again and it is quiet.
    write(&tree, "triton/k/kernel2.bin", b"kk", 131);
    let r = k.pass(&inputs(D1, &[("m", true, &["pod-1"])], t(140)));
    assert!(!r.statuses[0].sealed);
    let r = k.pass(&inputs(D1, &[("m", true, &["pod-1", "pod-2"])], t(141)));
    assert!(r.sealed.is_empty());
    let r = k.pass(&inputs(D1, &[("m", true, &["pod-1", "pod-2"])], t(150)));
    assert_eq!(r.sealed, [(name.clone(), 2)]);
}

#[test]
fn a_new_image_gets_a_new_scope_and_gc_keeps_what_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Keeper::new(dir.path());
    k.pass(&inputs(D1, &[("m", true, &["p1"])], t(100)));
    let old = scope::current_scope(k.root(), "m").unwrap().unwrap();
    write(&k.root().scope_dir(&old), "vllm/a.bin", &[0; 4096], 90);
    // The image changes: a new scope, the link moves, the old one stays listed.
    let r = k.pass(&inputs(D2, &[("m", true, &["p1"])], t(200)));
    let new = scope::current_scope(k.root(), "m").unwrap().unwrap();
    assert_ne!(old, new);
    assert_eq!(r.statuses.len(), 2);
    assert!(
        r.statuses.iter().all(|s| s.in_use),
        "a running pod keeps every scope of its model"
    );
    // No pod any more, a budget of 0: both go.
    let mut inp = inputs(D2, &[], t(300));
    inp.budget = Some(0);
    let r = k.pass(&inp);
    assert_eq!(r.evicted.len(), 2, "{:?}", r.evicted);
    assert!(r.statuses.is_empty());
}

#[test]
fn pods_compiling_into_several_keys_are_reported_inert() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Keeper::new(dir.path());
    k.pass(&inputs(D1, &[], t(100)));
    let name = scope::current_scope(k.root(), "m").unwrap().unwrap();
    let tree = k.root().scope_dir(&name);
    write(
        &tree,
        "vllm/torch_compile_cache/aaaaaaaaaa/rank_0_0/backbone/x.py",
        b"1\n",
        50,
    );
    write(
        &tree,
        "vllm/torch_compile_cache/bbbbbbbbbb/rank_0_0/backbone/x.py",
        b"2\n",
        60,
    );
    let r = k.pass(&inputs(D1, &[], t(101)));
    let inert = r.statuses[0].inert.as_deref().expect("inert");
    assert!(inert.contains("2 hash directories"), "{inert}");
    assert!(
        inert.contains("aaaaaaaaaa") && inert.contains("bbbbbbbbbb"),
        "{inert}"
    );
}

#[test]
fn a_process_holding_a_scope_keeps_it_from_gc() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Keeper::new(dir.path());
    k.pass(&inputs(D1, &[], t(100)));
    let scope = scope::current_scope(k.root(), "m").unwrap().unwrap();
    let tree = k.root().scope_dir(&scope);
    write(&tree, "vllm/a.bin", &[0; 4096], 90);
    // A process whose cwd is inside the scope, as a serving process outside Kubernetes.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(tree.join("vllm"))
        .spawn()
        .unwrap();
    let mut inp = inputs(D1, &[], t(200));
    inp.proc_root = Some("/proc".into());
    inp.budget = Some(0);
    let r = k.pass(&inp);
    let _ = child.kill();
    let _ = child.wait();
    assert!(r.evicted.is_empty(), "{:?}", r.evicted);
    assert!(r.statuses[0].in_use, "{:?}", r.statuses);
    // Once it is gone, the budget of 0 evicts the scope.
    let mut inp = inputs(D1, &[], t(300));
    inp.proc_root = Some("/proc".into());
    inp.budget = Some(0);
    let r = k.pass(&inp);
    assert_eq!(r.evicted.len(), 1, "{:?}", r.evicted);
}
