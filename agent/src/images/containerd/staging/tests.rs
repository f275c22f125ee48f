use super::*;

fn layer(size: u64) -> Blob {
    Blob {
        digest: format!("sha256:{}", "ab".repeat(32)),
        size,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
    }
}

/// An ingest directory as containerd's local store lays it out.
fn ingest(content: &Path, name: &str, key: &str, data: &[u8]) -> PathBuf {
    let dir = content.join("ingest").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ref"), key).unwrap();
    std::fs::write(dir.join("data"), data).unwrap();
    dir
}

#[test]
fn the_staging_ref_is_never_containerds_own() {
    let b = layer(1);
    assert_eq!(staging_ref(&b), format!("coldstart-layer-{}", b.digest));
    assert_ne!(staging_ref(&b), ingest_ref(&b));
}

#[test]
fn the_ingest_is_found_by_its_namespaced_key_only() {
    let tmp = tempfile::tempdir().unwrap();
    let content = tmp.path();
    assert_eq!(find_ingest(content, "k8s.io", "coldstart-x").unwrap(), None);
    ingest(content, "a", "default/3/coldstart-x", b"");
    ingest(content, "b", "k8s.io/7/layer-x", b"");
    ingest(content, "c", "k8s.io//coldstart-x", b"");
    ingest(content, "d", "k8s.io/1x/coldstart-x", b"");
    assert_eq!(find_ingest(content, "k8s.io", "coldstart-x").unwrap(), None);
    let want = ingest(content, "e", "k8s.io/12/coldstart-x", b"");
    assert_eq!(
        find_ingest(content, "k8s.io", "coldstart-x").unwrap(),
        Some(want)
    );
}

#[tokio::test]
async fn ranges_out_of_order_move_the_prefix_only_when_contiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ingest(tmp.path(), "a", "k8s.io/1/coldstart-x", b"");
    let mut s = Staged::open(dir.clone(), 30).unwrap();
    assert_eq!(s.prefix(), 0);
    s.write(20, vec![3; 10]).await.unwrap();
    s.write(10, vec![2; 10]).await.unwrap();
    assert_eq!(s.prefix(), 0);
    assert!(!s.whole());
    s.write(0, vec![1; 10]).await.unwrap();
    assert_eq!(s.prefix(), 30);
    assert!(s.whole());
    let data = std::fs::read(dir.join("data")).unwrap();
    assert_eq!(data, [[1u8; 10], [2; 10], [3; 10]].concat());
    // Whole: recorded at once.
    assert_eq!(
        std::fs::read_to_string(dir.join(PREFIX_FILE)).unwrap(),
        "30"
    );
    assert!(s.write(25, vec![0; 10]).await.is_err(), "past the blob");
}

#[tokio::test]
async fn a_reopened_ingest_keeps_only_its_recorded_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    // Written ahead with a hole, never recorded (an agent that died early): nothing is kept.
    let dir = ingest(tmp.path(), "a", "k8s.io/1/coldstart-x", &[9; 40]);
    let s = Staged::open(dir.clone(), 100).unwrap();
    assert_eq!(s.prefix(), 0);
    assert_eq!(std::fs::metadata(dir.join("data")).unwrap().len(), 0);
    // A recorded prefix is kept, and what lies past it cut off.
    std::fs::write(dir.join("data"), [7; 60]).unwrap();
    std::fs::write(dir.join(PREFIX_FILE), "32").unwrap();
    let s = Staged::open(dir.clone(), 100).unwrap();
    assert_eq!(s.prefix(), 32);
    assert_eq!(std::fs::read(dir.join("data")).unwrap(), vec![7; 32]);
    // A record longer than the data (lost in a host crash) counts only what is there.
    std::fs::write(dir.join(PREFIX_FILE), "90").unwrap();
    let s = Staged::open(dir.clone(), 100).unwrap();
    assert_eq!(s.prefix(), 32);
    // A record that is not a number counts as none.
    std::fs::write(dir.join(PREFIX_FILE), "lots").unwrap();
    assert_eq!(Staged::open(dir, 100).unwrap().prefix(), 0);
}

#[tokio::test]
async fn the_prefix_is_recorded_as_it_grows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ingest(tmp.path(), "a", "k8s.io/1/coldstart-x", b"");
    let size = 3 * RECORD_EVERY;
    let mut s = Staged::open(dir.clone(), size).unwrap();
    let chunk = usize::try_from(RECORD_EVERY / 2).unwrap();
    s.write(0, vec![1; chunk]).await.unwrap();
    assert!(!dir.join(PREFIX_FILE).exists(), "not yet grown enough");
    s.write(RECORD_EVERY / 2, vec![1; chunk]).await.unwrap();
    let recorded = || {
        std::fs::read_to_string(dir.join(PREFIX_FILE))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(recorded(), RECORD_EVERY);
    let reopened = Staged::open(dir.clone(), size).unwrap();
    assert_eq!(reopened.prefix(), RECORD_EVERY);
}
