use std::path::Path;

use super::super::{NodeFacts, SnapshotStore};
use super::*;

/// One tar entry with its name written raw (the tar crate refuses `..` and absolute names).
fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if !link.is_empty() {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

const CONFIG: &str = r#"{"id":"c1","name":"counter","rootfsImage":"127.0.0.1:5000/c:1","rootfsImageRef":"127.0.0.1:5000/c@sha256:abcd","rootfsImageName":"127.0.0.1:5000/c:1","runtime":"io.containerd.runc.v2"}"#;
const STATUS: &str = r#"{"metadata":{"name":"counter","attempt":0},"state":1}"#;

/// A well-formed archive as containerd writes it, plus `extra` entries.
fn archive(extra: impl FnOnce(&mut tar::Builder<Vec<u8>>), skip: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let reg = tar::EntryType::Regular;
    raw(&mut b, "checkpoint/", tar::EntryType::Directory, "", b"");
    raw(&mut b, "checkpoint/pages-1.img", reg, "", &[7u8; 4096]);
    raw(&mut b, "rootfs-diff.tar", reg, "", b"\x1f\x8b");
    for (name, body) in [
        ("spec.dump", r#"{"ociVersion":"1.2.0"}"#),
        ("config.dump", CONFIG),
        ("status.dump", STATUS),
        (
            "dump.log",
            "(00.000000) Version: 4.2.1 (gitid 0)\n(00.1) Dumping finished\n",
        ),
    ] {
        if name != skip {
            raw(&mut b, name, reg, "", body.as_bytes());
        }
    }
    extra(&mut b);
    b.into_inner().unwrap()
}

fn ingest(
    bytes: &[u8],
    limits: &Limits,
) -> (tempfile::TempDir, Result<super::super::Snapshot, Error>) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("outside")).unwrap();
    let store = SnapshotStore::open(tmp.path().join("snapshots")).unwrap();
    let r = store.ingest(
        "snap-1",
        bytes,
        limits,
        &NodeFacts::default(),
        &Default::default(),
    );
    (tmp, r)
}

fn assert_refused(bytes: Vec<u8>, limits: &Limits, words: &str) {
    let (tmp, r) = ingest(&bytes, limits);
    let err = r.expect_err("hostile archive accepted").to_string();
    assert!(err.contains(words), "{err:?} lacks {words:?}");
    assert_nothing_written(tmp.path());
}

/// The snapshot root is empty (the staging directory was removed) and nothing is outside it.
fn assert_nothing_written(base: &Path) {
    let names: Vec<_> = std::fs::read_dir(base.join("snapshots")).unwrap().collect();
    assert!(names.is_empty(), "left in the snapshot root: {names:?}");
    let outside: Vec<_> = std::fs::read_dir(base.join("outside")).unwrap().collect();
    assert!(outside.is_empty());
    let top: Vec<_> = std::fs::read_dir(base).unwrap().collect();
    assert_eq!(top.len(), 2, "{top:?}");
}

#[test]
fn a_containerd_archive_is_kept_root_only_with_its_key() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, r) = ingest(&archive(|_| {}, ""), &Limits::default());
    let snap = r.unwrap();
    assert_eq!(snap.record.container_name, "counter");
    assert_eq!(snap.record.key.image_digest, "sha256:abcd");
    assert_eq!(snap.record.key.criu, "4.2.1");
    assert_eq!(snap.record.key.runtime, "io.containerd.runc.v2");
    assert_eq!(snap.record.base_image, "127.0.0.1:5000/c@sha256:abcd");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tmp.path().join("snapshots")), 0o700);
    assert_eq!(mode(&snap.dir), 0o700);
    assert_eq!(mode(&snap.layer()), 0o600);
    assert_eq!(mode(&snap.dir.join("snapshot.json")), 0o600);
    // The layer is the tree, normalised: root-owned, 0600 files, 0700 directories.
    let mut layer = tar::Archive::new(std::fs::File::open(snap.layer()).unwrap());
    let mut names = Vec::new();
    for e in layer.entries().unwrap() {
        let e = e.unwrap();
        let mode = e.header().mode().unwrap();
        assert!(mode == 0o600 || mode == 0o700, "{mode:o}");
        assert_eq!(e.header().uid().unwrap(), 0);
        names.push(e.path().unwrap().display().to_string());
    }
    assert!(
        names.contains(&"checkpoint/pages-1.img".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"status.dump".to_string()));
    let bytes = std::fs::read(snap.layer()).unwrap();
    assert_eq!(snap.record.layer_size, bytes.len() as u64);
    let again = SnapshotStore::open(tmp.path().join("snapshots"))
        .unwrap()
        .get("snap-1")
        .unwrap();
    assert_eq!(again, snap);
}

#[test]
fn parent_components_are_refused() {
    let reg = tar::EntryType::Regular;
    let a = archive(|b| raw(b, "checkpoint/../../outside/x", reg, "", b"x"), "");
    assert_refused(a, &Limits::default(), "has a .. component");
}

