//! Smoke tests of the Hub test tools themselves, before any of our code is judged by them:
//! `olah` (an independent Hub server over local git repos) and the `huggingface_hub` oracle
//! (`tests/oracle/check_snapshot.py`).
//!
//! The first test records what olah answers on every endpoint our weights client uses (printed
//! with `--nocapture`), asserting only what a client can rely on. The second proves the oracle
//! right: a cache written by the reference `hf download` passes, and the same cache missing a
//! selected file is reported incomplete by huggingface_hub's offline lookup.
//!
//! They need `scripts/test-env.sh`; CI runs them with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::RngCore as _;
use support::hub_py::{self, HttpReply, Olah, http};
use support::{require_tool, run_checked, write_file};

const REPO: &str = "coldstart-test/tiny-model";
const MODEL_BYTES: usize = 3 << 20;

/// A plain directory with the repo's files: two JSON files, a nested one and 3 MiB of weights.
fn make_repo() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("coldstart-olah-src-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    write_file(
        &d.join("config.json"),
        br#"{"model_type": "llama", "hidden_size": 64}"#,
    )
    .unwrap();
    write_file(
        &d.join("tokenizer.json"),
        br#"{"version": "1.0", "model": {}}"#,
    )
    .unwrap();
    write_file(&d.join("sub/dir/x.json"), br#"{"nested": true}"#).unwrap();
    let mut weights = vec![0u8; MODEL_BYTES];
    rand::rng().fill_bytes(&mut weights);
    write_file(&d.join("model.safetensors"), &weights).unwrap();
    dir
}

/// Every file under `dir`: repo path -> (size, git blob sha1 from `git hash-object`).
fn expected_files(dir: &Path) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    for rel in [
        "config.json",
        "tokenizer.json",
        "sub/dir/x.json",
        "model.safetensors",
    ] {
        let path = dir.join(rel);
        let size = std::fs::metadata(&path).unwrap().len();
        let mut cmd = Command::new(require_tool("git"));
        cmd.arg("hash-object").arg(&path);
        let oid = run_checked(&mut cmd, Duration::from_secs(30))
            .unwrap()
            .stdout;
        out.insert(
            rel.to_string(),
            (size, String::from_utf8(oid).unwrap().trim().to_string()),
        );
    }
    out
}

fn show(what: &str, r: &HttpReply) {
    let body = String::from_utf8_lossy(&r.body);
    let body: String = body.chars().take(300).collect();
    println!(
        "olah: {what} -> {} {:?} body[..300]={body:?}",
        r.status, r.headers
    );
}

fn get(url: &str) -> HttpReply {
    http("GET", url, &[]).unwrap()
}

#[test]
#[ignore = "needs scripts/test-env.sh (olah, huggingface_hub)"]
fn olah_endpoints_answer_what_our_client_needs() {
    let src = make_repo();
    let olah = Olah::start(&[(REPO, src.path())]).unwrap();
    let (base, commit) = (olah.url(), olah.commit(REPO));
    let files = expected_files(src.path());

    // Revision: the commit, by branch and by sha.
    for rev in ["main", commit.as_str()] {
        let r = get(&format!("{base}/api/models/{REPO}/revision/{rev}"));
        show(&format!("GET revision/{rev}"), &r);
        assert_eq!(r.status, 200);
        assert_eq!(r.json().unwrap()["sha"], commit.as_str());
    }

    check_tree(&base, &commit, &files);
    check_resolve_head(&base, &commit, &files);
    check_range(&base, &commit, src.path());
    check_missing(&base, &commit);
}

