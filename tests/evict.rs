//! System tests of the cache budget (`coldctl warm --cache-budget`) and the watcher
//! (`coldctl verify --watch`): the real binary against the in-repo fake Hub, with the real
//! `huggingface_hub` 2.4 as the oracle for what is kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coldstart_fakehub::{FakeHub, Options};
use support::bytes;
use support::hub_py::check_snapshot;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const LONG: Duration = Duration::from_secs(300);

/// A model every file of which the default selection picks: a config, a tokenizer (seeded by
/// `tok_seed`, so two commits can share it) and 2 MiB of weights.
fn model_dir(dir: &Path, weights_seed: u64, tok_seed: u64) -> PathBuf {
    let w = |p: &str, data: &[u8]| std::fs::write(dir.join(p), data).unwrap();
    w("config.json", br#"{"model_type":"llama","hidden_size":64}"#);
    w("tokenizer.json", &bytes(300 * KIB, tok_seed));
    w("model.safetensors", &bytes(2 * MIB, weights_seed));
    dir.to_path_buf()
}

/// Bytes of every file in every `blobs/` directory of the cache.
fn cache_bytes(root: &Path) -> u64 {
    let mut total = 0;
    for repo in std::fs::read_dir(root).unwrap() {
        let blobs = repo.unwrap().path().join("blobs");
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            for e in entries {
                total += e.unwrap().metadata().unwrap().len();
            }
        }
    }
    total
}

