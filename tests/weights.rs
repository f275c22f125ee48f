//! System tests of `coldctl warm MODEL --here` and `coldctl verify`: the real binary against the
//! in-repo fake Hub (fault knobs, a CDN on another loopback address), against `olah` (an
//! independent Hub implementation), with the real `huggingface_hub` 2.4 as the oracle for the
//! cache layout; SIGKILL at varied points; a full disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

#[path = "weights/crash.rs"]
mod crash;
#[path = "weights/hostile.rs"]
mod hostile;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coldstart_fakehub::{Endpoint, FakeHub, Options};
use sha2::{Digest, Sha256};
use support::hub_py::{Olah, check_snapshot};

const MIB: usize = 1 << 20;
const LONG: Duration = Duration::from_secs(300);
const REPO: &str = "org/model";

/// Deterministic, incompressible-enough bytes.
fn bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A model directory shaped like a real one: sharded safetensors with an index, files vLLM
/// does not load, nested paths.
fn model_dir(dir: &Path, shard_mib: usize, seed: u64) {
    let w = |p: &str, data: &[u8]| {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    w("config.json", br#"{"model_type":"llama","hidden_size":64}"#);
    w("generation_config.json", br#"{"do_sample":true}"#);
    w("tokenizer.json", &bytes(300_000, seed + 1));
    w(
        "tokenizer_config.json",
        br#"{"chat_template":"{{ messages }}"}"#,
    );
    w("sub/dir/extra.json", br#"{"nested":true}"#);
    w(
        "model.safetensors.index.json",
        br#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#,
    );
    w(
        "model-00001-of-00002.safetensors",
        &bytes(shard_mib * MIB, seed + 2),
    );
    w(
        "model-00002-of-00002.safetensors",
        &bytes(shard_mib * MIB / 2 + 17, seed + 3),
    );
    w("consolidated.safetensors", &bytes(MIB, seed + 4));
    w("pytorch_model.bin", &bytes(MIB, seed + 5));
    w("original/params.json", b"{}");
    w("README.md", b"# model\n");
}

/// Files the default selection must pick from [`model_dir`].
const SELECTED: &[&str] = &[
    "config.json",
    "generation_config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "sub/dir/extra.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

struct Cache {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn cache() -> Cache {
    let dir = tempfile::Builder::new()
        .prefix("coldstart-cache-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("hub");
    Cache { _dir: dir, root }
}

/// Runs `coldctl ARGS` with `env`, bounded.
fn coldctl(args: &[&str], env: &[(&str, &str)]) -> common::Run {
    let mut cmd = Command::new(common::coldctl_bin());
    cmd.args(args)
        .env("COLDSTART_LOG", "warn")
        .env_remove("HF_TOKEN")
        .env_remove("HF_ENDPOINT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = support::run_bounded(&mut cmd, LONG).unwrap();
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn warm_args(cache: &Path, endpoint: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["warm", REPO, "--here", "--cache-dir"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(cache.display().to_string());
    a.extend(["--endpoint".to_string(), endpoint.to_string()]);
    if !extra.contains(&"--cache-margin-mib") {
        a.extend(["--cache-margin-mib".to_string(), "1".to_string()]);
    }
    a.extend(
        ["--chunk-mib", "1", "-o", "json"]
            .iter()
            .map(|s| s.to_string()),
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn warm(cache: &Path, endpoint: &str, extra: &[&str], env: &[(&str, &str)]) -> common::Run {
    let args = warm_args(cache, endpoint, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    coldctl(&args, env)
}

fn verify(cache: &Path, revision: &str, full: bool) -> common::Run {
    let root = cache.display().to_string();
    let mut args = vec![
        "verify",
        REPO,
        "--here",
        "--cache-dir",
        &root,
        "--revision",
        revision,
        "-o",
        "json",
    ];
    if full {
        args.push("--full");
    }
    coldctl(&args, &[])
}

fn allow(doc: &serde_json::Value) -> Vec<String> {
    doc["model"]["allowPatterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn oracle_ok(cache: &Path, revision: &str, allow: &[String], source: &Path) {
    let doc = check_snapshot(cache, REPO, revision, allow, source, "config.json", false);
    assert_eq!(doc["ok"], true, "huggingface_hub oracle: {doc}");
}

#[test]
#[ignore = "needs scripts/test-env.sh (huggingface_hub oracle) and built binaries"]
fn sync_matches_the_oracle_then_verify_detects_and_warm_repairs() {
    let src = tempfile::tempdir().unwrap();
    model_dir(src.path(), 3, 1);
    let hub = FakeHub::start_blocking(Options {
        redirect_lfs_to: Some("127.0.0.2:0".parse().unwrap()),
        token: Some("hf_secret_token".to_string()),
        tree_page_size: 3,
        ..Options::default()
    })
    .unwrap();
    let commit = hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    let c = cache();
    let env = [("HF_TOKEN", "hf_secret_token")];

    // Without the token: a clear refusal, nothing published.
    let run = warm(&c.root, &hub.url(), &[], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["kind"], "unauthorized", "{run:?}");

    let run = warm(&c.root, &hub.url(), &[], &env);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("hf_secret_token") && !run.stdout.contains("hf_secret_token"));
    let doc = run.json();
    assert_eq!(doc["model"]["commit"], commit.id.as_str());
    assert_eq!(doc["model"]["files"], SELECTED.len());
    let mut patterns = allow(&doc);
    patterns.sort();
    assert_eq!(
        patterns,
        SELECTED.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    assert!(!hub.cdn_saw_auth(), "the token went to the CDN host");
    oracle_ok(&c.root, "main", &patterns, src.path());
    oracle_ok(&c.root, &commit.id, &patterns, src.path());

    // Blobs 0444, directories 0755; refs without a trailing newline.
    use std::os::unix::fs::PermissionsExt;
    let repo_dir = c.root.join("models--org--model");
    for blob in std::fs::read_dir(repo_dir.join("blobs")).unwrap() {
        let mode = blob.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444);
    }
    let snapshot = repo_dir.join("snapshots").join(&commit.id);
    assert_eq!(
        std::fs::metadata(snapshot.join("sub/dir"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        commit.id
    );

    // A second warm downloads nothing and resolves no file.
    hub.reset_counters();
    let run = warm(&c.root, &hub.url(), &[], &env);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["model"]["downloadedFiles"], 0);
    assert_eq!(
        hub.requests(Endpoint::ResolveHead) + hub.requests(Endpoint::ResolveGet),
        0
    );

    // A selected file deleted under us: both our verify and the oracle say incomplete.
    let victim = std::fs::canonicalize(snapshot.join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::remove_file(&victim).unwrap();
    for full in [false, true] {
        let run = verify(&c.root, "main", full);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.stdout.contains("model-00002-of-00002.safetensors"),
            "{run:?}"
        );
    }
    let doc = check_snapshot(
        &c.root,
        REPO,
        "main",
        &patterns,
        src.path(),
        "config.json",
        true,
    );
    assert_eq!(
        doc["ok"], true,
        "oracle reports the snapshot incomplete: {doc}"
    );

    // A modified blob is found by the full check.
    let other = std::fs::canonicalize(snapshot.join("tokenizer.json")).unwrap();
    let mut perms = std::fs::metadata(&other).unwrap().permissions();
    perms.set_mode(0o644);
    std::fs::set_permissions(&other, perms).unwrap();
    let mut data = std::fs::read(&other).unwrap();
    data[100] ^= 0xff;
    std::fs::write(&other, &data).unwrap();
    let run = verify(&c.root, "main", true);
    assert_eq!(run.code, 1, "{run:?}");

    // warm repairs both.
    let run = warm(&c.root, &hub.url(), &[], &env);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["model"]["downloadedFiles"], 2, "{run:?}");
    let run = verify(&c.root, "main", true);
    assert_eq!(run.code, 0, "{run:?}");
    oracle_ok(&c.root, "main", &patterns, src.path());
}

#[test]
#[ignore = "needs scripts/test-env.sh (huggingface_hub oracle) and built binaries"]
fn faults_on_the_wire_are_survived_and_never_published_wrong() {
    let src = tempfile::tempdir().unwrap();
    model_dir(src.path(), 4, 2);
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    type Knob = fn(&FakeHub);
    let cases: &[(&str, Knob)] = &[
        ("truncated bodies", |h| h.truncate_every(4, 50_000)),
        ("wrong bytes", |h| h.corrupt_next()),
        ("429 with Retry-After", |h| h.status_next(429, Some(1), 3)),
        ("500s", |h| h.status_next(500, None, 3)),
        ("Range ignored", |h| h.set_ignore_range(true)),
        ("a stalled body", |h| h.stall_next()),
        ("100 MB/s per connection", |h| {
            h.set_rate_limit_per_connection(Some(100_000_000))
        }),
    ];
    for (name, knob) in cases {
        hub.clear_faults();
        hub.release_stalls();
        knob(&hub);
        let c = cache();
        let run = warm(&c.root, &hub.url(), &["--hub-read-timeout", "2"], &[]);
        assert_eq!(run.code, 0, "{name}: {run:?}");
        let doc = run.json();
        let run = verify(&c.root, "main", true);
        assert_eq!(run.code, 0, "{name}: {run:?}");
        oracle_ok(&c.root, "main", &allow(&doc), src.path());
    }
    hub.release_stalls();
}

#[test]
#[ignore = "needs built binaries"]
fn bad_input_fails_clearly_and_writes_nothing_outside_the_cache() {
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    hub.add_repo_files(
        REPO,
        "main",
        vec![
            ("config.json".to_string(), b"{}".to_vec()),
            ("../../escape.json".to_string(), b"{}".to_vec()),
        ],
    );
    let c = cache();
    let run = warm(&c.root, &hub.url(), &[], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["kind"], "hostile_name");
    assert!(
        run.json()["error"]
            .as_str()
            .unwrap()
            .contains("refusing file name")
    );
    let parent = c.root.parent().unwrap();
    let names: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "hub" || n.starts_with(".hub")),
        "{names:?}"
    );
    assert!(!parent.join("escape.json").exists());
    let snapshots = c.root.join("models--org--model/snapshots");
    assert!(!snapshots.exists() || std::fs::read_dir(&snapshots).unwrap().next().is_none());

    for bad in ["org/../x", "a/b/c", "org/na me", ""] {
        let root = c.root.display().to_string();
        let run = coldctl(
            &[
                "warm",
                bad,
                "--here",
                "--cache-dir",
                &root,
                "--endpoint",
                &hub.url(),
            ],
            &[],
        );
        assert_eq!(run.code, 1, "{bad}: {run:?}");
        assert!(run.error_line().contains("invalid model id"), "{run:?}");
    }
    // Unknown repo and revision.
    let run = warm(&c.root, &hub.url(), &["--revision", "nope"], &[]);
    assert_eq!(run.json()["kind"], "not_found", "{run:?}");
    let other = coldctl(
        &[
            "warm",
            "org/missing",
            "--here",
            "--cache-dir",
            &c.root.display().to_string(),
            "--endpoint",
            &hub.url(),
        ],
        &[],
    );
    assert_eq!(other.code, 1);
    assert!(other.error_line().contains("not found"), "{other:?}");
}

#[test]
#[ignore = "needs scripts/test-env.sh (olah, huggingface_hub oracle) and built binaries"]
fn sync_from_olah_an_independent_hub() {
    let src = tempfile::tempdir().unwrap();
    model_dir(src.path(), 2, 3);
    let olah = Olah::start(&[(REPO, src.path())]).unwrap();
    let c = cache();
    let run = warm(&c.root, &olah.url(), &[], &[]);
    assert_eq!(run.code, 0, "{run:?}\nolah: {}", olah.log_tail());
    let doc = run.json();
    assert_eq!(doc["model"]["commit"], olah.commit(REPO).as_str());
    assert_eq!(doc["model"]["files"], SELECTED.len());
    oracle_ok(&c.root, "main", &allow(&doc), src.path());
    let run = verify(&c.root, "main", true);
    assert_eq!(run.code, 0, "{run:?}");
}

/// Every snapshot entry that exists resolves to a blob whose bytes are exactly the source
/// file's: nothing partial or wrong is ever visible.
fn assert_no_partial_file_visible(root: &Path, src: &Path) {
    let snaps = root.join("models--org--model/snapshots");
    let Ok(dirs) = std::fs::read_dir(&snaps) else {
        return;
    };
    for dir in dirs {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name.len() != 40 {
            continue; // a snapshot being built under a temporary name
        }
        for rel in SELECTED {
            let entry = dir.join(rel);
            if std::fs::symlink_metadata(&entry).is_err() {
                panic!("published snapshot {name} misses {rel}");
            }
            let got = Sha256::digest(std::fs::read(&entry).unwrap());
            let want = Sha256::digest(std::fs::read(src.join(rel)).unwrap());
            assert_eq!(got, want, "{rel} in {name} differs from the source");
        }
    }
    if let Ok(commit) = std::fs::read_to_string(root.join("models--org--model/refs/main")) {
        assert!(!commit.ends_with('\n'));
        assert!(
            snaps.join(&commit).is_dir(),
            "refs/main names a snapshot that is not there"
        );
    }
}

#[test]
#[ignore = "needs scripts/test-env.sh (huggingface_hub oracle) and built binaries"]
fn sigkill_at_varied_points_never_exposes_a_partial_file_and_resumes() {
    let src = tempfile::tempdir().unwrap();
    model_dir(src.path(), 12, 4);
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    hub.set_rate_limit_per_connection(Some(2 * MIB as u64));
    let c = cache();
    let args = warm_args(&c.root, &hub.url(), &["--connections", "4"]);
    let mut killed = 0;
    for i in 0..8u64 {
        let mut child = Command::new(common::coldctl_bin())
            .args(&args)
            .env("COLDSTART_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(300 + 250 * i + (i * 37) % 100);
        let started = Instant::now();
        while started.elapsed() < wait {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        assert_no_partial_file_visible(&c.root, src.path());
    }
    assert!(killed >= 4, "the loop killed mid-sync only {killed} times");
    hub.set_rate_limit_per_connection(None);
    let run = warm(&c.root, &hub.url(), &[], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_no_partial_file_visible(&c.root, src.path());
    let served = hub.bytes_served();
    let total: u64 = SELECTED
        .iter()
        .map(|p| std::fs::metadata(src.path().join(p)).unwrap().len())
        .sum();
    eprintln!("served {served} bytes for {total} selected across {killed} kills");
    assert!(
        served < 2 * total,
        "resumes re-fetched too much: {served} for {total}"
    );
    let run = verify(&c.root, "main", true);
    assert_eq!(run.code, 0, "{run:?}");
    oracle_ok(
        &c.root,
        "main",
        &allow(&run_json_allow(&c.root, &hub)),
        src.path(),
    );
}

/// The allow patterns of a (no-op) warm.
fn run_json_allow(root: &Path, hub: &FakeHub) -> serde_json::Value {
    let run = warm(root, &hub.url(), &[], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()
}

#[test]
#[ignore = "needs root (tmpfs), scripts/test-env.sh (huggingface_hub oracle) and built binaries"]
fn a_full_disk_fails_clearly_and_keeps_the_previous_commit() {
    let tiny = support::TinyFs::mount(24).unwrap();
    let root = tiny.path().join("hub");
    let small = tempfile::tempdir().unwrap();
    model_dir(small.path(), 2, 5);
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    let first = hub.add_repo_from_dir(REPO, small.path(), "main").unwrap();
    let run = warm(&root, &hub.url(), &[], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let patterns = allow(&run.json());

    let big = tempfile::tempdir().unwrap();
    model_dir(big.path(), 24, 6);
    let second = hub.add_repo_from_dir(REPO, big.path(), "main").unwrap();
    assert_ne!(first.id, second.id);
    let run = warm(&root, &hub.url(), &[], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["kind"], "disk_full", "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("not enough disk space"),
        "{doc}"
    );

    // Past our check (no margin, and a file that fits alone): ENOSPC mid-write is clean too.
    let run = warm(
        &root,
        &hub.url(),
        &["--include", "model-0000*", "--cache-margin-mib", "0"],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");

    // The previous commit is untouched and still what main names.
    let refs = std::fs::read_to_string(root.join("models--org--model/refs/main")).unwrap();
    assert_eq!(refs, first.id);
    assert!(
        !root
            .join("models--org--model/snapshots")
            .join(&second.id)
            .exists()
    );
    oracle_ok(&root, &first.id, &patterns, small.path());
    let run = verify(&root, &first.id, true);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
#[ignore = "needs built binaries (scripts/test.sh builds them)"]
fn the_proxy_environment_is_honoured() {
    let src = tempfile::tempdir().unwrap();
    model_dir(src.path(), 1, 11);
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    // A forward proxy for plain HTTP: reqwest sends absolute-form requests to it, and the
    // relay hands them to the Hub, which serves them; the byte counts show who went through.
    let proxy = support::CountingProxy::start(hub.addr()).unwrap();
    let through = proxy.url();

    let cache = tempfile::tempdir().unwrap();
    let root = cache.path().join("hub");
    let run = warm(&root, &hub.url(), &[], &[("HTTP_PROXY", through.as_str())]);
    assert_eq!(run.code, 0, "{run:?}");
    let via_proxy = proxy.bytes_down();
    assert!(
        via_proxy > MIB as u64,
        "the download went through HTTP_PROXY: {via_proxy} bytes"
    );

    // NO_PROXY exempts the endpoint: a fresh cache, nothing through the proxy.
    let cache = tempfile::tempdir().unwrap();
    let root = cache.path().join("hub");
    let run = warm(
        &root,
        &hub.url(),
        &[],
        &[("HTTP_PROXY", through.as_str()), ("NO_PROXY", "127.0.0.1")],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(proxy.bytes_down(), via_proxy, "NO_PROXY bypassed the proxy");
}
