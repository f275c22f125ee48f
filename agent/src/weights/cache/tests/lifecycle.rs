//! Re-publishing, verification, eviction and inventory.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use super::*;

fn kinds(r: &VerifyReport) -> Vec<(String, ProblemKind)> {
    r.problems
        .iter()
        .map(|p| (p.path.clone(), p.kind))
        .collect()
}

/// Rewrites a blob in place (same size, other bytes), as a corrupting process would.
fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(path, &bytes).unwrap();
}

#[test]
fn republish_replaces_the_snapshot_and_keeps_older_commits() {
    let f = fixture();
    let old = publish_some(&f, "v1", C1, 1);
    let snap = publish_some(&f, "main", C2, 2);
    let again = publish_some(&f, "main", C2, 3);
    assert_eq!(snap, again);
    assert!(
        again.join("model.safetensors").is_file(),
        "the re-sync added a file"
    );
    assert_eq!(
        std::fs::read(old.join("config.json")).unwrap(),
        b"{\"a\":1}"
    );
    assert!(!old.join("sub").exists());
    let dir = f.cache.repo_dir(&f.repo);
    assert_eq!(std::fs::read(dir.join("refs/v1")).unwrap(), C1.as_bytes());
    assert_eq!(std::fs::read(dir.join("refs/main")).unwrap(), C2.as_bytes());
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [C1, C2], "no temporary directory left behind");
    for c in [C1, C2] {
        let r = f.cache.verify(&f.repo, c, VerifyMode::Full).unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}

