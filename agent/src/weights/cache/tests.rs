use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::super::Lfs;
use super::*;

mod crash;
mod lifecycle;
mod safety;

pub(super) const C1: &str = "1111111111111111111111111111111111111111";
pub(super) const C2: &str = "2222222222222222222222222222222222222222";

pub(super) struct Fixture {
    pub dir: tempfile::TempDir,
    pub cache: HubCache,
    pub repo: RepoId,
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cache = HubCache::open(&dir.path().join("hub"), None).unwrap();
    let repo = RepoId::parse("org/name").unwrap();
    Fixture { dir, cache, repo }
}

/// A plain (git) file.
pub(super) fn plain(path: &str, content: &[u8]) -> TreeEntry {
    TreeEntry {
        path: path.to_string(),
        size: content.len() as u64,
        oid: git_blob_sha1(content),
        lfs: None,
    }
}

/// An LFS file: the blob is named by the content's sha256.
pub(super) fn lfs(path: &str, content: &[u8]) -> TreeEntry {
    use sha2::Digest as _;
    let sha256: String = sha2::Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    TreeEntry {
        path: path.to_string(),
        size: content.len() as u64,
        oid: git_blob_sha1(format!("pointer {sha256}").as_bytes()),
        lfs: Some(Lfs {
            sha256,
            size: content.len() as u64,
        }),
    }
}

/// Downloads and finalizes a blob the way the transfer engine does.
pub(super) fn store(f: &Fixture, entry: &TreeEntry, content: &[u8]) -> PathBuf {
    let mut file = f.cache.open_incomplete(&f.repo, entry.etag()).unwrap();
    file.write_all(content).unwrap();
    drop(file);
    f.cache.finalize_blob(&f.repo, entry.etag()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn files() -> Vec<(TreeEntry, &'static [u8])> {
    vec![
        (plain("config.json", b"{\"a\":1}"), b"{\"a\":1}".as_slice()),
        (plain("sub/dir/x.json", b"nested"), b"nested".as_slice()),
        (
            lfs("model.safetensors", b"weights!"),
            b"weights!".as_slice(),
        ),
        (plain("README.md", b"readme"), b"readme".as_slice()),
    ]
}

/// Publishes the first `n` of [`files`] (the tree is all of them) at `commit` for `revision`.
pub(super) fn publish_some(f: &Fixture, revision: &str, commit: &str, n: usize) -> PathBuf {
    let all = files();
    let tree: Vec<TreeEntry> = all.iter().map(|(e, _)| e.clone()).collect();
    for (e, c) in &all[..n] {
        store(f, e, c);
    }
    f.cache
        .publish(&f.repo, revision, commit, &tree, &tree[..n])
        .unwrap()
}

#[test]
fn state_dir_is_a_sibling_of_the_root_never_inside() {
    let f = fixture();
    let base = f.dir.path().canonicalize().unwrap();
    assert_eq!(f.cache.root(), base.join("hub"));
    assert_eq!(f.cache.state_dir(), base.join(".hub.coldstart"));
    let e = HubCache::open(&base.join("hub"), Some(&base.join("hub/.state"))).unwrap_err();
    assert_eq!(e.metric_label(), "unsafe_cache");
}

#[test]
fn publish_writes_the_hub_layout_with_relative_links() {
    let f = fixture();
    let snap = publish_some(&f, "main", C1, 3);
    let dir = f.cache.repo_dir(&f.repo);
    assert_eq!(snap, dir.join("snapshots").join(C1));
    let all = files();
    let nested = &all[1].0;
    let target = std::fs::read_link(snap.join("sub/dir/x.json")).unwrap();
    assert_eq!(
        target,
        Path::new(&format!("../../../../blobs/{}", nested.oid))
    );
    let top = std::fs::read_link(snap.join("model.safetensors")).unwrap();
    assert_eq!(top, Path::new(&format!("../../blobs/{}", all[2].0.etag())));
    assert_eq!(
        std::fs::read(snap.join("sub/dir/x.json")).unwrap(),
        b"nested"
    );
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        b"weights!"
    );
    assert!(!snap.join("README.md").exists(), "not selected");
    // refs/main holds the commit with no trailing newline.
    assert_eq!(std::fs::read(dir.join("refs/main")).unwrap(), C1.as_bytes());
    // The trees file lists the whole tree, in huggingface_hub's shape.
    let trees: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("trees/{C1}.json"))).unwrap())
            .unwrap();
    assert_eq!(trees["format_version"], 1);
    let readme = &trees["files"]["README.md"];
    assert_eq!(
        readme,
        &serde_json::json!({"size": 6, "blob_id": all[3].0.oid})
    );
    let model = &trees["files"]["model.safetensors"];
    assert_eq!(model["lfs_sha256"], all[2].0.etag());
    assert_eq!(model["lfs_size"], 8);
    assert_eq!(model["blob_id"], all[2].0.oid);
    // Nothing of ours inside the cache root besides the layout.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["blobs", "refs", "snapshots", "trees"]);
}

#[test]
fn refs_only_for_names_and_nested_ref_names_work() {
    let f = fixture();
    publish_some(&f, C1, C1, 1);
    let refs = f.cache.repo_dir(&f.repo).join("refs");
    assert_eq!(std::fs::read_dir(&refs).unwrap().count(), 0);
    publish_some(&f, "refs/pr/1", C1, 1);
    assert_eq!(
        std::fs::read(refs.join("refs/pr/1")).unwrap(),
        C1.as_bytes()
    );
}

#[test]
fn modes_are_explicit_whatever_the_umask() {
    use nix::sys::stat::{Mode, umask};
    // The umask is process-wide: keep the window short, and our code never relies on it.
    let old = umask(Mode::from_bits_truncate(0o077));
    let result = std::panic::catch_unwind(|| {
        let f = fixture();
        publish_some(&f, "main", C1, 3);
        f
    });
    umask(old);
    let f = result.unwrap();
    let dir = f.cache.repo_dir(&f.repo);
    let snap = dir.join("snapshots").join(C1);
    for d in [
        f.cache.root(),
        f.cache.state_dir(),
        &dir,
        &dir.join("blobs"),
        &dir.join("refs"),
        &dir.join("trees"),
    ] {
        assert_eq!(mode(d), 0o755, "{}", d.display());
    }
    for d in [snap.clone(), snap.join("sub"), snap.join("sub/dir")] {
        assert_eq!(mode(&d), 0o755, "{}", d.display());
    }
    for (e, _) in &files()[..3] {
        assert_eq!(
            mode(&f.cache.blob_path(&f.repo, e.etag())),
            0o444,
            "{}",
            e.path
        );
    }
    assert_eq!(mode(&dir.join("refs/main")), 0o644);
    assert_eq!(mode(&dir.join(format!("trees/{C1}.json"))), 0o644);
}

#[test]
fn incomplete_files_resume_without_truncation() {
    let f = fixture();
    let e = plain("a.txt", b"hello");
    let mut file = f.cache.open_incomplete(&f.repo, e.etag()).unwrap();
    file.write_all(b"hel").unwrap();
    drop(file);
    let file = f.cache.open_incomplete(&f.repo, e.etag()).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 3);
    assert!(
        f.cache
            .incomplete_path(&f.repo, e.etag())
            .ends_with(format!("blobs/{}.incomplete", e.oid))
    );
}
