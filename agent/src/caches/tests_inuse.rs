//! The /proc scan: a fake process table of symlinks and maps files in a tempdir, then the real
//! one with this process holding a file open in a scope.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::inuse::{self, Holder, PROC_ROOT};
use super::scope::point_model;
use super::tests_support::{put, root, scope};

/// A fake `/proc/<pid>` under `proc` with these links (`cwd`, `root`, `fd/N`) and maps lines.
fn process(proc: &Path, pid: u32, links: &[(&str, &Path)], maps: &[&str]) {
    let dir = proc.join(pid.to_string());
    std::fs::create_dir_all(dir.join("fd")).unwrap();
    for (name, target) in links {
        symlink(target, dir.join(name)).unwrap();
    }
    std::fs::write(dir.join("maps"), maps.join("\n")).unwrap();
}

fn holder(pid: u32, via: &str, path: &Path) -> Holder {
    Holder {
        pid,
        via: via.into(),
        path: path.to_path_buf(),
    }
}

#[test]
fn a_fake_process_table_names_each_held_scope_with_its_lowest_pid() {
    let (dir, root) = root();
    let (a, b, c, d, idle) = (
        scope(&root, "model-a", 1),
        scope(&root, "model-b", 1),
        scope(&root, "model-c", 1),
        scope(&root, "model-d", 1),
        scope(&root, "model-e", 1),
    );
    point_model(&root, &d).unwrap();
    let tree = |name: &str| root.scope_dir(name);
    let proc = dir.path().join("proc");
    std::fs::create_dir_all(&proc).unwrap();
    // a: the cwd of 40 and an open file of 7 (7 is named: the lowest pid).
    process(&proc, 40, &[("cwd", &tree(&a.name).join("vllm"))], &[]);
    let file = tree(&a.name).join("triton/k.bin");
    put(&file, b"k");
    process(&proc, 7, &[("cwd", Path::new("/")), ("fd/3", &file)], &[]);
    // b: a mapped file that was removed since.
    let so = tree(&b.name).join("inductor/x.so");
    let line = format!(
        "7f00-7f10 r-xp 00000000 08:01 42                         {} (deleted)",
        so.display()
    );
    process(
        &proc,
        12,
        &[],
        &["00400000-00452000 r-xp 0 08:01 1 [heap]", &line],
    );
    // c: chrooted into its tree (the scope directory itself).
    process(&proc, 13, &[("root", &tree(&c.name))], &[]);
    // d: through the model's link, which points at d.
    let via_link = root.model_link("model-d").join("cuda/cache");
    process(&proc, 14, &[("fd/0", &via_link)], &[]);
    // Neither a scope nor a process: near misses, a vanished process, non-pid entries.
    let near: PathBuf = root.scopes_dir();
    process(
        &proc,
        15,
        &[("cwd", &near), ("fd/1", Path::new("/dev/null"))],
        &[],
    );
    std::fs::create_dir_all(proc.join("16")).unwrap();
    std::fs::create_dir_all(proc.join("sys")).unwrap();
    symlink("16", proc.join("self")).unwrap();

    let found = inuse::scan(&proc, &root).unwrap();
    assert_eq!(found.len(), 4, "{found:?}");
    assert_eq!(found[&a.name], holder(7, "fd/3", &file));
    assert_eq!(found[&b.name], holder(12, "maps", &so));
    assert_eq!(found[&c.name], holder(13, "root", &tree(&c.name)));
    assert_eq!(found[&d.name], holder(14, "fd/0", &via_link));
    assert!(!found.contains_key(&idle.name));
}

#[test]
fn a_missing_proc_root_is_an_error_and_an_empty_one_holds_nothing() {
    let (dir, root) = root();
    scope(&root, "model-a", 1);
    assert!(inuse::scan(&dir.path().join("nope"), &root).is_err());
    let proc = dir.path().join("proc");
    std::fs::create_dir_all(&proc).unwrap();
    assert!(inuse::scan(&proc, &root).unwrap().is_empty());
}

#[test]
fn this_process_holding_a_file_in_a_scope_is_found_in_the_real_proc() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let path = root.scope_dir(&s.name).join("vllm/held.bin");
    put(&path, b"held");
    let _file = std::fs::File::open(&path).unwrap();
    let found = inuse::scan(Path::new(PROC_ROOT), &root).unwrap();
    let me = std::process::id();
    let h = found.get(&s.name).unwrap_or_else(|| panic!("{found:?}"));
    // Another thread of this test binary is still this process: the pid is ours.
    assert_eq!(h.pid, me, "{h:?}");
    assert!(h.via.starts_with("fd/"), "{h:?}");
    assert_eq!(h.path.canonicalize().unwrap(), path.canonicalize().unwrap());
}
