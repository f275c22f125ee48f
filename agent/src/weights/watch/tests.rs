use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;
use crate::weights::TreeEntry;
use crate::weights::cache::{ProblemKind, git_blob_sha1};

const C1: &str = "1111111111111111111111111111111111111111";
/// Every wait for the watcher is bounded by this.
const WAIT: Duration = Duration::from_secs(15);

struct Fixture {
    _dir: tempfile::TempDir,
    cache: Arc<HubCache>,
    repo: RepoId,
    tree: Vec<TreeEntry>,
    contents: Vec<Vec<u8>>,
}

fn plain(path: &str, content: &[u8]) -> TreeEntry {
    TreeEntry {
        path: path.to_string(),
        size: content.len() as u64,
        oid: git_blob_sha1(content),
        lfs: None,
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(HubCache::open(&dir.path().join("hub"), None).unwrap());
    let contents: Vec<Vec<u8>> = vec![
        b"{\"model_type\":\"llama\"}".to_vec(),
        vec![7u8; 100_000],
        b"nested".to_vec(),
    ];
    let tree = vec![
        plain("config.json", &contents[0]),
        plain("model.safetensors", &contents[1]),
        plain("sub/dir/x.json", &contents[2]),
    ];
    let f = Fixture {
        _dir: dir,
        cache,
        repo: RepoId::parse("org/name").unwrap(),
        tree,
        contents,
    };
    publish(&f);
    f
}

/// Stores every blob (as the transfer engine does) and publishes `main` = C1.
fn publish(f: &Fixture) {
    for (e, c) in f.tree.iter().zip(&f.contents) {
        if f.cache.blob_is_current(&f.repo, e).unwrap() {
            continue;
        }
        let mut file = f.cache.open_incomplete(&f.repo, e.etag()).unwrap();
        file.write_all(c).unwrap();
        drop(file);
        f.cache.finalize_blob(&f.repo, e.etag()).unwrap();
    }
    f.cache
        .publish(&f.repo, "main", C1, &f.tree, &f.tree)
        .unwrap();
}

fn start(f: &Fixture) -> (CacheWatcher, mpsc::Receiver<Result<Reverified, Error>>) {
    let (tx, rx) = mpsc::channel(16);
    let opts = WatchOptions {
        quiet: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
    };
    let target = Target {
        repo: f.repo.clone(),
        commit: C1.to_string(),
    };
    let w = watch(f.cache.clone(), vec![target], opts, tx).unwrap();
    (w, rx)
}

fn snapshot(f: &Fixture) -> PathBuf {
    f.cache.repo_dir(&f.repo).join("snapshots").join(C1)
}

/// Receives reports until one satisfies `done`, within [`WAIT`]; returns all received.
async fn until(
    rx: &mut mpsc::Receiver<Result<Reverified, Error>>,
    done: impl Fn(&Reverified) -> bool,
) -> Vec<Reverified> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let r = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching report within {WAIT:?}; got {seen:#?}"))
            .expect("watcher alive")
            .expect("re-verification ran");
        let hit = done(&r);
        seen.push(r);
        if hit {
            return seen;
        }
    }
}

