//! A simulated vLLM writing into one scope the way the facts describe (section A): the AOT
//! `model` written to `model.<pid>.tmp` and renamed, Inductor writes going on after it, the
//! piecewise index and factors as plain writes, one of them cut short by a SIGKILLed process,
//! Triton's `tmp.pid_*` directories. Only complete files are sealed; never quiet mid-writes.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::quiet::{Observed, TreeStats, quiet};
use super::seal::{self, ExcludedReason};
use super::tests_support::{put, root, scope};
use super::walk::walk;

const AOT: &str = "vllm/torch_compile_cache/torch_aot_compile/\
    0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const PW: &str = "vllm/torch_compile_cache/0123456789/rank_0_0";
const INDEX: &str =
    "{   ((1, 8), 0, 'inductor_standalone'): 'artifact_compile_range_(1, 8)_subgraph_0'}";
const STEP: Duration = Duration::from_millis(50);
const PERIOD: Duration = Duration::from_secs(1);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Writes `bytes` to `dir/name` the atomic way: a temporary name, then a rename.
fn put_atomic(dir: &Path, name: &str, bytes: &[u8], tmp: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(tmp), bytes).unwrap();
    std::fs::rename(dir.join(tmp), dir.join(name)).unwrap();
}

/// A child process that writes the start of the eagle prefix's index and factors and is
/// SIGKILLed before it writes the rest: plain `open(..., "w")` writes left cut short.
fn killed_writer(tree: &Path) {
    let dir = tree.join(PW).join("eagle_head");
    std::fs::create_dir_all(&dir).unwrap();
    let (idx, fac) = (
        dir.join("vllm_compile_cache.py"),
        dir.join("cache_key_factors.json"),
    );
    let script = format!(
        "printf '%s' \"{{   ((1, 8), 0, 'induc\" > '{}' && printf '%s' '{{\"env\": {{\"VLLM_' > '{}' && exec sleep 30",
        idx.display(),
        fac.display()
    );
    let mut child = Command::new("sh").arg("-c").arg(script).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(idx.exists() && fac.metadata().is_ok_and(|m| m.len() > 0)) {
        assert!(Instant::now() < deadline, "the writer never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn spawn(
    active: &Arc<AtomicUsize>,
    f: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    active.fetch_add(1, Ordering::SeqCst);
    let active = active.clone();
    std::thread::spawn(move || {
        f();
        active.fetch_sub(1, Ordering::SeqCst);
    })
}

#[test]
fn concurrent_writers_are_never_quiet_and_only_complete_files_are_sealed() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    killed_writer(&tree);
    let active = Arc::new(AtomicUsize::new(0));
    let t = tree.clone();
    let aot = spawn(&active, move || {
        let rank = t.join(AOT).join("rank_0_0");
        std::fs::create_dir_all(&rank).unwrap();
        let tmp = rank.join(format!("model.{}.tmp", std::process::id()));
        for i in 0..6 {
            let mut bytes = std::fs::read(&tmp).unwrap_or_default();
            bytes.extend(vec![i as u8; 4096]);
            std::fs::write(&tmp, bytes).unwrap();
            std::thread::sleep(STEP);
        }
        std::fs::rename(&tmp, rank.join("model")).unwrap();
        // Inductor keeps writing after `model` appears (graph capture, autotune).
        for i in 0..10 {
            let dir = t
                .join(AOT)
                .join(format!("inductor_cache/fxgraph/a{i}/entry"));
            put_atomic(&dir, "data", &[i; 1000], ".tmp.data");
            std::thread::sleep(STEP);
        }
    });
    let t = tree.clone();
    let piecewise = spawn(&active, move || {
        let dir = t.join(PW).join("backbone");
        for i in 0..8u8 {
            put_atomic(
                &dir,
                &format!("artifact_compile_range_1_8_subgraph_{i}"),
                &[i; 2000],
                "a.tmp",
            );
            std::thread::sleep(STEP);
        }
        put(
            &dir.join("computation_graph.py"),
            "def forward(x):\n    return (x,)\n",
        );
        put(
            &dir.join("cache_key_factors.json"),
            r#"{"env": {"VLLM_X": "1"}, "config": "abc"}"#,
        );
        put(&dir.join(super::pycheck::VLLM_INDEX), INDEX);
    });
    let t = tree.clone();
    let triton = spawn(&active, move || {
        for k in 0..6 {
            let key = t.join(format!("triton/KEY{k}"));
            let tmp = key.join(format!("tmp.pid_{}_{k}", std::process::id()));
            put(&tmp.join("k.cubin"), [k as u8; 3000]);
            put(&tmp.join("__grp__k.json"), r#"{"child_paths": {}}"#);
            if k == 5 {
                break; // crashed: the temporary directory stays behind
            }
            std::fs::rename(tmp.join("k.cubin"), key.join("k.cubin")).unwrap();
            std::fs::rename(tmp.join("__grp__k.json"), key.join("__grp__k.json")).unwrap();
            std::fs::remove_dir(&tmp).unwrap();
            std::thread::sleep(STEP);
        }
    });
    put(
        &tree.join(AOT).join("rank_1_0/model.999.tmp"),
        b"another rank, killed",
    );
    put(&tree.join("inductor/locks/c5j.lock"), b"");
    put(
        &tree.join("tmp/torchinductor_vllm/precompiled_headers/h.gch"),
        [7u8; 5000],
    );
    put(&tree.join("tmp/pip-build-x/junk"), b"scratch");

    let mut prev: Option<Observed> = None;
    let mut quiet_at = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let writing = active.load(Ordering::SeqCst) > 0;
        let obs = Observed::next(prev.as_ref(), TreeStats::of(&walk(&tree).unwrap()), now());
        let q = quiet(prev.as_ref(), &obs, PERIOD);
        assert!(!(writing && q), "quiet while writers run: {obs:?}");
        if q {
            quiet_at = Some(Instant::now());
            break;
        }
        prev = Some(obs);
        std::thread::sleep(Duration::from_millis(40));
    }
    assert!(quiet_at.is_some(), "never quiet within 60 s");
    for h in [aot, piecewise, triton] {
        h.join().unwrap();
    }

    let out = seal::seal(&root, &s, now()).unwrap();
    assert_eq!((out.generation, out.new), (1, true));
    let m = seal::latest_manifest(&root, &s.name).unwrap().unwrap();
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    let has = |p: &str| paths.contains(&p);
    assert!(has(&format!("{AOT}/rank_0_0/model")), "{paths:#?}");
    for i in 0..10 {
        assert!(has(&format!(
            "{AOT}/inductor_cache/fxgraph/a{i}/entry/data"
        )));
    }
    for name in [
        "vllm_compile_cache.py",
        "cache_key_factors.json",
        "computation_graph.py",
    ] {
        assert!(has(&format!("{PW}/backbone/{name}")), "{name}");
    }
    assert!(has("triton/KEY0/k.cubin") && has("triton/KEY4/__grp__k.json"));
    assert!(has("tmp/torchinductor_vllm/precompiled_headers/h.gch"));
    assert!(
        paths
            .iter()
            .all(|p| !p.contains("tmp.pid_") && !p.ends_with(".tmp"))
    );
    assert!(
        paths
            .iter()
            .all(|p| !p.contains("eagle_head") && !p.starts_with("tmp/pip"))
    );
    let model = m
        .files
        .iter()
        .find(|f| f.path.ends_with("rank_0_0/model"))
        .unwrap();
    assert_eq!(model.size, 6 * 4096);
    let reason = |p: &str| {
        out.excluded
            .iter()
            .find(|e| e.path.ends_with(p))
            .map(|e| e.reason)
    };
    assert_eq!(
        reason("eagle_head/vllm_compile_cache.py"),
        Some(ExcludedReason::BadPython)
    );
    assert_eq!(
        reason("eagle_head/cache_key_factors.json"),
        Some(ExcludedReason::BadJson)
    );
    assert_eq!(
        reason("rank_1_0/model.999.tmp"),
        Some(ExcludedReason::Temporary)
    );
    assert_eq!(reason("_5/k.cubin"), Some(ExcludedReason::Temporary));
    assert_eq!(reason("locks/c5j.lock"), Some(ExcludedReason::Lock));
    assert_eq!(out.scratch, 2, "tmp/pip-build-x and its file");

    // Nothing new: no new generation. New writes: generation 2, generation 1 untouched.
    let gen1 = std::fs::read(root.scope_state_dir(&s.name).join("manifests/1.json")).unwrap();
    assert!(!seal::seal(&root, &s, now()).unwrap().new);
    put(
        &tree.join(AOT).join("inductor_cache/fxgraph/late/data"),
        b"autotune, later",
    );
    let out2 = seal::seal(&root, &s, now()).unwrap();
    assert_eq!(
        (out2.generation, out2.new, out2.files),
        (2, true, m.files.len() + 1)
    );
    let gen1_after = std::fs::read(root.scope_state_dir(&s.name).join("manifests/1.json")).unwrap();
    assert_eq!(gen1, gen1_after);
    assert_eq!(seal::generations(&root, &s.name).unwrap(), [1, 2]);
}

#[test]
fn a_file_written_while_it_is_hashed_is_left_out() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    let big = tree.join("inductor/growing.bin");
    put(&big, vec![1u8; 16 << 20]);
    put(&tree.join("inductor/stable.bin"), b"stable");
    let stop = Arc::new(AtomicUsize::new(0));
    let (b, st) = (big.clone(), stop.clone());
    let appender = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&b).unwrap();
        while st.load(Ordering::SeqCst) == 0 {
            f.write_all(b"x").unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    let out = seal::seal(&root, &s, now()).unwrap();
    stop.store(1, Ordering::SeqCst);
    appender.join().unwrap();
    let m = seal::latest_manifest(&root, &s.name).unwrap().unwrap();
    assert_eq!(
        m.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["inductor/stable.bin"]
    );
    let growing = out
        .excluded
        .iter()
        .find(|e| e.path == "inductor/growing.bin")
        .unwrap();
    assert_eq!(growing.reason, ExcludedReason::Changed, "{growing:?}");
}

