//! A pod can write anything in its scope: symlinks out of it (to a file, to a directory), a
//! FIFO, a socket. The walk and the seal follow none of them, open no special file, and finish.

use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::Mode;

use super::seal::{self, ExcludedReason};
use super::tests_support::{put, root, scope};
use super::walk::{Kind, open_beneath, walk};

#[test]
fn symlinks_fifos_and_sockets_are_neither_followed_nor_opened() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    put(&tree.join("triton/K/k.cubin"), b"kernel");
    std::os::unix::fs::symlink("/etc", tree.join("triton/etc-dir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("vllm/passwd")).unwrap();
    std::os::unix::fs::symlink("../../..", tree.join("vllm/up")).unwrap();
    nix::unistd::mkfifo(&tree.join("inductor/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    // A socket (bound where the path is short enough, then moved into the tree).
    let short = tempfile::tempdir().unwrap();
    let _sock = UnixListener::bind(short.path().join("s")).unwrap();
    std::fs::rename(
        short.path().join("s"),
        tree.join("tmp/torchinductor_x.sock"),
    )
    .unwrap();
    std::fs::create_dir_all(tree.join("tmp/torchinductor_vllm")).unwrap();
    std::os::unix::fs::symlink("/etc", tree.join("tmp/torchinductor_vllm/etc")).unwrap();

    // Bounded: a FIFO opened for reading without O_NONBLOCK would block forever.
    let (tx, rx) = mpsc::channel();
    let (r, sc) = (root.clone(), s.clone());
    std::thread::spawn(move || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let _ = tx.send(seal::seal(&r, &sc, now));
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("seal hung")
        .unwrap();
    let m = seal::latest_manifest(&root, &s.name).unwrap().unwrap();
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["triton/K/k.cubin"]);
    let reason = |p: &str| out.excluded.iter().find(|e| e.path == p).map(|e| e.reason);
    assert_eq!(reason("triton/etc-dir"), Some(ExcludedReason::Symlink));
    assert_eq!(reason("vllm/passwd"), Some(ExcludedReason::Symlink));
    assert_eq!(reason("vllm/up"), Some(ExcludedReason::Symlink));
    assert_eq!(reason("inductor/fifo"), Some(ExcludedReason::Special));
    assert_eq!(
        reason("tmp/torchinductor_vllm/etc"),
        Some(ExcludedReason::Symlink)
    );
    // Nothing of /etc was walked.
    let w = walk(&tree).unwrap();
    assert!(
        w.entries
            .iter()
            .all(|e| !e.rel.contains("passwd/") && !e.rel.starts_with("triton/etc-dir/"))
    );
    assert_eq!(
        w.entries
            .iter()
            .find(|e| e.rel == "inductor/fifo")
            .unwrap()
            .kind,
        Kind::Special
    );
}

#[test]
fn opening_beneath_refuses_a_symlinked_directory_on_the_way() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    std::os::unix::fs::symlink("/etc", tree.join("vllm/etc")).unwrap();
    assert!(open_beneath(&tree, "vllm/etc/passwd").is_err());
    std::os::unix::fs::symlink("/etc/passwd", tree.join("vllm/pw")).unwrap();
    assert!(open_beneath(&tree, "vllm/pw").is_err());
    put(&tree.join("vllm/real"), b"x");
    assert!(open_beneath(&tree, "vllm/real").is_ok());
}

#[test]
fn a_scope_tree_replaced_by_a_symlink_is_not_walked() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    std::fs::remove_dir_all(&tree).unwrap();
    std::os::unix::fs::symlink("/etc", &tree).unwrap();
    let err = walk(&tree).unwrap_err();
    assert_eq!(err.metric_label(), "unsafe_entry", "{err}");
    assert!(seal::seal(&root, &s, 1).is_err());
}