fn coldctl(args: &[&str]) -> common::Run {
    let mut cmd = Command::new(common::coldctl_bin());
    cmd.args(args)
        .env("COLDSTART_LOG", "warn")
        .env_remove("HF_TOKEN")
        .env_remove("HF_ENDPOINT")
        .env_remove("COLDSTART_CACHE_BUDGET");
    let out = support::run_bounded(&mut cmd, LONG).unwrap();
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn warm(root: &Path, hub: &FakeHub, repo: &str, revision: &str, extra: &[&str]) -> common::Run {
    let root = root.display().to_string();
    let url = hub.url();
    let mut args = vec![
        "warm",
        repo,
        "--here",
        "--cache-dir",
        &root,
        "--endpoint",
        &url,
        "--revision",
        revision,
        "--cache-margin-mib",
        "1",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    coldctl(&args)
}

fn oracle_ok(root: &Path, repo: &str, revision: &str, source: &Path) {
    let doc = check_snapshot(root, repo, revision, &[], source, "config.json", false);
    assert_eq!(doc["ok"], true, "huggingface_hub oracle on {repo}: {doc}");
}

#[test]
#[ignore = "needs scripts/test-env.sh (huggingface_hub oracle) and built binaries"]
fn a_budget_evicts_the_least_recently_used_model_and_keeps_shared_blobs() {
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    let srcs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    // org/a: v1 and main share config and tokenizer, not weights.
    let a1 = hub
        .add_repo_from_dir("org/a", &model_dir(srcs[0].path(), 1, 10), "v1")
        .unwrap();
    let a2 = hub
        .add_repo_from_dir("org/a", &model_dir(srcs[1].path(), 2, 10), "main")
        .unwrap();
    hub.add_repo_from_dir("org/b", &model_dir(srcs[2].path(), 3, 11), "main")
        .unwrap();
    hub.add_repo_from_dir("org/c", &model_dir(srcs[3].path(), 4, 12), "main")
        .unwrap();
    hub.add_repo_from_dir("org/d", &model_dir(srcs[4].path(), 5, 13), "main")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("hub");

    // Least recently used first: org/a@v1, then org/a@main, then org/b.
    for (repo, rev) in [
        ("org/a", a1.id.as_str()),
        ("org/a", "main"),
        ("org/b", "main"),
    ] {
        let run = warm(&root, &hub, repo, rev, &[]);
        assert_eq!(run.code, 0, "{repo}@{rev}: {run:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let used = cache_bytes(&root) as usize;
    let shared_blob = std::fs::canonicalize(
        root.join("models--org--a/snapshots")
            .join(&a1.id)
            .join("tokenizer.json"),
    )
    .unwrap();

    // Garbage is refused as bad usage, before anything happens.
    let run = warm(&root, &hub, "org/c", "main", &["--cache-budget", "lots"]);
    assert_eq!(run.code, 64, "{run:?}");
    assert!(run.stderr.contains("invalid size"), "{run:?}");

    // Room for org/c once org/a@v1's own weights go, not before.
    let need = 2 * MIB + 300 * KIB + 64;
    let budget = (used + need - 2 * MIB + 100 * KIB).to_string();
    let run = warm(&root, &hub, "org/c", "main", &["--cache-budget", &budget]);
    assert_eq!(run.code, 0, "{run:?}");
    let evicted = &run.json()["model"]["evicted"];
    assert_eq!(
        evicted,
        &serde_json::json!([{"repo": "org/a", "commit": a1.id, "bytes": 2 * MIB}]),
        "{run:?}"
    );
    assert!(cache_bytes(&root) as usize <= used + need - 2 * MIB + 100 * KIB);
    assert!(!root.join("models--org--a/snapshots").join(&a1.id).exists());
    assert!(
        shared_blob.is_file(),
        "the blob shared with org/a@main went"
    );
    for (repo, src) in [
        ("org/a", &srcs[1]),
        ("org/b", &srcs[2]),
        ("org/c", &srcs[3]),
    ] {
        oracle_ok(&root, repo, "main", src.path());
    }
    oracle_ok(&root, "org/a", &a2.id, srcs[1].path());
    let root_s = root.display().to_string();
    let run = coldctl(&[
        "verify",
        "org/a",
        "--here",
        "--cache-dir",
        &root_s,
        "--full",
    ]);
    assert_eq!(run.code, 0, "{run:?}");

    // A budget nothing can meet: a clear error before any download, nothing evicted.
    let before = cache_bytes(&root);
    let run = warm(&root, &hub, "org/d", "main", &["--cache-budget", "1MiB"]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["kind"], "over_budget", "{doc}");
    let msg = doc["error"].as_str().unwrap();
    assert!(
        msg.contains("cache budget 1.0 MiB (1048576 bytes)"),
        "{msg}"
    );
    assert!(msg.contains("to download"), "{msg}");
    assert_eq!(cache_bytes(&root), before);
    assert!(!root.join("models--org--d/snapshots").exists());
}

/// `coldctl verify --watch` with its stdout read line by line on a thread.
struct Watching {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watching {
    fn start(root: &Path, extra: &[&str]) -> Watching {
        let mut child = Command::new(common::coldctl_bin())
            .args(["verify", "org/a", "--here", "--cache-dir"])
            .arg(root)
            .args(["--watch", "-o", "json"])
            .args(extra)
            .env("COLDSTART_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        Watching { child, lines }
    }

    /// The next document whose `ok` is `ok`, within 20 s.
    fn until(&self, ok: bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no line with ok={ok}: {e}"));
            let doc: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON document per line ({e}): {line}"));
            if doc["ok"] == ok {
                return doc;
            }
        }
    }

    /// The exit code, within `limit`.
    fn exit(mut self, limit: Duration) -> i32 {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("coldctl verify --watch still running after {limit:?}");
    }
}

#[test]
#[ignore = "needs built binaries"]
fn verify_watch_reports_changes_underneath_and_stops_on_time_or_sigterm() {
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    let src = tempfile::tempdir().unwrap();
    hub.add_repo_from_dir("org/a", &model_dir(src.path(), 1, 1), "main")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("hub");
    let run = warm(&root, &hub, "org/a", "main", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let commit = run.json()["model"]["commit"].as_str().unwrap().to_string();
    let snapshot = root.join("models--org--a/snapshots").join(&commit);

    let started = Instant::now();
    let w = Watching::start(&root, &["--watch-for", "6"]);
    let first = w.until(true);
    assert_eq!(first["changed"], serde_json::json!([]), "{first}");
    std::fs::remove_file(snapshot.join("config.json")).unwrap();
    let doc = w.until(false);
    assert_eq!(doc["changed"], serde_json::json!(["config.json"]), "{doc}");
    assert_eq!(doc["report"]["problems"][0]["kind"], "missing", "{doc}");
    // --watch-for ends it; the last verification failed.
    assert_eq!(w.exit(Duration::from_secs(20)), 1);
    assert!(started.elapsed() >= Duration::from_secs(6));

    // warm repairs; a watcher then sees a clean snapshot and stops cleanly on SIGTERM.
    let run = warm(&root, &hub, "org/a", "main", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let w = Watching::start(&root, &[]);
    w.until(true);
    let pid = nix::unistd::Pid::from_raw(w.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(w.exit(Duration::from_secs(10)), 0);
}
