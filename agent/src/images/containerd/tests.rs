use std::collections::HashMap;

use super::*;

#[test]
fn versions_are_cleaned_and_compared() {
    assert_eq!(clean_version("1.7.24~ds1"), "1.7.24");
    assert_eq!(clean_version("v2.1.9+unknown"), "2.1.9");
    assert_eq!(clean_version("1.6.20~ds1-1+deb12u3"), "1.6.20");
    assert!(version_at_least("1.7.3", (1, 7, 3)));
    assert!(version_at_least("2.1.9", (1, 7, 3)));
    assert!(!version_at_least("1.7.2", (1, 7, 3)));
    assert!(!version_at_least("1.6.20", (1, 7, 3)));
}

#[test]
fn cri_config_fields_of_both_shapes() {
    let mut info = HashMap::new();
    info.insert(
        "config".to_string(),
        r#"{"containerd":{"snapshotter":"overlayfs"},"containerdRootDir":"/var/lib/containerd","registry":{"configPath":"/etc/containerd/certs.d"}}"#
            .to_string(),
    );
    let c = parse_cri_config(&info);
    assert_eq!(c.root, Some(PathBuf::from("/var/lib/containerd")));
    assert_eq!(c.snapshotter.as_deref(), Some("overlayfs"));
    assert_eq!(
        c.config_path,
        Some(PathBuf::from("/etc/containerd/certs.d"))
    );
    assert!(parse_cri_config(&HashMap::new()).root.is_none());
    let mut bad = HashMap::new();
    bad.insert("config".to_string(), "not json".to_string());
    assert!(parse_cri_config(&bad).snapshotter.is_none());
}

#[test]
fn ingest_digests_from_refs() {
    let d = format!("sha256:{}", "c".repeat(64));
    assert_eq!(ingest_digest(&d, "whatever"), d);
    assert_eq!(ingest_digest("", &format!("layer-{d}")), d);
}

#[test]
fn statvfs_walks_up_to_an_existing_parent() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("a/b/c");
    let space = statvfs_nearest(&missing).unwrap();
    assert_eq!(space.path, missing);
    assert!(space.available > 0);
}

#[test]
fn snapshotter_from_the_image_fs_mountpoint() {
    let m = Path::new("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs");
    assert_eq!(snapshotter_of(m).as_deref(), Some("overlayfs"));
    assert_eq!(snapshotter_of(Path::new("/var/lib/x")), None);
}
