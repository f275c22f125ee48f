//! SIGKILL at each publish step (`coldctl --kill-at STEP`, a hidden crash-test flag that
//! raises SIGKILL right after the step), then `huggingface_hub.scan_cache_dir` must scan the
//! cache clean, and the next warm cleans every temporary; and the bytes a crash loop costs.

use super::*;
use support::hub_py::scan_cache;

const STEPS: [&str; 6] = [
    "started",
    "trees-written",
    "snapshot-built",
    "snapshot-published",
    "ref-staged",
    "ref-written",
];

/// Every name under `dir` (recursively) that starts with `.coldstart-`.
fn temps_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with(".coldstart-") {
            out.push(e.path().display().to_string());
        } else if e.file_type().unwrap().is_dir() {
            out.extend(temps_under(&e.path()));
        }
    }
    out
}

/// The scan has no warnings, every revision is a commit in `commits`, every ref names a
/// listed revision.
fn assert_scans_clean(root: &Path, commits: &[&str], step: &str) {
    let doc = scan_cache(root);
    assert_eq!(doc["warnings"], serde_json::json!([]), "{step}: {doc}");
    for repo in doc["repos"].as_array().unwrap() {
        let revisions: Vec<&str> = repo["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for r in &revisions {
            assert!(
                commits.contains(r),
                "{step}: unexpected revision {r}: {doc}"
            );
        }
        for (name, commit) in repo["refs"].as_object().unwrap() {
            assert_eq!(name, "main", "{step}: unexpected ref: {doc}");
            assert!(
                revisions.contains(&commit.as_str().unwrap()),
                "{step}: {doc}"
            );
        }
    }
}

#[test]
#[ignore = "needs scripts/test-env.sh (huggingface_hub oracle) and built binaries"]
fn sigkill_at_each_publish_step_leaves_a_cache_that_scans_clean() {
    let first = tempfile::tempdir().unwrap();
    model_dir(first.path(), 1, 21);
    let second = tempfile::tempdir().unwrap();
    model_dir(second.path(), 1, 22);
    for step in STEPS {
        let hub = FakeHub::start_blocking(Options::default()).unwrap();
        let a = hub.add_repo_from_dir(REPO, first.path(), "main").unwrap();
        let c = cache();
        let run = warm(&c.root, &hub.url(), &[], &[]);
        assert_eq!(run.code, 0, "{run:?}");
        // main moves on: the killed warm publishes a second commit beside the first.
        let b = hub.add_repo_from_dir(REPO, second.path(), "main").unwrap();
        let run = warm(&c.root, &hub.url(), &["--kill-at", step], &[]);
        assert_eq!(run.code, -1, "{step}: not killed: {run:?}");
        let repo_dir = c.root.join("models--org--model");
        for sub in ["snapshots", "refs", "trees"] {
            let found = temps_under(&repo_dir.join(sub));
            assert!(found.is_empty(), "{step}: {found:?}");
        }
        assert_scans_clean(&c.root, &[&a.id, &b.id], step);

        // The next warm cleans up and publishes the new commit.
        let run = warm(&c.root, &hub.url(), &[], &[]);
        assert_eq!(run.code, 0, "{step}: {run:?}");
        assert!(temps_under(&repo_dir).is_empty(), "{step}");
        assert_scans_clean(&c.root, &[&a.id, &b.id], step);
        assert_eq!(
            std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
            b.id
        );
        oracle_ok(&c.root, "main", &allow(&run.json()), second.path());
    }
}

#[test]
#[ignore = "needs built binaries"]
fn a_crash_loop_refetches_at_most_what_was_in_flight() {
    let src = tempfile::tempdir().unwrap();
    let big = bytes(40 * MIB, 31);
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    std::fs::write(src.path().join("model.safetensors"), &big).unwrap();
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    // 1 MiB/s per connection, 4 connections, 8 MiB ranges: each range takes 8 s, so every
    // kill (2.5 s after the start) lands with every range in flight, the first one (which
    // runs alone, to see whether the server honours Range) included.
    hub.set_rate_limit_per_connection(Some(MIB as u64));
    let c = cache();
    let (connections, chunk_mib) = (4u64, 8u64);
    let args: Vec<String> = [
        "warm",
        REPO,
        "--here",
        "--cache-dir",
        &c.root.display().to_string(),
        "--endpoint",
        &hub.url(),
        "--cache-margin-mib",
        "1",
        "--connections",
        &connections.to_string(),
        "--chunk-mib",
        &chunk_mib.to_string(),
        "-o",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let kills = 10u64;
    for _ in 0..kills {
        let mut child = Command::new(common::coldctl_bin())
            .args(&args)
            .env("COLDSTART_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
    hub.set_rate_limit_per_connection(None);
    let during = hub.bytes_served();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = coldctl(&args, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let total = big.len() as u64 + 2;
    let served = hub.bytes_served();
    let refetched = served.saturating_sub(total);
    eprintln!(
        "crash loop: {kills} kills, {during} bytes served during them, {} by the final warm, {served} in all for {total}: {} bytes re-fetched per crash ({:.2} MiB; bound {} MiB = one range per connection)",
        served - during,
        refetched / kills,
        refetched as f64 / kills as f64 / MIB as f64,
        connections * chunk_mib
    );
    assert!(
        refetched <= kills * connections * chunk_mib * MIB as u64,
        "{refetched} bytes re-fetched over {kills} crashes"
    );
}
