//! `coldctl warm --here` against a Hub that misbehaves one way at a time: a revision API that
//! answers another commit, revisions that must be refused before any request, a pull-request
//! ref, a server that goes silent, one that drips, a tree listing past the caps, and the peak
//! memory of a 200 k-file listing.

use super::*;

fn small_model() -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    model_dir(src.path(), 1, 41);
    src
}

#[test]
#[ignore = "needs scripts/test-env.sh (huggingface_hub oracle) and built binaries"]
fn revisions_are_refused_early_and_a_pinned_commit_is_honoured() {
    let src = small_model();
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    let a = hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    let other = hub.add_repo_files(REPO, "other", vec![("config.json".into(), b"{}".to_vec())]);
    let c = cache();

    for bad in ["../../x", "main.lock", "a b", "x/.coldstart-write-1"] {
        let run = warm(&c.root, &hub.url(), &["--revision", bad], &[]);
        assert_eq!(run.code, 1, "{bad}: {run:?}");
        let doc = run.json();
        assert_eq!(doc["kind"], "invalid_revision", "{bad}: {doc}");
        assert!(doc["error"].as_str().unwrap().contains("revision"), "{doc}");
    }
    assert_eq!(hub.counters(), Default::default(), "a request was made");

    // The revision API answers another commit than the one pinned: refused, nothing published.
    hub.answer_revision_with(Some(&other.id));
    let run = warm(&c.root, &hub.url(), &["--revision", &a.id], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["kind"], "commit_mismatch", "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains(&a.id) && error.contains(&other.id), "{doc}");
    let snapshots = c.root.join("models--org--model/snapshots");
    assert!(!snapshots.exists() || std::fs::read_dir(&snapshots).unwrap().next().is_none());

    // Honest again: the pinned commit is published, no ref written.
    hub.answer_revision_with(None);
    let run = warm(&c.root, &hub.url(), &["--revision", &a.id], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!c.root.join("models--org--model/refs/main").exists());
    oracle_ok(&c.root, &a.id, &allow(&run.json()), src.path());

    // A pull-request ref: URL-encoded in the request, nested under refs/ as huggingface_hub
    // stores it, and read back by it offline.
    hub.set_ref(REPO, "refs/pr/1", &a.id).unwrap();
    let run = warm(&c.root, &hub.url(), &["--revision", "refs/pr/1"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        std::fs::read_to_string(c.root.join("models--org--model/refs/refs/pr/1")).unwrap(),
        a.id
    );
    oracle_ok(&c.root, "refs/pr/1", &allow(&run.json()), src.path());
}

/// The selected file names of [`small_model`], one of which a transfer error must name.
fn names_a_selected_file(error: &str) -> bool {
    SELECTED
        .iter()
        .any(|p| error.starts_with(&format!("{p}: ")))
}

#[test]
#[ignore = "needs built binaries"]
fn a_silent_server_fails_naming_the_file_and_the_timeout() {
    let src = small_model();
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    hub.drip(Some((1, Duration::from_secs(5))));
    let c = cache();
    let run = warm(&c.root, &hub.url(), &["--hub-read-timeout", "2"], &[]);
    hub.clear_faults();
    assert_eq!(run.code, 1, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["kind"], "read_timeout", "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        names_a_selected_file(error) && error.ends_with("the server sent nothing for 2 s"),
        "{doc}"
    );
    assert!(
        !c.root.join("models--org--model/snapshots").exists() || {
            std::fs::read_dir(c.root.join("models--org--model/snapshots"))
                .unwrap()
                .next()
                .is_none()
        }
    );
}

#[test]
#[ignore = "needs built binaries"]
fn a_drip_under_the_minimum_rate_is_cut_off_and_retried_then_fails() {
    let src = small_model();
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    // 100 bytes every 200 ms: never silent for the read timeout, 500 B/s.
    hub.drip(Some((100, Duration::from_millis(200))));
    let c = cache();
    let flags = [
        "--hub-read-timeout",
        "5",
        "--hub-min-rate-kib",
        "64",
        "--hub-min-rate-window",
        "1",
    ];
    let run = warm(&c.root, &hub.url(), &flags, &[]);
    let connections = hub.counters().connections_total;
    hub.clear_faults();
    assert_eq!(run.code, 1, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["kind"], "too_slow", "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        names_a_selected_file(error)
            && error.contains("the server sent ")
            && error.ends_with("under the minimum of 65536 bytes per 1 s"),
        "{doc}"
    );
    // Every attempt went out on a fresh connection (8 attempts per range).
    assert!(connections >= 8, "{connections} connections");

    // A server above the floor completes, however it paces its bytes.
    let c = cache();
    hub.drip(Some((64 << 10, Duration::from_millis(10))));
    let run = warm(&c.root, &hub.url(), &flags, &[]);
    hub.clear_faults();
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
#[ignore = "needs built binaries"]
fn a_listing_past_the_entry_cap_fails_clearly() {
    let src = small_model();
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    hub.pad_tree(1_000_000);
    let c = cache();
    let run = warm(&c.root, &hub.url(), &[], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["kind"], "tree_too_large", "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .ends_with("is larger than the cap of 1000000 entries"),
        "{doc}"
    );
}

/// Peak RSS (KiB) of `coldctl ARGS` under `/usr/bin/time -v`, and the run.
fn peak_rss_kib(args: &[String]) -> (u64, common::Run) {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v")
        .arg(common::coldctl_bin())
        .args(args)
        .env("COLDSTART_LOG", "warn");
    let out = support::run_bounded(&mut cmd, LONG).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let kib = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in: {stderr}"));
    let run = common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    };
    (kib, run)
}

#[test]
#[ignore = "needs scripts/test-env.sh (huggingface_hub oracle), /usr/bin/time and built binaries"]
fn a_200k_file_listing_stays_under_256_mib() {
    let src = small_model();
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    hub.add_repo_from_dir(REPO, src.path(), "main").unwrap();
    hub.pad_tree(200_000);
    let c = cache();
    let (kib, run) = peak_rss_kib(&warm_args(&c.root, &hub.url(), &[]));
    assert_eq!(run.code, 0, "{run:?}");
    eprintln!(
        "coldctl warm --here, 200 012-file listing: peak RSS {} MiB",
        kib / 1024
    );
    assert!(kib < 256 * 1024, "peak RSS {kib} KiB");
    oracle_ok(&c.root, "main", &allow(&run.json()), src.path());
    let trees: serde_json::Value = serde_json::from_slice(
        &std::fs::read(c.root.join("models--org--model/trees").join(format!(
            "{}.json",
            run.json()["model"]["commit"].as_str().unwrap()
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(trees["files"].as_object().unwrap().len(), 200_000 + 12);
}
