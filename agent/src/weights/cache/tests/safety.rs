//! Planted symlinks, hostile names and the hash helpers.

use super::super::super::Digest;
use super::*;

#[test]
fn a_planted_symlink_is_refused_and_nothing_is_written_outside() {
    let f = fixture();
    let outside = f.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let repo_dir = f.cache.repo_dir(&f.repo);
    std::fs::create_dir(&repo_dir).unwrap();
    std::os::unix::fs::symlink(&outside, repo_dir.join("blobs")).unwrap();
    let e = plain("a.txt", b"hello");
    let err = f.cache.open_incomplete(&f.repo, e.etag()).unwrap_err();
    assert_eq!(err.metric_label(), "unsafe_cache", "{err}");
    assert!(f.cache.finalize_blob(&f.repo, e.etag()).is_err());
    assert!(
        f.cache
            .publish(
                &f.repo,
                "main",
                C1,
                std::slice::from_ref(&e),
                std::slice::from_ref(&e)
            )
            .is_err()
    );
    assert_eq!(
        f.cache
            .blob_is_current(&f.repo, &e)
            .unwrap_err()
            .metric_label(),
        "unsafe_cache"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // A symlink in place of the partial file itself.
    let g = fixture();
    let victim = g.dir.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    g.cache.open_incomplete(&g.repo, e.etag()).unwrap();
    let inc = g.cache.incomplete_path(&g.repo, e.etag());
    std::fs::remove_file(&inc).unwrap();
    std::os::unix::fs::symlink(&victim, &inc).unwrap();
    let err = g.cache.open_incomplete(&g.repo, e.etag()).unwrap_err();
    assert_eq!(err.metric_label(), "unsafe_cache", "{err}");
    assert!(g.cache.finalize_blob(&g.repo, e.etag()).is_err());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
}

#[test]
fn hostile_names_are_refused_before_touching_disk() {
    let f = fixture();
    let good = plain("a.txt", b"a");
    let mut bad = good.clone();
    bad.path = "../escape".to_string();
    let tree = [good.clone()];
    for (commit, sel) in [("main", &good), (C1, &bad)] {
        let err = f
            .cache
            .publish(&f.repo, "main", commit, &tree, std::slice::from_ref(sel))
            .unwrap_err();
        assert_eq!(err.metric_label(), "hostile_name", "{err}");
    }
    let not_in_tree = plain("b.txt", b"b");
    let err = f
        .cache
        .publish(&f.repo, "main", C1, &tree, &[not_in_tree])
        .unwrap_err();
    assert_eq!(err.metric_label(), "hostile_name");
    for etag in ["../../x", "abc", &"A".repeat(40)] {
        assert!(f.cache.open_incomplete(&f.repo, etag).is_err(), "{etag}");
    }
    let err = f
        .cache
        .publish(&f.repo, "../x", C1, &tree, &[])
        .unwrap_err();
    assert_eq!(err.metric_label(), "invalid_revision");
    assert!(!f.cache.repo_dir(&f.repo).exists());
}

#[test]
fn hash_helpers() {
    assert_eq!(
        git_blob_sha1(b""),
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    );
    assert_eq!(
        git_blob_sha1(b"hello\n"),
        "ce013625030ba8dba906f756967f9e9ca394464a"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("abc");
    std::fs::write(&p, b"abc").unwrap();
    let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert!(hash_file(&p, &Digest::Sha256(sha.to_string())).unwrap());
    assert!(hash_file(&p, &Digest::GitSha1(git_blob_sha1(b"abc"))).unwrap());
    assert!(!hash_file(&p, &Digest::GitSha1(git_blob_sha1(b"abd"))).unwrap());
    let big = vec![7u8; 3 << 20];
    std::fs::write(&p, &big).unwrap();
    assert!(verify_blob(&p, &plain("big", &big)).unwrap());
    assert!(!verify_blob(&dir.path().join("absent"), &plain("big", &big)).unwrap());
}
