//! The artifact's layer and manifest: a sealed scope packed on one root and unpacked on another
//! is the same tree (bytes, modes, nanosecond mtimes); hostile layers and manifests are refused
//! and write nothing outside the staging tree.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Error;
use super::artifact::{check_manifest, install, pack, unpack};
use super::layout::CacheRoot;
use super::scope::Scope;
use super::seal::{self, Manifest};
use super::tests_support::{me, put, root, scope};

const NOW: i64 = 1_800_000_000_000_000_000;

/// A sealed scope with files of several modes and mtimes.
fn sealed(root: &CacheRoot) -> (Scope, Manifest) {
    let s = scope(root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    put(&tree.join("triton/K1/k.cubin"), vec![7u8; 100_000]);
    put(
        &tree.join("vllm/torch_compile_cache/abc/rank_0_0/model"),
        b"aot",
    );
    put(&tree.join("flashinfer/.cache/ops/build.ninja"), b"rule cc");
    put(&tree.join("cuda/ComputeCache/index"), b"idx");
    let exe = tree.join("flashinfer/.cache/ops/op.so");
    put(&exe, b"\x7fELF");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // ninja compares mtimes: give one file a time with nanoseconds.
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(&exe)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let out = seal::seal(root, &s, NOW).unwrap();
    assert!(out.new);
    let m = seal::latest_manifest(root, &s.name).unwrap().unwrap();
    (s, m)
}

fn staging(root: &CacheRoot, s: &Scope) -> PathBuf {
    std::fs::create_dir_all(root.scope_state_dir(&s.name)).unwrap();
    root.scope_state_dir(&s.name).join("import")
}

/// Every file under `dir` (relative path, size, mode, mtime ns), sorted.
fn files(dir: &Path) -> Vec<(String, u64, u32, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push((
                    rel,
                    m.len(),
                    m.mode() & 0o7777,
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_packed_scope_unpacks_on_another_root_as_the_same_tree() {
    let (_a, root_a) = root();
    let (s, m) = sealed(&root_a);
    let work = tempfile::tempdir().unwrap();
    let packed = pack(&root_a, &m, work.path()).unwrap();
    assert!(packed.layer_size > 0);

    let (dir_b, root_b) = root();
    let sb = scope(&root_b, "model-a", 1);
    assert_eq!(sb, s);
    check_manifest(&m, &sb).unwrap();
    let st = staging(&root_b, &sb);
    unpack(&packed.layer, &m, &st, me(dir_b.path())).unwrap();
    install(&root_b, &sb.name, &st).unwrap();
    assert!(!st.exists(), "the old, empty tree is gone");
    let tree_a = root_a.scope_dir(&s.name);
    let tree_b = root_b.scope_dir(&sb.name);
    assert_eq!(files(&tree_a), files(&tree_b));
    assert_eq!(
        std::fs::read(tree_b.join("triton/K1/k.cubin")).unwrap(),
        vec![7u8; 100_000]
    );
    let exe = std::fs::metadata(tree_b.join("flashinfer/.cache/ops/op.so")).unwrap();
    assert_eq!(exe.mtime_nsec(), 123_456_789);
    assert_eq!(exe.mode() & 0o777, 0o755);
    for sub in super::layout::SCOPE_SUBDIRS {
        assert!(tree_b.join(sub).is_dir(), "{sub} made");
    }
    // The import is recorded as a generation: sealing the unchanged tree adds none.
    let local = seal::record_imported(&root_b, &m).unwrap();
    assert_eq!(local, 1);
    let again = seal::seal(&root_b, &sb, NOW + 1).unwrap();
    assert!(!again.new, "unchanged files make no new generation");
}

#[test]
fn a_file_changed_after_the_seal_abandons_the_export() {
    let (_a, root_a) = root();
    let (s, m) = sealed(&root_a);
    put(
        &root_a.scope_dir(&s.name).join("cuda/ComputeCache/index"),
        b"IDX",
    );
    let work = tempfile::tempdir().unwrap();
    let err = pack(&root_a, &m, work.path()).unwrap_err();
    assert!(matches!(err, Error::Changed { .. }), "{err}");
    assert!(err.to_string().contains("since generation 1"), "{err}");
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "no layer left"
    );
}

/// A gzip'd tar of raw entries: (name bytes as written in the header, type, content).
fn layer(dir: &Path, entries: &[(&str, tar::EntryType, &[u8])]) -> PathBuf {
    let path = dir.join("layer.tar.gz");
    let f = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        // Written into the header as is: `set_path` refuses `..` and absolute names.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
            h.set_link_name("../../../../etc/passwd").unwrap();
            h.set_size(0);
        }
        h.set_cksum();
        b.append(&h, &data[..if kind.is_file() { data.len() } else { 0 }])
            .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    path
}

/// A manifest for the scope listing `files` (path, content).
fn manifest_of(s: &Scope, files: &[(&str, &[u8])]) -> Manifest {
    use sha2::Digest as _;
    let mut entries: Vec<seal::FileEntry> = files
        .iter()
        .map(|(p, d)| seal::FileEntry {
            path: p.to_string(),
            size: d.len() as u64,
            sha256: format!("{:x}", sha2::Sha256::digest(d)),
            mode: 0o644,
            mtime_ns: NOW,
        })
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Manifest {
        format: seal::MANIFEST_FORMAT,
        scope: s.name.clone(),
        key: s.key.clone(),
        generation: 1,
        sealed_at_ns: NOW,
        bytes: entries.iter().map(|f| f.size).sum(),
        files: entries,
    }
}

/// Unpacks `entries` against `m` on a fresh root; returns the error and asserts nothing was
/// left: no staging tree, the scope still empty, nothing new beside the cache root.
fn refused(m_files: &[(&str, &[u8])], entries: &[(&str, tar::EntryType, &[u8])]) -> String {
    let (dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let m = manifest_of(&s, m_files);
    let work = tempfile::tempdir().unwrap();
    let l = layer(work.path(), entries);
    let st = staging(&root, &s);
    let before = files(dir.path());
    let err = unpack(&l, &m, &st, me(dir.path())).unwrap_err();
    assert!(matches!(err, Error::BadArtifact { .. }), "{err}");
    assert!(!st.exists(), "staging removed");
    assert_eq!(files(dir.path()), before, "nothing written");
    assert!(!dir.path().join("escaped").exists());
    err.to_string()
}

#[test]
fn hostile_layers_are_refused_and_write_nothing() {
    let ok: &[(&str, &[u8])] = &[("triton/a", b"A")];
    let reg = tar::EntryType::Regular;
    // A flipped byte: the content does not hash to the manifest's sha256.
    let e = refused(ok, &[("triton/a", reg, b"B")]);
    assert!(e.contains("does not match its manifest"), "{e}");
    // The manifest lists a file the layer lacks.
    let two: &[(&str, &[u8])] = &[("triton/a", b"A"), ("triton/b", b"B")];
    let e = refused(two, &[("triton/a", reg, b"A")]);
    assert!(e.contains("\"triton/b\", which is not in the layer"), "{e}");
    // Entries escaping the scope, or not regular files.
    for (name, kind, why) in [
        ("triton/../../../escaped", reg, "not a plain relative path"),
        ("/escaped", reg, "absolute"),
        (
            "escaped",
            reg,
            "not under one of the scope's cache directories",
        ),
        ("triton/a", tar::EntryType::Symlink, "only regular files"),
        ("triton/a", tar::EntryType::Link, "only regular files"),
        ("triton/a", tar::EntryType::Char, "only regular files"),
        ("triton/a", tar::EntryType::Fifo, "only regular files"),
    ] {
        let e = refused(ok, &[(name, kind, b"A")]);
        assert!(e.contains(why), "{name} {kind:?}: {e}");
    }
    // An entry the manifest does not list, or the same file twice.
    let e = refused(ok, &[("triton/a", reg, b"A"), ("triton/x", reg, b"X")]);
    assert!(e.contains("does not list"), "{e}");
    let e = refused(ok, &[("triton/a", reg, b"A"), ("triton/a", reg, b"A")]);
    assert!(e.contains("does not list (or lists once)"), "{e}");
    // Not a tar.gz at all.
    let (dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not gzip").unwrap();
    let err = unpack(
        &junk,
        &manifest_of(&s, ok),
        &staging(&root, &s),
        me(dir.path()),
    );
    assert!(matches!(err, Err(Error::BadArtifact { .. })), "{err:?}");
}

#[test]
fn manifests_for_another_scope_or_with_bad_paths_are_refused() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let other = scope(&root, "model-a", 2);
    let m = manifest_of(&other, &[("triton/a", b"A")]);
    let e = check_manifest(&m, &s).unwrap_err().to_string();
    assert!(e.contains("this node's scope is"), "{e}");
    for (path, why) in [
        ("../x", "not a plain relative path"),
        ("triton//a", "not a plain relative path"),
        ("/etc/passwd", "absolute"),
        (
            "elsewhere/a",
            "not under one of the scope's cache directories",
        ),
        ("triton", "not under one of the scope's cache directories"),
    ] {
        let m = manifest_of(&s, &[(path, b"A")]);
        let e = check_manifest(&m, &s).unwrap_err().to_string();
        assert!(e.contains(why), "{path}: {e}");
    }
    let mut m = manifest_of(&s, &[("triton/a", b"A")]);
    m.bytes = 99;
    let e = check_manifest(&m, &s).unwrap_err().to_string();
    assert!(e.contains("add up to 1 bytes"), "{e}");
    let m = manifest_of(&s, &[("triton/a", b"A"), ("triton/a/b", b"B")]);
    let e = check_manifest(&m, &s).unwrap_err().to_string();
    assert!(e.contains("as a file and as a directory"), "{e}");
}

#[test]
fn an_import_never_replaces_a_tree_a_pod_compiled_into() {
    let (_a, root_a) = root();
    let (_s, m) = sealed(&root_a);
    let work = tempfile::tempdir().unwrap();
    let packed = pack(&root_a, &m, work.path()).unwrap();
    let (dir_b, root_b) = root();
    let sb = scope(&root_b, "model-a", 1);
    let own = root_b.scope_dir(&sb.name).join("triton/mine/k.cubin");
    put(&own, b"compiled here");
    let st = staging(&root_b, &sb);
    unpack(&packed.layer, &m, &st, me(dir_b.path())).unwrap();
    let err = install(&root_b, &sb.name, &st).unwrap_err();
    assert!(
        matches!(err, Error::ScopeNotEmpty { entries: 2, .. }),
        "{err}"
    );
    assert!(!st.exists());
    assert_eq!(std::fs::read(&own).unwrap(), b"compiled here");
    // A pod's scratch alone (TMPDIR, not cache) also keeps the import out.
    let (dir_c, root_c) = root();
    let sc = scope(&root_c, "model-a", 1);
    put(&root_c.scope_dir(&sc.name).join("tmp/pod-scratch"), b"x");
    let st = staging(&root_c, &sc);
    unpack(&packed.layer, &m, &st, me(dir_c.path())).unwrap();
    let err = install(&root_c, &sc.name, &st).unwrap_err();
    assert!(
        matches!(err, Error::ScopeNotEmpty { entries: 1, .. }),
        "{err}"
    );
    assert!(root_c.scope_dir(&sc.name).join("tmp/pod-scratch").is_file());
    assert!(
        !root_b
            .scope_dir(&sb.name)
            .join("triton/K1/k.cubin")
            .exists()
    );
}