/// The recursive tree listing, following olah's redirect to the trailing-slash path.
fn check_tree(base: &str, commit: &str, files: &BTreeMap<String, (u64, String)>) {
    let url = format!("{base}/api/models/{REPO}/tree/{commit}?recursive=true");
    let mut r = get(&url);
    show("GET tree/COMMIT?recursive=true", &r);
    if (300..400).contains(&r.status) {
        let location = r
            .header("location")
            .expect("redirect without Location")
            .to_string();
        println!("olah: tree listing redirects to {location}");
        assert!(
            location.starts_with(base),
            "redirect leaves olah: {location}"
        );
        r = get(&location);
        show("GET tree (redirected)", &r);
    }
    assert_eq!(r.status, 200);
    println!("olah: tree Link header: {:?}", r.header("link"));
    let listing = r.json().unwrap();
    let entries = listing.as_array().expect("tree listing is an array");
    let mut listed = BTreeMap::new();
    for e in entries {
        let kind = e["type"].as_str().unwrap();
        if kind == "file" {
            let path = e["path"].as_str().unwrap().to_string();
            let size = e["size"].as_u64().unwrap();
            let oid = e["oid"].as_str().unwrap().to_string();
            assert!(
                e.get("lfs").is_none(),
                "plain git blob listed with lfs: {e}"
            );
            listed.insert(path, (size, oid));
        } else {
            println!("olah: tree also lists a {kind}: {e}");
        }
    }
    assert_eq!(&listed, files, "tree listing (path -> size, git oid)");
}

/// HEAD on resolve: which of the headers our client reads are present.
fn check_resolve_head(base: &str, commit: &str, files: &BTreeMap<String, (u64, String)>) {
    for (rev, path) in [
        (commit, "config.json"),
        (commit, "model.safetensors"),
        (commit, "sub/dir/x.json"),
        ("main", "config.json"),
    ] {
        let r = http("HEAD", &format!("{base}/{REPO}/resolve/{rev}/{path}"), &[]).unwrap();
        show(&format!("HEAD resolve/{rev}/{path}"), &r);
        for h in [
            "x-repo-commit",
            "etag",
            "x-linked-etag",
            "x-linked-size",
            "content-length",
            "location",
        ] {
            println!("olah:   {h}: {}", r.header(h).unwrap_or("<absent>"));
        }
        assert_eq!(r.status, 200);
        let (size, oid) = &files[path];
        assert_eq!(r.header("x-repo-commit"), Some(commit));
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
        let etag = r
            .header("etag")
            .unwrap()
            .trim_start_matches("W/")
            .trim_matches('"');
        assert_eq!(etag, oid, "ETag is the git blob sha1");
    }
}