#[test]
fn the_quiet_rule_needs_unchanged_stats_for_the_period_and_old_mtimes() {
    let s = |files, newest| TreeStats {
        files,
        bytes: files * 10,
        newest_mtime_ns: newest,
    };
    let p = Duration::from_secs(30);
    let sec = 1_000_000_000i64;
    let first = Observed::next(None, s(1, 0), 100 * sec);
    assert!(!quiet(None, &first, p), "never on the first scan");
    let later = Observed::next(Some(&first), s(1, 0), 120 * sec);
    assert_eq!(later.since, 100 * sec);
    assert!(!quiet(Some(&first), &later, p), "unchanged for 20 s only");
    let quiet_now = Observed::next(Some(&later), s(1, 0), 131 * sec);
    assert!(quiet(Some(&later), &quiet_now, p));
    let changed = Observed::next(Some(&quiet_now), s(2, 130 * sec), 132 * sec);
    assert_eq!(changed.since, 132 * sec);
    assert!(!quiet(Some(&quiet_now), &changed, p));
    // Unchanged for the period, but the newest file is younger than the period.
    let a = Observed::next(None, s(3, 199 * sec), 200 * sec);
    let b = Observed::next(Some(&a), s(3, 199 * sec), 229 * sec + sec / 2);
    assert!(!quiet(Some(&a), &b, p));
}