#[test]
fn absolute_paths_are_refused() {
    let reg = tar::EntryType::Regular;
    let a = archive(|b| raw(b, "/etc/cron.d/x", reg, "", b"x"), "");
    assert_refused(a, &Limits::default(), "is an absolute path");
}

#[test]
fn links_out_of_the_tree_are_refused() {
    let sym = tar::EntryType::Symlink;
    let a = archive(|b| raw(b, "checkpoint/l", sym, "../../outside", b""), "");
    assert_refused(a, &Limits::default(), "outside the archive's tree");
    let a = archive(|b| raw(b, "l", sym, "/etc/shadow", b""), "");
    assert_refused(a, &Limits::default(), "outside the archive's tree");
    let a = archive(|b| raw(b, "l", tar::EntryType::Link, "../x", b""), "");
    assert_refused(a, &Limits::default(), "outside the archive's tree");
    // Inside the tree is fine.
    let a = archive(|b| raw(b, "checkpoint/l", sym, "../spec.dump", b""), "");
    ingest(&a, &Limits::default()).1.unwrap();
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    let a = archive(
        |b| raw(b, "checkpoint/sda", tar::EntryType::Block, "", b""),
        "",
    );
    assert_refused(a, &Limits::default(), "is a device node");
    let a = archive(|b| raw(b, "null", tar::EntryType::Char, "", b""), "");
    assert_refused(a, &Limits::default(), "is a device node");
    let a = archive(|b| raw(b, "p", tar::EntryType::Fifo, "", b""), "");
    assert_refused(a, &Limits::default(), "is a FIFO");
}

#[test]
fn oversized_entries_and_archives_are_refused() {
    let limits = Limits {
        max_entry_bytes: 1024,
        ..Limits::default()
    };
    assert_refused(
        archive(|_| {}, ""),
        &limits,
        "checkpoint/pages-1.img is 4096 bytes, over the limit",
    );
    let limits = Limits {
        max_total_bytes: 4096,
        ..Limits::default()
    };
    assert_refused(archive(|_| {}, ""), &limits, "add up past the limit");
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    assert_refused(archive(|_| {}, ""), &limits, "more than 3 entries");
}

#[test]
fn a_missing_dump_file_is_refused() {
    for name in REQUIRED {
        assert_refused(
            archive(|_| {}, name),
            &Limits::default(),
            &format!("{name} is missing"),
        );
    }
}

#[test]
fn a_dump_that_does_not_parse_is_refused() {
    let mut b = tar::Builder::new(Vec::new());
    let reg = tar::EntryType::Regular;
    raw(&mut b, "spec.dump", reg, "", b"{}");
    raw(&mut b, "config.dump", reg, "", b"not json");
    raw(&mut b, "status.dump", reg, "", b"{}");
    assert_refused(
        b.into_inner().unwrap(),
        &Limits::default(),
        "config.dump does not parse",
    );
}

#[test]
fn garbage_is_refused() {
    assert_refused(
        vec![0x42; 2048],
        &Limits::default(),
        "refused checkpoint archive",
    );
}

#[test]
fn criu_version_from_the_log() {
    assert_eq!(
        criu_version("(00.000) Version: 4.2.1 (gitid 0)").as_deref(),
        Some("4.2.1")
    );
    assert_eq!(criu_version("nothing"), None);
}

#[test]
fn the_store_lists_records_the_model_and_removes_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path().join("snapshots")).unwrap();
    let meta = super::super::Meta {
        model: "m".into(),
        created_unix: 1_700_000_000,
        compile_scope: Some("m-abc".into()),
        image: None,
        pushed: None,
    };
    let bytes = archive(|_| {}, "");
    store
        .ingest(
            "m-1",
            &bytes[..],
            &Limits::default(),
            &NodeFacts::default(),
            &meta,
        )
        .unwrap();
    store
        .ingest(
            "hand",
            &bytes[..],
            &Limits::default(),
            &NodeFacts::default(),
            &Default::default(),
        )
        .unwrap();
    // A stage being written and a stray file are not snapshots.
    std::fs::create_dir(store.root().join(".coldstart-snapshot-x")).unwrap();
    std::fs::write(store.root().join("stray"), b"x").unwrap();
    let names: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.record.name)
        .collect();
    assert_eq!(names, ["hand", "m-1"]);
    let got = store.get("m-1").unwrap();
    assert_eq!(got.record.meta, meta);
    assert!(got.bytes() > 0);
    // The record written by part 1 (no meta) still reads.
    assert_eq!(store.get("hand").unwrap().record.meta, Default::default());
    let mut with_image = meta.clone();
    with_image.image = Some("localhost/coldstart-snapshot/m:h".into());
    store.set_meta("m-1", &with_image).unwrap();
    assert_eq!(store.get("m-1").unwrap().record.meta, with_image);
    assert!(store.remove("m-1").unwrap());
    assert!(!store.remove("m-1").unwrap());
    assert!(store.get("m-1").is_err());
    assert!(store.remove("../outside").is_err(), "names are checked");
    let left: Vec<String> = std::fs::read_dir(store.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".coldstart-snapshot-x") && n != "stray")
        .collect();
    assert_eq!(left, ["hand"], "nothing half-removed is left");
}