/// A ranged GET: either honoured (206, the range) or ignored (200, the whole file).
fn check_range(base: &str, commit: &str, src: &Path) {
    let url = format!("{base}/{REPO}/resolve/{commit}/model.safetensors");
    let r = http("GET", &url, &[("Range", "bytes=10-19")]).unwrap();
    let whole = std::fs::read(src.join("model.safetensors")).unwrap();
    println!(
        "olah: GET resolve/COMMIT/model.safetensors Range: bytes=10-19 -> {} {:?}, {} body bytes",
        r.status,
        r.headers,
        r.body.len()
    );
    match r.status {
        206 => assert_eq!(r.body, whole[10..20], "range body"),
        200 => {
            println!("olah: Range ignored (200, whole file)");
            assert!(
                r.body == whole,
                "200 answer to a Range request is not the whole file"
            );
        }
        s => panic!("ranged GET answered {s}"),
    }
    let r = get(&format!("{base}/{REPO}/resolve/{commit}/config.json"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, std::fs::read(src.join("config.json")).unwrap());
}

/// What a missing file, repo or revision answers (never a success).
fn check_missing(base: &str, commit: &str) {
    let cases = [
        (
            "HEAD",
            format!("{base}/{REPO}/resolve/{commit}/missing.json"),
        ),
        (
            "GET",
            format!("{base}/{REPO}/resolve/{commit}/missing.json"),
        ),
        (
            "HEAD",
            format!("{base}/coldstart-test/no-such-repo/resolve/{commit}/config.json"),
        ),
        (
            "GET",
            format!("{base}/api/models/{REPO}/revision/no-such-branch"),
        ),
        (
            "GET",
            format!("{base}/api/models/coldstart-test/no-such-repo/revision/main"),
        ),
    ];
    for (method, url) in cases {
        let r = http(method, &url, &[]).unwrap();
        show(&format!("{method} {}", url.trim_start_matches(base)), &r);
        assert!(
            !(200..300).contains(&r.status),
            "{method} {url} answered {}",
            r.status
        );
    }
}

#[test]
#[ignore = "needs scripts/test-env.sh (olah, huggingface_hub)"]
fn oracle_accepts_reference_cache_and_flags_incomplete_snapshot() {
    let src = make_repo();
    let olah = Olah::start(&[(REPO, src.path())]).unwrap();
    let commit = olah.commit(REPO);
    let cache = tempfile::Builder::new()
        .prefix("coldstart-hfcache-")
        .tempdir()
        .unwrap();
    let out = hub_py::hf_download(&olah.url(), REPO, "main", cache.path());
    assert!(
        out.status.success(),
        "hf download failed ({}):\nstdout: {}\nstderr: {}\nolah log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        olah.log_tail()
    );
    let repo_dir = cache.path().join("models--coldstart-test--tiny-model");
    describe_reference_cache(&repo_dir, &commit, &expected_files(src.path()));

    let check = |rev: &str, allow: &[&str], incomplete: bool| {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let doc = hub_py::check_snapshot(
            cache.path(),
            REPO,
            rev,
            &allow,
            src.path(),
            "config.json",
            incomplete,
        );
        println!("oracle: rev={rev} allow={allow:?} expect_incomplete={incomplete} -> {doc}");
        doc
    };
    // The reference cache passes, by commit and by branch (refs/main), whole or filtered.
    let doc = check(&commit, &[], false);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["files"], 4);
    assert_eq!(check("main", &[], false)["ok"], true);
    let doc = check(&commit, &["*.json"], false);
    assert_eq!(
        (doc["ok"].as_bool(), doc["files"].as_u64()),
        (Some(true), Some(3)),
        "{doc}"
    );
    // Complete, so it is not reported incomplete.
    assert_eq!(check(&commit, &[], true)["ok"], false);

    // A selected file deleted from the snapshot: reported incomplete through trees/<commit>.json.
    let snapshot = repo_dir.join("snapshots").join(&commit);
    std::fs::remove_file(snapshot.join("sub/dir/x.json")).unwrap();
    let doc = check(&commit, &[], true);
    assert_eq!(doc["ok"], true, "{doc}");
    assert!(
        doc["exception"]
            .as_str()
            .unwrap()
            .starts_with("IncompleteSnapshotError")
    );
    assert_eq!(check(&commit, &[], false)["ok"], false);
    // ... but not when the patterns do not select it.
    assert_eq!(check(&commit, &["*.safetensors"], true)["ok"], false);
    assert_eq!(check(&commit, &["*.safetensors"], false)["ok"], true);

    // A blob deleted under its snapshot link: the dangling link counts as missing.
    let link = std::fs::read_link(snapshot.join("model.safetensors")).unwrap();
    std::fs::remove_file(snapshot.join(&link)).unwrap();
    assert_eq!(check(&commit, &["*.safetensors"], true)["ok"], true);
}

/// Prints (and checks) the reference layout `hf download` wrote: refs, trees file, links.
fn describe_reference_cache(
    repo_dir: &Path,
    commit: &str,
    files: &BTreeMap<String, (u64, String)>,
) {
    let refs_main = std::fs::read(repo_dir.join("refs/main")).unwrap();
    println!(
        "reference: refs/main = {:?}",
        String::from_utf8_lossy(&refs_main)
    );
    assert_eq!(
        refs_main,
        commit.as_bytes(),
        "refs/main holds the commit, no newline"
    );

    let trees = repo_dir.join("trees").join(format!("{commit}.json"));
    let text = std::fs::read_to_string(&trees).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&trees).unwrap().permissions());
    println!(
        "reference: trees/{commit}.json (mode {:o}):\n{text}",
        mode & 0o7777
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["format_version"], 1);
    let listed = doc["files"].as_object().unwrap();
    assert_eq!(listed.len(), files.len());
    for (path, (size, oid)) in files {
        assert_eq!(listed[path]["size"], *size, "{path}");
        assert_eq!(listed[path]["blob_id"], oid.as_str(), "{path}");

        let link = std::fs::read_link(repo_dir.join("snapshots").join(commit).join(path)).unwrap();
        let depth = path.split('/').count() + 1;
        let want = format!("{}blobs/{oid}", "../".repeat(depth));
        println!("reference: snapshots/COMMIT/{path} -> {}", link.display());
        assert_eq!(link.to_string_lossy(), want);
    }
}