#[test]
fn readers_never_miss_a_file_while_a_snapshot_is_replaced() {
    let f = fixture();
    let snap = publish_some(&f, "main", C1, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let (misses, reads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (stop, misses, reads, path) = (
            stop.clone(),
            misses.clone(),
            reads.clone(),
            snap.join("config.json"),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if std::fs::read(&path).is_err() {
                    misses.fetch_add(1, Ordering::Relaxed);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 0..30 {
        publish_some(&f, "main", C1, 2 + i % 2);
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(misses.load(Ordering::Relaxed), 0);
}

#[test]
fn verify_finds_deleted_files_changed_blobs_and_dangling_links() {
    let f = fixture();
    let snap = publish_some(&f, "main", C1, 3);
    let all = files();
    let quick = f.cache.verify(&f.repo, C1, VerifyMode::Quick).unwrap();
    assert!(quick.is_ok(), "{quick:?}");
    assert_eq!((quick.files, quick.bytes), (3, 7 + 6 + 8));

    std::fs::remove_file(snap.join("sub/dir/x.json")).unwrap();
    let r = f.cache.verify(&f.repo, C1, VerifyMode::Quick).unwrap();
    assert_eq!(
        kinds(&r),
        [("sub/dir/x.json".to_string(), ProblemKind::Missing)]
    );
    publish_some(&f, "main", C1, 3);

    corrupt(&f.cache.blob_path(&f.repo, all[2].0.etag()));
    let r = f.cache.verify(&f.repo, C1, VerifyMode::Quick).unwrap();
    assert_eq!(
        kinds(&r),
        [(
            "model.safetensors".to_string(),
            ProblemKind::ChangedFingerprint
        )]
    );
    let r = f.cache.verify(&f.repo, C1, VerifyMode::Full).unwrap();
    assert_eq!(
        kinds(&r),
        [("model.safetensors".to_string(), ProblemKind::HashMismatch)]
    );
    assert!(!f.cache.blob_is_current(&f.repo, &all[2].0).unwrap());
    assert!(!f.cache.verify_blob(&f.repo, &all[2].0).unwrap());

    std::fs::remove_file(f.cache.blob_path(&f.repo, all[0].0.etag())).unwrap();
    let r = f.cache.verify(&f.repo, C1, VerifyMode::Full).unwrap();
    assert!(
        kinds(&r).contains(&("config.json".to_string(), ProblemKind::DanglingLink)),
        "{r:?}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["problems"][0]["kind"], "dangling_link");
    assert_eq!(json["mode"], "full");

    let r = f.cache.verify(&f.repo, C2, VerifyMode::Quick).unwrap();
    assert_eq!(kinds(&r).len(), 2, "{r:?}");
    assert!(
        kinds(&r)
            .iter()
            .any(|(_, k)| *k == ProblemKind::MissingSnapshot)
    );
}

#[test]
fn verify_blob_records_a_fingerprint_when_the_content_is_intact() {
    let f = fixture();
    let e = plain("a.txt", b"content");
    let path = store(&f, &e, b"content");
    assert!(f.cache.blob_is_current(&f.repo, &e).unwrap());
    // A metadata change (ctime) without a content change: the cheap check fails, the hash passes.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    assert!(!f.cache.blob_is_current(&f.repo, &e).unwrap());
    assert!(f.cache.verify_blob(&f.repo, &e).unwrap());
    assert!(f.cache.blob_is_current(&f.repo, &e).unwrap());
    let other = plain("b.txt", b"other");
    assert!(!f.cache.blob_is_current(&f.repo, &other).unwrap());
    assert!(!f.cache.verify_blob(&f.repo, &other).unwrap());
}

#[test]
fn evict_keeps_blobs_shared_with_a_remaining_commit() {
    let f = fixture();
    let all = files();
    let tree: Vec<TreeEntry> = all.iter().map(|(e, _)| e.clone()).collect();
    for (e, c) in &all {
        store(&f, e, c);
    }
    let (shared, only1, only2) = (&tree[0], &tree[1], &tree[2]);
    f.cache
        .publish(&f.repo, "v1", C1, &tree, &[shared.clone(), only1.clone()])
        .unwrap();
    f.cache
        .publish(&f.repo, "main", C2, &tree, &[shared.clone(), only2.clone()])
        .unwrap();
    let freed = f.cache.evict(&f.repo, C1).unwrap();
    assert_eq!(freed, only1.content_size());
    let dir = f.cache.repo_dir(&f.repo);
    assert!(!f.cache.blob_path(&f.repo, only1.etag()).exists());
    assert!(f.cache.blob_path(&f.repo, shared.etag()).exists());
    assert!(!dir.join("refs/v1").exists() && dir.join("refs/main").exists());
    assert!(!dir.join("snapshots").join(C1).exists());
    assert!(!dir.join(format!("trees/{C1}.json")).exists());
    let r = f.cache.verify(&f.repo, C2, VerifyMode::Full).unwrap();
    assert!(r.is_ok(), "{r:?}");
    // The README blob was never published: an eviction does not touch it.
    assert!(f.cache.blob_path(&f.repo, tree[3].etag()).exists());
    assert_eq!(
        f.cache.evict(&f.repo, C1).unwrap(),
        0,
        "evicting twice is harmless"
    );
}

#[test]
fn inventory_lists_commits_least_recently_used_first() {
    let f = fixture();
    let all = files();
    let tree: Vec<TreeEntry> = all.iter().map(|(e, _)| e.clone()).collect();
    for (e, c) in &all {
        store(&f, e, c);
    }
    f.cache
        .publish(&f.repo, "v1", C1, &tree, &tree[..2])
        .unwrap();
    f.cache
        .publish(&f.repo, "main", C2, &tree, &tree[..3])
        .unwrap();
    std::fs::create_dir(f.cache.root().join("not-a-model")).unwrap();
    let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    f.cache.touch(&f.repo, C2, t(1_000)).unwrap();
    f.cache.touch(&f.repo, C1, t(2_000)).unwrap();
    let inv = f.cache.inventory().unwrap();
    let summary: Vec<(&str, u64, u64, Vec<String>, SystemTime)> = inv
        .iter()
        .map(|u| {
            (
                u.commit.as_str(),
                u.bytes,
                u.exclusive_bytes,
                u.refs.clone(),
                u.last_used,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (C2, 7 + 6 + 8, 8, vec!["main".to_string()], t(1_000)),
            (C1, 7 + 6, 0, vec!["v1".to_string()], t(2_000)),
        ]
    );
    assert!(inv.iter().all(|u| u.repo == f.repo));
}

#[test]
fn evict_keeping_spares_protected_blobs_and_clears_an_interrupted_evict() {
    let f = fixture();
    let all = files();
    let tree: Vec<TreeEntry> = all.iter().map(|(e, _)| e.clone()).collect();
    for (e, c) in &all {
        store(&f, e, c);
    }
    let (a, b, c) = (&tree[0], &tree[1], &tree[2]);
    f.cache
        .publish(&f.repo, "v1", C1, &tree, &[a.clone(), b.clone()])
        .unwrap();
    // What a crash between "renamed aside" and "removed" leaves: it links c, pinning it.
    let snapshots = f.cache.repo_dir(&f.repo).join("snapshots");
    let aside = snapshots.join(format!("{TEMP_PREFIX}evict-1-1"));
    std::fs::create_dir(&aside).unwrap();
    std::os::unix::fs::symlink(link_target("m", c.etag()), aside.join("m")).unwrap();
    let protect = std::collections::BTreeSet::from([b.etag().to_string()]);
    let freed = f.cache.evict_keeping(&f.repo, C1, &protect).unwrap();
    assert_eq!(freed, a.content_size());
    assert!(!aside.exists(), "the leftover was cleared");
    assert!(f.cache.blob_path(&f.repo, b.etag()).exists(), "protected");
    assert!(!f.cache.blob_path(&f.repo, a.etag()).exists());
    assert!(!snapshots.join(C1).exists());
    let usage = f.cache.usage().unwrap();
    assert!(usage.snapshots.is_empty());
    // b and c (unpublished now) and README still take room.
    assert_eq!(
        usage.used_bytes,
        b.content_size() + c.content_size() + tree[3].content_size()
    );
}