fn has(r: &Reverified, path: &str, kind: ProblemKind) -> bool {
    r.report
        .problems
        .iter()
        .any(|p| p.path == path && p.kind == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_snapshot_file_is_reported_missing() {
    let f = fixture();
    let (_w, mut rx) = start(&f);
    std::fs::remove_file(snapshot(&f).join("sub/dir/x.json")).unwrap();
    let seen = until(&mut rx, |r| has(r, "sub/dir/x.json", ProblemKind::Missing)).await;
    let last = seen.last().unwrap();
    assert_eq!(last.changed, ["sub/dir/x.json"], "{last:?}");
    assert_eq!(last.report.problems.len(), 1, "{last:?}");
    assert_eq!(last.report.hashed, 0, "a deletion needs no hash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_rewritten_in_place_is_reported_corrupt() {
    let f = fixture();
    let (_w, mut rx) = start(&f);
    let blob = f.cache.blob_path(&f.repo, f.tree[1].etag());
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[500] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let seen = until(&mut rx, |r| {
        has(r, "model.safetensors", ProblemKind::HashMismatch)
    })
    .await;
    let last = seen.last().unwrap();
    assert_eq!(last.changed, ["model.safetensors"], "{last:?}");
    assert!(last.report.hashed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_publish_costs_no_hash_and_a_flood_is_coalesced() {
    let f = fixture();
    let (_w, mut rx) = start(&f);
    // Re-publishing swaps the snapshot directory: every file is re-checked, by fingerprint.
    publish(&f);
    let seen = until(&mut rx, |r| r.changed.is_empty()).await;
    let last = seen.last().unwrap();
    assert!(last.report.is_ok(), "{last:?}");
    assert_eq!(last.report.hashed, 0, "{last:?}");
    // Reads are not changes.
    for _ in 0..50 {
        std::fs::read(snapshot(&f).join("model.safetensors")).unwrap();
    }
    // A flood of metadata changes on one blob: a handful of batches, one hash each at most,
    // and the content is still right.
    let blob = f.cache.blob_path(&f.repo, f.tree[1].etag());
    for i in 0..2000u32 {
        let mode = if i % 2 == 0 { 0o644 } else { 0o444 };
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let seen = until(&mut rx, |r| r.changed == ["model.safetensors"]).await;
    // Let the last batch land, then count.
    let mut all = seen;
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        all.push(r.unwrap());
    }
    assert!(all.len() <= 10, "{} reports for one flood", all.len());
    assert!(all.iter().all(|r| r.report.is_ok()), "{all:#?}");
    assert!(all.iter().all(|r| r.report.hashed <= 1), "{all:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_follows_directories_removed_and_created_again() {
    let f = fixture();
    let (_w, mut rx) = start(&f);
    std::fs::remove_dir_all(f.cache.repo_dir(&f.repo)).unwrap();
    until(&mut rx, |r| {
        r.report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingSnapshot)
    })
    .await;
    publish(&f);
    until(&mut rx, |r| r.report.is_ok()).await;
    // The watches on the new directories work.
    std::fs::remove_file(snapshot(&f).join("config.json")).unwrap();
    until(&mut rx, |r| has(r, "config.json", ProblemKind::Missing)).await;
}

#[test]
fn paths_are_placed_in_the_layout() {
    let root = Path::new("/c");
    let place = |p: &str| classify(root, Path::new(p));
    let folder = "models--org--name".to_string();
    assert_eq!(place("/c"), Some(Place::Root));
    assert_eq!(
        place("/c/models--org--name/snapshots"),
        Some(Place::Repo {
            folder: folder.clone()
        })
    );
    assert_eq!(
        place(&format!("/c/models--org--name/snapshots/{C1}/sub/x.json")),
        Some(Place::Snapshot {
            folder: folder.clone(),
            commit: C1.to_string(),
            path: Some("sub/x.json".to_string())
        })
    );
    assert!(
        place(&format!("/c/models--org--name/snapshots/{C1}")).is_some_and(|p| p.is_structural())
    );
    assert_eq!(
        place("/c/models--org--name/blobs/abc"),
        Some(Place::Blob {
            folder,
            etag: "abc".to_string()
        })
    );
    assert_eq!(place("/c/models--org--name/refs/main"), None);
    assert_eq!(place("/elsewhere/x"), None);
    assert!(!paths::relevant(Path::new("/c/m/blobs/abc.incomplete")));
    assert!(!paths::relevant(Path::new(
        "/c/m/snapshots/.coldstart-snapshot-1-2/x.json"
    )));
    assert!(paths::relevant(Path::new("/c/m/blobs/abc")));
}

#[test]
fn scopes_widen() {
    let mut s = Scope::default();
    s.merge(Scope::paths(["a".to_string()]));
    s.merge(Scope::paths(["b".to_string()]));
    assert_eq!(s, Scope::paths(["a".to_string(), "b".to_string()]));
    s.merge(Scope::All);
    s.merge(Scope::paths(["c".to_string()]));
    assert_eq!(s, Scope::All);
}
